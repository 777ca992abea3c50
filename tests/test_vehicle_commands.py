"""Remote vehicle commands end to end: the command service of `cascade run`, a real Mosquitto (with the
provisioned ACL), the simulated vehicles answering over MQTT and over HTTPS (through a real ingest
worker's downlink), the audit read back, and an unacknowledged command alerting through a real
Alertmanager."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import aiomqtt
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from alerting.alertmanager import AlertmanagerPusher
from alerting.i18n import AlertTexts
from alerting.state import Target, Transition
from alerting.vehicle_commands import COMMAND_UNACKNOWLEDGED
from cascade.commands import CommandRefused, VehicleCommandService, add_command_routes, forward_vehicle_commands
from cascade.vehicle_cli import main as vehicle_cli
from cascade.vehicles import IngestWorker
from collectors.vehicles.commands import Ack, Command, CommandWireError, DeviceState, decode_ack, decode_command, encode
from collectors.vehicles.https import Downlink
from collectors.vehicles.mqtt import topic
from collectors.vehicles.settings import HttpsSettings, MqttSettings, VehicleSettings
from collectors.vehicles.wire import Position, Telemetry
from collectors.vehicles.wire import encode as encode_report
from core.events import AlertEvent, CommandResult
from simulators.vehicle_commands import HttpsCommandPoller, VehicleControls
from simulators.vehicles import MqttTransport, Stats
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.prom import AlertmanagerServer


def _mqtt(broker: Mosquitto) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=broker.port, username="ingest", password=broker.ingest_password)


def _service(broker: Mosquitto, tmp_path: Path, points: list[Any], **options: Any) -> VehicleCommandService:
    options.setdefault("registry", CollectorRegistry())
    return VehicleCommandService(_mqtt(broker), broker.devices, audit_path=tmp_path / "vehicle-commands.jsonl",
                                 emit=points.extend, client_id=f"test-commands-{time.monotonic_ns()}", **options)


async def _wait(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def _report(vehicle: str, seq: int = 1, lat: float = 39.92) -> Telemetry:
    return Telemetry(vehicle=vehicle, ts=int(time.time() * 1000), seq=seq, state="riding", power=True,
                     pos=Position(lat=lat, lon=116.54), speed_kmh=18.0, odometer_km=100.0 + seq)


@asynccontextmanager
async def _simulated_mqtt_vehicle(broker: Mosquitto, vehicle: str, controls: VehicleControls) -> AsyncIterator[None]:
    """The vehicle simulator's MQTT transport with command answering on, connected as ``vehicle``."""
    transport = MqttTransport("127.0.0.1", broker.port, broker.devices, Stats(), in_flight=2)
    transport.on_command = controls.handle
    task = asyncio.create_task(transport.run())
    transport.submit(SimpleNamespace(id=vehicle, fleet="bj"), encode_report(_report(vehicle)))  # type: ignore[arg-type]
    try:
        await _wait(lambda: vehicle in transport.clients)
        await asyncio.sleep(0.3)  # the cmd subscription is made right after connecting
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await transport.close()


def _audit(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "vehicle-commands.jsonl").read_text().splitlines()]


# -- wire ------------------------------------------------------------------------------------------


def test_command_and_ack_round_trip_and_refuse_what_is_not_one() -> None:
    command = Command(id="c-1", vehicle="V000001", command="motor_lock", issued_ms=1, expires_ms=2)
    assert decode_command(encode(command)) == command
    ack = Ack(id="c-1", vehicle="V000001", result="ok", ts=3, state=DeviceState(power=True, locked=True))
    assert decode_ack(encode(ack)) == ack
    for bad, reason in ((b"not json", "not_json"), (b'{"id": "c-1"}', "schema"), (b" " * 5000, "too_large")):
        with pytest.raises(CommandWireError) as err:
            decode_ack(bad)
        assert err.value.reason == reason
    with pytest.raises(CommandWireError, match="Invalid enum value 'fire_suppress'"):
        decode_command(encode(command).replace(b"motor_lock", b"fire_suppress"))


def test_simulated_vehicle_carries_out_once_rejects_expired_and_reports_stood_still() -> None:
    controls = VehicleControls()
    controls.adjust(_report("V000009", 1, lat=39.90))  # its last report before the command
    now_ms = int(time.time() * 1000)
    lock = encode(Command(id="c-a", vehicle="V000009", command="motor_lock", issued_ms=now_ms, expires_ms=now_ms + 60_000))
    first = decode_ack(controls.handle("V000009", lock) or b"")
    assert (first.result, first.state) == ("ok", DeviceState(power=True, locked=True, armed=False))
    assert controls.handle("V000009", lock) == encode(first) and controls.carried_out == 1  # a retry: same answer
    late = encode(Command(id="c-b", vehicle="V000009", command="power_off", issued_ms=now_ms - 9000,
                          expires_ms=now_ms - 1000))
    rejected = decode_ack(controls.handle("V000009", late) or b"")
    assert rejected.result == "rejected" and "expired" in rejected.detail and rejected.state.power is True
    assert controls.handle("V000008", lock) is None  # a command naming another vehicle is not carried out
    moved = controls.adjust(_report("V000009", 2, lat=39.95))  # the ride model moved on; the locked bike did not
    assert (moved.speed_kmh, moved.state, moved.pos.lat) == (0.0, "parked", 39.90)


