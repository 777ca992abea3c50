"""cascade bench warnings --trace: lead times relative to onset and alarms per 1,000 battery-hours on
any trace, checked against numbers worked out by hand on a tiny trace; plus one smoke run on a
short library trace (the whole library is benched by hand, not in the test suite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alerting.replay import read_trace
from alerting.rules import parse_rules
from bench import warnings as bench
from cascade.cli import main as cascade_main

TRACES = Path(__file__).resolve().parent.parent / "bench" / "traces"
T = 1_714_521_600  # 2024-05-01T00:00:00Z

RULES = """
rules:
  - id: hot
    description: Pack hot
    source: test
    scope: slot
    unit: °C
    input: {field: temperature_c}
    levels:
      1: 40
      2: {value: 50, protective_action: stop_charging}
      3: {value: 60, protective_action: slot_cutoff}
    diagnosis: "hot {value}"
    action: "cool slot {slot}"
  - id: smoke
    description: Smoke in the cabinet
    source: test
    scope: cabinet
    input: {bool: smoke_detected}
    levels:
      3: 1
    diagnosis: "smoke"
    action: "dispatch"
"""


def tiny_trace(tmp_path: Path, header: str = f"# onset: {T + 420}\n# slot: s/c/1\n") -> Path:
    """Polls every 60 s from T to T+600. Slot 1 heats: 45 °C at +120 s (level 1), 55 at +240
    (level 2, stop charging), 65 at +360 (level 3, cut-off); onset at +420. Slot 2 is empty until
    +300, then holds a 41 °C pack (level 1 on another target before onset). Smoke at +480."""
    rows = ["timestamp,target,field,value"]
    temps = {0: 30, 120: 45, 240: 55, 360: 65}
    for k in range(11):
        t = T + 60 * k
        rows.append(f"{t},s/c,model,X")
        if k == 0:
            rows += [f"{t},s/c,smoke_detected,false", f"{t},s/c/1,battery_state,CHARGING",
                     f"{t},s/c/2,battery_state,EMPTY"]
        if 60 * k in temps:
            rows.append(f"{t},s/c/1,temperature_c,{temps[60 * k]}")
        if 60 * k == 300:
            rows += [f"{t},s/c/2,battery_state,CHARGING", f"{t},s/c/2,temperature_c,41"]
        if 60 * k == 480:
            rows.append(f"{t},s/c,smoke_detected,true")
    path = tmp_path / "tiny.csv"
    path.write_text(header + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "tiny_rules.yaml"
    path.write_text(RULES)
    return path


def test_battery_hours_count_only_slots_holding_a_battery(tmp_path):
    readings = read_trace(tiny_trace(tmp_path))
    # 10 intervals of 60 s; slot 1 holds a pack in all of them (600 s), slot 2 in the last 5 (300 s).
    assert bench.battery_hours(readings) == pytest.approx(900 / 3600)


def test_lead_times_by_hand(tmp_path):
    readings = read_trace(tiny_trace(tmp_path))
    res = bench.analyse_trace(readings, parse_rules(RULES), onset=T + 420, slot=("s", "c", 1), hours=0.25)
    onset = res["onset"]
    assert onset["first_level_min"] == {"1": -5.0, "2": -3.0, "3": -1.0}
    assert onset["first_action"] == {"min": -3.0, "action": "stop_charging", "rule": "hot"}
    assert onset["per_rule"] == {"hot": {"1": -5.0, "2": -3.0, "3": -1.0}, "smoke": {"3": 1.0}}
    # Slot 2's level 1 at +300 s is on another target, before onset.
    assert onset["elsewhere_before_onset"] == {"1": 1, "2": 0, "3": 0, "protective_actions": 0}


def test_alarm_rates_by_hand(tmp_path):
    readings = read_trace(tiny_trace(tmp_path))
    res = bench.analyse_trace(readings, parse_rules(RULES), onset=None, slot=None, hours=0.25)
    rates = res["rates"]
    # Level-n alarms (raise or escalation to n): L1 slot 1 + slot 2; L2 slot 1; L3 slot 1 + smoke.
    assert rates["alarms"] == {"1": 2, "2": 1, "3": 2}
    assert rates["per_1000_battery_hours"] == {"1": 8000.0, "2": 4000.0, "3": 8000.0}
    assert rates["protective_actions"] == 2 and rates["protective_actions_per_1000_battery_hours"] == 8000.0
    assert rates["by_rule"] == {"hot@L1": 2, "hot@L2": 1, "hot@L3": 1, "smoke@L3": 1}
    assert "onset" not in res


def test_without_a_slot_every_target_counts(tmp_path):
    readings = read_trace(tiny_trace(tmp_path))
    res = bench.analyse_trace(readings, parse_rules(RULES), onset=T + 420, slot=None, hours=0.25)
    assert res["onset"]["first_level_min"]["1"] == -5.0
    assert res["onset"]["elsewhere_before_onset"]["1"] == 0


def test_cli_table_and_json_with_a_candidate_catalogue(tmp_path, rules_file, capsys):
    path = tiny_trace(tmp_path)
    assert bench.main(["--trace", str(path), "--rules", str(rules_file)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "shipped" in line)
    assert header.split() == ["shipped", "tiny_rules", "temp-only"]
    row = {line.split("  ")[0].strip(): line.split() for line in out.splitlines()}
    assert row["first L1 (any rule)"][-2] == "-5.0"  # candidate column
    assert row["first protective action"][-2] == "-3.0"
    assert "onset   2024-05-01T00:07:00Z (Unix 1714522020, from trace header); target s/c/1" in out
    assert bench.main(["--trace", str(path), "--rules", str(rules_file), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["rule_sets"]) == ["shipped", "tiny_rules", "temp-only"]
    assert data["rule_sets"]["tiny_rules"]["onset"]["first_level_min"] == {"1": -5.0, "2": -3.0, "3": -1.0}
    assert data["battery_hours"] == pytest.approx(0.25) and data["onset_from"] == "trace header"


def test_cli_without_onset_prints_rates(tmp_path, rules_file, capsys):
    path = tiny_trace(tmp_path, header="")
    assert bench.main(["--trace", str(path), "--rules", str(rules_file)]) == 0
    out = capsys.readouterr().out
    assert "per 1,000 battery-hours" in out
    row = {line.split("  ")[0].strip(): line for line in out.splitlines()}
    assert "8000.0 (2)" in row["L1"] and "4000.0 (1)" in row["L2"]


@pytest.mark.parametrize("onset", [str(T + 420), "2024-05-01T00:07:00Z", "2024-05-01T00:07:00", "+420"])
def test_onset_forms(tmp_path, rules_file, capsys, onset):
    path = tiny_trace(tmp_path, header="")
    assert bench.main(["--trace", str(path), "--rules", str(rules_file), "--onset", onset, "--slot", "s/c/1",
                       "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["onset"] == T + 420 and data["onset_from"] == "--onset"
    assert data["rule_sets"]["tiny_rules"]["onset"]["first_level_min"]["1"] == -5.0


def test_onset_none_overrides_the_header(tmp_path, rules_file, capsys):
    assert bench.main(["--trace", str(tiny_trace(tmp_path)), "--rules", str(rules_file), "--onset", "none",
                       "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["onset"] is None and "onset" not in data["rule_sets"]["shipped"]


@pytest.mark.parametrize("args, message", [
    (["--onset", "yesterday"], "use Unix seconds, ISO-8601, +SECONDS or none"),
    (["--slot", "s/c"], "use site/cabinet/slot"),
    (["--rules", "/nonexistent/rules.yaml"], "cannot read rule file"),
])
def test_errors_exit_2(tmp_path, capsys, args, message):
    assert bench.main(["--trace", str(tiny_trace(tmp_path)), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_trace_exits_2_naming_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,target,field,value\n1,s/c/1,temperatur_c,3\n")
    assert bench.main(["--trace", str(bad)]) == 2
    assert "bad.csv:2:" in capsys.readouterr().err


def test_trace_options_need_a_trace():
    with pytest.raises(SystemExit):
        bench.main(["--onset", "1"])


def test_temperature_baseline_picks_the_absolute_temperature_rules():
    rules = parse_rules(RULES)
    assert list(bench.temperature_baseline(rules)) == ["hot"]
    legacy = parse_rules(RULES.replace("id: hot", "id: cell_over_temperature")
                         .replace("field: temperature_c", "field: cell_temperature_max_c"))
    assert list(bench.temperature_baseline(legacy)) == ["cell_over_temperature"]


def test_smoke_run_on_a_short_library_trace_through_the_cascade_cli(capsys):
    # cascade bench warnings --trace FILE reaches bench.warnings.main with the arguments unchanged.
    assert cascade_main(["bench", "warnings", "--trace", str(TRACES / "mechanical_abuse.csv"), "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out[out.index("{"):])
    assert data["slot"] == "lib/crush/2" and data["stats"]["skipped"] == {}
    assert set(data["rule_sets"]) == {"shipped", "temp-only"}
    temp_only = data["rule_sets"]["temp-only"]["onset"]
    assert temp_only["first_level_min"]["1"] is None or temp_only["first_level_min"]["1"] > 0  # no precursor


def test_several_traces_end_with_a_summary(tmp_path, rules_file, capsys):
    a = tiny_trace(tmp_path)
    b = tmp_path / "b.csv"
    b.write_text(tiny_trace(tmp_path / "..", header="").read_text())
    assert bench.main(["--trace", str(a), "--trace", str(b), "--rules", str(rules_file), "--brief"]) == 0
    out = capsys.readouterr().out
    assert "== summary: shipped, tiny_rules, temp-only ==" in out
    assert "trace (minutes from onset)" in out and "trace (per 1,000 battery-h)" in out


def test_json_can_go_to_a_file(tmp_path, rules_file, capsys):
    out = tmp_path / "out.json"
    assert bench.main(["--trace", str(tiny_trace(tmp_path)), "--rules", str(rules_file), "--json",
                       "--output", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(out.read_text())["rule_sets"]["tiny_rules"]["onset"]["first_action"]["min"] == -3.0
