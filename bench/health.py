"""Battery-health analysis throughput: batteries analysed per second per core on a recorded stream.

Run: ``python -m bench health [--batteries 20] [--days 7] [--influx URL]``. The stream is simulated packs
(health/synth.py: a day of service is ~700 readings: docked and charging polled every 10 s, riding
reported every minute) recorded once, then timed in CPU seconds of this process (``process_time``):

* ``analyse``: every reading through :class:`health.analyser.BatteryAnalyser` (sessions, anchors,
  capacity, resistance, energy) and the grading of each battery;
* ``baseline``: the least any analysis must do, the same readings through a bare coulomb-counting loop
  (dt, trapezoid, sums per battery) in the same run; the ratio is what the estimators cost on top;
* with ``--influx``: the stream written to a scratch database and ``health.runner.analyse`` timed
  end to end (query, decode, analyse, no write), beside the query alone.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
import urllib.request
from typing import Any

from health.analyser import BatteryAnalyser
from health.report import assess
from health.synth import PackSpec, simulate

__all__ = ["main", "record"]


def record(batteries: int, days: int) -> list[tuple[int, Any, Any]]:
    """The recorded stream of ``batteries`` packs over ``days``, merged in time order."""
    stream: list[tuple[int, Any, Any]] = []
    for n in range(batteries):
        spec = PackSpec(f"BENCH-{n:05d}", capacity_ah=20.0 * (0.75 + 0.25 * (n % 5) / 4), seed=n + 1,
                        cabinet=f"C{n // 12:04d}", slot=n % 12 + 1, vehicle=f"V{n:05d}")
        stream += simulate(spec, range(days))
    stream.sort(key=lambda x: x[0])
    return stream


def _analyse(stream: list[tuple[int, Any, Any]]) -> int:
    analysers: dict[str, BatteryAnalyser] = {}
    for t_ns, pack, place in stream:
        a = analysers.get(pack.battery_id)
        if a is None:
            a = analysers[pack.battery_id] = BatteryAnalyser(pack.battery_id)
        a.feed(t_ns, pack, place)
    for a in analysers.values():
        a.finish()
        assess(a.estimate())
    return len(analysers)


def _baseline(stream: list[tuple[int, Any, Any]]) -> int:
    last: dict[str, tuple[int, float]] = {}
    ah: dict[str, float] = {}
    for t_ns, pack, _ in stream:
        i = pack.charge_current_a
        prev = last.get(pack.battery_id)
        if prev is not None and i is not None:
            ah[pack.battery_id] = ah.get(pack.battery_id, 0.0) + (prev[1] + i) / 2 * (t_ns - prev[0]) / 3.6e12
        last[pack.battery_id] = (t_ns, i or 0.0)
    return len(last)


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.process_time()
    out = fn(*args)
    return time.process_time() - start, out


def _influx(url: str, stream: list[tuple[int, Any, Any]]) -> dict[str, float]:
    from core.model import CabinetReading, VehicleReading
    from exporters.influx.schema import encode_points
    from health.runner import InfluxStore, analyse, read_stream

    db = f"bench_health_{int(time.time())}"
    urllib.request.urlopen(urllib.request.Request(f"{url}/query", data=urllib.parse.urlencode(
        {"q": f'CREATE DATABASE "{db}"'}).encode()), timeout=30).read()
    points = [VehicleReading(vehicle_id=pl.device, fleet=pl.site, timestamp_ns=t, battery=p) if pl.kind == "vehicle"
              else CabinetReading(cabinet_id=pl.device, site=pl.site, model="bench", timestamp_ns=t, slots=[p])
              for t, p, pl in stream]
    lines, _ = encode_points(points)
    store = InfluxStore(url, db)
    try:
        store.write(lines)
        since, until = stream[0][0], stream[-1][0] + 1
        t0 = time.perf_counter()
        query_cpu, rows = _timed(lambda: sum(1 for _ in read_stream(store, since, until)))
        query_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        total_cpu, result = _timed(lambda: analyse(store, since, until, write=False))
        total_wall = time.perf_counter() - t0
    finally:
        urllib.request.urlopen(urllib.request.Request(f"{url}/query", data=urllib.parse.urlencode(
            {"q": f'DROP DATABASE "{db}"'}).encode()), timeout=30).read()
    n = len(result.records)
    return {"rows": rows, "query_cpu_s": query_cpu, "query_wall_s": query_wall, "analyse_cpu_s": total_cpu,
            "analyse_wall_s": total_wall, "batteries_per_s_per_core": n / total_cpu if total_cpu else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench health", description=__doc__.splitlines()[0])
    parser.add_argument("--batteries", type=int, default=20)
    parser.add_argument("--days", type=int, default=7, help="days of service recorded per battery")
    parser.add_argument("--influx", default="", metavar="URL", help="also time it end to end through InfluxDB 1.x")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    stream = record(args.batteries, args.days)
    cpu, n = _timed(_analyse, stream)
    base_cpu, _ = _timed(_baseline, stream)
    out: dict[str, Any] = {
        "batteries": n, "days": args.days, "readings": len(stream), "analyse_cpu_s": round(cpu, 3),
        "batteries_per_s_per_core": round(n / cpu, 2), "battery_days_per_s_per_core": round(n * args.days / cpu, 1),
        "readings_per_s_per_core": round(len(stream) / cpu), "us_per_reading": round(cpu / len(stream) * 1e6, 2),
        "baseline_us_per_reading": round(base_cpu / len(stream) * 1e6, 2),
        "cost_vs_baseline": round(cpu / base_cpu, 2) if base_cpu else None}
    if args.influx:
        out["influx"] = {k: round(v, 3) for k, v in _influx(args.influx, stream).items()}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"health: {n} batteries × {args.days} days = {len(stream):,} readings in {cpu:.2f} CPU-s: "
          f"{out['batteries_per_s_per_core']} batteries/s per core ({out['battery_days_per_s_per_core']} "
          f"battery-days/s), {out['readings_per_s_per_core']:,} readings/s, {out['us_per_reading']} µs per reading; "
          f"bare coulomb-counting loop {out['baseline_us_per_reading']} µs (×{out['cost_vs_baseline']})")
    if args.influx:
        i = out["influx"]
        print(f"  through InfluxDB: {i['rows']:,} rows, query alone {i['query_cpu_s']} CPU-s ({i['query_wall_s']} s), "
              f"query + analyse {i['analyse_cpu_s']} CPU-s ({i['analyse_wall_s']} s): "
              f"{i['batteries_per_s_per_core']:.2f} batteries/s per core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
