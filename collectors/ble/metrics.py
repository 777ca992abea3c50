"""The gateway's Prometheus series, read from its exact counters at scrape time (``--metrics-port``).

    cascade_gateway_packs_seen                      packs found by the scan
    cascade_gateway_packs_connected                 BLE links open now
    cascade_gateway_readings_total                  polls that produced a reading
    cascade_gateway_poll_failures_total{kind}       failed polls by kind (unreachable, timeout, frame, ...)
    cascade_gateway_frame_errors_total{reason}      rejected frames by reason (checksum, length, ...)
    cascade_gateway_connects_total / _disconnects_total / _adapter_resets_total
    cascade_gateway_reconnect_seconds_max           worst time from a lost link to that pack's next reading
    cascade_gateway_uplink_reports_total{state}     submitted, sent; dropped by reason
    cascade_gateway_uplink_buffered                 reports in the disk buffer now
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["GatewayCollector", "registry_for"]


class GatewayCollector(Collector):
    """Turns ``gateway.stats``, its packs and ``uplink.counters()`` into series (no state of its own)."""

    def __init__(self, gateway: Any, uplink: Any) -> None:
        self.gateway = gateway
        self.uplink = uplink

    def collect(self) -> Iterator[Any]:
        g, stats = self.gateway, self.gateway.stats
        packs = list(g.packs.values())
        yield GaugeMetricFamily("cascade_gateway_packs_seen", "Packs found by the scan", value=len(packs))
        yield GaugeMetricFamily("cascade_gateway_packs_connected", "BLE links open now",
                                value=sum(1 for p in packs if p.session is not None and p.session.connected))
        yield CounterMetricFamily("cascade_gateway_readings", "Polls that produced a reading", value=stats.readings)
        failures = CounterMetricFamily("cascade_gateway_poll_failures", "Failed polls by kind", labels=["kind"])
        for kind, n in sorted(stats.failures.items()):
            failures.add_metric([kind], n)
        yield failures
        frames = CounterMetricFamily("cascade_gateway_frame_errors", "Rejected frames by reason", labels=["reason"])
        for reason, n in sorted(stats.frame_errors.items()):
            frames.add_metric([reason], n)
        yield frames
        for name, value, text in (("connects", stats.connects, "BLE connections opened"),
                                  ("disconnects", stats.disconnects, "BLE links lost"),
                                  ("adapter_resets", stats.adapter_resets, "Bluetooth adapter power cycles")):
            yield CounterMetricFamily(f"cascade_gateway_{name}", text, value=value)
        yield GaugeMetricFamily("cascade_gateway_reconnect_seconds_max",
                                "Worst time from a lost link to that pack's next reading",
                                value=max(stats.reconnect_s, default=0.0))
        counters = self.uplink.counters()
        reports = CounterMetricFamily("cascade_gateway_uplink_reports", "Uplink reports by state", labels=["state"])
        for key in ("submitted", "sent"):
            reports.add_metric([key], counters.get(key, 0))
        for key, n in counters.items():
            if key.startswith("dropped_"):
                reports.add_metric([key], n)
        yield reports
        yield GaugeMetricFamily("cascade_gateway_uplink_buffered", "Reports in the disk buffer now",
                                value=counters.get("buffered", 0))


def registry_for(gateway: Any, uplink: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway, uplink))
    return registry
