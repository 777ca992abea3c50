"""The soak harness (bench/soak.py): its verdicts on made-up runs, and one short real run.

The short run is the real stack (simulator, InfluxDB, Alertmanager, the collector as a child process)
for about a minute with three cabinets and one injected scenario: it must write the CSV, the JSON
summary and, when matplotlib is installed (``make soak`` installs it), the PNG.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak import CSV_COLUMNS, Bounds, FaultRecord, evaluate, pooled_slope, proc_figures
from bench.stress import knee, step_passes

REPO = Path(__file__).resolve().parents[1]
BOUNDS = Bounds(warmup_s=60)
GOOD_TOTALS = {"offered_slot_readings": 1200, "stored_slot_points": 1200, "offered_cabinet_readings": 100,
               "stored_cabinet_points": 100, "lines_dropped": 0, "shutdowns_s": [0.4, 0.3], "crashes": 0,
               "stalls_s": 11.0, "unexpected_alerts": []}


def _samples(minutes: int = 60, rss=lambda t: 80.0, p95=lambda t: 15.0, run=lambda t: 1) -> list[dict]:
    rows = []
    for i in range(minutes * 6):  # every 10 s
        t = i * 10.0
        rows.append({"t_s": t, "collector_run": run(t), "rss_mib": rss(t), "poll_p95_ms": p95(t),
                     "loop_lag_max_ms": 5.0})
    return rows


def _scenario_fault(**changes) -> FaultRecord:
    fault = FaultRecord(kind="scenario", name="scenario:water_ingress", injected_at=100.0, target="C0001",
                        raised_at=108.0, am_raised_at=110.0, removed_at=160.0, cleared_at=165.0, am_cleared_at=166.0)
    for key, value in changes.items():
        setattr(fault, key, value)
    return fault


def _verdicts(samples=None, faults=None, **totals) -> dict:
    return evaluate(_samples() if samples is None else samples, [_scenario_fault()] if faults is None else faults,
                    {**GOOD_TOTALS, **totals}, BOUNDS, 3600)


def test_a_clean_run_passes_every_verdict():
    verdicts = _verdicts()
    assert {name: v["pass"] for name, v in verdicts.items()} == {
        "memory_flat": True, "latency_flat": True, "no_lost_readings": True, "faults_alerted_and_cleared": True,
        "no_unexpected_alerts": True, "no_hang": True}
    assert verdicts["memory_flat"]["value"] == 0.0


def test_rss_growth_after_warmup_fails_at_the_bound():
    # 20 MiB/h after the warm-up fails a 10 MiB/h bound; 5 MiB/h passes.
    growing = _verdicts(_samples(rss=lambda t: 80 + 20 * t / 3600))["memory_flat"]
    assert not growing["pass"] and growing["value"] == pytest.approx(20.0, rel=1e-6)
    assert _verdicts(_samples(rss=lambda t: 80 + 5 * t / 3600))["memory_flat"]["pass"]


def test_warmup_growth_does_not_count():
    # Fast growth in the first minute (imports, caches, first polls), flat after it.
    verdict = _verdicts(_samples(rss=lambda t: 40 + min(t, 60) / 60 * 40))["memory_flat"]
    assert verdict["pass"] and verdict["value"] == pytest.approx(0.0, abs=1e-9)


def test_a_collector_restart_is_a_new_baseline_not_a_fall_or_a_rise():
    # Run 1 sits at 120 MiB, run 2 (after a restart at 30 min) at 70 MiB: both flat, so the pooled slope is 0.
    samples = _samples(rss=lambda t: 120.0 if t < 1800 else 70.0, run=lambda t: 1 if t < 1800 else 2)
    verdict = _verdicts(samples)["memory_flat"]
    assert verdict["pass"] and verdict["value"] == pytest.approx(0.0, abs=1e-9)
    # The same samples read as one run would be a steep fall: the grouping is what makes it 0.
    assert pooled_slope((1, r["t_s"] / 3600, r["rss_mib"]) for r in samples) < -50


def test_pooled_slope_needs_points():
    assert pooled_slope([]) is None
    assert pooled_slope([(1, 0.0, 1.0), (1, 0.0, 2.0), (1, 0.0, 3.0)]) is None  # no spread in time
    assert pooled_slope([(1, 0.0, 1.0), (1, 1.0, 3.0), (2, 0.0, 10.0), (2, 1.0, 12.0)]) == pytest.approx(2.0)


def test_rising_poll_latency_fails():
    rising = _verdicts(_samples(p95=lambda t: 15 + 60 * t / 3600))["latency_flat"]
    assert not rising["pass"]
    assert rising["value"]["last_third_ms"] > rising["bound"]
    # Noise of a few milliseconds on a small figure is within the slack.
    assert _verdicts(_samples(p95=lambda t: 15 + (t % 60) / 6))["latency_flat"]["pass"]


def test_one_lost_or_dropped_reading_fails():
    assert not _verdicts(stored_slot_points=1199)["no_lost_readings"]["pass"]
    assert not _verdicts(stored_cabinet_points=99)["no_lost_readings"]["pass"]
    assert not _verdicts(lines_dropped=1)["no_lost_readings"]["pass"]
    assert _verdicts(stored_slot_points=1200)["no_lost_readings"]["value"] == {"slot": 0, "cabinet": 0,
                                                                               "dropped_lines": 0}
    assert not _verdicts(offered_slot_readings=0, stored_slot_points=0)["no_lost_readings"]["pass"]  # nothing ran


@pytest.mark.parametrize(("changes", "problem"), [
    ({"raised_at": None}, "no alert raised in time"),
    ({"raised_at": 200.0}, "raised after 100 s"),
    ({"am_raised_at": None}, "never reached Alertmanager"),
    ({"cleared_at": None}, "not cleared in time"),
    ({"cleared_at": 400.0}, "cleared after 240 s"),
    ({"am_cleared_at": None}, "still active in Alertmanager"),
    ({"removed_at": None}, "not removed (run ended)"),
    ({"kind": "alertmanager_outage", "needs_am_after": 130.0}, "not seen in Alertmanager after its outage"),
])
def test_a_fault_not_alerted_or_not_cleared_fails(changes, problem):
    verdict = _verdicts(faults=[_scenario_fault(), _scenario_fault(**changes)])["faults_alerted_and_cleared"]
    assert not verdict["pass"]
    assert verdict["value"]["failed"] == 1
    assert verdict["value"]["problems"][0].endswith(problem)


def test_outages_restarts_and_quiet_scenarios_have_their_own_checks():
    ok = [FaultRecord(kind="influx_outage", name="influx_outage", injected_at=10, removed_at=70, recovered_at=90),
          FaultRecord(kind="collector_restart", name="collector_restart", injected_at=200, shutdown_s=0.5,
                      recovered_at=215),
          _scenario_fault(raised_at=None, am_raised_at=None, cleared_at=None, am_cleared_at=None,
                          alert_required=False, rejected_values=12)]
    assert _verdicts(faults=ok)["faults_alerted_and_cleared"]["pass"]
    bad = [FaultRecord(kind="influx_outage", name="influx_outage", injected_at=10, removed_at=70, recovered_at=None),
           FaultRecord(kind="influx_outage", name="influx_outage", injected_at=10, removed_at=70, recovered_at=400),
           FaultRecord(kind="collector_restart", name="collector_restart", injected_at=200, shutdown_s=31.0,
                       recovered_at=240),
           _scenario_fault(raised_at=None, alert_required=False, rejected_values=0)]
    verdict = _verdicts(faults=bad)["faults_alerted_and_cleared"]
    assert [p.split(": ", 1)[1] for p in verdict["value"]["problems"]] == [
        "did not recover", "spool drained after 330 s", "shutdown took 31.0 s",
        "no value rejected while the fault was on"]
    assert not _verdicts(faults=[])["faults_alerted_and_cleared"]["pass"]  # a soak without faults proves little


def test_hangs_crashes_and_stalls_fail():
    assert not _verdicts(shutdowns_s=[0.4, 16.0])["no_hang"]["pass"]
    assert not _verdicts(shutdowns_s=[float("inf")])["no_hang"]["pass"]  # killed after twice the bound
    assert not _verdicts(crashes=1)["no_hang"]["pass"]
    assert not _verdicts(stalls_s=45.0)["no_hang"]["pass"]
    lagging = _samples()
    lagging[100]["loop_lag_max_ms"] = 2500.0
    verdict = _verdicts(lagging)["no_hang"]
    assert not verdict["pass"] and verdict["value"]["worst_loop_lag_s"] == 2.5


def test_unexpected_alerts_fail():
    verdict = _verdicts(unexpected_alerts=["soc_jump@site-01/C0042/3@1200s"])["no_unexpected_alerts"]
    assert not verdict["pass"] and verdict["value"] == 1 and "C0042" in verdict["detail"]


def test_proc_figures_of_this_process():
    figures = proc_figures(os.getpid())
    assert figures is not None
    assert 10 < figures["rss_mib"] < 4096
    assert figures["open_fds"] >= 3 and figures["threads"] >= 1 and figures["cpu_s"] > 0
    assert proc_figures(2 ** 22 + 1) is None  # above pid_max: never a process


def test_stress_knee_is_the_largest_passing_step():
    def step(cabinets, delivered_share, p95):
        offered = cabinets * 12 / 5
        s = {"cabinets": cabinets, "offered_per_s": offered, "delivered_per_s": offered * delivered_share,
             "poll_p95_s": p95}
        s["pass"] = step_passes(s, 5.0)
        return s
    steps = [step(100, 1.0, 0.02), step(200, 0.995, 0.3), step(400, 0.97, 1.2), step(800, 1.0, 5.5)]
    assert [s["pass"] for s in steps] == [True, True, False, False]
    assert knee(steps) == 200
    assert knee([step(100, 0.5, 0.1)]) is None


@pytest.fixture(scope="module")
def short_soak(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("soak")
    argv = [sys.executable, "-m", "bench", "soak", "--duration", "60s", "--cabinets", "3", "--interval", "1",
            "--sample", "2", "--fault-every", "60s", "--first-fault", "8s", "--hold", "15s",
            "--faults", "scenario:water_ingress", "--warmup", "10s", "--settle", "80s", "--out", str(out)]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=170)
    (out / "stdout.txt").write_text(result.stdout + result.stderr)
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 1: a verdict failed (checked below)
    return out


@pytest.mark.slow
def test_a_short_real_soak_writes_csv_and_json_with_verdicts(short_soak: Path):
    with open(short_soak / "samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) >= 20  # ~60 s at one sample every 2 s
    assert all(float(r["rss_mib"]) > 10 for r in rows if r["rss_mib"])
    assert any(r["poll_p95_ms"] for r in rows) and any(r["sim_cpu_pct"] for r in rows)
    summary = json.loads((short_soak / "summary.json").read_text())
    verdicts = summary["verdicts"]
    assert set(verdicts) == {"memory_flat", "latency_flat", "no_lost_readings", "faults_alerted_and_cleared",
                             "no_unexpected_alerts", "no_hang"}
    log = (short_soak / "stdout.txt").read_text()
    # The data path and the fault were checked for real: nothing lost, the injected water alarm raised
    # (collector and Alertmanager) and cleared once the scenario was removed, the collector stopped in time.
    assert verdicts["no_lost_readings"]["pass"], log
    assert summary["totals"]["stored_slot_points"] == summary["totals"]["offered_slot_readings"] > 500
    (fault,) = summary["faults"]
    assert fault["target"] == "C0001" and "cabinet_water@site-01/C0001" in fault["alerts"], fault
    assert verdicts["faults_alerted_and_cleared"]["pass"], (fault, log)
    # The engineer on site closed again every relay Cascade opened (the water alarm cuts the whole cabinet).
    assert fault["reset_slots"] == list(range(1, 13)) and "site reset of C0001: slots 1,2,3" in log, (fault, log)
    assert verdicts["no_hang"]["pass"], log
    assert summary["pass"] == all(v["pass"] for v in verdicts.values())


@pytest.mark.slow
def test_a_short_real_soak_plots_its_curves(short_soak: Path):
    pytest.importorskip("matplotlib", reason="the soak's plot needs matplotlib: pip install -r "
                                             "scripts/soak-requirements.txt (make soak does it)")
    png = short_soak / "soak.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert json.loads((short_soak / "summary.json").read_text())["plot"] == "soak.png"
