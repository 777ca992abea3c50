"""The safety fast lane (collectors/modbus/device.py): safety fields on a short interval, the rest on the
normal one, both planned by the read planner; a fast poll is merged into the last full reading, so the
warning engine never sees a field vanish (no clear, no stale, no lost sensor because a poll skipped it)."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from alerting.engine import Engine
from alerting.rules import load_rules
from collectors.modbus.device import SAFETY_FIELDS, ModbusCabinet, merge_fast
from collectors.modbus.planner import plan_reads, restrict_plan
from collectors.modbus.profile import find_profile
from collectors.modbus.settings import CabinetConfig
from collectors.runner import PollRunner
from core.events import Report
from core.model import BatteryState, CabinetReading, SlotReading
from simulators.cabinet import make_battery
from simulators.fleet import build_fleet
from simulators.scenarios import parse_scenario
from simulators.server import SimulatorServer
from tests.fixtures.ports import free_port_block

PROFILES = ("reference-cabinet", "volta-s8", "kestrel-k10")


@pytest.mark.parametrize("name", PROFILES)
def test_the_fast_plan_reads_every_safety_field_the_profile_maps_and_nothing_the_full_plan_does_not(name) -> None:
    profile = find_profile(name)
    full = plan_reads(profile)
    fast = restrict_plan(full, SAFETY_FIELDS)
    assert 0 < len(fast) < len(full)
    full_registers = {(r.register_type, a) for r in full for a in range(r.address, r.address + r.count)}
    fast_registers = {(r.register_type, a) for r in fast for a in range(r.address, r.address + r.count)}
    assert fast_registers <= full_registers  # safe for a device that refuses unmapped registers (max_gap 0)
    assert sum(r.count for r in fast) < sum(r.count for r in full)
    mapped = {(f.slot, f.name) for r in full for f in r.fields if not f.extra and f.spec.field in SAFETY_FIELDS}
    assert {(f.slot, f.name) for r in fast for f in r.fields} == mapped
    # every slice decodes from the same words in the fast read as in the full one
    for r in fast:
        for f in r.fields:
            source = next(q for q in full for g in q.fields if (g.slot, g.name) == (f.slot, f.name))
            g = next(g for g in source.fields if (g.slot, g.name) == (f.slot, f.name))
            assert (r.register_type, r.address + f.index) == (source.register_type, source.address + g.index)
            assert f.decode is g.decode


def test_the_lane_is_on_by_default_below_the_interval_and_off_otherwise() -> None:
    profile = find_profile("reference-cabinet")
    for on in (CabinetConfig(id="a", host="h"), CabinetConfig(id="a", host="h", fast_interval_s=1.0)):
        cabinet = ModbusCabinet(on, profile)
        assert cabinet.fast_plan is not None and cabinet.interval_s == 1.0  # the runner polls every fast interval
    for off in (CabinetConfig(id="b", host="h", fast_interval_s=None),
                CabinetConfig(id="b", host="h", interval_s=1.0),  # the default lane is no faster than the polls
                CabinetConfig(id="c", host="h", interval_s=1.0, fast_interval_s=1.0)):
        cabinet = ModbusCabinet(off, profile)
        assert cabinet.fast_plan is None and cabinet.interval_s == off.interval_s


def _full() -> CabinetReading:
    slots = [SlotReading(slot=i, battery_id=f"B{i}", soc_pct=50.0 + i, voltage_v=52.0, temperature_c=25.0,
                         h2_ppm=1.0, battery_state=1, over_range=("voltage_v", "h2_ppm")) for i in (1, 2)]
    return CabinetReading("c1", "s1", "m", 1_000, slots=slots, input_power_w=900.0, cabinet_temperature_c=20.0,
                          smoke_detected=False, over_range=("input_power_w", "co_ppm"))


def test_a_fast_reading_is_the_last_full_one_with_fresh_safety_fields_and_time() -> None:
    full = _full()
    before = repr(full)
    fast = CabinetReading("c1", "s1", "m", 2_000, cabinet_temperature_c=31.0, smoke_detected=True,
                          over_range=("cabinet_temperature_c",),
                          slots=[SlotReading(slot=1, temperature_c=70.0, h2_ppm=None, battery_state=1),
                                 SlotReading(slot=2, temperature_c=26.0, h2_ppm=3.0, battery_state=1)])
    merged = merge_fast(full, fast, ("cabinet_temperature_c", "co_ppm", "smoke_detected"),
                        ("battery_state", "h2_ppm", "temperature_c"))
    assert repr(full) == before  # the full reading may still be in a sink's buffer
    assert merged.timestamp_ns == 2_000
    assert (merged.cabinet_temperature_c, merged.smoke_detected, merged.input_power_w) == (31.0, True, 900.0)
    assert merged.over_range == ("input_power_w", "cabinet_temperature_c")  # co_ppm is fresh and no longer over
    one, two = merged.slots
    assert (one.temperature_c, one.h2_ppm, one.soc_pct, one.battery_id) == (70.0, None, 51.0, "B1")  # None is news
    assert (two.temperature_c, two.h2_ppm, two.soc_pct) == (26.0, 3.0, 52.0)
    assert one.over_range == ("voltage_v",)


def test_no_rule_clears_or_loses_a_sensor_on_fast_readings() -> None:
    """A level-2 alert on a field only full polls read (cell voltage) stays up across fast readings,
    and the dead-sensor rules do not fire on the fields fast polls skip."""
    engine = Engine(load_rules().only(["cell_overvoltage", "pack_temperature_sensor_lost", "h2_sensor_lost",
                                       "cabinet_temperature_sensor_lost", "over_temperature"]))
    full = CabinetReading("c1", "s1", "m", 0, cabinet_temperature_c=20.0, slots=[SlotReading(
        slot=1, battery_id="B1", chemistry=1, battery_state=1, cell_voltage_max_v=4.5, temperature_c=25.0,
        h2_ppm=1.0)])
    raised = engine.evaluate(full)
    assert [(t.rule, t.to_level) for t in raised if t.to_level] and all(t.rule == "cell_overvoltage" for t in raised)
    level = raised[-1].to_level
    for n in range(1, 30):
        partial = CabinetReading("c1", "s1", "m", n * 10**9, cabinet_temperature_c=20.0,
                                 slots=[SlotReading(slot=1, battery_state=1, temperature_c=25.0, h2_ppm=1.0)])
        reading = merge_fast(full, partial, ("cabinet_temperature_c",), ("battery_state", "h2_ppm", "temperature_c"))
        assert engine.evaluate(reading) == []
    assert engine.state.get("cell_overvoltage@s1/c1/1").level == level


async def test_a_cabinet_alternates_full_and_fast_polls_against_the_simulator() -> None:
    profile = find_profile("reference-cabinet")
    fleet = build_fleet([("reference-cabinet", profile)], cabinets=1, base_port=free_port_block(1), seed=3)
    server = SimulatorServer(fleet, control_port=0)
    await server.start()
    [config] = fleet.collector_configs(interval_s=1.0, fast_interval_s=0.2, timeout_s=1.0)
    cabinet = ModbusCabinet(config, profile)
    engine = Engine(load_rules())
    reports: list[Report] = []
    transitions = []

    def on_result(_device: ModbusCabinet, report: Report) -> None:
        reports.append(report)
        transitions.extend(engine.evaluate(report.reading))

    try:
        async with PollRunner([cabinet], on_result=on_result, seed=1):
            await asyncio.sleep(2.2)
            fleet.start_scenario(parse_scenario(
                "name: t\ntarget: {cabinet: C0001}\nsteps:\n  - {at: 0s, set: {flame_detected: true}}\n", "test"))
            await asyncio.sleep(1.0)
    finally:
        await server.stop()
    full = [r for r in reports if not r.watch_only]
    fast = [r for r in reports if r.watch_only]
    assert len(full) >= 2 and len(fast) >= 2 * len(full)
    assert {r.requests for r in full} == {len(cabinet.plan)} and {r.requests for r in fast} == {len(cabinet.fast_plan)}
    times = [r.reading.timestamp_ns for r in reports]
    assert times == sorted(times)
    slow = ("soc_pct", "voltage_v", "battery_id", "chemistry", "charge_current_a")
    last_full = None
    for report in reports:
        if not report.watch_only:
            last_full = report.reading
            continue
        assert last_full is not None  # a fast poll only follows a full one
        for merged, base in zip(report.reading.slots, last_full.slots):
            assert [getattr(merged, f) for f in slow] == [getattr(base, f) for f in slow]
        assert report.reading.input_power_w == last_full.input_power_w
    # the flame is seen by the first poll after it, fast or full, and only it is raised
    assert any(r.reading.flame_detected for r in fast)
    assert {t.rule for t in transitions} == {"cabinet_flame"}


async def test_a_pack_docked_between_full_polls_is_seen_by_a_full_poll_with_its_identity() -> None:
    profile = find_profile("reference-cabinet")
    fleet = build_fleet([("reference-cabinet", profile)], cabinets=1, base_port=free_port_block(1), seed=3)
    server = SimulatorServer(fleet, control_port=0)
    await server.start()
    [config] = fleet.collector_configs(interval_s=5.0, fast_interval_s=0.2, timeout_s=1.0)
    cabinet = ModbusCabinet(config, profile)
    reports: list[Report] = []
    try:
        async with PollRunner([cabinet], on_result=lambda _d, r: reports.append(r), seed=1):
            while not reports:
                await asyncio.sleep(0.05)
            empty = [s.slot for s in reports[0].reading.slots if s.battery_state == 0]
            if not empty:
                pytest.skip("the simulated cabinet has no empty slot to dock a pack into")
            slot = empty[0]
            await asyncio.sleep(0.5)  # fast polls now: the next full one is seconds away
            fleet.start_scenario(parse_scenario(
                f"name: dock\ntarget: {{cabinet: C0001, slot: {slot}}}\nsteps:\n"
                "  - {at: 0s, insert: {chemistry: lfp, battery_id: NEW0001}}\n", "test"))
            seen = len(reports)
            await asyncio.sleep(1.0)
    finally:
        await server.stop()
    docked = [r for r in reports[seen:] if r.reading.slots[slot - 1].battery_state not in (None, 0)]
    assert docked, "the docked pack was never seen"
    first = docked[0]
    assert not first.watch_only and first.requests == len(cabinet.plan)  # a full poll, at once
    assert first.reading.slots[slot - 1].battery_id == "NEW0001"
    assert all(r.reading.slots[slot - 1].battery_id == "NEW0001" for r in docked)


async def test_a_pack_docked_between_a_full_polls_identity_and_soc_reads_raises_no_soc_jump() -> None:
    """A rider takes a full pack and another docks one: on a real cabinet the new pack can dock between
    a full poll's identity read (holding registers: the slot still empty, so no battery id) and its
    SOC read (input registers: the new pack). That reading has the new pack's SOC and no id to tell
    it from the old one; it must not be compared with the last SOC of the pack taken out (100 % ->
    20 % is a level-2 soc_jump that stops charging and pages). The simulator docks at that moment here;
    the lane's extra load made it common under load (docs/scaling.md, "The safety fast lane")."""
    profile = find_profile("reference-cabinet")
    fleet = build_fleet([("reference-cabinet", profile)], cabinets=1, base_port=free_port_block(1), seed=3)
    [simulated] = fleet.cabinets
    slot_no = 1
    slot = simulated.state.slots[slot_no - 1]
    for each in simulated.state.slots:
        each.next_event_s = math.inf  # no swap but the ones this test makes
    if slot.battery is None:
        slot.dock(make_battery(random.Random(1), 25.0), fleet.clock())
    slot.battery.soc, slot.full = 1.0, True  # charged: what a rider takes

    def register(field: str) -> tuple[str, int]:
        spec = next(s for s in profile.slot_fields if s.field == field)
        return spec.register_type, profile.slot_address(spec.register_type, spec.address, slot_no)

    identity, soc = register("battery_id"), register("soc_pct")
    assert identity[0] != soc[0]  # two reads in every full poll: a pack can dock between them
    race = {"armed": False, "identity_read_empty": False, "docked": False}
    serve = fleet.read

    def read(cabinet, register_type: str, address: int, count: int):
        if race["armed"] and not race["docked"]:
            if register_type == identity[0] and address <= identity[1] < address + count:
                race["identity_read_empty"] = slot.battery is None
            elif register_type == soc[0] and address <= soc[1] < address + count and race["identity_read_empty"]:
                fleet.sync(cabinet)
                slot.dock(make_battery(random.Random(2), slot.surface_c, soc=0.2), fleet.clock())
                race["docked"] = True
        return serve(cabinet, register_type, address, count)

    fleet.read = read  # type: ignore[method-assign]
    server = SimulatorServer(fleet, control_port=0)
    await server.start()
    [config] = fleet.collector_configs(interval_s=1.0, fast_interval_s=0.2, timeout_s=1.0)
    cabinet = ModbusCabinet(config, profile)
    engine = Engine(load_rules())
    reports: list[Report] = []
    transitions = []

    def on_result(_device: ModbusCabinet, report: Report) -> None:
        reports.append(report)
        transitions.extend(engine.evaluate(report.reading))

    async def until(test, what: str) -> None:
        """Until a full poll from now on shows ``test`` true of the slot."""
        start = len(reports)
        for _ in range(100):
            if any(not r.watch_only and test(r.reading.slots[slot_no - 1]) for r in reports[start:]):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"never saw {what}")

    try:
        async with PollRunner([cabinet], on_result=on_result, seed=1):
            await until(lambda s: s.soc_pct == 100 and s.battery_id is not None, "the full pack")
            fleet.sync(simulated)
            slot.undock(fleet.clock())
            slot.next_event_s = math.inf
            await until(lambda s: s.battery_state == BatteryState.EMPTY, "the slot empty")
            race["armed"] = True
            await until(lambda s: s.battery_state != BatteryState.EMPTY and s.battery_id is not None, "the new pack")
            await asyncio.sleep(0.5)
    finally:
        await server.stop()
    assert race["docked"]
    states = [(s.battery_state, s.battery_id, s.soc_pct) for r in reports if not r.watch_only
              for s in r.reading.slots[slot_no - 1:slot_no]]
    # the race happened: a full poll saw the new pack's SOC without its id
    assert any(state not in (None, BatteryState.EMPTY) and battery is None and soc_pct == 20
               for state, battery, soc_pct in states), states
    assert [t for t in transitions if t.rule == "soc_jump"] == []
