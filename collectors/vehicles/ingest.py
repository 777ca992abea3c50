"""Vehicle ingest: bytes of one report in, a stored :class:`~core.model.VehicleReading` or a refusal out.

Shared by both transports (:mod:`.mqtt`, :mod:`.https`). The worker holds no state that correctness
depends on, so any number of workers may share one stream (MQTT 5 shared subscriptions) and a
vehicle's reports may reach different workers (docs/vehicles.md, "Several workers"):

* storage is idempotent: a report is stored at the device's own timestamp under the vehicle's
  series, so a report stored twice (a redelivery that reached another worker) is one point;
* "latest" is by device time, never by arrival (InfluxDB ``last()``), so out-of-order arrival across
  workers cannot make an older position current;
* de-duplication and rate limits here are per worker: they keep redeliveries and floods off the
  write path, they are not what makes the count right.

    ingest = VehicleIngest(registry, sink=sink, metrics=IngestMetrics(registry=prom))
    outcome = ingest.accept(payload, transport="mqtt", device="V0001", fleet="bj")
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry, Counter, Gauge, Metric
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from core.model import CabinetReading, VehicleReading
from core.ports import PointSink

from .trust import REPLAY_WINDOW_S, DeviceRegistry, Gate, freshness
from .wire import FieldProblem, WireError, decode_checked, to_reading

__all__ = ["REASONS", "IngestMetrics", "Outcome", "VehicleIngest"]

log = logging.getLogger("cascade.vehicles")

REASONS = {
    "not_json": "the payload is not JSON",
    "schema": "the payload is not a report (wrong type or missing field)",
    "too_large": "the payload is larger than a report can be",
    "unknown_device": "no such device is provisioned",
    "wrong_device": "the report names another device than the one that sent it",
    "wrong_topic": "the topic is not this device's",
    "stale": "the report's time is more than five minutes in the past",
    "future": "the report's time is more than five minutes in the future",
    "duplicate": "this report (sequence number) was already received",
    "replayed": "the sequence number is far behind this device's",
    "rate_limited": "the device sends faster than its limit",
    "bad_signature": "the signature does not match the body",
    "bad_request": "the request is missing a header or is malformed",
}
"""Every refusal reason (the ``reason`` label) and what it means (docs/vehicles.md)."""


@dataclass(slots=True)
class Outcome:
    """What became of one report: stored (``reason`` empty) or refused with a reason and detail.

    Read-only by convention: not ``frozen`` because a frozen dataclass costs three times as much to build,
    once per report (~0.7 µs of the ~20 the hot path is allowed, docs/scaling.md)."""

    reason: str = ""
    detail: str = ""
    vehicle: str = ""
    seq: int | None = None
    fields_rejected: int = 0
    reading: VehicleReading | None = None  # what was stored
    packs: CabinetReading | None = None  # a BLE gateway's packs, as stored (one slot per pack)
    report_ts_ms: int | None = None  # a report refused as stale / future: its time (V-4.6 clock skew)

    @property
    def ok(self) -> bool:
        return not self.reason


class IngestMetrics:
    """``cascade_vehicle_*`` series on ``registry`` (a private one when None)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.accepted = Counter("cascade_vehicle_reports_total", "Vehicle reports stored, by transport",
                                ["transport"], registry=registry)
        self.rejected = Counter("cascade_vehicle_rejected_total",
                                "Vehicle reports refused (nothing of them stored), by transport and reason",
                                ["transport", "reason"], registry=registry)
        self.values_rejected = Counter("cascade_vehicle_values_rejected_total",
                                       "Values dropped from otherwise stored vehicle reports, by field",
                                       ["field"], registry=registry)
        self.over_range = Counter("cascade_vehicle_values_over_range_total",
                                  "Vehicle values at or past a sensor's range, kept as the limit", ["field"],
                                  registry=registry)
        self.tracked = Gauge("cascade_vehicle_tracked", "Vehicles this worker holds de-duplication state for",
                             registry=registry)
        self.lag = _Histogram("cascade_vehicle_ingest_lag_seconds",
                              "Platform receive time minus the device's report time",
                              (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600), registry)
        # BLE gateways are few (one per station or vehicle box): a series each, for the silent-gateway rule.
        self.gateway_seen = Gauge("cascade_gateway_last_report_seconds",
                                  "Unix time of the last pack report stored from each BLE gateway",
                                  ["fleet", "gateway"], registry=registry)
        self.gateway_packs = Gauge("cascade_gateway_packs", "Packs in the last report of each BLE gateway",
                                   ["fleet", "gateway"], registry=registry)
        # Every series exists from the start (rates, absent()); the stored counter's children are kept:
        # labels() per report costs more than the increment.
        self.accepted_by = {transport: self.accepted.labels(transport) for transport in ("mqtt", "https")}
        for transport in self.accepted_by:
            for reason in REASONS:
                self.rejected.labels(transport, reason)


