"""The shipped rule catalogue against the simulator's healthy fleet: a normal day of swapping and
charging (mixed chemistries, 48 V and 60 V packs, empty slots) must not raise level-2 or level-3
alerts, nor any protective action. Guards against thresholds and simulator drifting apart."""

from __future__ import annotations

import time
from collections import Counter

from alerting import Engine, load_rules
from alerting.state import AlertStore
from collectors.modbus.decode import decode_poll
from collectors.modbus.planner import plan_reads
from collectors.modbus.profile import find_profile
from simulators.fleet import build_fleet
from tests.fixtures.clock import ManualClock


def test_healthy_simulated_day_raises_no_warning_or_action() -> None:
    clock = ManualClock()
    profiles = [(name, find_profile(name)) for name in ("reference-cabinet", "volta-s8")]
    fleet = build_fleet(profiles, cabinets=6, clock=clock, seed=11)
    engine = Engine(load_rules(), clock=clock, state=AlertStore())
    plans = {c.cabinet_id: plan_reads(c.profile, c.slot_count) for c in fleet.cabinets}
    transitions = []
    readings = 0
    started = time.monotonic()
    for _ in range(int(12 * 3600 / 60)):  # 12 hours at one poll a minute
        clock.now += 60
        for cab in fleet.cabinets:
            plan = plans[cab.cabinet_id]
            responses = [fleet.read(cab, r.register_type, r.address, r.count) for r in plan]
            reading, errors = decode_poll(plan, responses, cabinet_id=cab.cabinet_id, site=cab.state.site,
                                          model=cab.profile.model, slot_count=cab.slot_count,
                                          timestamp_ns=int(clock.now * 1e9))
            assert not errors, errors[:3]
            readings += len(reading.slots)
            transitions += engine.evaluate(reading)
        assert time.monotonic() - started < 120, "bounded: the simulated day must stay cheap"
    raised = Counter((t.rule, t.to_level) for t in transitions if t.kind in ("raise", "escalate"))
    serious = {k: v for k, v in raised.items() if k[1] >= 2}
    actions = [t for t in transitions if t.protective_action]
    assert readings > 40_000
    assert not serious, f"warnings on a healthy fleet: {serious}"
    assert not actions, f"protective actions on a healthy fleet: {actions[:3]}"
    notices = sum(raised.values())
    assert notices <= readings / 12 / 60 * 0.05, f"too many level-1 notices on a healthy fleet: {raised}"
