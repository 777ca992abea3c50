"""Fan one webhook out into deliveries (alert x channel x recipient), with retries and bounded concurrency.

Deliveries run as background tasks: Alertmanager gets its 200 as soon as the payload is accepted,
so a slow SMS gateway cannot stall Alertmanager's notification pipeline, and a retried webhook
cannot re-send the channels that already succeeded. The price is that retrying is our job: transient
failures back off exponentially with jitter (so a recovering gateway is not hit by every page at
the same instant) and each delivery ends as ``sent`` or ``failed`` in the log and the metrics.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Mapping

import aiohttp

from .config import Delivery, NotifierConfig
from .delivery_log import DeliveryLog, DeliveryRecord
from .messages import compose
from .metrics import NotifyMetrics
from .providers import Outcome, send_message
from .webhook import WebhookAlert

__all__ = ["Dispatcher", "compute_backoff"]


def compute_backoff(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, with 50-100% jitter."""
    return min(max_s, initial_s * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)


class Dispatcher:
    def __init__(self, config: NotifierConfig, *, session: aiohttp.ClientSession, metrics: NotifyMetrics,
                 log: DeliveryLog, clock: Callable[[], float], rng: random.Random | None = None) -> None:
        self._config = config
        self._session = session
        self._metrics = metrics
        self._log = log
        self._clock = clock
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def dispatch(self, receiver: str, alerts: Iterable[WebhookAlert]) -> int:
        """Start the deliveries for ``alerts`` sent to ``receiver``; return how many were started."""
        received = time.monotonic()
        started = 0
        for alert in alerts:
            for delivery in self._config.receivers[receiver]:
                if not _wanted(delivery, alert):
                    continue
                for recipient in delivery.recipients:
                    task = asyncio.create_task(self._deliver(receiver, delivery, alert, recipient, received))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    started += 1
        return started

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait until every started delivery has finished (tests; graceful shutdown)."""
        pending = set(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    async def close(self, timeout_s: float = 10.0) -> None:
        await self.drain(timeout_s)
        for task in list(self._tasks):
            task.cancel()

    async def _deliver(self, receiver: str, delivery: Delivery, alert: WebhookAlert, recipient: str,
                       received: float) -> None:
        provider = self._config.providers[delivery.provider]
        retry = self._config.retry
        context = {
            "recipient": recipient, "receiver": receiver, "channel": delivery.channel, "status": alert.status,
            "fingerprint": alert.fingerprint, "starts_at": alert.starts_at, "ends_at": alert.ends_at,
            "generator_url": alert.generator_url, "labels": alert.labels, "annotations": alert.annotations,
            "target": describe_target(alert.labels),
            # The ready-made texts ({{message.sms}}, ...) in this recipient's language.
            "message": compose(alert, delivery.language_for(recipient), self._config.timezone),
        }
        attempt = 0
        outcome = Outcome(ok=False, error="not attempted")
        cancelled = False
        try:
            while attempt < retry.attempts:
                attempt += 1
                async with self._slots:
                    try:
                        outcome = await send_message(provider, context, session=self._session,
                                                     timeout_s=retry.timeout_s, clock=self._clock)
                    except Exception as err:  # noqa: BLE001 - one bad message must not kill the others
                        outcome = Outcome(ok=False, retryable=False, error=f"{type(err).__name__}: {err}")
                if outcome.ok or not outcome.retryable:
                    break
                if attempt < retry.attempts:
                    await asyncio.sleep(compute_backoff(attempt, retry.initial_delay_s, retry.max_delay_s,
                                                        self._rng))
        except asyncio.CancelledError:
            # Shut down while retrying: the delivery log must still say this message did not go out.
            cancelled = True
            outcome = Outcome(ok=False, error=f"notifier stopped before delivery ({outcome.error or 'pending'})")
        result = "sent" if outcome.ok else "failed"
        elapsed = time.monotonic() - received
        self._metrics.deliveries.labels(delivery.channel, result).inc()
        self._metrics.delivery_seconds.labels(delivery.channel).observe(elapsed)
        self._log.write(DeliveryRecord(
            receiver=receiver, channel=delivery.channel, provider=delivery.provider, recipient=recipient,
            fingerprint=alert.fingerprint, alertname=alert.labels.get("alertname", ""), status=alert.status,
            attempts=attempt, result=result, code=outcome.code, error=outcome.error,
            duration_s=round(elapsed, 3)))
        if cancelled:
            raise asyncio.CancelledError


def _wanted(delivery: Delivery, alert: WebhookAlert) -> bool:
    if alert.status == "resolved" and not delivery.send_resolved:
        return False
    # An alert without a level (mislabelled rule) is delivered rather than dropped: better noisy than silent.
    return not alert.level or alert.level in delivery.levels


def describe_target(labels: Mapping[str, str]) -> str:
    """Where, in words: ``site-01/C0003 slot 5``, or ``site-01/C0003`` for a cabinet-wide alert
    (a template writing ``slot {{labels.slot}}`` would say "slot " for those)."""
    where = "/".join(v for v in (labels.get("site", ""), labels.get("cabinet", "")) if v)
    slot = labels.get("slot", "")
    return f"{where} slot {slot}" if slot else where or labels.get("component", "")
