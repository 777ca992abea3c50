"""Soak: the real pipeline for hours, faults on a schedule, and verdicts on memory, latency, data and alerts.

    python -m bench soak --duration 2h --cabinets 100 --out soak-out
    python -m bench soak --duration 10m --cabinets 20 --fault-every 90s --faults scenario:water_ingress,influx_outage

Everything is real and on loopback, on free ports, with state in a temporary directory:
``cascade simulate`` (its own process, control API on), InfluxDB 1.x, Alertmanager with the shipped
routing (webhooks to a local receiver), and the collector with the warning engine in a child process
started like ``cascade run`` (``start_app``). The child also writes, every ``--sample``, what only
the process itself can see: asyncio tasks, event-loop lag, exact poll latencies, the sink's counters
and spool. This process adds, from /proc, the collector's RSS, CPU, open fds and threads, and the
simulator's CPU apart.

Faults, one every ``--fault-every``, cycling through ``--faults``:

* ``scenario:NAME`` (a shipped scenario, simulators/scenarios) posted to the simulator's control API
  against a cabinet with no alert, held ``--hold`` then deleted: an alert on that cabinet must be raised
  (the collector's /api/alerts and Alertmanager) and, after the fault is removed, cleared in both;
* ``influx_outage``: InfluxDB stopped for ``--outage``, then started: the spool must drain again;
* ``collector_restart``: SIGTERM to the collector, timed until it exits, and a new one started;
* ``alertmanager_outage``: Alertmanager stopped for ``--outage`` while a scenario is injected: the
  alert must reach Alertmanager once it is back.

Outputs in ``--out``: ``samples.csv`` (written as it goes), ``summary.json`` (figures and verdicts),
``soak.png`` (needs matplotlib: ``pip install -r scripts/soak-requirements.txt``; ``make soak`` does it).
Exit status 0 when every verdict passes, 1 otherwise, 2 for bad options. Every loop is bounded by
the duration plus fixed settle and shutdown bounds. docs/soak.md describes the verdicts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Bounds", "FaultRecord", "evaluate", "main", "pooled_slope", "proc_figures", "run_soak"]

log = logging.getLogger("bench.soak")

_REPO = Path(__file__).resolve().parents[1]
#: Children (simulator, collector) import this tree, even when the venv's editable install points at
#: another copy: a soak of a snapshot of the tree is a soak of that snapshot.
_CHILD_ENV = {"PYTHONPATH": str(_REPO)}
_SCENARIOS = _REPO / "simulators" / "scenarios"
_ALERTMANAGER = "prometheus-alertmanager"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_MIB = 1024 * 1024
DEFAULT_FAULTS = ("scenario:water_ingress", "influx_outage", "scenario:over_voltage", "collector_restart",
                  "scenario:cabinet_unreachable", "alertmanager_outage", "scenario:handshake_failure",
                  "scenario:garbage_registers")
#: Scenario time speed-up per shipped scenario: fast enough to play within --hold, slow enough that an
#: outage lasts longer than the offline limit (two intervals plus the timeout).
_SPEED = {"cabinet_unreachable": 4.0}
_DEFAULT_SPEED = 10.0
#: Scenarios that need not raise an alert: garbage words are rejected values (counted), and only a pack
#: temperature missing for a minute in an occupied slot is an alert. They must be rejected, and any
#: alert they do raise must clear.
_QUIET = frozenset({"garbage_registers"})
CSV_COLUMNS = ("t_s", "collector_run", "rss_mib", "cpu_pct", "open_fds", "threads", "tasks", "loop_lag_max_ms",
               "loop_lag_mean_ms", "polls", "poll_failures", "poll_p50_ms", "poll_p95_ms", "poll_p99_ms", "poll_max_ms",
               "readings_total", "readings_per_s", "buffered_lines", "spool_lines", "spool_bytes", "lines_written",
               "lines_dropped", "write_lag_s", "alerts_active", "alertmanager_alerts", "sim_cpu_pct", "sim_rss_mib",
               "faults_active")


@dataclass(frozen=True)
class Bounds:
    """What a soak must stay within; every verdict in docs/soak.md names its bound here."""

    rss_slope_mib_per_h: float = 10.0  # RSS growth after warm-up, pooled within collector runs
    # Of each collector run; capped at a third of the duration. The collector's RSS rises for about as
    # long as its longest rate window (5 min: h2_rise, module pressure) while the windows fill.
    warmup_s: float = 600.0
    latency_rise: float = 1.5  # poll p95, last third / first third of the run (after warm-up) ...
    latency_slack_ms: float = 20.0  # ... plus this, so noise on a few milliseconds is no rise
    shutdown_s: float = 15.0  # SIGTERM to exit of the collector
    stall_s: float = 30.0  # longest gap between the collector's own samples (a hung loop writes none)
    loop_lag_s: float = 2.0  # worst event-loop lag of any sample
    raise_s: float = 60.0  # injection to the alert (also the longest --hold that is checked)
    clear_s: float = 120.0  # fault removed to alert cleared (reconnect back-off is up to 60 s)
    drain_s: float = 180.0  # InfluxDB back to spool empty


@dataclass
class FaultRecord:
    """One injected fault and what was seen of it; times are seconds from the start of the soak."""

    kind: str  # scenario | influx_outage | collector_restart | alertmanager_outage
    name: str
    injected_at: float
    target: str | None = None
    removed_at: float | None = None
    raised_at: float | None = None
    am_raised_at: float | None = None
    cleared_at: float | None = None
    am_cleared_at: float | None = None
    recovered_at: float | None = None  # outage over: spool drained / collector polling / AM back
    shutdown_s: float | None = None
    alerts: list[str] = field(default_factory=list)  # alert keys seen on the target
    error: str | None = None
    alert_required: bool = True  # False for a _QUIET scenario: rejected values instead
    rejected_values: int | None = None  # values the collector rejected while the fault was on
    am_required: bool = True  # the alert must be seen in Alertmanager too
    needs_am_after: float | None = None  # ... at or after this time (Alertmanager outage)
    reset_slots: list[int] = field(default_factory=list)  # slots Cascade cut off, closed again on site

    @property
    def open(self) -> bool:
        """Still being watched: a scenario not yet cleared everywhere, an outage not yet recovered."""
        if self.error:
            return False
        if self.kind == "scenario" or self.kind == "alertmanager_outage":
            if self.removed_at is not None and self.raised_at is None:
                return False  # removed and nothing was raised: nothing to watch clear
            return self.cleared_at is None or (self.am_required and self.am_cleared_at is None)
        return self.recovered_at is None


# -- verdicts (pure: unit-tested in tests/test_soak.py) ---------------------------------------------------

def pooled_slope(points: Iterable[tuple[Any, float, float]]) -> float | None:
    """Least-squares slope of y over x with one intercept per group: ``(group, x, y)`` points.

    A collector restart starts a new group, so its lower RSS does not read as a fall (or a rise);
    None when fewer than three points or no spread in x."""
    groups: dict[Any, list[tuple[float, float]]] = {}
    for group, x, y in points:
        groups.setdefault(group, []).append((x, y))
    num = den = 0.0
    n = 0
    for pts in groups.values():
        if len(pts) < 2:
            continue
        mx = sum(p[0] for p in pts) / len(pts)
        my = sum(p[1] for p in pts) / len(pts)
        num += sum((x - mx) * (y - my) for x, y in pts)
        den += sum((x - mx) ** 2 for x, _ in pts)
        n += len(pts)
    return None if n < 3 or den <= 0 else num / den


def _num(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _run_starts(samples: Sequence[dict[str, Any]]) -> dict[Any, float]:
    starts: dict[Any, float] = {}
    for row in samples:
        starts.setdefault(row.get("collector_run"), float(row["t_s"]))
    return starts


def _verdict(ok: bool, value: Any, bound: Any, detail: str) -> dict[str, Any]:
    return {"pass": bool(ok), "value": value, "bound": bound, "detail": detail}


def evaluate(samples: Sequence[dict[str, Any]], faults: Sequence[FaultRecord], totals: dict[str, Any],
             bounds: Bounds, duration_s: float) -> dict[str, dict[str, Any]]:
    """The pass/fail verdicts of a soak from its samples, faults and end totals.

    ``totals``: ``offered_slot_readings``, ``stored_slot_points``, ``offered_cabinet_readings``,
    ``stored_cabinet_points``, ``lines_dropped``, ``shutdowns_s`` (every collector shutdown),
    ``crashes`` (collector runs that ended without being asked), ``stalls_s`` (longest gap between the
    collector's samples), ``unexpected_alerts`` (alert keys on cabinets with no fault at the time).
    """
    warmup = min(bounds.warmup_s, duration_s / 3)
    starts = _run_starts(samples)
    steady = [r for r in samples if float(r["t_s"]) >= starts.get(r.get("collector_run"), 0.0) + warmup]
    verdicts: dict[str, dict[str, Any]] = {}

    rss = [(r.get("collector_run"), float(r["t_s"]) / 3600, v) for r in steady if (v := _num(r, "rss_mib")) is not None]
    slope = pooled_slope(rss)
    verdicts["memory_flat"] = _verdict(
        slope is not None and slope <= bounds.rss_slope_mib_per_h,
        None if slope is None else round(slope, 3), bounds.rss_slope_mib_per_h,
        f"collector RSS slope in MiB/h after {warmup:.0f} s of warm-up of each collector run, one intercept "
        f"per run ({len(rss)} samples)" + ("; too few samples" if slope is None else ""))

    p95 = [(float(r["t_s"]), v) for r in steady if (v := _num(r, "poll_p95_ms")) is not None]
    if len(p95) >= 6:
        third = len(p95) // 3
        first = statistics.median(v for _, v in p95[:third])
        last = statistics.median(v for _, v in p95[-third:])
        limit = first * bounds.latency_rise + bounds.latency_slack_ms
        verdicts["latency_flat"] = _verdict(last <= limit, {"first_third_ms": round(first, 2),
                                                            "last_third_ms": round(last, 2)}, round(limit, 2),
                                            "median of the per-sample poll p95, last third of the steady samples "
                                            f"against the first third x {bounds.latency_rise:g} + "
                                            f"{bounds.latency_slack_ms:g} ms")
    else:
        verdicts["latency_flat"] = _verdict(False, None, None, f"too few steady samples ({len(p95)}, need 6)")

    lost_slots = totals.get("offered_slot_readings", 0) - totals.get("stored_slot_points", 0)
    lost_cabinets = totals.get("offered_cabinet_readings", 0) - totals.get("stored_cabinet_points", 0)
    dropped = totals.get("lines_dropped", 0)
    verdicts["no_lost_readings"] = _verdict(
        lost_slots <= 0 and lost_cabinets <= 0 and dropped == 0 and totals.get("offered_slot_readings", 0) > 0,
        {"slot": lost_slots, "cabinet": lost_cabinets, "dropped_lines": dropped}, 0,
        "readings the collectors handed to the sink minus points counted in InfluxDB at the end, and lines "
        "the sink dropped")

    bad = [_fault_problem(f, bounds) for f in faults]
    problems = [f"{f.name}@{f.injected_at:.0f}s: {p}" for f, p in zip(faults, bad) if p]
    verdicts["faults_alerted_and_cleared"] = _verdict(
        bool(faults) and not problems, {"faults": len(faults), "failed": len(problems), "problems": problems[:20]},
        0, f"every scenario raised an alert within {bounds.raise_s:g} s (collector and Alertmanager) and cleared "
           f"within {bounds.clear_s:g} s of its removal; every InfluxDB outage drained the spool within "
           f"{bounds.drain_s:g} s; every restart stopped within {bounds.shutdown_s:g} s and polled again"
        + ("" if faults else "; no fault was injected"))

    unexpected = totals.get("unexpected_alerts", [])
    verdicts["no_unexpected_alerts"] = _verdict(not unexpected, len(unexpected), 0,
                                                "alerts on cabinets with no injected fault at the time: "
                                                + (", ".join(unexpected[:10]) or "none"))

    shutdowns = totals.get("shutdowns_s", [])
    worst = max(shutdowns) if shutdowns else None
    stall = totals.get("stalls_s")
    lags = [v for r in samples if (v := _num(r, "loop_lag_max_ms")) is not None]
    worst_lag = max(lags) / 1000 if lags else None
    crashes = totals.get("crashes", 0)
    hang_ok = (worst is not None and worst <= bounds.shutdown_s and crashes == 0
               and stall is not None and stall <= bounds.stall_s
               and worst_lag is not None and worst_lag <= bounds.loop_lag_s)
    verdicts["no_hang"] = _verdict(hang_ok, {"worst_shutdown_s": worst, "crashes": crashes, "longest_stall_s": stall,
                                             "worst_loop_lag_s": worst_lag},
                                   {"shutdown_s": bounds.shutdown_s, "stall_s": bounds.stall_s,
                                    "loop_lag_s": bounds.loop_lag_s},
                                   "every collector shutdown (restarts and the end) within the bound, no collector "
                                   "exit nobody asked for, its sampler never silent longer than the bound, worst "
                                   "event-loop lag within the bound")
    return verdicts


def _fault_problem(f: FaultRecord, b: Bounds) -> str | None:
    """Why a fault fails its check, or None."""
    if f.error:
        return f.error
    if f.kind in ("scenario", "alertmanager_outage"):
        if not f.alert_required and f.raised_at is None:
            if f.removed_at is None:
                return "not removed (run ended)"
            return None if f.rejected_values else "no value rejected while the fault was on"
        if f.raised_at is None or f.raised_at - f.injected_at > b.raise_s:
            return "no alert raised in time" if f.raised_at is None else f"raised after {f.raised_at - f.injected_at:.0f} s"
        if f.am_required:
            if f.am_raised_at is None:
                return "never reached Alertmanager"
            if f.needs_am_after is not None and f.am_raised_at < f.needs_am_after:
                return "not seen in Alertmanager after its outage"
        if f.removed_at is None:
            return "not removed (run ended)"
        if f.cleared_at is None or f.cleared_at - f.removed_at > b.clear_s:
            return "not cleared in time" if f.cleared_at is None else f"cleared after {f.cleared_at - f.removed_at:.0f} s"
        if f.am_required and (f.am_cleared_at is None or f.am_cleared_at - f.removed_at > b.clear_s):
            return "still active in Alertmanager"
        return None
    if f.kind == "collector_restart" and (f.shutdown_s is None or f.shutdown_s > b.shutdown_s):
        return "collector did not stop" if f.shutdown_s is None else f"shutdown took {f.shutdown_s:.1f} s"
    if f.recovered_at is None:
        return "did not recover"
    if f.kind == "influx_outage" and f.removed_at is not None and f.recovered_at - f.removed_at > b.drain_s:
        return f"spool drained after {f.recovered_at - f.removed_at:.0f} s"
    return None


# -- /proc ----------------------------------------------------------------------------------------------

def proc_figures(pid: int) -> dict[str, float] | None:
    """RSS (MiB), CPU seconds (user + system), open fds and threads of ``pid``; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        return None
    # fields[0] is field 3 (state): utime is field 14, stime 15, num_threads 20, rss (pages) 24.
    return {"cpu_s": (int(fields[11]) + int(fields[12])) / _CLK_TCK, "threads": int(fields[17]),
            "rss_mib": int(fields[21]) * _PAGE / _MIB, "open_fds": fds}


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- the collector child: start_app as `cascade run` does, plus an in-process sampler --------------------

def _collector_child(config_path: str, stats_path: str, sample_s: float) -> int:
    """Run the collector from ``config_path`` until SIGTERM; append a JSON line of in-process figures to
    ``stats_path`` every ``sample_s`` and a final one (``"final": true``) after shutdown."""
    from cascade.app import start_app
    from cascade.config import load_config
    from exporters.prometheus import PipelineMetrics

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    durations: list[float] = []
    counts = {"polls": 0, "failures": 0, "cabinet_readings": 0}
    # Measurement hooks on the class, before start_app builds its instance: exact per-poll durations
    # (the histogram's buckets are too coarse for a p95) and a count of cabinet readings.
    done, failed, observe = PipelineMetrics.poll_done, PipelineMetrics.poll_failed, PipelineMetrics.observe

    def poll_done(self: PipelineMetrics, device: str, duration_s: float) -> None:
        durations.append(duration_s)
        counts["polls"] += 1
        done(self, device, duration_s)

    def poll_failed(self: PipelineMetrics, device: str, kind: str, duration_s: float) -> None:
        counts["failures"] += 1
        failed(self, device, kind, duration_s)

    def observe_reading(self: PipelineMetrics, reading: Any, *args: Any, **kwargs: Any) -> None:
        counts["cabinet_readings"] += 1
        observe(self, reading, *args, **kwargs)

    PipelineMetrics.poll_done = poll_done  # type: ignore[method-assign]
    PipelineMetrics.poll_failed = poll_failed  # type: ignore[method-assign]
    PipelineMetrics.observe = observe_reading  # type: ignore[method-assign]
    config = load_config(config_path)
    out = open(stats_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below, after the final line
    lags: list[float] = []

    def line(pipeline: Any, **extra: Any) -> None:
        sink = pipeline.sink.stats if pipeline.sink is not None else None
        polled = list(durations)
        durations.clear()
        lag = list(lags)
        lags.clear()
        row = {"t": time.time(), "pid": os.getpid(), "readings_total": pipeline.readings_total, **counts,
               "rejected_values": pipeline.field_errors_total,
               "poll_p50_ms": _ms(_percentile(polled, 0.5)), "poll_p95_ms": _ms(_percentile(polled, 0.95)),
               "poll_p99_ms": _ms(_percentile(polled, 0.99)),
               "poll_max_ms": _ms(max(polled) if polled else None), "window_polls": len(polled),
               "loop_lag_max_ms": _ms(max(lag) if lag else None),
               "loop_lag_mean_ms": _ms(statistics.fmean(lag) if lag else None),
               "alerts_active": len(pipeline.alerts.active_alerts()) if pipeline.alerts is not None else None,
               **({} if sink is None else {
                   "buffered_lines": sink.buffered_lines, "spool_lines": sink.spool_lines,
                   "spool_bytes": sink.spool_bytes, "lines_written": sink.lines_written,
                   "lines_dropped": sink.lines_dropped, "lines_spooled": sink.lines_spooled,
                   "lines_replayed": sink.lines_replayed, "lines_rejected": sink.lines_rejected,
                   "write_lag_s": None if sink.write_lag_s is None else round(sink.write_lag_s, 3)}), **extra}
        out.write(json.dumps(row) + "\n")
        out.flush()

    async def lag_probe() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.1)
            lags.append(max(0.0, time.monotonic() - before - 0.1))

    async def run() -> None:
        pipeline = None
        try:
            async with start_app(config) as pipeline:
                probe = asyncio.create_task(lag_probe(), name="soak-lag-probe")
                try:
                    while True:
                        await asyncio.sleep(sample_s)
                        line(pipeline, tasks=len(asyncio.all_tasks()))
                finally:
                    probe.cancel()
                    await asyncio.gather(probe, return_exceptions=True)
        finally:
            if pipeline is not None:
                line(pipeline, final=True)

    async def runner() -> int:
        task = asyncio.create_task(run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return 0

    try:
        return asyncio.run(runner())
    finally:
        out.close()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


# -- the stack ------------------------------------------------------------------------------------------

class _Collector:
    """One collector child process at a time; ``run`` counts them (a CSV column)."""

    def __init__(self, workdir: Path, config: Path, sample_s: float) -> None:
        self.workdir, self.config, self.sample_s = workdir, config, sample_s
        self.stats_path = workdir / "collector-stats.jsonl"
        self.proc: subprocess.Popen | None = None
        self.run = 0
        self.finals: list[dict[str, Any]] = []  # final line of each run
        self.lasts: list[dict[str, Any]] = []  # last line of each run (for a run that died)
        self.crashes = 0
        self.shutdowns: list[float] = []
        self._offset = 0
        self.last_line_at: float | None = None
        self.longest_gap = 0.0

    def start(self) -> None:
        self.run += 1
        log_file = open(self.workdir / f"collector-{self.run}.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.soak", "--collector-child", str(self.config), "--stats",
             str(self.stats_path), "--sample", str(self.sample_s)],
            cwd=_REPO, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **_CHILD_ENV})
        log_file.close()
        self.last_line_at = time.monotonic()
        self.lasts.append({})

    def stop(self, bound_s: float) -> float | None:
        """SIGTERM and wait; seconds until it exited (SIGKILL after 2 x ``bound_s``: then None)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is not None:
            self.crashes += 1
            self.read_lines()
            return None
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=2 * bound_s)
            took: float | None = time.monotonic() - started
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            took = None
        self.shutdowns.append(took if took is not None else float("inf"))
        self.read_lines()
        return took

    def alive(self) -> bool:
        if self.proc is None:
            return False
        if self.proc.poll() is not None:
            log.error("collector run %d exited by itself (status %s): see collector-%d.log", self.run,
                      self.proc.returncode, self.run)
            self.crashes += 1
            self.proc = None
            return False
        return True

    def read_lines(self) -> list[dict[str, Any]]:
        """New sample lines of the child since the last call."""
        try:
            with open(self.stats_path, encoding="utf-8") as f:
                f.seek(self._offset)
                text = f.read()
        except FileNotFoundError:
            return []
        complete = text[: text.rfind("\n") + 1]
        self._offset += len(complete.encode())
        rows = [json.loads(x) for x in complete.splitlines() if x.strip()]
        now = time.monotonic()
        for row in rows:
            if self.last_line_at is not None and self.proc is not None:
                self.longest_gap = max(self.longest_gap, now - self.last_line_at)
            self.last_line_at = now
            self.lasts[-1] = row
            if row.get("final"):
                self.finals.append(row)
        return [r for r in rows if not r.get("final")]

    def stalled_for(self) -> float:
        if self.proc is None or self.last_line_at is None:
            return 0.0
        return time.monotonic() - self.last_line_at

    def totals(self) -> dict[str, int]:
        """Sums over every run (the final line, or the last one of a run that died)."""
        lasts = [r for r in self.lasts if r]
        return {key: sum(int(r.get(key) or 0) for r in lasts)
                for key in ("readings_total", "cabinet_readings", "lines_dropped", "polls", "failures")}


async def _get_json(session: Any, url: str, timeout_s: float = 5.0) -> Any:
    import aiohttp
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        resp.raise_for_status()
        return await resp.json()


def _alert_cabinet(key: str) -> str | None:
    """``rule@site/cabinet[/slot]`` -> cabinet."""
    parts = key.split("@", 1)[-1].split("/")
    return parts[1] if len(parts) > 1 else None


class Soak:
    """The soak run: ``await Soak(options, workdir, out).run()`` returns the summary."""

    def __init__(self, opts: argparse.Namespace, workdir: Path, out: Path) -> None:
        self.o = opts
        self.workdir = workdir
        self.out = out
        self.bounds = opts.bounds
        self.t0 = time.monotonic()
        self.faults: list[FaultRecord] = []
        self.samples: list[dict[str, Any]] = []
        self.collector_alerts: list[dict[str, Any]] | None = None
        self.am_alerts: list[dict[str, Any]] | None = None
        self.first_seen: dict[str, tuple[float, str | None]] = {}
        self._targets: list[str] = []
        self._next_target = 0
        self._fault_tasks: list[asyncio.Task] = []
        self._readings_at: tuple[float, int] | None = None
        self._cpu_at: dict[str, tuple[float, float]] = {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    # ---- start-up

    def _start_services(self, stack: contextlib.ExitStack) -> None:
        from notifier import render_alertmanager_config
        from simulators.fleet import free_port_block
        from tests.fixtures.influxdb import InfluxDB
        from tests.fixtures.procs import ServerProcess, find_binary, free_port

        w = self.workdir
        (w / "influxdb").mkdir()
        self.influx = InfluxDB(w / "influxdb")
        self.influx.start()
        stack.callback(self.influx.stop)

        am_dir = w / "alertmanager"
        (am_dir / "data").mkdir(parents=True)
        shipped = (_REPO / "provisioning" / "alertmanager" / "alertmanager.yml").read_text()
        (am_dir / "alertmanager.yml").write_text(render_alertmanager_config(shipped, self.webhook_url))
        am_port = free_port()
        self.am_url = f"http://127.0.0.1:{am_port}"
        binary = find_binary(_ALERTMANAGER) or find_binary("alertmanager")
        if binary is None:
            raise RuntimeError("prometheus-alertmanager not found: run `make deps`")
        self.am = ServerProcess([binary, f"--config.file={am_dir / 'alertmanager.yml'}",
                                 f"--storage.path={am_dir / 'data'}", f"--web.listen-address=127.0.0.1:{am_port}",
                                 "--cluster.listen-address="], am_dir, ready_url=f"{self.am_url}/-/ready")
        self.am.start()
        stack.callback(self.am.stop)

        base = free_port_block(self.o.cabinets)
        control = free_port()
        self.control_url = f"http://127.0.0.1:{control}"
        fleet_file = w / "fleet.yaml"
        self.sim = ServerProcess(
            [sys.executable, "-m", "cascade.cli", "simulate", "--cabinets", str(self.o.cabinets), "--slots",
             str(self.o.slots), "--port", str(base), "--per-port", "1", "--control-port", str(control),
             "--fleet-file", str(fleet_file), "--seed", "0"], w, ready_url=f"{self.control_url}/health",
            env=_CHILD_ENV, ready_timeout_s=120)
        self.sim.log_path = w / "simulator.log"
        self.sim.start()
        stack.callback(self.sim.stop)
        import yaml
        self._targets = [c["id"] for c in yaml.safe_load(fleet_file.read_text())["cabinets"]]

        metrics_port = free_port()
        self.collector_url = f"http://127.0.0.1:{metrics_port}"
        config = {
            "fleet_files": ["fleet.yaml"],
            "defaults": {"interval_s": self.o.interval, "timeout_s": 2},
            "poll": {"jitter": 0.1, "backoff_cap_s": 60},
            "influxdb": {"url": self.influx.url, "api": "v1", "database": "cascade", "spool_dir": "spool"},
            "metrics": {"host": "127.0.0.1", "port": metrics_port},
            "status_interval_s": 60,
            "alerting": {"enabled": True, "state_file": "alerts.json", "audit_file": "threshold-audit.jsonl",
                         "alertmanager_url": self.am_url, "resend_interval_s": 60},
        }
        (w / "collector.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.collector = _Collector(w, w / "collector.yaml", self.o.sample)
        self.collector.start()

    # ---- sampling

    async def _poll_alerts(self, session: Any) -> None:
        try:
            self.collector_alerts = (await _get_json(session, f"{self.collector_url}/api/alerts"))["alerts"]
        except Exception:  # noqa: BLE001 - down during a restart: no verdict from this round
            self.collector_alerts = None
        try:
            self.am_alerts = await _get_json(session, f"{self.am_url}/api/v2/alerts")
        except Exception:  # noqa: BLE001 - down during its outage
            self.am_alerts = None
        now = self.now()
        if self.collector_alerts is not None:
            for alert in self.collector_alerts:
                self.first_seen.setdefault(alert["key"], (now, _alert_cabinet(alert["key"])))
        for f in self.faults:
            if f.target is None or not f.open:
                continue
            if self.collector_alerts is not None:
                mine = [a["key"] for a in self.collector_alerts if _alert_cabinet(a["key"]) == f.target]
                f.alerts = sorted(set(f.alerts) | set(mine))
                if mine and f.raised_at is None:
                    f.raised_at = now
                if not mine and f.raised_at is not None and f.removed_at is not None and f.cleared_at is None:
                    f.cleared_at = now
            if self.am_alerts is not None:
                in_am = [a for a in self.am_alerts if a.get("labels", {}).get("cabinet") == f.target]
                if in_am and f.am_raised_at is None and (f.needs_am_after is None or now >= f.needs_am_after):
                    f.am_raised_at = now
                if (not in_am and f.am_raised_at is not None and f.removed_at is not None
                        and f.am_cleared_at is None):
                    f.am_cleared_at = now

    def _cpu_pct(self, name: str, cpu_s: float) -> float | None:
        now = time.monotonic()
        before = self._cpu_at.get(name)
        self._cpu_at[name] = (now, cpu_s)
        if before is None or now <= before[0] or cpu_s < before[1]:
            return None
        return round(100 * (cpu_s - before[1]) / (now - before[0]), 2)

    def _sample(self, child: dict[str, Any] | None, writer: Any) -> None:
        row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS)
        row["t_s"] = round(self.now(), 2)
        row["collector_run"] = self.collector.run
        pid = self.collector.proc.pid if self.collector.proc else None
        figures = proc_figures(pid) if pid else None
        if figures:
            row.update(rss_mib=round(figures["rss_mib"], 2), open_fds=figures["open_fds"],
                       threads=figures["threads"], cpu_pct=self._cpu_pct(f"collector-{self.collector.run}",
                                                                         figures["cpu_s"]))
        sim = proc_figures(self.sim.proc.pid) if self.sim.proc else None
        if sim:
            row.update(sim_cpu_pct=self._cpu_pct("sim", sim["cpu_s"]), sim_rss_mib=round(sim["rss_mib"], 2))
        if child:
            for key in ("tasks", "loop_lag_max_ms", "loop_lag_mean_ms", "poll_p50_ms", "poll_p95_ms", "poll_p99_ms",
                        "poll_max_ms", "buffered_lines", "spool_lines", "spool_bytes", "lines_written", "lines_dropped",
                        "write_lag_s"):
                row[key] = child.get(key)
            row["polls"] = child.get("window_polls")
            row["poll_failures"] = child.get("failures")
            total = sum(int(r.get("readings_total") or 0) for r in self.collector.lasts[:-1]) + child["readings_total"]
            row["readings_total"] = total
            now = time.monotonic()
            if self._readings_at is not None and now > self._readings_at[0] and total >= self._readings_at[1]:
                row["readings_per_s"] = round((total - self._readings_at[1]) / (now - self._readings_at[0]), 1)
            self._readings_at = (now, total)
        row["alerts_active"] = None if self.collector_alerts is None else len(self.collector_alerts)
        row["alertmanager_alerts"] = None if self.am_alerts is None else len(self.am_alerts)
        row["faults_active"] = " ".join(f.name for f in self.faults if f.open) or ""
        writer.writerow(row)
        self.samples.append(row)

    # ---- faults

    def _pick_target(self) -> str | None:
        busy = {f.target for f in self.faults if f.open}
        alerting = {_alert_cabinet(a["key"]) for a in self.collector_alerts or []}
        for _ in range(len(self._targets)):
            cabinet = self._targets[self._next_target % len(self._targets)]
            self._next_target += 1
            if cabinet not in busy and cabinet not in alerting:
                return cabinet
        return None

    async def _scenario(self, session: Any, rec: FaultRecord, scenario: str, hold_s: float,
                        before_remove: Any = None) -> None:
        import yaml
        doc = yaml.safe_load((_SCENARIOS / f"{scenario}.yaml").read_text())
        target = self._pick_target()
        if target is None:
            rec.error = "no cabinet free of alerts to inject into"
            return
        doc["target"]["cabinet"] = rec.target = target
        speed = _SPEED.get(scenario, _DEFAULT_SPEED)
        async with session.post(f"{self.control_url}/scenarios?speed={speed:g}",
                                data=yaml.safe_dump(doc, sort_keys=False).encode(),
                                headers={"X-Scenario-File": f"{scenario}.yaml"}) as resp:
            body = await resp.json()
            if resp.status != 201:
                rec.error = f"simulator refused the scenario: {body}"
                return
        rec.injected_at, injected_wall = self.now(), time.time()
        rejected_before = self._rejected()
        await asyncio.sleep(hold_s)
        if before_remove is not None:
            await before_remove()
        async with session.delete(f"{self.control_url}/scenarios/{body['id']}") as resp:
            await resp.read()
        rec.removed_at = self.now()
        rec.rejected_values = self._rejected() - rejected_before
        # The engineer closes the relays once the fault's safety alerts are gone, as Cascade's own command
        # API demands (no re-energising while a level 2 or 3 alert of the cabinet is active); a level-1
        # notice (a pack left nearly empty by the cut-off: soc_low) clears only once it charges again.
        deadline = time.monotonic() + self.bounds.clear_s
        while time.monotonic() < deadline and (self.collector_alerts is None or any(
                _alert_cabinet(a["key"]) == rec.target and int(a.get("level", 0)) >= 2
                for a in self.collector_alerts)):
            await asyncio.sleep(1)
        await self._site_reset(session, rec, since=injected_wall)
        deadline = time.monotonic() + self.bounds.clear_s + 10
        while rec.open and rec.raised_at is not None and time.monotonic() < deadline:  # nothing raised: failed
            await asyncio.sleep(1)

    async def _site_reset(self, session: Any, rec: FaultRecord, *, since: float) -> None:
        """The engineer on site, once the fault is gone: closes again every slot relay Cascade opened on
        the target (its protective actions latch; nothing in Cascade re-enables charging by itself).
        Without this, a cut-off cabinet keeps its packs uncharged for the rest of the run, and a pack
        docked nearly empty there raises a true ``soc_low`` long after the fault: a real condition of
        the fleet, not a false alarm, but one that says nothing about the next fault."""
        try:
            actions = (await _get_json(session, f"{self.collector_url}/api/actions?limit=500"))["actions"]
        except Exception as err:  # noqa: BLE001 - collector restarting: the cut-off stays, the log says so
            log.warning("site reset of %s: cannot read the collector's actions: %s", rec.target, err)
            return
        slots = sorted({int(a["slot"]) for a in actions
                        if a["cabinet"] == rec.target and a["command"] == "slot_output" and a["value"] == 0
                        and a["result"] == "ok" and a["slot"] is not None and float(a["at"]) >= since - 1})
        import yaml
        for slot in slots:
            doc = {"name": "site_reset", "description": "The engineer closes the slot relay again on site.",
                   "target": {"cabinet": rec.target, "slot": slot}, "steps": [{"at": "0s", "output": True}]}
            try:
                async with session.post(f"{self.control_url}/scenarios",
                                        data=yaml.safe_dump(doc, sort_keys=False).encode()) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status != 201:
                        log.warning("site reset of %s slot %d refused by the simulator: %s", rec.target, slot, body)
                        continue
                async with session.delete(f"{self.control_url}/scenarios/{body['id']}") as resp:
                    await resp.read()
            except Exception as err:  # noqa: BLE001 - the relay stays open; the log says so, the soak goes on
                log.warning("site reset of %s slot %d failed: %s", rec.target, slot, err)
                continue
            rec.reset_slots.append(slot)
        if rec.reset_slots:
            log.info("  %6.0f s: site reset of %s: %s %s closed again", self.now(), rec.target,
                     "slot" if len(rec.reset_slots) == 1 else "slots", ",".join(map(str, rec.reset_slots)))

    def _rejected(self) -> int:
        """Values rejected while decoding, over every collector run so far."""
        return sum(int(r.get("rejected_values") or 0) for r in self.collector.lasts)

    async def _influx_outage(self, rec: FaultRecord) -> None:
        await asyncio.to_thread(self.influx.stop)
        await asyncio.sleep(self.o.outage)
        await asyncio.to_thread(self.influx.start)
        rec.removed_at = self.now()
        back_at = time.time()
        deadline = time.monotonic() + self.bounds.drain_s + 10
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            # A sample taken after InfluxDB came back, with nothing left in the spool.
            last = self.collector.lasts[-1] if self.collector.lasts else {}
            if last.get("t", 0) > back_at and last.get("spool_lines") == 0:
                rec.recovered_at = self.now()
                return

    async def _collector_restart(self, rec: FaultRecord) -> None:
        rec.shutdown_s = await asyncio.to_thread(self.collector.stop, self.bounds.shutdown_s)
        rec.removed_at = self.now()
        self.collector.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            last = self.collector.lasts[-1] if self.collector.lasts else {}
            if last.get("polls", 0) > 0:
                rec.recovered_at = self.now()
                return

    async def _am_outage(self, session: Any, rec: FaultRecord, scenario: str) -> None:
        await asyncio.to_thread(self.am.stop)
        rec.needs_am_after = self.now() + self.o.outage

        async def back() -> None:  # the scenario stays until Alertmanager has had the alert back
            deadline = time.monotonic() + self.bounds.raise_s + 30
            while rec.am_raised_at is None and time.monotonic() < deadline:
                await asyncio.sleep(1)

        async def restart_later() -> None:
            await asyncio.sleep(self.o.outage)
            await asyncio.to_thread(self.am.start)
            rec.recovered_at = self.now()

        restarter = asyncio.create_task(restart_later())
        try:
            await self._scenario(session, rec, scenario, self.o.outage, before_remove=back)
        finally:
            await restarter

    def _inject(self, session: Any, spec: str) -> None:
        kind, _, name = spec.partition(":")
        rec = FaultRecord(kind=kind, name=spec, injected_at=self.now())
        if kind == "scenario":
            rec.alert_required = name not in _QUIET
            coro = self._scenario(session, rec, name, self.o.hold)
        elif kind == "influx_outage":
            coro = self._influx_outage(rec)
            rec.target = None
        elif kind == "collector_restart":
            coro = self._collector_restart(rec)
        elif kind == "alertmanager_outage":
            rec.name = f"alertmanager_outage+{name or 'water_ingress'}"
            coro = self._am_outage(session, rec, name or "water_ingress")
        else:
            raise ValueError(spec)
        self.faults.append(rec)
        log.info("%6.0f s: injecting %s", rec.injected_at, spec)

        async def guarded() -> None:
            try:
                await coro
            except Exception as err:  # noqa: BLE001 - recorded as the fault's failure, the soak goes on
                rec.error = f"{type(err).__name__}: {err}"
                log.exception("fault %s failed", spec)
        self._fault_tasks.append(asyncio.create_task(guarded(), name=f"fault:{spec}"))

    def _fault_length(self, spec: str) -> float:
        """Seconds from injection until the fault is removed: it is injected only if that falls within
        --duration; its clear (or drain) is then watched during --settle."""
        if spec.startswith("scenario:"):
            return self.o.hold
        if spec.startswith("alertmanager_outage"):
            return self.o.outage + 30
        return self.o.outage if spec == "influx_outage" else 30.0

    # ---- the run

    async def run(self) -> dict[str, Any]:
        import aiohttp

        from bench.latency import WebhookReceiver

        self.out.mkdir(parents=True, exist_ok=True)
        csv_file = open(self.out / "samples.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115
        writer = csv.DictWriter(csv_file, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        totals: dict[str, Any] = {}
        with contextlib.ExitStack() as stack:
            stack.callback(csv_file.close)
            async with WebhookReceiver() as rx, aiohttp.ClientSession() as session:
                self.webhook_url = rx.url
                await asyncio.to_thread(self._start_services, stack)
                stack.callback(lambda: self.collector.stop(self.bounds.shutdown_s))
                self.t0 = time.monotonic()
                log.info("soak: %d cabinets x %d slots every %g s for %g s; workdir %s, output %s",
                         self.o.cabinets, self.o.slots, self.o.interval, self.o.duration, self.workdir, self.out)
                await self._loop(session, writer, csv_file)
                totals = await self._finish(session, writer, csv_file)
                totals["webhook_notifications"] = len(rx.alerts())
        return totals

    async def _loop(self, session: Any, writer: Any, csv_file: Any) -> None:
        next_sample = self.o.sample
        next_fault = self.o.first_fault
        fault_index = 0
        while self.now() < self.o.duration:  # bounded by the duration: one turn a second
            await asyncio.sleep(1)
            await self._poll_alerts(session)
            rows = self.collector.read_lines() if self.collector.alive() else []
            for row in rows:
                self._sample(row, writer)
            if not rows and self.collector.proc is not None and self.collector.stalled_for() > 2 * self.o.sample + 5 \
                    and self.now() >= next_sample:
                self._sample(None, writer)  # the child is silent: record the /proc side anyway
            if rows or self.now() >= next_sample:
                next_sample = self.now() + self.o.sample
                csv_file.flush()
            if self.o.faults and self.now() >= next_fault:
                spec = self.o.faults[fault_index % len(self.o.faults)]
                if self.now() + self._fault_length(spec) <= self.o.duration:
                    self._inject(session, spec)
                fault_index += 1
                next_fault += self.o.fault_every

    async def _finish(self, session: Any, writer: Any, csv_file: Any) -> dict[str, Any]:
        # Let the faults finish (each bounds itself), sampling meanwhile.
        deadline = time.monotonic() + self.o.settle
        while any(not t.done() for t in self._fault_tasks) and time.monotonic() < deadline:
            await asyncio.sleep(1)
            await self._poll_alerts(session)
            for row in self.collector.read_lines() if self.collector.alive() else []:
                self._sample(row, writer)
        for task in self._fault_tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._fault_tasks, return_exceptions=True)
        for rec in self.faults:
            if rec.open and rec.error is None and rec.kind != "scenario":
                rec.error = "still open when the soak ended"
        csv_file.flush()
        took = await asyncio.to_thread(self.collector.stop, self.bounds.shutdown_s)
        log.info("final collector shutdown took %s s", "more than the bound" if took is None else f"{took:.2f}")
        counts = await asyncio.to_thread(self._count_stored)
        sums = self.collector.totals()
        unexpected = self._unexpected_alerts()
        return {"offered_slot_readings": sums["readings_total"], "offered_cabinet_readings": sums["cabinet_readings"],
                "stored_slot_points": counts["slot"], "stored_cabinet_points": counts["cabinet"],
                "lines_dropped": sums["lines_dropped"], "polls": sums["polls"], "poll_failures": sums["failures"],
                "full_polls": sums["cabinet_readings"],  # polls of the whole register map (the rest: fast lane)
                "expected_polls": round(self.o.cabinets * self.now() / self.o.interval),
                "shutdowns_s": [round(s, 3) for s in self.collector.shutdowns],
                "crashes": self.collector.crashes, "stalls_s": round(self.collector.longest_gap, 2),
                "collector_runs": self.collector.run, "unexpected_alerts": unexpected, "final_shutdown_s": took}

    def _unexpected_alerts(self) -> list[str]:
        """Alert keys first seen on a cabinet no fault was targeting at that time (the offline alarm of a
        collector restart's gap included: that is a finding, not noise)."""
        out = []
        for key, (seen, cabinet) in sorted(self.first_seen.items()):
            windows = [(f.injected_at, (f.cleared_at or f.removed_at or self.now()) + 5) for f in self.faults
                       if f.target == cabinet]
            if not any(start - 5 <= seen <= end for start, end in windows):
                out.append(f"{key}@{seen:.0f}s")
        return out

    def _count_stored(self) -> dict[str, int]:
        """Points per measurement in InfluxDB: the largest per-field count (every point has one field set)."""
        counts = {}
        for measurement in ("slot", "cabinet"):
            params = urllib.parse.urlencode({"db": "cascade", "q": f'SELECT count(*) FROM "{measurement}"'})
            with urllib.request.urlopen(f"{self.influx.url}/query?{params}", timeout=600) as resp:
                body = json.load(resp)
            series = body["results"][0].get("series") or [{"values": [[0, 0]]}]
            counts[measurement] = max(int(v or 0) for v in series[0]["values"][0][1:])
        return counts


# -- outputs ---------------------------------------------------------------------------------------------

def summarize(samples: Sequence[dict[str, Any]], key: str) -> dict[str, float | None]:
    values = [v for r in samples if (v := _num(r, key)) is not None]
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def write_plot(samples: Sequence[dict[str, Any]], faults: Sequence[FaultRecord], path: Path, title: str) -> bool:
    """The curves as a PNG; False (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [float(r["t_s"]) / 60 for r in samples]

    def series(key: str) -> list[float]:
        return [v if (v := _num(r, key)) is not None else float("nan") for r in samples]

    panels = [("collector RSS (MiB)", [("rss_mib", "RSS")]),
              ("poll latency (ms)", [("poll_p50_ms", "p50"), ("poll_p95_ms", "p95"), ("poll_p99_ms", "p99"),
                                     ("poll_max_ms", "max")]),
              ("event-loop lag (ms)", [("loop_lag_max_ms", "max"), ("loop_lag_mean_ms", "mean")]),
              ("CPU (% of one core)", [("cpu_pct", "collector"), ("sim_cpu_pct", "simulator")]),
              ("slot readings/s", [("readings_per_s", "slot readings/s")]),
              ("spool (lines)", [("spool_lines", "spool"), ("buffered_lines", "in memory")]),
              ("fds, tasks, alerts", [("open_fds", "open fds"), ("tasks", "asyncio tasks"),
                                      ("alerts_active", "active alerts")])]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.3 * len(panels)), sharex=True)
    for ax, (label, keys) in zip(axes, panels):
        for key, name in keys:
            ax.plot(t, series(key), label=name, linewidth=0.9)
        for f in faults:
            end = f.cleared_at or f.recovered_at or f.removed_at or f.injected_at + 1
            ax.axvspan(f.injected_at / 60, end / 60, color="tab:orange" if f.kind == "scenario" else "tab:red",
                       alpha=0.12, linewidth=0)
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    axes[0].set_title(title, fontsize=9)
    axes[-1].set_xlabel("minutes (shaded: faults, red = outages and restarts)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


async def run_soak(opts: argparse.Namespace, workdir: Path, out: Path) -> dict[str, Any]:
    """Run the soak described by ``opts`` (see ``main``); write the outputs to ``out``; return the summary."""
    soak = Soak(opts, workdir, out)
    started = time.time()
    totals = await soak.run()
    verdicts = evaluate(soak.samples, soak.faults, totals, opts.bounds, opts.duration)
    steady = soak.samples
    summary = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "options": {"duration_s": opts.duration, "cabinets": opts.cabinets, "slots": opts.slots,
                    "interval_s": opts.interval, "sample_s": opts.sample, "fault_every_s": opts.fault_every,
                    "faults": list(opts.faults), "hold_s": opts.hold, "outage_s": opts.outage},
        "bounds": asdict(opts.bounds),
        "pass": all(v["pass"] for v in verdicts.values()),
        "verdicts": verdicts,
        "totals": totals,
        "figures": {key: summarize(steady, key) for key in
                    ("rss_mib", "cpu_pct", "sim_cpu_pct", "open_fds", "threads", "tasks", "poll_p50_ms", "poll_p95_ms",
                     "poll_p99_ms", "poll_max_ms", "loop_lag_max_ms", "readings_per_s", "spool_lines", "write_lag_s",
                     "alerts_active")},
        "faults": [asdict(f) for f in soak.faults],
        "samples": len(soak.samples),
    }
    summary["plot"] = "soak.png" if write_plot(
        soak.samples, soak.faults, out / "soak.png",
        f"soak {opts.duration / 60:.0f} min, {opts.cabinets} cabinets x {opts.slots} slots every {opts.interval:g} s"
        f" - {'PASS' if summary['pass'] else 'FAIL'}") else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _duration(text: str) -> float:
    from core.durations import DurationError, parse_duration
    try:
        return parse_duration(text)
    except DurationError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=_duration, default=7200.0, help="how long to run: 2h, 90m, 600 (default 2h)")
    p.add_argument("--cabinets", type=int, default=100, help="simulated cabinets, 1-1000 (default 100)")
    p.add_argument("--slots", type=int, default=12)
    p.add_argument("--interval", type=_duration, default=5.0, help="poll interval (default 5s, as shipped)")
    p.add_argument("--sample", type=_duration, default=10.0, help="sampling period (default 10s)")
    p.add_argument("--fault-every", type=_duration, default=180.0, help="one fault every ... (default 3m)")
    p.add_argument("--first-fault", type=_duration, default=None, help="first fault at (default: --fault-every)")
    p.add_argument("--faults", default=",".join(DEFAULT_FAULTS),
                   help="comma list, cycled: scenario:NAME, influx_outage, collector_restart, "
                        "alertmanager_outage[:SCENARIO]; '' for none (default: %(default)s)")
    p.add_argument("--hold", type=_duration, default=60.0, help="a scenario stays this long (default 60s)")
    p.add_argument("--outage", type=_duration, default=60.0, help="InfluxDB / Alertmanager down for (default 60s)")
    p.add_argument("--settle", type=_duration, default=None,
                   help="after --duration, wait at most this long for the last faults to clear or drain "
                        "(default: the clear bound + 60s)")
    p.add_argument("--out", type=Path, default=Path("var/soak"), help="output directory (default var/soak)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the services' state and logs here "
                   "(default: a temporary directory, removed at the end)")
    p.add_argument("--max-rss-growth", type=float, default=Bounds.rss_slope_mib_per_h, help="MiB/h (default %(default)s)")
    p.add_argument("--warmup", type=_duration, default=Bounds.warmup_s, help="of each collector run (default 10m)")
    p.add_argument("--shutdown-bound", type=_duration, default=Bounds.shutdown_s)
    p.add_argument("--collector-child", help=argparse.SUPPRESS)
    p.add_argument("--stats", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.collector_child:
        return _collector_child(args.collector_child, args.stats, args.sample)
    if not 1 <= args.cabinets <= 1000:
        parser.error("--cabinets must be between 1 and 1000")
    if not 60 <= args.duration <= 7 * 86400:
        parser.error("--duration must be between 60s and 7 days")
    if args.interval <= 0 or args.sample < max(1.0, args.interval) or args.fault_every < 10:
        parser.error("--interval must be > 0, --sample >= max(1s, interval), --fault-every >= 10s")
    faults = tuple(x.strip() for x in args.faults.split(",") if x.strip())
    for spec in faults:
        kind, _, name = spec.partition(":")
        if kind not in ("scenario", "influx_outage", "collector_restart", "alertmanager_outage"):
            parser.error(f"--faults: unknown fault {spec!r}; use scenario:NAME, influx_outage, collector_restart "
                         "or alertmanager_outage[:NAME]")
        if (kind == "scenario" or name) and not (_SCENARIOS / f"{name}.yaml").is_file():
            known = ", ".join(sorted(p.stem for p in _SCENARIOS.glob("*.yaml")))
            parser.error(f"--faults: no shipped scenario {name!r}; known: {known}")
    args.faults = faults
    args.first_fault = args.fault_every if args.first_fault is None else args.first_fault
    args.bounds = Bounds(rss_slope_mib_per_h=args.max_rss_growth, warmup_s=args.warmup,
                         shutdown_s=args.shutdown_bound)
    args.settle = args.bounds.clear_s + 60 if args.settle is None else args.settle
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    def _terminated(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds the stack: every service stopped, nothing orphaned

    signal.signal(signal.SIGTERM, _terminated)
    out = args.out.resolve()
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cascade-soak-")))
        else:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=False)
        summary = asyncio.run(run_soak(args, workdir, out))
    _print(summary, out)
    return 0 if summary["pass"] else 1


def _print(summary: dict[str, Any], out: Path) -> None:
    o, t, fig = summary["options"], summary["totals"], summary["figures"]
    print(f"soak: {o['duration_s'] / 60:.0f} min, {o['cabinets']} cabinets x {o['slots']} slots every "
          f"{o['interval_s']:g} s, {len(summary['faults'])} faults, {summary['samples']} samples")
    for key in ("rss_mib", "cpu_pct", "sim_cpu_pct", "poll_p50_ms", "poll_p95_ms", "poll_p99_ms", "poll_max_ms",
                "loop_lag_max_ms", "open_fds", "tasks", "spool_lines", "write_lag_s"):
        f = fig[key]
        print(f"  {key:18} min {f['min']!s:>10} median {f['median']!s:>10} max {f['max']!s:>10}")
    print(f"  slot readings offered {t['offered_slot_readings']}, stored {t['stored_slot_points']}; cabinet readings "
          f"offered {t['offered_cabinet_readings']}, stored {t['stored_cabinet_points']}; full polls "
          f"{t['offered_cabinet_readings']} of {t['expected_polls']} expected; {t['polls']} polls including the safety "
          f"fast lane's, of which {t['poll_failures']} failed")
    for name, v in summary["verdicts"].items():
        print(f"  {'PASS' if v['pass'] else 'FAIL'}  {name:28} {json.dumps(v['value'], default=str)}  "
              f"(bound {json.dumps(v['bound'], default=str)})")
    print(f"{'PASS' if summary['pass'] else 'FAIL'}: {out / 'summary.json'}, {out / 'samples.csv'}"
          + (f", {out / summary['plot']}" if summary["plot"] else " (no PNG: pip install -r scripts/soak-requirements.txt)"))


if __name__ == "__main__":
    sys.exit(main())
