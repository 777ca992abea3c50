"""Vehicle simulator (``cascade simulate-vehicles``): delivery e-bikes riding a real street grid,
swapping packs at the simulated cabinets and reporting over MQTT and HTTPS as the devices do.

Three parts, in the order data flows:

* the model (:class:`Pack`, :class:`Station`, :class:`Vehicle`, :class:`Simulation`): riders ride
  L-shaped routes between intersections of :mod:`simulators.city`, stop, park, power off, and ride to
  the nearest swap station when the pack runs low. Physics is closed-form per activity (state at any
  instant is a function of the activity's start state and the elapsed time), so it does not depend on
  how often anyone looks and one heap of "next event" times drives every vehicle: one task, no
  per-vehicle timers. Deterministic for a seed.
* the transports (:class:`MqttTransport`, :class:`HttpsTransport`): one authenticated MQTT 5
  connection per vehicle (the broker's ACL lets a device publish only as itself), opened at its first
  report and kept open; signed HTTPS batches with store-and-forward while the server is unreachable.
* the runner (:func:`add_arguments`, :func:`run`): options, the driver loop, the status line.

Time: simulated time ``t`` (seconds since start) drives physics and the report schedule; ``--speed``
runs it faster than the wall clock. A report's ``ts`` is the wall-clock instant it is sent
(``start + t / speed``), so it is always "now" to the platform's ±5-minute freshness check.

    >>> from simulators.city import chaoyang
    >>> city = chaoyang()
    >>> sim = Simulation(city, place_stations(city, [f"S{i:03d}" for i in range(1, 6)], seed=1),
    ...                  [f"V{i:06d}" for i in range(1, 4)], fleet="bj", seed=1, start_wall_s=1_700_000_000)
    >>> reports = sim.step(3600)
    >>> 150 < len(reports) < 200   # 3 vehicles, one report a minute while powered on
    True
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import logging
import math
import random
import resource
import secrets
import signal
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import aiomqtt
import yaml

from collectors.vehicles.mqtt import topic
from collectors.vehicles.trust import DeviceRegistry, sign
from collectors.vehicles.wire import Battery, Position, Telemetry, encode
from core.chemistry import CELLS
from core.errors import CascadeError
from core.model import Chemistry

from .city import City, Route, chaoyang
from .vehicle_commands import HttpsCommandPoller, VehicleControls

__all__ = ["SCENARIOS", "CabinetMirror", "HttpsTransport", "MqttTransport", "Pack", "Script", "Simulation", "Station",
           "Stats", "Swap", "Vehicle", "add_arguments", "load_stations", "parse_scenario", "place_stations", "run"]

log = logging.getLogger("cascade.simulate_vehicles")

REPORT_ON_S = 60.0  # V-5.7: one report a minute while powered on
REPORT_OFF_S = 3600.0  # V-5.8: one an hour while powered off
MAX_SPEED_KMH = 25.0  # GB 17761 e-bike limit
PLATFORM_RATE_PER_S = 0.5  # the ingest's default per-device limit (collectors.vehicles.settings)

# Normalised open-circuit voltage, (SOC, fraction of the cell's cut-off → end-of-charge span):
# NMC slopes all the way; LFP sits on a flat plateau and only bends at the ends.
_OCV_SHAPE = {
    Chemistry.NMC: ((0.0, 0.0), (0.05, 0.33), (0.1, 0.42), (0.3, 0.55), (0.6, 0.7), (0.9, 0.9), (1.0, 0.98)),
    Chemistry.LFP: ((0.0, 0.0), (0.05, 0.5), (0.1, 0.6), (0.3, 0.64), (0.7, 0.68), (0.95, 0.74), (1.0, 0.8)),
}
_PACK_KINDS = (  # chemistry, cells in series, id prefix, makers: 48 V-class packs
    (Chemistry.NMC, 13, "NM48", ("CATL", "Sunwoda", "Lishen", "Tenpower")),
    (Chemistry.LFP, 16, "LF48", ("CATL", "EVE", "Gotion", "BYD")),
)
_R_CELL_OHM = 0.004
_CHARGE_PER_H = 0.35  # station charging: SOC fraction per hour (CC then taper), empty to full in ~3 h
_RIDE_TAU_S = 900.0  # pack warms toward its riding temperature with this time constant
_REST_TAU_S = 2400.0  # and cools toward the air when parked

SCENARIOS: dict[str, str] = {
    "theft": "parked, switched off and armed; from AT it is pushed away along the street at 5 km/h (V-5.1)",
    "geofence": "parked, switched off and armed; from AT it is carried away on a van, wheels still, at 15 km/h "
                "(V-5.2)",
    "low_soc": "rides on with its pack at 14 % and below, under the user's reminder level (V-5.6)",
    "wrong_chemistry": "rides with an NMC pack whose BMS declares sodium-ion (V-5.10)",
    "deep_discharge": "rides with an aged pack whose voltage collapses to 37 V under load, and its controller keeps "
                      "drawing current: below the 38.4 V discharge protection (V-5.10)",
    "clock_skew": "its clock runs 2 minutes fast and it ignores time calibration (V-4.6)",
    "silent": "from AT its telematics unit sends nothing (V-5.7, V-5.8)",
    "overheat": "rides; from AT its pack heats 3 °C a minute (an internal fault) up to 95 °C",
}
"""Scripted vehicles for the vehicle functions (``--scenario NAME[:VEHICLE[:AT]]``, docs/vehicle-simulator.md)."""
_THEFT_KMH, _VAN_KMH = 5.0, 15.0  # V-5.1's test pushes the armed vehicle at 5 km/h
_CLOCK_SKEW_MS = 120_000
_DEEP_DISCHARGE_V = 37.0
_OVERHEAT_C_PER_MIN, _OVERHEAT_MAX_C = 3.0, 95.0


def _interp(table: Sequence[tuple[float, float]], x: float) -> float:
    x = min(1.0, max(0.0, x))
    for (x0, y0), (x1, y1) in zip(table, table[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return table[-1][1]


def _wiggle(t: float, phase: float, period_s: float) -> float:
    """Smooth deterministic noise in [-1, 1], a function of time only (not of how often it is read)."""
    return 0.6 * math.sin(2 * math.pi * t / period_s + phase) + 0.4 * math.sin(2 * math.pi * t / (period_s * 0.37)
                                                                               + 2.1 * phase)


# --- the model ---------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Pack:
    """A battery pack. Its identity (id, maker, chemistry, SOH, cycles) travels with it between
    vehicles and stations; ``soc`` and ``temperature_c`` hold at ``at_s`` (simulated seconds)."""

    id: str
    maker: str
    chemistry: Chemistry
    cells: int
    nominal_ah: float
    soh_pct: float
    cycles0: int
    spread_v: float
    soc: float
    temperature_c: float
    at_s: float = 0.0
    discharged_ah: float = 0.0
    declared: Chemistry | None = None  # what its BMS reports, when that is not what it is (a scenario)

    @property
    def nominal_v(self) -> float:
        return round(self.cells * CELLS[self.chemistry].nominal_v, 1)

    @property
    def energy_wh(self) -> float:
        return self.nominal_v * self.nominal_ah * self.soh_pct / 100

    @property
    def cycles(self) -> int:
        """Charge cycles: the pack's history plus equivalent full cycles discharged here."""
        return self.cycles0 + int(self.discharged_ah / self.nominal_ah)

    @property
    def resistance_ohm(self) -> float:
        return self.cells * _R_CELL_OHM * (1 + (100 - self.soh_pct) / 50)  # aged packs sag more

    def ocv_v(self, soc: float) -> float:
        cell = CELLS[self.chemistry]
        return self.cells * (cell.cutoff_v + (cell.charge_v - cell.cutoff_v) * _interp(_OCV_SHAPE[self.chemistry], soc))

    def soc_docked(self, t: float) -> float:
        """SOC after charging in a station slot since ``at_s``."""
        return min(1.0, self.soc + _CHARGE_PER_H * max(0.0, t - self.at_s) / 3600)


