"""AlertmanagerPusher timestamps: endsAt of a firing alert is set when it is pushed, not when queued.

A local aiohttp app stands in for ``POST /api/v2/alerts``; the pusher's clock is injected, so an
outage of many resend intervals takes a fraction of a second of real time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest
from aiohttp import web

from alerting.alertmanager import AlertmanagerPusher
from tests.fixtures.clock import T0, ManualClock
from tests.fixtures.http import start_app

RESEND_S = 60.0


class FakeAlertmanager:
    """Answers 503 while ``down``; records every alert it accepts with the pusher clock's time."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.down = False
        self.attempts = 0
        self.received: list[tuple[float, dict]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _alerts(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.attempts += 1
        if self.down:
            return web.Response(status=503, text="down")
        self.received.extend((self.clock(), alert) for alert in body)
        return web.Response(status=200)

    async def __aenter__(self) -> FakeAlertmanager:
        app = web.Application()
        app.router.add_post("/api/v2/alerts", self._alerts)
        self._runner, self.url = await start_app(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def _until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def _pusher(am: FakeAlertmanager, clock: ManualClock) -> AlertmanagerPusher:
    # resend_interval_s is on the injected clock's scale for endsAt, but the re-send timer runs on
    # the real monotonic clock: 60 s real means no periodic re-send happens during the test.
    return AlertmanagerPusher(am.url, resend_interval_s=RESEND_S, clock=clock,
                              retry_initial_s=0.01, retry_max_s=0.02)


async def test_fire_queued_through_a_long_outage_arrives_firing_with_its_start_time():
    clock = ManualClock(T0)
    async with FakeAlertmanager(clock) as am:
        am.down = True
        async with _pusher(am, clock) as pusher:
            labels = {"alertname": "over_temperature", "level": "3"}
            pusher.fire(labels, {"summary": "hot"}, starts_at=T0 - 5)
            await _until(lambda: am.attempts >= 2)
            clock.now = T0 + 10 * RESEND_S  # the outage outlasts 4 x resend interval
            # A request built before the clock moved may still be in flight: let two more fail, so
            # the first one that succeeds was built at the new time (attempts are sequential).
            seen = am.attempts
            await _until(lambda: am.attempts >= seen + 2)
            am.down = False
            await _until(lambda: am.received)
            pushed_at, alert = am.received[0]
            assert _ts(alert["endsAt"]) > pushed_at, "a fresh alert must not arrive already resolved"
            assert _ts(alert["endsAt"]) == pytest.approx(pushed_at + 4 * RESEND_S, abs=0.01)
            assert _ts(alert["startsAt"]) == pytest.approx(T0 - 5, abs=0.01)
            assert alert["labels"] == labels and alert["annotations"] == {"summary": "hot"}
            assert not pusher.pending and pusher.up


async def test_resolve_queued_through_an_outage_keeps_its_resolution_time():
    clock = ManualClock(T0)
    async with FakeAlertmanager(clock) as am:
        async with _pusher(am, clock) as pusher:
            labels = {"alertname": "h2_gas", "level": "2"}
            pusher.fire(labels, {}, starts_at=T0)
            await _until(lambda: len(am.received) == 1)
            am.down = True
            clock.now = T0 + 30
            pusher.resolve(labels)
            await _until(lambda: am.attempts >= 3)
            clock.now = T0 + 10 * RESEND_S
            am.down = False
            await _until(lambda: len(am.received) == 2)
            _, resolved = am.received[1]
            assert _ts(resolved["endsAt"]) == pytest.approx(T0 + 30, abs=0.01)
            assert _ts(resolved["startsAt"]) == pytest.approx(T0, abs=0.01)
            assert not pusher.is_firing(labels)


async def test_each_resend_of_a_firing_alert_carries_a_fresh_end_time():
    clock = ManualClock(T0)
    async with FakeAlertmanager(clock) as am:
        pusher = AlertmanagerPusher(am.url, resend_interval_s=0.05, clock=clock,
                                    retry_initial_s=0.01, retry_max_s=0.02)
        async with pusher:
            pusher.fire({"alertname": "smoke"}, {}, starts_at=T0)
            await _until(lambda: am.received)
            clock.now = T0 + 1000
            await _until(lambda: am.received[-1][0] == T0 + 1000)
        pushed_at, alert = am.received[-1]
        assert _ts(alert["endsAt"]) == pytest.approx(pushed_at + 4 * 0.05, abs=0.01)
        assert _ts(alert["startsAt"]) == pytest.approx(T0, abs=0.01)
