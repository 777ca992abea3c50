"""The vehicle watch: every report of the watched fleets, fed to the warning engine of `cascade run`.

The ingest workers store reports and share the stream (a shared subscription: one vehicle's reports
reach different workers). The warning engine keeps state per battery (`for` timers, rates, jumps),
so it must see every report of a vehicle, in one process: the watch takes a plain subscription to
``cascade/v1/<fleet>/+/telemetry`` for its fleets, checks each report as the workers do (device,
topic, time, sequence), and hands the vehicle's pack to the engine as a one-slot reading of model
:data:`~core.model.VEHICLE_MODEL`. It stores nothing (``Report.watch_only``). Several `cascade run`
processes split the fleets between them (docs/vehicles.md, "Warnings").

    source = VehicleWatchSource(VehicleWatchSettings(mqtt, "var/devices/devices.json"), emit=pipeline.handle)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.events import Report
from core.model import VEHICLE_MODEL, CabinetReading, VehicleReading
from core.ports import Emit

from .ingest import IngestMetrics, VehicleIngest
from .mqtt import TOPIC_ROOT, MqttIngest
from .settings import MqttSettings
from .trust import REPLAY_WINDOW_S, DeviceRegistry, Gate

__all__ = ["KIND", "VehicleWatchSettings", "VehicleWatchSource", "as_engine_reading"]

KIND = "vehicles"


@dataclass(frozen=True)
class VehicleWatchSettings:
    mqtt: MqttSettings
    devices: str
    fleets: Sequence[str] = field(default=("+",))
    replay_window_s: float = REPLAY_WINDOW_S


def as_engine_reading(vehicle: VehicleReading) -> CabinetReading:
    """The pack of a vehicle report as the engine reads a cabinet: site = fleet, cabinet = vehicle, one
    slot (the battery bay, 1) with the pack's fields, model :data:`VEHICLE_MODEL`."""
    return CabinetReading(cabinet_id=vehicle.vehicle_id, site=vehicle.fleet, model=VEHICLE_MODEL,
                          timestamp_ns=vehicle.timestamp_ns, latitude_deg=vehicle.latitude_deg,
                          longitude_deg=vehicle.longitude_deg,
                          slots=[vehicle.battery] if vehicle.battery is not None else [])


class VehicleWatchSource:
    """A :class:`core.ports.Source` of vehicle packs for the warning engine (pushed, watch-only)."""

    kind = KIND

    def __init__(self, settings: VehicleWatchSettings, *, emit: Emit, metrics: Any = None,
                 seed: int | None = None) -> None:
        self.settings = settings
        self._emit = emit
        # Its own counters (a private registry): the ingest workers count reports for Prometheus.
        self.ingest = VehicleIngest(DeviceRegistry.load(settings.devices), sink=None, metrics=IngestMetrics(),
                                    gate=Gate(rate_per_s=1e9, burst=1e9), window_s=settings.replay_window_s)
        subscriptions = [f"{TOPIC_ROOT}/{fleet}/+/{kind}" for fleet in settings.fleets for kind in ("telemetry", "packs")]
        self.mqtt = MqttIngest(settings.mqtt, self.ingest, client_id=f"cascade-watch-{os.getpid()}",
                               subscriptions=subscriptions, answer=False, on_accepted=self._accepted)
        self._task: asyncio.Task[None] | None = None

    async def _accepted(self, reading: VehicleReading | CabinetReading) -> None:
        if isinstance(reading, CabinetReading):  # a BLE gateway's packs: a cabinet of its packs
            await self._emit(Report(reading, source=KIND, watch_only=True))
        elif reading.battery is not None:
            await self._emit(Report(as_engine_reading(reading), source=KIND, watch_only=True))

    def devices(self) -> Mapping[str, str]:
        return {}  # vehicles come and go by the thousand: no per-device series here (the workers count)

    def online(self) -> Mapping[str, bool | None]:
        return {}

    async def __aenter__(self) -> VehicleWatchSource:
        self._task = asyncio.create_task(self.mqtt.run(), name="vehicle-watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