def _make_pack(rng: random.Random, number: int, soc: float, ambient_c: float) -> Pack:
    chemistry, cells, prefix, makers = _PACK_KINDS[0] if rng.random() < 0.55 else _PACK_KINDS[1]
    soh = round(rng.uniform(75, 100), 1)
    return Pack(id=f"{prefix}-V{number:07d}", maker=rng.choice(makers), chemistry=chemistry, cells=cells,
                nominal_ah=rng.choice((24.0, 30.0, 30.0, 36.0)), soh_pct=soh, cycles0=rng.randrange(30, 900),
                spread_v=rng.uniform(0.005, 0.015) * (1 + (100 - soh) / 30), soc=soc, temperature_c=ambient_c)


@dataclass(slots=True)
class Station:
    """A swap station (a cabinet): where it is and the packs in its slots (``None``: empty slot).
    ``cabinet`` is True when the id is a simulated cabinet's (from the fleet file)."""

    id: str
    node: int
    slots: list[Pack | None]
    cabinet: bool = False

    def fullest(self, t: float) -> tuple[int, float] | None:
        """(slot index, SOC) of the fullest pack at ``t``; ``None`` when the station holds none."""
        charged = [(pack.soc_docked(t), i) for i, pack in enumerate(self.slots) if pack is not None]
        if not charged:
            return None
        soc, index = max(charged, key=lambda item: (item[0], -item[1]))
        return index, soc


@dataclass(frozen=True, slots=True)
class Swap:
    """One exchange at a station: the pack docked (into ``slot``, 1-based) and the one taken."""

    t: float
    vehicle: str
    station: str
    slot: int
    docked: Pack
    taken: Pack


@dataclass(slots=True)
class Activity:
    """What a vehicle does from ``start`` to ``end`` (simulated s) and the state it started with."""

    kind: str  # ride | stop | park | swap
    start: float
    end: float
    power: bool
    soc0: float
    excess0_c: float  # pack temperature above the air at the start
    rise_c: float  # ... and where it tends
    tau_s: float
    odometer0: float
    route: Route | None = None
    speed_mps: float = 0.0
    soc_per_m: float = 0.0
    station: Station | None = None  # a ride to swap


_WIRE_STATE = {"ride": "riding", "stop": "ready", "park": "parked", "swap": "parked", "moved": "parked"}


@dataclass(slots=True)
class Script:
    """A scenario (:data:`SCENARIOS`) played by one vehicle; ``at``: simulated seconds it starts."""

    kind: str
    at: float = 60.0


def parse_scenario(text: str, vehicles: Sequence[str]) -> tuple[str, str, float]:
    """``NAME[:VEHICLE[:AT]]`` → (name, vehicle, at seconds); the vehicle defaults to the first one, AT to
    60. Raises ValueError saying what is wrong."""
    name, _, rest = text.partition(":")
    vehicle, _, at = rest.partition(":")
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}")
    vehicle = vehicle or vehicles[0]
    if vehicle not in vehicles:
        raise ValueError(f"vehicle {vehicle!r} is not one of the simulated vehicles")
    try:
        start = float(at) if at else 60.0
    except ValueError:
        raise ValueError(f"AT {at!r} is not a number of seconds") from None
    if start < 0:
        raise ValueError(f"AT {start:g} is negative")
    return name, vehicle, start


@dataclass(slots=True)
class Vehicle:
    """One e-bike and its rider. ``transport`` is ``mqtt`` or ``https``."""

    id: str
    fleet: str
    rng: random.Random
    pack: Pack
    node: int
    odometer_km: float
    wh_per_km: float  # rider, cargo and tyres: 9-13 Wh/km at 15-25 km/h
    cruise_kmh: float
    swap_soc: float  # rides to a station below this SOC
    phase: float
    seq: int
    model: str
    transport: str = "mqtt"
    activity: Activity | None = None
    next_report: float = 0.0
    script: Script | None = None
    clock_offset_ms: int = 0  # the device clock minus the wall clock
    calibrates: bool = True  # sets its clock from the platform's time calibration (V-4.6)


