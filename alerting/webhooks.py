"""Warning-signal push (P-5.5.3): every alert level change, POSTed to each subscriber's webhook, signed.

    pusher = WebhookPusher([Subscriber("city-platform", "https://...", secret=b"...", levels=frozenset({2, 3}))],
                           log_path="var/webhook-deliveries.jsonl")
    async with pusher:                 # one delivery task per subscriber
        pusher.handle(events)          # the alert service's event handler: never blocks

Each alert event (:class:`core.events.AlertEvent`: raise, escalate, de-escalate, clear) a subscriber wants
(``levels``: the level reached, or the level left for a clear) becomes one JSON body
(:class:`alerting.apiv1.models.WarningSignal`), queued per subscriber and sent in order:

* ``X-Cascade-Timestamp``: Unix seconds when this attempt was signed;
* ``X-Cascade-Signature: sha256=<hex>``: HMAC-SHA256 with the subscriber's secret over
  ``<timestamp>.<body>`` (the receiver recomputes it, compares in constant time and refuses old timestamps);
* ``X-Cascade-Delivery``: the delivery id, the same on every retry (the receiver deduplicates on it).

A 2xx answer is delivered. A timeout, a connection error, a 5xx, 408 or 429 is retried after a back-off
(``backoff_s`` doubling up to ``backoff_cap_s``, with jitter; a 429's ``Retry-After`` is honoured within
the cap) until ``max_attempts``; any other answer fails at once (the receiver refuses it: retrying will
not help). Every attempt is a line of the delivery log (``log_path``, JSON lines) and an entry of
:attr:`WebhookPusher.recent` (``GET /api/v1/logs/deliveries``). A subscriber that stays down holds at
most ``queue_size`` signals; older ones are dropped first, logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from core.events import AlertEvent
from core.tasks import cancel_and_wait

__all__ = ["Subscriber", "WebhookPusher", "sign", "signal_body"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Cascade-Signature"
TIMESTAMP_HEADER = "X-Cascade-Timestamp"
DELIVERY_HEADER = "X-Cascade-Delivery"
_RETRY_STATUS = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A third party that receives warning signals (``alerting.webhooks[]`` in the configuration)."""

    name: str
    url: str
    secret: bytes = field(repr=False)
    levels: frozenset[int] = frozenset({1, 2, 3})
    timeout_s: float = 5.0
    max_attempts: int = 6
    backoff_s: float = 1.0
    backoff_cap_s: float = 60.0
    queue_size: int = 1000

    def wants(self, event: AlertEvent) -> bool:
        return (event.level if event.kind != "clear" else event.from_level) in self.levels


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Cascade-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def _clip(text: str | None, limit: int = 2000) -> str | None:
    return None if text is None else text[:limit]