def test_downlink_hands_live_commands_out_once_replaces_retries_and_drops_acknowledged() -> None:
    now = [1000.0]
    downlink = Downlink(per_device=2, clock=lambda: now[0])
    c1 = Command(id="c-1", vehicle="V1", command="arm", issued_ms=1, expires_ms=1_010_000)
    downlink.put("V1", c1)
    downlink.put("V1", Command(id="c-1", vehicle="V1", command="arm", issued_ms=1, expires_ms=1_010_000, attempt=2))
    downlink.put("V1", Command(id="c-2", vehicle="V1", command="disarm", issued_ms=1, expires_ms=1_001_000))
    now[0] = 1005.0
    assert [(c.id, c.attempt) for c in downlink.take("V1")] == [("c-1", 2)]  # c-2 expired, c-1 once (its retry)
    assert downlink.take("V1") == []
    downlink.put("V1", c1)
    downlink.drop("V1", "c-1")
    assert len(downlink) == 0
    downlink.put("V2", c1)  # a device that never polls (MQTT): its command is forgotten once expired
    now[0] = 1011.0
    downlink.prune()
    assert len(downlink) == 0


# -- MQTT ------------------------------------------------------------------------------------------


async def test_mqtt_command_acknowledged_by_a_simulated_vehicle_is_read_back_audited_stored_and_counted(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    points: list[Any] = []
    registry = CollectorRegistry()
    controls = VehicleControls()
    async with _service(mosquitto, tmp_path, points, registry=registry) as service, \
            _simulated_mqtt_vehicle(mosquitto, "V000001", controls):
        await asyncio.wait_for(service.connected.wait(), 10)
        record = service.issue("V000001", "motor_lock", who="user:alice", reason="reported stolen")
        done = await service.wait(record.id, 15)
    assert (done.status, done.attempts, done.state) == ("ok", 1, {"power": True, "locked": True, "armed": False})
    assert controls.vehicles["V000001"].locked
    audit = _audit(tmp_path)
    assert [e["event"] for e in audit] == ["sent", "ok"]
    assert {(e["id"], e["who"], e["vehicle"], e["command"], e["reason"]) for e in audit} == {
        (record.id, "user:alice", "V000001", "motor_lock", "reported stolen")}
    assert audit[-1]["state"] == {"power": True, "locked": True, "armed": False} and audit[-1]["result"] == "ok"
    stored = [p for p in points if isinstance(p, CommandResult)]
    assert len(stored) == 1
    assert (stored[0].site, stored[0].cabinet_id, stored[0].command, stored[0].actor, stored[0].ok,
            stored[0].readback) == ("bj", "V000001", "motor_lock", "user:alice", True, True)
    value = registry.get_sample_value
    assert value("cascade_vehicle_commands_total", {"command": "motor_lock", "outcome": "sent"}) == 1
    assert value("cascade_vehicle_commands_total", {"command": "motor_lock", "outcome": "acked"}) == 1
    assert value("cascade_vehicle_commands_pending") == 0


async def test_an_acknowledgement_that_reads_back_another_state_is_a_failed_command(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    points: list[Any] = []
    async with _service(mosquitto, tmp_path, points) as service:
        await asyncio.wait_for(service.connected.wait(), 10)
        record = service.issue("V000004", "power_off", who="user:bob")
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, username="V000004", password=mosquitto.secret("V000004"),
                                  protocol=aiomqtt.ProtocolVersion.V5) as device:
            # the device says ok but is still powered: the read-back decides
            await device.publish(topic("bj", "V000004", "ack"), encode(Ack(
                id=record.id, vehicle="V000004", result="ok", ts=int(time.time() * 1000),
                state=DeviceState(power=True))), qos=1)
            done = await service.wait(record.id, 10)
    assert done.status == "failed" and "power reads back yes instead of no" in done.detail
    # People read the detail in their language (the API's detail_text, the CLI's line); detail stays English.
    assert done.to_dict(AlertTexts("zh_CN"))["detail_text"] == "已确认，但电源回读为是，应为否"
    assert done.to_dict(AlertTexts("en"))["detail_text"] == done.detail == done.to_dict()["detail"]
    assert [p.ok for p in points if isinstance(p, CommandResult)] == [False]


# -- HTTPS -----------------------------------------------------------------------------------------


async def test_https_vehicle_polls_its_command_from_an_ingest_worker_and_posts_the_ack(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    settings = VehicleSettings(devices=str(mosquitto.paths["devices"]), mqtt=_mqtt(mosquitto),
                               https=HttpsSettings(port=0), metrics_port=0)
    points: list[Any] = []
    controls = VehicleControls()
    async with IngestWorker(settings, None, registry=CollectorRegistry()) as worker, \
            _service(mosquitto, tmp_path, points) as service, aiohttp.ClientSession() as session:
        assert worker.bridge is not None
        await asyncio.wait_for(worker.bridge.connected.wait(), 10)
        await asyncio.wait_for(service.connected.wait(), 10)
        poller = HttpsCommandPoller(f"http://127.0.0.1:{worker.https_port}", mosquitto.devices, controls, ["V000007"])
        record = service.issue("V000007", "arm", who="user:carol")
        await _wait(lambda: len(worker.downlink) == 1)  # the worker holds it for the device's next poll
        assert await poller.poll(session, "V000007") == 1
        done = await service.wait(record.id, 15)
        assert await poller.poll(session, "V000007") == 0  # handed out once, acknowledged: nothing left
        # a device may post only its own acknowledgements
        forged = encode(Ack(id=record.id, vehicle="V000008", result="ok", ts=int(time.time() * 1000)))
        headers = {**poller._headers("V000007", forged), "Content-Type": "application/json"}
        async with session.post(f"http://127.0.0.1:{worker.https_port}/v1/acks", data=forged, headers=headers) as resp:
            answer = await resp.json()
        assert resp.status == 422 and answer["refused"][0]["reason"] == "wrong_device"
    assert (done.status, done.state) == ("ok", {"power": True, "locked": False, "armed": True})
    assert poller.acks_sent == 1 and controls.vehicles["V000007"].armed


# -- expiry, retries, alert --------------------------------------------------------------------------


async def test_an_unacknowledged_command_is_retried_a_bounded_number_of_times_then_alerts_through_alertmanager(
        mosquitto: Mosquitto, alertmanager: AlertmanagerServer, tmp_path: Path) -> None:
    points: list[Any] = []
    registry = CollectorRegistry()
    received: list[Command] = []
    async with AlertmanagerPusher(alertmanager.url, registry=registry) as pusher, \
            _service(mosquitto, tmp_path, points, registry=registry, pusher=pusher, expiry_s=2.5, retry_s=0.5,
                     max_attempts=3) as service, \
            aiomqtt.Client("127.0.0.1", mosquitto.port, username="V000002", password=mosquitto.secret("V000002"),
                           protocol=aiomqtt.ProtocolVersion.V5) as device:
        await device.subscribe(topic("bj", "V000002", "cmd"), qos=1)  # listens, never answers

        async def listen() -> None:
            async for message in device.messages:
                received.append(decode_command(bytes(message.payload)))  # type: ignore[arg-type]
        listener = asyncio.create_task(listen())
        await asyncio.wait_for(service.connected.wait(), 10)
        record = service.issue("V000002", "motor_lock", who="rule:vehicle_motion_armed@level3", level=3)
        done = await service.wait(record.id, 10)
        await asyncio.sleep(0.5)
        listener.cancel()
        await _wait(lambda: any(a["labels"].get("alertname") == COMMAND_UNACKNOWLEDGED for a in alertmanager.alerts()))
    assert done.status == "expired" and done.attempts == 3
    assert [(c.id, c.attempt) for c in received] == [(record.id, 1), (record.id, 2), (record.id, 3)]
    alert = next(a for a in alertmanager.alerts() if a["labels"]["alertname"] == COMMAND_UNACKNOWLEDGED)
    assert {k: alert["labels"][k] for k in ("vehicle", "command", "level", "site", "cabinet")} == {
        "vehicle": "V000002", "command": "motor_lock", "level": "3", "site": "bj", "cabinet": "V000002"}
    assert "电机锁定" in alert["annotations"]["summary"] and "未确认" in alert["annotations"]["summary"]
    assert "3" in alert["annotations"]["diagnosis"]
    events = [p for p in points if isinstance(p, AlertEvent)]
    assert [(e.rule, e.kind, e.level, e.cabinet) for e in events] == [(COMMAND_UNACKNOWLEDGED, "raise", 3, "V000002")]
    assert [e["event"] for e in _audit(tmp_path)] == ["sent", "retry", "retry", "expired"]
    assert registry.get_sample_value("cascade_vehicle_commands_total",
                                     {"command": "motor_lock", "outcome": "expired"}) == 1
    assert registry.get_sample_value("cascade_vehicle_command_publishes_total", {"command": "motor_lock"}) == 3


def test_unknown_vehicle_bad_command_and_nobody_are_refused_with_a_clear_error(mosquitto: Mosquitto,
                                                                                 tmp_path: Path) -> None:
    service = _service(mosquitto, tmp_path, [])
    with pytest.raises(CommandRefused, match="'V999999' is not a provisioned device.*Fix: check the vehicle id") as err:
        service.issue("V999999", "motor_lock", who="user:alice")
    assert err.value.reason == "unknown_vehicle"
    with pytest.raises(CommandRefused, match="unknown command 'self_destruct'.*power_on, power_off, motor_lock"):
        service.issue("V000001", "self_destruct", who="user:alice")
    with pytest.raises(CommandRefused, match="no one named"):
        service.issue("V000001", "arm", who=" ")
    assert service.records == {} and not (tmp_path / "vehicle-commands.jsonl").exists()


# -- API, CLI, engine ----------------------------------------------------------------------------------


async def test_cli_commands_a_simulated_vehicle_through_the_http_api_and_refuses_clearly(
        mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    controls = VehicleControls()
    async with _service(mosquitto, tmp_path, []) as service, _simulated_mqtt_vehicle(mosquitto, "V000003", controls):
        app = web.Application()
        add_command_routes(app, service)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        await asyncio.wait_for(service.connected.wait(), 10)

        def cli(*argv: str) -> tuple[int, str]:
            out = io.StringIO()
            ns = argparse.Namespace(vehicle_command="command", url=url, token=None, json=False, reason="",
                                    wait=15.0, expiry=None, who="alice", language="en", timezone="UTC")
            ns.vehicle, ns.command = argv
            return vehicle_cli(ns, out=out), out.getvalue()

        try:
            status, text = await asyncio.to_thread(cli, "V000003", "power_off")
            refused, _ = await asyncio.to_thread(cli, "V404", "power_off")
            listing = io.StringIO()
            listed = await asyncio.to_thread(vehicle_cli, argparse.Namespace(
                vehicle_command="commands", url=url, token=None, json=False, vehicle="V000003"), out=listing)
        finally:
            await runner.cleanup()
    assert status == 0 and "V000003 power off (power_off) by user:alice: OK after 1 attempt(s); power=no" in text
    assert refused == 1 and "vehicle 'V404' is not a provisioned device" in capsys.readouterr().err
    # Without --language: Simplified Chinese, the command's code beside its name, times in Beijing time.
    shown = listing.getvalue()
    assert listed == 0 and "断电（power_off），操作人 user:alice：成功，共发送 1 次；电源=否" in shown, shown
    issued = dt.datetime.strptime(shown[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert abs(issued.timestamp() - time.time()) < 120
    assert controls.vehicles["V000003"].power is False


def test_a_vehicle_rule_transition_with_a_command_issues_it_once_after_the_alert(mosquitto: Mosquitto,
                                                                                tmp_path: Path) -> None:
    service = _service(mosquitto, tmp_path, [])
    calls: list[str] = []
    alerts = SimpleNamespace(apply=lambda transitions, ts=None: calls.append("alert"))
    forward_vehicle_commands(alerts, service)
    t = Transition(rule="vehicle_motion_armed", target=Target("bj", "V000005", None, None), from_level=0, to_level=3,
                   kind="raise", value=1.0, at=time.time(), diagnosis="", action="", protective_action=None,
                   labels={}, annotations={"summary": "moving while armed"}, vehicle_command="motor_lock")
    alerts.apply([t])
    alerts.apply([t])  # the same command is already pending: not sent twice
    records = list(service.records.values())
    assert calls == ["alert", "alert"]
    assert [(r.vehicle, r.command, r.who, r.level) for r in records] == [
        ("V000005", "motor_lock", "rule:vehicle_motion_armed@level3", 3)]


async def test_keep_connected_backs_off_and_starts_afresh_after_a_session_that_connected(monkeypatch) -> None:
    import aiomqtt

    from collectors.vehicles import commands as wire

    delays: list[float] = []

    async def no_wait(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(wire.asyncio, "sleep", no_wait)
    connected = asyncio.Event()
    outcomes = iter(["fail", "fail", "fail", "connect-then-fail", "fail", "stop"])

    async def session() -> None:
        outcome = next(outcomes)
        if outcome == "stop":
            raise asyncio.CancelledError
        if outcome == "connect-then-fail":
            connected.set()
        raise aiomqtt.MqttError("broker went away")

    with pytest.raises(asyncio.CancelledError):
        await wire.keep_connected(session, connected, MqttSettings(host="127.0.0.1", port=1), "test")
    assert delays == [0.5, 1.0, 2.0, 0.5, 1.0]  # doubling, and afresh once a session had connected
    assert not connected.is_set()
