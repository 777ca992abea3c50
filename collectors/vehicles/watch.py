"""The vehicle watch: every report of the watched fleets, fed to the warning engine of `cascade run`.

The ingest workers store reports and share the stream (a shared subscription: one vehicle's reports
reach different workers). The warning engine keeps state per battery (`for` timers, rates, jumps),
so it must see every report of a vehicle, in one process: the watch takes a plain subscription to
``cascade/v1/<fleet>/+/telemetry`` for its fleets, and to ``cascade/v1/<fleet>/+/https`` where the
workers relay the reports they accepted over HTTPS (:meth:`.mqtt.MqttIngest.relay`), checks each report
as the workers do (device, topic, time, sequence; a relayed report's time is not held to the replay window,
as over HTTPS), and hands the vehicle's pack to the engine as a one-slot reading of model
:data:`~core.model.VEHICLE_MODEL`, with the report itself for the vehicle-scope rules (arming, fence,
reminder, discharge protection, chemistry, clock). It stores nothing (``Report.watch_only``). Several
`cascade run` processes split the fleets between them (docs/vehicles.md, "Warnings").

Besides the report the watch gives the engine what only it knows: each vehicle's settings
(``vehicles.functions``: fence, reminder SOC), the fence centre of an armed vehicle without a home point
(where it was armed), and the gap since the vehicle's previous report in report intervals (V-5.7, V-5.8).
A vehicle that falls silent sends nothing to evaluate, so every ``silence_check_s`` the watch sends a
reading with only that gap for each vehicle at least two intervals overdue (``report_overdue`` rule).
A report refused for its time (beyond the replay window) becomes a reading with only the clock skew, so a
device with a wrong clock raises ``clock_skew`` rather than looking silent.

The fence centres of armed vehicles (where each was armed) are kept in ``fences_file`` (beside the alert
state in ``cascade run``), so a restart does not move a fence to wherever an armed vehicle happens to be
then: a ``geofence_exit`` restored after a restart is judged against the same centre, and clears when the
vehicle is back inside or disarmed. A disarmed vehicle has no fence: its reports read as inside it (the
fence rule's ``armed`` condition is off), so a fence alert clears on disarming.

    source = VehicleWatchSource(VehicleWatchSettings(mqtt, "var/devices/devices.json"), emit=pipeline.handle)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.events import Report
from core.model import VEHICLE_MODEL, CabinetReading, VehicleProfile, VehicleReading
from core.ports import Emit

from .functions import VehicleFunctions
from .ingest import IngestMetrics, VehicleIngest
from .mqtt import RELAYED, TOPIC_ROOT, MqttIngest
from .settings import MqttSettings
from .trust import REPLAY_WINDOW_S, DeviceRegistry, Gate

__all__ = ["KIND", "VehicleTracker", "VehicleWatchSettings", "VehicleWatchSource", "as_engine_reading"]

KIND = "vehicles"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VehicleWatchSettings:
    mqtt: MqttSettings
    devices: str
    fleets: Sequence[str] = field(default=("+",))
    replay_window_s: float = REPLAY_WINDOW_S
    functions: VehicleFunctions = field(default_factory=VehicleFunctions)
    #: Where the fence centres of armed vehicles survive a restart (None: in memory only).
    fences_file: str | None = None


def as_engine_reading(vehicle: VehicleReading) -> CabinetReading:
    """A vehicle report as the engine reads it: site = fleet, cabinet = vehicle, the pack as one slot
    (the battery bay, 1) with the pack's fields, model :data:`VEHICLE_MODEL`, and the report itself
    (``vehicle``) for the vehicle-scope rules."""
    return CabinetReading(cabinet_id=vehicle.vehicle_id, site=vehicle.fleet, model=VEHICLE_MODEL,
                          timestamp_ns=vehicle.timestamp_ns, latitude_deg=vehicle.latitude_deg,
                          longitude_deg=vehicle.longitude_deg,
                          slots=[vehicle.battery] if vehicle.battery is not None else [], vehicle=vehicle)


class VehicleTracker:
    """Per vehicle: when its last report arrived and in which power state, and its fence anchor.

    ``note(reading, tick)`` completes a report with the vehicle's profile, fence anchor and report gap;
    ``overdue(tick)`` lists the silence readings due. ``tick`` is a clock that never jumps (seconds).
    A few dozen bytes per vehicle. ``fences_file``: the fence anchors are read from it at start and
    written to it (atomically) whenever one is set or dropped, i.e. when a vehicle is armed or disarmed.
    """

    def __init__(self, functions: VehicleFunctions, *, clock: Callable[[], float] = time.time,
                 fences_file: str | os.PathLike[str] | None = None) -> None:
        self.functions = functions
        self.clock = clock
        self._profiles = {vehicle: functions.profile(vehicle) for vehicle in functions.vehicles}
        self._default = functions.profile("")
        self._last: dict[str, tuple[float, bool | None, str]] = {}  # vehicle -> (tick, powered_on, fleet)
        self._anchors: dict[str, tuple[float, float]] = {}  # armed vehicle -> where it was armed
        self._told: dict[str, float] = {}  # silent vehicle -> the gap its last silence reading said
        self.fences_file = None if fences_file is None else os.fspath(fences_file)
        if self.fences_file is not None:
            self._anchors.update(_load_anchors(self.fences_file))

    def profile(self, vehicle: str) -> VehicleProfile:
        return self._profiles.get(vehicle, self._default)

    def _interval(self, powered_on: bool | None) -> float:
        return self.functions.report_off_s if powered_on is False else self.functions.report_on_s

    def note(self, reading: VehicleReading, tick: float) -> None:
        vid = reading.vehicle_id
        reading.profile = self.profile(vid)
        self._told.pop(vid, None)
        last = self._last.get(vid)
        if last is not None:
            reading.report_gap_intervals = max(0.0, tick - last[0]) / self._interval(last[1])
        self._last[vid] = (tick, reading.powered_on if reading.powered_on is not None else
                           (last[1] if last is not None else None), reading.fleet)
        lat, lon = reading.latitude_deg, reading.longitude_deg
        if reading.armed:
            if vid not in self._anchors and lat is not None and lon is not None:
                self._anchors[vid] = (lat, lon)
                self._save_anchors()
            reading.fence_anchor = self._anchors.get(vid)
        elif reading.armed is False:
            if self._anchors.pop(vid, None) is not None:
                self._save_anchors()
            if lat is not None and lon is not None:
                # Disarmed: no fence. The centre follows the vehicle, so the fence rule has a value and its
                # `armed` condition (off) clears an alert it raised while the vehicle was armed.
                reading.fence_anchor = (lat, lon)

    def _save_anchors(self) -> None:
        if self.fences_file is None:
            return
        try:
            _write_json(self.fences_file, {"version": 1, "anchors": {k: list(v) for k, v in self._anchors.items()}})
        except OSError as err:
            log.error("vehicle fence centres %s not written (%s): a restart would centre the fences of armed "
                      "vehicles where they are then", self.fences_file, err)

    def overdue(self, tick: float) -> list[VehicleReading]:
        """A reading with only the silence so far for each vehicle two or more intervals overdue, at most
        one per vehicle per report interval (a vehicle silent for days costs one reading an interval)."""
        out = []
        now_ns = int(self.clock() * 1e9)
        told = self._told
        for vid, (seen, powered_on, fleet) in self._last.items():
            gap = (tick - seen) / self._interval(powered_on)
            if gap >= 2.0 and gap - told.get(vid, 0.0) >= 1.0:
                told[vid] = gap
                out.append(VehicleReading(vehicle_id=vid, fleet=fleet, timestamp_ns=now_ns, powered_on=powered_on,
                                          profile=self.profile(vid), report_gap_intervals=gap))
        return out


class VehicleWatchSource:
    """A :class:`core.ports.Source` of vehicle packs for the warning engine (pushed, watch-only)."""

    kind = KIND

    def __init__(self, settings: VehicleWatchSettings, *, emit: Emit, metrics: Any = None,
                 seed: int | None = None, elapsed: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._emit = emit
        self._elapsed = elapsed
        devices = DeviceRegistry.load(settings.devices)
        settings.functions.check_vehicles((d.id for d in devices), source=settings.devices)
        self.tracker = VehicleTracker(settings.functions, fences_file=settings.fences_file)
        # Its own counters (a private registry): the ingest workers count reports for Prometheus.
        self.ingest = VehicleIngest(devices, sink=None, metrics=IngestMetrics(),
                                    gate=Gate(rate_per_s=1e9, burst=1e9), window_s=settings.replay_window_s)
        # MQTT reports, BLE gateways' packs, and the reports the workers accepted over HTTPS (relayed)
        subscriptions = [f"{TOPIC_ROOT}/{fleet}/+/{kind}" for fleet in settings.fleets
                         for kind in ("telemetry", "packs", RELAYED)]
        self.mqtt = MqttIngest(settings.mqtt, self.ingest, client_id=f"cascade-watch-{os.getpid()}",
                               subscriptions=subscriptions, answer=False, on_accepted=self._accepted,
                               on_clock_refused=self._clock_refused,
                               session=False)  # a new client id each run: its session ends with it
        self._tasks: list[asyncio.Task[None]] = []

    async def _accepted(self, reading: VehicleReading | CabinetReading) -> None:
        if isinstance(reading, CabinetReading):  # a BLE gateway's packs: a cabinet of its packs
            await self._emit(Report(reading, source=KIND, watch_only=True))
            return
        self.tracker.note(reading, self._elapsed())
        await self._emit(Report(as_engine_reading(reading), source=KIND, watch_only=True))

    async def _clock_refused(self, fleet: str, vehicle: str, report_ts_ms: int) -> None:
        """A report refused for its time (more than the replay window off): nothing of it is trusted but that
        the device reported and how far its clock is off, so the clock rule sees it and the silence check
        does not take a device with a wrong clock for a silent one."""
        reading = VehicleReading(vehicle_id=vehicle, fleet=fleet, timestamp_ns=report_ts_ms * 1_000_000,
                                 received_ns=time.time_ns())
        self.tracker.note(reading, self._elapsed())
        engine_reading = as_engine_reading(reading)
        engine_reading.timestamp_ns = reading.received_ns  # its alert is stored at our time, not the wrong one
        await self._emit(Report(engine_reading, source=KIND, watch_only=True))

    async def check_silence(self) -> int:
        """Send the silence readings due now (the loop calls it; tests may too). Returns how many."""
        due = self.tracker.overdue(self._elapsed())
        for reading in due:
            await self._emit(Report(as_engine_reading(reading), source=KIND, watch_only=True))
        return len(due)

    async def _silence_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.functions.silence_check_s)
            await self.check_silence()

    def devices(self) -> Mapping[str, str]:
        return {}  # vehicles come and go by the thousand: no per-device series here (the workers count)

    def online(self) -> Mapping[str, bool | None]:
        return {}

    async def __aenter__(self) -> VehicleWatchSource:
        self._tasks = [asyncio.create_task(self.mqtt.run(), name="vehicle-watch"),
                       asyncio.create_task(self._silence_loop(), name="vehicle-silence")]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []


def _load_anchors(path: str) -> dict[str, tuple[float, float]]:
    """The fence centres written by :meth:`VehicleTracker._save_anchors`; {} for a missing or bad file."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        anchors = doc["anchors"]
        return {str(k): (float(v[0]), float(v[1])) for k, v in anchors.items()
                if -90 <= float(v[0]) <= 90 and -180 <= float(v[1]) <= 180}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        log.error("vehicle fence centres %s unreadable (%s); armed vehicles are re-centred at their next report",
                  path, err)
        return {}


def _write_json(path: str, doc: object) -> None:
    """Write ``doc`` to ``path`` atomically (a temporary file renamed over it)."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
