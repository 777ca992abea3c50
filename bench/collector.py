"""Collector benchmark: N cabinets × S slots polled against the simulator over loopback.

    python -m bench collector --cabinets 1000 --slots 12 --interval 5 --duration 60

The simulator runs in child processes (other cores); this process is the collector, so its CPU
time (``time.process_time``) is what one collector core spends. Reported:

- readings/s (slot readings decoded) and polls/s, against the offered load (cabinets × slots / interval);
- collector CPU seconds per 1,000 readings, and the CPU share of one core (must stay below 1.0
  for the fleet to be collected on one core);
- Modbus requests per poll against the theoretical minimum for the profile;
- line-protocol encoding of the same readings, included in the CPU figure;
- then, same simulators, same run: the baseline (a plain batched pymodbus client) and the floor (the
  same requests, nothing done with the answers), each for ``--duration``; ``--no-baseline`` skips both.

``--max-in-flight N`` pipelines each poll's reads, N written at once (the cabinet setting
``max_in_flight``; the simulators answer pipelined requests). The baseline and the floor still send
one request at a time, so with N > 1 Cascade can cost less than the floor; the run then also measures
Cascade one request at a time, for the saving.

Full polls only, no safety fast lane (``fast_interval_s`` off): the baseline has none, and the figure is
per reading. The shipped collector also reads the safety registers every second; see docs/scaling.md.

Bounded in count and time: ``--duration`` caps the run; every request has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cascade.cli import in_flight
from simulators.fleet import free_port_block

__all__ = ["exit_on_sigterm", "main", "run_collector_bench", "stop_simulators"]


class SimulatorError(RuntimeError):
    """A simulator process did not start or stopped during a run: no figures."""


def _start_simulators(cabinets: int, slots: int, per_port: int, workers: int, workdir: Path,
                      profile: str) -> tuple[list[subprocess.Popen], list[dict]]:
    """Split the fleet across ``workers`` simulator processes; return them and the fleet entries. If
    one does not start, those started are stopped before :class:`SimulatorError` is raised."""
    procs: list[subprocess.Popen] = []
    try:
        return procs, _start_each(procs, cabinets, slots, per_port, workers, workdir, profile)
    except BaseException:
        stop_simulators(procs)
        raise


def _start_each(procs: list[subprocess.Popen], cabinets: int, slots: int, per_port: int, workers: int,
                workdir: Path, profile: str) -> list[dict]:
    fleet: list[dict] = []
    share = -(-cabinets // workers)
    for worker in range(workers):
        count = min(share, cabinets - worker * share)
        if count <= 0:
            break
        ports = -(-count // per_port)
        base = free_port_block(ports)
        fleet_file = workdir / f"fleet-{worker}.yaml"
        argv = [sys.executable, "-m", "cascade.cli", "simulate", "--cabinets", str(count), "--slots", str(slots),
                "--port", str(base), "--per-port", str(per_port), "--control-port", "0",
                "--fleet-file", str(fleet_file), "--profile", profile, "--seed", str(worker)]
        log = open(workdir / f"simulator-{worker}.log", "wb")
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 120
        while not fleet_file.exists():
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                # the temporary directory goes with the bench: its log's last lines go into the error
                text = (workdir / f"simulator-{worker}.log").read_text(errors="replace").strip().splitlines()
                raise SimulatorError(f"simulator {worker} did not start: " + " | ".join(text[-3:]))
            time.sleep(0.2)
        entries = yaml.safe_load(fleet_file.read_text())  # written once every port listens
        entries = entries["cabinets"] if isinstance(entries, dict) else entries
        for entry in entries:
            entry["id"] = f"W{worker}-{entry['id']}"
        fleet.extend(entries)
    return fleet


def simulators_alive(procs: list[subprocess.Popen]) -> None:
    """Raise if a simulator process ended during a run: its cabinets' failures are not the collector's."""
    gone = [f"pid {p.pid} exited with {p.returncode}" for p in procs if p.poll() is not None]
    if gone:
        raise SimulatorError("a simulator stopped during the run, figures discarded: " + "; ".join(gone))


def stop_simulators(procs: list[subprocess.Popen], timeout_s: float = 10.0) -> None:
    """Stop the simulator processes (their whole process groups) and wait for each, bounded."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout_s)