def signal_body(event: AlertEvent, delivery_id: str) -> bytes:
    """The JSON body of one warning signal (schema: ``WarningSignal`` in the OpenAPI document)."""
    value = event.value if isinstance(event.value, (int, float)) and not isinstance(event.value, bool) else None
    at = datetime.fromtimestamp(event.timestamp_ns / 1e9, UTC) if event.timestamp_ns else datetime.now(UTC)
    doc = {
        "id": delivery_id, "event": "alert", "at": at.isoformat().replace("+00:00", "Z"),
        "alert": {"rule": event.rule, "category": event.category or "device_fault", "kind": event.kind,
                  "level": event.level, "from_level": event.from_level, "severity": event.severity,
                  "site": event.site, "cabinet": event.cabinet, "slot": event.slot, "battery": event.battery,
                  "value": value, "summary": _clip(event.summary), "diagnosis": _clip(event.diagnosis),
                  "action": _clip(event.action)},
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(slots=True)
class _Signal:
    id: str
    event: str
    body: bytes


class WebhookPusher:
    """Queues warning signals per subscriber and delivers them (module docstring).

    ``session``: an aiohttp session (default: one of its own). ``clock``: wall-clock seconds for the
    signature timestamp and the log.
    """

    def __init__(self, subscribers: Iterable[Subscriber], *, log_path: str | Path | None = None,
                 session: aiohttp.ClientSession | None = None, clock: Callable[[], float] = time.time,
                 history: int = 1000) -> None:
        self.subscribers = list(subscribers)
        names = [s.name for s in self.subscribers]
        if len(set(names)) != len(names):
            raise ValueError(f"webhook subscriber names must be unique, got {names}")
        self._log_path = Path(log_path) if log_path is not None else None
        self._session = session
        self._own_session = False
        self._clock = clock
        self._queues: dict[str, deque[_Signal]] = {s.name: deque() for s in self.subscribers}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.recent: deque[dict[str, Any]] = deque(maxlen=history)
        """The latest delivery attempts, oldest first (the API's delivery log)."""
        self.dropped = 0

    async def __aenter__(self) -> WebhookPusher:
        if self._session is None and self.subscribers:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        for sub in self.subscribers:
            self._wake[sub.name] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._deliver_loop(sub), name=f"webhook-{sub.name}"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._tasks)
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def handle(self, points: Iterable[object]) -> None:
        """The event handler: queue every alert event each subscriber wants. Never blocks, never raises."""
        for point in points:
            if not isinstance(point, AlertEvent):
                continue
            for sub in self.subscribers:
                if not sub.wants(point):
                    continue
                delivery = uuid.uuid4().hex
                queue = self._queues[sub.name]
                if len(queue) >= sub.queue_size:
                    lost = queue.popleft()
                    self.dropped += 1
                    log.warning("webhook %s: queue full (%d), dropped signal %s", sub.name, sub.queue_size, lost.id)
                queue.append(_Signal(delivery, f"alert.{point.kind}", signal_body(point, delivery)))
                wake = self._wake.get(sub.name)
                if wake is not None:
                    wake.set()

    def pending(self, subscriber: str) -> int:
        return len(self._queues[subscriber])

    async def _deliver_loop(self, sub: Subscriber) -> None:
        queue, wake = self._queues[sub.name], self._wake[sub.name]
        while True:
            while not queue:
                wake.clear()
                await wake.wait()
            signal = queue[0]
            await self._deliver(sub, signal)
            if queue and queue[0] is signal:
                queue.popleft()

    async def _deliver(self, sub: Subscriber, signal: _Signal) -> None:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=sub.timeout_s)
        for attempt in range(1, sub.max_attempts + 1):
            stamp = str(int(self._clock()))
            headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: stamp, DELIVERY_HEADER: signal.id,
                       SIGNATURE_HEADER: sign(sub.secret, stamp, signal.body), "X-Cascade-Event": signal.event,
                       "User-Agent": "cascade-webhook/1"}
            status: int | None = None
            retry_after: float | None = None
            try:
                async with self._session.post(sub.url, data=signal.body, headers=headers, timeout=timeout,
                                              allow_redirects=False) as resp:
                    status = resp.status
                    await resp.read()
                    retry_after = _seconds(resp.headers.get("Retry-After"))
                error = "" if 200 <= status < 300 else f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError) as err:
                error = f"{type(err).__name__}: {err}"[:500]
            if status is not None and 200 <= status < 300:
                self._record(sub, signal, attempt, status, "delivered", "")
                return
            retryable = status is None or status >= 500 or status in _RETRY_STATUS
            if not retryable or attempt == sub.max_attempts:
                self._record(sub, signal, attempt, status, "failed", error)
                log.error("webhook %s: signal %s not delivered after %d attempt(s): %s", sub.name, signal.id,
                          attempt, error)
                return
            self._record(sub, signal, attempt, status, "retrying", error)
            delay = min(sub.backoff_cap_s, sub.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.8, 1.0)
            if retry_after is not None:
                delay = min(sub.backoff_cap_s, max(delay, retry_after))
            await asyncio.sleep(delay)

    def _record(self, sub: Subscriber, signal: _Signal, attempt: int, status: int | None, result: str,
                error: str) -> None:
        entry = {"id": signal.id, "subscriber": sub.name, "event": signal.event, "attempt": attempt,
                 "at": self._clock(), "status": status, "result": result, "error": error}
        self.recent.append(entry)
        if self._log_path is None:
            return
        try:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        except OSError as err:
            log.error("webhook delivery log %s not written: %s", self._log_path, err)


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    return None
