"""Simulated packs whose true capacity and resistance are known and fade: the ground truth the
estimators are tested against (tests/test_health_estimators.py, bench/health.py).

An equivalent-circuit model per cell (OCV curve of :mod:`health.ocv`, series resistance R0, one RC
pair R1·C1), N cells in series, capacity fading linearly per cycle and R0 growing per cycle. A day of
service: docked full, ridden in a vehicle (reports 1/min, 1/h when parked), swapped back into a cabinet
slot (polled every ``cabinet_interval_s``), charged CC-CV to full, kept; now and then stored for days
and topped up (self-discharge). What the stream carries is what a BMS reports: voltage and current
quantised and noisy, its own SOC counted against a frozen capacity (so it drifts), a frozen SOH, a
charge count.

    spec = PackSpec("SIM-0001", capacity_ah=20.0, fade_per_cycle=0.0004)
    for t_ns, pack, place in simulate(spec, days=range(0, 600, 30)):
        ...
    spec.capacity_at(300)   # the true capacity (Ah) at cycle 300
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from core.chemistry import CELLS
from core.model import BatteryState, Chemistry, SlotReading
from health.analyser import Place
from health.ocv import ocv

__all__ = ["PackSpec", "SimulatedPack", "simulate"]

Sample = tuple[int, SlotReading, Place]


@dataclass(frozen=True, slots=True)
class PackSpec:
    """One simulated pack and its truth. ``fade_per_cycle`` is the fraction of the initial capacity
    lost per cycle; ``r0_growth_per_cycle`` the fraction of the initial R0 gained per cycle."""

    battery_id: str
    capacity_ah: float = 20.0            # true capacity at cycle 0
    nominal_ah: float = 20.0             # what the BMS reports as nominal
    chemistry: int = Chemistry.NMC
    cells: int = 13
    r0_cell_ohm: float = 0.0020          # per cell at cycle 0
    r1_cell_ohm: float = 0.0008
    tau_s: float = 60.0
    fade_per_cycle: float = 0.0003
    r0_growth_per_cycle: float = 0.0008
    self_discharge_pct_per_day: float = 0.15
    soh_bms_pct: float = 96.0            # frozen, optimistic
    cycles_at_start: int = 200           # its first life
    site: str = "site-01"
    cabinet: str = "C0001"
    slot: int = 1
    vehicle: str = "V0001"
    cabinet_interval_s: float = 10.0
    vehicle_interval_s: float = 60.0
    charge_c: float = 0.5
    voltage_noise_v: float = 0.004       # pack voltage noise (V), before quantising to resolution
    voltage_resolution_v: float = 0.01
    current_noise_a: float = 0.03
    current_resolution_a: float = 0.1
    current_gain: float = 1.004          # the BMS's current sensor reads 0.4 % high
    seed: int = 1

    def capacity_at(self, cycle: float) -> float:
        """True capacity (Ah) after ``cycle`` cycles of this simulation."""
        return self.capacity_ah * (1 - self.fade_per_cycle * cycle)

    def r0_at(self, cycle: float) -> float:
        """True pack R0 (Ω)."""
        return self.cells * self.r0_cell_ohm * (1 + self.r0_growth_per_cycle * cycle)

    def resistance_at(self, cycle: float, dt_s: float) -> float:
        """True pack DC resistance (Ω) seen by a step sampled a uniform random time up to ``dt_s``
        after it: R0 plus the mean part of R1 that has charged by then."""
        part = 1 - self.tau_s / dt_s * (1 - math.exp(-dt_s / self.tau_s))
        return self.r0_at(cycle) + self.cells * self.r1_cell_ohm * part


class SimulatedPack:
    """The model's state, stepped in time; :meth:`sample` renders what the BMS reports."""

    def __init__(self, spec: PackSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.soc = 100.0          # true, %
        self.u1 = 0.0             # RC voltage per cell
        self.current = 0.0        # true current, + charging
        self.cycle = 0.0          # cycles of this simulation (equivalent full)
        self.bms_soc = 100.0
        self.t_s = 0.0
        self.temperature = 25.0

    @property
    def capacity(self) -> float:
        return self.spec.capacity_at(self.cycle)

    def terminal_v(self) -> float:
        s = self.spec
        r0 = s.r0_at(self.cycle) / s.cells
        return s.cells * (ocv(s.chemistry, self.soc) + self.u1 + self.current * r0)

    def advance(self, dt: float) -> None:
        s = self.spec
        q = self.current * dt / 3600.0
        self.soc = min(100.0, max(0.0, self.soc + q / self.capacity * 100.0))
        if abs(self.current) < 1e-9:
            self.soc = max(0.0, self.soc - s.self_discharge_pct_per_day * dt / 86400.0)
        a = math.exp(-dt / s.tau_s)
        self.u1 = self.u1 * a + self.current * s.r1_cell_ohm * (1 - a)
        self.cycle += abs(q) / (2 * s.capacity_ah)
        self.bms_soc = min(100.0, max(0.0, self.bms_soc + q * s.current_gain / s.nominal_ah * 100.0))
        self.temperature += (0.02 * self.current ** 2 * s.r0_at(self.cycle) * dt - (self.temperature - 25.0)
                             * dt / 1800.0) / 1.0
        self.t_s += dt

    def sample(self, state: BatteryState) -> SlotReading:
        s = self.spec
        v = self.terminal_v() + self.rng.gauss(0, s.voltage_noise_v)
        i = self.current * s.current_gain + self.rng.gauss(0, s.current_noise_a)
        return SlotReading(
            slot=s.slot, battery_id=s.battery_id, chemistry=s.chemistry, cell_count=s.cells,
            nominal_voltage_v=round(s.cells * CELLS[Chemistry(s.chemistry)].nominal_v, 1),
            nominal_capacity_ah=s.nominal_ah, voltage_v=round(v / s.voltage_resolution_v) * s.voltage_resolution_v,
            charge_current_a=round(i / s.current_resolution_a) * s.current_resolution_a,
            soc_pct=float(round(self.bms_soc)), soh_pct=s.soh_bms_pct, temperature_c=round(self.temperature, 1),
            charge_count=s.cycles_at_start + int(self.cycle), battery_state=int(state))


def simulate(spec: PackSpec, days: Iterable[int], *, start_s: float = 1.7e9, depth: tuple[float, float] = (55, 80),
             storage_every: int = 4, storage_days: float = 2.0) -> Iterator[Sample]:
    """The pack's reports on each of ``days`` (day numbers since ``start_s``); between the days listed
    the pack cycles unseen (its capacity fades by the cycles of the days skipped, one cycle a day)."""
    pack = SimulatedPack(spec)
    rng = random.Random(spec.seed * 7919)
    cab = Place(spec.site, spec.cabinet, spec.slot, "cabinet")
    veh = Place(spec.site, spec.vehicle, None, "vehicle")
    last_day = None
    for n, day in enumerate(days):
        if last_day is not None and day > last_day + 1:  # unseen days: ~one cycle each
            pack.cycle += (day - last_day - 1) * (rng.uniform(*depth) / 100.0)
            pack.soc, pack.bms_soc, pack.u1 = 100.0, 100.0, 0.0
        last_day = day
        pack.t_s = max(pack.t_s, start_s + day * 86400.0)
        yield from _day(pack, rng, cab, veh, depth, storage=n % storage_every == storage_every - 1,
                        storage_days=storage_days)


def _hold(pack: SimulatedPack, place: Place, state: BatteryState, seconds: float, interval: float,
          current: float = 0.0, stop_soc: float = -1.0) -> Iterator[Sample]:
    end = pack.t_s + seconds
    pack.current = current
    while pack.t_s < end and pack.soc > stop_soc:
        pack.advance(min(interval, end - pack.t_s))
        yield int(pack.t_s * 1e9), pack.sample(state), place


def _day(pack: SimulatedPack, rng: random.Random, cab: Place, veh: Place, depth: tuple[float, float],
         storage: bool, storage_days: float) -> Iterator[Sample]:
    s = pack.spec
    ci, vi = s.cabinet_interval_s, s.vehicle_interval_s
    yield from _hold(pack, cab, BatteryState.FULL, 3600.0, ci * 6)
    # Ridden: pulses of -0.2 C .. -1 C with stops, until the day's depth is used.
    target = max(5.0, pack.soc - rng.uniform(*depth))
    while pack.soc > target:
        amps = -rng.uniform(0.2, 1.0) * s.nominal_ah
        yield from _hold(pack, veh, BatteryState.DISCHARGING, rng.uniform(300, 900), vi, amps, stop_soc=target)
        yield from _hold(pack, veh, BatteryState.IDLE, rng.uniform(60, 300), vi)
    # Parked (reports 1/h), then swapped into a cabinet slot.
    yield from _hold(pack, veh, BatteryState.IDLE, rng.uniform(2400, 4000), 600.0)
    yield from _hold(pack, cab, BatteryState.IDLE, rng.uniform(60, 300), ci)
    # The charger starts at a random moment within a poll interval.
    yield from _hold(pack, cab, BatteryState.IDLE, rng.uniform(0, ci), ci)
    yield from _charge(pack, cab)
    if storage:  # kept for days, then topped up before it goes out again
        yield from _hold(pack, cab, BatteryState.FULL, storage_days * 86400.0, 300.0)
        yield from _hold(pack, cab, BatteryState.IDLE, rng.uniform(0, ci), ci)
        yield from _charge(pack, cab)
    yield from _hold(pack, cab, BatteryState.FULL, 1800.0, ci * 6)


def _charge(pack: SimulatedPack, cab: Place) -> Iterator[Sample]:
    """CC at charge_c, then CV at the chemistry's end-of-charge voltage until C/20; 0 A and FULL after."""
    s = pack.spec
    v_max = CELLS[Chemistry(s.chemistry)].charge_v * s.cells
    cc = s.charge_c * s.nominal_ah
    pack.current = cc
    step = s.cabinet_interval_s / 5
    n = 0
    while True:
        r0 = s.r0_at(pack.cycle)
        need = (v_max / s.cells - ocv(s.chemistry, pack.soc) - pack.u1) / (r0 / s.cells)
        pack.current = max(0.0, min(cc, need))
        if pack.current < s.nominal_ah / 20 or pack.soc >= 99.99:
            break
        pack.advance(step)
        n += 1
        if n % 5 == 0:
            yield int(pack.t_s * 1e9), pack.sample(BatteryState.CHARGING), cab
    pack.current = 0.0
    pack.bms_soc = 100.0  # the BMS recalibrates at full
    pack.advance(step)
    yield int(pack.t_s * 1e9), pack.sample(BatteryState.FULL), cab
