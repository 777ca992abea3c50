"""Memory benchmark: what one polled cabinet costs at steady state, and whether it stays flat.

    python -m bench memory --cabinets 300 --interval 5 --duration 1800      # 30 min, alerting on

N cabinets × S slots run against the simulators (child processes, as in ``bench collector``) through
the real collector: :class:`cascade.pipeline.Pipeline` (Modbus source, Prometheus metrics, optionally
the InfluxDB sink) with the warning engine and the alert service (the shipped catalogue, an alert
store, an Alertmanager pusher talking to a stand-in in this process). Every ``--sample`` seconds it
records this process's RSS and the Python heap tracemalloc sees; at the end it prints:

- the same-run baseline: RSS and traced heap after every import and before any cabinet is built;
- KiB per cabinet at steady state: (mean after warm-up − baseline) / cabinets, for RSS and for the
  traced heap (target ≤ 64 KiB);
- the slope after warm-up (least squares over the samples), in MiB per hour (target: flat);
- tracemalloc's top allocation sites: what holds the fleet's memory (against the baseline) and what
  grew after warm-up (against the end of warm-up).

tracemalloc (one frame) costs CPU and its own memory (taken out of the RSS figures); its snapshots
are reduced to per-site totals at once, and the slope starts after the warm-up snapshot, but what
they leave behind in the allocator still shows in the RSS per cabinet: ``--no-tracemalloc`` gives
clean RSS figures (no allocation sites).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

__all__ = ["main", "run_memory_bench"]

_REPO = Path(__file__).resolve().parents[1]
_TARGET_KIB = 64.0
_WINDOWS_FULL_S = 300.0  # the warning engine's longest rate window: memory grows until it is full
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    """This process's resident set, bytes (Linux /proc)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def _slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, bytes) points, in bytes per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / den * 3600.0


def _sites() -> dict[str, tuple[int, int]]:
    """Where the traced heap is now: allocation site -> (bytes, blocks). The snapshot itself is large
    (a copy of every trace), so it is reduced to these totals and freed at once."""
    skip = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<unknown>"), tracemalloc.Filter(False, __file__))  # nor these totals
    snapshot = tracemalloc.take_snapshot().filter_traces(skip)
    out: dict[str, tuple[int, int]] = {}
    for stat in snapshot.statistics("lineno"):
        frame = stat.traceback[0]
        name = frame.filename
        if name.startswith(str(_REPO) + os.sep):
            name = name[len(str(_REPO)) + 1:]
        if "site-packages/" in name:
            name = name.split("site-packages/", 1)[1]
        out[f"{name}:{frame.lineno}"] = (stat.size, stat.count)
    del snapshot
    gc.collect()
    return out


def _top(now: dict[str, tuple[int, int]], then: dict[str, tuple[int, int]], n: int) -> list[dict]:
    diff = [(where, size - then.get(where, (0, 0))[0], count - then.get(where, (0, 0))[1])
            for where, (size, count) in now.items()]
    diff.sort(key=lambda d: d[1], reverse=True)
    return [{"where": where, "kib": size / 1024, "blocks": count} for where, size, count in diff[:n]]


class _AlertmanagerStandIn:
    """Accepts the pusher's POSTs (alerts, silences) so its queue behaves as against a live Alertmanager."""

    def __init__(self) -> None:
        self.url = ""
        self.posts = 0
        self._runner = None

    async def __aenter__(self) -> _AlertmanagerStandIn:
        from aiohttp import web

        async def accept(request: web.Request) -> web.Response:
            await request.read()
            self.posts += 1
            return web.json_response({"silenceID": "bench"})

        app = web.Application()
        app.router.add_post("/api/v2/alerts", accept)
        app.router.add_post("/api/v2/silences", accept)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


