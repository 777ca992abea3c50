"""The one poll loop every collector shares: interval with jitter, timeouts, backoff, online state.

A device implements :meth:`PolledDevice.fetch` (and optionally ``close``) and raises
:class:`PollFailed` with a short ``kind`` on failure; the runner schedules, times, counts, logs
state changes once ("C12 unreachable", "C12 recovered") and hands each result to ``on_result``.

    async with PollRunner(devices, on_result=handle, metrics=metrics) as runner:
        await asyncio.sleep(60)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["PollFailed", "PolledDevice", "PollMetrics", "PollRunner", "backoff_delay"]

log = logging.getLogger("cascade.collectors")

T = TypeVar("T")


class PollFailed(Exception):
    """A poll that produced no data. ``kind`` is a short, bounded label (timeout, refused, …)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class PolledDevice(Protocol[T]):  # type: ignore[misc]
    """What the runner needs of a device."""

    name: str
    interval_s: float

    async def fetch(self) -> T: ...

    async def close(self) -> None: ...


class PollMetrics(Protocol):
    """Where the runner reports; :mod:`exporters.prometheus` implements it."""

    def poll_done(self, device: str, duration_s: float) -> None: ...

    def poll_failed(self, device: str, kind: str, duration_s: float) -> None: ...

    def device_up(self, device: str, up: bool) -> None: ...


def backoff_delay(failures: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Capped exponential backoff with full jitter (so a fleet does not reconnect in lockstep)."""
    return rng.uniform(base_s, min(cap_s, base_s * 2 ** min(failures, 16)))


class PollRunner(Generic[T]):
    """Poll many devices concurrently, each on its own schedule; owns its tasks."""

    def __init__(self, devices: Sequence[Any], *, on_result: Callable[[Any, T], Awaitable[None] | None],
                 metrics: PollMetrics | None = None, jitter: float = 0.1, backoff_base_s: float = 1.0,
                 backoff_cap_s: float = 60.0, timeout_s: float | None = None, seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter is a fraction of the interval, 0 <= jitter < 1; got {jitter}")
        self._devices = list(devices)
        self._on_result = on_result
        self._metrics = metrics
        self._jitter = jitter
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._timeout_s = timeout_s
        self._rng = random.Random(seed)
        self._clock = clock
        self._tasks: list[asyncio.Task] = []
        self.online: dict[str, bool | None] = {d.name: None for d in self._devices}

    async def __aenter__(self) -> PollRunner[T]:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start(self) -> None:
        if self._tasks:
            raise RuntimeError("PollRunner already started; call stop() before starting again")
        for device in self._devices:
            self._tasks.append(asyncio.create_task(self._run(device), name=f"poll:{device.name}"))

    async def stop(self, grace_s: float = 5.0) -> None:
        for task in self._tasks:
            task.cancel()
        # Close connections too: a client library that swallows cancellation while waiting for an
        # answer is released by its transport closing. Bounded, so shutdown cannot hang.
        await asyncio.wait_for(asyncio.gather(*(d.close() for d in self._devices), return_exceptions=True),
                               grace_s)
        pending = {t for t in self._tasks if not t.done()}
        deadline = time.monotonic() + grace_s  # real time, whatever clock the schedule runs on
        # A cancellation can be swallowed by a library that catches it while its I/O completes (3.11's
        # wait_for does when the answer and the cancel arrive together); such a task goes on to sleep a
        # whole interval. Cancel what is still running again until it stops, within the grace.
        while pending and (left := deadline - time.monotonic()) > 0:
            _done, pending = await asyncio.wait(pending, timeout=min(0.1, left))
            for task in pending:
                task.cancel()
        if pending:
            log.warning("%d poll tasks did not stop within %.0f s", len(pending), grace_s)
        self._tasks.clear()

    def _set_online(self, device: Any, up: bool, cause: str = "") -> None:
        before = self.online.get(device.name)
        self.online[device.name] = up
        if self._metrics:
            self._metrics.device_up(device.name, up)
        if before is up:
            return
        if up:
            log.info("%s %s", device.name, "online" if before is None else "recovered")
        else:
            log.warning("%s unreachable: %s", device.name, cause)

    async def _run(self, device: Any) -> None:
        interval = device.interval_s
        # Spread first polls over one interval so a fleet does not hit the network at once.
        await asyncio.sleep(self._rng.uniform(0, interval))
        failures = 0
        next_at = self._clock()
        while True:
            started = self._clock()
            try:
                if self._timeout_s:
                    async with asyncio.timeout(self._timeout_s):
                        result = await device.fetch()
                else:  # no limit of the runner's (the device's own timeouts apply): no timer per poll
                    result = await device.fetch()
            except asyncio.CancelledError:
                raise
            except (TimeoutError, PollFailed) as err:
                kind = err.kind if isinstance(err, PollFailed) else "timeout"
                duration = self._clock() - started
                failures += 1
                if self._metrics:
                    self._metrics.poll_failed(device.name, kind, duration)
                self._set_online(device, False, f"{kind}: {err}" if str(err) else kind)
                await asyncio.sleep(max(interval, backoff_delay(failures, *self._backoff, self._rng))
                                    if failures > 1 else interval)
                next_at = self._clock()
                continue
            except Exception as err:  # a bug in a device must not stop the fleet
                failures += 1
                log.exception("%s: unexpected error while polling", device.name)
                if self._metrics:
                    self._metrics.poll_failed(device.name, "internal", self._clock() - started)
                self._set_online(device, False, f"internal error: {err!r}")
                await asyncio.sleep(interval)
                next_at = self._clock()
                continue
            duration = self._clock() - started
            failures = 0
            if self._metrics:
                self._metrics.poll_done(device.name, duration)
            self._set_online(device, True)
            try:
                outcome = self._on_result(device, result)
                if outcome is not None:
                    await outcome
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: handling a poll result failed", device.name)
            # Not kept alive through the sleep: a fleet would hold one reading per device for nothing.
            result = outcome = None
            # Fixed-rate schedule with jitter; if we fell behind, poll now rather than pile up.
            next_at += interval * (1 + self._rng.uniform(-self._jitter, self._jitter))
            now = self._clock()
            if next_at < now:
                next_at = now
            await asyncio.sleep(next_at - now)