class Simulation:
    """Every vehicle and station, driven by one heap of next-event times (reports and activity ends).

    ``step(until)`` advances simulated time to ``until`` and returns the reports due on the way, in time
    order; swaps done on the way are appended to ``swaps`` (the runner drains it). Nothing ticks in
    between.
    """

    def __init__(self, city: City, stations: Sequence[Station], vehicle_ids: Sequence[str], *, fleet: str | Callable[[str], str],
                 seed: int = 0, start_wall_s: float, speed: float = 1.0, rate_scale: float = 1.0,
                 https_share: float = 0.0) -> None:
        if not stations:
            raise ValueError("give at least one station")
        self.city = city
        self.stations = list(stations)
        self.start_wall_s = start_wall_s
        self.speed = speed
        self.report_on_s = REPORT_ON_S / rate_scale
        self.report_off_s = REPORT_OFF_S / rate_scale
        self.t = 0.0
        self.swaps: list[Swap] = []  # done since the runner last drained the list
        self.swap_count = 0
        self.swap_waits = 0
        # Nearest station of each intersection, along streets: precomputed, looked up on every low-SOC ride.
        self._nearest = [min(self.stations, key=lambda s, n=n: (city.distance_m(n, s.node), s.id))
                         for n in range(city.node_count)]
        fleet_of = fleet if callable(fleet) else (lambda _id, f=fleet: f)
        rng = random.Random(f"{seed}:vehicles")
        https = set(rng.sample(range(len(vehicle_ids)), round(https_share * len(vehicle_ids))))
        seq0 = int(start_wall_s * 10)  # above the previous run's numbers after a restart (ingest de-duplication)
        self.vehicles: list[Vehicle] = []
        numbers = iter(range(1, 10**7))
        ambient = self.ambient_c(0.0)
        for index, vid in enumerate(vehicle_ids):
            vrng = random.Random(f"{seed}:{vid}")
            pack = _make_pack(vrng, next(numbers), vrng.uniform(0.3, 1.0), ambient)
            v = Vehicle(id=vid, fleet=fleet_of(vid), rng=vrng, pack=pack, node=vrng.randrange(city.node_count),
                        odometer_km=round(vrng.uniform(300, 15000), 1), wh_per_km=vrng.uniform(9, 13),
                        cruise_kmh=vrng.uniform(15, 22),
                        swap_soc=vrng.uniform(0.08, 0.12) if vrng.random() < 0.15 else vrng.uniform(0.17, 0.25),
                        phase=vrng.uniform(0, 2 * math.pi), seq=seq0,
                        model=vrng.choice(("DLV-48A", "DLV-48B", "CargoLite 48")),
                        transport="https" if index in https else "mqtt")
            self.vehicles.append(v)
        for station in self.stations:  # three quarters full, charged to various levels
            srng = random.Random(f"{seed}:{station.id}")
            for i in range(len(station.slots)):
                if i == 0 or srng.random() < 0.75:
                    station.slots[i] = _make_pack(srng, next(numbers), srng.uniform(0.3, 1.0), ambient)
        self._heap: list[tuple[float, int]] = []
        for index, v in enumerate(self.vehicles):
            self._start_parked(v, 0.0, v.rng.uniform(0, 600))
            v.next_report = v.rng.uniform(0, self.report_on_s)  # spread the fleet's reports over the interval
            heapq.heappush(self._heap, (min(v.next_report, v.activity.end), index))  # type: ignore[union-attr]

    # time -------------------------------------------------------------------------------------------------------

    def wall_s(self, t: float) -> float:
        """Wall-clock seconds at simulated time ``t``."""
        return self.start_wall_s + t / self.speed

    def ambient_c(self, t: float) -> float:
        """Beijing air: 13 °C mean, ±5 °C day cycle peaking mid-afternoon (UTC+8)."""
        local_h = ((self.start_wall_s + t) / 3600 + 8) % 24
        return 13.0 + 5.0 * math.sin(2 * math.pi * (local_h - 9) / 24)

    def next_due(self) -> float:
        return self._heap[0][0] if self._heap else math.inf

    # the loop ---------------------------------------------------------------------------------------------------

    def step(self, until: float) -> list[tuple[Vehicle, Telemetry]]:
        out: list[tuple[Vehicle, Telemetry]] = []
        heap = self._heap
        while heap and heap[0][0] <= until:
            t, index = heapq.heappop(heap)
            v = self.vehicles[index]
            act = v.activity
            assert act is not None
            while act.end <= t:
                act = self._next_activity(v, act.end)
            if t >= v.next_report:
                report = self.report(v, t)
                if v.script is None or not (v.script.kind == "silent" and t >= v.script.at):
                    out.append((v, report))
                # An armed vehicle that senses motion is awake: it reports at the powered-on rate.
                v.next_report = t + (self.report_on_s if act.power or act.kind == "moved" else self.report_off_s)
            heapq.heappush(heap, (min(v.next_report, act.end), index))
        self.t = max(self.t, until)
        return out

    # activities -------------------------------------------------------------------------------------------------

    def _begin(self, v: Vehicle, kind: str, t: float, duration_s: float, *, power: bool, **ride: object) -> Activity:
        previous = v.activity
        pack = v.pack
        # The pack's excess over the air relaxes toward ``rise``: 4-7 °C riding (I²R, motor bay), 0 at rest.
        rise, tau = (4.0 + (v.wh_per_km - 9) * 0.8, _RIDE_TAU_S) if kind == "ride" else (0.0, _REST_TAU_S)
        v.activity = act = Activity(kind, t, t + duration_s, power, pack.soc, pack.temperature_c - self.ambient_c(t),
                                    rise, tau, v.odometer_km, **ride)  # type: ignore[arg-type]
        if previous is not None and previous.power != power:
            v.next_report = t  # report at power-on and at power-off (A.3 basic info at power-on)
        return act

    def _commit(self, v: Vehicle, t: float) -> None:
        """Write the activity's state at ``t`` back into the vehicle and its pack."""
        act = v.activity
        assert act is not None
        soc, temp, odometer, _lat, _lon, _dist = self._state(v, act, t)
        pack = v.pack
        if act.kind == "ride":
            km = odometer - act.odometer0
            pack.discharged_ah += km * v.wh_per_km / pack.nominal_v
        pack.soc, pack.temperature_c, pack.at_s = soc, temp, t
        v.odometer_km = odometer

    def _next_activity(self, v: Vehicle, t: float) -> Activity:
        act = v.activity
        assert act is not None
        self._commit(v, t)
        script = v.script
        if script is not None and script.kind in ("theft", "geofence"):
            if act.kind == "moved":  # taken where it was going: parked there, still armed and off
                v.node = act.route.nodes[-1] if act.route is not None else v.node
                return self._begin(v, "park", t, 1e12, power=False)
            return self._moved(v, t, _THEFT_KMH if script.kind == "theft" else _VAN_KMH)
        if act.kind == "ride":
            assert act.route is not None
            v.node = act.route.nodes[-1]
            if act.station is not None:
                return self._swap(v, act.station, t)
            roll = v.rng.random()
            if roll < 0.68:  # a delivery: hand over the order, engine on
                return self._begin(v, "stop", t, v.rng.uniform(60, 300), power=True)
            return self._start_parked(v, t, v.rng.uniform(600, 2700) if roll < 0.9 else
                                      v.rng.uniform(2700, 10800) if roll < 0.98 else v.rng.uniform(4 * 3600, 9 * 3600))
        return self._plan_ride(v, t)

    def _moved(self, v: Vehicle, t: float, kmh: float) -> Activity:
        """Moved away while armed and off (pushed or carried) to an intersection 1.5-4 km away."""
        city = self.city
        far = [n for n in range(city.node_count) if 1500 <= city.distance_m(v.node, n) <= 4000] or \
            [max(range(city.node_count), key=lambda n: city.distance_m(v.node, n))]
        route = city.route(v.node, v.rng.choice(far), v.rng)
        act = self._begin(v, "moved", t, route.length_m / (kmh / 3.6), power=False, route=route, speed_mps=kmh / 3.6)
        v.next_report = t  # the vehicle senses motion: it reports at once
        return act

    def script(self, vehicle_id: str, kind: str, at: float = 60.0) -> Vehicle:
        """Make one vehicle play a scenario (:data:`SCENARIOS`) from simulated time ``at``. Call it before
        stepping past ``at``."""
        if kind not in SCENARIOS:
            raise ValueError(f"unknown scenario {kind!r}; one of {', '.join(SCENARIOS)}")
        v = next((x for x in self.vehicles if x.id == vehicle_id), None)
        if v is None:
            raise ValueError(f"vehicle {vehicle_id!r} is not simulated")
        v.script = Script(kind, max(at, self.t))
        t = self.t
        if kind in ("theft", "geofence"):  # parked, off and armed until the scenario starts
            self._begin(v, "park", t, max(v.script.at - t, 0.0), power=False)
        else:  # a rider on the move
            pack = v.pack
            if kind == "clock_skew":
                v.clock_offset_ms, v.calibrates = _CLOCK_SKEW_MS, False
            elif kind == "low_soc":
                pack.soc, v.swap_soc = 0.14, 0.0
            elif kind == "deep_discharge":
                pack.soc, v.swap_soc = 0.3, 0.0
            elif kind == "wrong_chemistry":
                v.pack = pack = _make_pack(v.rng, 9_000_000 + self.vehicles.index(v), 0.6, self.ambient_c(t))
                pack.chemistry, pack.cells, pack.declared = Chemistry.NMC, 13, Chemistry.NA_ION
            self._begin(v, "stop", t, 1.0, power=True)
        v.next_report = t
        self._heap = [(min(x.next_report, x.activity.end), i)  # type: ignore[union-attr]
                      for i, x in enumerate(self.vehicles)]
        heapq.heapify(self._heap)
        return v

    def calibrate(self, vehicle_id: str, event: dict[str, object]) -> None:
        """The platform's time calibration (``clock_skew`` on the ``reject`` topic, or a ``stale`` /
        ``future`` refusal): a device that calibrates sets its clock from it."""
        v = next((x for x in self.vehicles if x.id == vehicle_id), None)
        if v is None or not v.calibrates:
            return
        skew = event.get("skew_ms")
        if isinstance(skew, int):
            v.clock_offset_ms -= skew
        elif event.get("reason") in ("stale", "future"):
            v.clock_offset_ms = 0

    def _start_parked(self, v: Vehicle, t: float, duration_s: float) -> Activity:
        power = duration_s < 2700 and v.rng.random() < 0.5  # long stays: always switched off
        return self._begin(v, "park", t, duration_s, power=power)

    def _plan_ride(self, v: Vehicle, t: float) -> Activity:
        city, pack = self.city, v.pack
        soc_per_m = v.wh_per_km / 1000 / pack.energy_wh
        station = self._nearest[v.node]
        dest = None
        if pack.soc >= v.swap_soc:  # the next order: 0.8-5 km away, and a station within reach after it
            for _ in range(12):
                candidate = v.rng.randrange(city.node_count)
                distance = city.distance_m(v.node, candidate)
                reserve = distance + city.distance_m(candidate, self._nearest[candidate].node)
                if 800 <= distance <= 5000 and pack.soc - reserve * soc_per_m >= 0.04:
                    dest = candidate
                    break
        to_station = dest is None
        if to_station:
            if station.node == v.node:
                return self._swap(v, station, t)
            dest = station.node
        route = city.route(v.node, dest, v.rng)
        speed_mps = min(MAX_SPEED_KMH, v.cruise_kmh + v.rng.uniform(-2, 2)) / 3.6
        return self._begin(v, "ride", t, route.length_m / speed_mps, power=True, route=route, speed_mps=speed_mps,
                           soc_per_m=soc_per_m, station=station if to_station else None)

    def _swap(self, v: Vehicle, station: Station, t: float) -> Activity:
        """Dock the vehicle's pack and take the fullest one, if it is worth having; else wait for one."""
        best = station.fullest(t)
        if best is None or best[1] < v.pack.soc + 0.3:
            self.swap_waits += 1
            return self._begin(v, "stop", t, v.rng.uniform(300, 900), power=True)  # wait for a pack to charge
        index, soc = best
        taken = station.slots[index]
        assert taken is not None
        taken.soc, taken.at_s = soc, t
        taken.temperature_c = self.ambient_c(t) + 3.0
        station.slots[index] = None
        empty = station.slots.index(None)  # the rider docks first, into a free slot (at least the one just freed)
        docked = v.pack
        docked.at_s = t
        station.slots[empty] = docked
        v.pack = taken
        self.swaps.append(Swap(t, v.id, station.id, empty + 1, docked, taken))
        self.swap_count += 1
        return self._begin(v, "swap", t, v.rng.uniform(60, 150), power=True)

    # state and reports ------------------------------------------------------------------------------------------

    def _state(self, v: Vehicle, act: Activity, t: float) -> tuple[float, float, float, float, float, float]:
        """(soc, temperature, odometer, lat, lon, distance ridden) at ``t`` inside ``act``."""
        elapsed = max(0.0, t - act.start)
        temp = self.ambient_c(t) + act.rise_c + (act.excess0_c - act.rise_c) * math.exp(-elapsed / act.tau_s)
        if act.route is None:
            lat, lon = self.city.point(v.node)
            return act.soc0, temp, act.odometer0, lat, lon, 0.0
        dist = min(act.route.length_m, act.speed_mps * elapsed)
        lat, lon = act.route.position(dist)
        # Carried on a van (the geofence scenario) the wheels stand still: the odometer counts wheel turns.
        wheels = 0.0 if act.kind == "moved" and v.script is not None and v.script.kind == "geofence" else dist
        return max(0.0, act.soc0 - dist * act.soc_per_m), temp, act.odometer0 + wheels / 1000, lat, lon, dist

    def report(self, v: Vehicle, t: float) -> Telemetry:
        """The vehicle's report at ``t`` (advances its sequence number)."""
        act = v.activity
        assert act is not None
        soc, temp, odometer, lat, lon, _dist = self._state(v, act, t)
        pack = v.pack
        riding = act.kind == "ride"
        script = v.script
        if script is not None and script.kind == "overheat" and t >= script.at:  # an internal fault heats the pack
            temp = min(_OVERHEAT_MAX_C, temp + _OVERHEAT_C_PER_MIN * (t - script.at) / 60)
        speed_kmh = current = 0.0
        if act.kind == "moved" and script is not None and script.kind == "theft":
            speed_kmh = _THEFT_KMH  # pushed: the wheels turn (on a van they do not)
        if riding:
            speed_kmh = min(MAX_SPEED_KMH, act.speed_mps * 3.6 * (1 + 0.06 * _wiggle(t, v.phase, 97)))
            # The SOC model spends wh_per_km at the nominal voltage (Pack.energy_wh): the same here, so the
            # charge the current carries is the charge the SOC loses.
            mean_a = v.wh_per_km * speed_kmh / pack.nominal_v  # W / V
            # Instantaneous current: the mean draw the SOC model spends, swinging ±55 % with acceleration after
            # lights and corners; its mean stays the mean, so the current integrates to the charge used.
            current = -min(pack.nominal_ah * 2, mean_a * (1.0 + 0.55 * _wiggle(t, v.phase * 1.7, 41)))
        elif act.power:
            current = -0.3  # controller, lights, GPS
        voltage = pack.ocv_v(soc) + current * pack.resistance_ohm
        if riding and script is not None and script.kind == "deep_discharge":  # collapses; nothing cuts it off
            voltage = min(voltage, _DEEP_DISCHARGE_V)
        cell = voltage / pack.cells
        spread = pack.spread_v * (1.6 if soc < 0.15 else 1.0)
        v.seq += 1
        return Telemetry(
            vehicle=v.id, ts=int(self.wall_s(t) * 1000) + v.clock_offset_ms, seq=v.seq, model=v.model,
            state=_WIRE_STATE[act.kind], power=act.power,  # type: ignore[arg-type]
            # Riders arm the vehicle when they park it switched off (V-5.5); a moved one stays armed.
            armed=not act.power and act.kind in ("park", "moved"),
            pos=Position(valid=True, lat=round(lat, 6), lon=round(lon, 6), alt=self.city.altitude(lat, lon)),
            speed_kmh=round(speed_kmh, 1), odometer_km=round(odometer, 2),
            battery=Battery(
                id=pack.id, maker=pack.maker, chemistry=(pack.declared or pack.chemistry).name,  # type: ignore[arg-type]
                nominal_v=pack.nominal_v,
                nominal_ah=pack.nominal_ah, cells=pack.cells, max_charge_a=round(pack.nominal_ah * 0.5, 1),
                max_discharge_a=pack.nominal_ah * 2,
                undervoltage_v=round(pack.cells * CELLS[pack.chemistry].cutoff_v, 1),
                soc_pct=round(soc * 100, 1), soh_pct=pack.soh_pct, temperature_c=round(temp, 1),
                voltage_v=round(voltage, 2), current_a=round(current, 2),
                cell_max_v=round(cell + spread / 2, 3), cell_min_v=round(cell - spread / 2, 3),
                cell_max_c=round(temp + 0.8, 1), cell_min_c=round(temp - 0.6, 1),
                state="discharging" if riding else "idle", cycles=pack.cycles, protection=0),
        )

    def census(self) -> Counter[str]:
        """Vehicles by what they do now: riding, ready (stopped, on), parked (on), off, swapping."""
        out: Counter[str] = Counter()
        for v in self.vehicles:
            act = v.activity
            assert act is not None
            out["off" if not act.power else {"ride": "riding", "stop": "ready", "park": "parked",
                                             "swap": "swapping"}[act.kind]] += 1
        return out

    def packs(self) -> dict[str, str]:
        """Where every pack is: pack id → vehicle id or ``station/slot``; raises if one is in two places."""
        where: dict[str, str] = {}
        places = [(v.id, v.pack) for v in self.vehicles] + [
            (f"{s.id}/{i + 1}", p) for s in self.stations for i, p in enumerate(s.slots) if p is not None]
        for place, pack in places:
            if pack.id in where:
                raise AssertionError(f"pack {pack.id} is in {where[pack.id]} and in {place}")
            where[pack.id] = place
        return where


