"""Safety paths stated from outside, so a broken implementation cannot pass by agreeing with itself:
the Modbus read limit written here (not imported), one extreme sensor against the fusion score, the
per-cabinet alert-level gauge with slots at mixed levels."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerting.actions import ActionPolicy
from alerting.engine import Engine
from alerting.rules import load_rules
from alerting.service import AlertService
from collectors.modbus.planner import plan_reads
from collectors.modbus.profile import load_profile
from core.model import CabinetReading, SlotReading
from tests.fixtures.clock import ManualClock

MODBUS_MAX_READ = 125  # Modbus Application Protocol v1.1b3, 6.3/6.4: 1 to 125 registers per read


def _profile(tmp_path: Path, last_address: int) -> Path:
    """Two cabinet registers at 0 and ``last_address``, with a gap a read may bridge up to the limit."""
    path = tmp_path / f"span-{last_address}.yaml"
    path.write_text(f"""model: span-{last_address}
max_gap: 124
slots:
  count: 1
  base: {{input: 1000}}
  stride: {{input: 1}}
cabinet:
  - {{field: input_voltage_v, register: input, address: 0, type: u16}}
  - {{field: input_current_a, register: input, address: {last_address}, type: u16}}
slot:
  - {{field: voltage_v, register: input, offset: 0, type: u16}}
""", encoding="utf-8")
    return path


@pytest.mark.parametrize(("last_address", "cabinet_reads"), [(MODBUS_MAX_READ - 1, [MODBUS_MAX_READ]),
                                                             (MODBUS_MAX_READ, [1, 1])])
def test_no_read_exceeds_the_modbus_limit(tmp_path: Path, last_address: int, cabinet_reads: list[int]) -> None:
    """Registers 0..124 fit one read of exactly 125; 0..125 (126 registers) must be two reads."""
    plan = plan_reads(load_profile(_profile(tmp_path, last_address)))
    counts = sorted(r.count for r in plan if r.address < 1000)
    assert counts == sorted(cabinet_reads)
    assert all(1 <= r.count <= MODBUS_MAX_READ for r in plan)


# -- one sensor alone never takes the fusion score past level 1 ------------------------------------

@pytest.mark.parametrize("field", ["h2_ppm", "voc_ppm", "valve_acoustic_events", "module_pressure_kpa",
                                   "temperature_c"])
def test_one_extreme_sensor_gives_the_fusion_rule_at_most_level_1(field: str) -> None:
    rules = load_rules().only(["thermal_runaway"])
    clock = ManualClock()
    engine = Engine(rules, clock=clock)
    levels = []
    for step in range(40):  # 20 minutes at 30 s: far past every hold and rate window
        clock.advance(30)
        value = {"h2_ppm": 1e6, "voc_ppm": 1e6, "valve_acoustic_events": 1000 * step,
                 "module_pressure_kpa": 100 + 50 * step, "temperature_c": 25 + 30 * step}[field]
        slot = SlotReading(1, battery_id="B1", **{field: value})
        for t in engine.evaluate(CabinetReading("c1", "s1", "m", int(clock.now * 1e9), slots=[slot])):
            levels.append(t.to_level)
    assert levels and max(levels) == 1, f"{field} alone reached {max(levels, default=0)}"


def test_two_independent_signals_reach_the_cut_off() -> None:
    """The other side of the cap: corroborating sensors do reach level 3 (the cap is not a mute)."""
    clock = ManualClock()
    engine = Engine(load_rules().only(["thermal_runaway"]), clock=clock)
    reached = 0
    for step in range(20):
        clock.advance(30)
        slot = SlotReading(1, battery_id="B1", h2_ppm=500.0, voc_ppm=300.0, valve_acoustic_events=step // 5)
        for t in engine.evaluate(CabinetReading("c1", "s1", "m", int(clock.now * 1e9), slots=[slot])):
            reached = max(reached, t.to_level)
    assert reached == 3


# -- the per-cabinet alert-level gauge is the cabinet's *worst* level ----------------------------

async def test_cabinet_alert_level_gauge_shows_the_worst_slot() -> None:
    clock = ManualClock()
    engine = Engine(load_rules().only(["over_temperature"]), clock=clock)
    registry = CollectorRegistry()
    service = AlertService(engine, alertmanager_url=None, registry=registry, cabinets=[("s1", "c1"), ("s1", "c2")],
                           policy=ActionPolicy(perform=frozenset()))
    temperatures = {1: 51.0, 2: 75.0, 3: 25.0, 4: 56.0}  # levels 1, 3, none, 2 once held
    for _ in range(12):  # 6 minutes: level 1 holds 5 minutes
        clock.advance(30)
        slots = [SlotReading(n, battery_id=f"B{n}", temperature_c=t) for n, t in temperatures.items()]
        service.apply(engine.evaluate(CabinetReading("c1", "s1", "m", int(clock.now * 1e9), slots=slots)))
    levels = {a.key.slot: a.level for a in engine.state.active()}
    assert levels == {1: 1, 2: 3, 4: 2}
    gauge = registry.get_sample_value
    assert gauge("cascade_cabinet_alert_level", {"site": "s1", "cabinet": "c1"}) == 3
    assert gauge("cascade_cabinet_alert_level", {"site": "s1", "cabinet": "c2"}) == 0
    assert gauge("cascade_alerts_active", {"level": "1"}) == 1 and gauge("cascade_alerts_active", {"level": "3"}) == 1
    # Every active alert is its own series for Prometheus (CascadeSafetyAlert mirrors it); a cleared one goes.
    def active(slot: int, level: int) -> float | None:
        return gauge("cascade_alert_active", {"rule": "over_temperature", "level": str(level), "site": "s1",
                                              "cabinet": "c1", "slot": str(slot)})
    assert (active(1, 1), active(2, 3), active(4, 2)) == (1, 1, 1)
    for _ in range(12):
        clock.advance(30)
        slots = [SlotReading(n, battery_id=f"B{n}", temperature_c=25.0) for n in temperatures]
        service.apply(engine.evaluate(CabinetReading("c1", "s1", "m", int(clock.now * 1e9), slots=slots)))
    assert not engine.state.active()
    assert (active(1, 1), active(2, 3), active(4, 2)) == (None, None, None)
