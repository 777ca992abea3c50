"""Trace format and replay: parsing, carry-forward, errors with line numbers, CLI; the reorder window,
--sort, and rejected (non-finite or physically impossible) values."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerting.engine import Engine
from alerting.replay import (
    PHYSICAL_BOUNDS,
    TraceError,
    TraceStats,
    main,
    physical_bounds,
    read_metadata,
    read_trace,
    replay_file,
    write_trace,
)
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


# --- reorder window and --sort -------------------------------------------------------------------
# (Replaces the old "timestamp goes back in time" rejection of the whole file.)

H = "timestamp,target,field,value\n"


def _temps(readings):
    return [(ts, [(s.slot, s.temperature_c) for s in r.slots]) for ts, r in readings]


def test_rows_out_of_order_within_the_window_are_replayed_in_time_order(tmp_path):
    text = H + "100,s/c/1,temperature_c,20\n160,s/c/1,temperature_c,22\n130,s/c/1,temperature_c,21\n" \
               "130,s/c/2,temperature_c,30\n200,s/c/1,temperature_c,23\n"
    stats = TraceStats()
    readings = read_trace(write(tmp_path, text), stats=stats)
    assert _temps(readings) == [(100.0, [(1, 20.0)]), (130.0, [(1, 21.0), (2, 30.0)]),
                                (160.0, [(1, 22.0), (2, 30.0)]), (200.0, [(1, 23.0), (2, 30.0)])]
    assert (stats.rows, stats.used, stats.reordered, stats.skipped_total, stats.polls) == (5, 5, 2, 0, 4)


def test_a_row_older_than_the_window_is_a_named_counted_error_and_only_it_is_skipped(tmp_path):
    text = H + "100,s/c/1,temperature_c,20\n200,s/c/1,temperature_c,22\n139,s/c/1,temperature_c,99\n" \
               "140,s/c/1,temperature_c,21\n260,s/c/1,temperature_c,23\n"
    stats = TraceStats()
    readings = read_trace(write(tmp_path, text), stats=stats)  # default window: 60 s
    assert _temps(readings) == [(100.0, [(1, 20.0)]), (140.0, [(1, 21.0)]), (200.0, [(1, 22.0)]),
                                (260.0, [(1, 23.0)])]
    assert stats.skipped == {"out_of_window": 1} and stats.reordered == 1
    (err,) = stats.errors
    assert err.line == 4 and str(err).startswith("t.csv:4: timestamp 139 is 61 s older than the newest row")
    assert "60 s reorder window" in str(err) and "--sort" in str(err)


def test_the_window_is_configurable(tmp_path):
    text = H + "100,s/c/1,temperature_c,20\n200,s/c/1,temperature_c,22\n139,s/c/1,temperature_c,21\n"
    path = write(tmp_path, text)
    wide = TraceStats()
    assert [ts for ts, _ in read_trace(path, reorder_window_s=120, stats=wide)] == [100.0, 139.0, 200.0]
    assert wide.skipped_total == 0
    strict = TraceStats()
    assert [ts for ts, _ in read_trace(path, reorder_window_s=0, stats=strict)] == [100.0, 200.0]
    assert strict.skipped == {"out_of_window": 1}
    with pytest.raises(ValueError, match="reorder window"):
        read_trace(path, reorder_window_s=-1)


def test_sort_sorts_the_whole_file_first(tmp_path):
    text = H + "500,s/c/1,temperature_c,25\n100,s/c/1,temperature_c,20\n300,s/c/1,temperature_c,22\n" \
               "100,s/c/1,soc_pct,50\n"
    path = write(tmp_path, text)
    stats = TraceStats()
    readings = read_trace(path, sort=True, stats=stats)
    assert [(ts, r.slots[0].temperature_c, r.slots[0].soc_pct) for ts, r in readings] == [
        (100.0, 20.0, 50.0), (300.0, 22.0, 50.0), (500.0, 25.0, 50.0)]
    assert stats.skipped_total == 0
    # Without --sort, the same file loses the rows that arrive more than 60 s late.
    unsorted = TraceStats()
    assert [ts for ts, _ in read_trace(path, stats=unsorted)] == [500.0]
    assert unsorted.skipped == {"out_of_window": 3}


# --- non-finite and physically impossible values -------------------------------------------------

@pytest.mark.parametrize("field, value, reason, why", [
    ("temperature_c", "nan", "non_finite", "'nan' is not a finite number"),
    ("temperature_c", "inf", "non_finite", "'inf' is not a finite number"),
    ("h2_ppm", "1e999", "non_finite", "'1e999' is not a finite number"),
    ("charge_count", "1e999", "non_finite", "'1e999' is not a finite number"),
    ("temperature_c", "-300", "out_of_range", "-300 is below -60, the lowest physically possible temperature"),
    ("cell_temperature_max_c", "3276.7", "out_of_range", "3276.7 is above 1500"),
    ("soc_pct", "250", "out_of_range", "250 is above 120, the highest plausible percentage"),
    ("h2_ppm", "-1", "out_of_range", "-1 is below 0"),
    ("voltage_v", "-0.5", "out_of_range", "-0.5 is below 0"),
    ("cell_voltage_max_v", "65.535", "out_of_range", "65.535 is above 10"),
])
def test_impossible_values_are_named_counted_and_skipped_never_missing(tmp_path, field, value, reason, why):
    text = H + f"1,s/c/1,{field},1\n2,s/c/1,{field},{value}\n3,s/c/1,battery_id,B1\n"
    stats = TraceStats()
    readings = read_trace(write(tmp_path, text), stats=stats)
    assert stats.skipped == {reason: 1} and stats.used == 2
    (err,) = stats.errors
    assert str(err).startswith(f"t.csv:3: {field}: ") and why in str(err) and "row skipped" in str(err)
    # The bad value is dropped, not turned into None: the last good value carries forward, and the
    # poll it arrived in still happens.
    assert [ts for ts, _ in readings] == [1.0, 2.0, 3.0]
    assert [getattr(r.slots[0], field) for _, r in readings] == [1, 1, 1]


def test_plausible_values_at_the_bounds_are_kept(tmp_path):
    text = H + "1,s/c/1,temperature_c,-60\n2,s/c/1,temperature_c,1500\n2,s/c/1,soc_pct,103\n" \
               "2,s/c/1,h2_ppm,0\n2,s/c,cabinet_temperature_c,-12.5\n"
    stats = TraceStats()
    readings = read_trace(write(tmp_path, text), stats=stats)
    assert stats.skipped_total == 0
    assert readings[-1][1].slots[0].temperature_c == 1500 and readings[-1][1].slots[0].soc_pct == 103


def test_bounds_come_from_one_table_by_field_then_unit_suffix():
    assert physical_bounds("temperature_c")[:2] == (-60.0, 1500.0) == physical_bounds("cabinet_temperature_c")[:2]
    assert physical_bounds("co_ppm")[0] == 0 and physical_bounds("voc_ppm")[0] == 0
    assert physical_bounds("soc_pct")[:2] == (0.0, 120.0) and physical_bounds("soh_pct")[:2] == (0.0, 120.0)
    assert physical_bounds("voltage_v")[0] == 0 and physical_bounds("cell_voltage_min_v")[:2] == (0.0, 10.0)
    assert physical_bounds("battery_id") is None and physical_bounds("chemistry") is None
    assert set(PHYSICAL_BOUNDS) >= {"_c", "_ppm", "_pct", "_v"}


def test_skipped_rows_do_not_stop_structural_errors(tmp_path):
    text = H + "1,s/c/1,temperature_c,nan\n2,s/c/1,temperatur_c,20\n"
    with pytest.raises(TraceError, match="t.csv:3: 'temperatur_c' is not a slot field"):
        read_trace(write(tmp_path, text))


def test_metadata_comes_from_the_leading_comments(tmp_path):
    text = ("# Library trace: x\n# onset: 1714525200\n# slot: lib/c/2\n# source: A (2020)\n# source: B (2021)\n"
            + H + "1,s/c/1,temperature_c,20\n# later: not metadata\n")
    path = write(tmp_path, text)
    meta = read_metadata(path)
    assert meta == {"onset": ["1714525200"], "slot": ["lib/c/2"], "source": ["A (2020)", "B (2021)"]}
    stats = TraceStats()
    read_trace(path, stats=stats)
    assert stats.metadata == meta


def test_replay_file_passes_window_sort_and_stats(tmp_path):
    text = H + "100,s/c/1,bms_protection,SHORT_CIRCUIT\n20,s/c/1,bms_protection,0\n"
    path = write(tmp_path, text)
    stats = TraceStats()
    out = replay_file(path, Engine(load_rules()), stats=stats)
    assert stats.skipped == {"out_of_window": 1} and any(t.rule == "bms_short_circuit" for t in out)
    out = replay_file(path, Engine(load_rules()), sort=True)  # 0 at t=20, then the short at t=100
    assert [(t.kind, t.at) for t in out if t.rule == "bms_short_circuit"] == [("raise", 100.0)]


def test_cli_warns_about_skipped_rows_and_counts_them_by_reason(tmp_path, capsys):
    text = H + "100,s/c/1,temperature_c,20\n200,s/c/1,temperature_c,nan\n100,s/c/1,soc_pct,50\n" \
               "210,s/c/1,voltage_v,-3\n"
    path = write(tmp_path, text)
    assert main([str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: t.csv:3: temperature_c: 'nan' is not a finite number; row skipped" in err
    assert "warning: t.csv:4: timestamp 100 is 100 s older than the newest row" in err
    assert "3 skipped (1 value not finite, 1 value physically impossible, 1 row older than the reorder window)" in err
    assert main([str(path), "--sort"]) == 0
    assert "2 skipped (1 value not finite, 1 value physically impossible)" in capsys.readouterr().err
    assert main([str(path), "--reorder-window", "200"]) == 0
    assert "2 skipped" in capsys.readouterr().err
