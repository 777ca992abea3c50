"""The battery rules of the catalogue on batteries in vehicles: reports arrive over MQTT (real
Mosquitto), or over HTTPS to an ingest worker that relays them through Mosquitto; the vehicle watch of
`cascade run` feeds them to the same warning engine and alert service as cabinets, each report once; the
alert names the vehicle, tells people what to do, and commands nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from pathlib import Path

import aiohttp
import aiomqtt
from prometheus_client import CollectorRegistry

from alerting.actions import ActionPolicy
from alerting.engine import Engine
from alerting.rules import load_rules
from cascade.app import alert_service_for
from cascade.config import AppConfig
from cascade.pipeline import Pipeline
from cascade.vehicles import IngestWorker
from collectors.vehicles.mqtt import topic
from collectors.vehicles.settings import HttpsSettings, MqttSettings, VehicleSettings
from collectors.vehicles.trust import sign
from collectors.vehicles.watch import as_engine_reading
from collectors.vehicles.wire import decode, to_reading
from core.model import VEHICLE_MODEL
from notifier.messages import compose
from notifier.webhook import WebhookAlert
from tests.fixtures.clock import ManualClock
from tests.fixtures.mosquitto import Mosquitto


def _report(vehicle: str, seq: int, temperature: float) -> bytes:
    return json.dumps({"v": 1, "vehicle": vehicle, "seq": seq, "ts": int(time.time() * 1000), "state": "riding",
                       "pos": {"lat": 39.92, "lon": 116.54}, "battery": {"id": "PACK-7", "temperature_c": temperature,
                                                                          "soc_pct": 60, "voltage_v": 50.0,
                                                                          "state": "discharging"}}).encode()


def test_a_vehicle_pack_reads_like_a_slot() -> None:
    reading, _ = to_reading(decode(_report("V000001", 1, 72.0)), fleet="bj", received_ns=0)
    cab = as_engine_reading(reading)
    assert (cab.site, cab.cabinet_id, cab.model) == ("bj", "V000001", VEHICLE_MODEL)
    assert [(s.slot, s.battery_id, s.temperature_c) for s in cab.slots] == [(1, "PACK-7", 72.0)]


def test_vehicle_alert_names_the_vehicle_and_says_what_to_do_with_no_cut_off() -> None:
    clock = ManualClock()
    engine = Engine(load_rules().only(["over_temperature"]), clock=clock)
    reading, _ = to_reading(decode(_report("V000001", 1, 75.0)), fleet="bj", received_ns=0)
    transitions = []
    for _ in range(3):
        transitions += engine.evaluate(as_engine_reading(reading))
        clock.advance(30)
    top = transitions[-1]
    assert top.to_level == 3 and top.protective_action is None  # a cabinet cut-off has no vehicle counterpart
    assert top.labels["vehicle"] == "V000001" and top.labels["site"] == "bj"
    assert "V000001号车 电池" in top.annotations["summary"]
    assert "骑手" in top.annotations["action"] and "仓" not in top.annotations["action"]


async def test_a_hot_pack_in_a_vehicle_raises_the_same_rule_through_cascade_run(mosquitto: Mosquitto,
                                                                               tmp_path: Path) -> None:
    vehicles = VehicleSettings(devices=str(mosquitto.paths["devices"]),
                               mqtt=MqttSettings(host="127.0.0.1", port=mosquitto.port, username="ingest",
                                                 password=mosquitto.ingest_password))
    config = AppConfig(source=str(tmp_path / "config.yaml"), cabinets=[], profiles={}, influxdb=None,
                       metrics_port=0, status_interval_s=0, vehicles=vehicles)
    clock = ManualClock()
    engine = Engine(load_rules().only(["over_temperature"]), clock=clock)
    seen: list[str] = []
    async with Pipeline(config, registry=CollectorRegistry()) as pipeline:
        service = alert_service_for(pipeline, engine, alertmanager_url=None, policy=ActionPolicy())
        async with service:
            pipeline.subscribe(lambda r: seen.append(r.cabinet_id))
            watch = next(s for s in pipeline.sources if s.kind == "vehicles")
            await asyncio.wait_for(watch.mqtt.connected.wait(), 10)
            async with aiomqtt.Client("127.0.0.1", mosquitto.port, username="V000002",
                                      password=mosquitto.secret("V000002"),
                                      protocol=aiomqtt.ProtocolVersion.V5) as device:
                for seq in range(1, 4):
                    await device.publish(topic("bj", "V000002"), _report("V000002", seq, 76.0), qos=1)
                    deadline = time.monotonic() + 10
                    while len(seen) < seq and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                    clock.advance(30)
            active = engine.state.active()
            assert [(a.key.rule, a.key.site, a.key.cabinet, a.level) for a in active] == [
                ("over_temperature", "bj", "V000002", 3)]
            assert not service.failed  # no cut-off attempted, so none failed
            assert pipeline.readings_total == 0  # watch-only: the ingest workers store vehicle reports
            labels = active[0].labels
    # What the on-call phone gets: the vehicle, said once, in Chinese.
    alert = WebhookAlert("firing", dict(labels), dict(active[0].annotations), "", "", "", "")
    messages = compose(alert, "zh_CN", dt.UTC)
    assert "V000002号车" in messages["voice"] and messages["voice"].count("V000002") == 1
    assert "仓" not in messages["sms"]
    # The pack is named once, by its id (here in the action), not also as "the vehicle's battery" before it.
    assert messages["sms"].startswith("三级预警：bj/V000002号车 电池温度过高"), messages["sms"]
    assert messages["sms"].count(labels["battery"]) == 1 and "PACK-7" in messages["text"]


async def test_a_hot_pack_posted_over_https_raises_the_rule_through_cascade_run_once_per_report(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Two ingest workers take the posts and relay what they store; a retried post that reached the other
    worker is stored there too (the same point) and relayed again, and the watch drops it by its sequence."""
    vehicles = VehicleSettings(devices=str(mosquitto.paths["devices"]),
                               mqtt=MqttSettings(host="127.0.0.1", port=mosquitto.port, username="ingest",
                                                 password=mosquitto.ingest_password),
                               https=HttpsSettings(port=0), metrics_port=0)
    config = AppConfig(source=str(tmp_path / "config.yaml"), cabinets=[], profiles={}, influxdb=None,
                       metrics_port=0, status_interval_s=0, vehicles=vehicles)
    clock = ManualClock()
    engine = Engine(load_rules().only(["over_temperature"]), clock=clock)
    seen: list[tuple[str, int | None]] = []
    secret = bytes.fromhex(mosquitto.secret("V000002"))

    async def post(worker: IngestWorker, body: bytes) -> dict:
        stamp, nonce = int(time.time() * 1000), uuid.uuid4().hex
        headers = {"X-Cascade-Device": "V000002", "X-Cascade-Timestamp": str(stamp), "X-Cascade-Nonce": nonce,
                   "X-Cascade-Signature": sign(secret, stamp, nonce, body), "Content-Type": "application/json"}
        async with session.post(f"http://127.0.0.1:{worker.https_port}/v1/telemetry", data=body,
                                headers=headers) as response:
            assert response.status == 200, await response.text()
            answer: dict = await response.json()
            return answer

    async with Pipeline(config, registry=CollectorRegistry()) as pipeline:
        service = alert_service_for(pipeline, engine, alertmanager_url=None, policy=ActionPolicy())
        async with service, IngestWorker(vehicles, None, worker=1, registry=CollectorRegistry()) as first, \
                IngestWorker(vehicles, None, worker=2, registry=CollectorRegistry()) as second, \
                aiohttp.ClientSession() as session:
            pipeline.subscribe(lambda r: seen.append((r.cabinet_id, r.vehicle.sequence if r.vehicle else None)))
            watch = next(s for s in pipeline.sources if s.kind == "vehicles")
            for mqtt in (watch.mqtt, first.mqtt, second.mqtt):
                assert mqtt is not None
                await asyncio.wait_for(mqtt.connected.wait(), 10)
            for seq in range(1, 4):
                body = b"[" + _report("V000002", seq, 76.0) + b"]"
                assert (await post(first, body))["accepted"] == 1
                if seq == 2:  # the device retried (its first reply was lost) and reached the other worker
                    assert (await post(second, body))["accepted"] == 1
                deadline = time.monotonic() + 10
                while len(seen) < seq and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                clock.advance(30)
            await asyncio.sleep(0.5)  # time for a second copy of report 2 to arrive, were it let through
            assert seen == [("V000002", 1), ("V000002", 2), ("V000002", 3)]
            active = engine.state.active()
            assert [(a.key.rule, a.key.site, a.key.cabinet, a.level) for a in active] == [
                ("over_temperature", "bj", "V000002", 3)]
            assert "V000002号车 电池" in active[0].annotations["summary"]
            assert not service.failed and pipeline.readings_total == 0
