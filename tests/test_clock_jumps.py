"""Wall-clock jumps (NTP steps, a wrong RTC corrected) change no duration of the warning path: the
engine's `for` timers, the offline watch, escalation and the vehicle rate limit run on a steady
clock; the wall clock only stamps what is stored and shown."""

from __future__ import annotations

import pytest

from alerting.engine import Engine
from alerting.rules import load_rules
from alerting.service import AlertService
from collectors.vehicles.trust import Gate
from core.model import CabinetReading, SlotReading
from tests.fixtures.clock import ManualClock

HOUR = 3600.0


def _hot(clock: ManualClock) -> CabinetReading:
    # 52 degC: over_temperature level 1, which must hold for its `for` (minutes) before it is raised.
    return CabinetReading("C1", "s1", "m", int(clock.now * 1e9), slots=[SlotReading(1, battery_id="B1",
                                                                                      temperature_c=52.0)])


def _level1_for_s() -> float:
    rule = load_rules()["over_temperature"]
    return next(lv.for_s for lv in rule.levels if lv.level == 1)


@pytest.mark.parametrize("jump", [HOUR, -HOUR])
def test_a_wall_clock_jump_neither_raises_early_nor_delays_a_for_timer(jump: float) -> None:
    wall, steady = ManualClock(), ManualClock(0.0)
    engine = Engine(load_rules().only(["over_temperature"]), clock=wall, elapsed=steady)
    hold = _level1_for_s()
    assert hold >= 60
    assert engine.evaluate(_hot(wall)) == []
    wall.advance(jump)  # the wall clock steps; no real time passes
    steady.advance(10)
    wall.advance(10)
    assert engine.evaluate(_hot(wall)) == [], "raised because the wall clock jumped"
    steady.advance(hold)
    wall.advance(hold)
    raised = engine.evaluate(_hot(wall))
    assert [(t.rule, t.to_level) for t in raised] == [("over_temperature", 1)], "delayed by the jump"
    assert raised[0].at == wall.now  # stamped with the wall clock


async def test_a_wall_clock_jump_raises_no_cabinet_offline_and_hides_none() -> None:
    wall, steady = ManualClock(), ManualClock(0.0)
    engine = Engine(load_rules().only(["over_temperature"]), clock=wall, elapsed=steady)
    service = AlertService(engine, alertmanager_url=None, clock=wall, elapsed=steady,
                           cabinets=[("s1", "C1")], offline_after_s=30.0)
    await service.handle_reading(_hot(wall))
    wall.advance(HOUR)
    steady.advance(5)
    service.check_offline()
    assert not service.offline, "a forward jump made a reporting cabinet look silent"
    wall.advance(-2 * HOUR)
    steady.advance(40)
    service.check_offline()
    assert list(service.offline) and next(iter(service.offline)).cabinet == "C1", "a backward jump hid a silent cabinet"


def test_a_backward_wall_clock_jump_does_not_lock_a_vehicle_out() -> None:
    gate = Gate(rate_per_s=0.5, burst=3)
    steady = 100.0
    assert [gate.admit("V1", seq, 0, steady) for seq in range(1, 4)] == [None, None, None]
    assert gate.admit("V1", 4, 0, steady) == "rate_limited"
    # The ingest passes its steady clock; even a clock handed in that steps back refills nothing
    # negative: after the step, the device gets its tokens back as time passes.
    assert gate.admit("V1", 5, 0, steady - HOUR) == "rate_limited"
    assert gate.admit("V1", 6, 0, steady - HOUR + 4) is None


# -- change between readings is measured on the readings' own times ------------------------------

def _soc(clock: ManualClock, soc: float, sample_t: float) -> CabinetReading:
    return CabinetReading("C1", "s1", "m", int(sample_t * 1e9), slots=[SlotReading(1, battery_id="B1", soc_pct=soc)])


def test_a_soc_step_across_missed_polls_is_not_a_jump_but_a_step_between_close_readings_is() -> None:
    clock = ManualClock()
    engine = Engine(load_rules().only(["soc_jump"]), clock=clock)
    t = clock.now
    assert engine.evaluate(_soc(clock, 40.0, t)) == []
    # Polls delayed and missed under load: the next reading is 8 minutes later (by its own time) and the
    # pack charged 14 points meanwhile. That is charging, not a jump.
    clock.advance(5)
    assert engine.evaluate(_soc(clock, 54.0, t + 480)) == []
    # Two readings 5 s apart that differ by 14 points are a jump, however late they arrive.
    clock.advance(5)
    raised = engine.evaluate(_soc(clock, 40.0, t + 485))
    assert [(x.rule, x.to_level) for x in raised] == [("soc_jump", 1)]