async def run_memory_bench(fleet: list[dict], *, slots: int, interval_s: float, duration_s: float,
                           sample_s: float, warmup_s: float, alerting: bool = True, influx_url: str | None = None,
                           spool_dir: str | None = None, fast_interval_s: float | None = None,
                           trace: bool = True, top: int = 8, progress: bool = True, max_in_flight: int = 1) -> dict:
    """Poll ``fleet`` for ``duration_s`` through the collector and sample memory; returns the figures."""
    from alerting.engine import Engine
    from alerting.rules import load_rules
    from alerting.state import AlertStore
    from cascade.app import alert_service_for
    from cascade.config import AppConfig
    from cascade.pipeline import Pipeline
    from collectors.modbus.profile import find_profile
    from collectors.modbus.settings import CabinetConfig
    from exporters.influx.sink import InfluxConfig

    profiles = {name: find_profile(name) for name in {e["profile"] for e in fleet}}
    rules = load_rules()
    extra: dict = {} if fast_interval_s is None else {"fast_interval_s": fast_interval_s}
    extra["max_in_flight"] = max_in_flight
    gc.collect()
    base_rss, base_traced = _rss(), tracemalloc.get_traced_memory()[0] if trace else 0
    base_overhead = tracemalloc.get_tracemalloc_memory() if trace else 0
    base_sites = _sites() if trace else {}
    # --- the baseline is above: everything below is per cabinet (or fixed, and shows in the slope as 0) ---
    cabinets = [CabinetConfig(id=e["id"], host=e["host"], port=e["port"], device_id=e.get("device_id", 1),
                              site=e.get("site", "bench"), profile=e["profile"], slots=slots, interval_s=interval_s,
                              timeout_s=5.0, **extra) for e in fleet]
    influx = None if not influx_url else InfluxConfig(url=influx_url, database="cascade",
                                                     spool_dir=spool_dir or tempfile.mkdtemp())
    config = AppConfig(source="bench", cabinets=cabinets, profiles=profiles, influxdb=influx, metrics_port=0,
                       status_interval_s=0)
    samples: list[dict] = []
    transitions: dict[str, int] = {"n": 0}
    by_rule: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        pipeline = Pipeline(config, seed=1)
        if alerting:
            am = await stack.enter_async_context(_AlertmanagerStandIn())
            engine = Engine(rules, state=AlertStore())
            service = alert_service_for(pipeline, engine, alertmanager_url=am.url)
            original = service.apply

            def counting(ts, timestamp_ns=None):  # how many transitions the fleet produced (false alarms?)
                ts = list(ts)
                transitions["n"] += len(ts)
                for t in ts:
                    name = f"{t.rule} L{t.from_level}->L{t.to_level}"
                    by_rule[name] = by_rule.get(name, 0) + 1
                return original(ts, timestamp_ns)

            service.apply = counting  # type: ignore[method-assign]
            await stack.enter_async_context(service)
        await stack.enter_async_context(pipeline)
        started = time.monotonic()
        warm_sites: dict[str, tuple[int, int]] | None = None
        warm_at = warmup_s
        while (elapsed := time.monotonic() - started) < duration_s:
            await asyncio.sleep(min(sample_s, duration_s - elapsed))
            elapsed = time.monotonic() - started
            traced = tracemalloc.get_traced_memory()[0] if trace else 0
            overhead = tracemalloc.get_tracemalloc_memory() if trace else 0
            sample = {"t_s": round(elapsed, 1), "rss": _rss(), "traced": traced, "tracemalloc_overhead": overhead,
                      "readings": pipeline.readings_total, "transitions": transitions["n"],
                      "online": sum(1 for v in pipeline.online().values() if v)}
            samples.append(sample)
            if trace and warm_sites is None and elapsed >= warmup_s:
                warm_sites = _sites()
                warm_at = time.monotonic() - started  # the slope starts after this snapshot was freed
            if progress:
                heap = f"traced {traced / 2**20:7.1f} MiB  " if trace else ""
                print(f"  t={elapsed:6.0f}s RSS {sample['rss'] / 2**20:7.1f} MiB  {heap}"
                      f"readings {sample['readings']}  transitions {sample['transitions']}  "
                      f"online {sample['online']}/{len(cabinets)}", flush=True)
    end_sites = _sites() if trace else {}
    steady = [s for s in samples if s["t_s"] >= warm_at] or samples[-1:]
    n = len(cabinets)

    rss_clean = [(s["t_s"], s["rss"] - s["tracemalloc_overhead"]) for s in steady]
    lane = cabinets[0].fast_interval_s if cabinets else None  # as configured: the shipped default unless given
    figures = {
        "cabinets": n, "slots": slots, "interval_s": interval_s,
        "fast_interval_s": lane if lane is not None and lane < interval_s else None, "tracemalloc": trace,
        "max_in_flight": max_in_flight,
        "alerting": alerting, "influx": bool(influx_url), "duration_s": duration_s, "warmup_s": warmup_s,
        "baseline_rss_mib": base_rss / 2**20, "baseline_traced_mib": base_traced / 2**20,
        "rss_kib_per_cabinet": (sum(v for _, v in rss_clean) / len(rss_clean) - (base_rss - base_overhead)) / n / 1024,
        # from the snapshots: the bench's own bookkeeping (these totals) left out
        "traced_kib_per_cabinet": (sum(v[0] for v in (warm_sites or end_sites).values())
                                   - sum(v[0] for v in base_sites.values())) / n / 1024 if trace else None,
        "rss_slope_mib_per_h": (_slope_per_hour(rss_clean) or 0.0) / 2**20,
        "traced_slope_mib_per_h": (_slope_per_hour([(s["t_s"], s["traced"]) for s in steady]) or 0.0) / 2**20
        if trace else None,
        "end_rss_mib": samples[-1]["rss"] / 2**20, "tracemalloc_overhead_mib": samples[-1]["tracemalloc_overhead"] / 2**20,
        "readings": samples[-1]["readings"], "transitions": samples[-1]["transitions"],
        "transitions_by_rule": dict(sorted(by_rule.items())),
        "top_held": _top(warm_sites or end_sites, base_sites, top) if trace else [],
        "top_grown": _top(end_sites, warm_sites, top) if trace and warm_sites is not None else [],
        "samples": samples,
    }
    return figures


