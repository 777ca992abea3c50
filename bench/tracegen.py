"""Synthetic, seeded traces for the warning bench and tests.

Each generator returns a ``Trace`` whose ``readings()`` yields the same ``CabinetReading``
sequence every call (fixed seed), so two rule sets can be compared on identical data without
holding a fleet-day in memory.

* ``gas_first_runaway``: P-5.2.2.2 sequence before thermal runaway — off-gas (H2) from ~30 min
  before onset, module pressure rise from −20 min, a safety-valve burst at −12 min followed by
  electrolyte vapour, and a temperature rate of rise only in the last ~8 minutes. Onset = the
  first sample with pack temperature > 150 °C.
* ``slow_heating``: a cooling failure: temperature climbs ~0.3 °C/min to 80 °C, no venting.
  "Onset" = the first sample ≥ 70 °C (the D-5.4.1 test temperature).
* ``normal_fleet``: a day of ordinary charging for a fleet (swaps, diurnal ambient, mixed
  chemistries); nothing in it should reach level 3.
* ``noisy_sensors``: ordinary charging, but with a noisy/spiky H2 sensor, temperature glitches
  (single-sample spikes, NaN, dropouts), a noisy pressure sensor, VOC spikes and one spurious
  valve "burst" (a door slam).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from core.model import BatteryState, CabinetReading, Chemistry, SlotReading

__all__ = [
    "Trace",
    "gas_first_runaway",
    "noisy_sensors",
    "normal_fleet",
    "slow_heating",
]

T_START = 1_714_521_600.0  # 2024-05-01T00:00:00Z: fixed so traces are reproducible byte for byte
_NS = 1_000_000_000


@dataclass(frozen=True)
class Trace:
    name: str
    description: str
    readings: Callable[[], Iterator[CabinetReading]]
    onset: float | None  # Unix seconds of the event the warnings should precede; None = normal
    battery_hours: float
    n_readings: int  # cabinet polls
    fault: tuple[str, str, int] | None = None  # (site, cabinet, slot) of the faulty battery


# --- one charging battery ------------------------------------------------------------------

_PACKS = {
    # chemistry: (series cells, cell V at 0 % SOC, cell V at 100 % SOC)
    Chemistry.NMC: (13, 3.20, 4.15),
    Chemistry.LFP: (16, 3.00, 3.45),
    Chemistry.NA_ION: (15, 2.50, 3.90),
}


class _Slot:
    """A slot over a day: batteries arrive, charge at CC then taper, wait, get swapped."""

    def __init__(self, rng: random.Random, site_seed: int, slot: int, step_s: float) -> None:
        self.rng = rng
        self.slot = slot
        self.step_s = step_s
        self.serial = 0
        self.site_seed = site_seed
        self.empty_for = 0.0
        self._new_battery()
        self.soc = rng.uniform(20, 100)  # the day starts with a half-charged cabinet

    def _new_battery(self) -> None:
        rng = self.rng
        self.serial += 1
        self.battery_id = f"B{self.site_seed:03d}{self.slot:02d}{self.serial:03d}"
        self.chemistry = rng.choices(list(_PACKS), weights=[6, 3, 1])[0]
        self.soc = rng.uniform(3, 40)
        self.capacity_ah = 30.0
        self.spread = rng.uniform(0.005, 0.03)
        self.temp = None  # settles to ambient on the first step
        self.wait_full = rng.uniform(0.5, 6) * 3600
        self.full_since = None
        self.charge_count = rng.randint(50, 700)
        self.insulation = rng.uniform(2000, 10000)

    def step(self, t: float, ambient: float, glitch: dict | None = None) -> SlotReading:
        rng, dt = self.rng, self.step_s
        if self.empty_for > 0:
            self.empty_for -= dt
            if self.empty_for <= 0:
                self._new_battery()
            return SlotReading(slot=self.slot, battery_state=int(BatteryState.EMPTY), output_enabled=True,
                               h2_ppm=max(0.0, rng.gauss(2, 0.5)), voc_ppm=max(0.0, rng.gauss(0.8, 0.3)),
                               module_pressure_kpa=rng.gauss(101.3, 0.05), valve_acoustic_events=0)
        # CC at 8 A, tapering linearly from 90 % to 0.2 A at 100 %.
        if self.soc < 90:
            current = 8.0
        elif self.soc < 100:
            current = max(0.2, 8.0 * (100 - self.soc) / 10)
        else:
            current = 0.0
        self.soc = min(100.0, self.soc + current * dt / 3600 / self.capacity_ah * 100)
        if self.soc >= 100:
            self.full_since = self.full_since or t
            if t - self.full_since > self.wait_full:
                self.empty_for = rng.uniform(60, 300)  # rider takes it; slot empty a few minutes
                self.full_since = None
        target = ambient + 8.0 * current / 8.0  # joule heating while charging
        self.temp = ambient if self.temp is None else self.temp + (target - self.temp) * dt / 1200
        temp = self.temp + rng.gauss(0, 0.2)
        n, v0, v1 = _PACKS[self.chemistry]
        cell = v0 + (v1 - v0) * self.soc / 100 + current * 0.002
        state = BatteryState.CHARGING if current > 0 else BatteryState.FULL
        reading = SlotReading(
            slot=self.slot,
            battery_maker="ACME",
            battery_id=self.battery_id,
            chemistry=int(self.chemistry),
            nominal_voltage_v=48.0,
            nominal_capacity_ah=self.capacity_ah,
            max_charge_current_a=10.0,
            max_discharge_current_a=20.0,
            undervoltage_protection_v=30.0 if self.chemistry == Chemistry.NA_ION else 38.4,
            soc_pct=round(self.soc, 1),
            temperature_c=round(temp, 1),
            voltage_v=round(n * cell, 2),
            charge_current_a=round(current + (rng.gauss(0, 0.05) if current else 0.0), 2),
            soh_pct=92.0,
            cell_voltage_max_v=round(cell + self.spread / 2, 3),
            cell_voltage_min_v=round(cell - self.spread / 2, 3),
            cell_temperature_max_c=round(temp + 1.0 + rng.gauss(0, 0.1), 1),
            cell_temperature_min_c=round(temp - 1.0 + rng.gauss(0, 0.1), 1),
            battery_state=int(state),
            charge_count=self.charge_count,
            insulation_resistance_kohm=self.insulation,
            charger_protection=0,
            bms_protection=0,
            surface_temperature_c=round(temp - 1.0, 1),
            h2_ppm=round(max(0.0, rng.gauss(2, 0.5)), 1),
            voc_ppm=round(max(0.0, rng.gauss(0.8, 0.3)), 1),
            module_pressure_kpa=round(rng.gauss(101.3, 0.05), 2),
            valve_acoustic_events=0,
            output_enabled=True,
        )
        if glitch:
            for k, v in glitch.items():
                setattr(reading, k, v)
        return reading


def _ambient(t: float, offset: float) -> float:
    hour = (t - T_START) / 3600
    return 24.0 + offset + 6.0 * math.sin(2 * math.pi * (hour - 9) / 24)


def _cabinet(site: str, cab: str, t: float, ambient: float, rng: random.Random, slots) -> CabinetReading:
    return CabinetReading(
        cabinet_id=cab, site=site, model="SC-12", timestamp_ns=int(t * _NS),
        operator="demo", input_voltage_v=round(rng.gauss(230, 1), 1), emergency_state=0,
        distribution_state=3, device_fault_code=0,
        cabinet_temperature_c=round(ambient + 5 + rng.gauss(0, 0.2), 1),
        flame_detected=False, smoke_detected=False, water_detected=False,
        co_ppm=round(max(0.0, rng.gauss(2, 1)), 1), co2_ppm=round(rng.gauss(450, 30)),
        slots=slots,
    )


# --- normal fleet ----------------------------------------------------------------------------

def normal_fleet(seed: int = 7, *, cabinets: int = 20, slots: int = 12, hours: float = 24,
                 step_s: float = 30) -> Trace:
    steps = int(hours * 3600 / step_s)

    def readings() -> Iterator[CabinetReading]:
        rng = random.Random(seed)
        fleet = []
        for c in range(cabinets):
            offset = rng.uniform(-3, 3)
            fleet.append((f"site{c // 5}", f"cab{c:02d}", offset,
                          [_Slot(rng, c, s + 1, step_s) for s in range(slots)]))
        for i in range(steps):
            t = T_START + i * step_s
            for site, cab, offset, slot_models in fleet:
                amb = _ambient(t, offset)
                yield _cabinet(site, cab, t, amb, rng, [s.step(t, amb) for s in slot_models])

    return Trace("normal_fleet", f"{cabinets} cabinets × {slots} slots × {hours:g} h at {step_s:g} s",
                 readings, None, cabinets * slots * hours, steps * cabinets)


# --- noisy sensors ---------------------------------------------------------------------------

def noisy_sensors(seed: int = 11, *, hours: float = 24, step_s: float = 30, slots: int = 12) -> Trace:
    steps = int(hours * 3600 / step_s)

    def readings() -> Iterator[CabinetReading]:
        rng = random.Random(seed)
        slot_models = [_Slot(rng, 900, s + 1, step_s) for s in range(slots)]
        valve_count = 0
        for i in range(steps):
            t = T_START + i * step_s
            amb = _ambient(t, 0)
            out = []
            for s in slot_models:
                glitch: dict = {}
                if s.slot == 3:  # noisy H2 sensor with rare single-sample spikes
                    glitch["h2_ppm"] = round(max(0.0, rng.gauss(5, 15)), 1)
                    if rng.random() < 1 / 120:
                        glitch["h2_ppm"] = rng.uniform(150, 600)
                if s.slot == 5:  # temperature glitches: spikes, NaN, dropouts
                    r = rng.random()
                    if r < 1 / 240:
                        glitch["temperature_c"] = 85.0
                    elif r < 2 / 240:
                        glitch["temperature_c"] = -40.0
                    elif r < 3 / 240:
                        glitch["temperature_c"] = math.nan
                    elif r < 5 / 240:
                        glitch["temperature_c"] = None
                if s.slot == 7:  # noisy pressure transducer
                    glitch["module_pressure_kpa"] = round(rng.gauss(101.3, 1.0), 2)
                if s.slot == 9 and rng.random() < 1 / 180:  # VOC sensor spike
                    glitch["voc_ppm"] = rng.uniform(30, 120)
                if s.slot == 11:
                    if i == steps // 2:
                        valve_count += 1  # a door slam heard as a valve burst
                    glitch["valve_acoustic_events"] = valve_count
                out.append(s.step(t, amb, glitch))
            yield _cabinet("noisy", "cab-n1", t, amb, rng, out)

    return Trace("noisy_sensors", f"1 cabinet × {slots} slots × {hours:g} h, faulty sensors",
                 readings, None, slots * hours, steps)


# --- fault traces ------------------------------------------------------------------------------

def _fault_trace(name: str, description: str, seed: int, profile, minutes_before: float,
                 minutes_after: float, step_s: float, onset_test, slots: int) -> Trace:
    """One cabinet; slot 1 follows ``profile(m)`` (m = minutes from nominal onset)."""
    steps = int((minutes_before + minutes_after) * 60 / step_s) + 1
    t_nominal = T_START + minutes_before * 60

    def readings() -> Iterator[CabinetReading]:
        rng = random.Random(seed)
        slot_models = [_Slot(rng, 500, s + 1, step_s) for s in range(slots)]
        for s in slot_models:
            s.soc = 40.0  # all charging, nobody swaps during the trace
            s.wait_full = 1e9
        for i in range(steps):
            t = T_START + i * step_s
            amb = 25.0
            out = [s.step(t, amb) for s in slot_models]
            m = (t - t_nominal) / 60
            for k, v in profile(m, rng).items():
                setattr(out[0], k, v)
            yield _cabinet("lab", "cab-f1", t, amb, rng, out)

    onset = None
    for r in readings():
        if onset_test(r.slots[0]):
            onset = r.timestamp_ns / _NS
            break
    hours = steps * step_s / 3600
    return Trace(name, description, readings, onset, slots * hours, steps, ("lab", "cab-f1", 1))


def gas_first_runaway(seed: int = 3, *, step_s: float = 10, slots: int = 4) -> Trace:
    def profile(m: float, rng: random.Random) -> dict:
        g = rng.gauss
        pre = max(0.0, min(m, -8) + 30) * 0.1  # slow internal heating from −30 min
        burst = max(0.0, m + 8)
        temp = 30.0 + pre + (math.exp(0.6 * burst) - 1.0) + g(0, 0.2)
        gas = max(0.0, m + 30)
        return {
            "temperature_c": round(temp, 1),
            "cell_temperature_max_c": round(temp + 1.5, 1),
            "cell_temperature_min_c": round(30.0 + pre - 0.5, 1),
            "surface_temperature_c": round(temp - 2.0, 1),
            "h2_ppm": round(max(0.0, 2 + 300 * (gas / 30) ** 2 + g(0, 1.0)), 1),
            "module_pressure_kpa": round(101.3 + 0.5 * max(0.0, m + 20) + g(0, 0.05), 2),
            "valve_acoustic_events": 1 if m >= -12 else 0,
            "voc_ppm": round(max(0.0, 0.8 + (200 * (m + 12) / 12 if m >= -12 else 0) + g(0, 0.3)), 1),
        }

    return _fault_trace("gas_first_runaway", "off-gas → pressure → valve burst → vapour → dT/dt → runaway",
                        seed, profile, 60, 1, step_s, lambda s: (s.temperature_c or 0) > 150, slots)


def slow_heating(seed: int = 5, *, step_s: float = 30, slots: int = 4) -> Trace:
    def profile(m: float, rng: random.Random) -> dict:
        temp = 30.0 + 0.3 * max(0.0, m + 130) + rng.gauss(0, 0.2)  # ~70 °C at m ≈ 3
        temp = min(temp, 80.0)
        return {
            "temperature_c": round(temp, 1),
            "cell_temperature_max_c": round(temp + 1.0, 1),
            "cell_temperature_min_c": round(temp - 1.0, 1),
            "surface_temperature_c": round(temp - 1.0, 1),
        }

    return _fault_trace("slow_heating", "cooling failure: +0.3 °C/min to 80 °C, no gas or venting",
                        seed, profile, 150, 40, step_s, lambda s: (s.temperature_c or 0) >= 70, slots)
