"""Vehicle ingest benchmark: reports/s per core from bytes in to line protocol out, memory per
tracked vehicle, and ingest lag under a burst through a real Mosquitto.

    python -m bench vehicles [--messages 60000] [--vehicles 100000] [--burst 20000] [--consumer both]
                             [--json] [--quick]
    cascade bench vehicles ...                                   (the same, through the cascade CLI)

* **MQTT path** (``VehicleIngest.accept`` per payload, as ``MqttIngest`` calls it: topic split,
  decode, device/fleet/time checks, de-duplication and rate limit, range checks, then a sink that
  encodes with ``schema.encode_points``, the real line-protocol output, and keeps only counts).
* **HTTPS path**: batches of 100 reports of one vehicle (a device that buffered them), each batch
  HMAC-verified and nonce-checked, split by ``decode_batch`` and accepted report by report.
* **Baseline**, same run, same payloads, same lines out: stdlib ``json.loads``, a dict-walking check
  of the same types and ranges, and ``influxdb_client.Point`` building both points. The bench
  first checks that both produce identical line protocol, so the ratio compares equal work.

  Both run with the clock the reports were received at (each report 200 ms after its device time)
  and a de-duplication table warmed with every vehicle (steady state, not first contact). CPU is
  ``time.process_time`` of this process (one core); best of ``--rounds`` interleaved passes.

* **Memory**: what one worker keeps after admitting one report from each of ``--memory-vehicles``
  distinct vehicles: its de-duplication table (and refusal log) walked object by object, and the
  ``DeviceRegistry`` per provisioned device. The line-protocol encoders' caches (tag texts, float
  and string texts: 65,536 entries each at most, whatever the fleet) are shown apart.
* **Burst**: Mosquitto on a free loopback port (temporary directory, devices provisioned as by
  ``cascade devices provision``), one MQTT consumer (sink: encode and discard), and a publisher
  process sending ``--burst`` reports from ``--connections`` device connections as fast as it can; run
  once per consumer (``--consumer``, default both, in this order): ``aiomqtt``, the worker's consumer
  before 2026-12-06 rebuilt here as it was (one event-loop turn per message, acknowledged on receipt),
  and ``paho``, an ``IngestWorker`` as shipped (``MqttIngest``: paho's thread, a batch per wake-up,
  acknowledged once handled). Each report's ``ts`` is the time the publisher handed it to its MQTT
  client, so lag = worker receive time - that time (ms resolution). CPU per report of the worker (this
  process: event loop and paho's thread) and of the broker (``/proc/<pid>/stat``), measured apart; the
  worker's MQTT client alone is its CPU less the ingest logic on the same reports measured in process.
  The projection to 1 M vehicles at 1/min adds the client, the ingest logic at fleet scale (the
  throughput figure) and the broker.

The corpus is generated once: ``--vehicles`` vehicles, each moving along its own route and
reporting once a minute (positions with 6 decimals, pack voltage, currents and temperatures varying
per report), ~590 bytes per report, in device-time order. The default fleet (100,000) is larger than
the line-protocol encoder's per-vehicle cache (65,536 tag texts), as a real fleet is: with 10,000
vehicles every head would be cached and the figures ~20 % better than a large fleet gets. Every loop
is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import hmac
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Report", "main", "make_reports", "run"]

FLEET = "bench"
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: device time of the corpus (the bench's clock follows it)
NETWORK_DELAY_S = 0.2  # each report is received this long after its device time
HEADLINE_VEHICLES = 1_000_000
HEADLINE_INTERVAL_S = 60.0
HEADLINE_NODE_CORES = 2
TARGET_PER_CORE = 20_000
TARGET_RATIO = 4.0
TARGET_BYTES_PER_VEHICLE = 1024
BATCH = 100


# -- corpus ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Report:
    """One report as it arrives: MQTT topic, sending device, payload, device time (ms)."""

    topic: str
    vehicle: str
    payload: bytes
    ts_ms: int


class _Route:
    """One vehicle's route and pack: where it starts, where it heads, how its pack drifts."""

    __slots__ = ("alt", "battery", "cycles", "dlat", "dlon", "lat", "lon", "model", "odometer", "rng", "soh", "vid")

    def __init__(self, n: int, rng: random.Random) -> None:
        self.vid = f"V{n:06d}"  # the ids `cascade devices provision` gives
        self.battery = f"BP{n:08d}"
        self.model = rng.choice(("EB-48A", "EB-48B", "SW-60"))
        self.lat, self.lon = rng.uniform(39.75, 40.05), rng.uniform(116.20, 116.60)
        heading, step = rng.uniform(0, 2 * math.pi), rng.uniform(0.0025, 0.0045)  # ~300-500 m a minute
        self.dlat, self.dlon = step * math.cos(heading), step * math.sin(heading)
        self.alt = rng.uniform(30, 60)
        self.odometer = rng.uniform(100, 20_000)
        self.soh = rng.uniform(80, 99)
        self.cycles = rng.randint(20, 1500)
        self.rng = random.Random(n)

    def report(self, seq: int, ts_ms: int) -> dict[str, Any]:
        """The ``seq``-th report (1, 2, ...) of this vehicle: fresh values each time."""
        r, k = self.rng, seq
        soc = max(5.0, 95.0 - 0.35 * k + r.uniform(-0.2, 0.2))
        cell_max = 3.20 + soc / 1000 + r.uniform(0, 0.02)
        temp = 24.0 + r.uniform(0, 9)
        return {
            "v": 1, "vehicle": self.vid, "seq": seq, "ts": ts_ms, "model": self.model, "state": "riding",
            "power": True,
            "pos": {"valid": True, "lat": round(self.lat + k * self.dlat + r.uniform(-2e-5, 2e-5), 6),
                    "lon": round(self.lon + k * self.dlon + r.uniform(-2e-5, 2e-5), 6),
                    "alt": round(self.alt + r.uniform(-3, 3), 1)},
            "speed_kmh": round(r.uniform(12, 25), 1), "odometer_km": round(self.odometer + 0.4 * k, 3),
            "battery": {
                "id": self.battery, "maker": "CATL", "chemistry": "LFP", "nominal_v": 48.0, "nominal_ah": 24.0,
                "cells": 16, "max_charge_a": 10.0, "max_discharge_a": 40.0, "undervoltage_v": 40.0,
                "soc_pct": round(soc, 1), "soh_pct": round(self.soh, 1), "temperature_c": round(temp, 1),
                "voltage_v": round(16 * cell_max - r.uniform(0, 0.2), 3), "current_a": round(-r.uniform(4, 15), 2),
                "cell_max_v": round(cell_max, 3), "cell_min_v": round(cell_max - r.uniform(0.005, 0.03), 3),
                "cell_max_c": round(temp + r.uniform(0.5, 2), 1), "cell_min_c": round(temp - r.uniform(0, 1.5), 1),
                "state": "discharging", "cycles": self.cycles, "protection": 0,
            },
        }