def _print(f: dict) -> None:
    fast = f"safety fast lane every {f['fast_interval_s']:g} s" if f["fast_interval_s"] else "no safety fast lane"
    fast += f", {f.get('max_in_flight', 1)} request{'s' if f.get('max_in_flight', 1) > 1 else ''} in flight"
    traced = f.get("tracemalloc", True)
    print(f"memory benchmark: {f['cabinets']} cabinets x {f['slots']} slots, interval {f['interval_s']:g} s ({fast}), "
          f"{f['duration_s']:.0f} s (warm-up {f['warmup_s']:.0f} s), alerting {'on' if f['alerting'] else 'off'}, "
          f"InfluxDB sink {'on' if f['influx'] else 'off'}, tracemalloc {'on' if traced else 'off'}")
    print(f"  baseline (imports done, no cabinet built)  RSS {f['baseline_rss_mib']:.1f} MiB"
          + (f", traced heap {f['baseline_traced_mib']:.1f} MiB" if traced else ""))
    print(f"  KiB per cabinet, RSS        {f['rss_kib_per_cabinet']:8.1f}   (target <= {_TARGET_KIB:g}"
          + (f"; tracemalloc's own {f['tracemalloc_overhead_mib']:.1f} MiB taken out, but its snapshots leave "
             "memory behind: run --no-tracemalloc for RSS)" if traced else ")"))
    if f["traced_kib_per_cabinet"] is not None:
        print(f"  KiB per cabinet, traced heap{f['traced_kib_per_cabinet']:8.1f}")
    print(f"  slope after warm-up, RSS    {f['rss_slope_mib_per_h']:8.2f} MiB/h   (target: flat)")
    if f["traced_slope_mib_per_h"] is not None:
        print(f"  slope after warm-up, traced {f['traced_slope_mib_per_h']:8.2f} MiB/h")
    if f["alerting"] and f["warmup_s"] < _WINDOWS_FULL_S:
        print(f"  note: a warm-up under {_WINDOWS_FULL_S:g} s ends before the warning engine's 5-minute rate windows "
              "are full: the slope includes them filling (use --warmup 300 or more for a steady-state slope)")
    print(f"  end RSS {f['end_rss_mib']:.1f} MiB; readings {f['readings']}; alert transitions {f['transitions']}"
          + (f" ({', '.join(f'{k} x{v}' for k, v in f['transitions_by_rule'].items())})"
             if f["transitions_by_rule"] else ""))
    for title, key in (("held at steady state (vs baseline)", "top_held"), ("grown after warm-up", "top_grown")):
        if f[key]:
            print(f"  tracemalloc, {title}:")
            for item in f[key]:
                print(f"    {item['kib']:10.1f} KiB {item['blocks']:9d} blocks  {item['where']}")


def main(argv: list[str] | None = None) -> int:
    from cascade.cli import in_flight

    parser = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cabinets", type=int, default=300)
    parser.add_argument("--slots", type=int, default=12)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--fast-interval", type=float, default=None,
                        help="cabinets' fast_interval_s (default: the shipped cabinet default)")
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds (60-7200, default 1800)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds (default: a quarter of the run, "
                        "at most 300)")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples (default 30)")
    parser.add_argument("--no-alerting", action="store_true", help="without the warning engine and alert service")
    parser.add_argument("--influx", metavar="URL", help="also write to this InfluxDB 1.x (database cascade)")
    parser.add_argument("--no-tracemalloc", action="store_true", help="RSS only (no allocation sites)")
    parser.add_argument("--top", type=int, default=8, help="allocation sites to list (default 8)")
    parser.add_argument("--per-port", type=int, default=50, help="cabinets served per simulator port")
    parser.add_argument("--workers", type=int, default=2, help="simulator processes")
    parser.add_argument("--profile", default="reference-cabinet")
    parser.add_argument("--max-in-flight", type=in_flight(1), default=1, metavar="N",
                        help="cabinets' max_in_flight: pipelined reads, as bench collector (default 1)")
    parser.add_argument("--json", action="store_true", help="print the figures (with every sample) as JSON")
    args = parser.parse_args(argv)
    duration = min(max(args.duration, 60.0), 7200.0)
    warmup = min(args.warmup if args.warmup is not None else min(duration / 4, 300.0), duration * 0.8)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.basicConfig(level=logging.ERROR)
    if not args.no_tracemalloc:
        tracemalloc.start(1)

    from bench.collector import _start_simulators, exit_on_sigterm, stop_simulators

    exit_on_sigterm()

    with tempfile.TemporaryDirectory(prefix="cascade-memory-") as tmp:
        procs, fleet = _start_simulators(args.cabinets, args.slots, args.per_port, args.workers, Path(tmp),
                                         args.profile)
        try:
            figures = asyncio.run(run_memory_bench(
                fleet, slots=args.slots, interval_s=args.interval, duration_s=duration, sample_s=args.sample,
                warmup_s=warmup, alerting=not args.no_alerting, influx_url=args.influx,
                spool_dir=str(Path(tmp) / "spool"), fast_interval_s=args.fast_interval,
                trace=not args.no_tracemalloc, top=args.top, progress=not args.json,
                max_in_flight=args.max_in_flight))
        finally:
            stop_simulators(procs)
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        _print(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
