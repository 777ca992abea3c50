"""PollRunner.stop is bounded even when a device library swallows the cancellation."""

from __future__ import annotations

import asyncio
import time

from collectors.runner import PollFailed, PollRunner


class _Swallower:
    """A device whose fetch turns the first cancellation into a failed poll, as a client library can
    (Python 3.11's wait_for when the answer and the cancel arrive together); the runner would then sleep
    a whole interval before noticing shutdown."""

    def __init__(self, name: str) -> None:
        self.name, self.interval_s = name, 3600.0
        self.fetches = 0

    async def fetch(self) -> None:
        self.fetches += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise PollFailed("connection", "link closed") from None

    async def close(self) -> None:
        pass


async def test_stop_recancels_a_task_that_swallowed_the_cancellation() -> None:
    devices = [_Swallower(f"C{i}") for i in range(50)]
    runner = PollRunner(devices, on_result=lambda d, r: None, jitter=0.0, seed=1)
    runner._rng.uniform = lambda a, b: 0.0  # no start-up spread: every first poll at once
    runner.start()
    await asyncio.sleep(0.05)
    assert all(d.fetches == 1 for d in devices)
    tasks = list(runner._tasks)
    started = time.monotonic()
    await runner.stop(grace_s=5.0)
    took = time.monotonic() - started
    assert all(t.done() for t in tasks)
    assert took < 1.0, took