def _routes(vehicles: int, seed: int) -> list[_Route]:
    rng = random.Random(seed)
    return [_Route(n, rng) for n in range(1, vehicles + 1)]


def _payload(report: dict[str, Any]) -> bytes:
    return json.dumps(report, separators=(",", ":")).encode()


def _topic(vehicle: str) -> str:
    return f"cascade/v1/{FLEET}/{vehicle}/telemetry"


def make_reports(vehicles: int, messages: int, *, t0_ms: int = T0_MS, interval_s: float = HEADLINE_INTERVAL_S,
                 seed: int = 1) -> list[Report]:
    """``messages`` reports of ``vehicles`` vehicles, each reporting every ``interval_s``, in device-time
    order (vehicle ``j % vehicles`` sends report ``j // vehicles + 1`` at ``t0 + j * interval / vehicles``)."""
    routes = _routes(vehicles, seed)
    step_ms = interval_s * 1000 / vehicles
    out = []
    for j in range(messages):
        route = routes[j % vehicles]
        ts_ms = t0_ms + int(j * step_ms)
        out.append(Report(_topic(route.vid), route.vid, _payload(route.report(j // vehicles + 1, ts_ms)), ts_ms))
    return out


Request = tuple[str, bytes, int, str, str]
"""An HTTPS post as the device sends it: vehicle, body, X-Cascade-Timestamp, -Nonce, -Signature."""


def make_batches(registry: Any, vehicles: int, messages: int, *, batch: int = BATCH, seed: int = 2) -> list[Request]:
    """``messages // batch`` signed HTTPS posts, each ``batch`` consecutive minutely reports of one
    vehicle (buffered by the device), vehicles taken in turn, posted 10 ms apart."""
    from collectors.vehicles.trust import sign

    routes = _routes(vehicles, seed)
    out = []
    for b in range(max(1, messages // batch)):
        route = routes[b % vehicles]
        first = (b // vehicles) * batch + 1
        items = [_payload(route.report(seq, T0_MS + int(seq * HEADLINE_INTERVAL_S * 1000)))
                 for seq in range(first, first + batch)]
        body = b"[" + b",".join(items) + b"]"
        stamp, nonce = T0_MS + 10 * b, f"n{b}"
        out.append((route.vid, body, stamp, nonce, sign(registry.get(route.vid).secret, stamp, nonce, body)))
    return out


def _registry(vehicles: int) -> Any:
    from collectors.vehicles.trust import Device, DeviceRegistry

    return DeviceRegistry([Device(f"V{n:06d}", FLEET, hashlib.sha256(str(n).encode()).digest()[:16])
                           for n in range(1, vehicles + 1)])


# -- the two pipelines: Cascade and the baseline ---------------------------------------------------

class _LineSink:
    """A ``PointSink`` that encodes as ``InfluxSink.submit`` does and keeps only counts."""

    __slots__ = ("chars", "encode", "lines", "skipped")

    def __init__(self) -> None:
        from exporters.influx.schema import encode_points

        self.encode = encode_points
        self.lines = self.chars = self.skipped = 0

    def submit(self, points: Iterable[Any]) -> None:
        lines, skipped = self.encode(points)
        self.lines += len(lines)
        self.chars += sum(map(len, lines)) + len(lines)  # + one newline each, as written
        self.skipped += len(skipped)


class _Cascade:
    """``VehicleIngest`` with a line-protocol sink, its clock set to each report's receive time."""

    def __init__(self, registry: Any, vehicles: int, *, rate_per_s: float = 0.5, burst: float = 30.0) -> None:
        from collectors.vehicles.ingest import IngestMetrics, VehicleIngest
        from collectors.vehicles.trust import Gate

        self.now = 0.0
        self.sink = _LineSink()
        self.ingest = VehicleIngest(registry, sink=self.sink, metrics=IngestMetrics(),
                                    gate=Gate(rate_per_s=rate_per_s, burst=burst), clock=lambda: self.now)
        for n in range(1, vehicles + 1):  # steady state: every vehicle already reported (seq 0)
            self.ingest.gate.admit(f"V{n:06d}", 0, T0_MS - 60_000, T0_MS / 1000 - 60)
        self.ok = 0

    def mqtt(self, reports: list[Report]) -> None:
        accept, ok = self.ingest.accept, 0
        for report in reports:
            self.now = report.ts_ms / 1000 + NETWORK_DELAY_S
            parts = report.topic.split("/")  # as MqttIngest._handle
            ok += accept(report.payload, transport="mqtt", device=parts[3], fleet=parts[2]).ok
        self.ok += ok

    def https(self, requests: list[Request], secrets: Callable[[str], bytes]) -> None:
        from collectors.vehicles.trust import NonceCache, verify
        from collectors.vehicles.wire import WireError, decode_batch

        nonces, accept, ok = NonceCache(), self.ingest.accept, 0
        for vehicle, body, stamp, nonce, signature in requests:
            # The request's own checks as https_app makes them (aiohttp's header parsing is not measured).
            self.now = stamp / 1000
            if not verify(secrets(vehicle), stamp, nonce, body, signature) or nonces.seen(vehicle, nonce, self.now):
                raise AssertionError(f"the bench's own signed request {nonce} was refused")
            for item in decode_batch(body):
                if not isinstance(item, WireError):
                    ok += accept(item, transport="https", device=vehicle, check_time=False).ok
        self.ok += ok


# wire key -> (line field, kind, low, high, kept at the limit): the ranges of collectors.vehicles.wire
_B_VEHICLE = {"speed_kmh": ("speed_kmh", float, 0, 120, False), "odometer_km": ("odometer_km", float, 0, 2_000_000, False)}
_B_POS = {"lat": ("latitude_deg", float, -90, 90, False), "lon": ("longitude_deg", float, -180, 180, False),
          "alt": ("altitude_m", float, -500, 9000, False)}
_B_BATTERY = {
    "nominal_v": ("nominal_voltage_v", float, 0, 100, False), "nominal_ah": ("nominal_capacity_ah", float, 0, 500, False),
    "cells": ("cell_count", int, 1, 64, False), "max_charge_a": ("max_charge_current_a", float, 0, 200, False),
    "max_discharge_a": ("max_discharge_current_a", float, 0, 500, False),
    "undervoltage_v": ("undervoltage_protection_v", float, 0, 100, False), "soc_pct": ("soc_pct", float, 0, 100, False),
    "soh_pct": ("soh_pct", float, 0, 100, False), "temperature_c": ("temperature_c", float, -40, 200, True),
    "voltage_v": ("voltage_v", float, 0, 60, True), "current_a": ("charge_current_a", float, -100, 100, False),
    "cell_max_v": ("cell_voltage_max_v", float, 0, 5, False), "cell_min_v": ("cell_voltage_min_v", float, 0, 5, False),
    "cell_max_c": ("cell_temperature_max_c", float, -40, 200, True),
    "cell_min_c": ("cell_temperature_min_c", float, -40, 200, True), "cycles": ("charge_count", int, 0, 100_000, False),
    "protection": ("bms_protection", int, 0, 0xFFFF, False),
}
_B_STATES = {"parked": 0, "ready": 1, "riding": 2, "charging": 3}
_B_BATTERY_STATES = {"charging": 1, "full": 2, "discharging": 3, "fault": 4, "idle": 5}
_B_CHEMISTRY = {"LFP": 1, "NMC": 2, "LMO": 3, "NA_ION": 4, "LTO": 5}


class _Baseline:
    """What one would write first: ``json.loads``, dicts walked by hand, ``Point`` per point."""

    def __init__(self, registry: Any, vehicles: int) -> None:
        from influxdb_client import Point, WritePrecision

        from core.model import BmsProtection, describe_flags

        self.registry = registry
        self.point, self.ns = Point, WritePrecision.NS
        self.flags = lambda value: describe_flags(BmsProtection, value)
        self.last_seq = {f"V{n:06d}": 0 for n in range(1, vehicles + 1)}
        self.now = 0.0
        self.lines = self.chars = self.ok = 0

    def mqtt(self, reports: list[Report]) -> None:
        for report in reports:
            self.now = report.ts_ms / 1000 + NETWORK_DELAY_S
            parts = report.topic.split("/")
            self._store(self.accept(json.loads(report.payload), parts[3], parts[2], check_time=True))

    def https(self, requests: list[Request], secrets: Callable[[str], bytes]) -> None:
        seen: set[tuple[str, str]] = set()
        for vehicle, body, stamp, nonce, signature in requests:
            self.now = stamp / 1000
            mac = hmac.new(secrets(vehicle), f"{stamp}\n{nonce}\n".encode(), hashlib.sha256)
            mac.update(body)
            if not hmac.compare_digest(mac.hexdigest(), signature) or (vehicle, nonce) in seen:
                raise AssertionError(f"the bench's own signed request {nonce} was refused")
            seen.add((vehicle, nonce))
            items = json.loads(body)
            for item in items if isinstance(items, list) else [items]:
                self._store(self.accept(item, vehicle, None, check_time=False))

    def _store(self, lines: list[str] | None) -> None:
        if lines:
            self.ok += 1
            self.lines += len(lines)
            self.chars += sum(map(len, lines)) + len(lines)

    def accept(self, msg: Any, device: str, fleet: str | None, *, check_time: bool) -> list[str] | None:
        if not isinstance(msg, dict) or msg.get("v", 1) != 1:
            return None
        vid, ts, seq = msg.get("vehicle"), msg.get("ts"), msg.get("seq")
        if not isinstance(vid, str) or vid != device or type(ts) is not int or type(seq) is not int:
            return None
        known = self.registry.get(vid)
        if known is None or (fleet is not None and fleet != known.fleet):
            return None
        if check_time and abs(ts / 1000 - self.now) > 300:
            return None
        if seq <= self.last_seq.get(vid, -1):
            return None
        self.last_seq[vid] = seq
        fields: dict[str, Any] = {"model": msg.get("model"), "sequence": seq, "state": _B_STATES.get(msg.get("state")),
                                  "powered_on": msg.get("power")}
        over: list[str] = []
        for key, spec in _B_VEHICLE.items():
            fields[spec[0]] = _b_check(msg.get(key), spec, over)
        pos = msg.get("pos")
        lat = lon = None
        if isinstance(pos, dict):
            fields["position_valid"] = pos.get("valid", True)
            if fields["position_valid"]:
                for key, spec in _B_POS.items():
                    fields[spec[0]] = _b_check(pos.get(key), spec, over)
                lat, lon = fields.get("latitude_deg"), fields.get("longitude_deg")
        battery = msg.get("battery")
        ts_ns = ts * 1_000_000
        fields["battery_id"] = battery.get("id") if isinstance(battery, dict) else None
        fields["lag_s"] = round((int(self.now * 1e9) - ts_ns) / 1e9, 3)
        point = self.point("vehicle").tag("fleet", known.fleet).tag("vehicle", vid).time(ts_ns, self.ns)
        for key, value in fields.items():
            point.field(key, value)
        lines = [point.to_line_protocol()]
        if isinstance(battery, dict):
            bat: dict[str, Any] = {"battery_id": battery.get("id"), "battery_maker": battery.get("maker"),
                                   "chemistry": _B_CHEMISTRY.get(battery.get("chemistry")),
                                   "battery_state": _B_BATTERY_STATES.get(battery.get("state"))}
            bat_over: list[str] = []
            for key, spec in _B_BATTERY.items():
                bat[spec[0]] = _b_check(battery.get(key), spec, bat_over)
            protection = bat["bms_protection"]
            bat["bms_protection_text"] = None if protection is None else self.flags(protection)
            bat["latitude_deg"], bat["longitude_deg"] = lat, lon
            if bat_over:
                bat["over_range"] = ",".join(bat_over)
            point = self.point("vehicle_battery").tag("fleet", known.fleet).tag("vehicle", vid).time(ts_ns, self.ns)
            for key, value in bat.items():
                point.field(key, value)
            lines.append(point.to_line_protocol())
        return lines


def _b_check(value: Any, spec: tuple, over: list[str]) -> Any:
    name, kind, low, high, at_limit = spec
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind if kind is int else (int, float)):
        raise ValueError(f"{name}: {value!r} is not a {kind.__name__}")
    if not math.isfinite(value):
        return None
    if low <= value <= high:
        return kind(value)
    if at_limit:
        over.append(name)
        return kind(high if value > high else low)
    return None


def check_same_lines(reports: list[Report], vehicles: int) -> None:
    """Cascade and the baseline must write the same lines before their speeds mean anything."""
    from exporters.influx.schema import encode_points

    registry = _registry(vehicles)
    cascade, baseline = _Cascade(registry, vehicles), _Baseline(registry, vehicles)
    got: list[Any] = []
    cascade.ingest.sink = type("Keep", (), {"submit": lambda self, points: got.extend(points)})()
    for report in reports:
        cascade.mqtt([report])
        baseline.now = cascade.now
        expected = baseline.accept(json.loads(report.payload), report.vehicle, FLEET, check_time=True)
        lines, _ = encode_points(got)
        got.clear()
        if lines != expected:
            raise SystemExit(f"Cascade and the baseline disagree on {report.payload[:80]!r}...:\n"
                             f"  {lines}\n  {expected}")


# -- throughput --------------------------------------------------------------------------------------

def _timed(run_once: Callable[[], None]) -> tuple[float, float]:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    run_once()
    return time.process_time() - cpu, time.perf_counter() - wall


def measure_throughput(vehicles: int, messages: int, rounds: int, seed: int = 1) -> dict[str, Any]:
    """Reports/s (CPU of one core and wall) of Cascade and the baseline, MQTT and HTTPS paths."""
    registry = _registry(vehicles)
    reports = make_reports(vehicles, messages, seed=seed)
    batches = make_batches(registry, vehicles, messages, seed=seed + 1)
    check_same_lines(reports[: min(len(reports), 300)], vehicles)

    def secret(vehicle: str) -> bytes:
        return registry.get(vehicle).secret

    runs: dict[str, list[dict[str, float]]] = {"cascade_mqtt": [], "baseline_mqtt": [], "cascade_https": [],
                                              "baseline_https": []}
    counts: dict[str, dict[str, int]] = {}
    for _ in range(rounds):  # interleaved: a noisy neighbour hurts both alike
        for name in runs:
            # HTTPS: a batch is one device's reports at once; the default burst (30) would refuse 70 of 100.
            engine = (_Cascade(registry, vehicles, burst=BATCH if name.endswith("https") else 30.0)
                      if name.startswith("cascade")
                      else _Baseline(registry, vehicles))
            if name.endswith("mqtt"):
                cpu, wall = _timed(lambda engine=engine: engine.mqtt(reports))
                total = len(reports)
            else:
                cpu, wall = _timed(lambda engine=engine: engine.https(batches, secret))
                total = len(batches) * BATCH
            sink = engine.sink if isinstance(engine, _Cascade) else engine
            counts[name] = {"reports": total, "stored": engine.ok, "lines": sink.lines, "bytes": sink.chars}
            runs[name].append({"cpu_s": cpu, "wall_s": wall, "per_cpu_s": total / cpu, "per_wall_s": total / wall})
    out: dict[str, Any] = {"vehicles": vehicles, "reports": len(reports), "batches": len(batches), "batch": BATCH,
                           "payload_bytes_mean": sum(len(r.payload) for r in reports) / len(reports),
                           "rounds": rounds}
    for name, rows in runs.items():
        best = max(rows, key=lambda row: row["per_cpu_s"])
        out[name] = {**counts[name], "per_cpu_s": best["per_cpu_s"], "per_wall_s": best["per_wall_s"],
                     "per_cpu_s_all": [round(row["per_cpu_s"]) for row in rows],
                     "us_per_report": 1e6 / best["per_cpu_s"]}
    for path in ("mqtt", "https"):
        out[f"ratio_{path}"] = out[f"cascade_{path}"]["per_cpu_s"] / out[f"baseline_{path}"]["per_cpu_s"]
        stored = out[f"cascade_{path}"]
        if stored["stored"] != stored["reports"] or out[f"baseline_{path}"]["stored"] != stored["reports"]:
            raise SystemExit(f"{path}: not every report was stored ({stored['stored']} Cascade, "
                             f"{out[f'baseline_{path}']['stored']} baseline of {stored['reports']}): the figures "
                             "would measure refusals")
    return out


# -- memory ------------------------------------------------------------------------------------------

def measure_memory(vehicles: int) -> dict[str, Any]:
    """Bytes one worker keeps per tracked vehicle after one report from each of ``vehicles`` (its
    de-duplication table and refusal log, walked object by object: tracemalloc agrees within 1 %,
    but makes the run 5x slower), per provisioned device (the ``DeviceRegistry``), and the bounded
    encoder caches (whatever the fleet)."""
    reports = make_reports(vehicles, vehicles, seed=3)
    registry = _registry(vehicles)
    engine = _Cascade(registry, 0)  # an empty de-duplication table: first contact of each vehicle
    engine.mqtt(reports[:1])  # compile the encoders' plans outside the measurement
    _clear_encoder_caches()
    engine.mqtt(reports[1:])
    ingest = engine.ingest
    tracked = len(ingest.gate)
    state = _deep_size(ingest.gate._state) + _deep_size(ingest._logged)
    caches = _encoder_cache_size()
    return {"vehicles": vehicles, "tracked": tracked, "bytes_per_tracked_vehicle": state / tracked,
            "bytes_per_provisioned_device": _deep_size(registry._by_id) / len(registry),
            "bytes_per_vehicle": (state + _deep_size(registry._by_id)) / tracked, "bounded_caches_bytes": caches}


def _deep_size(root: object) -> int:
    """``sys.getsizeof`` of ``root`` and everything it holds (containers, slotted objects), each once."""
    seen: set[int] = set()
    stack, total = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        else:
            stack.extend(getattr(obj, name) for name in getattr(type(obj), "__slots__", ()) if hasattr(obj, name))
    return total


def _encoder_cache_size() -> int:
    from exporters.influx import lineprotocol, schema

    return sum(_deep_size(cache) for cache in (schema._VEHICLE_TAGS._texts, lineprotocol._float_texts,
                                              lineprotocol._string_texts))


def _clear_encoder_caches() -> None:
    """Empty the line-protocol encoders' caches (tag texts per vehicle, float and string texts):
    each holds at most 65,536 entries, so they cost the same for 100 thousand vehicles as for 10 million."""
    from exporters.influx import lineprotocol, schema

    schema._VEHICLE_TAGS.clear()
    lineprotocol._float_texts.clear()
    lineprotocol._string_texts.clear()


# -- burst through a real Mosquitto --------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _CountDrops(logging.Handler):
    """Counts aiomqtt's "Message queue is full. Discarding message." (acknowledged, then dropped)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "queue is full" in record.getMessage():
            self.count += 1


def _burst_payloads(count: int, devices: int) -> list[bytes]:
    """The burst's reports (round-robin over ``devices`` vehicles), each with a ``%d`` where its ``ts`` goes."""
    routes = _routes(devices, seed=5)
    return [_payload(routes[j % devices].report(j // devices + 1, -1)).replace(b'"ts":-1', b'"ts":%d')
            for j in range(count)]


def _publish(argv: list[str]) -> None:
    """The burst's publisher (a child process): ``count`` reports round-robin over the device
    connections as fast as paho takes them; each report's ``ts`` is stamped as it is handed over."""
    import paho.mqtt.client as mqtt

    spec = json.loads(argv[0])
    routes = _routes(len(spec["devices"]), seed=5)
    clients, topics = [], []
    for (device, secret), route in zip(spec["devices"], routes):
        if route.vid != device:
            raise SystemExit(f"device {device} is not route {route.vid}")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{device}", protocol=mqtt.MQTTv5)
        client.username_pw_set(device, secret)
        client.max_inflight_messages_set(1000)
        client.connect("127.0.0.1", spec["port"], keepalive=30)
        client.loop_start()
        clients.append(client)
        topics.append(_topic(device))
    deadline = time.monotonic() + 10
    while not all(c.is_connected() for c in clients):
        if time.monotonic() > deadline:
            raise SystemExit("publisher: devices did not connect in 10 s")
        time.sleep(0.01)
    per = len(clients)
    templates = _burst_payloads(spec["count"], per)  # pre-rendered: the publisher's own cost stays small
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()  # go
    infos = []
    first = time.time()
    for j, template in enumerate(templates):
        infos.append(clients[j % per].publish(topics[j % per], template % (time.time_ns() // 1_000_000), qos=1))
    handed = time.time()
    end = time.monotonic() + spec["timeout_s"]
    for info in infos:
        while not info.is_published() and time.monotonic() < end:
            time.sleep(0.001)
    acked = sum(info.is_published() for info in infos)
    for client in clients:
        client.disconnect()
        client.loop_stop()
    sys.stdout.write(json.dumps({"first": first, "handed": handed, "acked_at": time.time(), "acked": acked}) + "\n")


CONSUMERS = {
    "aiomqtt": "before: aiomqtt (MQTT 5), one event-loop turn per message, acknowledged on receipt",
    "paho": "after: MqttIngest, paho's thread (MQTT 3.1.1), a batch per wake-up, acknowledged once handled",
}
"""The consumers the burst runs, in this order: the one Cascade shipped until 2026-12-06 (rebuilt here
as it was, for the comparison) and ``collectors.vehicles.mqtt.MqttIngest`` as shipped."""


class _AiomqttConsumer:
    """The worker's MQTT consumer as it was until 2026-12-06: ``async for`` over aiomqtt's messages,
    ``VehicleIngest.accept`` per message; paho inside aiomqtt acknowledges each message on receipt."""

    def __init__(self, settings: Any, ingest: Any) -> None:
        self.settings, self.ingest = settings, ingest
        self.connected = asyncio.Event()
        self.received = 0

    async def run(self) -> None:
        import aiomqtt

        from collectors.vehicles.mqtt import shared_subscription

        s = self.settings
        async with aiomqtt.Client(s.host, s.port, username=s.username, password=s.password,
                                  identifier="bench-aiomqtt", protocol=aiomqtt.ProtocolVersion.V5,
                                  keepalive=s.keepalive_s, max_queued_incoming_messages=0) as client:
            await client.subscribe(shared_subscription(s.group), qos=1)
            self.connected.set()
            accept = self.ingest.accept
            async for message in client.messages:
                self.received += 1
                parts = message.topic.value.split("/")
                accept(bytes(message.payload), transport="mqtt", device=parts[3], fleet=parts[2])


def measure_burst_ingest(count: int, connections: int) -> float:
    """µs of CPU per report for ``VehicleIngest.accept`` and the line encoding alone on the burst's own
    reports (``connections`` vehicles), in process: what the worker spends on them besides its MQTT client."""
    payloads = _burst_payloads(count, connections)
    reports = []
    for j, template in enumerate(payloads):
        vid = f"V{j % connections + 1:06d}"
        ts_ms = T0_MS + j  # a report a millisecond, as fast as the burst comes
        reports.append(Report(_topic(vid), vid, template % ts_ms, ts_ms))
    best = math.inf
    for _ in range(2):
        engine = _Cascade(_registry(connections), connections, rate_per_s=1e9, burst=1e9)
        cpu, _ = _timed(lambda engine=engine: engine.mqtt(reports))
        if engine.ok != count:
            raise SystemExit(f"burst corpus: {count - engine.ok} of {count} reports refused in process")
        best = min(best, cpu)
    return best / count * 1e6


async def _burst(count: int, connections: int, workdir: Path, timeout_s: float, consumer: str) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from cascade.vehicles import IngestWorker, mosquitto_conf, provision
    from collectors.vehicles.ingest import IngestMetrics, VehicleIngest
    from collectors.vehicles.settings import MqttSettings, VehicleSettings
    from collectors.vehicles.trust import DeviceRegistry, Gate

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise SystemExit("mosquitto not found: install the Debian package mosquitto (make deps), or use --burst 0")
    workdir = workdir / consumer
    paths = provision(workdir / "devices", count=connections, fleet=FLEET)
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(mosquitto_conf(port=port, passwd=paths["passwd"], acl=paths["acl"]))
    log = open(workdir / "mosquitto.log", "wb")
    broker = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    publisher = None
    drops = _CountDrops()  # aiomqtt logs one warning per report it discards: count them instead
    mqtt_log = logging.getLogger("mqtt")
    mqtt_log.addHandler(drops)
    mqtt_log.propagate = False
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if broker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"mosquitto did not start: see {workdir}/mosquitto.log")
            await asyncio.sleep(0.05)
        settings = VehicleSettings(
            devices=str(paths["devices"]), metrics_port=0, rate_per_s=1e9, burst=1e9,  # a few devices send it all
            mqtt=MqttSettings(host="127.0.0.1", port=port, username="ingest",
                              password=paths["ingest_password"].read_text().strip(), group="bench"))
        sink = _LineSink()
        lags: list[int] = []
        last = [0.0]

        def on_reading(reading: Any) -> None:
            lags.append(reading.received_ns - reading.timestamp_ns)
            last[0] = time.time()

        async with contextlib.AsyncExitStack() as stack:
            if consumer == "paho":  # the worker as shipped
                worker = await stack.enter_async_context(IngestWorker(settings, None, registry=CollectorRegistry()))
                assert worker.mqtt is not None
                ingest, mqtt = worker.ingest, worker.mqtt
            else:
                ingest = VehicleIngest(DeviceRegistry.load(paths["devices"]), sink=None, metrics=IngestMetrics(),
                                       gate=Gate(rate_per_s=1e9, burst=1e9))
                mqtt = _AiomqttConsumer(settings.mqtt, ingest)
                task = asyncio.create_task(mqtt.run())
                stack.push_async_callback(_cancel, task)
            ingest.sink, ingest.on_reading = sink, on_reading
            await asyncio.wait_for(mqtt.connected.wait(), 10)
            secrets_of = json.loads(paths["devices"].read_text())["devices"]
            spec = {"port": port, "count": count, "timeout_s": timeout_s,
                    "devices": [(d["id"], d["secret"]) for d in secrets_of]}
            publisher = subprocess.Popen(
                [sys.executable, "-c", "import sys; from bench.vehicles import _publish; _publish(sys.argv[1:])",
                 json.dumps(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                cwd=Path(__file__).resolve().parent.parent, start_new_session=True)
            assert publisher.stdin is not None and publisher.stdout is not None
            ready = await asyncio.wait_for(asyncio.to_thread(publisher.stdout.readline), 30)
            if ready.strip() != "ready":
                raise SystemExit("the burst publisher did not start")
            # This process (the worker: event loop and paho's thread) and the broker, measured apart.
            cpu0, broker0 = time.process_time(), _cpu_of(broker.pid)
            publisher.stdin.write("go\n")
            publisher.stdin.flush()
            end = time.monotonic() + timeout_s
            seen, quiet_since = -1, time.monotonic()
            while len(lags) < count and time.monotonic() < end:
                await asyncio.sleep(0.05)
                if len(lags) != seen:
                    seen, quiet_since = len(lags), time.monotonic()
                elif publisher.poll() is not None and time.monotonic() - quiet_since > 3:
                    break  # the publisher is done and nothing arrived for 3 s: the rest is lost
            cpu, broker_cpu = time.process_time() - cpu0, _cpu_of(broker.pid) - broker0
            received = mqtt.received
            batches = getattr(mqtt, "batches", received)
        out, _ = await asyncio.to_thread(publisher.communicate, None, timeout_s)
        sent = json.loads(out.strip().splitlines()[-1])
    finally:
        mqtt_log.removeHandler(drops)
        mqtt_log.propagate = True
        for proc in (publisher, broker):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        log.close()
    stored = len(lags)
    lag_ms = sorted(lag / 1e6 for lag in lags)

    def pct(p: float) -> float | None:
        return lag_ms[min(len(lag_ms) - 1, int(p / 100 * len(lag_ms)))] if lag_ms else None

    span = max(last[0] - sent["first"], 1e-9)
    return {"consumer": consumer, "what": CONSUMERS[consumer], "burst": count, "connections": connections,
            "published": sent["acked"], "received": received, "batches": batches,
            "stored": stored, "lost": count - stored, "discarded_by_worker_queue": drops.count,
            # Acknowledged to the publisher, never handed to the worker: the broker's queue for it was full.
            "discarded_by_broker": max(0, sent["acked"] - received - drops.count),
            "publish_s": sent["handed"] - sent["first"], "drain_s": span,
            "per_s_end_to_end": stored / span,
            "lag_ms_p50": pct(50), "lag_ms_p95": pct(95), "lag_ms_max": lag_ms[-1] if lag_ms else None,
            "lag_ms_mean": statistics.fmean(lag_ms) if lag_ms else None,
            "worker_cpu_s": cpu, "worker_us_per_report": cpu / max(stored, 1) * 1e6,
            "broker_cpu_s": broker_cpu, "broker_us_per_report": broker_cpu / max(stored, 1) * 1e6,
            "lines": sink.lines}


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# -- report --------------------------------------------------------------------------------------------

def headline(per_core: float, *, vehicles: int = HEADLINE_VEHICLES, interval_s: float = HEADLINE_INTERVAL_S) -> dict:
    """Reports/s that ``vehicles`` reporting every ``interval_s`` send, and the cores it takes."""
    rate = vehicles / interval_s
    return {"vehicles": vehicles, "interval_s": interval_s, "reports_per_s": rate, "cores": rate / per_core}


def through_broker(burst: dict[str, Any], burst_ingest_us: float, fleet_ingest_us: float) -> dict[str, Any]:
    """Per-report CPU of one consumer through the broker, split: its MQTT client (worker CPU minus the
    ingest logic on the same reports), the ingest logic at fleet scale (the throughput figure: a
    100,000-vehicle corpus, where the burst's few vehicles keep every encoder cache warm), the broker;
    and the cores 1 M vehicles at 1/min take with all three."""
    client_us = max(0.0, burst["worker_us_per_report"] - burst_ingest_us)
    total_us = client_us + fleet_ingest_us + burst["broker_us_per_report"]
    out = headline(1e6 / total_us)
    out.update(client_us=client_us, ingest_us=fleet_ingest_us, broker_us=burst["broker_us_per_report"],
               total_us=total_us, cores_as_measured=out["reports_per_s"] * (
                   burst["worker_us_per_report"] + burst["broker_us_per_report"]) / 1e6)
    return out


def run(*, messages: int, vehicles: int, rounds: int, memory_vehicles: int, burst: int, connections: int,
        timeout_s: float, consumers: tuple[str, ...] = tuple(CONSUMERS)) -> dict[str, Any]:
    """Every measurement; the figures as one dict (what ``--json`` prints)."""
    figures: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "load_1m": os.getloadavg()[0]},
        "memory": measure_memory(memory_vehicles),
        "throughput": measure_throughput(vehicles, messages, rounds),
    }
    t = figures["throughput"]
    figures["headline"] = headline(t["cascade_mqtt"]["per_cpu_s"])
    if burst:
        figures["burst_ingest_us"] = measure_burst_ingest(burst, connections)
        figures["burst"], figures["through_broker"] = {}, {}
        with tempfile.TemporaryDirectory(prefix="cascade-bench-vehicles-") as tmp:
            for consumer in consumers:
                b = figures["burst"][consumer] = asyncio.run(_burst(burst, connections, Path(tmp), timeout_s, consumer))
                figures["through_broker"][consumer] = through_broker(b, figures["burst_ingest_us"],
                                                                     t["cascade_mqtt"]["us_per_report"])
    return figures


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_table(f: dict[str, Any]) -> None:
    t, m = f["throughput"], f["memory"]
    rows: list[tuple[str, str, str, str]] = []
    rows.append(("in process: µs CPU per report, baseline (json + Point)",
                 f"{t['baseline_mqtt']['us_per_report']:.1f}", "", ""))
    rows.append(("  Cascade decode + checks + encode (MQTT path)", f"{t['cascade_mqtt']['us_per_report']:.1f}",
                 "", ""))
    rows.append(("MQTT path, reports/s per core", f"{t['cascade_mqtt']['per_cpu_s']:,.0f}",
                 f">= {TARGET_PER_CORE:,}", _mark(t["cascade_mqtt"]["per_cpu_s"] >= TARGET_PER_CORE)))
    rows.append(("  baseline (json + Point)", f"{t['baseline_mqtt']['per_cpu_s']:,.0f}", "", ""))
    rows.append(("  Cascade / baseline", f"{t['ratio_mqtt']:.2f}x", f">= {TARGET_RATIO:g}x",
                 _mark(t["ratio_mqtt"] >= TARGET_RATIO)))
    rows.append(("  reports/s wall", f"{t['cascade_mqtt']['per_wall_s']:,.0f}", "", ""))
    rows.append((f"HTTPS batches of {t['batch']}, reports/s per core", f"{t['cascade_https']['per_cpu_s']:,.0f}",
                 f">= {TARGET_PER_CORE:,}", _mark(t["cascade_https"]["per_cpu_s"] >= TARGET_PER_CORE)))
    rows.append(("  baseline (json + Point)", f"{t['baseline_https']['per_cpu_s']:,.0f}", "", ""))
    rows.append(("  Cascade / baseline", f"{t['ratio_https']:.2f}x", f">= {TARGET_RATIO:g}x",
                 _mark(t["ratio_https"] >= TARGET_RATIO)))
    c = t["cascade_mqtt"]
    rows.append(("lines / report, bytes / report out", f"{c['lines'] / c['reports']:.0f}, "
                 f"{c['bytes'] / c['reports']:.0f}", "", ""))
    rows.append(("memory per tracked vehicle (B)", f"{m['bytes_per_tracked_vehicle']:,.0f}", "", ""))
    rows.append(("memory per provisioned device (B)", f"{m['bytes_per_provisioned_device']:,.0f}", "", ""))
    rows.append(("  together, per vehicle (B)", f"{m['bytes_per_vehicle']:,.0f}", f"<= {TARGET_BYTES_PER_VEHICLE:,}",
                 _mark(m["bytes_per_vehicle"] <= TARGET_BYTES_PER_VEHICLE)))
    rows.append(("  encoder caches (MB, bounded)", f"{m['bounded_caches_bytes'] / 1e6:.1f}", "", ""))
    h = f["headline"]
    rows.append((f"1 M vehicles at 1/min = {h['reports_per_s']:,.0f}/s: ingest logic cores", f"{h['cores']:.2f}",
                 "", ""))
    for consumer, b in f.get("burst", {}).items():
        hb = f["through_broker"][consumer]
        rows.append((f"burst of {b['burst']:,} through Mosquitto ({b['connections']} connections): {consumer}",
                     "", "", ""))
        rows.append(("  stored / lost", f"{b['stored']:,} / {b['lost']:,}", "0 lost", _mark(b["lost"] == 0)))
        rows.append(("    dropped by the broker, by the worker's queue", f"{b['discarded_by_broker']:,}, "
                     f"{b['discarded_by_worker_queue']:,}", "", ""))
        rows.append(("  reports/s (wall), reports per wake-up", f"{b['per_s_end_to_end']:,.0f}, "
                     f"{b['received'] / max(b['batches'], 1):.1f}", "", ""))
        lag = (f"{b['lag_ms_p50']:,.0f} / {b['lag_ms_p95']:,.0f} / {b['lag_ms_max']:,.0f}"
               if b["lag_ms_p50"] is not None else "-")
        rows.append(("  lag p50 / p95 / max (ms)", lag, "", ""))
        rows.append(("  µs CPU per report: worker process, broker", f"{b['worker_us_per_report']:.1f}, "
                     f"{b['broker_us_per_report']:.1f}", "", ""))
        rows.append(("  µs: MQTT client + ingest (fleet) + broker", f"{hb['client_us']:.0f} + {hb['ingest_us']:.0f} + "
                     f"{hb['broker_us']:.0f}", "", ""))
        rows.append(("  1 M vehicles at 1/min: cores, all three", f"{hb['cores']:.2f}", f"<= {HEADLINE_NODE_CORES}",
                     _mark(hb["cores"] <= HEADLINE_NODE_CORES)))
    if {"aiomqtt", "paho"} <= set(f.get("burst", {})):
        before, after = f["burst"]["aiomqtt"], f["burst"]["paho"]
        rows.append(("worker CPU per report through the broker, before / after",
                     f"{before['worker_us_per_report'] / max(after['worker_us_per_report'], 1e-9):.2f}x", "", ""))
    width = max(len(r[0]) for r in rows)
    print(f"vehicle ingest: {t['reports']:,} reports of {t['vehicles']:,} vehicles "
          f"({t['payload_bytes_mean']:.0f} B each), HTTPS {t['batches']:,} batches; best of {t['rounds']} "
          f"interleaved rounds; {f['machine']['cpus']} CPUs, load {f['machine']['load_1m']:.2f}")
    if "burst_ingest_us" in f:
        print(f"burst reports through the ingest logic in process: {f['burst_ingest_us']:.1f} µs CPU each "
              "(subtracted from the worker's CPU to give its MQTT client's)")
    for consumer in f.get("burst", {}):
        print(f"consumer {consumer}: {CONSUMERS[consumer]}")
    print(f"{'':{width}}  {'measured':>16}  {'target':>10}")
    for name, value, target, mark in rows:
        print(f"{name:{width}}  {value:>16}  {target:>10}  {mark}".rstrip())
    print(f"per-round reports/s per core: MQTT {t['cascade_mqtt']['per_cpu_s_all']} vs baseline "
          f"{t['baseline_mqtt']['per_cpu_s_all']}; HTTPS {t['cascade_https']['per_cpu_s_all']} vs baseline "
          f"{t['baseline_https']['per_cpu_s_all']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench vehicles", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=60_000, help="reports per pass (default 60,000)")
    parser.add_argument("--vehicles", type=int, default=100_000,
                        help="distinct vehicles in the corpus (default 100,000: more than the encoders' caches hold, "
                             "as in a fleet where each vehicle reports once a minute)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved passes; the best counts (default 2)")
    parser.add_argument("--memory-vehicles", type=int, default=100_000,
                        help="distinct vehicles admitted for the memory figure (default 100,000)")
    parser.add_argument("--burst", type=int, default=20_000, help="reports in the burst; 0: no broker (default 20,000)")
    parser.add_argument("--connections", type=int, default=4, help="device connections publishing the burst")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds the burst may take at most")
    parser.add_argument("--consumer", choices=("both", *CONSUMERS), default="both",
                        help="the burst's MQTT consumer: the one before 2026-12-06 (aiomqtt), the shipped one "
                             "(paho), or both in this run (default)")
    parser.add_argument("--quick", action="store_true", help="tiny counts (smoke test)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of the table")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.vehicles, args.rounds = 2_000, 200, 1
        args.memory_vehicles, args.burst = 2_000, min(args.burst, 500)
    if min(args.messages, args.vehicles, args.rounds, args.memory_vehicles, args.connections) < 1 or args.burst < 0:
        parser.error("counts must be positive (--burst may be 0)")
    if args.messages < BATCH:
        parser.error(f"--messages must be at least {BATCH} (one HTTPS batch)")
    figures = run(messages=args.messages, vehicles=args.vehicles, rounds=args.rounds,
                  memory_vehicles=args.memory_vehicles, burst=args.burst, connections=args.connections,
                  timeout_s=min(max(args.timeout, 5.0), 600.0),
                  consumers=tuple(CONSUMERS) if args.consumer == "both" else (args.consumer,))
    if args.json:
        print(json.dumps(figures, indent=1, sort_keys=True))
    else:
        print_table(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
