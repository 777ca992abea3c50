"""core.tasks.cancel_and_wait: how every component stops the tasks it started."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core.tasks import cancel_and_wait


async def test_tasks_are_cancelled_awaited_and_the_list_emptied() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    async def failed() -> None:
        raise RuntimeError("logged by its component when it happened")

    tasks = [asyncio.create_task(forever()), asyncio.create_task(failed())]
    await asyncio.sleep(0)
    kept = list(tasks)
    assert await cancel_and_wait(tasks) == []
    assert tasks == [] and all(t.done() for t in kept)
    assert kept[0].cancelled() and isinstance(kept[1].exception(), RuntimeError)


async def test_a_task_that_ignores_its_cancellation_is_left_behind_and_named(
        caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # swallows it, as a client library stuck in a connect may

    polite = asyncio.create_task(asyncio.sleep(3600), name="polite")
    stuck = asyncio.create_task(stubborn(), name="stuck-connect")
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.ERROR):
        left = await cancel_and_wait((polite, stuck), timeout_s=0.2, what="gateway task")
    assert 0.2 <= loop.time() - started < 2.0  # bounded
    assert left == [stuck] and polite.cancelled()
    assert "gateway task stuck-connect did not stop within 0.2 s" in caplog.text
    release.set()
    await stuck