class _Histogram(Collector):
    """A histogram without labels observed once per report: a bisect and two additions, read at scrape
    time (``prometheus_client.Histogram.observe`` takes a lock per bucket and costs ~7x more). Observed
    from one thread (the event loop); the exposition is the same but for the ``_created`` series."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...], registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = [float(b) for b in buckets]
        self._counts = [0] * (len(buckets) + 1)  # the last: above every bound (+Inf)
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation)
        counts, total = list(self._counts), 0
        buckets = []
        for bound, count in zip([*map(floatToGoString, self._bounds), "+Inf"], counts, strict=True):
            total += count
            buckets.append((bound, total))
        family.add_metric([], buckets, self._sum)
        yield family


class VehicleIngest:
    """Decode, authenticate, check and store one report at a time (``accept``, synchronous, no I/O)."""

    def __init__(self, devices: DeviceRegistry, *, sink: PointSink | None, metrics: IngestMetrics | None = None,
                 gate: Gate | None = None, clock: Callable[[], float] = time.time,
                 window_s: float = REPLAY_WINDOW_S,
                 on_reading: Callable[[VehicleReading], None] | None = None,
                 elapsed: Callable[[], float] | None = None) -> None:
        self.devices = devices
        self.sink = sink
        self.metrics = metrics if metrics is not None else IngestMetrics()
        self.gate = gate if gate is not None else Gate()
        self.clock = clock  # wall clock: report freshness, receive time
        # Rate-limit refills are durations: on a clock that never jumps (an injected clock serves as both).
        self.elapsed: Callable[[], float] = elapsed or (time.monotonic if clock is time.time else clock)
        self.window_s = window_s
        self.on_reading = on_reading
        self._logged: set[tuple[str, str]] = set()

    def accept(self, data: bytes, *, transport: str, device: str | None, fleet: str | None = None,
               check_time: bool = True, charge: bool = True) -> Outcome:
        """Store one report sent by the authenticated ``device`` (``None``: take the id from the
        report, for trusted bridges). ``fleet``: the fleet named by the MQTT topic, checked against
        the device's. ``check_time``: refuse reports outside the replay window (MQTT; an HTTPS post is
        checked once, on its signed header, so a device may post reports it buffered offline).
        ``charge``: count the report against the device's rate limit (MQTT); an HTTPS request is
        charged once, whatever the number of reports it carries."""
        now = self.clock()
        try:
            msg = decode_checked(data)
        except WireError as err:
            return self._refuse(transport, err.reason, str(err), device or "?")
        sender = device if device is not None else msg.vehicle
        if msg.vehicle != sender:
            return self._refuse(transport, "wrong_device",
                                f"report names vehicle {msg.vehicle!r}, sent by {sender!r}", sender, msg.seq)
        known = self.devices.get(sender)
        if known is None:
            return self._refuse(transport, "unknown_device", f"device {sender!r} is not provisioned", sender, msg.seq)
        if fleet is not None and fleet != known.fleet:
            return self._refuse(transport, "wrong_topic",
                                f"topic fleet {fleet!r}; device {sender!r} belongs to {known.fleet!r}", sender, msg.seq)
        if check_time:
            late = freshness(msg.ts, now, self.window_s)
            if late is not None:
                outcome = self._refuse(transport, late, f"report time {msg.ts} ms is {msg.ts / 1000 - now:+.0f} s "
                                       f"from the platform's clock (window ±{self.window_s:.0f} s)", sender, msg.seq)
                return replace(outcome, report_ts_ms=msg.ts)
        refused = self.gate.admit(sender, msg.seq, msg.ts, self.elapsed(), charge=charge)
        if refused is not None:
            return self._refuse(transport, refused, f"seq {msg.seq}", sender, msg.seq)
        reading, problems = to_reading(msg, fleet=known.fleet, received_ns=int(now * 1e9))
        if problems or reading.over_range or (reading.battery is not None and reading.battery.over_range):
            self._count_problems(sender, reading, problems)
        if self.sink is not None:
            self.sink.submit((reading,))
        if self.on_reading is not None:
            self.on_reading(reading)
        metrics = self.metrics
        counter = metrics.accepted_by.get(transport)
        (counter if counter is not None else metrics.accepted.labels(transport)).inc()
        lag = now - msg.ts / 1000.0
        metrics.lag.observe(lag if lag > 0.0 else 0.0)
        return Outcome("", "", sender, msg.seq, len(problems), reading)  # by position: once per report

    def _count_problems(self, sender: str, reading: VehicleReading, problems: list[FieldProblem]) -> None:
        for problem in problems:
            self.metrics.values_rejected.labels(problem.field).inc()
            self._log_once(sender, f"field:{problem.field}", "rejected value: %s", problem)
        over = reading.over_range + (reading.battery.over_range if reading.battery is not None else ())
        for name in over:
            self.metrics.over_range.labels(name).inc()
            self._log_once(sender, f"over:{name}", "vehicle %s: %s is at or past its sensor's range; kept as the "
                           "limit", sender, name)

    def accept_packs(self, data: bytes, *, transport: str, device: str, fleet: str | None = None) -> Outcome:
        """Store one BLE gateway report (``collectors.ble.wire.PackReport``) sent by ``device``: the
        gateway as a cabinet of its packs (``cabinet``/``slot`` points, model ``ble-gateway``), the same
        identity, topic and sequence checks as a vehicle report. Reports keep the time their packs were
        read (a gateway forwards what it buffered through an uplink outage): no replay window on their
        time, no rate limit (the sequence de-duplication refuses a replay), nothing of a buffer lost."""
        from collectors.ble.wire import decode as decode_packs
        from collectors.ble.wire import to_reading as packs_reading

        now = self.clock()
        try:
            report = decode_packs(data)
        except WireError as err:
            return self._refuse(transport, err.reason, str(err), device)
        if report.gateway != device:
            return self._refuse(transport, "wrong_device", f"report names gateway {report.gateway!r}, sent by "
                                f"{device!r}", device, report.seq)
        known = self.devices.get(device)
        if known is None:
            return self._refuse(transport, "unknown_device", f"device {device!r} is not provisioned", device,
                                report.seq)
        if fleet is not None and fleet != known.fleet:
            return self._refuse(transport, "wrong_topic", f"topic fleet {fleet!r}; device {device!r} belongs to "
                                f"{known.fleet!r}", device, report.seq)
        if report.ts / 1000.0 - now > self.window_s:
            return self._refuse(transport, "future", f"report time {report.ts} ms is {report.ts / 1000 - now:+.0f} s "
                                f"from the platform's clock", device, report.seq)
        refused = self.gate.admit(device, report.seq, report.ts, self.elapsed(), charge=False)
        if refused is not None:
            return self._refuse(transport, refused, f"seq {report.seq}", device, report.seq)
        problems: list[FieldProblem] = []
        reading = packs_reading(report, fleet=known.fleet, problems=problems)
        for problem in problems:
            self.metrics.values_rejected.labels(problem.field.split("[")[0]).inc()
            self._log_once(device, f"field:{problem.field}", "rejected value: %s", problem)
        if self.sink is not None:
            self.sink.submit((reading,))
        counter = self.metrics.accepted_by.get(transport)
        (counter if counter is not None else self.metrics.accepted.labels(transport)).inc()
        self.metrics.lag.observe(max(0.0, now - report.ts / 1000.0))
        self.metrics.gateway_seen.labels(known.fleet, device).set(now)
        self.metrics.gateway_packs.labels(known.fleet, device).set(len(reading.slots))
        return Outcome(vehicle=device, seq=report.seq, fields_rejected=len(problems), packs=reading)

    def refuse(self, transport: str, reason: str, detail: str, device: str = "?") -> Outcome:
        """Count and log a refusal decided by a transport (bad signature, malformed request)."""
        return self._refuse(transport, reason, detail, device)

    def _refuse(self, transport: str, reason: str, detail: str, device: str, seq: int | None = None) -> Outcome:
        self.metrics.rejected.labels(transport, reason).inc()
        self._log_once(device, reason, "refused %s report from %s: %s (%s)", transport, device, REASONS[reason], detail)
        return Outcome(reason=reason, detail=detail, vehicle=device, seq=seq)

    def _log_once(self, device: str, what: str, fmt: str, *args: object) -> None:
        """Log a problem once per device and kind (the counters keep the rate); bounded."""
        key = (device, what)
        if key in self._logged:
            return
        if len(self._logged) < 100_000:
            self._logged.add(key)
        log.warning(fmt, *args)

    def update_gauges(self) -> None:
        self.metrics.tracked.set(len(self.gate))
