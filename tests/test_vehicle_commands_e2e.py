"""The theft scenario's command, end to end: an armed vehicle of the simulator is ridden away over a real
Mosquitto; `cascade run`'s vehicle watch feeds the warning engine, `wheel_motion_armed` raises with its
`motor_lock`, the alert goes to a real Alertmanager and the command service (wired as `cascade.app`
wires it) sends the lock; the simulated vehicle carries it out, acknowledges with its state, and stands
still in its next reports."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from alerting.actions import ActionPolicy
from alerting.engine import Engine
from alerting.rules import load_rules
from alerting.state import AlertStore
from cascade.app import alert_service_for, start_app
from cascade.commands import VehicleCommandService, forward_vehicle_commands, vehicle_commands_for
from cascade.config import AppConfig
from cascade.issuer import LocalIssuer
from cascade.pipeline import Pipeline
from cascade.vehicles import IngestWorker
from collectors.vehicles.settings import HttpsSettings, MqttSettings, VehicleSettings
from collectors.vehicles.wire import Battery, Position, Telemetry, encode
from exporters.influx.sink import InfluxConfig
from simulators.vehicle_commands import VehicleControls
from simulators.vehicles import MqttTransport, Stats, add_arguments, run
from tests.fixtures.influxdb import InfluxDB
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.ports import free_port
from tests.fixtures.prom import AlertmanagerServer

THIEF = "V000006"


def _ridden_away(seq: int) -> Telemetry:
    """An armed vehicle whose wheels turn: pushed away at 6 km/h, 11 m further north each report."""
    return Telemetry(vehicle=THIEF, ts=int(time.time() * 1000), seq=seq, state="riding", power=True, armed=True,
                     pos=Position(lat=39.9241 + seq * 1e-4, lon=116.5446), speed_kmh=6.0, odometer_km=500 + seq / 100,
                     battery=Battery(id="NM48-7", chemistry="NMC", soc_pct=70.0, voltage_v=49.5, temperature_c=22.0,
                                     current_a=-3.0, state="discharging"))


@pytest.mark.timeout(120)
async def test_armed_vehicle_ridden_away_is_motor_locked_and_acknowledges(
        mosquitto: Mosquitto, alertmanager: AlertmanagerServer, tmp_path: Path) -> None:
    mqtt = MqttSettings(host="127.0.0.1", port=mosquitto.port, username="ingest", password=mosquitto.ingest_password)
    vehicles = VehicleSettings(devices=str(mosquitto.paths["devices"]), mqtt=mqtt, metrics_port=0, rate_per_s=10)
    config = AppConfig(source=str(tmp_path / "config.yaml"), cabinets=[], profiles={}, influxdb=None,
                       metrics_port=0, status_interval_s=0, vehicles=vehicles)
    engine = Engine(load_rules(), state=AlertStore(tmp_path / "alerts.json"))
    controls = VehicleControls()
    transport = MqttTransport("127.0.0.1", mosquitto.port, mosquitto.devices, Stats(), in_flight=2)
    transport.on_command = controls.handle
    sent: list[Telemetry] = []

    async def ride() -> None:
        vehicle = type("V", (), {"id": THIEF, "fleet": "bj"})()
        seq = 0
        while True:
            seq += 1
            report = controls.adjust(_ridden_away(seq))  # what the simulator's driver does with every report
            sent.append(report)
            transport.submit(vehicle, encode(report))  # type: ignore[arg-type]
            await asyncio.sleep(0.3)

    async with Pipeline(config, registry=CollectorRegistry()) as pipeline:
        service = alert_service_for(pipeline, engine, alertmanager_url=alertmanager.url, policy=ActionPolicy(),
                                    resend_interval_s=5)
        commands = vehicle_commands_for(config, service, pipeline, {"audit_file": str(tmp_path / "audit.jsonl")})
        assert commands is not None
        forward_vehicle_commands(service, commands)
        async with service, commands:
            watch = next(s for s in pipeline.sources if s.kind == "vehicles")
            await asyncio.wait_for(watch.mqtt.connected.wait(), 10)  # type: ignore[attr-defined]
            await asyncio.wait_for(commands.connected.wait(), 10)
            tasks = [asyncio.create_task(transport.run()), asyncio.create_task(ride())]
            try:
                deadline = time.monotonic() + 60
                while not any(r.done for r in commands.records.values()) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                locked_at = len(sent)
                await asyncio.sleep(1.0)  # a few more reports after the lock
                fired = [a for a in alertmanager.alerts() if a["labels"]["alertname"] == "wheel_motion_armed"]
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await transport.close()
    records = list(commands.records.values())
    assert [(r.vehicle, r.command, r.who, r.status) for r in records] == [
        (THIEF, "motor_lock", "rule:wheel_motion_armed@level2", "ok")]
    assert records[0].state == {"power": True, "locked": True, "armed": True}
    assert fired and fired[0]["labels"]["vehicle"] == THIEF
    after = sent[locked_at + 1:]
    assert after and all(r.speed_kmh == 0.0 and r.pos == sent[locked_at].pos for r in after)  # it stands still
    audit = [json.loads(line) for line in (tmp_path / "vehicle-commands.jsonl").read_text().splitlines()]
    assert [(e["event"], e["who"]) for e in audit] == [("sent", "rule:wheel_motion_armed@level2"),
                                                       ("ok", "rule:wheel_motion_armed@level2")]


async def test_cascade_run_serves_commands_to_a_person_with_control_and_tracks_to_readers(
        mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path) -> None:
    """`start_app` wires the command service and the track export on the collector's API, behind the
    alert API's roles: a person's engineer token commands (its subject recorded), a viewer reads."""
    issuer_port = free_port()
    issuer = LocalIssuer.load_or_create(tmp_path / "issuer" / "signing-keys.json",
                                        issuer=f"http://127.0.0.1:{issuer_port}")
    issuer_runner = web.AppRunner(issuer.web_app())
    await issuer_runner.setup()
    await web.TCPSite(issuer_runner, "127.0.0.1", issuer_port).start()
    mqtt = MqttSettings(host="127.0.0.1", port=mosquitto.port, username="ingest", password=mosquitto.ingest_password)
    config = AppConfig(source=str(tmp_path / "config.yaml"), cabinets=[], profiles={}, metrics_port=0,
                       status_interval_s=0, vehicles=VehicleSettings(devices=str(mosquitto.paths["devices"]), mqtt=mqtt),
                       influxdb=InfluxConfig(url=influxdb.url, database=influxdb.database,
                                             spool_dir=str(tmp_path / "spool")))
    config.alerting = {"state_file": str(tmp_path / "alerts.json"), "audit_file": str(tmp_path / "audit.jsonl"),
                       "control_audit_file": str(tmp_path / "control-audit.jsonl"), "alertmanager_url": None,
                       "actions": {"perform": []},
                       "auth": {"issuer": issuer.issuer, "audience": "cascade-api", "jwks_min_refresh_s": 0}}
    engineer = issuer.mint("alice", ("engineer",))
    viewer = issuer.mint("bob", ("viewer",))
    controls = VehicleControls()
    transport = MqttTransport("127.0.0.1", mosquitto.port, mosquitto.devices, Stats(), in_flight=2)
    transport.on_command = controls.handle
    task = asyncio.create_task(transport.run())
    try:
        async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{pipeline.metrics_port}/api/vehicles"
            transport.submit(type("V", (), {"id": "V000001", "fleet": "bj"})(), encode(_ridden_away(1)))  # type: ignore[arg-type]
            deadline = time.monotonic() + 10
            while "V000001" not in transport.clients and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            order = {"command": "disarm", "who": "typed-name", "wait_s": 15}
            async with http.post(f"{base}/V000001/commands", json=order) as resp:
                assert resp.status == 401  # nobody
            async with http.post(f"{base}/V000001/commands", json=order, headers=_bearer(viewer)) as resp:
                assert resp.status == 403  # a viewer may not command
            async with http.post(f"{base}/V000001/commands", json=order, headers=_bearer(engineer)) as resp:
                done = await resp.json()
                assert resp.status == 200, done
            async with http.get(f"{base}/commands", headers=_bearer(viewer)) as resp:
                listed = (await resp.json())["commands"]
            async with http.get(f"{base}/V000001/track", params={"since": "1h"}, headers=_bearer(viewer)) as resp:
                assert resp.status == 200 and resp.content_type == "application/geo+json"
                track = await resp.json(content_type=None)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await transport.close()
        await issuer_runner.cleanup()
    assert (done["status"], done["who"], done["state"]["armed"]) == ("ok", "user:alice", False)  # the token's subject
    assert [(c["id"], c["status"]) for c in listed] == [(done["id"], "ok")]
    assert track["type"] == "FeatureCollection" and track["properties"]["vehicle"] == "V000001"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.timeout(120)
async def test_the_vehicle_simulator_answers_commands_over_mqtt_and_https(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """`cascade simulate-vehicles` as `make run` starts it (both transports, an ingest worker serving HTTPS):
    every vehicle, whichever its transport, carries out a command and acknowledges it."""
    mqtt = MqttSettings(host="127.0.0.1", port=mosquitto.port, username="ingest", password=mosquitto.ingest_password)
    settings = VehicleSettings(devices=str(mosquitto.paths["devices"]), mqtt=mqtt, https=HttpsSettings(port=0),
                               metrics_port=0, rate_per_s=10)
    ids = [f"V{n:06d}" for n in range(1, 5)]
    async with IngestWorker(settings, None, registry=CollectorRegistry()) as worker, \
            VehicleCommandService(mqtt, mosquitto.devices, retry_s=1.0, expiry_s=60,
                                  registry=CollectorRegistry()) as service:
        assert worker.bridge is not None
        await asyncio.wait_for(worker.bridge.connected.wait(), 10)
        await asyncio.wait_for(service.connected.wait(), 10)
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args(["--vehicles", "4", "--devices", str(mosquitto.paths["devices"]), "--mqtt",
                                  f"127.0.0.1:{mosquitto.port}", "--https", f"http://127.0.0.1:{worker.https_port}",
                                  "--https-share", "0.5", "--fleet-file", str(tmp_path / "none.yaml"),
                                  "--rate-scale", "30", "--status-interval", "0", "--duration", "60"])
        simulator = asyncio.create_task(run(args))
        try:
            records = [service.issue(vehicle, "arm", who="user:test") for vehicle in ids]
            for record in records:
                await service.wait(record.id, 45)
        finally:
            simulator.cancel()
            await asyncio.gather(simulator, return_exceptions=True)
    assert [(r.vehicle, r.status, (r.state or {}).get("armed")) for r in records] == [(v, "ok", True) for v in ids]
