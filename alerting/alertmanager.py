"""Push alerts to Alertmanager (API v2, ``POST /api/v2/alerts``) without ever blocking the caller.

    async with AlertmanagerPusher("http://127.0.0.1:9093", registry=registry) as pusher:
        pusher.fire(labels, annotations, starts_at=t)    # from a reading hook: returns at once
        pusher.resolve(labels)                           # endsAt = now: resolved

Alertmanager forgets an alert at its ``endsAt``, so a firing alert is sent with
``endsAt = now + 4 × resend_interval_s`` and re-sent every ``resend_interval_s`` while it is
active: if Cascade dies, Alertmanager resolves its alerts on its own after four missed re-sends,
instead of paging forever about a situation nobody is watching any more. ``now`` is the time of
the push, not of the ``fire()`` call: an alert raised during an Alertmanager outage is delivered
firing (with its original ``startsAt``) however long the outage lasted. A resolve keeps the time
of the ``resolve()`` call as its ``endsAt``.

The desired state (what should be firing) lives in ``active``; changes wait in a bounded
``pending`` map keyed by label set, so a fire followed by a resolve of the same alert before the
next push is one request. A failed push leaves the changes pending and retries with capped
exponential backoff; every failed request counts in ``cascade_alert_push_failures_total``. When
``pending`` is full the oldest change is dropped (counted): a dropped *fire* comes back with the
next re-send, a dropped *resolve* lets Alertmanager time the alert out at its ``endsAt``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["AlertmanagerPusher", "label_key"]

log = logging.getLogger(__name__)

LabelKey = tuple[tuple[str, str], ...]


def label_key(labels: Mapping[str, str]) -> LabelKey:
    """Identity of an alert in Alertmanager: its full label set (Alertmanager's fingerprint)."""
    return tuple(sorted(labels.items()))


@dataclass(frozen=True, eq=False)  # identity matters: a newer change for the same alert is a new object
class _Change:
    """One alert change waiting to be pushed. ``ends`` is None for a firing alert: its endsAt is
    computed when it is pushed, so time spent waiting in ``pending`` does not shorten it."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts: float
    ends: float | None
    status: str


_ACK_MARK = "cascade-ack:"  # marks the silences Cascade made for acknowledgements


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AlertmanagerPusher:
    """Background pusher to one Alertmanager; see the module docstring for the semantics."""

    def __init__(self, url: str, *, resend_interval_s: float = 60.0, session: aiohttp.ClientSession | None = None,
                 registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time,
                 max_pending: int = 10_000, batch_size: int = 500, timeout_s: float = 5.0,
                 retry_initial_s: float = 0.5, retry_max_s: float = 30.0, generator_url: str | None = None,
                 on_pushed: Callable[[list[dict[str, Any]], float], None] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"alertmanager url {url!r} must start with http:// or https://")
        if resend_interval_s <= 0:
            raise ValueError("resend_interval_s must be > 0: Alertmanager drops alerts that are not re-sent")
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.silences_url = url.rstrip("/") + "/api/v2/silences"
        # Silences created for acknowledged alerts: label key -> Alertmanager silence id.
        self.silences: dict[LabelKey, str] = {}
        self._silence_tasks: set[asyncio.Task[None]] = set()
        self.resend_interval_s = float(resend_interval_s)
        self.generator_url = generator_url
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._max_pending = max_pending
        self._batch_size = batch_size
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retry_initial_s, self._retry_max_s = retry_initial_s, retry_max_s
        self._on_pushed = on_pushed
        self._rng = random.Random()
        # label key -> (labels, annotations, starts_at) of every alert that should be firing
        self.active: dict[LabelKey, tuple[dict[str, str], dict[str, str], float]] = {}
        # label key -> change waiting to be sent (latest change wins)
        self.pending: dict[LabelKey, _Change] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._next_resend = 0.0
        self.up = True
        registry = registry if registry is not None else CollectorRegistry()
        self._failures = Counter("cascade_alert_push_failures_total",
                                 "Alertmanager pushes that failed (each failed request; retried)", registry=registry)
        self._pushed = Counter("cascade_alert_pushed_total", "Alerts delivered to Alertmanager, by status",
                               ["status"], registry=registry)
        self._dropped = Counter("cascade_alert_push_dropped_total",
                                "Alert changes dropped because the pending queue was full", registry=registry)
        Gauge("cascade_alert_push_pending", "Alert changes waiting to be pushed",
              registry=registry).set_function(lambda: len(self.pending))

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> AlertmanagerPusher:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._next_resend = time.monotonic() + self.resend_interval_s
        self._task = asyncio.create_task(self._run(), name="alertmanager-push")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._silence_tasks:  # an acknowledgement in flight still reaches Alertmanager (bounded)
            await asyncio.wait(set(self._silence_tasks), timeout=self._timeout.total)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            # One last try so resolves made during shutdown are not lost; bounded by the timeout.
            if self.pending:
                await self._push_pending()
        except Exception as err:  # noqa: BLE001 - shutdown must finish
            log.warning("alertmanager: final push failed (%s); Alertmanager will time the alerts out", err)
        finally:
            if self._owns_session and self._session is not None:
                await self._session.close()

    # -- API (never blocks, never raises on I/O) ---------------------------------------------------

    def silence(self, labels: Mapping[str, str], *, who: str, comment: str, until: float,
                starts_in: float = 0.0) -> None:
        """Stop repeat notifications of exactly this alert until ``until`` (an acknowledgement):
        an Alertmanager silence matching all its labels, created by ``who``, starting ``starts_in``
        seconds from now. A different level is a different label set, so an escalation pages again."""
        self._spawn_silence(self._post_silence(dict(labels), who, comment, until, starts_in))

    def unsilence(self, labels: Mapping[str, str]) -> None:
        """Expire the acknowledgement silence of this alert (it cleared or changed level), so a new
        raise of the same alert pages again. Silences from before a restart are found by matcher."""
        self._spawn_silence(self._expire_silence(dict(labels)))

    def _spawn_silence(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro, name="alertmanager-silence")
        except RuntimeError:  # no loop (tests driving the service synchronously): nothing to do
            coro.close()
            return
        self._silence_tasks.add(task)
        task.add_done_callback(self._silence_tasks.discard)

    async def _post_silence(self, labels: dict[str, str], who: str, comment: str, until: float,
                            starts_in: float = 0.0) -> None:
        now = self._clock()
        body = {"matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True}
                             for k, v in sorted(labels.items())],
                "startsAt": _rfc3339(now + max(0.0, starts_in)), "endsAt": _rfc3339(max(until, now + 60)),
                "createdBy": f"{who} (acknowledged in Cascade)", "comment": f"{_ACK_MARK} {comment}".strip()}
        try:
            assert self._session is not None
            async with self._session.post(self.silences_url, json=body, timeout=self._timeout) as resp:
                if resp.status >= 300:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                      message=(await resp.text())[:200])
                self.silences[label_key(labels)] = (await resp.json())["silenceID"]
            log.info("alertmanager: %s acknowledged by %s: repeat notifications silenced", labels.get("alertname"),
                     who)
        except Exception as err:  # noqa: BLE001 - the acknowledgement itself is stored; paging goes on
            log.warning("alertmanager: could not silence acknowledged alert %s (%s); it keeps paging",
                        labels.get("alertname"), err)

    async def _expire_silence(self, labels: dict[str, str]) -> None:
        key = label_key(labels)
        ids = [self.silences.pop(key)] if key in self.silences else []
        try:
            assert self._session is not None
            if not ids:  # made before a restart: find it by its exact matchers and our mark
                async with self._session.get(self.silences_url, timeout=self._timeout) as resp:
                    found = await resp.json() if resp.status < 300 else []
                want = sorted(labels.items())
                ids = [s["id"] for s in found if s.get("status", {}).get("state") in ("active", "pending")
                       and str(s.get("comment", "")).startswith(_ACK_MARK)
                       and sorted((m["name"], m["value"]) for m in s.get("matchers", [])) == want]
            for silence_id in ids:
                url = self.silences_url.removesuffix("silences") + f"silence/{silence_id}"
                async with self._session.delete(url, timeout=self._timeout) as resp:
                    if resp.status >= 300 and resp.status != 404:
                        log.warning("alertmanager: expiring silence %s: HTTP %s", silence_id, resp.status)
        except Exception as err:  # noqa: BLE001 - it expires at its end time anyway
            log.warning("alertmanager: could not expire the acknowledgement silence of %s (%s)",
                        labels.get("alertname"), err)

    def fire(self, labels: Mapping[str, str], annotations: Mapping[str, str], *, starts_at: float | None = None) -> None:
        """Alertmanager should hold this alert as firing until :meth:`resolve`."""
        key = label_key(labels)
        now = self._clock()
        old = self.active.get(key)
        starts = old[2] if old else (now if starts_at is None else min(starts_at, now))
        self.active[key] = (dict(labels), dict(annotations), starts)
        self._queue(key, _Change(dict(labels), dict(annotations), starts, None, "firing"))

    def resolve(self, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None) -> None:
        """Resolve the alert with exactly these labels (endsAt = now)."""
        key = label_key(labels)
        now = self._clock()
        old = self.active.pop(key, None)
        notes = dict(annotations) if annotations is not None else (old[1] if old else {})
        self._queue(key, _Change(dict(labels), notes, old[2] if old else now, now, "resolved"))

    def is_firing(self, labels: Mapping[str, str]) -> bool:
        return label_key(labels) in self.active

    # -- internals ----------------------------------------------------------------------------------

    def _payload(self, labels: dict[str, str], annotations: dict[str, str], starts: float, ends: float) -> dict:
        payload = {"labels": labels, "annotations": annotations, "startsAt": _rfc3339(starts),
                   "endsAt": _rfc3339(ends)}
        if self.generator_url:
            payload["generatorURL"] = self.generator_url
        return payload

    def _queue(self, key: LabelKey, change: _Change) -> None:
        self.pending.pop(key, None)  # re-insert: newest last, so overflow drops the oldest change
        self.pending[key] = change
        while len(self.pending) > self._max_pending:
            self.pending.pop(next(iter(self.pending)))
            self._dropped.inc()
        self._wake.set()

    async def _run(self) -> None:
        delay = 0.0
        while True:
            if delay:
                await asyncio.sleep(delay)  # backing off: new changes wait for the retry
            elif not self.pending:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, self._next_resend - time.monotonic()))
            self._wake.clear()
            if time.monotonic() >= self._next_resend:
                self._refresh_active()
            if not self.pending:
                delay = 0.0
                continue
            try:
                await self._push_pending()
            except Exception as err:  # noqa: BLE001 - network, HTTP or protocol: retry the same changes
                self._failures.inc()
                delay = min(self._retry_max_s, (delay * 2) or self._retry_initial_s) * self._rng.uniform(0.5, 1.0)
                if self.up:
                    log.error("alertmanager %s: push failed (%s); retrying with backoff, %d changes pending. "
                              "Check that Alertmanager runs and alerting.alertmanager_url points at it",
                              self.url, err, len(self.pending))
                self.up = False
                continue
            if not self.up:
                log.info("alertmanager %s: pushes succeed again", self.url)
            self.up = True
            delay = 0.0

    def _refresh_active(self) -> None:
        """Re-send every firing alert (Alertmanager needs re-sends); endsAt is set when pushed."""
        for key, (labels, notes, starts) in self.active.items():
            if key not in self.pending:
                self.pending[key] = _Change(labels, notes, starts, None, "firing")
        self._next_resend = time.monotonic() + self.resend_interval_s

    async def _push_pending(self) -> None:
        assert self._session is not None
        while self.pending:
            batch = list(self.pending.items())[: self._batch_size]
            # Firing alerts get endsAt from the time of this push, not of the change: after a long
            # outage a queued fire must still arrive firing.
            fresh_ends = self._clock() + 4 * self.resend_interval_s
            body = [self._payload(c.labels, c.annotations, c.starts, fresh_ends if c.ends is None else c.ends)
                    for _, c in batch]
            async with self._session.post(self.url, json=body, timeout=self._timeout) as resp:
                if resp.status >= 300:
                    text = (await resp.text())[:200]
                    raise RuntimeError(f"HTTP {resp.status}: {text}")
            pushed_at = self._clock()
            for key, entry in batch:
                if self.pending.get(key) is entry:  # a newer change for this alert stays pending
                    del self.pending[key]
                self._pushed.labels(entry.status).inc()
            if self._on_pushed is not None:
                self._on_pushed(body, pushed_at)
