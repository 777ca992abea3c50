"""Notifier metrics, registered on the registry passed in (tests use a fresh one per app)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["NotifyMetrics", "create_metrics"]


@dataclass(frozen=True)
class NotifyMetrics:
    deliveries: Counter
    delivery_seconds: Histogram
    webhooks: Counter


def create_metrics(registry: CollectorRegistry) -> NotifyMetrics:
    return NotifyMetrics(
        deliveries=Counter("cascade_notify_deliveries_total",
                           "Finished deliveries (after retries) by channel and result (sent|failed).",
                           ["channel", "result"], registry=registry),
        # Includes retries and backoff: this is how long the person waited for the page.
        delivery_seconds=Histogram("cascade_notify_delivery_seconds",
                                   "Time from webhook receipt to final delivery outcome.", ["channel"],
                                   buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
                                   registry=registry),
        webhooks=Counter("cascade_notify_webhooks_total",
                         "Alertmanager webhooks received, by receiver and result "
                         "(accepted|bad_request|unknown_receiver).",
                         ["receiver", "result"], registry=registry),
    )
