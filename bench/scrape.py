"""Scrape benchmark: what one /metrics scrape of a large fleet costs the event loop that polls.

    python -m bench scrape --cabinets 1000 --repeat 10

The collector's registry is filled as for a real fleet (every metric of
:class:`exporters.prometheus.PipelineMetrics`: per-cabinet gauges, a poll-duration histogram per
device), then scraped two ways in the same run while a 5 ms ticker stands in for the poll tasks:

- **inline** (the baseline, what the collector did before): ``generate_latest`` in the handler;
- **snapshot** (what it does now): :class:`exporters.scrape.ScrapeSnapshot`, rendered in a worker thread.

Reported per way: render wall time p50/max, and the ticker's worst lateness during a render — the
longest any poll would have waited. The issue's target: a scrape at 1,000 cabinets must not stall
polling (loop stall well below 50 ms); render time itself is work, not a stall.
Bounded: ``--repeat`` renders per way (max 100), nothing leaves the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from prometheus_client import CollectorRegistry, generate_latest

from core.model import BatteryState, CabinetReading, SlotReading
from exporters.prometheus import PipelineMetrics
from exporters.scrape import ScrapeSnapshot

__all__ = ["fill_registry", "main", "run_scrape_bench"]

_TICK_S = 0.005


def fill_registry(cabinets: int, slots: int = 12) -> CollectorRegistry:
    """A registry holding what a collector of ``cabinets`` cabinets exports after a few polls."""
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    now_ns = time.time_ns()
    for c in range(cabinets):
        name = f"C{c:05d}"
        metrics.register_device(name, f"site-{c % 20:02d}", "modbus")
        metrics.device_up(name, True)
        for d in (0.004, 0.02, 0.3):
            metrics.poll_done(name, d)
        metrics.poll_failed(name, "timeout", 1.0)
        reading = CabinetReading(
            cabinet_id=name, site=f"site-{c % 20:02d}", model="reference-cabinet", timestamp_ns=now_ns,
            cabinet_temperature_c=25.0 + c % 7, co_ppm=1.0, smoke_detected=False, flame_detected=False,
            water_detected=False, input_power_w=1200.0 + c,
            slots=[SlotReading(slot=s + 1, battery_id=f"B{c:05d}{s:02d}", temperature_c=30.0 + s % 5,
                               h2_ppm=2.0, battery_state=int(BatteryState.CHARGING if s % 2 else BatteryState.FULL))
                   for s in range(slots)])
        metrics.observe(reading, 10, [], "modbus")
    return registry


async def _timed(render, repeat: int) -> dict[str, float]:
    lateness: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        expected = time.perf_counter() + _TICK_S
        while not stop.is_set():
            await asyncio.sleep(_TICK_S)
            now = time.perf_counter()
            lateness.append(max(0.0, now - expected))
            expected = now + _TICK_S

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    walls: list[float] = []
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        body = await render()
        walls.append(time.perf_counter() - started)
        size = len(body)
        await asyncio.sleep(0.02)
    stop.set()
    await task
    return {"render_p50_ms": statistics.median(walls) * 1e3, "render_max_ms": max(walls) * 1e3,
            "loop_stall_max_ms": max(lateness) * 1e3, "bytes": size}


async def run_scrape_bench(cabinets: int, repeat: int) -> dict:
    registry = fill_registry(cabinets)
    series = sum(len(m.samples) for m in registry.collect())

    async def inline() -> bytes:
        return generate_latest(registry)

    snapshot = ScrapeSnapshot(registry)
    figures = {"cabinets": cabinets, "series": series,
               "inline": await _timed(inline, repeat), "snapshot": await _timed(snapshot.render, repeat)}
    figures["stall_ratio"] = figures["inline"]["loop_stall_max_ms"] / max(figures["snapshot"]["loop_stall_max_ms"],
                                                                           1e-3)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scrape", description=__doc__.splitlines()[0])
    parser.add_argument("--cabinets", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=10, help="renders per way (max 100)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.cabinets <= 20_000 or not 1 <= args.repeat <= 100:
        parser.error("--cabinets must be 1..20000 and --repeat 1..100")
    figures = asyncio.run(run_scrape_bench(args.cabinets, args.repeat))
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"scrape of {figures['cabinets']} cabinets: {figures['series']} series, "
          f"{figures['snapshot']['bytes'] / 1e6:.2f} MB")
    for way in ("inline", "snapshot"):
        f = figures[way]
        print(f"  {way:<9} render p50 {f['render_p50_ms']:7.1f} ms  max {f['render_max_ms']:7.1f} ms   "
              f"event-loop stall max {f['loop_stall_max_ms']:7.1f} ms")
    print(f"  stall, inline / snapshot: {figures['stall_ratio']:.1f}×")
    return 0
