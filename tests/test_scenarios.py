"""Fault scenarios: every shipped scenario validates and shows its signature in what a collector
would decode; outages and runtime injection run against real servers."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus.decode import decode_poll
from collectors.modbus.planner import plan_reads
from collectors.modbus.profile import find_profile
from core.model import BatteryState, BmsProtection, ChargerProtection, EmergencyState
from simulators import cli
from simulators.fleet import Fleet, build_fleet
from simulators.scenarios import (
    ACTIONS,
    SCENARIO_DIR,
    STEP_MODELS,
    ScenarioDoc,
    ScenarioError,
    TargetSection,
    load_scenario,
    parse_scenario,
    scenario_reference,
)
from simulators.server import SimulatorServer
from tests.fixtures.clock import ManualClock
from tests.fixtures.ports import free_port_block

SHIPPED = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def make_fleet(profile: str = "reference-cabinet", cabinets: int = 12, **kw) -> tuple[Fleet, ManualClock]:
    clock = ManualClock()
    fleet = build_fleet([(profile, find_profile(profile))], cabinets=cabinets, clock=clock, seed=5, **kw)
    return fleet, clock


def poll(fleet: Fleet, cabinet_id: str):
    """What a collector decodes from the cabinet now (planned reads, the real decoder)."""
    cab = fleet.by_id[cabinet_id]
    plan = plan_reads(cab.profile, cab.slot_count)
    responses = [fleet.read(cab, r.register_type, r.address, r.count) for r in plan]
    return decode_poll(plan, responses, cabinet_id=cabinet_id, site="s", model=cab.profile.model,
                       slot_count=cab.slot_count, timestamp_ns=0)


def timeline(fleet: Fleet, clock: ManualClock, cabinet_id: str, slot: int, until_s: float, every_s: float = 30):
    """[(t, cabinet reading, slot reading)] sampled from now until ``until_s`` later."""
    start, out = clock.now, []
    while clock.now - start <= until_s:
        reading, _errors = poll(fleet, cabinet_id)
        out.append((clock.now - start, reading, reading.slots[slot - 1]))
        clock.now += every_s
    return out


def cut_off(fleet: Fleet, cabinet_id: str, slot: int) -> None:
    cab = fleet.by_id[cabinet_id]
    register_type, address = cab.profile.command_address("slot_output", slot)
    assert fleet.write(cab, register_type, address, [0]) is None


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenarios_validate_against_the_default_fleet(name):
    scenario = load_scenario(name)
    assert scenario.name == name and scenario.description
    fleet, _clock = make_fleet(cabinets=20)
    fleet.start_scenario(scenario)


def test_all_issue_scenarios_are_shipped():
    assert set(SHIPPED) >= {"thermal_runaway", "over_voltage", "over_current", "over_temperature",
                            "charging_below_zero", "water_ingress", "stuck_sensor", "dead_sensor",
                            "cabinet_unreachable", "garbage_registers", "handshake_failure"}


def _first(samples, predicate):
    return next((t for t, cab, slot in samples if predicate(cab, slot)), None)


def test_thermal_runaway_h2_first_then_valve_pressure_voc_then_heat_smoke_flame():
    fleet, clock = make_fleet()
    fleet.start_scenario(load_scenario("thermal_runaway"))
    samples = timeline(fleet, clock, "C0003", 5, until_s=1800)
    base_temp = samples[0][2].temperature_c
    h2 = _first(samples, lambda c, s: s.h2_ppm > 20)
    valve = _first(samples, lambda c, s: s.valve_acoustic_events >= 1)
    pressure = _first(samples, lambda c, s: s.module_pressure_kpa > 105)
    voc = _first(samples, lambda c, s: s.voc_ppm > 20)
    heat = _first(samples, lambda c, s: s.temperature_c > base_temp + 10)
    smoke = _first(samples, lambda c, s: c.smoke_detected)
    flame = _first(samples, lambda c, s: c.flame_detected)
    assert None not in (h2, valve, pressure, voc, heat, smoke, flame)
    assert h2 < valve <= pressure < heat < smoke < flame <= 1800
    assert voc < heat
    end_cab, end_slot = samples[-1][1], samples[-1][2]
    assert end_cab.emergency_state and end_slot.battery_state == BatteryState.FAULT
    assert end_cab.co_ppm > 50


def test_thermal_runaway_halts_and_decays_when_cut_off_during_off_gas():
    fleet, clock = make_fleet()
    fleet.start_scenario(load_scenario("thermal_runaway"))
    clock.now += 300  # off-gas phase: H2 rising
    reading, _ = poll(fleet, "C0003")
    h2_at_cut = reading.slots[4].h2_ppm
    assert h2_at_cut > 20
    cut_off(fleet, "C0003", 5)
    samples = timeline(fleet, clock, "C0003", 5, until_s=1800, every_s=60)
    assert not any(c.smoke_detected or c.flame_detected for _t, c, _s in samples)
    assert all(s.valve_acoustic_events == 0 for _t, _c, s in samples)
    h2 = [s.h2_ppm for _t, _c, s in samples]
    decaying = [v for v in h2 if v > 3]  # above the background wiggle
    assert decaying == sorted(decaying, reverse=True) and h2[-1] < 3  # decays back to background


def test_thermal_runaway_runs_on_when_cut_off_too_late():
    fleet, clock = make_fleet()
    fleet.start_scenario(load_scenario("thermal_runaway"))
    clock.now += 20 * 60  # past the point of no return (18 min)
    poll(fleet, "C0003")
    cut_off(fleet, "C0003", 5)
    samples = timeline(fleet, clock, "C0003", 5, until_s=600)
    assert samples[-1][1].flame_detected


def test_thermal_runaway_compresses_with_speed():
    fleet, clock = make_fleet()
    fleet.start_scenario(load_scenario("thermal_runaway"), speed=60)
    samples = timeline(fleet, clock, "C0003", 5, until_s=31, every_s=1)
    assert samples[-1][1].flame_detected and not samples[0][1].flame_detected


def test_over_voltage_then_cutoff():
    fleet, clock = make_fleet()
    fleet.start_scenario(load_scenario("over_voltage"))
    samples = timeline(fleet, clock, "C0004", 2, until_s=300, every_s=10)
    peak = max(s.voltage_v for _t, _c, s in samples)
    assert peak == pytest.approx(58.5, abs=0.2) and peak > 13 * 4.2  # above the CV limit
    assert max(s.cell_voltage_max_v for _t, _c, s in samples) > 4.4
    end = samples[-1][2]
    assert end.bms_protection & BmsProtection.OVER_VOLTAGE
    assert end.charger_protection & ChargerProtection.OVER_VOLTAGE_CUTOFF
    assert end.charge_current_a == 0 and end.voltage_v < 55


def test_over_current_then_cutoff():
    fleet, clock = make_fleet()
    fleet.start_scenario(load_scenario("over_current"))
    samples = timeline(fleet, clock, "C0002", 3, until_s=240, every_s=10)
    peak = max(samples, key=lambda x: x[2].charge_current_a)[2]
    assert peak.charge_current_a == pytest.approx(30) and peak.charge_current_a > peak.max_charge_current_a
    end = samples[-1][2]
    assert end.charge_current_a == 0 and end.charger_protection & ChargerProtection.OVER_CURRENT_CUTOFF


def test_over_temperature_reaches_70_then_cools():
    fleet, clock = make_fleet()
    fleet.start_scenario(load_scenario("over_temperature"))
    samples = timeline(fleet, clock, "C0006", 4, until_s=1500, every_s=30)
    at_10m = next(s for t, _c, s in samples if t >= 600)
    assert at_10m.temperature_c == pytest.approx(70, abs=0.2)
    assert at_10m.bms_protection & BmsProtection.HIGH_TEMPERATURE
    assert samples[-1][2].temperature_c < 65  # cooling once the charger cut off


def test_over_temperature_cut_off_early_starts_cooling():
    fleet, clock = make_fleet()
    fleet.start_scenario(load_scenario("over_temperature"))
    clock.now += 300
    hot = poll(fleet, "C0006")[0].slots[3].temperature_c
    cut_off(fleet, "C0006", 4)
    clock.now += 240
    assert poll(fleet, "C0006")[0].slots[3].temperature_c < hot


def test_charging_below_zero():
    fleet, clock = make_fleet()
    fleet.start_scenario(load_scenario("charging_below_zero"))
    clock.now += 330
    reading, _ = poll(fleet, "C0007")
    slot = reading.slots[0]
    assert slot.temperature_c == pytest.approx(-10, abs=0.1) and reading.cabinet_temperature_c < -11
    assert slot.charge_current_a > 0 and slot.battery_state == BatteryState.CHARGING


def test_water_ingress():
    fleet, clock = make_fleet()
    fleet.start_scenario(load_scenario("water_ingress"))
    samples = timeline(fleet, clock, "C0008", 6, until_s=360, every_s=30)
    assert samples[0][1].water_detected and samples[0][1].device_fault_code == 0x0201
    end = samples[-1][2]
    assert end.charger_protection & ChargerProtection.WATER_CUTOFF and end.charge_current_a == 0
    assert end.insulation_resistance_kohm == 80 and end.bms_protection & BmsProtection.INSULATION


def test_stuck_sensor_holds_while_others_move():
    fleet, clock = make_fleet()
    fleet.start_scenario(load_scenario("stuck_sensor"))
    samples = timeline(fleet, clock, "C0009", 2, until_s=25 * 60, every_s=60)
    frozen = [s for t, _c, s in samples if 60 <= t < 1200]
    assert len({s.temperature_c for s in frozen}) == 1
    assert len({s.cell_temperature_max_c for s in frozen}) > 3  # the real temperature moved
    assert samples[-1][2].temperature_c != frozen[0].temperature_c


@pytest.mark.parametrize("profile", ["reference-cabinet", "volta-s8"])
def test_dead_sensor(profile):
    fleet, clock = make_fleet(profile)
    fleet.start_scenario(load_scenario("dead_sensor"))
    clock.now += 60
    reading, errors = poll(fleet, "C0010")
    if profile == "reference-cabinet":  # declares "missing" sentinels: the fields read as no value
        assert reading.slots[2].temperature_c is None and reading.slots[2].h2_ppm is None and not errors
    else:  # no sentinel: 0xFFFF words are NaN, which the decoder rejects
        assert {(e.slot, e.field) for e in errors} == {(3, "temperature_c"), (3, "h2_ppm")}
    clock.now += 15 * 60
    reading, errors = poll(fleet, "C0010")
    assert reading.slots[2].temperature_c is not None and not errors


@pytest.mark.parametrize("profile", ["reference-cabinet", "volta-s8"])
def test_garbage_registers_give_decode_errors(profile):
    fleet, clock = make_fleet(profile)
    fleet.start_scenario(load_scenario("garbage_registers"))
    for _ in range(20):
        clock.now += 5
        _reading, errors = poll(fleet, "C0011")
        assert {(e.slot, e.field) for e in errors} == {(1, "voltage_v"), (1, "soc_pct"), (1, "temperature_c"),
                                                       (1, "battery_id")}
    clock.now += 600
    assert poll(fleet, "C0011")[1] == []


def test_handshake_failure_refuses_to_charge():
    fleet, clock = make_fleet()
    fleet.start_scenario(load_scenario("handshake_failure"))
    clock.now += 120
    slot = poll(fleet, "C0012")[0].slots[6]
    assert slot.battery_id == "XX60-UNKNOWN01" and slot.charge_current_a == 0
    assert slot.charger_protection & ChargerProtection.HANDSHAKE_FAILED
    assert slot.battery_state == BatteryState.FAULT


def test_stopping_a_scenario_restores_the_cabinet():
    fleet, clock = make_fleet()
    run = fleet.start_scenario(load_scenario("garbage_registers"))
    clock.now += 5
    assert poll(fleet, "C0011")[1]
    assert fleet.stop_scenario(run.id) and not fleet.stop_scenario(run.id)
    assert poll(fleet, "C0011")[1] == []


# --- real servers ---------------------------------------------------------------------------


@pytest.fixture
async def live():
    servers = []

    async def start(cabinets=6, per_port=1, control=False):
        clock = ManualClock()
        ports = (cabinets - 1) // per_port + 1
        base = free_port_block(ports + 1)
        fleet = build_fleet([("reference-cabinet", find_profile("reference-cabinet"))], cabinets=cabinets,
                            per_port=per_port, base_port=base, clock=clock, seed=5)
        server = SimulatorServer(fleet, control_port=base + ports if control else 0, timer_s=0.05)
        await server.start()
        servers.append(server)
        return fleet, server, clock

    yield start
    for server in servers:
        await server.stop()


async def _read_ok(port: int, device_id: int = 1, timeout: float = 1.0) -> bool:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=timeout, retries=0, reconnect_delay=0)
    try:
        if not await client.connect():
            return False
        result = await client.read_input_registers(0, count=12, device_id=device_id)
        return not result.isError()
    except Exception:  # noqa: BLE001 - timeouts and dropped connections both mean "unreachable"
        return False
    finally:
        client.close()


async def test_cabinet_unreachable_refuses_connections_then_recovers(live):
    fleet, server, clock = await live()
    port = fleet.by_id["C0005"].port
    fleet.start_scenario(load_scenario("cabinet_unreachable"))
    assert await _read_ok(port)
    clock.now += 31
    await server.reconcile()
    assert not server.is_listening(port)
    assert not await _read_ok(port)
    assert await _read_ok(fleet.by_id["C0004"].port)  # the rest of the fleet is fine
    clock.now += 180
    await server.reconcile()
    assert await _read_ok(port)


async def test_cabinet_unreachable_on_a_shared_port_times_out(live):
    fleet, server, clock = await live(per_port=2)
    target, neighbour = fleet.by_id["C0005"], fleet.by_id["C0006"]
    assert target.port == neighbour.port
    fleet.start_scenario(load_scenario("cabinet_unreachable"))
    clock.now += 31
    await server.reconcile()
    assert server.is_listening(target.port)
    assert not await _read_ok(target.port, target.device_id, timeout=0.3)
    assert await _read_ok(neighbour.port, neighbour.device_id)
    clock.now += 180
    assert await _read_ok(target.port, target.device_id)


async def test_the_timer_applies_outages_without_reads(live):
    fleet, server, clock = await live()
    port = fleet.by_id["C0005"].port
    fleet.start_scenario(load_scenario("cabinet_unreachable"))
    clock.now += 31
    for _ in range(40):
        if not server.is_listening(port):
            break
        await asyncio.sleep(0.05)
    assert not server.is_listening(port)


async def test_runtime_injection_through_the_control_endpoint(live, tmp_path, capsys):
    fleet, server, clock = await live(cabinets=12, control=True)
    url = server.control_url
    text = (SCENARIO_DIR / "handshake_failure.yaml").read_text()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/health") as resp:
            assert resp.status == 200 and (await resp.json())["cabinets"] == 12
        async with http.post(f"{url}/scenarios", data=text) as resp:
            assert resp.status == 201
            run_id = (await resp.json())["id"]
        async with http.get(f"{url}/scenarios") as resp:
            listed = (await resp.json())["scenarios"]
            assert [(s["id"], s["name"]) for s in listed] == [(run_id, "handshake_failure")]
        client = AsyncModbusTcpClient("127.0.0.1", port=fleet.by_id["C0012"].port, timeout=2, retries=0)
        await client.connect()
        offset = 16  # charger_protection in the reference slot block
        address = fleet.by_id["C0012"].profile.slot_address("input", offset, 7)
        result = await client.read_input_registers(address, count=1, device_id=1)
        assert result.registers[0] & ChargerProtection.HANDSHAKE_FAILED
        async with http.post(f"{url}/scenarios", data="name: x\ntarget: {cabinet: C0999}\nsteps: []\n") as resp:
            assert resp.status == 400
        async with http.post(f"{url}/scenarios", data=text.replace("C0012", "C0999")) as resp:
            body = await resp.json()
            assert resp.status == 400 and body["key"] == "target.cabinet"
        async with http.delete(f"{url}/scenarios/{run_id}") as resp:
            assert resp.status == 200
        async with http.delete(f"{url}/scenarios/{run_id}") as resp:
            assert resp.status == 404
        result = await client.read_input_registers(address, count=1, device_id=1)
        assert not result.registers[0] & ChargerProtection.HANDSHAKE_FAILED
        client.close()

    port = int(url.rsplit(":", 1)[1])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntarget: {cabinet: C0001}\nsteps: [{at: soon, dead: [h2_ppm]}]\n")
    assert await asyncio.to_thread(cli.inject_main, [str(bad), "--control-port", str(port)]) == 2
    assert await asyncio.to_thread(cli.inject_main, ["stuck_sensor", "--control-port", str(port),
                                                     "--speed", "10"]) == 0
    assert [r.scenario.name for r in fleet.runs.values()] == ["stuck_sensor"]
    assert next(iter(fleet.runs.values())).speed == 10
    assert await asyncio.to_thread(cli.inject_main, ["--list", "--control-port", str(port)]) == 0
    listed = capsys.readouterr().out
    assert "shipped scenarios" in listed and "  thermal_runaway " in listed  # the shipped ones, by name
    assert "running:" in listed and "stuck_sensor" in listed.split("running:", 1)[1]
    closed = port + 1000 if port + 1000 < 65535 else port - 1000
    assert await asyncio.to_thread(cli.inject_main, ["--list", "--control-port", str(closed)]) == 0  # shipped only
    assert "no simulator at" in capsys.readouterr().out
    assert await asyncio.to_thread(cli.inject_main, ["stuck_sensor", "--control-port", str(closed)]) == 2


# --- validation -----------------------------------------------------------------------------

GOOD_HEAD = "name: t\ntarget: {cabinet: C0001, slot: 2}\n"


@pytest.mark.parametrize("text, key", [
    ("name: t\nsteps: [{at: 0s, dead: [h2_ppm]}]\n", "target.cabinet"),
    (GOOD_HEAD + "steps: [{at: 0s, ramp: {temprature_c: 70}, over: 1m}]\n", "steps[0].ramp.temprature_c"),
    (GOOD_HEAD + "steps: [{at: 0s, ramp: {temperature_c: 70}}]\n", "steps[0].over"),
    (GOOD_HEAD + "steps: [{at: 0s, dead: [h2_ppm], freeze: [voc_ppm]}]\n", "steps[0]"),
    (GOOD_HEAD + "steps: [{at: soon, dead: [h2_ppm]}]\n", "steps[0].at"),
    (GOOD_HEAD + "steps: [{at: 0s, protect: {bms: [too_hot]}}]\n", "steps[0].protect.bms[0]"),
    (GOOD_HEAD + "steps: [{at: 0s, unreachable: 1m, mode: sulk}]\n", "steps[0].mode"),
    (GOOD_HEAD + "steps: [{at: 0s, dead: [h2_ppm], colour: red}]\n", "steps[0].colour"),
    ("name: t\ntarget: {cabinet: C0001}\nsteps: [{at: 0s, set: {temperature_c: 70}}]\n",
     "steps[0].set.temperature_c"),
    ("name: t\ntarget: {cabinet: C0001}\nsteps: [{at: 0s, runaway: {}}]\n", "steps[0].runaway"),
    (GOOD_HEAD + "steps: []\n", "steps"),
    (GOOD_HEAD + "stepz: []\n", "stepz"),
    ("name: [unclosed\n", "(file)"),
])
def test_bad_scenarios_are_rejected_naming_file_and_key(tmp_path, text, key):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert err.value.key == key
    assert str(path) in str(err.value) and key in str(err.value) and "Fix:" in str(err.value)


def test_targets_outside_the_fleet_are_rejected():
    fleet, _clock = make_fleet(cabinets=3)
    with pytest.raises(ScenarioError, match="target.slot"):
        fleet.start_scenario(parse_scenario("name: t\ntarget: {cabinet: C0001, slot: 13}\n"
                                            "steps: [{at: 0s, dead: [h2_ppm]}]\n", "x.yaml"))
    with pytest.raises(ScenarioError, match="x.yaml: target.cabinet"):
        fleet.start_scenario(parse_scenario("name: t\ntarget: {cabinet: C0009}\n"
                                            "steps: [{at: 0s, unreachable: 1m}]\n", "x.yaml"))


def test_missing_scenario_file_names_the_shipped_ones():
    with pytest.raises(ScenarioError, match="thermal_runaway"):
        load_scenario("no_such_scenario")


# --- one validation approach: pydantic models (core.validation), one-line errors ------------------

_SLOT_HEAD = "name: t\ntarget: {cabinet: C0001, slot: 2}\n"
_CAB_HEAD = "name: t\ntarget: {cabinet: C0001}\n"
_ONE_STEP = "steps: [{at: 0s, dead: [h2_ppm]}]\n"


def _steps(*steps: str) -> str:
    """A scenario on C0001 slot 2 with these steps (flow mappings)."""
    return _SLOT_HEAD + "steps:\n" + "".join(f"  - {step}\n" for step in steps)


_BAD_SCENARIOS = [
    # (what, YAML, key, problem fragment, fix fragment)
    ("unknown key", _SLOT_HEAD + "stepz: []", "stepz", "unknown key", "did you mean 'steps'"),
    ("unknown key", "name: t\ntarget: {cabinet: C0001, sloot: 2}\n" + _ONE_STEP, "target.sloot", "unknown key",
     "did you mean 'slot'"),
    ("unknown key", _steps("{at: 0s, dead: [h2_ppm], colour: red}"), "steps[0].colour", "unknown key",
     "['at', 'dead']"),
    ("unknown key", _steps("{at: 0s, dead: [h2_ppm], over: 1m}"), "steps[0].over", "unknown key", "['at', 'dead']"),
    ("unknown key", _steps("{at: 0s, insert: {chemistri: lfp}}"), "steps[0].insert.chemistri", "unknown key",
     "did you mean 'chemistry'"),
    ("unknown key", _steps("{at: 0s, runaway: {durration: 20m}}"), "steps[0].runaway.durration", "unknown key",
     "did you mean 'duration'"),
    ("unknown key", _steps("{at: 0s, protect: {bmss: [insulation]}}"), "steps[0].protect.bmss", "unknown key",
     "did you mean 'bms'"),
    ("wrong type", "name: [t]\n" + "target: {cabinet: C0001}\n" + _ONE_STEP, "name", "['t'] is not text",
     "name: over_temperature"),
    ("wrong type", "name: t\ntarget: C0001\n" + _ONE_STEP, "target", "'C0001' is not a mapping",
     "{cabinet: C0003, slot: 5}"),
    ("wrong type", _SLOT_HEAD + "steps: {at: 0s}", "steps", "is not a list", "list the steps"),
    ("wrong type", _steps("dead h2_ppm at 0s"), "steps[0]", "'dead h2_ppm at 0s' is not a mapping", "{at: 0s,"),
    ("wrong type", "name: t\ntarget: {cabinet: C0001, slot: two}\n" + _ONE_STEP, "target.slot",
     "'two' is not an integer", "counted from 1"),
    ("wrong type", _steps("{at: 0s, ramp: {temperature_c: hot}, over: 1m}"), "steps[0].ramp.temperature_c",
     "'hot' is not a number", "{temperature_c: 70}"),
    ("wrong type", _steps("{at: 0s, dead: 5}"), "steps[0].dead", "5 is not a list", "[temperature_c, h2_ppm]"),
    ("wrong type", _steps("{at: 0s, protect: [insulation]}"), "steps[0].protect", "is not a mapping",
     "{charger: [over_voltage_cutoff], bms: [over_voltage]}"),
    ("wrong type", _steps("{at: 0s, output: 0}"), "steps[0].output", "0 is not true or false", "slot relay"),
    ("wrong type", _steps("{at: 0s, set: {battery_id: [1, 2]}}"), "steps[0].set.battery_id",
     "is not a number, true/false, text or null", "{water_detected: true}"),
    ("wrong type", _steps("{at: 0s, insert: {battery_id: 7}}"), "steps[0].insert.battery_id", "7 is not text",
     "as text"),
    ("bool as number", "name: t\ntarget: {cabinet: C0001, slot: true}\n" + _ONE_STEP, "target.slot",
     "true is a boolean, not an integer", "counted from 1"),
    ("bool as number", _steps("{at: 0s, ramp: {temperature_c: yes}, over: 1m}"), "steps[0].ramp.temperature_c",
     "true is a boolean, not a number", "{temperature_c: 70}"),
    ("bool as number", _steps("{at: 0s, insert: {soc_pct: on}}"), "steps[0].insert.soc_pct",
     "true is a boolean, not a number", "0-100"),
    ("bool as number", _steps("{at: true, dead: [h2_ppm]}"), "steps[0].at", "true is not a duration", "at: 90s"),
    ("bad duration", _steps("{at: soon, dead: [h2_ppm]}"), "steps[0].at", "'soon' is not a duration", "at: 90s"),
    ("bad duration", _steps("{at: -5, dead: [h2_ppm]}"), "steps[0].at", "-5 is not a duration", "1.5h"),
    ("bad duration", _steps("{at: 0s, ramp: {temperature_c: 70}, over: fast}"), "steps[0].over",
     "'fast' is not a duration", "over: 5m"),
    ("bad duration", _steps("{at: 0s, unreachable: 0s}"), "steps[0].unreachable", "'0s' is not a positive duration",
     "unreachable: 2m"),
    ("bad duration", _steps("{at: 0s, runaway: {duration: a week}}"), "steps[0].runaway.duration",
     "'a week' is not a duration", "duration: 30m"),
    ("bad duration", _steps("{at: .inf, dead: [h2_ppm]}"), "steps[0].at", "inf is not a duration", "at: 90s"),
    ("unknown field", _steps("{at: 0s, ramp: {temprature_c: 70}, over: 1m}"), "steps[0].ramp.temprature_c",
     "'temprature_c' is not a field of core.model", "did you mean 'temperature_c'"),
    ("unknown field", _steps("{at: 0s, dead: [temperature_c, h2ppm]}"), "steps[0].dead[1]",
     "'h2ppm' is not a field of core.model", "did you mean 'h2_ppm'"),
    ("unknown field", _steps("{at: 0s, set: {colour: red}}"), "steps[0].set.colour",
     "'colour' is not a field of core.model", "or a cabinet field (cabinet_h2_ppm"),
    ("unknown field", _steps("{at: 0s, release: [voltage]}"), "steps[0].release[0]",
     "'voltage' is not a field of core.model", "did you mean 'voltage_v'"),
    ("unknown action", _steps("{at: 0s, dea: [h2_ppm]}"), "steps[0].dea", "the step has no action",
     "did you mean 'dead'? Otherwise give each step exactly one of set, ramp"),
    ("unknown action", _steps("{at: 0s, explode: true}"), "steps[0].explode", "the step has no action",
     "give each step exactly one of set, ramp"),
    ("unknown action", _steps("{at: 0s, over: 1m}"), "steps[0]", "has no action", "exactly one of set, ramp"),
    ("unknown action", _steps("{at: 0s, dead: [h2_ppm], freeze: [voc_ppm]}"), "steps[0]",
     "has 2 actions ['dead', 'freeze']", "exactly one of set, ramp"),
    ("unknown name", _steps("{at: 0s, protect: {bms: [too_hot]}}"), "steps[0].protect.bms[0]",
     "'too_hot' is not a BmsProtection flag", "high_temperature"),
    ("unknown name", _steps("{at: 0s, clear_protect: {charger: water}}"), "steps[0].clear_protect.charger[0]",
     "'water' is not a ChargerProtection flag", "water_cutoff"),
    ("unknown name", _steps("{at: 0s, emergency: [fire]}"), "steps[0].emergency[0]",
     "'fire' is not an EmergencyState flag", "suppression_by_smoke"),
    ("unknown name", _steps("{at: 0s, unreachable: 1m, mode: sulk}"), "steps[0].mode",
     "'sulk' is not 'refuse' or 'silent'", "timeouts"),
    ("unknown name", _steps("{at: 0s, insert: {chemistry: lto}}"), "steps[0].insert.chemistry", "'lto' is not",
     "lfp, nmc, lmo or na_ion"),
    ("unknown name", _steps("{at: 0s, insert: {handshake: maybe}}"), "steps[0].insert.handshake",
     "'maybe' is not 'ok' or 'fail'", "refuses to charge"),
    ("out of range", "name: t\ntarget: {cabinet: C0001, slot: 0}\n" + _ONE_STEP, "target.slot",
     "0 is not greater than or equal to 1", "counted from 1"),
    ("out of range", _steps("{at: 0s, insert: {soc_pct: 150}}"), "steps[0].insert.soc_pct", "150", "0-100"),
    ("out of range", _steps("{at: 0s, insert: {nominal_voltage_v: 0}}"), "steps[0].insert.nominal_voltage_v",
     "0 is not greater than 0", "48 or 60"),
    ("out of range", _steps("{at: 0s, ramp: {temperature_c: .nan}, over: 1m}"), "steps[0].ramp.temperature_c",
     "nan is not a finite number", "{temperature_c: 70}"),
    ("missing", "name: t\n" + _ONE_STEP, "target.cabinet", "missing", "the cabinet's id in the fleet"),
    ("missing", "target: {cabinet: C0001}\n" + _ONE_STEP, "name", "missing", "name: over_temperature"),
    ("missing", _steps("{dead: [h2_ppm]}"), "steps[0].at", "missing", "at: 90s"),
    ("missing", _steps("{at: 0s, ramp: {temperature_c: 70}}"), "steps[0].over", "missing", "over: 5m"),
    ("empty", _SLOT_HEAD + "steps: []", "steps", "[] is empty", "list the steps"),
    ("empty", "name: ''\ntarget: {cabinet: C0001}\n" + _ONE_STEP, "name", "'' is empty", "name: over_temperature"),
    ("empty", _steps("{at: 0s, dead: []}"), "steps[0].dead", "[] is empty", "[temperature_c, h2_ppm]"),
    ("empty", _steps("{at: 0s, ramp: {}, over: 1m}"), "steps[0].ramp", "{} is empty", "{temperature_c: 70}"),
    ("empty", _steps("{at: 0s, protect: {}}"), "steps[0].protect", "names no flags", "{charger: [over_voltage_cutoff]"),
    ("needs a slot", _CAB_HEAD + "steps: [{at: 0s, output: false}]", "steps[0].output",
     "acts on a slot but the target has no slot", "add target.slot"),
    ("needs a slot", _CAB_HEAD + "steps: [{at: 0s, dead: [water_detected, h2_ppm]}]", "steps[0].dead[1]",
     "h2_ppm is a slot field but the target has no slot", "add target.slot"),
    ("not a scenario", "[1, 2]", "(top level)", "[1, 2] is not a mapping", "name:, target: and steps:"),
    ("not a scenario", "", "(top level)", "null is not a mapping", "name:, target: and steps:"),
    ("not a scenario", "name: [unclosed", "(file)", "not valid YAML: while parsing a flow sequence",
     "fix the YAML syntax"),
]


@pytest.mark.parametrize(("what", "text", "key", "problem", "fix"), _BAD_SCENARIOS,
                         ids=[f"{case[0]}: {case[2]}" for case in _BAD_SCENARIOS])
def test_bad_scenario_is_one_line_with_file_key_and_fix(tmp_path, what, text, key, problem, fix):
    path = tmp_path / "broken.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    err, message = info.value, str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: {key}: "), message
    assert (err.source, err.key) == (str(path), key), message
    assert problem in err.problem and fix in err.fix and message.endswith(f". Fix: {err.fix}"), message


def test_every_shape_a_step_value_may_take():
    """One name for a list, `all`, null for defaults, flag names in any case: as before the models."""
    scenario = parse_scenario(_steps(
        "{at: 1m, dead: h2_ppm}", "{at: 2m, release: all}", "{at: 3m, release: [h2_ppm, water_detected]}",
        "{at: 4m, protect: {bms: HIGH_TEMPERATURE}}", "{at: 5m, clear_protect: all}",
        "{at: 6m, clear_protect: {charger: [water_cutoff]}}", "{at: 7m, emergency: []}",
        "{at: 8m, emergency: suppression_by_smoke}", "{at: 9m, runaway: null}", "{at: 10m, runaway: {}}",
        "{at: 11m, insert: null}", "{at: 12m, insert: {chemistry: NMC, soc_pct: 30}}",
        "{at: 13m, unreachable: 90s}", "{at: 14m, set: {water_detected: true, battery_id: X1, co_ppm: null}}",
        "{at: 15m, output: false}", "{at: 16m, ramp: {temperature_c: 70}, over: 0}",
        "{at: 0, freeze: [temperature_c]}"), "shapes.yaml")
    got = [(s.at_s, s.action, s.value, dict(s.options)) for s in scenario.steps]
    assert got == [
        (0.0, "freeze", ["temperature_c"], {}),
        (60.0, "dead", ["h2_ppm"], {}),
        (120.0, "release", "all", {}),
        (180.0, "release", ["h2_ppm", "water_detected"], {}),
        (240.0, "protect", {"bms": BmsProtection.HIGH_TEMPERATURE}, {}),
        (300.0, "clear_protect", "all", {}),
        (360.0, "clear_protect", {"charger": ChargerProtection.WATER_CUTOFF}, {}),
        (420.0, "emergency", 0, {}),
        (480.0, "emergency", EmergencyState.SUPPRESSION_BY_SMOKE, {}),
        (540.0, "runaway", 1800.0, {}),
        (600.0, "runaway", 1800.0, {}),
        (660.0, "insert", {}, {}),
        (720.0, "insert", {"chemistry": "nmc", "soc_pct": 30.0}, {}),
        (780.0, "unreachable", 90.0, {"mode": "refuse"}),
        (840.0, "set", {"water_detected": True, "battery_id": "X1", "co_ppm": None}, {}),
        (900.0, "output", False, {}),
        (960.0, "ramp", {"temperature_c": 70.0}, {"over": 0.0}),
    ]
    assert type(scenario.steps[14].value["water_detected"]) is bool  # set keeps each value's own type
    # Cabinet fields need no slot; the target is the cabinet then.
    cabinet_only = parse_scenario(_CAB_HEAD + "steps: [{at: 0s, set: {water_detected: true, device_fault_code: 513}},"
                                              " {at: 1s, unreachable: 1m, mode: silent}]\n")
    assert cabinet_only.slot is None and cabinet_only.steps[0].value == {"water_detected": True,
                                                                         "device_fault_code": 513}
    assert cabinet_only.steps[1].options == {"mode": "silent"} and cabinet_only.length_s == 61


def test_every_action_has_a_step_model_and_every_key_its_fix():
    assert list(STEP_MODELS) == list(ACTIONS)
    for model in (ScenarioDoc, TargetSection, *STEP_MODELS.values()):
        assert all(info.description for info in model.model_fields.values()), model.__name__


def test_docs_key_reference_is_generated_from_the_models():
    text = (SCENARIO_DIR.parent.parent / "docs" / "simulator.md").read_text(encoding="utf-8")
    begin, end = "<!-- scenario_reference: begin -->\n", "<!-- scenario_reference: end -->"
    section = text[text.index(begin) + len(begin):text.index(end)]
    assert section == scenario_reference(), (
        "docs/simulator.md is out of date: paste the output of `.venv/bin/python -c \"from simulators.scenarios "
        "import scenario_reference; print(scenario_reference(), end='')\"` between its scenario_reference markers")


# YAML-ish trees from the keys and values scenarios use, hostile values anywhere.
_FUZZ_KEYS = sorted({*ScenarioDoc.model_fields, *TargetSection.model_fields,
                     *(name for model in STEP_MODELS.values() for name in model.model_fields),
                     "chemistry", "soc_pct", "handshake", "duration", "charger", "bms", "temperature_c", "h2_ppm",
                     "water_detected", "colour", "dea"})
_fuzz_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["0s", "90s", "5m", "3m30s", "-3m", "1.5h", "500ms", "soon", "C0001", "all", "refuse", "silent",
                     "ok", "fail", "nmc", "LFP", "lto", "high_temperature", "water_cutoff", "suppression_by_smoke",
                     "temperature_c", "h2_ppm", "water_detected", "temprature_c", "", "a\nb"]))
_fuzz_keys = st.one_of(st.sampled_from(_FUZZ_KEYS), st.integers(0, 3), st.text(max_size=4))
_fuzz_trees = st.recursive(_fuzz_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                  st.dictionaries(_fuzz_keys, inner, max_size=4)),
                           max_leaves=20)
# Steps that reach the action models: `at`, one action (mostly) and anything else; or a valid step
# with at most one key replaced (near misses, and scenarios that parse).
_GOOD_STEPS = [yaml.safe_load(step) for step in (
    "{at: 0s, set: {water_detected: true}}", "{at: 1m, ramp: {temperature_c: 70}, over: 5m}",
    "{at: 0s, freeze: [temperature_c]}", "{at: 0s, dead: h2_ppm}", "{at: 0s, garbage: [voltage_v]}",
    "{at: 0s, release: all}", "{at: 30s, unreachable: 3m, mode: silent}", "{at: 0s, protect: {bms: [insulation]}}",
    "{at: 0s, clear_protect: all}", "{at: 0s, emergency: []}", "{at: 0s, runaway: {duration: 30m}}",
    "{at: 0s, output: false}", "{at: 0s, insert: {chemistry: nmc, soc_pct: 30, handshake: fail}}")]
_fuzz_steps = st.one_of(
    _fuzz_trees,
    st.builds(lambda at, action, value, extra: {**extra, "at": at, action: value},
              _fuzz_trees, st.sampled_from(list(ACTIONS)), _fuzz_trees,
              st.dictionaries(_fuzz_keys, _fuzz_trees, max_size=2)),
    st.builds(lambda step, change: {**step, **change}, st.sampled_from(_GOOD_STEPS),
              st.dictionaries(_fuzz_keys, _fuzz_trees, max_size=1)))
_fuzz_targets = st.fixed_dictionaries({"cabinet": st.just("C0001"), "slot": st.sampled_from([2, None])})
_fuzz_docs = st.one_of(
    _fuzz_trees,
    st.fixed_dictionaries({"name": st.one_of(st.just("t"), _fuzz_scalars),
                           "target": st.one_of(_fuzz_targets, _fuzz_trees), "steps": st.lists(_fuzz_steps, max_size=4)},
                          optional={"description": _fuzz_trees}),
    # A valid head: the steps decide.
    st.fixed_dictionaries({"name": st.just("t"), "target": _fuzz_targets,
                           "steps": st.lists(_fuzz_steps, min_size=1, max_size=4)}))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_fuzz_docs.map(lambda doc: yaml.safe_dump(doc, allow_unicode=True)), st.text(max_size=120)))
def test_scenario_trees_parse_or_are_refused_with_one_line_scenario_error(text):
    try:
        scenario = parse_scenario(text, "fuzz.yaml")
    except ScenarioError as err:
        message = str(err)
        assert "\n" not in message and message.startswith("fuzz.yaml: ") and ". Fix: " in message, message
        assert err.key and err.fix, message
    else:
        assert scenario.steps and all(step.action in ACTIONS for step in scenario.steps)
        assert [s.at_s for s in scenario.steps] == sorted(s.at_s for s in scenario.steps)


def test_a_pack_past_its_sensor_range_is_read_as_the_limit_and_escalates_to_level_3():
    """Regression (local demo): the runaway pack passed 300 °C, the profile's valid range. It used to
    be dropped as a rejected value: over_temperature stayed at level 2, a "sensor lost" notice
    followed and the hottest-battery gauge fell to the ambient pack. A live sensor at its limit is
    the worst case: kept as "at least 300 °C", flagged, counted."""
    from prometheus_client import CollectorRegistry

    from alerting.engine import Engine
    from alerting.rules import load_rules
    from exporters.prometheus import PipelineMetrics

    fleet, clock = make_fleet()
    fleet.start_scenario(load_scenario("thermal_runaway"))  # never cut off: runs on to flame
    engine = Engine(load_rules(), clock=clock)
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    levels: dict[str, int] = {}
    hottest_seen = over_seen = 0.0
    for _ in range(80):  # 40 minutes at 30 s
        clock.now += 30
        reading, errors = poll(fleet, "C0003")
        assert not [e for e in errors if e.slot == 5], "nothing of the burning slot is thrown away"
        metrics.observe(reading, 1, [])
        for t in engine.evaluate(reading):
            if t.target.slot == 5:
                levels[t.rule] = max(levels.get(t.rule, 0), t.to_level)
        slot = reading.slots[4]
        if "temperature_c" in slot.over_range:
            over_seen += 1
            assert slot.temperature_c == 300.0  # the limit of the reference profile's range
        gauge = registry.get_sample_value("cascade_cabinet_battery_temperature_max_celsius",
                                          {"site": "s", "cabinet": "C0003"})
        hottest_seen = max(hottest_seen, gauge)
        assert gauge >= min(hottest_seen, 300.0), "the hottest-battery gauge never falls back to a cool pack"
    assert over_seen, "the scenario drives the pack past the sensor range"
    assert levels.get("over_temperature") == 3
    assert "pack_temperature_sensor_lost" not in levels
    assert registry.get_sample_value("cascade_values_over_range_total", {"field": "temperature_c"}) == over_seen
