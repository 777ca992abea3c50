"""The trace library in bench/traces/: every trace parses (only the sensor-fault trace has rejected
values), carries its sources, runaway traces carry an onset and the faulty slot, the files are what
the seeded generator produces, and the physics the headers cite is what the data show."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerting.replay import TraceStats, read_metadata, read_trace
from bench import tracelib

TRACES = Path(__file__).resolve().parent.parent / "bench" / "traces"
NAMES = list(tracelib.LIBRARY)
RUNAWAY = ["lfp_overcharge", "nmc_overcharge", "internal_short", "external_heating", "mechanical_abuse",
           "cell_temps_only"]
NORMAL = ["hot_summer_day", "cold_winter_day", "fast_charging", "sensor_faults"]


@pytest.fixture(scope="module")
def parsed():
    out = {}
    for name in NAMES:
        stats = TraceStats()
        out[name] = (read_trace(TRACES / f"{name}.csv", stats=stats), stats)
    return out


def test_the_library_has_the_ten_scenarios():
    assert sorted(NAMES) == sorted(RUNAWAY + NORMAL)
    for name in NAMES:
        assert (TRACES / f"{name}.csv").is_file(), f"run python -m bench.tracelib to write {name}.csv"


def test_the_library_stays_small():
    total = sum((TRACES / f"{name}.csv").stat().st_size for name in NAMES)
    assert total < 4_000_000


@pytest.mark.parametrize("name", [n for n in NAMES if n != "sensor_faults"])
def test_every_trace_parses_with_no_skipped_row(parsed, name):
    readings, stats = parsed[name]
    assert readings and stats.skipped_total == 0, stats.errors[:3]
    assert stats.used == stats.rows


def test_the_sensor_fault_trace_has_its_impossible_values_rejected_by_line(parsed):
    readings, stats = parsed["sensor_faults"]
    assert set(stats.skipped) <= {"out_of_range", "non_finite"} and stats.skipped["out_of_range"] >= 10
    assert stats.skipped["non_finite"] == 1  # the NaN pack voltage
    texts = [str(e) for e in stats.errors]
    assert all(t.startswith("sensor_faults.csv:") for t in texts)
    assert any(": temperature_c: 3276.7 is above 1500" in t for t in texts)
    assert any(": cell_temperature_min_c: -3276.8 is below -60" in t for t in texts)
    assert any(": soc_pct: 655.35 is above 120" in t for t in texts)
    assert any(": voltage_v: 'nan' is not a finite number" in t for t in texts)
    # The plausible-looking faults reach the rules: a saturated H2 sensor, a stuck pack sensor.
    assert max(s.h2_ppm or 0 for _, r in readings for s in r.slots if s.slot == 2) == 6553.5
    assert {s.temperature_c for _, r in readings for s in r.slots if s.slot == 3} - {None} == {24.3}


@pytest.mark.parametrize("name", NAMES)
def test_every_trace_names_its_sources_and_assumptions(name):
    meta = read_metadata(TRACES / f"{name}.csv")
    assert meta.get("title") and meta.get("physics") and meta.get("assumption")
    assert meta.get("source"), "a library trace cites at least one published source"
    for src in meta["source"]:
        assert src.startswith("[") and "Taken: " in src
        key = src[1:src.index("]")]
        assert key in tracelib.SOURCES


@pytest.mark.parametrize("name", RUNAWAY)
def test_runaway_traces_carry_onset_and_slot_inside_the_trace(parsed, name):
    readings, stats = parsed[name]
    meta = read_metadata(TRACES / f"{name}.csv")
    onset = float(meta["onset"][0])
    assert onset == tracelib.LIBRARY[name]().onset()
    assert stats.first_ts < onset < stats.last_ts
    site, cabinet, slot = meta["slot"][0].split("/")
    assert any(r.site == site and r.cabinet_id == cabinet and any(s.slot == int(slot) for s in r.slots)
               for _, r in readings)
    assert "20 °C/min" in meta["onset_definition"][0]


@pytest.mark.parametrize("name", NORMAL)
def test_normal_traces_have_no_onset(name):
    assert read_metadata(TRACES / f"{name}.csv")["onset"] == ["none"]


def test_the_files_are_what_the_seeded_generator_writes():
    # One short trace regenerated in full (python -m bench.tracelib --check does all of them).
    assert tracelib.generate("mechanical_abuse") == (TRACES / "mechanical_abuse.csv").read_text(encoding="utf-8")


def _slot_series(readings, slot, field):
    return [(ts, getattr(s, field)) for ts, r in readings for s in r.slots if s.slot == slot]


def _first(series, test):
    return next((ts for ts, v in series if v is not None and test(v)), None)


def test_lfp_overcharge_hydrogen_leads_venting_and_fire_as_in_jin_2020(parsed):
    readings, _ = parsed["lfp_overcharge"]
    meta = read_metadata(TRACES / "lfp_overcharge.csv")
    onset = float(meta["onset"][0])
    h2 = _first(_slot_series(readings, 2, "h2_ppm"), lambda v: v >= 5)
    vent = _first(_slot_series(readings, 2, "valve_acoustic_events"), lambda v: v >= 1)
    assert 600 < onset - h2 < 800  # H2 captured 769 s before fire
    assert 100 < onset - vent < 160  # smoke (venting) 639 s after the H2 capture


def test_nmc_overcharge_vents_minutes_before_runaway_and_shows_hydrogen_only_at_runaway(parsed):
    readings, _ = parsed["nmc_overcharge"]
    onset = float(read_metadata(TRACES / "nmc_overcharge.csv")["onset"][0])
    vent = _first(_slot_series(readings, 3, "voc_ppm"), lambda v: v >= 20)
    h2 = _first(_slot_series(readings, 3, "h2_ppm"), lambda v: v >= 5)
    assert 300 < onset - vent < 420 and h2 >= onset


def test_internal_short_has_no_gas_before_its_last_minute(parsed):
    readings, _ = parsed["internal_short"]
    onset = float(read_metadata(TRACES / "internal_short.csv")["onset"][0])
    for field in ("h2_ppm", "voc_ppm"):
        first = _first(_slot_series(readings, 4, field), lambda v: v >= 5)
        assert first is None or first >= onset - 60


def test_mechanical_abuse_has_no_precursor(parsed):
    readings, _ = parsed["mechanical_abuse"]
    onset = float(read_metadata(TRACES / "mechanical_abuse.csv")["onset"][0])
    before = [s for ts, r in readings if ts < onset for s in r.slots if s.slot == 2]
    assert max(s.temperature_c for s in before) < 40 and max(s.h2_ppm for s in before) < 5
    assert all(s.bms_protection == 0 for s in before)


def test_the_cell_temperature_cabinet_reports_no_pack_temperature(parsed):
    readings, _ = parsed["cell_temps_only"]
    slots = [s for _, r in readings for s in r.slots]
    assert all(s.temperature_c is None and s.surface_temperature_c is None and s.h2_ppm is None for s in slots)
    assert any(s.cell_temperature_max_c is not None for s in slots)


def test_fast_charging_warms_about_one_degree_per_minute(parsed):
    readings, _ = parsed["fast_charging"]
    series = [(ts, t) for ts, t in _slot_series(readings, 2, "temperature_c") if t is not None]
    rises = [(t1 - t0) / (s1 - s0) * 60 for (s0, t0), (s1, t1) in zip(series, series[15:], strict=False)]
    assert 0.7 <= max(rises) <= 1.3


def test_hot_day_cabinet_peaks_at_45_and_cold_day_packs_arrive_below_zero(parsed):
    hot, _ = parsed["hot_summer_day"]
    assert 44 <= max(r.cabinet_temperature_c for _, r in hot) <= 46
    cold, _ = parsed["cold_winter_day"]
    assert min(s.cell_temperature_min_c for _, r in cold for s in r.slots if s.cell_temperature_min_c is not None) < 0
