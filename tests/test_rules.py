"""Rule catalogue and loader: validation errors (regression cases as data), every shipped rule
firing at each level and clearing with hysteresis, chemistry/model overrides (P-5.2.1a-d,
P-5.2.2.2, D-5.4.1, V-5.10, D-B.4, GB/T 32960)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from alerting.engine import Engine
from alerting.rules import RuleError, load_rules, parse_rules
from core.model import VEHICLE_FIELDS, VEHICLE_MODEL, CabinetReading, Chemistry, SlotReading

CASES = Path(__file__).with_name("rules_cases")
CATALOGUE = load_rules()
T0 = 1_700_000_000.0


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_bad_rule_file_is_rejected_with_file_rule_and_reason(case):
    expected = yaml.safe_load((CASES / case / "expected.yaml").read_text())
    with pytest.raises(RuleError) as err:
        load_rules(CASES / case / "rules.yaml")
    e = err.value
    assert e.file == "rules.yaml"
    assert e.rule == expected["rule"]
    assert e.key == expected["key"]
    assert expected["reason"] in e.reason
    assert str(e).startswith("rules.yaml")


def test_catalogue_covers_the_required_clauses():
    sources = " ".join(r.source for r in CATALOGUE.values())
    for clause in ("P-5.2.1a", "P-5.2.1b", "P-5.2.1c", "P-5.2.1d", "P-5.2.2.2a", "P-5.2.2.2b",
                   "P-5.2.2.2c", "P-5.2.2.2d", "P-5.2.2.3", "D-5.4.1", "V-5.10", "D-B.4",
                   "D-5.1.5.2", "P-3.3", "GB/T 32960"):
        assert clause in sources, clause
    for rule_id in ("thermal_runaway", "fire_suppression_triggered", "soc_jump", "insulation_low",
                    "cell_voltage_spread", "cell_temperature_difference", "handshake_failed",
                    "charging_low_temperature", "over_current", "pack_undervoltage"):
        assert rule_id in CATALOGUE


def test_fire_suppression_rule_is_level_3_and_read_only():
    rule = CATALOGUE["fire_suppression_triggered"]
    assert [lv.level for lv in rule.levels] == [3]
    assert all(lv.protective_action is None for lv in rule.levels)


def test_d541_and_v510_thresholds():
    assert CATALOGUE["over_temperature"].levels[-1].threshold == 70
    low = {lv.level: lv for lv in CATALOGUE["charging_low_temperature"].levels}
    assert low[2].threshold == 0 and low[3].threshold == -10 and low[3].compare == "<="
    li, _ = CATALOGUE["pack_undervoltage"].resolve("any", int(Chemistry.NMC))
    na, _ = CATALOGUE["pack_undervoltage"].resolve("any", int(Chemistry.NA_ION))
    # V-5.10 for a 48 V-class pack, expressed relative to nominal voltage
    assert {lv.level: lv.threshold for lv in li}[2] * 48 == pytest.approx(38.4)
    assert {lv.level: lv.threshold for lv in na}[2] * 48 == pytest.approx(30.0)


# --- every catalogue rule fires at each of its levels and clears with hysteresis ---------

_SIMPLE = [r for r in CATALOGUE.values() if not r.fusion and r.input.kind in ("field", "delta", "flag", "bool")]


def _reading(rule, value, guard_ok=True, chemistry=None) -> CabinetReading:
    """A reading whose rule input equals ``value`` (guard satisfied)."""
    values: dict = {}
    cabinet_values: dict = {}
    inp = rule.input
    if inp.kind == "field":
        values[_SETTABLE.get(inp.fields[0], inp.fields[0])] = value
        if inp.per:
            values[_SETTABLE.get(inp.per, inp.per)] = 1.0
        if inp.minus == "cabinet_temperature_c":
            cabinet_values["cabinet_temperature_c"] = 0.0  # the excess over the cabinet is the value
    elif inp.kind == "delta":
        values[inp.fields[0]], values[inp.fields[1]] = value, 0.0
    elif inp.kind == "flag":
        values[inp.fields[0]] = inp.mask if value >= 1 else 0
    elif inp.kind == "bool" and inp.fields[0] == "electrical_limits_unknown":
        values.update(voltage_v=50.0, nominal_voltage_v=None if value >= 1 else 48.0)
    elif inp.kind == "bool":
        values[inp.fields[0]] = value >= 1
    if rule.when is not None:
        g, compare, gv = rule.when
        ok = {">": gv + 1, ">=": gv, "<": gv - 1, "<=": gv}[compare]
        bad = {">": gv - 1, ">=": gv - 1, "<": gv + 1, "<=": gv + 1}[compare]
        values[g.fields[0]] = ok if guard_ok else bad
    if rule.scope == "slot":
        slot = SlotReading(slot=1, battery_id="B1", chemistry=chemistry, **values)
        return CabinetReading("c1", "s1", "m1", 0, slots=[slot], **cabinet_values)
    if rule.scope == "vehicle":  # derived vehicle values are set directly: the rule reads attributes
        vehicle = SimpleNamespace(**{**dict.fromkeys(VEHICLE_FIELDS), "battery": None, **values})
        return CabinetReading("V1", "bj", VEHICLE_MODEL, 0, vehicle=vehicle)  # type: ignore[arg-type]
    return CabinetReading("c1", "s1", "m1", 0, **values)


# Derived values (core.model.DERIVED_SLOT_FIELDS) are set through the field they come from.
_SETTABLE = {"hottest_temperature_c": "temperature_c", "coldest_temperature_c": "temperature_c",
             "pack_nominal_voltage_v": "nominal_voltage_v"}


def _drive(engine, clock, rule, value, seconds, step=10.0):
    out = []
    end = clock[0] + seconds
    while clock[0] <= end:
        out += engine.evaluate(_reading(rule, value))
        clock[0] += step
    return out


def _level_value(lv):
    eps = 1e-6 * max(1.0, abs(lv.threshold))
    if lv.compare == ">":
        return lv.threshold + eps
    if lv.compare == "<":
        return lv.threshold - eps
    return lv.threshold


def _healthy(rule):
    first = rule.levels[0]
    if rule.input.kind in ("flag", "bool"):
        return 0
    sign = 1 if first.compare[0] == ">" else -1
    return first.threshold - sign * (rule.hysteresis + max(1.0, abs(first.threshold) * 0.2))


@pytest.mark.parametrize("rule", _SIMPLE, ids=lambda r: r.id)
def test_catalogue_rule_fires_at_each_level_and_clears_with_hysteresis(rule):
    for lv in rule.levels:
        clock = [T0]
        engine = Engine([rule], clock=lambda: clock[0])
        value = _level_value(lv)
        first = engine.evaluate(_reading(rule, value))
        if lv.for_s > 0:
            assert all(t.to_level < lv.level for t in first), "fired before its `for` duration"
        out = first + _drive(engine, clock, rule, value, lv.for_s + 10)
        assert max(t.to_level for t in out) == lv.level
        last = out[-1]
        assert last.labels["level"] == str(lv.level)
        assert last.protective_action == lv.protective_action
        if rule.hysteresis > 0:
            sign = 1 if lv.compare[0] == ">" else -1
            inside_band = lv.threshold - sign * rule.hysteresis / 2
            assert _drive(engine, clock, rule, inside_band, 60) == []  # held by hysteresis
        cleared = _drive(engine, clock, rule, _healthy(rule), rule.clear_for_s + 20)
        assert [t.kind for t in cleared][-1] == "clear"
        assert cleared[-1].to_level == 0 and cleared[-1].from_level >= 1
        assert engine.state.worst_level() == 0


@pytest.mark.parametrize("rule", [r for r in _SIMPLE if r.when is not None], ids=lambda r: r.id)
def test_guarded_rule_stays_quiet_when_guard_is_off(rule):
    clock = [T0]
    engine = Engine([rule], clock=lambda: clock[0])
    worst = _level_value(rule.levels[-1])
    for _ in range(60):
        assert engine.evaluate(_reading(rule, worst, guard_ok=False)) == []
        clock[0] += 10


def test_chemistry_overrides_change_thresholds():
    rule = CATALOGUE["cell_overvoltage"]
    clock = [T0]
    engine = Engine([rule], clock=lambda: clock[0])
    def at(v, chem, slot):
        return CabinetReading("c1", "s1", "m1", 0, slots=[SlotReading(slot=slot, cell_voltage_max_v=v, chemistry=chem)])
    lfp = engine.evaluate(at(3.76, int(Chemistry.LFP), 1))
    nmc = engine.evaluate(at(3.76, int(Chemistry.NMC), 2))
    assert [(t.target.slot, t.to_level) for t in lfp] == [(1, 2)]
    assert nmc == []


def test_model_override_applies_to_that_cabinet_model_only():
    rules = parse_rules("""