# --- stations ----------------------------------------------------------------------------------------------------


def place_stations(city: City, ids: Sequence[str], *, slots: int | Sequence[int] = 12, seed: int = 0,
                   cabinet: bool = False) -> list[Station]:
    """Stations at distinct intersections spread over the district (deterministic for ``seed``)."""
    rng = random.Random(f"{seed}:stations")
    nodes = rng.sample(range(city.node_count), min(len(ids), city.node_count))
    while len(nodes) < len(ids):  # more stations than intersections: share corners
        nodes.append(rng.randrange(city.node_count))
    counts = [slots] * len(ids) if isinstance(slots, int) else list(slots)
    return [Station(sid, node, [None] * max(1, n), cabinet) for sid, node, n in zip(ids, nodes, counts)]


def load_stations(path: Path, city: City, *, seed: int = 0) -> tuple[list[Station], str]:
    """The simulated cabinets of a fleet file as swap stations, and a sentence saying where they were put.

    A cabinet with ``lat``/``lon`` (or ``latitude_deg``/``longitude_deg``) inside the district stands at
    the nearest intersection; the others (today's fleet files carry no coordinates) are placed on the grid.
    """
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        entries = doc["cabinets"]
        ids = [str(e["id"]) for e in entries]
        slots = [int(e.get("slots", 12)) for e in entries]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise CascadeError(f"is not a fleet file the simulator can read ({err})", source=path, key="cabinets",
                           fix="start `cascade simulate` first, or point --fleet-file at a missing file and give "
                               "--stations N") from None
    if not ids:
        raise CascadeError("is empty", source=path, key="cabinets", fix="simulate at least one cabinet")
    stations = place_stations(city, ids, slots=slots, seed=seed, cabinet=True)
    located = 0
    for station, entry in zip(stations, entries):
        lat, lon = entry.get("lat", entry.get("latitude_deg")), entry.get("lon", entry.get("longitude_deg"))
        if isinstance(lat, int | float) and isinstance(lon, int | float) and city.contains(lat, lon):
            station.node = city.nearest_node(lat, lon)
            located += 1
    where = (f"{located} at their fleet-file coordinates, {len(ids) - located} placed on the grid" if located
             else "placed on the grid (the fleet file has no coordinates in the district)")
    return stations, f"{len(ids)} cabinets from {path} as swap stations, {where}"


