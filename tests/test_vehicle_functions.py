"""The vehicle functions piece by piece (the scenarios end to end are in test_vehicle_functions_e2e.py):
arming on the wire and in storage (V-5.5), the values the vehicle rules read (fence V-5.2, reminder V-5.6,
discharge protection and chemistry V-5.10, clock V-4.6), the watch's report gaps (V-5.7, V-5.8), the
settings' start-up checks, the time-calibration reply over a real Mosquitto, and a simulated fleet day
that raises no vehicle alarm."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry

from alerting.engine import Engine
from alerting.rules import load_rules, parse_rules
from cascade.vehicles import IngestWorker
from collectors.vehicles.functions import VehicleFunctions
from collectors.vehicles.mqtt import topic
from collectors.vehicles.settings import MqttSettings, VehicleSettings
from collectors.vehicles.watch import VehicleTracker, as_engine_reading
from collectors.vehicles.wire import decode, to_reading
from core.chemistry import discharge_protection_voltage
from core.errors import CascadeError
from core.model import CabinetReading, Chemistry, SlotReading, VehicleProfile, VehicleReading
from core.validation import validate
from exporters.influx.schema import vehicle_to_lines
from simulators.city import chaoyang
from simulators.vehicles import Simulation, parse_scenario, place_stations
from tests.fixtures.clock import ManualClock
from tests.fixtures.mosquitto import Mosquitto

T0 = 1_764_990_000.0
HOME = (39.924109, 116.544608)  # Annex A's example position


def _vehicle(**values: object) -> VehicleReading:
    return VehicleReading("V000001", "bj", int(T0 * 1e9), **values)  # type: ignore[arg-type]


def _pack(**values: object) -> SlotReading:
    return SlotReading(slot=1, battery_id="P1", **values)  # type: ignore[arg-type]


# -- arming on the wire and in InfluxDB ---------------------------------------------------------------------------

def test_armed_travels_on_the_wire_and_is_stored_with_the_vehicle() -> None:
    msg = decode(b'{"v":1,"vehicle":"V000001","seq":1,"ts":1764990000000,"power":false,"armed":true}')
    reading, problems = to_reading(msg, fleet="bj", received_ns=0)
    assert reading.armed is True and not problems
    assert "armed=true" in vehicle_to_lines(reading)[0]
    unarmed, _ = to_reading(decode(b'{"v":1,"vehicle":"V000001","seq":2,"ts":1764990000000}'), fleet="bj",
                            received_ns=0)
    assert unarmed.armed is None and "armed" not in vehicle_to_lines(unarmed)[0]  # not sent: not stored as false


# -- what the vehicle rules read -----------------------------------------------------------------------------------

def test_fence_distance_is_in_radii_from_the_home_point_or_from_where_the_vehicle_was_armed() -> None:
    profile = VehicleProfile(fence_radius_m=100.0, home_latitude_deg=HOME[0], home_longitude_deg=HOME[1])
    north_150m = HOME[0] + 150 / 111_132
    assert _vehicle(profile=profile, latitude_deg=north_150m, longitude_deg=HOME[1]).fence_distance_ratio == \
        pytest.approx(1.5, rel=1e-3)
    tracker = VehicleTracker(VehicleFunctions(defaults={"fence_radius_m": 100.0}))
    armed_here = _vehicle(armed=True, latitude_deg=HOME[0], longitude_deg=HOME[1])
    tracker.note(armed_here, 0.0)
    assert armed_here.fence_distance_ratio == 0.0
    moved = _vehicle(armed=True, latitude_deg=north_150m, longitude_deg=HOME[1])
    tracker.note(moved, 60.0)
    assert moved.fence_anchor == HOME and moved.fence_distance_ratio == pytest.approx(1.5, rel=1e-3)
    tracker.note(_vehicle(armed=False, latitude_deg=north_150m, longitude_deg=HOME[1]), 120.0)  # disarmed: no fence
    rearmed = _vehicle(armed=True, latitude_deg=north_150m, longitude_deg=HOME[1])
    tracker.note(rearmed, 180.0)
    assert rearmed.fence_distance_ratio == 0.0  # the fence is where it was armed again
    assert _vehicle(latitude_deg=HOME[0], longitude_deg=HOME[1]).fence_distance_ratio is None  # no fence set


def test_low_soc_reminder_reads_the_users_setting() -> None:
    profile = VehicleProfile(low_soc_pct=25.0)
    assert _vehicle(profile=profile, battery=_pack(soc_pct=21.0)).soc_below_reminder_pct == 4.0
    assert _vehicle(profile=VehicleProfile(), battery=_pack(soc_pct=21.0)).soc_below_reminder_pct is None


def test_discharge_protection_voltage_follows_v510_by_chemistry() -> None:
    for chemistry in (Chemistry.LFP, Chemistry.NMC, Chemistry.LMO, Chemistry.LTO):
        assert discharge_protection_voltage(chemistry, 48.0) == 38.4  # 锂离子电池组
    assert discharge_protection_voltage(Chemistry.NMC, 46.8) == 38.4  # a 13S pack is of the 48 V class
    assert discharge_protection_voltage(Chemistry.NA_ION, 49.6) == 30.0  # 钠离子电池组
    assert discharge_protection_voltage(Chemistry.NMC, 36.0) == 28.8  # other classes: scaled by class
    assert discharge_protection_voltage(Chemistry.UNKNOWN, 48.0) is None
    assert discharge_protection_voltage(None, 48.0) is None and discharge_protection_voltage(Chemistry.NMC, None) is None
    # The value the rule reads: only while the pack drives the vehicle (V-5.10: it must not discharge there).
    nmc = {"chemistry": int(Chemistry.NMC), "nominal_voltage_v": 46.8, "voltage_v": 38.0}
    assert _vehicle(battery=_pack(charge_current_a=-6.0, **nmc)).below_discharge_protection_v == pytest.approx(0.4)
    assert _vehicle(battery=_pack(charge_current_a=-0.3, **nmc)).below_discharge_protection_v is None  # standby
    sodium = {**nmc, "chemistry": int(Chemistry.NA_ION), "nominal_voltage_v": 49.6}
    assert _vehicle(battery=_pack(charge_current_a=-6.0, **sodium)).below_discharge_protection_v == pytest.approx(-8.0)


def test_a_pack_contradicting_its_declared_chemistry_is_measured_in_volts_per_cell() -> None:
    # An NMC 13S pack (46.8 V) declaring sodium-ion: 3.6 V per cell where sodium-ion is 3.1.
    mislabelled = _pack(chemistry=int(Chemistry.NA_ION), nominal_voltage_v=46.8, cell_count=13)
    assert _vehicle(battery=mislabelled).chemistry_contradiction_v == pytest.approx(0.5)
    # "LFP" cells delivering current at 4.0 V: no LFP cell discharges above its 3.65 V end of charge.
    lfp = {"chemistry": int(Chemistry.LFP), "cell_count": 16, "nominal_voltage_v": 51.2, "cell_voltage_max_v": 4.0}
    assert _vehicle(battery=_pack(charge_current_a=-5.0, **lfp)).chemistry_contradiction_v == pytest.approx(0.35)
    assert _vehicle(battery=_pack(charge_current_a=2.0, **lfp)).chemistry_contradiction_v == pytest.approx(0.0)
    healthy = _pack(chemistry=int(Chemistry.NMC), nominal_voltage_v=46.8, cell_count=13, cell_voltage_max_v=4.1,
                    charge_current_a=-5.0)
    assert _vehicle(battery=healthy).chemistry_contradiction_v < 0.25


def test_clock_skew_is_either_way_and_only_for_received_reports() -> None:
    assert _vehicle(received_ns=int((T0 + 45) * 1e9)).clock_skew_s == pytest.approx(45.0)
    assert _vehicle(received_ns=int((T0 - 45) * 1e9)).clock_skew_s == pytest.approx(45.0)
    assert _vehicle().clock_skew_s is None  # the watch's silence readings have no receive time


# -- the watch's report gaps ---------------------------------------------------------------------------------------

def test_report_gaps_count_intervals_of_the_power_state_between_the_reports() -> None:
    tracker = VehicleTracker(VehicleFunctions(), clock=lambda: T0)
    off = _vehicle(powered_on=False)
    tracker.note(off, 0.0)
    assert off.report_gap_intervals is None  # the first report the watch sees
    power_on = _vehicle(powered_on=True)
    tracker.note(power_on, 3000.0)  # switched on after 50 minutes off: on time (1/h off)
    assert power_on.report_gap_intervals == pytest.approx(3000 / 3600)
    late = _vehicle(powered_on=True)
    tracker.note(late, 3000.0 + 200)
    assert late.report_gap_intervals == pytest.approx(200 / 60)
    assert tracker.overdue(3200.0 + 100) == []  # under two intervals: nothing to say yet
    silent = tracker.overdue(3200.0 + 400)
    assert [(r.vehicle_id, r.powered_on, round(r.report_gap_intervals or 0, 2)) for r in silent] == [
        ("V000001", True, 6.67)]
    assert silent[0].battery is None and silent[0].clock_skew_s is None
    assert tracker.overdue(3600.0 + 30) == []  # at most one silence reading per report interval
    assert [round(r.report_gap_intervals or 0, 2) for r in tracker.overdue(3600.0 + 60)] == [7.67]


def test_the_overdue_rule_raises_on_a_silence_reading_and_clears_on_the_next_report() -> None:
    clock = ManualClock()
    engine = Engine(load_rules().only(["report_overdue"]), clock=clock)
    tracker = VehicleTracker(VehicleFunctions(), clock=clock)
    tracker.note(_vehicle(powered_on=True), 0.0)
    [raised] = [t for r in tracker.overdue(200.0) for t in engine.evaluate(as_engine_reading(r))]
    assert (raised.rule, raised.to_level, raised.target.slot) == ("report_overdue", 1, None)
    assert raised.labels["vehicle"] == "V000001" and "V000001号车" in raised.annotations["summary"]
    back = _vehicle(powered_on=True)
    tracker.note(back, 200.0)
    tracker.note(on_time := _vehicle(powered_on=True), 260.0)
    assert [t.kind for t in engine.evaluate(as_engine_reading(back))] == []  # the gap before it was long
    assert [t.kind for t in engine.evaluate(as_engine_reading(on_time))] == ["clear"]


# -- rules: the command a raise asks for --------------------------------------------------------------------------

def test_a_rule_asks_for_its_vehicle_command_only_when_it_raises_on_a_vehicle() -> None:
    rules = parse_rules("""
