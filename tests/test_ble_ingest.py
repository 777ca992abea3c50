"""BLE gateway reports on the platform side: the ingest workers store a gateway's packs as a cabinet of
its packs, the watch of `cascade run` feeds them to the warning engine, and a pack's BMS protection bit
raises the same warning as a cabinet slot's (over a real Mosquitto)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiomqtt
from prometheus_client import CollectorRegistry

from alerting.actions import ActionPolicy
from alerting.engine import Engine
from alerting.rules import load_rules
from cascade.app import alert_service_for
from cascade.config import AppConfig
from cascade.pipeline import Pipeline
from cascade.vehicles import IngestWorker, provision
from collectors.ble.wire import PackBattery, PackEntry, PackReport, encode, topic
from collectors.vehicles.ingest import VehicleIngest
from collectors.vehicles.settings import MqttSettings, VehicleSettings
from collectors.vehicles.trust import DeviceRegistry
from core.model import BmsProtection
from exporters.influx.sink import InfluxConfig
from tests.fixtures.clock import ManualClock
from tests.fixtures.influxdb import InfluxDB
from tests.fixtures.mosquitto import Mosquitto


def _report(gateway: str, seq: int, protection: int = 0, voltage: float = 52.1) -> bytes:
    packs = [PackEntry(address=f"C0:D6:3C:00:00:0{n}", protocol="jbd", slot=n, name=f"xiaoxiang-{n}",
                       battery=PackBattery(id=f"PACK-{n}", voltage_v=voltage, soc_pct=70.0, temperature_c=24.0,
                                           protection=protection if n == 2 else 0, cell_v=[3.72] * 14,
                                           mosfet_charge=True, mosfet_discharge=True))
             for n in (1, 2, 3)]
    return encode(PackReport(gateway=gateway, seq=seq, ts=int(time.time() * 1000), packs=packs))


async def _wait_for(predicate, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


class Sink:
    def __init__(self) -> None:
        self.points: list = []

    def submit(self, points) -> None:  # type: ignore[no-untyped-def]
        self.points.extend(points)


def test_a_gateway_report_is_stored_as_a_cabinet_of_its_packs_with_the_vehicle_checks(tmp_path: Path) -> None:
    devices = DeviceRegistry.load(provision(tmp_path / "d", count=3, fleet="bj")["devices"])
    sink = Sink()
    ingest = VehicleIngest(devices, sink=sink)
    outcome = ingest.accept_packs(_report("V000001", 7), transport="mqtt", device="V000001", fleet="bj")
    assert outcome.ok and outcome.packs is not None
    [reading] = sink.points
    assert (reading.site, reading.cabinet_id, reading.model) == ("bj", "V000001", "ble-gateway")
    assert [(s.slot, s.battery_id, s.voltage_v) for s in reading.slots] == [
        (1, "PACK-1", 52.1), (2, "PACK-2", 52.1), (3, "PACK-3", 52.1)]
    assert reading.slots[0].extra == {"mosfet_charge": True, "mosfet_discharge": True}
    assert ingest.metrics.gateway_seen.labels("bj", "V000001")._value.get() > 0  # CascadeGatewaySilent reads it
    assert ingest.metrics.gateway_packs.labels("bj", "V000001")._value.get() == 3
    from exporters.influx.schema import encode_points
    lines, skipped = encode_points([reading])
    # The gateway's cabinet point (model ble-gateway, extra_packs: how the health report knows a gateway's
    # packs), then a slot point and its extra (MOSFET states) per pack.
    assert skipped == [] and len(lines) == 1 + 3 + 3 and lines[0].startswith("cabinet,cabinet=V000001,model=ble-gateway")
    # The same refusals as a vehicle report: a replay, another device's report, another fleet, garbage.
    assert ingest.accept_packs(_report("V000001", 7), transport="mqtt", device="V000001").reason == "duplicate"
    assert ingest.accept_packs(_report("V000002", 1), transport="mqtt", device="V000001").reason == "wrong_device"
    assert ingest.accept_packs(_report("V000001", 8), transport="mqtt", device="V000001",
                               fleet="sh").reason == "wrong_topic"
    assert ingest.accept_packs(b'{"gateway": 1}', transport="mqtt", device="V000001").reason == "schema"
    assert len(sink.points) == 1


async def test_a_packs_protection_bit_raises_the_cabinet_rule_through_the_workers_and_the_watch(
        mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path) -> None:
    mqtt = MqttSettings(host="127.0.0.1", port=mosquitto.port, username="ingest", password=mosquitto.ingest_password)
    vehicles = VehicleSettings(devices=str(mosquitto.paths["devices"]), mqtt=mqtt, metrics_port=0)
    worker = IngestWorker(vehicles, InfluxConfig(url=influxdb.url, database=influxdb.database,
                                                 spool_dir=str(tmp_path / "spool"), flush_interval_s=0.2),
                          registry=CollectorRegistry())
    config = AppConfig(source=str(tmp_path / "config.yaml"), cabinets=[], profiles={}, influxdb=None,
                       metrics_port=0, status_interval_s=0, vehicles=vehicles)
    clock = ManualClock()
    engine = Engine(load_rules().only(["bms_short_circuit"]), clock=clock)
    seen: list[str] = []
    async with worker, Pipeline(config, registry=CollectorRegistry()) as pipeline:
        service = alert_service_for(pipeline, engine, alertmanager_url=None,
                                    policy=ActionPolicy(perform=frozenset({"slot_cutoff", "stop_charging"})))
        async with service:
            pipeline.subscribe(lambda r: seen.append(r.cabinet_id))
            watch = next(s for s in pipeline.sources if s.kind == "vehicles")
            await asyncio.wait_for(asyncio.gather(watch.mqtt.connected.wait(), worker.mqtt.connected.wait()), 10)
            async with aiomqtt.Client("127.0.0.1", mosquitto.port, username="V000005",
                                      password=mosquitto.secret("V000005"),
                                      protocol=aiomqtt.ProtocolVersion.V5) as gateway:
                for seq in (1, 2, 3):
                    await gateway.publish(topic("bj", "V000005"),
                                          _report("V000005", seq, protection=int(BmsProtection.SHORT_CIRCUIT)), qos=1)
                    deadline = time.monotonic() + 10
                    while len(seen) < seq and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                    clock.advance(30)
            active = [(a.key.rule, a.key.cabinet, a.key.slot) for a in engine.state.active()]
            assert active == [("bms_short_circuit", "V000005", 2)]  # the pack that flagged it, and only it
            # The rule's cut-off is attempted on the gateway's pack; this collector has no gateway commander
            # (cascade.app.gateway_commander_for wires one: tests/test_ble_protection.py), so it fails and
            # is alerted instead of being dropped.
            await _wait_for(lambda: bool(service.actions.recent))
            assert [(r.cabinet, r.slot, r.command, r.value, r.result) for r in service.actions.recent] == [
                ("V000005", 2, "slot_output", 0, "failed")]
            assert [(k.rule, k.cabinet, k.slot) for k in service.failed] == [
                ("protective_action_failed", "V000005", 2)]
        deadline = time.monotonic() + 10
        while worker.ingest.metrics.accepted.labels("mqtt")._value.get() < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    rows = influxdb.query('SELECT count("voltage_v") FROM "slot" WHERE "cabinet" = \'V000005\' GROUP BY "slot"')
    assert {r["slot"]: r["count"] for r in rows} == {"1": 3, "2": 3, "3": 3}