# --- transports --------------------------------------------------------------------------------------------------


@dataclass
class Stats:
    """Counters for the status line."""

    sent: Counter[str] = field(default_factory=Counter)  # delivered, by transport (PUBACK / stored by HTTPS)
    lost: Counter[str] = field(default_factory=Counter)  # not delivered, by cause
    refused: Counter[str] = field(default_factory=Counter)  # refused by the platform, by its reason
    mirrored: Counter[str] = field(default_factory=Counter)  # swaps docked into the cabinet simulator: ok / failed
    calibrations: int = 0  # time calibrations received (clock_skew on the reject topic)


class MqttTransport:
    """One MQTT 5 connection per vehicle (the ACL lets a device publish only as itself), opened at the
    vehicle's first report and kept open; QoS 1 publishes from a pool of ``in_flight`` sender tasks; the
    platform's refusals arrive on the vehicle's ``reject`` topic."""

    def __init__(self, host: str, port: int, devices: DeviceRegistry, stats: Stats, *,
                 tls: ssl.SSLContext | None = None, in_flight: int = 64, keepalive_s: int = 120,
                 queue_size: int = 100_000) -> None:
        self.host, self.port, self.devices, self.stats, self.tls = host, port, devices, stats, tls
        self.keepalive_s = keepalive_s
        self.in_flight = in_flight
        self.queue: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue(queue_size)
        self.clients: dict[str, aiomqtt.Client] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._retry_at: dict[str, float] = {}
        self._errors_logged: set[str] = set()
        # Remote commands (simulators/vehicle_commands.py): payload of a command -> the acknowledgement to send.
        self.on_command: Callable[[str, bytes], bytes | None] | None = None
        # Time calibration (V-4.6): called with the vehicle and the reject-topic event carrying server_time_ms.
        self.on_calibration: Callable[[str, dict[str, object]], None] | None = None

    def submit(self, vehicle: Vehicle, payload: bytes) -> None:
        try:
            self.queue.put_nowait((vehicle.id, topic(vehicle.fleet, vehicle.id), payload))
        except asyncio.QueueFull:
            self.stats.lost["mqtt_backlog"] += 1

    async def run(self) -> None:
        await asyncio.gather(*(self._sender() for _ in range(self.in_flight)))

    async def close(self) -> None:
        for task in self._readers.values():
            task.cancel()
        await asyncio.gather(*self._readers.values(), return_exceptions=True)
        clients, self.clients = list(self.clients.values()), {}
        for client in clients:  # one by one: measured faster than all at once (10,000 in ~5 s)
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def _sender(self) -> None:
        while True:
            vid, where, payload = await self.queue.get()
            client = await self._client(vid)
            if client is None:
                self.stats.lost["mqtt_unconnected"] += 1
                continue
            try:
                await client.publish(where, payload, qos=1, timeout=30)
                self.stats.sent["mqtt"] += 1
            except aiomqtt.MqttError as err:
                self.stats.lost["mqtt_publish"] += 1
                self._log_once("publish", "MQTT publish as %s failed: %s; reconnecting at its next report", vid, err)
                await self._drop(vid)

    async def _client(self, vid: str) -> aiomqtt.Client | None:
        client = self.clients.get(vid)
        if client is not None:
            return client
        if time.monotonic() < self._retry_at.get(vid, 0.0):
            return None
        lock = self._locks.setdefault(vid, asyncio.Lock())
        async with lock:
            if vid in self.clients:
                return self.clients[vid]
            device = self.devices.get(vid)
            assert device is not None  # checked at start-up
            client = aiomqtt.Client(self.host, self.port, username=vid, password=device.secret.hex(), identifier=vid,
                                    protocol=aiomqtt.ProtocolVersion.V5, keepalive=self.keepalive_s,
                                    tls_context=self.tls, timeout=15, max_queued_incoming_messages=100)
            try:
                await client.__aenter__()
                await client.subscribe(topic(device.fleet, vid, "reject"), qos=0)
                if self.on_command is not None:
                    await client.subscribe(topic(device.fleet, vid, "cmd"), qos=1)
            except aiomqtt.MqttError as err:
                self._retry_at[vid] = time.monotonic() + 30
                reason = _connect_reason(err)
                self.stats.refused[f"connect_{reason}"] += 1
                self._log_once(f"connect:{reason}", "MQTT %s:%s refused or failed the connection of %s: %s; "
                               "retrying every 30 s", self.host, self.port, vid, err)
                with contextlib.suppress(Exception):
                    await client.__aexit__(None, None, None)
                return None
            self.clients[vid] = client
            self._readers[vid] = asyncio.create_task(self._read_rejects(vid, client), name=f"reject {vid}")
            return client

    async def _read_rejects(self, vid: str, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                if self.on_command is not None and message.topic.value.endswith("/cmd"):
                    ack = self.on_command(vid, bytes(message.payload))  # type: ignore[arg-type]
                    if ack is not None:
                        await client.publish(message.topic.value.removesuffix("/cmd") + "/ack", ack, qos=1)
                    continue
                try:
                    event = json.loads(message.payload)  # type: ignore[arg-type]
                    reason = event["reason"]
                except (ValueError, TypeError, KeyError):
                    event, reason = None, "unreadable_reject"
                if isinstance(event, dict) and "server_time_ms" in event and self.on_calibration is not None:
                    self.on_calibration(vid, event)  # V-4.6: the platform's clock, to set ours from
                if reason == "clock_skew":  # a stored report: a time calibration, not a refusal
                    self.stats.calibrations += 1
                    continue
                self.stats.refused[str(reason)[:40]] += 1
        except aiomqtt.MqttError:
            await self._drop(vid)

    async def _drop(self, vid: str) -> None:
        client = self.clients.pop(vid, None)
        reader = self._readers.pop(vid, None)
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    def _log_once(self, key: str, fmt: str, *args: object) -> None:
        if key not in self._errors_logged:
            self._errors_logged.add(key)
            log.warning(fmt, *args)


def _connect_reason(err: aiomqtt.MqttError) -> str:
    text = str(err).lower()
    if "not authori" in text or "bad user" in text or "password" in text:
        return "not_authorized"
    if "refused" in text or "timed out" in text or "timeout" in text or "errno" in text:
        return "unreachable"
    return "failed"


class HttpsTransport:
    """Signed ``POST /v1/telemetry`` batches, one vehicle per request (the signature is the device's).

    Store-and-forward: a vehicle's reports wait in its buffer (at most ``max_buffer``; the oldest go
    first, counted) until a post succeeds; while the server is unreachable nothing is posted (capped
    back-off), and when it answers again each vehicle sends what it holds as one batch."""

    def __init__(self, url: str, devices: DeviceRegistry, stats: Stats, *, tls: ssl.SSLContext | None = None,
                 max_buffer: int = 2000, max_batch: int = 500, concurrency: int = 16) -> None:
        self.url = url.rstrip("/") + "/v1/telemetry"
        self.devices, self.stats, self.tls = devices, stats, tls
        self.max_buffer, self.max_batch = max_buffer, max_batch
        self.concurrency = concurrency
        self.buffers: dict[str, deque[bytes]] = {}
        self._pending: dict[str, None] = {}  # vehicles with something to send, in order
        self._wake = asyncio.Event()
        self._down_since: float | None = None
        self._delay = 1.0

    @property
    def buffered(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    @property
    def reachable(self) -> bool:
        """False from a failed post (connection, timeout, 5xx) until one succeeds."""
        return self._down_since is None

    def submit(self, vehicle: Vehicle, payload: bytes) -> None:
        buffer = self.buffers.setdefault(vehicle.id, deque())
        if len(buffer) >= self.max_buffer:
            buffer.popleft()
            self.stats.lost["https_buffer_full"] += 1
        buffer.append(payload)
        self._pending[vehicle.id] = None
        self._wake.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=self.concurrency, ssl=self.tls if self.tls is not None else None)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    batch = list(self._pending)[: self.concurrency]
                    for vid in batch:
                        del self._pending[vid]
                    results = await asyncio.gather(*(self._post(session, vid) for vid in batch))
                    if not all(results):  # unreachable: keep everything, wait, try again
                        for vid in batch:
                            if self.buffers.get(vid):
                                self._pending[vid] = None
                        await asyncio.sleep(self._delay)
                        self._delay = min(self._delay * 2, 30.0)

    async def _post(self, session: aiohttp.ClientSession, vid: str) -> bool:
        """Send the vehicle's buffer (a batch at a time); False when the server could not be reached."""
        buffer = self.buffers.get(vid)
        device = self.devices.get(vid)
        assert device is not None
        while buffer:
            items = [buffer[i] for i in range(min(len(buffer), self.max_batch))]
            body = b"[" + b",".join(items) + b"]"
            stamp, nonce = int(time.time() * 1000), secrets.token_hex(12)
            headers = {"Content-Type": "application/json", "X-Cascade-Device": vid,
                       "X-Cascade-Timestamp": str(stamp), "X-Cascade-Nonce": nonce,
                       "X-Cascade-Signature": sign(device.secret, stamp, nonce, body)}
            try:
                async with session.post(self.url, data=body, headers=headers) as resp:
                    status = resp.status
                    answer = await resp.json(content_type=None) if status < 500 else {}
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as err:
                self._went_down(f"{type(err).__name__}: {err}")
                return False
            if status >= 500:
                self._went_down(f"HTTP {status}")
                return False
            self._came_back()
            for _ in items:
                buffer.popleft()
            if status in (200, 422):
                refused = answer.get("refused", [])
                self.stats.sent["https"] += int(answer.get("accepted", 0))
                for entry in refused:
                    self.stats.refused[str(entry.get("reason", "unknown"))[:40]] += 1
            else:  # the whole request refused (signature, time, device, size): sending it again will not help
                self.stats.refused[str(answer.get("error", f"http_{status}"))[:40]] += len(items)
        return True

    def _went_down(self, why: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            hint = (" (an http:// URL to an ingest that serves HTTPS, as `make run`'s does, looks like this: use "
                    "--https https://HOST:PORT --ca var/certs/ca.pem)" if self.url.startswith("http://") else "")
            log.warning("HTTPS %s unreachable (%s); buffering reports until it answers%s", self.url, why, hint)

    def _came_back(self) -> None:
        if self._down_since is not None:
            log.info("HTTPS %s answers again after %.0f s; forwarding %d buffered reports", self.url,
                     time.monotonic() - self._down_since, self.buffered)
            self._down_since = None
        self._delay = 1.0


class CabinetMirror:
    """Docks each swapped-in pack into the same slot of the cabinet simulator, through its control
    endpoint (an ``insert`` scenario, then deleted: the pack stays), so the pack id a vehicle returned
    shows up in the cabinet's Modbus slot."""

    def __init__(self, url: str, stats: Stats) -> None:
        self.url = url.rstrip("/")
        self.stats = stats
        self.queue: asyncio.Queue[Swap] = asyncio.Queue(10_000)
        self._failed_logged = False

    def submit(self, swap: Swap) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(swap)

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while True:
                swap = await self.queue.get()
                pack = swap.docked
                scenario = {"name": "vehicle_swap", "description": f"{swap.vehicle} docked {pack.id}",
                            "target": {"cabinet": swap.station, "slot": swap.slot},
                            "steps": [{"at": "0s", "insert": {
                                "battery_id": pack.id, "battery_maker": pack.maker,
                                "chemistry": pack.chemistry.name.lower(), "nominal_voltage_v": pack.nominal_v,
                                "soc_pct": round(pack.soc * 100, 1), "temperature_c": round(pack.temperature_c, 1)}}]}
                try:
                    async with session.post(f"{self.url}/scenarios", data=yaml.safe_dump(scenario),
                                            headers={"X-Scenario-File": "vehicle simulator swap"}) as resp:
                        body = await resp.json(content_type=None)
                        if resp.status != 201:
                            raise ValueError(f"HTTP {resp.status}: {body.get('error')}")
                    async with session.delete(f"{self.url}/scenarios/{body['id']}"):
                        pass
                    self.stats.mirrored["ok"] += 1
                except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError) as err:
                    self.stats.mirrored["failed"] += 1
                    if not self._failed_logged:
                        self._failed_logged = True
                        log.warning("cabinet simulator %s: swap of %s into %s slot %d not mirrored: %s", self.url,
                                    pack.id, swap.station, swap.slot, err)


# --- the runner --------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cascade simulate-vehicles``."""
    parser.add_argument("--vehicles", type=int, default=300, metavar="N",
                        help="vehicles to simulate: the first N devices of --devices (default 300)")
    parser.add_argument("--devices", default="var/devices/devices.json", metavar="FILE",
                        help="devices.json with ids, fleets and secrets (cascade devices provision; "
                             "default var/devices/devices.json)")
    parser.add_argument("--mqtt", metavar="HOST:PORT", help="publish over MQTT to this broker (one connection per vehicle)")
    parser.add_argument("--https", metavar="URL", help="post signed batches to this ingest URL, e.g. https://127.0.0.1:8443")
    parser.add_argument("--https-share", type=float, default=None, metavar="FRACTION",
                        help="share of the vehicles on HTTPS when both transports are given (default 0.2)")
    parser.add_argument("--ca", metavar="FILE", help="CA file: use TLS for MQTT and verify both servers against it")
    parser.add_argument("--fleet-file", default="var/fleet.yaml", metavar="PATH",
                        help="the cabinet simulator's fleet file: its cabinets are the swap stations "
                             "(default var/fleet.yaml; if missing, --stations are placed on the grid)")
    parser.add_argument("--stations", type=int, default=20, metavar="N",
                        help="swap stations to place on the grid when there is no fleet file (default 20)")
    parser.add_argument("--cabinet-control", metavar="URL",
                        help="the cabinet simulator's control endpoint, e.g. http://127.0.0.1:15019: each swapped-in "
                             "pack is docked into the cabinet's slot there")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same riders (default 0)")
    parser.add_argument("--speed", type=float, default=1.0, metavar="FACTOR",
                        help="simulated time runs FACTOR times faster than the clock; report times stay 'now' (default 1)")
    parser.add_argument("--rate-scale", type=float, default=1.0, metavar="FACTOR",
                        help="report FACTOR times more often than the standard's 1/min on, 1/h off (default 1)")
    parser.add_argument("--status-interval", type=float, default=10.0, metavar="S",
                        help="seconds between status lines (default 10; 0 = none)")
    parser.add_argument("--duration", type=float, default=0.0, metavar="S",
                        help="stop after S wall-clock seconds (default 0: run until Ctrl-C / SIGTERM)")
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME[:VEHICLE[:AT]]",
                        help="make a vehicle (default: the first) play a scenario from AT simulated seconds (default "
                             f"60); repeatable. NAME: {', '.join(SCENARIOS)}")