rules:
  - id: pack_empty
    scope: slot
    input: {field: voltage_v}
    compare: "<"
    levels: {1: 40, 2: 38}
    vehicle_command: power_off
    description: d
    source: V-5.10
    diagnosis: "x {value}"
    action: "y"
""")
    clock = ManualClock()
    engine = Engine(rules, clock=clock)
    cabinet = CabinetReading("C1", "s1", "reference-cabinet", 0, slots=[_pack(voltage_v=37.0)])
    assert [(t.to_level, t.vehicle_command) for t in engine.evaluate(cabinet)] == [(2, None)]  # a cabinet slot
    vehicle = _vehicle(battery=_pack(voltage_v=39.0))
    assert [(t.to_level, t.vehicle_command) for t in engine.evaluate(as_engine_reading(vehicle))] == [(1, "power_off")]
    vehicle.battery = _pack(voltage_v=37.0)
    assert [(t.kind, t.vehicle_command) for t in engine.evaluate(as_engine_reading(vehicle))] == [
        ("escalate", "power_off")]
    vehicle.battery = _pack(voltage_v=45.0)
    assert [(t.kind, t.vehicle_command) for t in engine.evaluate(as_engine_reading(vehicle))] == [("clear", None)]


def test_shipped_vehicle_rules_and_their_commands() -> None:
    rules = load_rules()
    vehicle = {r.id: ([lv.level for lv in r.levels], r.vehicle_command) for r in rules.values() if r.scope == "vehicle"}
    assert vehicle == {
        "wheel_motion_armed": ([2], "motor_lock"), "geofence_exit": ([2], None), "vehicle_low_soc": ([1], None),
        "discharge_protection": ([2], "power_off"), "chemistry_mismatch": ([2], None), "clock_skew": ([1], None),
        "report_overdue": ([1, 2], None)}
    assert rules["geofence_exit"].levels[0].threshold == 1.2  # V-5.2's test: beyond R x 1.2


# -- settings: checked at start-up --------------------------------------------------------------------------------

def test_functions_settings_refuse_a_home_without_radius_and_an_unknown_vehicle(tmp_path: Path) -> None:
    with pytest.raises(CascadeError) as err:
        validate(VehicleSettings, {"devices": "d.json", "functions": {"vehicles": {"V000001": {
            "home": {"lat": 39.9, "lon": 116.5}}}}}, "run.yaml", key="vehicles")
    assert "run.yaml: vehicles.functions" in str(err.value) and "fence_radius_m" in str(err.value)
    with pytest.raises(CascadeError) as err:
        validate(VehicleSettings, {"devices": "d.json", "functions": {"defaults": {"low_soc_pct": 120}}},
                 "run.yaml", key="vehicles")
    assert "vehicles.functions.defaults.low_soc_pct" in str(err.value)
    functions = VehicleFunctions(defaults={"low_soc_pct": 20}, vehicles={"V9": {"fence_radius_m": 150}})
    with pytest.raises(CascadeError) as err:
        functions.check_vehicles(["V000001"], source="devices.json")
    assert "vehicles.V9" in str(err.value) and "not a provisioned device" in str(err.value)
    profile = functions.profile("V9")
    assert (profile.low_soc_pct, profile.fence_radius_m) == (20, 150)  # own keys over the defaults


# -- time calibration over MQTT ----------------------------------------------------------------------------------

async def test_an_ingest_worker_answers_a_skewed_report_with_the_platforms_time(mosquitto: Mosquitto) -> None:
    settings = VehicleSettings(devices=str(mosquitto.paths["devices"]), metrics_port=0,
                               mqtt=MqttSettings(host="127.0.0.1", port=mosquitto.port, username="ingest",
                                                 password=mosquitto.ingest_password))
    async with IngestWorker(settings, None, worker=1, registry=CollectorRegistry()) as worker:
        assert worker.mqtt is not None
        await asyncio.wait_for(worker.mqtt.connected.wait(), 10)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, username="V000003", password=mosquitto.secret("V000003"),
                                  protocol=aiomqtt.ProtocolVersion.V5) as device:
            await device.subscribe(topic("bj", "V000003", "reject"))
            on_time = int(time.time() * 1000)
            await device.publish(topic("bj", "V000003"), json.dumps(
                {"v": 1, "vehicle": "V000003", "seq": 1, "ts": on_time}).encode(), qos=1)
            ahead = int(time.time() * 1000) + 90_000  # fast, but inside the 5-minute window: stored
            await device.publish(topic("bj", "V000003"), json.dumps(
                {"v": 1, "vehicle": "V000003", "seq": 2, "ts": ahead}).encode(), qos=1)
            message = await asyncio.wait_for(anext(aiter(device.messages)), 10)
    event = json.loads(message.payload)  # type: ignore[arg-type]
    assert (event["reason"], event["stored"], event["seq"], event["report_ts"]) == ("clock_skew", True, 2, ahead)
    assert event["skew_ms"] == ahead - event["server_time_ms"] and 85_000 < event["skew_ms"] < 95_000
    assert worker.ingest.metrics.accepted.labels("mqtt")._value.get() == 2  # both stored; only one answered


# -- no false alarms from normal riding ----------------------------------------------------------------------------

def test_a_simulated_fleet_day_raises_no_vehicle_alarm_but_reminders() -> None:
    city = chaoyang()
    ids = [f"V{i:06d}" for i in range(1, 31)]
    sim = Simulation(city, place_stations(city, [f"S{i:03d}" for i in range(1, 6)], seed=7), ids, fleet="bj", seed=7,
                     start_wall_s=T0)
    now = [T0]
    engine = Engine([r for r in load_rules().values() if r.scope == "vehicle"], clock=lambda: now[0])
    tracker = VehicleTracker(VehicleFunctions(defaults={"low_soc_pct": 20, "fence_radius_m": 300}),
                             clock=lambda: now[0])
    raised = []
    for hour in range(1, 25):
        for _, msg in sim.step(hour * 3600.0):
            now[0] = msg.ts / 1000
            reading, _ = to_reading(msg, fleet="bj", received_ns=msg.ts * 1_000_000)
            tracker.note(reading, now[0] - T0)
            raised += [t.rule for t in engine.evaluate(as_engine_reading(reading)) if t.kind == "raise"]
        for reading in tracker.overdue(hour * 3600.0):
            raised += [t.rule for t in engine.evaluate(as_engine_reading(reading)) if t.kind == "raise"]
    assert set(raised) <= {"vehicle_low_soc"}, sorted(set(raised))
    assert "vehicle_low_soc" in raised  # riders who push their pack under 20 % are reminded


def test_scenario_option_names_a_scenario_a_vehicle_and_a_start() -> None:
    assert parse_scenario("theft", ["V1", "V2"]) == ("theft", "V1", 60.0)
    assert parse_scenario("silent:V2:300", ["V1", "V2"]) == ("silent", "V2", 300.0)
    for bad, why in (("flood", "unknown scenario"), ("theft:V9", "not one of"), ("theft:V1:soon", "not a number")):
        with pytest.raises(ValueError, match=why):
            parse_scenario(bad, ["V1", "V2"])


async def test_a_clock_beyond_the_replay_window_is_a_clock_alert_not_a_silent_device(mosquitto: Mosquitto,
                                                                                      tmp_path: Path) -> None:
    from alerting.actions import ActionPolicy
    from cascade.app import alert_service_for
    from cascade.config import AppConfig
    from cascade.pipeline import Pipeline

    functions = VehicleFunctions(report_on_s=1.0, silence_check_s=0.2)
    vehicles = VehicleSettings(devices=str(mosquitto.paths["devices"]), functions=functions,
                               mqtt=MqttSettings(host="127.0.0.1", port=mosquitto.port, username="ingest",
                                                 password=mosquitto.ingest_password))
    config = AppConfig(source=str(tmp_path / "config.yaml"), cabinets=[], profiles={}, influxdb=None,
                       metrics_port=0, status_interval_s=0, vehicles=vehicles)
    clock = ManualClock(time.time())
    engine = Engine(load_rules().only(["clock_skew", "report_overdue"]), clock=clock)
    async with Pipeline(config, registry=CollectorRegistry()) as pipeline:
        async with alert_service_for(pipeline, engine, alertmanager_url=None, policy=ActionPolicy()):
            watch = next(s for s in pipeline.sources if s.kind == "vehicles")
            await asyncio.wait_for(watch.mqtt.connected.wait(), 10)
            async with aiomqtt.Client("127.0.0.1", mosquitto.port, username="V000004",
                                      password=mosquitto.secret("V000004"),
                                      protocol=aiomqtt.ProtocolVersion.V5) as device:
                for seq in range(1, 4):  # ten minutes fast: every report refused as `future`
                    ts = int(time.time() * 1000) + 600_000
                    await device.publish(topic("bj", "V000004"), json.dumps(
                        {"v": 1, "vehicle": "V000004", "seq": seq, "ts": ts, "power": True}).encode(), qos=1)
                    await asyncio.sleep(0.5)
                    clock.advance(330)
            await asyncio.sleep(0.5)
            active = {a.key.rule: a for a in engine.state.active()}
    assert set(active) == {"clock_skew"}  # the device reports: not overdue, its clock is wrong
    assert 590 < active["clock_skew"].value < 610 and active["clock_skew"].key.cabinet == "V000004"


async def test_a_bad_scenario_option_stops_the_simulator_with_the_fix(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    import argparse

    from cascade.vehicles import provision
    from simulators.vehicles import add_arguments, run

    devices = provision(tmp_path / "devices", count=2, fleet="bj")["devices"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = ["--devices", str(devices), "--vehicles", "2", "--mqtt", "127.0.0.1:1", "--fleet-file", "",
            "--status-interval", "0"]
    assert await run(parser.parse_args([*args, "--scenario", "flood"])) == 2
    assert "--scenario: unknown scenario 'flood'" in caplog.text and "Fix: NAME[:VEHICLE[:AT]]" in caplog.text


def test_a_vehicle_alert_survives_a_restart_and_is_cleared_by_live_data(tmp_path: Path) -> None:
    from alerting.state import AlertStore

    clock = ManualClock(T0)
    rules = load_rules().only(["wheel_motion_armed"])
    first = Engine(rules, clock=clock, state=AlertStore(tmp_path / "alerts.json"))
    pushed = _vehicle(armed=True, speed_kmh=5.0, battery=_pack(soc_pct=80.0))
    [raised] = first.evaluate(as_engine_reading(pushed))
    assert (raised.key.slot, raised.vehicle_command, raised.target.battery) == (None, "motor_lock", "P1")
    again = Engine(rules, clock=clock, state=AlertStore(tmp_path / "alerts.json"))
    assert again.startup_transitions == []  # the vehicle rule still exists with its scope and level
    disarmed = _vehicle(armed=False, speed_kmh=0.0)
    assert again.evaluate(as_engine_reading(disarmed)) == []  # clear_for: 5 minutes
    clock.advance(301)
    assert [(t.rule, t.kind, t.vehicle_command) for t in again.evaluate(as_engine_reading(disarmed))] == [
        ("wheel_motion_armed", "clear", None)]
