"""The /metrics snapshot: rendered off the event loop, one render for concurrent scrapes."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry, Gauge

from exporters.scrape import ScrapeSnapshot


def _big_registry(series: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    gauge = Gauge("cascade_test_value", "a value", ["cabinet", "slot"], registry=registry)
    for i in range(series):
        gauge.labels(f"C{i // 12:05d}", str(i % 12)).set(i)
    return registry


async def test_concurrent_scrapes_share_one_render_and_see_fresh_values() -> None:
    registry = _big_registry(20)
    snapshot = ScrapeSnapshot(registry)
    bodies = await asyncio.gather(*(snapshot.render() for _ in range(5)))
    assert len(set(bodies)) == 1
    assert snapshot.renders == 1
    assert b'cascade_test_value{cabinet="C00001",slot="7"} 19.0' in bodies[0]
    Gauge("cascade_test_later", "set after the first scrape", registry=registry).set(3)
    assert b"cascade_test_later 3.0" in await snapshot.render()
    assert snapshot.renders == 2


async def test_max_age_serves_the_cached_body() -> None:
    now = [100.0]
    registry = _big_registry(1)
    snapshot = ScrapeSnapshot(registry, max_age_s=1.0, clock=lambda: now[0])
    first = await snapshot.render()
    Gauge("cascade_test_later", "x", registry=registry).set(1)
    now[0] += 0.5
    assert await snapshot.render() == first
    now[0] += 0.6
    assert b"cascade_test_later" in await snapshot.render()
    assert snapshot.renders == 2


async def test_a_large_render_leaves_the_event_loop_running() -> None:
    """While 20 k series render, a 10 ms ticker keeps ticking (inline rendering would freeze it)."""
    snapshot = ScrapeSnapshot(_big_registry(20_000))
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    body = await snapshot.render()
    took = time.perf_counter() - started
    task.cancel()
    assert body.count(b"cascade_test_value{") == 20_000
    during = [t for t in ticks if t >= started]
    # the loop kept turning during the render: several ticks, not one after it ended
    assert len(during) >= 3, (took, len(during))


def test_negative_max_age_is_refused() -> None:
    with pytest.raises(ValueError, match="max_age_s"):
        ScrapeSnapshot(CollectorRegistry(), max_age_s=-1)


async def test_scrape_bench_reports_both_ways_on_a_real_collector_registry() -> None:
    from bench.scrape import run_scrape_bench

    figures = await run_scrape_bench(cabinets=30, repeat=2)
    assert figures["series"] > 30 * 10  # every per-cabinet gauge of PipelineMetrics is there
    for way in ("inline", "snapshot"):
        assert figures[way]["bytes"] > 0
        assert figures[way]["render_max_ms"] >= figures[way]["render_p50_ms"] > 0