class _StartupError(Exception):
    pass


def _check(args: argparse.Namespace) -> tuple[str, int] | None:
    checks = [
        (args.vehicles >= 1, "--vehicles", "use 1 or more"),
        (args.speed > 0, "--speed", "use a factor above 0, e.g. 20"),
        (args.rate_scale > 0, "--rate-scale", "use a factor above 0, e.g. 10"),
        (args.stations >= 1, "--stations", "use 1 or more"),
        (args.https_share is None or 0 <= args.https_share <= 1, "--https-share", "use a fraction 0..1, e.g. 0.2"),
    ]
    for ok, option, fix in checks:
        if not ok:
            raise _StartupError(f"{option}: {getattr(args, option[2:].replace('-', '_'))!r} is out of range. Fix: {fix}")
    if not (args.mqtt or args.https):
        raise _StartupError("no transport. Fix: give --mqtt HOST:PORT and/or --https URL")
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise _StartupError(f"--mqtt {args.mqtt!r} is not HOST:PORT. Fix: e.g. --mqtt 127.0.0.1:1883")
        return host, int(port)
    return None


def _raise_file_limit(connections: int) -> None:
    """One socket per MQTT vehicle: raise the soft open-file limit toward the hard one, or say so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = connections + 200
    if soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < need:
        log.warning("%d MQTT connections need %d open files; the limit is %d. Fix: raise it (ulimit -n) or "
                    "simulate fewer vehicles over MQTT (--https-share)", connections, need, target)


def _status(sim: Simulation, stats: Stats, https: HttpsTransport | None, started: float) -> str:
    census = sim.census()
    lost = sum(stats.lost.values())
    parts = [f"sim +{_hms(sim.t)} (x{sim.speed:g})",
             f"{census['riding']} riding, {census['ready'] + census['swapping']} stopped, {census['parked']} parked, "
             f"{census['off']} off",
             "sent " + ", ".join(f"{k} {stats.sent[k]}" for k in ("mqtt", "https")) +
             (f", buffered {https.buffered}" if https is not None else "") + (f", lost {lost}" if lost else ""),
             "refused " + (", ".join(f"{k} {n}" for k, n in sorted(stats.refused.items())) or "0") +
             (f", calibrations {stats.calibrations}" if stats.calibrations else ""),
             f"swaps {sim.swap_count}" + (f" (waited {sim.swap_waits})" if sim.swap_waits else "") +
             (f", mirrored {stats.mirrored['ok']}/{stats.mirrored['ok'] + stats.mirrored['failed']}"
              if stats.mirrored else ""),
             f"wall {time.monotonic() - started:.0f} s"]
    return "vehicles: " + "; ".join(parts)


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s"


async def run(args: argparse.Namespace) -> int:
    """Simulate until cancelled, SIGTERM or ``--duration``; 0 on a clean stop, 2 on bad options."""
    try:
        mqtt_at = _check(args)
        registry = DeviceRegistry.load(args.devices)
        devices = [d for d in registry if d.kind == "vehicle"][: args.vehicles]  # a BLE gateway rides nowhere
        if len(devices) < args.vehicles:
            raise _StartupError(f"--vehicles {args.vehicles}: {args.devices} has only {len(devices)} vehicles. "
                                f"Fix: cascade devices provision --count {args.vehicles}, or fewer --vehicles")
        city = chaoyang()
        fleet_file = Path(args.fleet_file) if args.fleet_file else None
        if fleet_file is not None and fleet_file.exists():
            stations, where = load_stations(fleet_file, city, seed=args.seed)
        else:
            stations = place_stations(city, [f"S{i:03d}" for i in range(1, args.stations + 1)], seed=args.seed)
            where = f"{len(stations)} stations placed on the grid (no fleet file at {args.fleet_file})"
        tls = ssl.create_default_context(cafile=args.ca) if args.ca else None
    except (_StartupError, CascadeError, OSError, ssl.SSLError) as err:
        log.error("%s", err)
        return 2
    share = (args.https_share if args.https_share is not None else 0.2) if args.mqtt and args.https else \
        (1.0 if args.https else 0.0)
    by_id = {d.id: d.fleet for d in devices}
    sim = Simulation(city, stations, [d.id for d in devices], fleet=by_id.__getitem__, seed=args.seed,
                     start_wall_s=time.time(), speed=args.speed, rate_scale=args.rate_scale, https_share=share)
    try:
        for text in args.scenario:
            name, vehicle, at = parse_scenario(text, [v.id for v in sim.vehicles])
            scripted = sim.script(vehicle, name, at)
            if args.mqtt:  # `cascade run` watches the MQTT stream: a scenario reports there
                scripted.transport = "mqtt"
            log.info("scenario %s: vehicle %s %s (AT = %g s simulated)", name, vehicle, SCENARIOS[name], at)
    except ValueError as err:
        log.error("--scenario: %s. Fix: NAME[:VEHICLE[:AT]], e.g. --scenario theft:%s:120", err, sim.vehicles[0].id)
        return 2
    per_device = args.speed * args.rate_scale / REPORT_ON_S
    if per_device > PLATFORM_RATE_PER_S:
        log.warning("--speed %g x --rate-scale %g: each vehicle reports %.2f times a second while on; the ingest's "
                    "default limit is %g (rate_per_s), above it reports are refused as rate_limited", args.speed,
                    args.rate_scale, per_device, PLATFORM_RATE_PER_S)
    stats = Stats()
    n_https = sum(v.transport == "https" for v in sim.vehicles)
    mqtt = https = mirror = None
    if mqtt_at is not None and n_https < len(sim.vehicles):
        _raise_file_limit(len(sim.vehicles) - n_https)
        mqtt = MqttTransport(*mqtt_at, registry, stats, tls=tls)
    if args.https and n_https:
        https = HttpsTransport(args.https, registry, stats, tls=tls)
    controls = VehicleControls()  # remote commands: lock, power, arming (simulators/vehicle_commands.py)
    poller = None
    if mqtt is not None:
        mqtt.on_command = controls.handle
        mqtt.on_calibration = sim.calibrate
    if https is not None:
        poller = HttpsCommandPoller(args.https, registry, controls,
                                    [v.id for v in sim.vehicles if v.transport == "https"], tls=tls)
    if args.cabinet_control:
        if any(s.cabinet for s in stations):
            mirror = CabinetMirror(args.cabinet_control, stats)
        else:
            log.warning("--cabinet-control: the stations are not cabinets (no fleet file); swaps stay in the "
                        "vehicle simulator")
    log.info("simulating %d vehicles in %s (%.0f x %.0f km): %d over MQTT %s (one connection each, opened at the "
             "first report), %d over HTTPS %s; %s; seed %d, speed %g, reports every %g s on / %g s off (simulated)",
             len(sim.vehicles), city.name, (city.bounds[3] - city.bounds[1]) * city.m_per_deg_lon / 1000,
             (city.bounds[2] - city.bounds[0]) * city.m_per_deg_lat / 1000, len(sim.vehicles) - n_https,
             args.mqtt or "-", n_https, args.https or "-", where, args.seed, args.speed, sim.report_on_s,
             sim.report_off_s)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(t.run(), name=type(t).__name__) for t in (mqtt, https, mirror, poller) if t is not None]
    started = time.monotonic()
    try:
        driver = asyncio.create_task(_drive(sim, mqtt, https, mirror, controls), name="vehicle driver")
        tasks.append(driver)
        if args.status_interval > 0:
            tasks.append(asyncio.create_task(_print_status(sim, stats, https, started, args.status_interval)))
        ends = [asyncio.create_task(stop.wait())]
        if args.duration > 0:
            ends.append(asyncio.create_task(asyncio.sleep(args.duration)))
        done, _ = await asyncio.wait(ends + tasks, return_when=asyncio.FIRST_COMPLETED)
        for end in ends:
            end.cancel()
        for task in done & set(tasks):  # the driver and the transports run until cancelled: this is a bug
            task.result()
        return 0
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGTERM)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if mqtt is not None:
            await mqtt.close()
        print(_status(sim, stats, https, started), flush=True)
        log.info("vehicle simulator stopped")


async def _drive(sim: Simulation, mqtt: MqttTransport | None, https: HttpsTransport | None,
                 mirror: CabinetMirror | None, controls: VehicleControls | None = None) -> None:
    """The one task that moves every vehicle: advance to "now", hand the due reports to the transports,
    sleep until the next event (at most a second, so Ctrl-C and the status line stay prompt)."""
    while True:
        now = (time.time() - sim.start_wall_s) * sim.speed
        for vehicle, msg in sim.step(now):
            payload = encode(msg if controls is None else controls.adjust(msg))
            transport = https if vehicle.transport == "https" else mqtt
            if transport is not None:
                transport.submit(vehicle, payload)
        if mirror is not None:  # only built when the stations are the simulated cabinets
            for swap in sim.swaps:
                mirror.submit(swap)
        sim.swaps.clear()
        wait = (sim.next_due() - (time.time() - sim.start_wall_s) * sim.speed) / sim.speed
        await asyncio.sleep(min(1.0, max(0.0, wait)))


async def _print_status(sim: Simulation, stats: Stats, https: HttpsTransport | None, started: float,
                        every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        print(_status(sim, stats, https, started), flush=True)