def exit_on_sigterm() -> None:
    """SIGTERM exits through ``finally`` blocks, so a bench killed from outside stops its simulators."""

    def _terminated(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminated)


async def run_plain_bench(fleet: list[dict], *, interval_s: float, duration_s: float, slots: int,
                          sim_pids: list[int] | None = None, floor: bool = False) -> dict:
    """The same-run baseline: :mod:`bench.plainclient` on the same fleet, same reads, same schedule; with
    ``floor``, :mod:`bench.floorclient` instead (the same requests, nothing done to the answers)."""
    from bench.floorclient import FloorCabinet
    from bench.plainclient import PlainCabinet
    from collectors.modbus.planner import plan_reads
    from collectors.modbus.profile import find_profile

    profiles: dict[str, object] = {}
    devices = []
    for entry in fleet:
        if entry["profile"] not in profiles:
            profiles[entry["profile"]] = find_profile(entry["profile"])
        plan = plan_reads(profiles[entry["profile"]], slots)
        devices.append((FloorCabinet if floor else PlainCabinet)(
            entry["id"], entry["host"], entry["port"], entry.get("device_id", 1), plan, slots, interval_s))
    counts = {"polls": 0, "readings": 0, "requests": 0, "lines": 0, "field_errors": 0, "failures": 0,
              "transitions": 0}

    def on_result(device, result) -> None:
        counts["polls"] += 1
        counts["readings"] += result.slots
        counts["requests"] += result.requests
        counts["lines"] += len(result.lines)

    return await _measure(devices, on_result, counts, _PollStats(counts), interval_s, duration_s, slots, profiles,
                          None, sim_pids)


async def run_collector_bench(fleet: list[dict], *, interval_s: float, duration_s: float, slots: int,
                              influx_url: str | None = None, spool_dir: str | None = None,
                              warnings: bool = False, sim_pids: list[int] | None = None,
                              fast_interval_s: float | None = None, max_in_flight: int = 1) -> dict:
    """Poll ``fleet`` for ``duration_s`` and measure; returns the figures."""
    from collectors.modbus.device import CabinetConfig, ModbusCabinet
    from collectors.modbus.profile import find_profile
    from exporters.influx.schema import reading_to_lines

    profiles: dict[str, object] = {}
    devices = []
    for entry in fleet:
        if entry["profile"] not in profiles:
            profiles[entry["profile"]] = find_profile(entry["profile"])
        profile = profiles[entry["profile"]]
        config = CabinetConfig(id=entry["id"], host=entry["host"], port=entry["port"],
                               device_id=entry.get("device_id", 1), site=entry.get("site", "bench"),
                               profile=entry["profile"], slots=slots, interval_s=interval_s, timeout_s=5.0,
                               fast_interval_s=fast_interval_s,  # default: full polls only, as the baseline
                               max_in_flight=max_in_flight)
        devices.append(ModbusCabinet(config, profile))
    counts = {"polls": 0, "readings": 0, "requests": 0, "lines": 0, "field_errors": 0, "failures": 0,
              "transitions": 0}
    engine = None
    if warnings:
        from alerting import Engine, load_rules
        engine = Engine(load_rules())

    def on_result(device, result) -> None:
        counts["polls"] += 1
        counts["readings"] += len(result.reading.slots)
        counts["requests"] += result.requests
        counts["field_errors"] += len(result.errors)
        lines = reading_to_lines(result.reading)
        counts["lines"] += len(lines)
        if sink is not None:
            sink.submit_lines(lines)
        if engine is not None:
            counts["transitions"] += len(engine.evaluate(result.reading))

    failures = _PollStats(counts)

    sink = None
    async with contextlib.AsyncExitStack() as stack:
        if influx_url:
            from exporters.influx.sink import InfluxConfig, InfluxSink
            sink = await stack.enter_async_context(InfluxSink(InfluxConfig(
                url=influx_url, database="cascade", spool_dir=spool_dir or tempfile.mkdtemp())))
        return await _measure(devices, on_result, counts, failures, interval_s, duration_s, slots, profiles,
                              sink, sim_pids)


