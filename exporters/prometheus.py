"""Prometheus metrics: pipeline health and per-cabinet fleet gauges.

Cardinality is bounded by design: labels are cabinet and site (never slot, cell or battery id),
error kinds come from a fixed vocabulary, decode errors are labelled by profile field name.

    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    metrics.register_device("C0001", "site-a", "modbus")
    metrics.observe(report.reading, report.requests, ["voltage_v"], "modbus")
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.model import BatteryState, CabinetReading

__all__ = ["PipelineMetrics"]

_POLL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PipelineMetrics:
    """All Cascade collector metrics, registered on ``registry`` at construction."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.poll_duration = Histogram("cascade_poll_duration_seconds", "Duration of one device poll",
                                       ["source"], buckets=_POLL_BUCKETS, registry=registry)
        self.poll_errors = Counter("cascade_poll_errors_total", "Failed polls by source kind and failure kind",
                                   ["source", "kind"], registry=registry)
        self.polls = Counter("cascade_polls_total", "Successful polls", ["source"], registry=registry)
        # One value per device in a plain dict, not a `Gauge` child (a child, its lock and value object:
        # ~0.9 KiB a cabinet, bench memory); rendered at scrape time like the fleet gauges.
        self.device_up_gauge = _FleetGauges((("cascade_device_up", "1 when the last poll of the device succeeded"),))
        registry.register(self.device_up_gauge)
        self.readings = Counter("cascade_readings_total", "Slot readings decoded", registry=registry)
        self.decode_errors = Counter("cascade_decode_errors_total", "Register values rejected while decoding",
                                     ["field"], registry=registry)
        self.over_range = Counter("cascade_values_over_range_total",
                                  "Values past their field's valid range, kept as the limit (a sensor at its limit)",
                                  ["field"], registry=registry)
        self.requests = Counter("cascade_source_requests_total",
                                "Requests sources sent to devices (Modbus reads; 0 for pushed data)", ["source"],
                                registry=registry)
        # The per-cabinet fleet gauges: one collector over plain values (a list per cabinet), not a
        # `Gauge` child per (metric, cabinet): ~0.5 KiB a cabinet instead of ~9.5 KiB (bench memory).
        self.fleet = _FleetGauges(_FLEET_GAUGES)
        registry.register(self.fleet)
        self._sites: dict[str, str] = {}
        self._sources: dict[str, str] = {}

    # PollMetrics protocol, called by collectors.runner.PollRunner
    def poll_done(self, device: str, duration_s: float) -> None:
        source = self._sources.get(device, "")
        self.poll_duration.labels(source).observe(duration_s)
        self.polls.labels(source).inc()

    def poll_failed(self, device: str, kind: str, duration_s: float) -> None:
        source = self._sources.get(device, "")
        self.poll_duration.labels(source).observe(duration_s)
        self.poll_errors.labels(source, kind).inc()

    def device_up(self, device: str, up: bool) -> None:
        self.device_up_gauge.values[(self._sites.get(device, ""), device)] = _UP if up else _DOWN

    def register_device(self, device: str, site: str, source: str) -> None:
        """Tell the exporter a device's site and source kind before its first poll (metric labels)."""
        self._sites[device] = site
        self._sources[device] = source

    def count_requests(self, requests: int, source: str = "") -> None:
        """Requests a source sent for a report, also for one whose reading is only evaluated."""
        self.requests.labels(source).inc(requests)

    def observe(self, reading: CabinetReading, requests: int, field_errors: list[str], source: str = "") -> None:
        """Update counters and fleet gauges from one successful report."""
        if requests:
            self.count_requests(requests, source)
        for name in field_errors:
            self.decode_errors.labels(name).inc()
        for name in reading.over_range:
            self.over_range.labels(name).inc()
        # The hottest sensor of each battery (pack, hottest cell, surface): what over_temperature reads.
        temps = [t for s in reading.slots if (t := s.hottest_temperature_c) is not None]
        gases = [s.h2_ppm for s in reading.slots if s.h2_ppm is not None]
        occupied = charging = protected = 0
        for slot in reading.slots:
            for name in slot.over_range:
                self.over_range.labels(name).inc()
            if slot.battery_state not in (None, BatteryState.EMPTY):
                occupied += 1
            if slot.battery_state == BatteryState.CHARGING:
                charging += 1
            if slot.charger_protection or slot.bms_protection:
                protected += 1
        self.readings.inc(len(reading.slots))
        # A value the cabinet does not report (sensor silent, garbage rejected) has no series rather
        # than a fake 0 or, worse, the last value as if it were current. Order: _FLEET_GAUGES.
        self.fleet.values[(reading.site, reading.cabinet_id)] = [
            _number(reading.cabinet_temperature_c), max(temps) if temps else None, max(gases) if gases else None,
            _number(reading.co_ppm), _number(reading.smoke_detected), _number(reading.flame_detected),
            _number(reading.water_detected), _number(reading.input_power_w), float(charging), float(occupied),
            float(protected), reading.timestamp_ns / 1e9]


_UP, _DOWN = [1.0], [0.0]  # shared: a device's value list is replaced, never changed in place


def _number(value: float | bool | None) -> float | None:
    return None if value is None else float(value)


_FLEET_GAUGES: tuple[tuple[str, str], ...] = (
    ("cascade_cabinet_temperature_celsius", "Temperature inside the cabinet"),
    ("cascade_cabinet_battery_temperature_max_celsius", "Hottest battery in the cabinet"),
    ("cascade_cabinet_h2_max_ppm", "Highest compartment H2/off-gas reading"),
    ("cascade_cabinet_co_ppm", "CO concentration"),
    ("cascade_cabinet_smoke_detected", "1 when the smoke detector is active"),
    ("cascade_cabinet_flame_detected", "1 when the flame detector is active"),
    ("cascade_cabinet_water_detected", "1 when water/immersion is detected"),
    ("cascade_cabinet_input_power_watts", "Cabinet input power"),
    ("cascade_cabinet_slots_charging", "Slots charging now"),
    ("cascade_cabinet_slots_occupied", "Slots holding a battery"),
    ("cascade_cabinet_slots_protection_active", "Slots with a charger or BMS protection flag set"),
    ("cascade_cabinet_last_poll_timestamp_seconds", "Unix time of the cabinet's last successful poll"),
)


class _FleetGauges(Collector):
    """Gauges labelled (site, cabinet) whose values are one list per cabinet, rendered at scrape time.

    ``values[(site, cabinet)]`` is replaced whole on each reading, never changed in place, so a render
    in the scrape thread (exporters/scrape.py) sees each cabinet's values from one reading.
    """

    def __init__(self, gauges: tuple[tuple[str, str], ...]) -> None:
        self.gauges = gauges
        self.values: dict[tuple[str, str], list[float | None]] = {}

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(name, doc, labels=["site", "cabinet"]) for name, doc in self.gauges]

    def collect(self) -> list[GaugeMetricFamily]:
        items = list(self.values.items())  # one C-level copy under the GIL: safe against the event loop
        families = []
        for i, (name, doc) in enumerate(self.gauges):
            family = GaugeMetricFamily(name, doc, labels=["site", "cabinet"])
            for labels, values in items:
                value = values[i]
                if value is not None:
                    family.add_metric(labels, value)
            families.append(family)
        return families
