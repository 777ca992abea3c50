"""Trace library: seeded, physically grounded traces for the warning bench (bench/traces/*.csv).

    python -m bench.tracelib [--out DIR] [--only NAME ...] [--check] [--list]

Every trace is a cabinet (4-6 slots, healthy neighbouring packs) polled every 10-60 s, written in
the replay format (alerting/replay.py) with a ``#`` header giving the physical basis, the published
sources and what was taken from each, the numbers that are assumptions, and for runaway traces the
onset (``# onset: <unix seconds>``) and the faulty slot (``# slot: site/cabinet/slot``).

Onset, in every runaway trace, is the first second at which the failing pack's hottest cell
(the simulation's true value, not a sensor) rises faster than 20 °C/min, UL's working definition
of thermal runaway. The bench measures warnings relative to it (``cascade bench warnings --trace``).

Generation is deterministic (``random.Random(seed)`` per trace, fixed start time, fixed float
formatting): ``--check`` regenerates in memory and compares with the committed files byte for byte.

Sensors are modelled as they report: first-order lags (an NTC on a cell surface ~20 s, the pack
temperature ~60 s, a compartment surface sensor ~3 min, gas mixing in a slot ~30 s), Gaussian
noise, and a resolution with a dead band (BMS values are filtered and quantised: a value is
re-reported when it moves by one resolution step), so a trace lists changes, like a register map
polled for differences.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import math
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerting.replay import write_trace
from core.model import BatteryState, BmsProtection, CabinetReading, Chemistry, SlotReading

__all__ = ["LIBRARY", "LibraryTrace", "generate", "main", "write_all"]

T0 = 1_714_521_600.0  # 2024-05-01T00:00:00Z: fixed so the files are reproducible byte for byte
SITE = "lib"
TRACE_DIR = Path(__file__).with_name("traces")
ONSET_RATE_C_PER_MIN = 20.0  # UL: thermal runaway = temperature rising faster than 20 °C/min
ONSET_DEFINITION = ("first second at which the failing pack's hottest cell (simulated true value, not a sensor) "
                    "rises faster than 20 °C/min (UL working definition of thermal runaway, [ul])")

# --- published sources -----------------------------------------------------------------------

SOURCES: dict[str, str] = {
    "jin2020": "Jin Y., Zheng Z., Wei D., Jiang X., Lu H., Sun L., Tao F., Guo D., Liu Y., Gao J., Cui Y. (2020). "
               "Detection of micro-scale Li dendrite via H2 gas capture for early safety warning. "
               "Joule 4(8):1714-1729. doi:10.1016/j.joule.2020.05.016",
    "torres2024": "Torres-Castro L. et al. (2024), Sandia National Laboratories, NHTSA-funded. "
                  "J. Electrochem. Soc. 171:020520 (off-gas and impedance early warning of LFP and NMC pouch cells "
                  "under overtemperature and overcharge; summarised in Nexceris' press release of 2024-04-03, "
                  "National Lab Testing Demonstrates Value in Early Detection)",
    "golubkov2015": "Golubkov A.W., Scheikl S., Planteu R., Voitic G., Wiltsche H., Stangl C., Fauler G., Thaler A., "
                    "Hacker V. (2015). Thermal runaway of commercial 18650 Li-ion batteries with LFP and NCA cathodes: "
                    "impact of state of charge and overcharge. RSC Advances 5:57171. doi:10.1039/C5RA05897J",
    "feng2018": "Feng X., Ouyang M., Liu X., Lu L., Xia Y., He X. (2018). Thermal runaway mechanism of lithium ion "
                "battery for electric vehicles: a review. Energy Storage Materials 10:246-267. "
                "doi:10.1016/j.ensm.2017.05.013",
    "mao2022": "Mao N., Zhang T., Wang Z., Cai Q. (2022). A systematic investigation of internal physical and chemical "
               "changes of lithium-ion batteries during overcharge. J. Power Sources 518:230767",
    "cai2021": "Cai T., Valecha P., Tran V., Engle B., Stefanopoulou A., Siegel J. (2021). Detection of Li-ion "
               "battery failure and venting with carbon dioxide sensors. eTransportation 7:100100. "
               "doi:10.1016/j.etran.2020.100100",
    "essl2021": "Essl C. et al. (2021), Virtual Vehicle Research / Sensirion. Early detection of failing automotive "
                "batteries using gas sensors. Batteries 7(2):25. doi:10.3390/batteries7020025",
    "ovgu2022": "Otto von Guericke University Magdeburg, vfdb and BAM (2022). An experimental investigation of thermal "
                "runaway and gas release of NMC lithium-ion pouch batteries depending on the state of charge level. "
                "Batteries 8(5):41. doi:10.3390/batteries8050041 (author list not retrieved)",
    "ul": "UL Research Institutes. What is thermal runaway? (fact sheet, ul.org): a cell is in thermal runaway when "
          "its temperature rises faster than 20 °C per minute, peaking above 300 °C, with venting, smoke or fire",
    "feng2015": "Feng X. et al. (2015). Characterization of penetration induced thermal runaway propagation process "
                "within a large format lithium ion battery module. J. Power Sources 275:261-273",
    "ipek2026": "Ipek E., Korak O., Gsellmann G., Golubkov A. (2026). Safe or slow? The illusion of thermal stability "
                "under reduced-velocity nail intrusion. arXiv:2603.09254",
    "bernardi1985": "Bernardi D., Pawlikowski E., Newman J. (1985). A general energy balance for battery systems. "
                    "J. Electrochem. Soc. 132(1):5-12",
    "sunspec": "SunSpec Alliance information model: not-implemented register values 0xFFFF (uint16) and 0x8000 "
               "(int16), as implemented by the sunspec-models crate (docs.rs); Cascade profiles declare such "
               "sentinels with missing: (profiles/reference-cabinet.yaml uses 0x7FFF and 0xFFFF)",
}


# --- small physics and sensor helpers --------------------------------------------------------

def _interp(table: list[tuple[float, float]], x: float) -> float:
    if x <= table[0][0]:
        return table[0][1]
    for (x0, y0), (x1, y1) in zip(table, table[1:], strict=False):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return table[-1][1]


# Open-circuit voltage per cell against SOC (%): typical shapes (assumption), NMC sloping, LFP flat.
OCV = {
    Chemistry.NMC: [(0, 3.30), (5, 3.50), (10, 3.58), (20, 3.65), (40, 3.74), (60, 3.86), (80, 4.00), (90, 4.08),
                    (100, 4.18)],
    Chemistry.LFP: [(0, 2.90), (5, 3.15), (10, 3.22), (30, 3.28), (60, 3.31), (90, 3.34), (97, 3.40), (100, 3.50)],
}
CELLS = {Chemistry.NMC: 13, Chemistry.LFP: 15}  # 48 V-class e-bike packs: 13s NMC, 15s LFP


class Lag:
    """First-order lag (time constant ``tau`` seconds): a sensor's thermal or mixing response."""

    def __init__(self, tau: float) -> None:
        self.tau = tau
        self.value: float | None = None

    def __call__(self, x: float, dt_s: float) -> float:
        if self.value is None or self.tau <= 0:
            self.value = x
        else:
            self.value += (x - self.value) * (1 - math.exp(-dt_s / self.tau))
        return self.value


class Quantiser:
    """Noise, then a resolution with a dead band: the reported value moves only when the
    measurement moves by at least one step (a filtering BMS, an ADC's resolution)."""

    def __init__(self, step: float, noise: float = 0.0, low: float = -math.inf) -> None:
        self.step = step
        self.noise = noise
        self.low = low  # a sensor cannot report below its range (a gas sensor: 0 ppm)
        self.last: float | None = None

    def __call__(self, x: float | None, rng: random.Random) -> float | None:
        if x is None:
            self.last = None
            return None
        measured = max(self.low, x + (rng.gauss(0, self.noise) if self.noise else 0.0))
        if self.last is None or abs(measured - self.last) >= self.step:
            q = round(measured / self.step) * self.step
            self.last = float(f"{q:.6g}")
        return self.last


# Reported resolution and noise per field (assumptions typical of e-bike BMS and cabinet sensors).
RESOLUTION: dict[str, tuple[float, ...]] = {  # field -> (step, noise[, lowest reading])
    "soc_pct": (1.0, 0.0),
    "voltage_v": (0.1, 0.02),
    "charge_current_a": (0.1, 0.03),
    "temperature_c": (0.1, 0.05),
    "cell_temperature_max_c": (1.0, 0.2),
    "cell_temperature_min_c": (1.0, 0.2),
    "surface_temperature_c": (0.5, 0.15),
    "cell_voltage_max_v": (0.005, 0.001),
    "cell_voltage_min_v": (0.005, 0.001),
    "h2_ppm": (1.0, 0.4, 0.0),
    "voc_ppm": (1.0, 0.4, 0.0),
    "cabinet_temperature_c": (0.1, 0.05),
    "co_ppm": (1.0, 0.4, 0.0),
}