class _PollStats:
    """The runner's metrics hook: counts failures, keeps poll durations for the percentiles."""

    def __init__(self, counts: dict) -> None:
        self.counts = counts
        self.durations: list[float] = []

    def poll_done(self, device: str, duration_s: float) -> None:
        self.durations.append(duration_s)

    def device_up(self, *a) -> None: ...

    def poll_failed(self, *a) -> None:
        self.counts["failures"] += 1


def _cpu_of(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc; 0 where unreadable)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(devices, on_result, counts, failures, interval_s, duration_s, slots, profiles, sink,
                   sim_pids=None) -> dict:
    from collectors.modbus.planner import minimum_reads
    from collectors.runner import PollRunner

    warmup = min(interval_s * 2, duration_s / 3)
    stop_started = None
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(PollRunner(devices, on_result=on_result, metrics=failures, seed=1))
        await asyncio.sleep(warmup)
        start_counts = dict(counts)
        failures.durations.clear()
        sim0 = _cpu_of(sim_pids or [])
        wall0, cpu0 = time.monotonic(), time.process_time()
        await asyncio.sleep(duration_s - warmup)
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        sim_cpu = _cpu_of(sim_pids or []) - sim0
        # Snapshot before shutdown: requests cut off by stopping are not failures of the fleet.
        delta = {k: counts[k] - start_counts[k] for k in counts}
        durations = list(failures.durations)
        stop_started = time.monotonic()
    shutdown_s = time.monotonic() - stop_started
    profile = next(iter(profiles.values()))
    return {
        "poll_p50_s": _percentile(durations, 0.50), "poll_p95_s": _percentile(durations, 0.95),
        "poll_p99_s": _percentile(durations, 0.99), "shutdown_s": shutdown_s,
        "simulator_cpu_share": sim_cpu / wall if sim_pids else None,
        "cabinets": len(devices), "slots": slots, "interval_s": interval_s, "measured_s": wall,
        "max_in_flight": max((getattr(getattr(d, "config", None), "max_in_flight", 1) for d in devices), default=1),
        # what the runner schedules: the fast lane's interval when it is on
        "offered_readings_per_s": len(devices) * slots / getattr(devices[0], "interval_s", interval_s),
        "readings_per_s": delta["readings"] / wall, "polls_per_s": delta["polls"] / wall,
        "cpu_s": cpu, "cpu_share_of_one_core": cpu / wall,
        "cpu_s_per_1000_readings": cpu / max(delta["readings"], 1) * 1000,
        "requests_per_poll": delta["requests"] / max(delta["polls"], 1),
        "minimum_requests_per_poll": minimum_reads(profile, slots),
        "poll_failures": delta["failures"], "field_errors": delta["field_errors"], "lines": delta["lines"],
        "influx_lines_written": None if sink is None else sink.stats.lines_written,
        "transitions": delta["transitions"],
    }


