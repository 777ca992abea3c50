"""The warning engine (alerting/engine.py) stated from outside: the fusion score a reading gets, how
long a momentary piece of evidence is held, and what a run-time threshold change does to the rule
set. Written to kill the mutants `make mutate` found alive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alerting.engine import Engine
from alerting.rules import RuleError, load_rules, parse_rules
from core.model import CabinetReading, SlotReading
from tests.fixtures.clock import T0, ManualClock

FUSION = """\
rules:
  - id: runaway
    description: fused evidence
    source: test
    scope: slot
    input:
      fusion:
        - {input: {field: h2_ppm}, start: 100, full: 300, weight: 1}
        - {input: {field: voc_ppm}, start: 0, full: 10, weight: 1}
        - {input: {field: valve_acoustic_events}, start: 0, full: 1, weight: 1, hold: 60s}
    levels: {1: 0.4, 2: 0.9, 3: 1.2}
    diagnosis: "{value}"
    action: act
"""


def _levels(readings: list[dict], step_s: float = 30) -> list[tuple[int, float]]:
    """(level, score) of every transition for a slot reporting ``readings`` ``step_s`` apart."""
    clock = ManualClock()
    engine = Engine(parse_rules(FUSION), clock=clock)
    out = []
    for values in readings:
        clock.advance(step_s)
        slot = SlotReading(1, battery_id="B1", **values)
        for t in engine.evaluate(CabinetReading("c1", "s1", "m", int(clock.now * 1e9), slots=[slot])):
            out.append((t.to_level, round(t.value, 6) if t.value is not None else None))
    return out


@pytest.mark.parametrize(("values", "expected"), [
    ({"h2_ppm": 200.0}, [(1, 0.5)]),  # half way from start to full: strength 0.5
    ({"h2_ppm": 400.0}, [(2, 1.0)]),  # past full: strength 1, not 1.5
    ({"h2_ppm": 50.0, "voc_ppm": 5.0}, [(1, 0.5)]),  # below start: strength 0, not negative
    ({"h2_ppm": 300.0, "voc_ppm": 10.0}, [(3, 2.0)]),
])
def test_fusion_score_is_the_weighted_sum_of_clamped_strengths(values: dict, expected: list) -> None:
    assert _levels([values]) == expected


def test_a_momentary_event_is_held_for_its_hold_time_inclusive() -> None:
    """One valve event (strength 1), then the counter reads 0: the 60 s hold keeps the evidence for
    the reading 60 s later (inclusive) and lets it go at the one after."""
    clock = ManualClock(T0)
    engine = Engine(parse_rules(FUSION), clock=clock)
    seen = []
    for events in (1, 0, 0, 0):
        clock.advance(60)
        slot = SlotReading(1, battery_id="B1", valve_acoustic_events=events, voc_ppm=0.0)
        for t in engine.evaluate(CabinetReading("c1", "s1", "m", int(clock.now * 1e9), slots=[slot])):
            seen.append((clock.now - T0, t.kind, t.to_level, t.value))
    assert seen == [(60.0, "raise", 2, 1.0), (180.0, "clear", 0, 0.0)]


# -- run-time thresholds ----------------------------------------------------------------------------

def test_a_threshold_change_touches_that_rule_only_and_is_audited(tmp_path: Path) -> None:
    clock = ManualClock()
    audit = tmp_path / "audit.jsonl"
    engine = Engine(load_rules(), clock=clock, audit_path=audit)
    before = {rid: [lv.threshold for lv in rule.levels] for rid, rule in engine.rules.items()}
    entry = engine.set_threshold("over_temperature", 2, 61, who=" noc-li ", reason=" hot summer ")
    after = {rid: [lv.threshold for lv in rule.levels] for rid, rule in engine.rules.items()}
    assert list(after) == list(before)
    changed = {rid for rid in before if before[rid] != after[rid]}
    assert changed == {"over_temperature"}
    old = dict(zip([lv.level for lv in load_rules()["over_temperature"].levels], before["over_temperature"]))[2]
    assert entry == {"at": clock.now, "who": "noc-li", "reason": "hot summer", "rule": "over_temperature",
                     "level": 2, "old": old, "new": 61.0}
    assert engine.audit == [entry]
    assert [json.loads(line) for line in audit.read_text().splitlines()] == [entry]


@pytest.mark.parametrize(("args", "kwargs", "error", "message"), [
    (("over_temperature", 2, 61), {"who": " ", "reason": "r"}, ValueError,
     "set_threshold needs who: the person making the change"),
    (("over_temperature", 2, 61), {"who": "x", "reason": ""}, ValueError,
     "set_threshold needs reason: why the threshold changes (audited)"),
    (("no_such_rule", 2, 61), {"who": "x", "reason": "r"}, RuleError,
     "<run-time>: rule 'no_such_rule': no such rule; see the catalogue for ids"),
    (("over_temperature", 2, float("nan")), {"who": "x", "reason": "r"}, RuleError,
     "catalogue.yaml: rule 'over_temperature': key 'levels.2': nan is not a finite number"),
    (("over_temperature", 4, 61), {"who": "x", "reason": "r"}, RuleError,
     "catalogue.yaml: rule 'over_temperature': key 'levels.4': level must be 1, 2 or 3"),
    (("over_temperature", True, 61), {"who": "x", "reason": "r"}, RuleError,
     "catalogue.yaml: rule 'over_temperature': key 'levels.True': level must be 1, 2 or 3"),
])
def test_an_invalid_threshold_change_is_refused_and_changes_nothing(args: tuple, kwargs: dict, error: type,
                                                                     message: str) -> None:
    engine = Engine(load_rules(), clock=ManualClock())
    before = [(rid, [lv.threshold for lv in r.levels]) for rid, r in engine.rules.items()]
    with pytest.raises(error) as info:
        engine.set_threshold(*args, **kwargs)
    assert str(info.value) == message
    assert [(rid, [lv.threshold for lv in r.levels]) for rid, r in engine.rules.items()] == before
    assert engine.audit == []