rules:
  - id: hot
    description: d
    source: P-5.2.1c
    diagnosis: "x"
    action: "y"
    scope: cabinet
    input: {field: cabinet_temperature_c}
    levels: {1: 45, 2: 55}
    overrides:
      - model: [DESERT-1]
        levels: {1: 50}
""")
    engine = Engine(rules, clock=lambda: T0)
    desert = engine.evaluate(CabinetReading("c1", "s1", "DESERT-1", 0, cabinet_temperature_c=47))
    plain = engine.evaluate(CabinetReading("c2", "s1", "SC-12", 0, cabinet_temperature_c=47))
    assert desert == [] and [t.to_level for t in plain] == [1]


def test_durations_and_rule_text_are_parsed():
    rule = CATALOGUE["over_charge"]
    assert rule.levels[0].for_s == 300
    assert "{" not in CATALOGUE["thermal_runaway"].description


# --- numbers too large for a float (YAML integers are unbounded) --------------------------------

_BIG = "1" + "0" * 400
_BASE = """
rules:
  - id: hot
    description: d
    source: P-5.2.1c
    diagnosis: "x"
    action: "y"
    scope: slot
"""


@pytest.mark.parametrize("body, key", [
    ("input: {field: temperature_c}\n    levels: {1: 45}\n    hysteresis: BIG", "hysteresis"),
    ("input: {field: temperature_c}\n    levels: {1: 45}\n    clear_for: BIG", "clear_for"),
    ("input: {field: temperature_c}\n    levels: {1: {value: 45, for: BIG}}", "levels.1.for"),
    ("input: {field: temperature_c}\n    levels: {1: 45}\n    when: {field: charge_current_a, compare: '>', value: BIG}",
     "when.value"),
    ("input: {rate_of: temperature_c, window: BIG}\n    levels: {1: 45}", "input.window"),
    ("input: {field: temperature_c}\n    levels: {1: 45}\n    overrides: [{chemistry: [LFP], levels: {1: BIG}}]",
     "overrides[0].levels.1.value"),
    ("input: {field: temperature_c}\n    levels: {1: 45}\n    overrides: [{chemistry: [LFP], hysteresis: -BIG}]",
     "overrides[0].hysteresis"),
    ("input:\n      fusion:\n        - {input: {field: temperature_c}, start: BIG, full: 1, weight: 1}\n"
     "        - {input: {field: h2_ppm}, start: 0, full: 1, weight: 1}\n    levels: {1: 0.5}", "input.fusion[0].start"),
    ("input:\n      fusion:\n        - {input: {field: temperature_c}, start: 0, full: 1, weight: 1, hold: BIG}\n"
     "        - {input: {field: h2_ppm}, start: 0, full: 1, weight: 1}\n    levels: {1: 0.5}", "input.fusion[0].hold"),
], ids=["hysteresis", "clear_for", "level_for", "when", "window", "override_value", "override_hysteresis",
        "fusion_start", "fusion_hold"])
def test_a_huge_integer_anywhere_is_a_rule_error_not_an_overflow(body, key):
    with pytest.raises(RuleError) as err:
        parse_rules(_BASE + "    " + body.replace("BIG", _BIG) + "\n", file="big.yaml")
    assert (err.value.file, err.value.rule, err.value.key) == ("big.yaml", "hot", key)
    assert "finite" in err.value.reason and len(str(err.value)) < 300


# --- P-3.3 also holds for the run configuration's per-rule action overrides ---------------------

def test_read_only_fields_cover_input_fusion_terms_and_guard():
    assert CATALOGUE["fire_suppression_triggered"].read_only_fields == {"emergency_state"}
    assert CATALOGUE["thermal_runaway"].read_only_fields == frozenset()
    guarded = parse_rules("""