def _print(figures: dict) -> None:
    print(f"collector benchmark: {figures['cabinets']} cabinets x {figures['slots']} slots, "
          f"interval {figures['interval_s']:g} s, measured {figures['measured_s']:.1f} s, "
          + ("one request at a time" if figures["max_in_flight"] == 1 else
             f"{figures['max_in_flight']} requests in flight (pipelined)"))
    if figures["measured_s"] < 4 * figures["interval_s"]:
        print(f"  (a short window: {figures['measured_s'] / figures['interval_s']:.1f} poll intervals measured; "
              "readings/s can be off by a poll per cabinet, use --duration of 30 or more for figures)")
    print(f"  readings/s            {figures['readings_per_s']:10.0f}   (offered {figures['offered_readings_per_s']:.0f})")
    print(f"  polls/s               {figures['polls_per_s']:10.1f}")
    print(f"  CPU s / 1000 readings {figures['cpu_s_per_1000_readings']:10.4f}")
    print(f"  CPU share of one core {figures['cpu_share_of_one_core']:10.2f}   (target < 1.0)")
    print(f"  requests per poll     {figures['requests_per_poll']:10.2f}   "
          f"(theoretical minimum {figures['minimum_requests_per_poll']})")
    print(f"  poll failures         {figures['poll_failures']:10d}   field errors {figures['field_errors']}")
    if figures["poll_p50_s"] is not None:
        print(f"  poll latency ms       p50 {figures['poll_p50_s'] * 1e3:.0f}  p95 {figures['poll_p95_s'] * 1e3:.0f}  "
              f"p99 {figures['poll_p99_s'] * 1e3:.0f}   (interval {figures['interval_s'] * 1e3:.0f})")
    if figures["simulator_cpu_share"] is not None:
        print(f"  simulator CPU share   {figures['simulator_cpu_share']:10.2f}   (the simulators, apart from the "
              "collector)")
    print(f"  shutdown              {figures['shutdown_s']:10.2f} s")
    print(f"  warning transitions   {figures['transitions']:10d}   (0 unless --warnings)")
    if figures["influx_lines_written"] is not None:
        print(f"  InfluxDB lines written{figures['influx_lines_written']:10d}   (sink in the same process: "
              "its CPU is in the figures above)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench collector", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cabinets", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=12)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=40.0,
                        help="seconds per client, including a warm-up of min(2 x interval, duration / 3) (max 600)")
    parser.add_argument("--per-port", type=int, default=50, help="cabinets served per simulator port")
    parser.add_argument("--workers", type=int, default=2, help="simulator processes")
    parser.add_argument("--profile", default="reference-cabinet")
    parser.add_argument("--fast-interval", type=float, metavar="SECONDS",
                        help="poll the safety registers this often between full polls, as the shipped collector "
                             "does (1); the baseline and floor have no such lane, so no ratio is printed")
    parser.add_argument("--max-in-flight", type=in_flight(1), default=1, metavar="N",
                        help="pipeline each poll's reads, N requests written at once (the cabinet setting "
                             "max_in_flight; default 1: one at a time, as the baseline)")
    parser.add_argument("--warnings", action="store_true",
                        help="also evaluate every reading with the shipped warning catalogue")
    parser.add_argument("--influx", metavar="URL", help="also write every reading to this InfluxDB 1.x "
                        "(database cascade, loopback only), so the sink's CPU is measured too")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the same-run baseline (a plain batched pymodbus client, bench/plainclient.py) and "
                             "the floor (bench/floorclient.py); with them the run takes about 3 x --duration (4 x with --max-in-flight)")
    args = parser.parse_args(argv)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    duration = min(max(args.duration, 5.0), 600.0)

    exit_on_sigterm()
    try:
        return _run(args, duration)
    except SimulatorError as err:  # a simulator that did not start or stopped: no figures, say why
        print(f"bench collector: {err}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, duration: float) -> int:
    with tempfile.TemporaryDirectory(prefix="cascade-bench-") as tmp:
        procs, fleet = _start_simulators(args.cabinets, args.slots, args.per_port, args.workers, Path(tmp),
                                         args.profile)
        try:
            pids = [p.pid for p in procs]
            figures = asyncio.run(run_collector_bench(fleet, interval_s=args.interval, duration_s=duration,
                                                      influx_url=args.influx, spool_dir=str(Path(tmp) / "spool"),
                                                      warnings=args.warnings, fast_interval_s=args.fast_interval,
                                                      max_in_flight=args.max_in_flight,
                                                      slots=args.slots, sim_pids=pids))
            simulators_alive(procs)  # after each run: a run without its simulators is not measured on
            compare = not args.no_baseline and args.fast_interval is None
            baseline = None if not compare else asyncio.run(run_plain_bench(
                fleet, interval_s=args.interval, duration_s=duration, slots=args.slots, sim_pids=pids))
            simulators_alive(procs)
            floor = None if not compare else asyncio.run(run_plain_bench(
                fleet, interval_s=args.interval, duration_s=duration, slots=args.slots, sim_pids=pids, floor=True))
            simulators_alive(procs)
            single = None if not compare or args.max_in_flight == 1 else asyncio.run(run_collector_bench(
                fleet, interval_s=args.interval, duration_s=duration, influx_url=args.influx,
                spool_dir=str(Path(tmp) / "spool1"), warnings=args.warnings, slots=args.slots, sim_pids=pids))
            simulators_alive(procs)
        finally:
            stop_simulators(procs)
    _print(figures)
    if baseline is not None:
        print("baseline: a plain batched pymodbus client (same reads, struct decode, influxdb_client Point), "
              "same simulators, same run")
        print(f"  readings/s            {baseline['readings_per_s']:10.0f}")
        print(f"  CPU s / 1000 readings {baseline['cpu_s_per_1000_readings']:10.4f}")
        print(f"  poll latency ms       p50 {baseline['poll_p50_s'] * 1e3:.0f}  p95 {baseline['poll_p95_s'] * 1e3:.0f}  "
              f"p99 {baseline['poll_p99_s'] * 1e3:.0f}")
        ratio = baseline["cpu_s_per_1000_readings"] / max(figures["cpu_s_per_1000_readings"], 1e-9)
        how = "one request at a time, as the baseline" if figures["max_in_flight"] == 1 else \
            f"pipelined, {figures['max_in_flight']} in flight, against the baseline one at a time"
        print(f"  Cascade ({how}) is {ratio:.2f}x cheaper than the baseline per reading (the baseline's CPU / "
              "Cascade's; target >= 3)")
    if floor is not None and baseline is not None:
        f, b, c = (x["cpu_s_per_1000_readings"] for x in (floor, baseline, figures))
        print("floor: the same requests on raw connections, nothing decoded or encoded (bench/floorclient.py), same run")
        print(f"  readings/s            {floor['readings_per_s']:10.0f}")
        print(f"  CPU s / 1000 readings {f:10.4f}   (system calls, event-loop wake-ups, poll scheduling)")
        if figures["max_in_flight"] == 1:
            print(f"  no client making these requests one at a time could be more than {b / max(f, 1e-9):.2f}x "
                  "cheaper than the baseline (the baseline's CPU / the floor's)")
            if c > f:
                print(f"  above the floor per reading: Cascade {c - f:.4f} CPU s / 1000, baseline {b - f:.4f} "
                      f"({(b - f) / (c - f):.2f}x; what each does with the answers, not the target's figure)")
        else:  # the floor is one request at a time: Cascade pipelined is not above it in the same sense
            print(f"  no client making these requests one at a time could be more than {b / max(f, 1e-9):.2f}x "
                  f"cheaper than the baseline; pipelined, Cascade costs {c / max(f, 1e-9):.2f}x this one-at-a-time "
                  "floor (its own floor, one write per poll, is lower)")
    if single is not None and baseline is not None:
        s1 = single["cpu_s_per_1000_readings"]
        print("Cascade one request at a time (max_in_flight 1, the default), same simulators, same run")
        print(f"  readings/s            {single['readings_per_s']:10.0f}   requests per poll "
              f"{single['requests_per_poll']:.2f}")
        print(f"  CPU s / 1000 readings {s1:10.4f}   poll latency ms p50 {single['poll_p50_s'] * 1e3:.0f}  "
              f"p95 {single['poll_p95_s'] * 1e3:.0f}  p99 {single['poll_p99_s'] * 1e3:.0f}")
        change = figures["cpu_s_per_1000_readings"] / max(s1, 1e-9) - 1
        print(f"  {baseline['cpu_s_per_1000_readings'] / max(s1, 1e-9):.2f}x cheaper than the baseline "
              f"(like for like: both one request at a time); pipelined, Cascade uses {abs(100 * change):.0f} % "
              f"{'less' if change < 0 else 'more'} CPU per reading than one at a time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
