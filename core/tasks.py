"""Stopping the asyncio tasks a component started: one idiom, bounded when asked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], *, timeout_s: float | None = None,
                          what: str = "task", log: logging.Logger | None = None) -> list[asyncio.Task[object]]:
    """Cancel ``tasks`` and wait for them to end; their errors are retrieved, not raised (each component
    logs its own as they happen). With ``timeout_s``, a task that ignores its cancellation (a client library
    stuck in a connect) does not hold the caller: it is named in ``log`` and left behind. Returns the tasks
    left behind (none without a timeout). A list passed in is emptied (the component starts afresh)."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    left: list[asyncio.Task[object]] = []
    if pending:
        done, still = await asyncio.wait(pending, timeout=timeout_s)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved, so asyncio does not report it again at exit
        left = sorted(still, key=lambda t: t.get_name())
        for task in left:
            (log or logging.getLogger(__name__)).error(
                "%s %s did not stop within %g s of its cancellation; left behind", what, task.get_name(), timeout_s)
    if isinstance(tasks, list):
        tasks.clear()
    return left