rules:
  - id: hot
    description: d
    source: P-3.3
    diagnosis: "x"
    action: "y"
    scope: cabinet
    input: {field: cabinet_temperature_c}
    when: {flag: emergency_state, compare: "<", value: 1}
    levels: {1: 45}
""")
    assert guarded["hot"].read_only_fields == {"emergency_state"}


def _app_config(tmp_path, actions):
    from cascade.config import AppConfig

    alerting = {"actions": actions, "state_file": str(tmp_path / "alerts.json"),
                "audit_file": str(tmp_path / "audit.jsonl")}
    return AppConfig(source="cfg.yaml", cabinets=[], profiles={}, influxdb=None, alerting=alerting)


@pytest.mark.parametrize("action", ["cabinet_cutoff", "slot_cutoff", "stop_charging"])
def test_run_config_cannot_attach_a_protective_action_to_a_fire_suppression_rule(tmp_path, action):
    from cascade.app import alerting_settings, build_engine
    from cascade.config import ConfigError

    config = _app_config(tmp_path, {"rules": {"fire_suppression_triggered": {3: action}}})
    with pytest.raises(ConfigError) as err:
        alerting_settings(config)  # so `cascade check-config` reports it too
    message = str(err.value)
    assert message.startswith("cfg.yaml: alerting.actions.rules.fire_suppression_triggered.3: ")
    assert "read-only (P-3.3)" in message and "emergency_state" in message and "Fix:" in message
    settings = alerting_settings(_app_config(tmp_path, {}))
    settings["policy"] = type(settings["policy"])(overrides={("fire_suppression_triggered", 3): action})
    with pytest.raises(ConfigError, match="read-only"):
        build_engine(config, settings)  # and start-up refuses it even with hand-made settings


def test_run_config_may_silence_a_fire_suppression_rule_and_act_on_others(tmp_path):
    from cascade.app import alerting_settings, build_engine

    config = _app_config(tmp_path, {"rules": {"fire_suppression_triggered": {3: None},
                                               "cabinet_water": {3: "cabinet_cutoff"}}})
    settings = alerting_settings(config)
    engine = build_engine(config, settings)
    assert settings["policy"].overrides[("fire_suppression_triggered", 3)] is None
    assert engine.startup_transitions == []


def test_the_catalogue_table_in_the_docs_is_generated_from_the_catalogue() -> None:
    """docs/warnings.md's catalogue table is the generator's output (python -m alerting.catalogue_doc --write)."""
    from alerting.catalogue_doc import BEGIN, DOC, END, catalogue_table

    text = DOC.read_text(encoding="utf-8")
    committed = text.split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")
    assert committed == catalogue_table(load_rules()), "run: python -m alerting.catalogue_doc --write"


def test_rule_name_is_a_short_display_name_defaulting_to_the_description():
    assert CATALOGUE["over_temperature"].name == "Battery over-temperature"
    assert all(rule.name and len(rule.name) <= 40 for rule in CATALOGUE.values())
    text = """
rules:
  - id: hot
    {NAME}description: Pack temperature high
    source: P-5.2.1c
    diagnosis: "x"
    action: "y"
    scope: cabinet
    input: {field: cabinet_temperature_c}
    levels: {1: 45}
"""
    assert parse_rules(text.replace("{NAME}", ""))["hot"].name == "Pack temperature high"
    assert parse_rules(text.replace("{NAME}", "name: Hot pack\n    "))["hot"].name == "Hot pack"
    with pytest.raises(RuleError, match="key 'name': must be a short display name"):
        parse_rules(text.replace("{NAME}", "name: [1, 2]\n    "))


def test_durations_take_days_for_token_lifetimes_and_history_windows():
    from core.durations import parse_duration

    assert parse_duration("30d") == 30 * 86400  # make run mints its console token for 30 days
    assert parse_duration("1d12h") == 36 * 3600
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("1w")
