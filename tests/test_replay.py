"""Trace format and replay: parsing, carry-forward, errors with line numbers, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerting.engine import Engine
from alerting.replay import TraceError, main, read_trace, replay_file, write_trace
from alerting.rules import load_rules
from bench import tracegen as traces
from core.model import BmsProtection, Chemistry

BENCH_TRACES = Path(__file__).resolve().parent.parent / "bench" / "traces"


def write(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = """timestamp,target,field,value
# a comment
2024-05-01T00:00:00Z,s1/c1,model,SC-12
2024-05-01T00:00:00Z,s1/c1,smoke_detected,false
2024-05-01T00:00:00Z,s1/c1/1,chemistry,LFP
2024-05-01T00:00:00Z,s1/c1/1,temperature_c,31.5
2024-05-01T00:00:00Z,s1/c1/1,bms_protection,SHORT_CIRCUIT|OVER_CURRENT
2024-05-01T00:00:00Z,s1/c2/4,battery_id,B77
1714521630,s1/c1/1,temperature_c,75
1714521660,s1/c1/1,temperature_c,
1714521660,s1/c1/1,bms_protection,0
"""


def test_rows_group_into_readings_with_carry_forward(tmp_path):
    readings = read_trace(write(tmp_path, GOOD))
    assert [(ts, r.cabinet_id) for ts, r in readings] == [
        (1714521600.0, "c1"), (1714521600.0, "c2"), (1714521630.0, "c1"), (1714521660.0, "c1")]
    first = readings[0][1]
    assert first.model == "SC-12" and first.smoke_detected is False and first.timestamp_ns == 1714521600 * 10**9
    s = first.slots[0]
    assert s.chemistry == Chemistry.LFP and s.bms_protection == BmsProtection.SHORT_CIRCUIT | BmsProtection.OVER_CURRENT
    assert readings[1][1].model == "unknown" and readings[1][1].slots[0].battery_id == "B77"
    later = readings[2][1].slots[0]
    assert later.temperature_c == 75 and later.chemistry == Chemistry.LFP  # carried forward
    assert readings[3][1].slots[0].temperature_c is None  # empty value = None


@pytest.mark.parametrize("text, line, message", [
    ("time,target,field,value\n", 1, "header"),
    ("timestamp,target,field,value\nyesterday,s1/c1,co_ppm,1\n", 2, "bad timestamp"),
    ("timestamp,target,field,value\n1,s1/c1,co_ppm,1\n1,s1/c1,co_pmm,1\n", 3, "'co_pmm' is not a cabinet field"),
    ("timestamp,target,field,value\n1,s1/c1,temperature_c,1\n", 2, "it is a slot field"),
    ("timestamp,target,field,value\n5,s1/c1,co_ppm,1\n4,s1/c1,co_ppm,1\n", 3, "goes back in time"),
    ("timestamp,target,field,value\n1,s1/c1/1,temperature_c,hot\n", 2, "bad value for temperature_c"),
    ("timestamp,target,field,value\n1,s1/c1/1,chemistry,LIPO\n", 2, "not a Chemistry name"),
    ("timestamp,target,field,value\n1,s1/c1/1,output_enabled,maybe\n", 2, "not a boolean"),
    ("timestamp,target,field,value\n1,s1/c1/x,temperature_c,1\n", 2, "slot 'x' is not an integer"),
    ("timestamp,target,field,value\n1,s1,co_ppm,1\n", 2, "bad target"),
    ("timestamp,target,field,value\n1,s1/c1,co_ppm\n", 2, "expected 4 columns"),
    ("", 1, "empty trace"),
])
def test_errors_name_the_line(tmp_path, text, line, message):
    with pytest.raises(TraceError) as err:
        read_trace(write(tmp_path, text))
    assert err.value.line == line
    assert message in str(err.value)
    assert str(err.value).startswith(f"t.csv:{line}:")


def test_replay_file_runs_at_trace_time(tmp_path):
    engine = Engine(load_rules())
    out = replay_file(write(tmp_path, GOOD), engine)
    kinds = [(t.rule, t.kind, t.to_level, t.at) for t in out]
    assert ("bms_short_circuit", "raise", 3, 1714521600.0) in kinds
    assert ("bms_short_circuit", "clear", 0, 1714521660.0) in kinds
    # One 75 °C sample followed by a missing value: `for` (20 s) never completes.
    assert "over_temperature" not in {t.rule for t in out}
    assert engine.state.worst_level(site="s1") == 0


def test_write_then_read_round_trip(tmp_path):
    trace = traces.slow_heating(slots=2)
    readings = list(trace.readings())
    path = tmp_path / "slow.csv"
    write_trace(readings, path)
    back = read_trace(path)
    assert len(back) == len(readings)
    assert back[-1][1].slots[0].temperature_c == readings[-1].slots[0].temperature_c
    assert back[-1][1].slots[1].voltage_v == readings[-1].slots[1].voltage_v


def test_shipped_gas_first_trace_warns_level_2_ten_minutes_before_onset():
    path = BENCH_TRACES / "gas_first_runaway.csv"
    readings = read_trace(path)
    onset = next(ts for ts, r in readings if (r.slots[0].temperature_c or 0) > 150)
    out = replay_file(path, Engine(load_rules()))
    l2 = min(t.at for t in out if t.rule == "thermal_runaway" and t.to_level >= 2)
    assert onset - l2 >= 600


def test_cli_prints_transitions(tmp_path, capsys):
    assert main([str(write(tmp_path, GOOD))]) == 0
    printed = capsys.readouterr().out
    assert "bms_short_circuit" in printed and "2024-05-01T00:00:00Z" in printed and "slot_cutoff" in printed


def test_cli_reports_errors_with_exit_code_2(tmp_path, capsys):
    assert main([str(write(tmp_path, "nope\n"))]) == 2
    assert "t.csv:1:" in capsys.readouterr().err
    bad_rules = write(tmp_path, "rules: 3\n", name="r.yaml")
    assert main([str(write(tmp_path, GOOD)), "--rules", str(bad_rules)]) == 2
    assert "r.yaml" in capsys.readouterr().err


def test_unreadable_csv_is_a_trace_error(tmp_path):
    from alerting.replay import TraceError, read_trace
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"timestamp,target,field,value\n1,s/c/1,voltage_v,\xff\xfe\n")
    with pytest.raises(TraceError, match="not a readable CSV line"):
        read_trace(bad)
    big = tmp_path / "big.csv"
    big.write_text('timestamp,target,field,value\n1,s/c/1,voltage_v,"' + "x" * 140_000 + '"\n')
    with pytest.raises(TraceError, match="big.csv:2"):
        read_trace(big)
