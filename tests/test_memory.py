"""What a polled cabinet costs in memory, pinned (issue 9: ≤ 64 KiB per cabinet, flat over time).

The read plan (a compiled decoder per field) is built once per (profile, slots, gap) and shared by
every cabinet that uses it; the warning engine's state per target is bounded however often and
however long the same targets are evaluated (rate windows keep a bounded number of samples).
``python -m bench memory`` measures the whole collector against the simulators."""

from __future__ import annotations

import gc
import random
import tracemalloc

from alerting.engine import _RATE_POINTS, Engine
from alerting.rules import load_rules
from collectors.modbus.device import ModbusCabinet
from collectors.modbus.planner import shared_plan
from collectors.modbus.profile import find_profile
from collectors.modbus.settings import CabinetConfig
from core.model import CabinetReading, SlotReading
from tests.fixtures.clock import ManualClock


def test_cabinets_of_one_profile_share_one_read_plan_and_build_cheaply() -> None:
    profile = find_profile("reference-cabinet")
    first = ModbusCabinet(CabinetConfig(id="C0", host="127.0.0.1", slots=12), profile)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        cabinets = [ModbusCabinet(CabinetConfig(id=f"C{i}", host="127.0.0.1", slots=12), profile)
                    for i in range(1, 101)]
        gc.collect()
        per_cabinet = (tracemalloc.get_traced_memory()[0] - before) / len(cabinets)
    finally:
        tracemalloc.stop()
    assert all(c.plan is first.plan and c.fast_plan is first.fast_plan for c in cabinets)
    assert per_cabinet < 4096, f"{per_cabinet:.0f} B per cabinet: is the read plan still built per cabinet?"
    # another slot count or gap is another plan; the same arguments give the same one
    assert ModbusCabinet(CabinetConfig(id="x", host="h", slots=6), profile).plan is not first.plan
    assert ModbusCabinet(CabinetConfig(id="y", host="h", slots=12, max_gap=0), profile).plan is not first.plan
    assert shared_plan(profile, 12) is first.plan
    # one decoder per field spec, shared by that field's slices in every slot
    slices = [f for r in first.plan for f in r.fields]
    assert len({id(f.decode) for f in slices}) == len({(id(f.spec), f.unmapped) for f in slices}) < len(slices) / 6


def _reading(cabinet: int, at_s: float, rng: random.Random) -> CabinetReading:
    slots = [SlotReading(slot=i, battery_id=f"B{cabinet}-{i}", chemistry=1, nominal_voltage_v=48.0, battery_state=1,
                         soc_pct=50 + rng.random(), voltage_v=52.0, charge_current_a=2.0, max_charge_current_a=10.0,
                         temperature_c=25 + rng.random(), cell_temperature_max_c=26 + rng.random(),
                         cell_temperature_min_c=24.0, surface_temperature_c=25.0, h2_ppm=1 + rng.random(),
                         voc_ppm=1 + rng.random(), module_pressure_kpa=101 + rng.random() / 10,
                         valve_acoustic_events=0, bms_protection=0, charger_protection=0, cell_voltage_max_v=3.33,
                         cell_voltage_min_v=3.31, insulation_resistance_kohm=1000.0)
             for i in range(1, 13)]
    return CabinetReading(f"C{cabinet}", "s1", "reference-cabinet", int(at_s * 1e9), slots=slots,
                          cabinet_temperature_c=25.0, co_ppm=0.0, smoke_detected=False, flame_detected=False)


def test_the_engine_state_of_a_target_stays_bounded_however_long_and_fast_it_is_evaluated() -> None:
    """A 1 s fast lane for 15 minutes: the rate windows (2 and 5 minutes) keep at most ~32 samples each,
    and the traced heap of the engine does not grow from the 10th to the 15th minute."""
    clock = ManualClock()
    engine = Engine(load_rules(), clock=clock)
    rng = random.Random(1)
    cabinets = 3

    def run(seconds: int) -> None:
        for _ in range(seconds):
            clock.advance(1.0)
            for c in range(cabinets):
                assert engine.evaluate(_reading(c, clock.now, rng)) == []  # a healthy fleet raises nothing

    tracemalloc.start()  # from the start: objects replaced later must have been traced when first made
    try:
        run(600)
        gc.collect()
        at_10_min = tracemalloc.get_traced_memory()[0]
        run(300)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - at_10_min
    finally:
        tracemalloc.stop()
    assert grown < 2048, f"the engine grew by {grown} B in 5 minutes of the same {cabinets} cabinets"
    assert len(engine._targets) == cabinets * 13  # a cabinet target and 12 slots each
    for ts in engine._targets.values():
        for window in ts.buffers.values():
            assert len(window) // 2 <= _RATE_POINTS + 2  # (time, value) pairs


def test_the_fleet_gauges_cost_under_a_kibibyte_per_cabinet() -> None:
    from prometheus_client import CollectorRegistry

    from exporters.prometheus import PipelineMetrics

    metrics = PipelineMetrics(CollectorRegistry())
    rng = random.Random(2)
    metrics.observe(_reading(0, 1.0, rng), 10, [], "modbus")
    readings = [_reading(c, 2.0, rng) for c in range(1, 201)]
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for reading in readings:
            metrics.observe(reading, 10, [], "modbus")
        gc.collect()
        per_cabinet = (tracemalloc.get_traced_memory()[0] - before) / len(readings)
    finally:
        tracemalloc.stop()
    assert per_cabinet < 1024, f"{per_cabinet:.0f} B per cabinet of fleet gauges"


def test_the_memory_bench_says_what_it_ran_and_what_its_figures_mean(capsys) -> None:
    """``bench memory``'s summary names the lane, the requests in flight and whether tracemalloc ran; an RSS
    run shows no traced-heap figures; a warm-up shorter than the 5-minute rate windows is called out."""
    from bench.memory import _print

    figures = {
        "cabinets": 300, "slots": 12, "interval_s": 5.0, "fast_interval_s": 1.0, "max_in_flight": 1,
        "tracemalloc": False, "alerting": True, "influx": False, "duration_s": 180.0, "warmup_s": 90.0,
        "baseline_rss_mib": 71.3, "baseline_traced_mib": 0.0, "rss_kib_per_cabinet": 58.4,
        "traced_kib_per_cabinet": None, "rss_slope_mib_per_h": 0.01, "traced_slope_mib_per_h": None,
        "end_rss_mib": 88.4, "tracemalloc_overhead_mib": 0.0, "readings": 10, "transitions": 0,
        "transitions_by_rule": {}, "top_held": [], "top_grown": [],
    }
    _print(figures)
    out = capsys.readouterr().out
    assert "safety fast lane every 1 s, 1 request in flight" in out and "tracemalloc off" in out
    assert "traced" not in out and "58.4" in out
    assert "warm-up under 300 s" in out
    _print({**figures, "fast_interval_s": None, "max_in_flight": 10, "warmup_s": 300.0, "tracemalloc": True,
            "traced_kib_per_cabinet": 49.0, "traced_slope_mib_per_h": 0.0, "baseline_traced_mib": 27.2})
    out = capsys.readouterr().out
    assert "no safety fast lane, 10 requests in flight" in out and "tracemalloc on" in out
    assert "run --no-tracemalloc for RSS" in out and "traced heap" in out and "warm-up under" not in out