PACK_FIELDS = ("battery_id", "chemistry", "nominal_voltage_v", "nominal_capacity_ah", "max_charge_current_a",
               "soc_pct", "temperature_c", "voltage_v", "charge_current_a", "cell_voltage_max_v",
               "cell_voltage_min_v", "cell_temperature_max_c", "cell_temperature_min_c", "battery_state",
               "bms_protection")
COMPARTMENT_FIELDS = ("surface_temperature_c", "h2_ppm", "voc_ppm", "valve_acoustic_events", "output_enabled")
FULL_PROFILE = frozenset(PACK_FIELDS + COMPARTMENT_FIELDS)


class SlotSensors:
    """What one slot reports: the cabinet profile's fields, each through its quantiser."""

    def __init__(self, number: int, fields: frozenset[str] = FULL_PROFILE) -> None:
        self.number = number
        self.fields = fields
        self.q = {name: Quantiser(*RESOLUTION[name]) for name in RESOLUTION}

    def report(self, true: dict[str, Any], rng: random.Random) -> SlotReading:
        values: dict[str, Any] = {}
        for name, value in true.items():
            if name not in self.fields:
                continue
            if name in self.q and not isinstance(value, bool):
                value = self.q[name](value, rng)
                if name == "soc_pct" and value is not None:
                    value = int(value)
            values[name] = value
        return SlotReading(slot=self.number, **values)


