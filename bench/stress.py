"""Stress: step the fleet up until the collector falls behind, and report the knee.

    python -m bench stress                                   # 100, 200, 400, 800, 1600 cabinets
    python -m bench stress --steps 100,300,1000 --step-duration 90s --budget 20m --json stress.json

Each step is a fresh fleet: ``cascade simulate`` in ``--sim-workers`` processes (``--per-port``
cabinets per port) and the collector with the InfluxDB sink and the warning engine (Alertmanager
push off) in a child process started like ``cascade run``, writing to one real InfluxDB on loopback.
The first half of a step is warm-up (first polls are spread over one interval), the second half is
measured:

* offered slot readings/s (cabinets x slots / interval) against delivered (decoded and handed to
  the sink) and stored (slot lines InfluxDB acknowledged);
* poll latency p50 / p95 / max (exact, every poll of the window), failed polls;
* CPU, as a share of one core, of the collector and of the simulators **separately** (from /proc: the
  simulators share the machine's cores and would otherwise go unreported), and the collector's RSS;
* how long the collector took to stop (SIGTERM to exit).

A step passes when delivered >= 99 % of offered and poll p95 < the interval; the knee is the largest
passing fleet. Stepping stops after the first failing step, at ``--max-cabinets`` or when the next
step would pass ``--budget``. Prints a table; ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.collector import exit_on_sigterm, stop_simulators
from bench.soak import _Collector, _duration, proc_figures

__all__ = ["knee", "main", "run_stress"]

log = logging.getLogger("bench.stress")

DEFAULT_STEPS = (100, 200, 400, 800, 1600)
DELIVERED_SHARE = 0.99


def step_passes(step: dict[str, Any], interval_s: float) -> bool:
    """Delivered >= 99 % of offered and poll p95 below the interval."""
    p95 = step.get("poll_p95_s")
    return (step.get("delivered_per_s", 0) >= DELIVERED_SHARE * step["offered_per_s"]
            and p95 is not None and p95 < interval_s)


def knee(steps: list[dict[str, Any]]) -> int | None:
    """The largest fleet whose step passed, or None."""
    passing = [s["cabinets"] for s in steps if s["pass"]]
    return max(passing) if passing else None


def _measure_step(cabinets: int, opts: argparse.Namespace, workdir: Path, influx_url: str) -> dict[str, Any]:
    from bench.collector import _start_simulators

    stepdir = workdir / f"step-{cabinets}"
    stepdir.mkdir()
    workers = min(opts.sim_workers, max(1, cabinets // opts.per_port))
    started = time.monotonic()
    procs, fleet = _start_simulators(cabinets, opts.slots, opts.per_port, workers, stepdir, "reference-cabinet")
    half = opts.step_duration / 2
    collector = _Collector(stepdir, stepdir / "collector.yaml", half)
    try:
        (stepdir / "fleet.yaml").write_text(yaml.safe_dump({"cabinets": fleet}, sort_keys=False))
        config = {"fleet_files": ["fleet.yaml"], "defaults": {"interval_s": opts.interval, "timeout_s": 2},
                  "poll": {"jitter": 0.1, "backoff_cap_s": 60},
                  "influxdb": {"url": influx_url, "api": "v1", "database": "cascade", "spool_dir": "spool"},
                  "metrics": {"host": "127.0.0.1", "port": 0}, "status_interval_s": 0,
                  "alerting": {"enabled": True, "state_file": "alerts.json", "audit_file": "audit.jsonl",
                               "alertmanager_url": None}}
        (stepdir / "collector.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        collector.start()
        pid = collector.proc.pid if collector.proc else 0
        # /proc figures of the collector and of the simulators, taken as each sample line is read.
        cpu: dict[int, tuple[float, dict[str, float] | None, float]] = {}
        rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + opts.step_duration + 60
        while len(rows) < 2 and time.monotonic() < deadline and collector.alive():
            for row in collector.read_lines():
                mine = proc_figures(pid)
                sims = [f for p in procs if (f := proc_figures(p.pid))]
                cpu[len(rows)] = (time.monotonic(), mine, sum(f["cpu_s"] for f in sims))
                rows.append(row)
            time.sleep(0.2)
        shutdown_s = collector.stop(opts.shutdown_bound)
    finally:
        if collector.proc is not None:  # interrupted (Ctrl-C, SIGTERM) mid-step: no orphaned collector
            collector.stop(opts.shutdown_bound)
        stop_simulators(procs, timeout_s=15)
    offered = cabinets * opts.slots / opts.interval
    step: dict[str, Any] = {"cabinets": cabinets, "offered_per_s": offered, "sim_workers": len(procs),
                            "shutdown_s": None if shutdown_s is None else round(shutdown_s, 2),
                            "wall_s": round(time.monotonic() - started, 1),
                            "load_average_1m": round(os.getloadavg()[0], 2)}  # the machine's other load
    if len(rows) < 2:
        step.update({"pass": False, "error": f"collector gave {len(rows)} of 2 samples (see {stepdir})",
                     "delivered_per_s": 0.0, "poll_p95_s": None})
        return step
    (t1, proc1, sim1), (t2, proc2, sim2) = cpu[0], cpu[1]
    window = rows[1]["t"] - rows[0]["t"]
    wall = t2 - t1
    delivered = (rows[1]["readings_total"] - rows[0]["readings_total"]) / window
    lines_per_poll = 1 + opts.slots
    stored = (rows[1].get("lines_written", 0) - rows[0].get("lines_written", 0)) / window * opts.slots / lines_per_poll
    polls = rows[1]["polls"] - rows[0]["polls"]
    step.update({
        "window_s": round(window, 1), "delivered_per_s": round(delivered, 1), "stored_per_s": round(stored, 1),
        "delivered_share": round(delivered / offered, 4),
        "polls_per_s": round(polls / window, 1), "expected_polls_per_s": round(cabinets / opts.interval, 1),
        "poll_failures": rows[1]["failures"] - rows[0]["failures"],
        "poll_p50_s": _s(rows[1]["poll_p50_ms"]), "poll_p95_s": _s(rows[1]["poll_p95_ms"]),
        "poll_max_s": _s(rows[1]["poll_max_ms"]), "loop_lag_max_s": _s(rows[1]["loop_lag_max_ms"]),
        "collector_cpu_share": None if not (proc1 and proc2) else round((proc2["cpu_s"] - proc1["cpu_s"]) / wall, 3),
        "simulators_cpu_share": round((sim2 - sim1) / wall, 3),
        "collector_rss_mib": None if not proc2 else round(proc2["rss_mib"], 1),
        "collector_cpu_ms_per_1000_readings": None if not (proc1 and proc2) or delivered <= 0 else
        round((proc2["cpu_s"] - proc1["cpu_s"]) / (delivered * wall) * 1e6, 1),
        "spool_lines": rows[1].get("spool_lines"), "lines_dropped": rows[1].get("lines_dropped"),
    })
    step["pass"] = step_passes(step, opts.interval) and shutdown_s is not None
    return step


def _s(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 4)


def run_stress(opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run the steps (bounded by ``--max-cabinets`` and ``--budget``); returns the figures."""
    from tests.fixtures.influxdb import InfluxDB

    (workdir / "influxdb").mkdir()
    influx = InfluxDB(workdir / "influxdb")
    influx.start()
    started = time.monotonic()
    steps: list[dict[str, Any]] = []
    stopped = "all steps run"
    try:
        for cabinets in opts.steps:
            if cabinets > opts.max_cabinets:
                stopped = f"--max-cabinets {opts.max_cabinets}"
                break
            # A step costs its duration plus start-up (simulators: about 1 s per 100 cabinets here) and stop.
            estimate = opts.step_duration + 20 + cabinets / 100
            if time.monotonic() - started + estimate > opts.budget:
                stopped = f"--budget {opts.budget:g} s"
                break
            log.info("step: %d cabinets", cabinets)
            step = _measure_step(cabinets, opts, workdir, influx.url)
            steps.append(step)
            log.info("step %d: %s", cabinets, json.dumps(step))
            if not step["pass"] and not opts.keep_going:
                stopped = f"first failing step ({cabinets} cabinets)"
                break
    finally:
        influx.stop()
    return {"interval_s": opts.interval, "slots": opts.slots, "per_port": opts.per_port,
            "sim_workers": opts.sim_workers, "step_duration_s": opts.step_duration, "budget_s": opts.budget,
            "cpus": os.cpu_count(), "load_average": os.getloadavg(), "stopped": stopped,
            "criterion": f"delivered >= {DELIVERED_SHARE:.0%} of offered and poll p95 < {opts.interval:g} s",
            "knee_cabinets": knee(steps), "steps": steps, "total_s": round(time.monotonic() - started, 1)}


