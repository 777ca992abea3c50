"""Findings of a new user on the vehicle features, each pinned down: the unacknowledged-command alert
names no person and is an alert like every other (listed, acknowledged, cleared, surviving a restart);
commands go to vehicles only; vehicle permissions and their refusals; a regulator's view of command
records; ``--who`` with a token; CLI refusals printed; vehicle alerts restored after a restart clear on
good reports (fence centres kept); tracks (parked state, unknown vehicle, empty range, a closed pipe);
the geofence van's odometer."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from alerting.auth import ApiAuth
from alerting.engine import Engine
from alerting.rules import load_rules
from alerting.service import AlertService
from alerting.state import AlertStore
from alerting.vehicle_commands import COMMAND_UNACKNOWLEDGED
from cascade.commands import CommandRefused, VehicleCommandService, add_command_routes
from cascade.tracks import TrackPoint, to_geojson
from cascade.vehicle_cli import _write_stdout
from cascade.vehicle_cli import main as vehicle_cli
from collectors.vehicles.commands import Ack, DeviceState
from collectors.vehicles.functions import VehicleFunctions
from collectors.vehicles.settings import MqttSettings
from collectors.vehicles.trust import Device, DeviceRegistry
from collectors.vehicles.watch import VehicleTracker, as_engine_reading
from core.auth import ROLE_PERMISSIONS, VEHICLE, VEHICLE_POWER, Principal
from core.model import BLE_GATEWAY_MODEL, CabinetReading, SlotReading, VehicleReading
from simulators.city import chaoyang
from simulators.vehicles import Simulation, place_stations
from tests.fixtures.clock import ManualClock

T0 = 1_764_990_000.0
KEY = f"{COMMAND_UNACKNOWLEDGED}@bj/V000001"


def _devices() -> DeviceRegistry:
    return DeviceRegistry([Device(f"V00000{n}", "bj", bytes(16)) for n in (1, 2, 3)] + [Device("G000001", "bj", bytes(16))])


def _alerting(path: Path, clock: ManualClock) -> tuple[Engine, AlertService]:
    engine = Engine(load_rules(), clock=clock, state=AlertStore(path))
    return engine, AlertService(engine, alertmanager_url=None, clock=clock, registry=CollectorRegistry())


def _commands(clock: ManualClock, alerts: Any = None, **options: Any) -> VehicleCommandService:
    return VehicleCommandService(MqttSettings(host="127.0.0.1", port=1), _devices(), clock=clock, alerts=alerts,
                                 registry=CollectorRegistry(), **options)


def _report(vehicle: str = "V000001", **values: Any) -> CabinetReading:
    return as_engine_reading(VehicleReading(vehicle, "bj", int(T0 * 1e9), received_ns=int(T0 * 1e9), **values))


# -- 2, 3: the unacknowledged-command alert -------------------------------------------------------------------


def test_unacknowledged_command_alert_names_no_person_is_listed_acknowledged_and_cleared_by_any_later_ack(
        tmp_path: Path) -> None:
    clock = ManualClock(T0)
    _engine, alerts = _alerting(tmp_path / "alerts.json", clock)
    commands = _commands(clock, alerts)
    record = commands.issue("V000001", "power_off", who="user:engineer1", reason="testing", expiry_s=15)
    clock.advance(16)
    commands.check()
    assert record.status == "expired"
    [listed] = [a for a in alerts.active_alerts() if a["key"] == KEY]  # in GET /api/alerts
    assert listed["level"] == 2 and listed["labels"]["command"] == "power_off"
    notes = json.dumps(listed["annotations"], ensure_ascii=False)
    assert "engineer1" not in notes and "user:" not in notes  # the regulator's feed: no person
    assert "有人" in listed["annotations"]["diagnosis"]  # "a person asked", Chinese by default
    acked = alerts.acknowledge(KEY, "operator7", "calling the rider")  # POST /api/alerts/{key}/ack
    assert acked["ack"]["who"] == "operator7"
    # A later command of another kind, acknowledged (even refused): the vehicle is reachable again.
    later = commands.issue("V000001", "arm", who="user:engineer1")
    commands.handle_ack("V000001", Ack(id=later.id, vehicle="V000001", result="ok", ts=int(clock() * 1000),
                                       state=DeviceState(armed=True)))
    assert alerts.store.get(KEY) is None and KEY not in {a["key"] for a in alerts.active_alerts()}


def test_the_command_alert_survives_a_restart_and_resolves_a_bounded_time_after_the_vehicle_reports_again(
        tmp_path: Path) -> None:
    clock = ManualClock(T0)
    _engine, alerts = _alerting(tmp_path / "alerts.json", clock)
    commands = _commands(clock, alerts)
    commands.issue("V000001", "motor_lock", who="rule:wheel_motion_armed@level2", expiry_s=15)
    clock.advance(16)
    commands.check()
    assert "规则" in alerts.store.get(KEY).annotations["diagnosis"]  # a rule asked
    # cascade run restarts: the engine keeps the alert (not a catalogue rule, not "retired"), the command
    # service takes it over.
    engine, alerts = _alerting(tmp_path / "alerts.json", clock)
    assert engine.startup_transitions == [] and alerts.store.get(KEY) is not None
    commands = _commands(clock, alerts, resolve_after_s=600)
    commands.adopt_alerts()
    commands.observe(_report(powered_on=True, armed=False))  # reports again, lock not confirmed
    clock.advance(599)
    commands.check()
    assert alerts.store.get(KEY) is not None
    clock.advance(2)
    commands.check()
    assert alerts.store.get(KEY) is None
    history = [h for h in alerts.store.history() if h.get("key") == KEY]
    assert history[-1]["kind"] == "clear"


def test_a_report_showing_the_state_asked_for_clears_the_alert_at_once(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    _engine, alerts = _alerting(tmp_path / "alerts.json", clock)
    commands = _commands(clock, alerts)
    commands.issue("V000001", "power_off", who="user:alice", expiry_s=5)
    clock.advance(6)
    commands.check()
    commands.observe(_report(powered_on=True))
    assert alerts.store.get(KEY) is not None
    commands.observe(_report(powered_on=False))
    assert alerts.store.get(KEY) is None


def test_a_device_that_reports_as_a_ble_gateway_is_refused_as_not_a_vehicle() -> None:
    commands = _commands(ManualClock(T0))
    commands.observe(CabinetReading("G000001", "bj", BLE_GATEWAY_MODEL, int(T0 * 1e9), slots=[]))
    with pytest.raises(CommandRefused, match="'G000001' is a BLE gateway, not a vehicle") as err:
        commands.issue("G000001", "power_off", who="user:alice")
    assert err.value.reason == "not_a_vehicle" and commands.records == {}


def test_a_person_cannot_arm_a_vehicle_that_is_being_ridden() -> None:
    """Armed, wheel motion raises the theft alarm and locks the motor: arming a ridden vehicle would stop
    its rider on the road. Refused while its last report (at most 3 min old) shows it moving."""
    clock = ManualClock(T0)
    commands = _commands(clock)
    commands.observe(_report(speed_kmh=18.0))
    with pytest.raises(CommandRefused, match="'V000001' is moving") as err:
        commands.issue("V000001", "arm", who="user:op")
    assert err.value.reason == "vehicle_moving" and commands.records == {}
    commands.issue("V000001", "motor_lock", who="user:op")  # the theft response itself is not held back
    commands.observe(_report(speed_kmh=0.0))  # parked now
    assert commands.issue("V000001", "arm", who="user:op").command == "arm"
    commands.observe(_report(speed_kmh=20.0))
    clock.now += 181  # nothing heard for 3 min: the old report says nothing about now
    assert commands.issue("V000001", "arm", who="user:op").command == "arm"


# -- 7, 11, 12, 5: permissions, redaction, who, CLI refusals ----------------------------------------------------


class _Verifier:
    """Tokens ``role:subject`` (the real ApiAuth, a stand-in for the JWT check)."""

    class settings:  # noqa: N801 - what ApiAuth reads of a verifier
        audience = "cascade-api"

    async def verify(self, token: str) -> Principal:
        role, _, subject = token.partition(":")
        return Principal(subject, frozenset({role}), "jwt")


async def _serve(commands: VehicleCommandService) -> tuple[web.AppRunner, str]:
    app = web.Application()
    add_command_routes(app, commands, auth=ApiAuth(_Verifier()))  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def test_vehicle_permissions_come_from_the_role_table() -> None:
    may = {role: (VEHICLE in granted, VEHICLE_POWER in granted) for role, granted in ROLE_PERMISSIONS.items()}
    assert may == {"viewer": (False, False), "regulator": (False, False), "operator": (True, False),
                   "engineer": (True, True), "admin": (True, True)}


async def test_roles_who_and_a_regulators_view_of_command_records(capsys: pytest.CaptureFixture[str]) -> None:
    import aiohttp

    commands = _commands(ManualClock(T0))
    commands.issue("V000002", "motor_lock", who="rule:wheel_motion_armed@level2", reason="L2 armed and moving")
    runner, url = await _serve(commands)
    try:
        async with aiohttp.ClientSession() as http:
            async def post(token: str | None, vehicle: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with http.post(f"{url}/api/vehicles/{vehicle}/commands", json=body, headers=headers) as r:
                    return r.status, await r.json()

            armed = await post("operator:op1", "V000001", {"command": "arm", "reason": "parked at night"})
            power = await post("operator:op1", "V000001", {"command": "power_off"})
            viewer = await post("viewer:v1", "V000001", {"command": "arm"})
            # --who is not needed with a token, and the token's subject is what is recorded
            engineer = await post("engineer:eng1", "V000001", {"command": "power_off", "who": "someone-else"})
            gateway = await post("engineer:eng1", "G000001", {"command": "power_off"})
            async with http.get(f"{url}/api/vehicles/commands", headers={"Authorization": "Bearer regulator:r1"}) as r:
                regulator = await r.json()
        commands.observe(CabinetReading("G000001", "bj", BLE_GATEWAY_MODEL, int(T0 * 1e9), slots=[]))
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/api/vehicles/G000001/commands", json={"command": "power_off"},
                                 headers={"Authorization": "Bearer engineer:eng1"}) as r:
                not_vehicle = r.status, await r.json()
        # 5: the CLI without a token prints the refusal (Chinese by default); 12: no --who needed with a token
        ns = argparse.Namespace(vehicle_command="commands", url=url, token=None, json=False, vehicle=None)
        listed = await asyncio.to_thread(vehicle_cli, ns, out=io.StringIO())
        err = capsys.readouterr().err
        ns = argparse.Namespace(vehicle_command="command", url=url, token=None, json=False, reason="", wait=0.0,
                                expiry=None, who=None, vehicle="V000001", command="arm")
        nobody = await asyncio.to_thread(vehicle_cli, ns, out=io.StringIO())
        nobody_err = capsys.readouterr().err
        out = io.StringIO()
        ns = argparse.Namespace(vehicle_command="command", url=url, token="operator:op2", json=False, reason="",
                                wait=0.0, expiry=None, who=None, vehicle="V000003", command="motor_lock")
        with_token = await asyncio.to_thread(vehicle_cli, ns, out=out)
    finally:
        await runner.cleanup()
    assert armed[0] == 202 and armed[1]["who"] == "user:op1"
    assert power[0] == 403 and power[1]["code"] == "forbidden"
    assert "机柜" not in power[1]["error"] and "车辆" in power[1]["error"] and "engineer" in power[1]["error"]
    assert viewer[0] == 403 and "车辆" in viewer[1]["error"] and "机柜" not in viewer[1]["error"]
    assert engineer[0] == 202 and engineer[1]["who"] == "user:eng1"
    assert gateway[0] == 202  # not yet known as a gateway (it has not reported since the start)
    assert not_vehicle[0] == 400 and not_vehicle[1]["code"] == "not_a_vehicle"
    # The refusal in Chinese by default (no Accept-Language), the stable code beside it, the English as detail.
    assert "是 BLE 网关，不是车辆" in not_vehicle[1]["error"] and "处理：" in not_vehicle[1]["error"]
    assert "BLE gateway, not a vehicle" in not_vehicle[1]["detail"]
    by_who = {(r["command"], r["vehicle"]): r for r in regulator["commands"]}
    person = by_who[("arm", "V000001")]
    rule = by_who[("motor_lock", "V000002")]
    assert person["who"] is None and person["reason"] is None  # as /api/actions: null, not "user" / ""
    assert rule["who"] == "rule:wheel_motion_armed@level2" and rule["reason"] == "L2 armed and moving"
    assert listed == 1 and "cascade vehicle commands: " in err and "令牌" in err and "HTTP 401" in err
    # The hint names this command's own option, not `cascade alerts --token`, and the stable code.
    assert "cascade vehicle commands ... --token" in err and "cascade alerts" not in err and "[missing_token]" in err
    assert nobody == 2 and "--who" in nobody_err
    assert with_token == 1 and "操作人 user:op2" in out.getvalue()  # pending after --wait 0: exit 1


# -- 14: vehicle alerts restored after a restart clear on good reports ------------------------------------------


def _vehicle(clock: ManualClock, vehicle: str, **values: Any) -> VehicleReading:
    return VehicleReading(vehicle, "bj", int(clock() * 1e9), received_ns=int(clock() * 1e9), **values)


def test_restored_vehicle_alerts_clear_on_good_reports_after_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    rules = load_rules().only(["geofence_exit", "vehicle_low_soc"])
    functions = VehicleFunctions(defaults={"low_soc_pct": 20, "fence_radius_m": 300})
    fences = tmp_path / "alerts-vehicle-fences.json"

    def run() -> tuple[Engine, VehicleTracker]:
        return (Engine(rules, clock=clock, state=AlertStore(tmp_path / "alerts.json")),
                VehicleTracker(functions, clock=clock, fences_file=fences))

    def report(engine: Engine, tracker: VehicleTracker, vehicle: str, **values: Any) -> list[tuple[str, str]]:
        reading = _vehicle(clock, vehicle, **values)
        tracker.note(reading, clock())
        return [(t.rule, t.kind) for t in engine.evaluate(as_engine_reading(reading))]

    home, away = (39.924, 116.544), (39.950, 116.544)  # 2.9 km north: ~10 fence radii
    pack = {"battery": SlotReading(slot=1, battery_id="P3", soc_pct=14.0)}
    engine, tracker = run()
    for vehicle in ("V000001", "V000002"):
        assert report(engine, tracker, vehicle, armed=True, latitude_deg=home[0], longitude_deg=home[1]) == []
        assert report(engine, tracker, vehicle, armed=True, latitude_deg=away[0], longitude_deg=away[1]) == [
            ("geofence_exit", "raise")]
    assert report(engine, tracker, "V000003", **pack) == [("vehicle_low_soc", "raise")]

    engine, tracker = run()  # cascade run restarts
    assert engine.startup_transitions == []
    # Still away and armed: the fence is still centred where it was armed (not re-centred here), so it stays.
    for _ in range(3):
        clock.advance(300)
        assert report(engine, tracker, "V000001", armed=True, latitude_deg=away[0], longitude_deg=away[1]) == []
    # V000001 is brought home, V000002 disarmed by its user: both clear after the rule's clear_for (5 min).
    # V000003's new pack (84.5 %) clears the reminder at once.
    assert report(engine, tracker, "V000003", battery=SlotReading(slot=1, battery_id="P9", soc_pct=84.5)) == [
        ("vehicle_low_soc", "clear")]
    cleared = []
    for _ in range(2):
        cleared += report(engine, tracker, "V000001", armed=True, latitude_deg=home[0], longitude_deg=home[1])
        cleared += report(engine, tracker, "V000002", armed=False, latitude_deg=away[0], longitude_deg=away[1])
        clock.advance(301)
    assert cleared == [("geofence_exit", "clear"), ("geofence_exit", "clear")]
    assert engine.state.active() == []


def test_a_fence_alert_clears_when_the_vehicle_is_disarmed_without_a_restart() -> None:
    clock = ManualClock(T0)
    engine = Engine(load_rules().only(["geofence_exit"]), clock=clock)
    tracker = VehicleTracker(VehicleFunctions(defaults={"fence_radius_m": 300}), clock=clock)
    kinds = []
    for armed, lat in ((True, 39.924), (True, 39.95), (False, 39.95), (False, 39.95)):
        reading = _vehicle(clock, "V000001", armed=armed, latitude_deg=lat, longitude_deg=116.544)
        tracker.note(reading, clock())
        kinds += [t.kind for t in engine.evaluate(as_engine_reading(reading))]
        clock.advance(301)
    assert kinds == ["raise", "clear"]


# -- 15: tracks, the simulator ------------------------------------------------------------------------------------


def test_a_parked_report_shows_parked_in_the_track_points() -> None:
    doc = to_geojson("V000001", [TrackPoint(1_000, 39.9, 116.5, state=0, power=False),
                                 TrackPoint(2_000, 39.9, 116.5, state=2, power=True)], with_points=True)
    assert [f["properties"]["state"] for f in doc["features"][1:]] == ["parked", "riding"]


def test_track_refuses_an_unknown_vehicle_and_hints_at_an_empty_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import cascade.tracks

    devices = tmp_path / "devices.json"
    devices.write_text(json.dumps({"devices": [{"id": "V000001", "fleet": "bj", "secret": "00" * 16}]}))

    async def nothing(*_args: Any, **_kw: Any) -> list[TrackPoint]:
        return []
    monkeypatch.setattr(cascade.tracks, "fetch_track", nothing)

    def track(vehicle: str) -> tuple[int, str, str]:
        out = io.StringIO()
        ns = argparse.Namespace(vehicle_command="track", vehicle=vehicle, since="2h", until="now", out="-",
                                points=False, influx="http://127.0.0.1:9", db="cascade", devices=str(devices))
        status = vehicle_cli(ns, out=out)
        return status, out.getvalue(), capsys.readouterr().err

    status, out, err = track("V404")
    assert status == 2 and out == "" and "V404" in err and "devices.json" in err
    status, out, err = track("V000001")
    assert status == 0 and json.loads(out)["features"] == [] and "V000001" in err and "--since" in err


def test_a_reader_that_closes_the_pipe_ends_the_output_quietly() -> None:
    class Closed(io.StringIO):
        def write(self, _text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    _write_stdout('{"type": "FeatureCollection"}', Closed())  # no traceback, no exception


def test_a_vehicle_carried_on_a_van_keeps_its_odometer_and_a_pushed_one_counts() -> None:
    city = chaoyang()
    sim = Simulation(city, place_stations(city, ["S001"], seed=1), ["V000001", "V000002"], fleet="bj", seed=1,
                     start_wall_s=time.time())
    sim.script("V000001", "geofence", 60)
    sim.script("V000002", "theft", 60)
    odometers: dict[str, list[float]] = {"V000001": [], "V000002": []}
    for vehicle, report in sim.step(1800):
        odometers[vehicle.id].append(report.odometer_km)
    assert len(set(odometers["V000001"])) == 1 and odometers["V000001"]  # wheels still on the van
    assert odometers["V000002"][-1] > odometers["V000002"][0]  # pushed: the wheels turn


def test_the_low_soc_reminder_summary_shows_the_soc_and_the_reminder_level() -> None:
    clock = ManualClock(T0)
    tracker = VehicleTracker(VehicleFunctions(defaults={"low_soc_pct": 20}), clock=clock)
    summaries = {}
    for language in ("zh_CN", "en"):
        engine = Engine(load_rules().only(["vehicle_low_soc"]), clock=clock, language=language)
        reading = _vehicle(clock, "V000003", battery=SlotReading(slot=1, battery_id="P3", soc_pct=14.2))
        tracker.note(reading, clock())
        [raised] = engine.evaluate(as_engine_reading(reading))
        summaries[language] = raised.annotations["summary"]
    assert summaries == {"zh_CN": "L1 低电量提醒 SOC 14%，提醒值 20%（bj/V000003号车）",
                         "en": "L1 Low battery reminder SOC 14 %, reminder at 20 % at bj/V000003 vehicle"}