class CabinetSensors:
    def __init__(self, fields: frozenset[str] = frozenset(
            {"cabinet_temperature_c", "co_ppm", "smoke_detected", "flame_detected"})) -> None:
        self.fields = fields
        self.q = {name: Quantiser(*RESOLUTION[name]) for name in ("cabinet_temperature_c", "co_ppm")}

    def report(self, true: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in true.items():
            if name in self.fields:
                out[name] = self.q[name](value, rng) if name in self.q else value
        return out


@dataclass
class PackSpec:
    chemistry: Chemistry = Chemistry.NMC
    capacity_ah: float = 20.0
    max_charge_a: float = 10.0
    charge_a: float = 10.0  # CC current (0.5C)
    r_ohm: float = 0.12  # pack resistance: 13s4p of ~30 mΩ cells plus BMS and wiring (assumption)
    heat_j_per_k: float = 7000.0  # ~7 kg of cells at ~1 J/(g·K) (assumption)
    h_w_per_k: float = 2.5  # heat transfer to the ventilated compartment (assumption)


CV_LIMIT = {Chemistry.NMC: 4.20, Chemistry.LFP: 3.65}  # constant-voltage set-point per cell


class Pack:
    """A healthy pack charging in a slot: constant current until the highest cell reaches the
    chemistry's end-of-charge voltage, then constant voltage (the current falls) until it drops
    below 0.05C: full. Lumped thermal model dT/dt = (I²R - h (T - T_air)) / C (Bernardi et al.
    1985, irreversible heat only); the BMS refuses charge outside its temperature window (0-45 °C,
    typical datasheet limits, and 0.2C only below 10 °C)."""

    def __init__(self, spec: PackSpec, battery_id: str, soc: float, temp: float, rng: random.Random) -> None:
        self.spec = spec
        self.id = battery_id
        self.soc = soc
        self.temp = temp
        self.current = 0.0
        self.spread = rng.uniform(0.008, 0.025)  # cell voltage spread, V
        self.hot_paused = False
        self.state = BatteryState.CHARGING
        self.r_cell = spec.r_ohm / CELLS[spec.chemistry] * 0.8  # ohmic drop seen per cell while charging

    def step(self, dt_s: float, air: float) -> None:
        s = self.spec
        hottest, coldest = self.temp + 0.03 * self.current + 0.5, self.temp - 0.5
        if self.hot_paused and hottest < 43.0:
            self.hot_paused = False
        elif hottest >= 45.0:
            self.hot_paused = True
        if self.soc >= 100.0:
            current, self.state = 0.0, BatteryState.FULL
        elif self.hot_paused or coldest < 0.0:
            current, self.state = 0.0, BatteryState.IDLE
        else:
            headroom = CV_LIMIT[s.chemistry] - self.spread / 2 - _interp(OCV[s.chemistry], self.soc)
            current = max(0.0, min(s.charge_a, headroom / self.r_cell))
            if coldest < 10.0:
                current = min(current, 0.2 * s.capacity_ah)
            self.state = BatteryState.CHARGING
            if current < 0.05 * s.capacity_ah and not coldest < 10.0:
                current, self.soc, self.state = 0.0, 100.0, BatteryState.FULL  # terminated: the BMS calls it full
        self.current = current
        self.soc = min(100.0, self.soc + current * dt_s / 3600 / s.capacity_ah * 100)
        heat = current * current * s.r_ohm - s.h_w_per_k * (self.temp - air)
        self.temp += heat * dt_s / s.heat_j_per_k

    def true_fields(self, air: float) -> dict[str, Any]:
        s = self.spec
        cells = CELLS[s.chemistry]
        cell = _interp(OCV[s.chemistry], self.soc) + self.current * self.r_cell
        return {
            "battery_id": self.id, "chemistry": int(s.chemistry), "nominal_voltage_v": 48.0,
            "nominal_capacity_ah": s.capacity_ah, "max_charge_current_a": s.max_charge_a,
            "soc_pct": self.soc, "voltage_v": cells * cell, "charge_current_a": self.current,
            "cell_voltage_max_v": cell + self.spread / 2, "cell_voltage_min_v": cell - self.spread / 2,
            "temperature_c": self.temp, "cell_temperature_max_c": self.temp + 0.03 * self.current + 0.5,
            "cell_temperature_min_c": self.temp - 0.5, "battery_state": int(self.state), "bms_protection": 0,
            "surface_temperature_c": 0.7 * self.temp + 0.3 * air, "output_enabled": True,
        }


def _empty_slot(air: float) -> dict[str, Any]:
    fields: dict[str, Any] = dict.fromkeys(PACK_FIELDS)
    fields.update(battery_state=int(BatteryState.EMPTY), surface_temperature_c=air, output_enabled=True)
    return fields


def _gas_baseline(rng: random.Random, h2: float = 1.0, voc: float = 0.5) -> dict[str, float]:
    return {"h2_ppm": max(0.0, h2 + rng.gauss(0, 0.3)), "voc_ppm": max(0.0, voc + rng.gauss(0, 0.2)),
            "valve_acoustic_events": 0}


# --- a library trace -------------------------------------------------------------------------

@dataclass
class LibraryTrace:
    name: str
    title: str
    seed: int
    step_s: float
    hours: float
    cabinet: str
    readings: Callable[[random.Random], Iterator[CabinetReading]]
    header: list[str]  # "key: value" lines after the standard ones
    fault_slot: int | None = None
    hot_cell: Callable[[float], float] | None = None  # true hottest-cell temperature of the fault, t -> °C
    t_from: float = T0  # search window for the onset
    t_to: float = T0

    @property
    def slot(self) -> str | None:
        return None if self.fault_slot is None else f"{SITE}/{self.cabinet}/{self.fault_slot}"

    def onset(self) -> float | None:
        """First whole second at which ``hot_cell`` rises faster than 20 °C/min."""
        if self.hot_cell is None:
            return None
        t = math.floor(self.t_from)
        prev = self.hot_cell(t)
        while t < self.t_to:
            nxt = self.hot_cell(t + 1)
            if (nxt - prev) * 60 > ONSET_RATE_C_PER_MIN:
                return float(t)
            t, prev = t + 1, nxt
        raise AssertionError(f"{self.name}: the fault never reaches {ONSET_RATE_C_PER_MIN} °C/min")

    def comments(self) -> list[str]:
        lines = [f"Cascade trace library: {self.name}. Generated by python -m bench.tracelib (seed {self.seed}); "
                 "regenerate, do not edit by hand.",
                 f"title: {self.title}",
                 f"cabinet: {SITE}/{self.cabinet}, polled every {self.step_s:g} s for "
                 + (f"{self.hours:g} h" if self.hours >= 6 else f"{self.hours * 60:.0f} min")]
        onset = self.onset()
        if onset is not None:
            iso = dt.datetime.fromtimestamp(onset, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            lines += [f"onset: {onset:.0f}", f"onset_iso: {iso}", f"onset_definition: {ONSET_DEFINITION}",
                      f"slot: {self.slot}"]
        else:
            lines += ["onset: none", "fault: none (every alarm in this trace is a false alarm)"]
        lines += self.header
        for line in lines:
            if '"' in line:
                raise AssertionError(f"{self.name}: no double quotes in a header (CSV quoting): {line}")
        return lines


def _times(step_s: float, hours: float, start: float = T0) -> Iterator[float]:
    n = int(round(hours * 3600 / step_s))
    for i in range(n + 1):
        yield start + i * step_s


def _cabinet(cab: str, t: float, slots: list[SlotReading], fields: dict[str, Any], model: str = "SC-6") -> CabinetReading:
    return CabinetReading(cabinet_id=cab, site=SITE, model=model, timestamp_ns=int(round(t * 1e9)), slots=slots,
                          **fields)


def _sources(*keys_and_taken: tuple[str, str]) -> list[str]:
    return [f"source: [{key}] {SOURCES[key]}. Taken: {taken}" for key, taken in keys_and_taken]


# --- runaway scenarios ---------------------------------------------------------------------
#
# Each fault is described by the *true* state of the failing pack as a function of m, minutes
# from the nominal onset; sensors see it through lags and quantisers. Healthy neighbours charge
# normally (Pack). The onset written to the header is computed from the true hottest-cell curve.

def _self_heating(m: float, base: float, slope: float, since: float, tau: float, t_max: float,
                  rise_min: float = 0.5) -> float:
    """Hottest-cell temperature: a slow linear rise ``slope`` °C/min from minute ``since``, plus
    exponential self-heating A·e^(m/tau) sized so the total rate reaches 20 °C/min at m = 0, then
    the runaway itself: a rise to ``t_max`` with time constant ``rise_min`` minutes."""
    amp = (ONSET_RATE_C_PER_MIN - slope) * tau
    if m <= 0:
        return base + slope * max(0.0, m - since) + amp * math.exp(m / tau)
    at_onset = base + slope * (0 - since) + amp
    return at_onset + (t_max - at_onset) * (1 - math.exp(-m / rise_min))


def _runaway_trace(name: str, title: str, seed: int, step: float, minutes: float, cab: str,
                   readings: Callable[[random.Random], Iterator[CabinetReading]], header: list[str], slot: int,
                   hot: Callable[[float], float], t_nom: float) -> LibraryTrace:
    """A runaway trace of ``minutes`` from T0; ``hot(m)`` is the failing cell's true temperature at
    ``m`` minutes from nominal onset (the onset is found where it rises past 20 °C/min)."""
    return LibraryTrace(name, title, seed, step, minutes / 60, cab, readings, header, slot,
                        lambda t: hot((t - t_nom) / 60), T0, T0 + minutes * 60)


def _runaway_polls(cabinet: _Runaway, step: float, minutes: float, t_nom: float,
                   fault: Callable[[float, random.Random], dict[str, Any]], rng: random.Random,
                   aftermath: Callable[[float], dict[str, Any]]) -> Iterator[CabinetReading]:
    """Every poll of a runaway trace: ``m`` minutes from nominal onset, the faulty slot's values from
    ``fault(m)``, the cabinet's own sensors (smoke, flame, CO, air) from ``aftermath(m)``."""
    for t in _times(step, minutes / 60):
        m = (t - t_nom) / 60
        yield cabinet.poll(t, step, m, fault(m, rng), rng, cabinet=aftermath(m))


class _Runaway:
    """Shared machinery of a one-cabinet runaway trace: healthy packs in the other slots, the
    failing pack from ``fault(m)`` (true values), BMS loss above ``bms_dies_c``."""

    def __init__(self, cab: str, n_slots: int, fault_slot: int, rng: random.Random, *, air: float = 28.0,
                 neighbour_spec: PackSpec | None = None, profile: frozenset[str] = FULL_PROFILE,
                 cabinet_fields: frozenset[str] | None = None) -> None:
        self.cab, self.fault_slot, self.air = cab, fault_slot, air
        self.sensors = {n: SlotSensors(n, profile) for n in range(1, n_slots + 1)}
        self.cab_sensors = CabinetSensors() if cabinet_fields is None else CabinetSensors(cabinet_fields)
        spec = neighbour_spec or PackSpec()
        self.packs = {n: Pack(PackSpec(Chemistry.LFP if n % 3 == 0 else spec.chemistry), f"B{cab[:3].upper()}{n:02d}",
                              rng.uniform(20, 85), air + rng.uniform(0, 3), rng)
                      for n in range(1, n_slots + 1) if n != fault_slot}
        self.lags = {"temperature_c": Lag(60), "cell_temperature_max_c": Lag(20), "cell_temperature_min_c": Lag(60),
                     "surface_temperature_c": Lag(180), "h2_ppm": Lag(30), "voc_ppm": Lag(30), "co_ppm": Lag(60),
                     "cabinet_temperature_c": Lag(120)}

    def poll(self, t: float, dt_s: float, m: float, fault: dict[str, Any], rng: random.Random,
             air_of: Callable[[int], float] | None = None, cabinet: dict[str, Any] | None = None) -> CabinetReading:
        slots = []
        for n, sensors in self.sensors.items():
            air = air_of(n) if air_of else self.air
            if n == self.fault_slot:
                true = dict(fault)
                for name, lag in self.lags.items():
                    if name in true and true[name] is not None:
                        true[name] = lag(true[name], dt_s)
                if true.get("surface_temperature_c") is not None:
                    true["surface_temperature_c"] = min(true["surface_temperature_c"], 300.0)  # sensor range
            else:
                pack = self.packs[n]
                pack.step(dt_s, air)
                true = pack.true_fields(air) | _gas_baseline(rng)
                if true["cell_temperature_max_c"] >= 60:
                    true["bms_protection"] = int(BmsProtection.HIGH_TEMPERATURE)
            slots.append(sensors.report(true, rng))
        cab_true = {"cabinet_temperature_c": self.air - 1.0, "co_ppm": 2.0, "smoke_detected": False,
                    "flame_detected": False} | (cabinet or {})
        cab_true["cabinet_temperature_c"] = self.lags["cabinet_temperature_c"](cab_true["cabinet_temperature_c"], dt_s)
        cab_true["co_ppm"] = self.lags["co_ppm"](cab_true["co_ppm"], dt_s)
        return _cabinet(self.cab, t, slots, self.cab_sensors.report(cab_true, rng))


def _pack_identity(chem: Chemistry, bid: str, max_charge: float = 10.0) -> dict[str, Any]:
    return {"battery_id": bid, "chemistry": int(chem), "nominal_voltage_v": 48.0, "nominal_capacity_ah": 20.0,
            "max_charge_current_a": max_charge, "output_enabled": True}


def _bms_dead(fields: dict[str, Any]) -> dict[str, Any]:
    """The BMS stopped answering (board burnt, comms lost): every pack field is absent."""
    for name in PACK_FIELDS:
        fields[name] = None
    return fields


def lfp_overcharge() -> LibraryTrace:
    name, cab, slot, step, seed = "lfp_overcharge", "ovc-lfp", 2, 10.0, 101
    before, after = 75.0, 5.0
    t_nom = T0 + before * 60
    m_h2 = -769 / 60  # [jin2020]: H2 captured 769 s before fire
    m_smoke = m_h2 + 639 / 60  # ... and 639 s before smoke (venting)
    m_full = -60.0
    air = 28.0

    def hot(m: float) -> float:
        return _self_heating(m, air + 4.0, 0.35, m_full, 4.0, 420.0)

    def fault(m: float, rng: random.Random) -> dict[str, Any]:
        soc = 100.0 + (m - m_full) * 10.0 / 20.0 / 60 * 100  # 10 A into 20 Ah: 0.83 %/min
        over = max(0.0, m - m_full)
        if over <= 0:
            cell = _interp(OCV[Chemistry.LFP], soc) + 0.06
        else:
            cell = 3.65 + 0.55 * (1 - math.exp(-over / 3)) + 0.004 * over + 0.4 * math.exp(min(m, 0) / 1.5)
        spread = 0.02 + 0.0025 * over
        t_hot = hot(m)
        f = _pack_identity(Chemistry.LFP, "BLFP0207") | {
            "soc_pct": min(100.0, soc), "voltage_v": 15 * cell, "charge_current_a": 10.0 if m < 0.3 else 0.0,
            "cell_voltage_max_v": cell + spread / 2, "cell_voltage_min_v": cell - spread / 2,
            "temperature_c": air + 0.85 * (t_hot - air), "cell_temperature_max_c": t_hot - 1.0,
            "cell_temperature_min_c": air + 0.7 * (t_hot - air), "battery_state": int(BatteryState.CHARGING),
            "bms_protection": 0, "surface_temperature_c": air + 0.8 * (t_hot - air),
        }
        h2 = 1.0 + (4.0 * 2 ** ((m - m_h2) / 2.0) if m >= m_h2 else 0.0)
        if m >= m_smoke:
            h2 += 600 * (1 - math.exp(-(m - m_smoke) / 0.5))
        if m >= 0:
            h2 += 4000 * (1 - math.exp(-m / 0.3))
        voc = 0.5 + (400 * (1 - math.exp(-(m - m_smoke) / 0.3)) if m >= m_smoke else 0.0) + (600 if m >= 0 else 0)
        f |= {"h2_ppm": min(h2, 5000.0) + rng.gauss(0, 0.3), "voc_ppm": voc + rng.gauss(0, 0.2),
              "valve_acoustic_events": 1 if m >= m_smoke else 0}
        if t_hot > 200:
            _bms_dead(f)
        return f

    def readings(rng: random.Random) -> Iterator[CabinetReading]:
        return _runaway_polls(_Runaway(cab, 4, slot, rng, air=air), step, before + after, t_nom, fault, rng,
                              lambda m: {"co_ppm": 2.0 + (80.0 if m >= m_smoke else 0.0) + (800.0 if m >= 0 else 0.0),
                                         "smoke_detected": m >= m_smoke + 0.5, "flame_detected": m >= 0.3,
                                         "cabinet_temperature_c": air - 1 + (15.0 if m >= 0 else 0.0)})

    header = [
        "physics: a 15s LFP 20 Ah e-bike pack (48 V class) whose charger keeps 10 A (0.5C) flowing past full: "
        "constant-voltage regulation failed and the BMS neither opened its MOSFET nor set a protection flag "
        "(both failures are assumptions; an overcharge needs both). The BMS clamps its SOC at 100 %. "
        "Past full the cell voltage climbs to ~4.2-4.5 V (electrolyte oxidation) and spikes to ~5 V before runaway; "
        "Joule and side-reaction heat warm the pack ~0.35 °C/min, then self-heating accelerates. "
        "Lithium plating past full reacts to H2, the first gas; venting (smoke, electrolyte vapour, valve sound) "
        "comes late; fire at onset.",
        "expect: voltage and over-charge rules within minutes of passing 100 % (overcharge is visible in voltage); "
        "hydrogen ~13 min before onset; venting ~2 min before; temperature thresholds in the last minutes.",
        *_sources(
            ("jin2020", "LFP-graphite pack (8.8 kWh) overcharge: H2 is the first gas captured (before CO, CO2, HCl, HF, "
                        "SO2), 639 s before smoke and 769 s before fire: here H2 leaves baseline 769 s before onset "
                        "and venting/smoke is at 639 s after that"),
            ("golubkov2015", "qualitative: overcharged LFP cells (SOC up to 143 %) still run away; LFP runaway is "
                             "milder than nickel-oxide cathodes (lower peak temperature, less gas)"),
            ("feng2018", "stage model: self-heating accelerating into runaway (the exponential term)"),
            ("ul", "onset criterion (20 °C/min)")),
        "assumption: overcharge current 0.5C (10 A), 60 min from full to runaway (SOC ~150 %), cell-voltage shape, "
        "0.35 °C/min warming, self-heating time constant 4 min, ~130 °C hottest cell at onset, 420 °C peak, "
        "H2 doubling every 2 min from 5 ppm in the slot compartment, VOC 400 ppm at venting, BMS lost above 200 °C, "
        "sensor lags and resolutions (module docstring).",
    ]
    title = "LFP overcharge: charger keeps 0.5C flowing past full, runaway after ~60 min"
    return _runaway_trace(name, title, seed, step, before + after, cab, readings, header, slot, hot, t_nom)


def nmc_overcharge() -> LibraryTrace:
    name, cab, slot, step, seed = "nmc_overcharge", "ovc-nmc", 3, 10.0, 102
    before, after = 80.0, 5.0
    t_nom = T0 + before * 60
    m_full, m_vent = -70.0, -6.4
    air = 28.0

    def hot(m: float) -> float:
        return _self_heating(m, air + 3.0, 0.25, m_full, 3.0, 700.0)

    def fault(m: float, rng: random.Random) -> dict[str, Any]:
        soc = 100.0 + (m - m_full) * 10.0 / 20.0 / 60 * 100
        over = max(0.0, m - m_full)
        if over <= 0:
            cell = _interp(OCV[Chemistry.NMC], soc) + 0.06
        else:  # [mao2022] stages: rise past 4.2 V, a ~4.8-5 V plateau, a drop when the separator gives way
            cell = 4.2 + 0.55 * (1 - math.exp(-over / 12)) + 0.004 * over
            if m > -3:
                cell -= 0.4 * (1 - math.exp(-(m + 3) / 0.5))
        spread = 0.015 + 0.002 * over
        t_hot = hot(m)
        f = _pack_identity(Chemistry.NMC, "BNMC0311") | {
            "soc_pct": min(100.0, soc), "voltage_v": 13 * cell, "charge_current_a": 10.0 if m < 0.3 else 0.0,
            "cell_voltage_max_v": cell + spread / 2, "cell_voltage_min_v": cell - spread / 2,
            "temperature_c": air + 0.85 * (t_hot - air), "cell_temperature_max_c": t_hot - 1.0,
            "cell_temperature_min_c": air + 0.7 * (t_hot - air), "battery_state": int(BatteryState.CHARGING),
            "bms_protection": 0, "surface_temperature_c": air + 0.8 * (t_hot - air),
        }
        voc = 0.5
        if m >= m_vent:  # first venting: electrolyte vapour, then it thins out until runaway
            voc += 150 * math.exp(-(m - m_vent) / 4) * (1 - math.exp(-(m - m_vent) / 0.3))
        if m >= 0:
            voc += 900 * (1 - math.exp(-m / 0.3))
        h2 = 1.0 + (3500 * (1 - math.exp(-m / 0.3)) if m >= 0 else 0.0)  # [torres2024]: H2 only at runaway
        f |= {"h2_ppm": h2 + rng.gauss(0, 0.3), "voc_ppm": voc + rng.gauss(0, 0.2),
              "valve_acoustic_events": (1 if m >= m_vent else 0) + (1 if m >= 0.05 else 0)}
        if t_hot > 200:
            _bms_dead(f)
        return f

    def readings(rng: random.Random) -> Iterator[CabinetReading]:
        return _runaway_polls(_Runaway(cab, 4, slot, rng, air=air), step, before + after, t_nom, fault, rng,
                              lambda m: {"co_ppm": 2.0 + (15.0 if m >= m_vent else 0.0) + (900.0 if m >= 0 else 0.0),
                                         "smoke_detected": m >= 0.3, "flame_detected": m >= 0.5,
                                         "cabinet_temperature_c": air - 1 + (20.0 if m >= 0 else 0.0)})

    header = [
        "physics: a 13s NMC 20 Ah e-bike pack overcharged at 0.5C (10 A) by a charger whose voltage regulation "
        "failed, BMS protection failed silently (assumption). The cell voltage passes 4.2 V, rises to a ~4.8-5.0 V "
        "plateau (lithium plating, electrolyte oxidation, gas generation inside the cell) and drops when the "
        "separator gives way; a first venting (case opened by internal gas pressure) releases electrolyte vapour "
        "6.4 min before runaway; hydrogen is seen only at runaway; NMC runaway is violent (~700 °C).",
        "expect: voltage and over-charge rules right after 100 %; electrolyte vapour and the valve sound at the "
        "first venting ~6 min before onset; H2 only at onset; temperature thresholds in the last minutes.",
        *_sources(
            ("mao2022", "the four-stage shape of NMC overcharge (voltage rise past 4.2 V, plateau near 5 V with "
                        "gassing, voltage drop at separator failure, runaway); values here are assumptions"),
            ("torres2024", "for LFP and NMC pouch cells under overcharge the off-gas (electrolyte vapour) sensor "
                           "warned at first venting, while the hydrogen sensor responded only at thermal runaway; "
                           "third-party DNV-GL testing cited by Nexceris: 6.4 min of warning before runaway, used "
                           "here as the first-venting time (a vendor-reported figure)"),
            ("cai2021", "qualitative: the first venting precedes thermal runaway and is detectable in the enclosure "
                        "by gas sensors (CO2/vapour) within seconds"),
            ("golubkov2015", "qualitative: nickel-oxide cathode runaway is far more energetic than LFP "
                             "(higher peak temperature, more gas)"),
            ("ul", "onset criterion (20 °C/min)")),
        "assumption: 70 min from full to runaway (SOC ~158 %), the voltage numbers, 0.25 °C/min warming, "
        "self-heating time constant 3 min (~110 °C hottest cell at onset), 700 °C peak, VOC 150 ppm at first "
        "venting decaying over ~4 min, BMS lost above 200 °C, sensor lags and resolutions.",
    ]
    title = "NMC overcharge: first venting 6.4 min before runaway, H2 only at runaway"
    return _runaway_trace(name, title, seed, step, before + after, cab, readings, header, slot, hot, t_nom)


def internal_short() -> LibraryTrace:
    name, cab, slot, step, seed = "internal_short", "isc", 4, 20.0, 103
    before, after = 180.0, 5.0
    t_nom = T0 + before * 60
    m_isc, m_vent = -170.0, -1.0
    air = 26.0

    def hot(m: float) -> float:
        return _self_heating(m, air + 0.5, 0.12, m_isc, 6.0, 650.0)

    def fault(m: float, rng: random.Random) -> dict[str, Any]:
        x = max(0.0, m - m_isc)
        # The shorted cell group discharges through the short: its voltage sags, slowly then faster.
        sag = 0.0012 * x + 0.25 * (math.exp(min(m, 0) / 25) - math.exp(m_isc / 25)) if x > 0 else 0.0
        cell = 4.16
        t_hot = hot(m)
        nearest = air + 0.55 * (t_hot - air)  # BMS NTCs sit on other cells: they see a fraction
        f = _pack_identity(Chemistry.NMC, "BISC0402") | {
            "soc_pct": 100.0, "voltage_v": 13 * cell - sag, "charge_current_a": 0.0,
            "cell_voltage_max_v": cell + 0.006, "cell_voltage_min_v": cell - 0.006 - sag,
            "temperature_c": air + 0.3 * (t_hot - air), "cell_temperature_max_c": nearest,
            "cell_temperature_min_c": air + 0.08 * (t_hot - air), "battery_state": int(BatteryState.FULL),
            "bms_protection": int(BmsProtection.HIGH_TEMPERATURE) if nearest >= 60 else 0,
            "surface_temperature_c": air + 0.3 * (t_hot - air),
        }
        voc = 0.5 + (350 * (1 - math.exp(-(m - m_vent) / 0.3)) if m >= m_vent else 0.0)
        h2 = 1.0 + (3000 * (1 - math.exp(-m / 0.3)) if m >= 0 else 0.0)
        f |= {"h2_ppm": h2 + rng.gauss(0, 0.3), "voc_ppm": voc + rng.gauss(0, 0.2),
              "valve_acoustic_events": 1 if m >= m_vent else 0}
        if t_hot > 200:
            _bms_dead(f)
        return f

    def readings(rng: random.Random) -> Iterator[CabinetReading]:
        return _runaway_polls(_Runaway(cab, 6, slot, rng, air=air), step, before + after, t_nom, fault, rng,
                              lambda m: {"co_ppm": 2.0 + (700.0 if m >= 0 else 0.0), "smoke_detected": m >= 0.3,
                                         "flame_detected": m >= 0.6,
                                         "cabinet_temperature_c": air - 1 + (15.0 if m >= 0 else 0.0)})

    header = [
        "physics: a fully charged 13s NMC pack resting in its slot (no current) develops an internal short in one "
        "cell group 170 min before runaway (a latent defect or dendrite). The group discharges through the short: "
        "its cell voltage sags (cell-voltage spread grows) and the cell heats locally, ~0.12 °C/min, while the "
        "BMS's NTCs on other cells see only part of it (hottest NTC 55 %, pack average 30 %); self-heating "
        "accelerates from ~70 °C; the cell vents only 1 min before runaway and no gas comes earlier.",
        "expect: no gas warning before the last minute; cell-voltage spread and cell-temperature difference are the "
        "early signals; pack temperature thresholds are late because the sensors sit away from the shorted cell.",
        *_sources(
            ("feng2018", "internal short as the common path to runaway, its evolution from slow self-discharge with "
                         "little heat to self-heating and separator collapse, and the self-heating (T1) to trigger "
                         "(T2) sequence"),
            ("torres2024", "hydrogen sensors responded only at thermal runaway in the Sandia tests: no early H2 here"),
            ("ul", "onset criterion (20 °C/min)")),
        "assumption: short appears 170 min before onset, voltage sag ~0.07 V/h growing to ~0.4 V, local heating "
        "0.12 °C/min then self-heating time constant 6 min (~165 °C hottest cell at onset), NTC coupling factors "
        "0.55/0.30/0.08, venting 1 min before onset, BMS high-temperature flag at 60 °C on its hottest NTC, "
        "BMS lost above 200 °C, sensor lags and resolutions.",
    ]
    title = "internal short: slow self-heating of a resting pack, late venting, no early gas"
    return _runaway_trace(name, title, seed, step, before + after, cab, readings, header, slot, hot, t_nom)


def external_heating() -> LibraryTrace:
    name, cab, slot, step, seed = "external_heating", "ext-fire", 1, 10.0, 104
    before, after = 55.0, 5.0
    t_nom = T0 + before * 60
    m_fire = -45.0
    air0 = 28.0
    rates = {n: 3.0 * 0.55 ** (n - 1) for n in range(1, 7)}  # °C/min of each compartment's air; slot 1 at the wall

    def air_of(n: int, m: float) -> float:
        return air0 + rates[n] * max(0.0, m - m_fire)

    def hot(m: float) -> float:
        return _self_heating(m, air0 + 2.0, 3.0, m_fire + 2.0, 2.0, 700.0)

    m_vent = next(i / 600 for i in range(int(m_fire * 600), 0) if hot(i / 600) >= 125.0)

    def fault(m: float, rng: random.Random) -> dict[str, Any]:
        t_hot = hot(m)
        pack_t = air0 + 0.9 * (t_hot - air0)
        charging = pack_t < 45 and m < m_fire + 8
        soc = 62.0 + min(max(0.0, m + 55), 10.0) * 0.8
        cell = _interp(OCV[Chemistry.NMC], soc) + (0.06 if charging else 0.0)
        f = _pack_identity(Chemistry.NMC, "BEXT0101") | {
            "soc_pct": soc, "voltage_v": 13 * cell, "charge_current_a": 10.0 if charging else 0.0,
            "cell_voltage_max_v": cell + 0.008, "cell_voltage_min_v": cell - 0.008,
            "temperature_c": pack_t, "cell_temperature_max_c": t_hot - 1.0,
            "cell_temperature_min_c": air0 + 0.75 * (t_hot - air0),
            "battery_state": int(BatteryState.CHARGING if charging else BatteryState.IDLE),
            "bms_protection": int(BmsProtection.HIGH_TEMPERATURE) if t_hot - 1 >= 60 else 0,
            "surface_temperature_c": air_of(1, m) * 0.5 + 0.5 * t_hot,
        }
        voc = 0.5 + (250 * (1 - math.exp(-(m - m_vent) / 0.3)) if m >= m_vent else 0.0)
        h2 = 1.0 + (3000 * (1 - math.exp(-m / 0.3)) if m >= 0 else 0.0)
        f |= {"h2_ppm": h2 + rng.gauss(0, 0.3), "voc_ppm": voc + rng.gauss(0, 0.2),
              "valve_acoustic_events": 1 if m >= m_vent else 0}
        if t_hot > 200:
            _bms_dead(f)
        return f

    def readings(rng: random.Random) -> Iterator[CabinetReading]:
        cabinet = _Runaway(cab, 6, slot, rng, air=air0)
        for t in _times(step, (before + after) / 60):
            m = (t - t_nom) / 60
            fire = m >= m_fire
            yield cabinet.poll(t, step, m, fault(m, rng), rng, air_of=lambda n, m=m: air_of(n, m), cabinet={
                "co_ppm": 2.0 + (150.0 * (1 - math.exp(-(m - m_fire) / 5)) if fire else 0.0)
                + (600.0 if m >= 0 else 0.0),
                "smoke_detected": m >= m_fire + 1.5, "flame_detected": m >= m_fire + 0.2,
                "cabinet_temperature_c": air0 - 1 + 1.2 * max(0.0, m - m_fire)})

    header = [
        "physics: a fire beside the cabinet (e.g. a burning vehicle against its side wall) starts 45 min before "
        "onset. Slot compartments heat from the wall inwards: 3.0 °C/min at slot 1, then x0.55 per slot. The "
        "charging NMC pack in slot 1 follows; its charge stops at the BMS's 45 °C limit; it vents at 125 °C "
        "(electrolyte vapour, valve sound) and self-heating takes it into runaway near 190 °C. The cabinet's "
        "flame detector sees the fire at once, smoke enters after 1.5 min, CO and the cabinet temperature rise.",
        "expect: cabinet flame/smoke/CO at once (those rules name no battery); the slot-1 pack's rate-of-rise and "
        "temperature rules long before onset; venting ~11 min before onset; H2 only at onset.",
        *_sources(
            ("ovgu2022", "NMC pouch cells forced into runaway by a heating plate started runaway at 393 +/- 36 K to "
                         "487 +/- 10 K (120-214 °C): onset here near 190 °C, venting at 125 °C"),
            ("golubkov2015", "external-heating ramp tests: a charged cell heated from outside self-heats and runs "
                             "away above a critical temperature"),
            ("feng2018", "self-heating (T1) to trigger (T2) to maximum (T3) temperature sequence"),
            ("ul", "onset criterion (20 °C/min)")),
        "assumption: fire 45 min before onset, compartment heating rates 3.0 °C/min at slot 1 decreasing x0.55 per "
        "slot, pack lag, venting at 125 °C, self-heating time constant 2 min, 700 °C peak, CO 150 ppm from the "
        "fire, cabinet +1.2 °C/min, BMS lost above 200 °C, sensor lags and resolutions.",
    ]
    title = "external heating: a fire beside the cabinet heats slot 1 into runaway"
    return _runaway_trace(name, title, seed, step, before + after, cab, readings, header, slot, hot, t_nom)


def mechanical_abuse() -> LibraryTrace:
    name, cab, slot, step, seed = "mechanical_abuse", "crush", 2, 10.0, 105
    before, after = 30.0, 5.0
    t_nom = T0 + before * 60 + 4.0  # between two polls
    air = 27.0
    base = air + 6.0

    def hot(m: float) -> float:
        if m <= 0:
            return base
        return base + (650.0 - base) * (1 - math.exp(-m / 0.25))

    def fault(m: float, rng: random.Random) -> dict[str, Any]:
        t_hot = hot(m)
        hit = m > 0
        soc = 55.0 + (m + 30.5) * 0.83 if not hit else 55.0 + 30.5 * 0.83
        cell = _interp(OCV[Chemistry.NMC], soc) + (0.06 if not hit else -3.2 * (1 - math.exp(-m / 0.05)))
        f = _pack_identity(Chemistry.NMC, "BCRU0205") | {
            "soc_pct": soc, "voltage_v": 13 * _interp(OCV[Chemistry.NMC], soc) + (0.8 if not hit else -4.0),
            "charge_current_a": 10.0 if not hit else 0.0,
            "cell_voltage_max_v": _interp(OCV[Chemistry.NMC], soc) + 0.07, "cell_voltage_min_v": max(cell, 0.0),
            "temperature_c": air + 0.8 * (t_hot - air), "cell_temperature_max_c": t_hot - 1.0,
            "cell_temperature_min_c": base - 1.0, "battery_state": int(BatteryState.CHARGING),
            "bms_protection": int(BmsProtection.SHORT_CIRCUIT) if hit else 0,
            "surface_temperature_c": air + 0.8 * (t_hot - air),
        }
        vent = m >= 5 / 60
        f |= {"h2_ppm": 1.0 + (3000 * (1 - math.exp(-(m - 5 / 60) / 0.2)) if vent else 0.0) + rng.gauss(0, 0.3),
              "voc_ppm": 0.5 + (900 * (1 - math.exp(-(m - 5 / 60) / 0.2)) if vent else 0.0) + rng.gauss(0, 0.2),
              "valve_acoustic_events": 1 if vent else 0}
        if t_hot > 300 or m > 0.5:
            _bms_dead(f)
        return f

    def readings(rng: random.Random) -> Iterator[CabinetReading]:
        return _runaway_polls(_Runaway(cab, 4, slot, rng, air=air), step, before + after, t_nom, fault, rng,
                              lambda m: {"co_ppm": 2.0 + (900.0 if m >= 0.1 else 0.0), "smoke_detected": m >= 0.3,
                                         "flame_detected": m >= 0.5,
                                         "cabinet_temperature_c": air - 1 + (20.0 if m >= 0 else 0.0)})

    header = [
        "physics: a charging 13s NMC pack is crushed (mechanical damage: a nail-like penetration of a cell) "
        "between two polls. A fast penetration shorts the cell at once: its voltage collapses, the BMS flags a "
        "short circuit, the temperature runs away within seconds, the cell vents 5 s later and the BMS is lost "
        "within 30 s. Nothing precedes it.",
        "expect: every warning comes after onset (no precursor exists); the bench measures how fast the "
        "catalogue reacts once it happens (first poll 6 s after onset) and that the neighbours stay quiet.",
        *_sources(
            ("feng2015", "nail penetration of a large-format cell drives it into runaway within seconds, with no "
                         "precursor"),
            ("ipek2026", "penetration speed decides: fast intrusion triggers runaway, while slow intrusion only "
                         "self-discharged the cell with the nail embedded; this trace is the fast case"),
            ("ul", "onset criterion (20 °C/min)")),
        "assumption: rise to 650 °C with a 15 s time constant, cell voltage collapse within 3 s, BMS short-circuit "
        "flag on the first poll, venting 5 s after the crush, BMS lost after 30 s, smoke after 18 s, sensor lags "
        "and resolutions.",
    ]
    title = "mechanical abuse: crush/nail, runaway within seconds, no precursor"
    return _runaway_trace(name, title, seed, step, before + after, cab, readings, header, slot, hot, t_nom)


CELL_ONLY_PROFILE = frozenset({"battery_id", "chemistry", "nominal_voltage_v", "nominal_capacity_ah",
                               "max_charge_current_a", "soc_pct", "voltage_v", "charge_current_a",
                               "cell_voltage_max_v", "cell_voltage_min_v", "cell_temperature_max_c",
                               "cell_temperature_min_c", "battery_state", "bms_protection", "output_enabled"})


def cell_temps_only() -> LibraryTrace:
    name, cab, slot, step, seed = "cell_temps_only", "cellonly", 3, 30.0, 106
    before, after = 240.0, 5.0
    t_nom = T0 + before * 60
    air = 27.0

    def hot(m: float) -> float:
        return _self_heating(m, air + 3.0, 0.10, -before, 6.0, 650.0)

    def fault(m: float, rng: random.Random) -> dict[str, Any]:
        soc = min(100.0, 30.0 + (m + before) * 0.83) if m < -155 else 100.0
        charging = soc < 100.0
        t_hot = hot(m)
        near = air + 0.7 * (t_hot - air)
        cell = _interp(OCV[Chemistry.NMC], soc) + (0.06 if charging else 0.0)
        f = _pack_identity(Chemistry.NMC, "BCEL0303") | {
            "soc_pct": soc, "voltage_v": 13 * cell, "charge_current_a": 10.0 if charging else 0.0,
            "cell_voltage_max_v": cell + 0.008, "cell_voltage_min_v": cell - 0.008 - 0.0008 * (m + before),
            "cell_temperature_max_c": near, "cell_temperature_min_c": air + 0.15 * (t_hot - air),
            "battery_state": int(BatteryState.CHARGING if charging else BatteryState.FULL),
            "bms_protection": int(BmsProtection.HIGH_TEMPERATURE) if near >= 60 else 0,
        }
        if t_hot > 200:
            _bms_dead(f)
        return f

    def readings(rng: random.Random) -> Iterator[CabinetReading]:
        cabinet = _Runaway(cab, 4, slot, rng, air=air, profile=CELL_ONLY_PROFILE,
                           cabinet_fields=frozenset({"cabinet_temperature_c", "smoke_detected"}))
        return _runaway_polls(cabinet, step, before + after, t_nom, fault, rng,
                              lambda m: {"smoke_detected": m >= 0.3,
                                         "cabinet_temperature_c": air - 1 + (15.0 if m >= 0 else 0.0)})

    header = [
        "physics: a cabinet whose register profile carries only cell temperatures (hottest and coldest cell), "
        "no pack temperature, no compartment surface sensor and no gas sensors; smoke and cabinet temperature "
        "only. A 13s NMC pack with a developing internal fault charges from 30 % and keeps heating after it is "
        "full: 0.10 °C/min for hours, then self-heating into runaway. Its hottest-cell NTC sees 70 % of the "
        "faulty cell's rise.",
        "expect: rules reading temperature_c are blind here (the field never reports, so it is never lost "
        "either); only rules that read cell temperatures, or the hottest of all temperature fields, can warn.",
        *_sources(
            ("feng2018", "slow self-heating ahead of runaway (the onset of self-heating T1 precedes the trigger "
                         "T2), here as a linear rise plus exponential self-heating"),
            ("ul", "onset criterion (20 °C/min)")),
        "assumption: the cabinet profile, 0.10 °C/min for 4 h, self-heating time constant 6 min (~170 °C at onset), "
        "NTC coupling 0.70/0.15, BMS high-temperature flag at 60 °C, BMS lost above 200 °C, 1 °C resolution "
        "of BMS cell temperatures.",
    ]
    title = "cell temperatures only (no pack temperature field), slow self-heating to runaway"
    return _runaway_trace(name, title, seed, step, before + after, cab, readings, header, slot, hot, t_nom)


# --- normal days -----------------------------------------------------------------------------

class _Fleet:
    """Slots of one cabinet over hours: packs arrive (SOC, temperature from the ride), charge, wait
    full, are taken; the slot stays empty a few minutes."""

    def __init__(self, cab: str, n_slots: int, rng: random.Random, *, spec: Callable[[int], PackSpec],
                 arrival_soc: tuple[float, float], arrival_temp: Callable[[float], float],
                 wait_full_h: tuple[float, float], empty_min: tuple[float, float],
                 pack_cls: type[Pack] = Pack) -> None:
        self.cab, self.rng, self.pack_cls = cab, rng, pack_cls
        self.spec, self.arrival_soc, self.arrival_temp = spec, arrival_soc, arrival_temp
        self.wait_full_h, self.empty_min = wait_full_h, empty_min
        self.sensors = {n: SlotSensors(n) for n in range(1, n_slots + 1)}
        self.serial = 0
        self.packs: dict[int, Pack | None] = {}
        self.leaves_at: dict[int, float | None] = {}  # when the full pack is taken
        self.empty_until: dict[int, float] = {}
        for n in self.sensors:
            self.packs[n] = self._new_pack(n, T0, soc=rng.uniform(30, 100))
            self.leaves_at[n] = None

    def _new_pack(self, n: int, t: float, soc: float | None = None) -> Pack:
        self.serial += 1
        rng = self.rng
        return self.pack_cls(self.spec(self.serial), f"B{self.cab[:3].upper()}{n:02d}{self.serial:04d}",
                    rng.uniform(*self.arrival_soc) if soc is None else soc, self.arrival_temp(t), rng)

    def poll(self, t: float, dt_s: float, air: float,
             glitch: Callable[[int, SlotReading], None] | None = None) -> list[SlotReading]:
        rng = self.rng
        out = []
        for n, sensors in self.sensors.items():
            pack = self.packs[n]
            if pack is None:
                if t >= self.empty_until[n]:
                    pack = self.packs[n] = self._new_pack(n, t)
                    self.leaves_at[n] = None
            if pack is not None:
                pack.step(dt_s, air)
                if pack.soc >= 100.0:
                    leaves = self.leaves_at[n]
                    if leaves is None:
                        leaves = self.leaves_at[n] = t + rng.uniform(*self.wait_full_h) * 3600
                    if t >= leaves:
                        self.packs[n] = None
                        self.empty_until[n] = t + rng.uniform(*self.empty_min) * 60
            current = self.packs[n]
            true = (current.true_fields(air) if current is not None else _empty_slot(air)) | _gas_baseline(rng)
            reading = sensors.report(true, rng)
            if glitch is not None:
                glitch(n, reading)  # sensor faults act on what the sensor reports
            out.append(reading)
        return out


def _diurnal(t: float, mean: float, amplitude: float, peak_hour: float = 15.0) -> float:
    hour = (t - T0) / 3600 % 24
    return mean + amplitude * math.cos(2 * math.pi * (hour - peak_hour) / 24)


def hot_summer_day() -> LibraryTrace:
    name, cab, seed, step, hours = "hot_summer_day", "summer", 107, 60.0, 24.0

    def readings(rng: random.Random) -> Iterator[CabinetReading]:
        fleet = _Fleet(cab, 4, rng, spec=lambda i: PackSpec(Chemistry.LFP if i % 3 == 0 else Chemistry.NMC),
                       arrival_soc=(8, 35), arrival_temp=lambda t: _diurnal(t, 33, 6) + rng.uniform(3, 10),
                       wait_full_h=(0.3, 3.0), empty_min=(2, 20))
        sensors = CabinetSensors()
        for t in _times(step, hours):
            cab_t = _diurnal(t, 37, 8)  # 29 °C at 03:00, 45 °C at 15:00
            slots = fleet.poll(t, step, cab_t + 1.0)
            yield _cabinet(cab, t, slots, sensors.report({"cabinet_temperature_c": cab_t, "co_ppm": 2.0,
                                                           "smoke_detected": False, "flame_detected": False}, rng))

    header = [
        "physics: a swap cabinet in a heat wave, no fault. Outdoor 27-39 °C; the cabinet interior peaks at 45 °C "
        "at 15:00 (cooling at its limit), 29 °C at night; compartments run 1 °C over the cabinet. Riders return "
        "packs at 8-35 % SOC and 3-10 °C over the outdoor temperature (ridden in the sun). Packs charge at 0.5C; "
        "the BMS pauses charging when its hottest cell reaches 45 °C and resumes below 43 °C; full packs wait "
        "0.3-3 h and are taken.",
        "expect: no fault, so every alarm is a false alarm; temperature thresholds near 45 °C meet hot but "
        "healthy packs here.",
        *_sources(
            ("bernardi1985", "the lumped energy balance used for pack heating (I²R heat against heat loss to the "
                             "compartment)")),
        "assumption: the weather and cabinet temperature curve, the 0-45 °C charge window (typical Li-ion "
        "datasheet limit), pack resistance 0.12 Ω, heat capacity 7 kJ/K, heat transfer 2.5 W/K, arrival SOC and "
        "temperature, waiting times, 1 LFP in 3 packs, sensor noise and resolutions.",
    ]
    return LibraryTrace(name, "hot summer day: 45 °C cabinet, normal charging, no fault", seed, step, hours, cab,
                        readings, header)


def cold_winter_day() -> LibraryTrace:
    name, cab, seed, step, hours = "cold_winter_day", "winter", 108, 60.0, 24.0

    def outdoor(t: float) -> float:
        return _diurnal(t, -7, 5)  # -12 °C at 03:00, -2 °C at 15:00

    def readings(rng: random.Random) -> Iterator[CabinetReading]:
        fleet = _Fleet(cab, 4, rng, spec=lambda i: PackSpec(Chemistry.LFP if i % 3 == 0 else Chemistry.NMC),
                       arrival_soc=(8, 35), arrival_temp=lambda t: outdoor(t) + rng.uniform(2, 8),
                       wait_full_h=(0.3, 3.0), empty_min=(2, 20))
        sensors = CabinetSensors()
        for t in _times(step, hours):
            cab_t = min(10.0, outdoor(t) + 15.0)  # heater: 10 °C set-point, 15 °C above outdoor at most
            slots = fleet.poll(t, step, cab_t + 1.0)
            yield _cabinet(cab, t, slots, sensors.report({"cabinet_temperature_c": cab_t, "co_ppm": 2.0,
                                                           "smoke_detected": False, "flame_detected": False}, rng))

    header = [
        "physics: a swap cabinet on a cold day, no fault. Outdoor -12 to -2 °C; the cabinet heater holds 10 °C "
        "when it can (at most 15 °C above outdoor: 3 °C at night). Packs return at 8-35 % SOC and 2-8 °C above "
        "outdoor. The BMS refuses charge while its coldest cell is below 0 °C (the pack waits, warming in the "
        "cabinet over ~45 min), charges at 0.2C between 0 and 10 °C and at 0.5C above.",
        "expect: no fault; low-temperature charging rules meet packs charging at 0.2C between 0 and 5 °C, and "
        "nearly empty packs wait (not charging) while they warm.",
        *_sources(
            ("bernardi1985", "the lumped energy balance used for pack warming and heating")),
        "assumption: the weather, heater capacity and set-point, the BMS low-temperature charge policy (0 °C "
        "inhibit, 0.2C below 10 °C: a common datasheet practice against lithium plating), pack thermal "
        "parameters, arrivals and waiting times, sensor noise and resolutions.",
    ]
    return LibraryTrace(name, "cold winter day: -12..-2 °C outdoors, heated cabinet, no fault", seed, step, hours, cab,
                        readings, header)


def fast_charging() -> LibraryTrace:
    name, cab, seed, step, hours = "fast_charging", "fast", 109, 20.0, 6.0

    def readings(rng: random.Random) -> Iterator[CabinetReading]:
        spec = PackSpec(Chemistry.NMC, capacity_ah=20.0, max_charge_a=30.0, charge_a=30.0, r_ohm=0.13,
                        h_w_per_k=5.0)
        fleet = _Fleet(cab, 4, rng, spec=lambda i: spec, arrival_soc=(10, 30),
                       arrival_temp=lambda t: 27.0 + rng.uniform(0, 3), wait_full_h=(0.05, 0.4), empty_min=(1, 10))
        sensors = CabinetSensors()
        for t in _times(step, hours, start=T0 + 10 * 3600):
            slots = fleet.poll(t, step, 29.0)
            yield _cabinet(cab, t, slots, sensors.report({"cabinet_temperature_c": 28.0, "co_ppm": 2.0,
                                                           "smoke_detected": False, "flame_detected": False}, rng),
                           model="FC-4")

    header = [
        "physics: a fast-charging cabinet (4 slots, forced air), no fault. 13s NMC 20 Ah packs rated for 30 A "
        "(1.5C) arrive at 27-30 °C and 10-30 % SOC, charge at 30 A until the highest cell reaches 4.2 V (~75 %), "
        "then at constant voltage until the current falls below 1 A, and are taken within minutes. I²R heat of ~117 W (0.13 Ω) in ~7 kJ/K warms a pack ~1 °C/min at first and ~15 °C over the "
        "constant-current phase against 5 W/K of forced-air cooling; the compartment air is 29 °C.",
        "expect: no fault; the temperature climbs ~1 °C/min for minutes at every charge start, which a "
        "rate-of-rise rule must not take for a runaway precursor.",
        *_sources(
            ("bernardi1985", "the energy balance: irreversible (I²R) heat against heat loss; reversible (entropic) "
                             "heat neglected")),
        "assumption: pack resistance 0.13 Ω, heat capacity 7 kJ/K, heat transfer 5 W/K with forced air, 1.5C "
        "rating, arrival SOC and temperature, dwell times, sensor noise and resolutions.",
    ]
    return LibraryTrace(name, "normal fast charging: ~1 °C/min for minutes at every charge start, no fault", seed,
                        step, hours, cab, readings, header)


def sensor_faults() -> LibraryTrace:
    name, cab, seed, step, hours = "sensor_faults", "faulty", 110, 30.0, 12.0

    def readings(rng: random.Random) -> Iterator[CabinetReading]:
        fleet = _Fleet(cab, 6, rng, spec=lambda i: PackSpec(Chemistry.LFP if i % 3 == 0 else Chemistry.NMC),
                       arrival_soc=(8, 35), arrival_temp=lambda t: _diurnal(t, 22, 4) + rng.uniform(2, 6),
                       wait_full_h=(0.3, 3.0), empty_min=(2, 20))
        sensors = CabinetSensors()
        state = {"i": 0}
        spikes = {int(h * 3600 / step) for h in (1.5, 4.25, 7.0, 9.75)}
        saturated_h2 = set(range(int(5.0 * 3600 / step), int(5.0 * 3600 / step) + 3))

        def glitch(n: int, r: SlotReading) -> None:
            i = state["i"]
            if n == 2:  # intermittent: pack temperature register 0x7FFF read without a missing: sentinel
                if rng.random() < 0.01 and r.temperature_c is not None:
                    r.temperature_c = 3276.7
                if i in saturated_h2:  # H2 sensor saturated at 0xFFFF x 0.1 ppm for three polls
                    r.h2_ppm = 6553.5
            elif n == 3 and r.temperature_c is not None:  # stuck pack temperature sensor
                r.temperature_c = 24.3
            elif n == 4 and r.h2_ppm is not None:  # drifting H2 sensor: +2.5 ppm per hour
                r.h2_ppm = float(round(r.h2_ppm + 2.5 * i * step / 3600))
            elif n == 5 and i in spikes:  # single-sample spikes and register garbage
                k = sorted(spikes).index(i)
                if k == 0:
                    r.temperature_c = 85.0
                elif k == 1:
                    r.soc_pct = 655.35  # 0xFFFF / 100
                    r.cell_voltage_max_v = 65.535  # 0xFFFF mV
                elif k == 2:
                    r.voc_ppm = 250.0
                    r.voltage_v = math.nan
                else:
                    r.cell_temperature_max_c = 127.0
            elif n == 6 and rng.random() < 0.005 and r.cell_temperature_min_c is not None:
                r.cell_temperature_min_c = -3276.8  # 0x8000 x 0.1, signed

        for t in _times(step, hours):
            cab_t = _diurnal(t, 22, 4) + 3
            slots = fleet.poll(t, step, cab_t + 1.0, glitch)
            co = 6553.5 if state["i"] == int(8 * 3600 / step) else 2.0  # one saturated CO reading
            yield _cabinet(cab, t, slots, sensors.report({"cabinet_temperature_c": cab_t, "co_ppm": co,
                                                           "smoke_detected": False, "flame_detected": False}, rng))
            state["i"] += 1

    header = [
        "physics: a cabinet with healthy packs and faulty sensors, no battery fault. Slot 2: the pack temperature "
        "register intermittently reads 0x7FFF (3276.7 °C, decoded without its missing sentinel) and the H2 "
        "sensor saturates at 0xFFFF (6553.5 ppm) for three polls; slot 3: pack temperature sensor stuck at "
        "24.3 °C; slot 4: H2 sensor drifting +2.5 ppm/h; slot 5: single-sample spikes (85 °C pack, 127 °C cell, "
        "250 ppm VOC) and register garbage (SOC 655.35 %, cell 65.535 V, a NaN pack voltage); slot 6: coldest "
        "cell intermittently 0x8000 (-3276.8 °C); cabinet CO saturated (6553.5 ppm) for one poll. Slot 1 is a "
        "healthy reference.",
        "expect: replay rejects the impossible values (out of physical range, not finite) by file and line and "
        "skips them; the plausible-looking faults (saturated H2, stuck and drifting sensors, spikes) reach the "
        "rules, which should at most notice them; every alarm here is a false alarm.",
        *_sources(
            ("sunspec", "the 0xFFFF / 0x8000 not-implemented sentinels a Modbus device returns for a value it "
                        "does not have")),
        "assumption: which sensors fail, how often (1 % of polls on slot 2, 0.5 % on slot 6), drift rate, spike "
        "times, healthy charging as in the other day traces.",
    ]
    return LibraryTrace(name, "sensor faults: saturated 0xFFFF values, stuck, drifting, spikes; no battery fault",
                        seed, step, hours, cab, readings, header)


LIBRARY: dict[str, Callable[[], LibraryTrace]] = {
    "lfp_overcharge": lfp_overcharge,
    "nmc_overcharge": nmc_overcharge,
    "internal_short": internal_short,
    "external_heating": external_heating,
    "mechanical_abuse": mechanical_abuse,
    "cell_temps_only": cell_temps_only,
    "hot_summer_day": hot_summer_day,
    "cold_winter_day": cold_winter_day,
    "fast_charging": fast_charging,
    "sensor_faults": sensor_faults,
}
"""Library trace name -> builder. Runaway traces carry an onset; the others have no fault."""


def generate(name: str) -> str:
    """The CSV text of one library trace (deterministic)."""
    trace = LIBRARY[name]()
    buf = io.StringIO()
    _write(trace, buf)
    return buf.getvalue()


def _write(trace: LibraryTrace, out: io.TextIOBase) -> int:
    import os
    import tempfile

    # write_trace writes a path; go through a temporary file so generate() can return text.
    fd, tmp = tempfile.mkstemp(suffix=".csv")
    os.close(fd)
    try:
        rows = write_trace(trace.readings(random.Random(trace.seed)), tmp, comments=trace.comments())
        out.write(Path(tmp).read_text(encoding="utf-8"))
    finally:
        os.unlink(tmp)
    return rows


def write_all(out_dir: Path = TRACE_DIR, names: list[str] | None = None) -> list[tuple[str, int]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or list(LIBRARY):
        text = generate(name)
        (out_dir / f"{name}.csv").write_text(text, encoding="utf-8")
        written.append((name, len(text)))
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.tracelib", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=TRACE_DIR, help=f"directory to write (default {TRACE_DIR})")
    p.add_argument("--only", nargs="+", choices=list(LIBRARY), help="only these traces")
    p.add_argument("--check", action="store_true", help="regenerate in memory and compare with the files in --out")
    p.add_argument("--list", action="store_true", help="list the library and exit")
    args = p.parse_args(argv)
    names = args.only or list(LIBRARY)
    if args.list:
        for name in names:
            trace = LIBRARY[name]()
            print(f"{name:<18} {trace.title}")
        return 0
    if args.check:
        stale = [n for n in names if not (args.out / f"{n}.csv").exists()
                 or (args.out / f"{n}.csv").read_text(encoding="utf-8") != generate(n)]
        for n in stale:
            print(f"{args.out / (n + '.csv')}: differs from the generator; run python -m bench.tracelib", file=sys.stderr)
        return 1 if stale else 0
    for name, size in write_all(args.out, names):
        print(f"wrote {args.out / (name + '.csv')} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