def _print(result: dict[str, Any]) -> None:
    print(f"stress: {result['slots']} slots per cabinet, poll every {result['interval_s']:g} s, steps of "
          f"{result['step_duration_s']:g} s (half warm-up), {result['cpus']} CPUs, load average "
          f"{', '.join(f'{x:.1f}' for x in result['load_average'])}")
    head = (f"{'cabinets':>8} {'offered/s':>10} {'delivered/s':>11} {'share':>6} {'stored/s':>9} {'p50 s':>7} "
            f"{'p95 s':>7} {'max s':>7} {'fails':>6} {'coll CPU':>8} {'sim CPU':>8} {'RSS MiB':>8} {'stop s':>7}  ok")
    print(head)
    for s in result["steps"]:
        if "error" in s:
            print(f"{s['cabinets']:>8} {s['offered_per_s']:>10.0f}  {s['error']}")
            continue
        print(f"{s['cabinets']:>8} {s['offered_per_s']:>10.0f} {s['delivered_per_s']:>11.0f} "
              f"{s['delivered_share']:>6.1%} {s['stored_per_s']:>9.0f} {s['poll_p50_s']!s:>7} {s['poll_p95_s']!s:>7} "
              f"{s['poll_max_s']!s:>7} {s['poll_failures']:>6} {s['collector_cpu_share']!s:>8} "
              f"{s['simulators_cpu_share']!s:>8} {s['collector_rss_mib']!s:>8} {s['shutdown_s']!s:>7}  "
              f"{'yes' if s['pass'] else 'NO'}")
    print(f"CPU is a share of one core (1.0 = one core busy); simulators measured apart. Stopped: {result['stopped']}.")
    steps = [s for s in result["steps"] if "error" not in s]
    if result["knee_cabinets"] and steps and all(s["pass"] for s in steps):
        # Every step passed: the largest is a lower bound, not the knee.
        print(f"knee ({result['criterion']}): not reached; at least {result['knee_cabinets']} cabinets")
    else:
        print(f"knee ({result['criterion']}): {result['knee_cabinets'] or 'none'} cabinets")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench stress", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)), help="fleet sizes, comma list "
                   "(default %(default)s)")
    p.add_argument("--max-cabinets", type=int, default=5000, help="never a larger step (default 5000)")
    p.add_argument("--step-duration", type=_duration, default=120.0,
                   help="per step, half of it warm-up (default 2m: a 1-minute window keeps the count noise of "
                        "jittered polls well under 1 %% at 100 cabinets)")
    p.add_argument("--budget", type=_duration, default=900.0, help="total time budget (default 15m)")
    p.add_argument("--interval", type=_duration, default=5.0, help="poll interval (default 5s, as shipped)")
    p.add_argument("--slots", type=int, default=12)
    p.add_argument("--per-port", type=int, default=50, help="cabinets per simulator port (default 50)")
    p.add_argument("--sim-workers", type=int, default=2, help="simulator processes (default 2)")
    p.add_argument("--shutdown-bound", type=_duration, default=15.0)
    p.add_argument("--keep-going", action="store_true", help="run the steps after a failing one too")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    try:
        args.steps = sorted({int(x) for x in args.steps.split(",") if x.strip()})
    except ValueError:
        p.error("--steps: a comma list of cabinet counts, e.g. 100,200,400")
    if not args.steps or min(args.steps) < 1 or not 10 <= args.step_duration <= 1800 or args.budget < 30:
        p.error("--steps must be >= 1, --step-duration 10s-30m, --budget >= 30s")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    exit_on_sigterm()  # simulators and InfluxDB are stopped (finally), not orphaned
    with tempfile.TemporaryDirectory(prefix="cascade-stress-") as tmp:
        result = run_stress(args, Path(tmp))
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
