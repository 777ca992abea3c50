"""Physics and state of one simulated swap cabinet and the packs in its slots.

Nothing here knows about Modbus: :meth:`CabinetState.report` and :meth:`SlotState.report` give
values keyed by :mod:`core.model` field names, and :mod:`simulators.register_bank` maps them
onto a vendor's registers. Time advances lazily: whoever reads a cabinet first calls
:meth:`CabinetState.advance_to` with the injected clock's "now", so an idle fleet costs nothing.

Dynamics are deterministic for a given seed and sequence of clock readings: random draws
(battery mix, swap times) come from a per-slot :class:`random.Random`, and sensor wiggle is a
function of time, not of how often anyone reads.

    >>> cab = CabinetState.create("C0001", "site-01", index=0, slot_count=4, seed=1, now=1_700_000_000)
    >>> cab.advance_to(1_700_000_600)
    >>> 0 <= cab.report()["co_ppm"] <= 5
    True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from core.model import BatteryState, BmsProtection, ChargerProtection, Chemistry, EmergencyState

__all__ = [
    "PARAMETERS",
    "Battery",
    "CabinetState",
    "CellModel",
    "ChargeLimits",
    "CELLS",
    "NO_RETURN",
    "Runaway",
    "SlotState",
    "make_battery",
]

#: Integration step: charge and temperature change slowly, 10 s keeps Euler steps stable.
_MAX_STEP_S = 10.0
#: A fleet left unread for days catches up in coarse steps instead of millions of small ones.
_MAX_STEPS = 2000

_THERMAL_MASS_J_PER_K = 4000.0  # ~4 kg e-bike pack
_COOLING_TAU_S = 1200.0  # pack relaxes toward cabinet air (each compartment is fan-ventilated)
_CHARGER_EFFICIENCY = 0.93
_STANDBY_W = 60.0  # controller, fans, display


@dataclass(frozen=True, slots=True)
class CellModel:
    """Per-cell voltages of one chemistry (V): empty, nominal, charge (CV) limit."""

    v_min: float
    v_nom: float
    v_max: float
    r_cell_ohm: float


CELLS = {
    Chemistry.LFP: CellModel(2.5, 3.2, 3.65, 0.0035),
    Chemistry.NMC: CellModel(3.0, 3.6, 4.2, 0.0040),
    Chemistry.NA_ION: CellModel(2.0, 3.1, 3.9, 0.0045),
    Chemistry.LMO: CellModel(3.0, 3.7, 4.2, 0.0040),  # not in the random mix; scenarios may insert it
}
# Chemistry mix of a second-life e-bike fleet: mostly LFP and NMC, some sodium-ion.
_CHEMISTRY_MIX = ((Chemistry.LFP, 0.45), (Chemistry.NMC, 0.40), (Chemistry.NA_ION, 0.15))
_MAKERS = {
    Chemistry.LFP: ("CATL", "EVE", "Gotion", "BYD"),
    Chemistry.NMC: ("Sunwoda", "Lishen", "CATL", "Tenpower"),
    Chemistry.NA_ION: ("HiNa", "Zoolnasm"),
}
_ID_PREFIX = {Chemistry.LFP: "LF", Chemistry.NMC: "NM", Chemistry.NA_ION: "NA"}

#: Thermal runaway progress past which cutting the slot off no longer helps (self-heating).
NO_RETURN = 0.6
_VALVE_BURSTS = (0.35, 0.5)  # progress at which the safety valve bursts (acoustic events)


def _ocv_fraction(soc: float) -> float:
    """Open-circuit voltage as a fraction of the cell's empty→full span; reaches 1 at full."""
    s = min(1.0, max(0.0, soc))
    return 0.12 + 0.78 * s + 0.10 * s**6


def _smooth(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


def _ramp(p: float, start: float, end: float) -> float:
    """0 before ``start``, 1 after ``end``, linear in between."""
    return min(1.0, max(0.0, (p - start) / (end - start)))


def _wiggle(t: float, phase: float, period_s: float) -> float:
    """A smooth deterministic signal in [-1, 1]: sensor noise that does not depend on read rate."""
    return 0.6 * math.sin(2 * math.pi * t / period_s + phase) + 0.4 * math.sin(
        2 * math.pi * t / (period_s * 0.37) + 2.1 * phase
    )


@dataclass(slots=True)
class Battery:
    """A pack: D-B.2 identity plus the state that travels with it (SOC, temperature)."""

    battery_id: str
    battery_maker: str
    chemistry: Chemistry
    cells: int
    nominal_voltage_v: float
    nominal_capacity_ah: float
    max_charge_current_a: float
    max_discharge_current_a: float
    undervoltage_protection_v: float
    soh_pct: float
    charge_count: int
    cell_spread_v: float
    insulation_resistance_kohm: float
    soc: float
    temperature_c: float
    handshake_ok: bool = True  # False: the charger refuses this pack (D-5.1.5.2)

    @property
    def cell(self) -> CellModel:
        return CELLS[self.chemistry]

    @property
    def resistance_ohm(self) -> float:
        # Aged packs have more internal resistance: heat and CV onset come earlier.
        return self.cells * self.cell.r_cell_ohm * (1 + (100 - self.soh_pct) / 50)

    def ocv_v(self) -> float:
        cell = self.cell
        return self.cells * (cell.v_min + (cell.v_max - cell.v_min) * _ocv_fraction(self.soc))

    def cv_limit_v(self) -> float:
        return self.cells * self.cell.v_max


def make_battery(rng: random.Random, ambient_c: float, *, soc: float | None = None) -> Battery:
    """A random second-life pack as riders bring them: mixed chemistry, low SOC on arrival."""
    roll, chemistry = rng.random(), Chemistry.LFP
    for kind, share in _CHEMISTRY_MIX:
        if roll < share:
            chemistry = kind
            break
        roll -= share
    cell = CELLS[chemistry]
    nominal = rng.choice((48, 48, 60))
    cells = round(nominal / cell.v_nom)
    capacity = rng.choice((20.0, 24.0, 30.0, 36.0))
    soh = round(rng.uniform(72, 100), 1)
    return Battery(
        battery_id=f"{_ID_PREFIX[chemistry]}{nominal}-{rng.randrange(10**8):08d}",
        battery_maker=rng.choice(_MAKERS[chemistry]),
        chemistry=chemistry,
        cells=cells,
        nominal_voltage_v=float(nominal),
        nominal_capacity_ah=capacity,
        max_charge_current_a=round(capacity * rng.choice((0.3, 0.4, 0.5)), 1),
        max_discharge_current_a=round(capacity * 2, 1),
        undervoltage_protection_v=round(cells * cell.v_min, 1),
        soh_pct=soh,
        charge_count=rng.randrange(20, 1500),
        cell_spread_v=rng.uniform(0.004, 0.02) * (1 + (100 - soh) / 30),
        insulation_resistance_kohm=float(rng.randrange(8000, 30000)),
        soc=rng.uniform(0.05, 0.3) if soc is None else soc,
        temperature_c=ambient_c + rng.uniform(0, 4),  # arrives warm from riding
    )


@dataclass(slots=True)
class Runaway:
    """A thermal runaway in progress: ``progress`` 0 → 1 over ``duration_s`` while energised.

    Phases by progress: off-gas (H2) 0–0.35 → valve bursts, pressure and VOC 0.35–0.55 →
    temperature rate-of-rise 0.55–0.8 → smoke 0.8 → flame 0.9. Cut the slot off before
    :data:`NO_RETURN` and the progression reverses and the signs decay; after it, it runs on.
    """

    duration_s: float
    progress: float = 0.0

    def advance(self, dt: float, energised: bool) -> tuple[float, float]:
        """Move progress by ``dt`` seconds; return (old, new) progress."""
        old = self.progress
        if energised or self.progress >= NO_RETURN:
            self.progress = min(1.0, self.progress + dt / self.duration_s)
        else:
            self.progress = max(0.0, self.progress - dt / self.duration_s)
        return old, self.progress

    @property
    def h2_ppm(self) -> float:
        p = self.progress
        return 300 * (p / 0.35) ** 2 if p < 0.35 else 300 + 2700 * _ramp(p, 0.35, 1.0)

    @property
    def voc_ppm(self) -> float:
        return 150 * _smooth(_ramp(self.progress, 0.35, 0.6)) + 650 * _ramp(self.progress, 0.6, 0.9)

    @property
    def pressure_kpa(self) -> float:
        return 25 * _smooth(_ramp(self.progress, 0.35, 0.6)) + 35 * _ramp(self.progress, 0.6, 0.9)

    @property
    def temperature_rise_c(self) -> float:
        p = self.progress
        if p < 0.45:
            return 0.0
        if p < 0.55:
            return 3 * _ramp(p, 0.45, 0.55)
        if p < 0.8:
            return 3 + 57 * _ramp(p, 0.55, 0.8) ** 2  # accelerating: the rate-of-rise signature
        if p < 0.9:
            return 60 + 90 * _ramp(p, 0.8, 0.9)
        return 150 + 140 * _ramp(p, 0.9, 1.0)

    @property
    def smoke(self) -> bool:
        return self.progress >= 0.8

    @property
    def flame(self) -> bool:
        return self.progress >= 0.9


#: The cabinet's charging parameters an engineer sets remotely (the profile's parameter commands), raw
#: register units: 0.1 A, 0.1 °C, minutes after midnight Beijing time.
PARAMETERS = ("charge_current_limit", "charge_temperature_limit", "charge_schedule_start", "charge_schedule_end")
_BEIJING_OFFSET_S = 8 * 3600
#: Charger cut-offs that stay latched until a fault reset (the water cut-off also while water is detected).
_LATCHED = (ChargerProtection.FAULT_CUTOFF | ChargerProtection.OVER_CURRENT_CUTOFF
            | ChargerProtection.OVER_VOLTAGE_CUTOFF | ChargerProtection.OVER_TEMPERATURE_CUTOFF)


@dataclass(slots=True)
class ChargeLimits:
    """The cabinet-wide charging parameters (raw register values, 0 = not set), shared by its slots:
    a current limit (0.1 A), a pack temperature at which charging pauses (0.1 °C) and a daily charging
    window (minutes after midnight Beijing time; start = end: all day; a window may span midnight)."""

    charge_current_limit: int = 0
    charge_temperature_limit: int = 0
    charge_schedule_start: int = 0
    charge_schedule_end: int = 0

    def current_a(self, pack_max_a: float) -> float:
        """The charging current a pack may take: its own limit, capped by the cabinet's."""
        return min(pack_max_a, self.charge_current_limit / 10) if self.charge_current_limit else pack_max_a

    def allows(self, temperature_c: float, now: float) -> bool:
        """Whether a pack at ``temperature_c`` may charge at ``now`` (inside the window, below the limit)."""
        if self.charge_temperature_limit and temperature_c >= self.charge_temperature_limit / 10:
            return False
        start, end = self.charge_schedule_start, self.charge_schedule_end
        if start == end:
            return True
        minute = int((now + _BEIJING_OFFSET_S) % 86400 // 60)
        return start <= minute < end if start < end else (minute >= start or minute < end)


_EMPTY_SLOT: dict[str, Any] = {
    # D-B.2 and D-B.3 fields read as zero when no pack is docked.
    "battery_maker": "", "battery_id": "", "chemistry": 0, "nominal_voltage_v": 0.0, "cell_count": None,
    "nominal_capacity_ah": 0.0, "max_charge_current_a": 0.0, "max_discharge_current_a": 0.0,
    "undervoltage_protection_v": 0.0, "soc_pct": 0, "temperature_c": 0.0, "voltage_v": 0.0,
    "charge_current_a": 0.0, "soh_pct": 0.0, "charge_start_time_s": 0, "expected_end_time_s": 0,
    "cell_voltage_max_v": 0.0, "cell_voltage_min_v": 0.0, "cell_temperature_max_c": 0.0,
    "cell_temperature_min_c": 0.0, "battery_state": int(BatteryState.EMPTY), "charge_count": 0,
    "insulation_resistance_kohm": 0.0, "bms_protection": 0,
}


@dataclass(slots=True)
class SlotState:
    """One compartment: the docked pack (or none), charger state, compartment sensors."""

    slot: int
    rng: random.Random
    phase: float  # per-slot phase of the sensor wiggle
    battery: Battery | None = None
    output_enabled: bool = True
    full: bool = False
    current_a: float = 0.0
    voltage_v: float = 0.0
    charge_start_time_s: int = 0
    expected_end_time_s: int = 0
    charger_protection: int = 0
    bms_protection: int = 0  # flags set by scenarios; physics adds derived ones in report()
    valve_acoustic_events: int = 0
    # Raw vendor bits without a Cascade meaning (a profile's `bits:` map leaves them out): what a
    # vendor's own status bits look like on the wire. Set by tests; 0 on a healthy cabinet.
    bms_protection_unmapped: int = 0
    charger_protection_unmapped: int = 0
    runaway: Runaway | None = None
    next_event_s: float = math.inf  # next swap: pick-up when full, docking when empty
    surface_c: float = 20.0  # compartment air, tracks ambient when empty
    docks: int = 0  # packs docked since the simulation started (a vendor's swap counter)
    limits: ChargeLimits = field(default_factory=ChargeLimits)  # the cabinet's, shared by its slots
    paused: bool = False  # the charger waits: outside the charging window or the pack above the temperature limit

    @property
    def energised(self) -> bool:
        """Charger output reaches the pack: relay closed, no charger cut-off, handshake passed, not paused."""
        b = self.battery
        return (b is not None and self.output_enabled and self.charger_protection == 0 and b.handshake_ok
                and not self.paused)

    def set_output(self, enabled: bool) -> None:
        """The slot output relay (the ``slot_output`` command): False cuts the slot off."""
        self.output_enabled = enabled
        if enabled:
            self.charger_protection &= ~ChargerProtection.OPERATOR_CUTOFF
        else:
            self.charger_protection |= ChargerProtection.OPERATOR_CUTOFF
            self.current_a = 0.0

    def dock(self, battery: Battery, now: float) -> None:
        self.battery, self.full = battery, False
        self.docks += 1
        self.charge_start_time_s, self.expected_end_time_s = int(now), 0
        self.charger_protection &= ChargerProtection.OPERATOR_CUTOFF  # new pack, fresh handshake
        if not battery.handshake_ok:
            self.charger_protection |= ChargerProtection.HANDSHAKE_FAILED
        self.next_event_s = math.inf
        self._charge(battery, 0.0, now)  # current and voltage from the first moment

    def undock(self, now: float) -> None:
        self.battery, self.full, self.current_a, self.voltage_v = None, False, 0.0, 0.0
        self.charge_start_time_s = self.expected_end_time_s = 0
        self.charger_protection &= ChargerProtection.OPERATOR_CUTOFF
        self.next_event_s = now + self.rng.uniform(60, 900)  # next rider docks a pack

    def step(self, dt: float, now: float, ambient_c: float) -> None:
        """Advance ``dt`` seconds ending at ``now``: charge, heat, swap."""
        if now >= self.next_event_s and self.runaway is None:
            if self.battery is None:
                self.dock(make_battery(self.rng, ambient_c), now)
            elif self.full:
                self.undock(now)  # a rider took the full pack
        self.surface_c += dt / 600 * (ambient_c - self.surface_c)
        b = self.battery
        if b is None:
            return
        self.paused = not self.limits.allows(b.temperature_c, now)
        self._charge(b, dt, now)
        heat_w = b.resistance_ohm * self.current_a**2 + 0.01 * self.voltage_v * self.current_a
        b.temperature_c += dt * (heat_w / _THERMAL_MASS_J_PER_K - (b.temperature_c - ambient_c) / _COOLING_TAU_S)
        self.surface_c = ambient_c + 0.6 * (b.temperature_c - ambient_c)
        if self.runaway is not None:
            old, new = self.runaway.advance(dt, self.energised)
            self.valve_acoustic_events += sum(1 for burst in _VALVE_BURSTS if old < burst <= new)

    def _charge(self, b: Battery, dt: float, now: float) -> None:
        cap_ah = b.nominal_capacity_ah * b.soh_pct / 100
        overcharging = self.runaway is not None  # a failed BMS keeps accepting charge
        if not self.energised or (self.full and not overcharging):
            self.current_a = 0.0
            self.voltage_v = b.ocv_v()
            return
        ocv, r = b.ocv_v(), b.resistance_ohm
        cc = self.limits.current_a(b.max_charge_current_a * 0.95)
        taper = max(0.0, (b.cv_limit_v() - ocv) / r)
        current = min(cc, taper)  # CC until the CV limit, then taper
        if taper < b.nominal_capacity_ah / 20 and not overcharging:  # full: the CV taper, not a current limit
            self.full, self.current_a, self.voltage_v = True, 0.0, ocv
            b.soc, self.expected_end_time_s = 1.0, int(now)
            b.charge_count += 1
            self.next_event_s = now + self.rng.uniform(120, 1800)  # waits for a rider
            return
        if overcharging:
            current = max(current, b.nominal_capacity_ah / 20)
        self.current_a = current
        b.soc = min(1.0, b.soc + current * dt / 3600 / cap_ah * 0.98)
        self.voltage_v = min(b.cv_limit_v() * 1.01, b.ocv_v() + current * r)
        if self.charge_start_time_s == 0:
            self.charge_start_time_s = int(now)
        remaining_s = (1 - b.soc) * cap_ah / max(current, 0.1) * 3600 * 1.15
        self.expected_end_time_s = int(now + remaining_s)

    def report(self, now: float, ambient_c: float) -> dict[str, Any]:
        """Every slot field of :class:`core.model.SlotReading`, as the cabinet would report it."""
        rw = self.runaway
        t = now
        gas = {
            "surface_temperature_c": self.surface_c + (0.7 * rw.temperature_rise_c if rw else 0.0),
            "h2_ppm": max(0.0, 0.9 + 0.9 * _wiggle(t, self.phase, 3600)) + (rw.h2_ppm if rw else 0.0),
            "voc_ppm": max(0.0, 0.4 + 0.4 * _wiggle(t, self.phase + 1, 2700)) + (rw.voc_ppm if rw else 0.0),
            "module_pressure_kpa": 101.3 + 0.2 * _wiggle(t, self.phase + 2, 5400) + 0.01 * (ambient_c - 20)
            + (rw.pressure_kpa if rw else 0.0),
            "valve_acoustic_events": self.valve_acoustic_events,
            "charger_protection": int(self.charger_protection),
            "output_enabled": self.output_enabled,
            "bms_protection_unmapped": self.bms_protection_unmapped,
            "charger_protection_unmapped": self.charger_protection_unmapped,
            # Vendor registers without a Cascade field (profiles' `extra:`): the charger module's
            # heat sink runs warmer than the compartment while it delivers power.
            "extra": {"charger_module_temp_c": self.surface_c + 3.0 + 0.25 * self.current_a
                      + 0.5 * _wiggle(t, self.phase + 3, 1300)},
        }
        b = self.battery
        if b is None:
            return {**_EMPTY_SLOT, **gas}
        rise = rw.temperature_rise_c if rw else 0.0
        temp = b.temperature_c + rise
        cell_v = self.voltage_v / b.cells
        bms = self.bms_protection
        if temp > 60:
            bms |= BmsProtection.HIGH_TEMPERATURE
        if rw is not None and rw.flame:
            bms |= BmsProtection.INSULATION | BmsProtection.HARDWARE_FAULT
        if bms or self.charger_protection & ~ChargerProtection.OPERATOR_CUTOFF or (rw and rw.flame):
            state = BatteryState.FAULT
        elif self.current_a > 0:
            state = BatteryState.CHARGING
        elif self.full:
            state = BatteryState.FULL
        else:
            state = BatteryState.IDLE
        return {
            **gas,
            "battery_maker": b.battery_maker,
            "battery_id": b.battery_id,
            "chemistry": int(b.chemistry),
            "nominal_voltage_v": b.nominal_voltage_v,
            "cell_count": b.cells,
            "nominal_capacity_ah": b.nominal_capacity_ah,
            "max_charge_current_a": b.max_charge_current_a,
            "max_discharge_current_a": b.max_discharge_current_a,
            "undervoltage_protection_v": b.undervoltage_protection_v,
            "soc_pct": round(b.soc * 100),
            "temperature_c": temp,
            "voltage_v": self.voltage_v,
            "charge_current_a": self.current_a,
            "soh_pct": b.soh_pct,
            "charge_start_time_s": self.charge_start_time_s if self.current_a > 0 or self.full else 0,
            "expected_end_time_s": self.expected_end_time_s if self.current_a > 0 or self.full else 0,
            "cell_voltage_max_v": cell_v + b.cell_spread_v / 2,
            "cell_voltage_min_v": cell_v - b.cell_spread_v / 2,
            "cell_temperature_max_c": temp + 0.6 + 0.05 * self.current_a + 0.3 * rise,
            "cell_temperature_min_c": temp - 0.6,
            "battery_state": int(state),
            "charge_count": b.charge_count,
            "insulation_resistance_kohm": 50.0 if rw and rw.flame else b.insulation_resistance_kohm,
            "bms_protection": int(bms),
        }


_CITIES = (  # (name, lat, lon, mean temperature °C): sites are spread over these
    ("Shanghai", 31.2304, 121.4737, 17.0), ("Shenzhen", 22.5431, 114.0579, 23.0),
    ("Hangzhou", 30.2741, 120.1551, 17.5), ("Beijing", 39.9042, 116.4074, 13.0),
    ("Chengdu", 30.5728, 104.0668, 16.5), ("Wuhan", 30.5928, 114.3055, 17.0),
)
_OPERATORS = ("SwapGo Energy", "Voltrider Swap Network", "CityCell Exchange")
_SUPPRESSION = ("aerosol", "HFC-227ea", "aerosol", "water mist")  # HFC-227ea = heptafluoropropane


@dataclass(slots=True)
class CabinetState:
    """One cabinet: D-B.1 info, mains input, cabinet sensors and its slots."""

    cabinet_id: str
    site: str
    operator: str
    charger_id: str
    contact: str
    fire_suppression_type: str
    latitude_deg: float
    longitude_deg: float
    mean_ambient_c: float
    phase: float
    slots: list[SlotState]
    now: float
    energy_kwh: float = 0.0
    input_power_w: float = _STANDBY_W
    emergency_state: int = 0  # flags set by scenarios; runaway adds its own in report()
    device_fault_code: int = 0
    distribution_state: int = 3  # mains present, breaker closed
    water_detected: bool = False
    smoke_detected: bool = False
    flame_detected: bool = False
    door_open: bool = False
    # Raw vendor bits without a Cascade meaning (see SlotState.bms_protection_unmapped)
    emergency_state_unmapped: int = 0
    device_fault_code_unmapped: int = 0
    distribution_state_unmapped: int = 0
    # Scenario state, read by the register bank and the servers: (slot or None, field) → override
    # (see simulators.register_bank.Override), and when the cabinet stops answering.
    overrides: dict[tuple[int | None, str], Any] = field(default_factory=dict)
    unreachable_until: float = 0.0
    unreachable_mode: str = "refuse"  # "refuse": listener closed; "silent": requests unanswered
    limits: ChargeLimits = field(default_factory=ChargeLimits)  # set remotely (the parameter commands)
    fault_reset_register: int = 0  # the last value written to the fault reset register (read back)

    def __post_init__(self) -> None:
        for slot in self.slots:
            slot.limits = self.limits

    def set_parameter(self, name: str, raw: int) -> bool:
        """Write a charging parameter (:data:`PARAMETERS`, raw register units); False when out of range."""
        ranges = {"charge_current_limit": 0xFFFF, "charge_temperature_limit": 1200,
                  "charge_schedule_start": 1439, "charge_schedule_end": 1439}
        if name not in ranges or not 0 <= raw <= ranges[name]:
            return False
        setattr(self.limits, name, raw)
        return True

    def reset_faults(self, now: float) -> None:
        """A fault reset: the device fault code (and a scenario holding one) and the latched charger
        cut-offs clear; the water cut-off only once the water is gone. The operator's cut-off (the slot
        relay) and a refused handshake stay: they are not faults."""
        self.device_fault_code = self.device_fault_code_unmapped = 0
        self.overrides.pop((None, "device_fault_code"), None)
        latched = _LATCHED | (0 if self.water_detected else ChargerProtection.WATER_CUTOFF)
        for slot in self.slots:
            slot.charger_protection &= ~latched

    @classmethod
    def create(cls, cabinet_id: str, site: str, *, index: int, slot_count: int, seed: int, now: float,
               site_index: int = 0) -> CabinetState:
        """A cabinet with a plausible random starting mix: charging, full and empty slots."""
        rng = random.Random(f"{seed}:{cabinet_id}")
        city, lat, lon, mean_c = _CITIES[site_index % len(_CITIES)]
        cab = cls(
            cabinet_id=cabinet_id, site=site,
            operator=_OPERATORS[site_index % len(_OPERATORS)],
            charger_id=f"CHG-{cabinet_id}",
            contact=f"ops+{site}@swap.example",
            fire_suppression_type=rng.choice(_SUPPRESSION),
            latitude_deg=round(lat + rng.uniform(-0.05, 0.05), 5),
            longitude_deg=round(lon + rng.uniform(-0.05, 0.05), 5),
            mean_ambient_c=mean_c, phase=rng.uniform(0, 2 * math.pi), slots=[], now=now,
            energy_kwh=round(rng.uniform(100, 20000), 2),
        )
        ambient = cab.ambient_c(now)
        for number in range(1, slot_count + 1):
            slot = SlotState(slot=number, rng=random.Random(f"{seed}:{cabinet_id}:{number}"),
                             phase=rng.uniform(0, 2 * math.pi), surface_c=ambient)
            roll = slot.rng.random()
            if roll < 0.1:
                slot.next_event_s = now + slot.rng.uniform(0, 600)
            else:
                battery = make_battery(slot.rng, ambient, soc=slot.rng.uniform(0.05, 0.9))
                slot.dock(battery, now - slot.rng.uniform(0, 3600))
                if roll < 0.3:
                    battery.soc, slot.full, slot.current_a = 1.0, True, 0.0
                    slot.voltage_v = battery.ocv_v()
                    slot.expected_end_time_s = int(now - slot.rng.uniform(0, 1800))
                    slot.next_event_s = now + slot.rng.uniform(0, 1800)
            slot.limits = cab.limits
            cab.slots.append(slot)
        charging_w = sum(s.voltage_v * s.current_a for s in cab.slots)
        cab.input_power_w = charging_w / _CHARGER_EFFICIENCY + _STANDBY_W
        return cab

    def ambient_c(self, now: float) -> float:
        """Cabinet air: the site's mean, a day cycle peaking mid-afternoon local time, slow drift."""
        local_hours = (now / 3600 + self.longitude_deg / 15) % 24
        day = 5.0 * math.sin(2 * math.pi * (local_hours - 9) / 24)
        return self.mean_ambient_c + day + 0.8 * _wiggle(now, self.phase, 7200)

    def advance_to(self, now: float) -> None:
        """Advance physics to ``now`` (clock seconds); a no-op if time has not moved forward."""
        dt_total = now - self.now
        if dt_total <= 0:
            return
        steps = min(_MAX_STEPS, max(1, math.ceil(dt_total / _MAX_STEP_S)))
        dt = dt_total / steps
        t = self.now
        for _ in range(steps):
            t += dt
            ambient = self.ambient_c(t) + 2.0 + self.input_power_w / 4000  # chargers warm the cabinet
            charging_w = 0.0
            for slot in self.slots:
                slot.step(dt, t, ambient)
                charging_w += slot.voltage_v * slot.current_a
            self.input_power_w = charging_w / _CHARGER_EFFICIENCY + _STANDBY_W
            self.energy_kwh += self.input_power_w * dt / 3.6e6
        self.now = now

    def report(self) -> dict[str, Any]:
        """Every cabinet field of :class:`core.model.CabinetReading` at the current time."""
        now = self.now
        runaways = [s.runaway for s in self.slots if s.runaway is not None]
        smoke = self.smoke_detected or any(r.smoke for r in runaways)
        flame = self.flame_detected or any(r.flame for r in runaways)
        emergency = self.emergency_state
        if any(r.progress >= 0.85 for r in runaways):
            emergency |= EmergencyState.SUPPRESSION_BY_SMOKE
        if any(r.progress >= 0.92 for r in runaways):
            emergency |= EmergencyState.SUPPRESSION_BY_HEAT
        worst = max((r.progress for r in runaways), default=0.0)
        voltage = 230.0 + 3.0 * _wiggle(now, self.phase + 3, 900)
        values = {
            "operator": self.operator,
            "charger_id": self.charger_id,
            "latitude_deg": self.latitude_deg,
            "longitude_deg": self.longitude_deg,
            "contact": self.contact,
            "fire_suppression_type": self.fire_suppression_type,
            "input_voltage_v": voltage,
            "input_current_a": self.input_power_w / voltage,
            "input_power_w": self.input_power_w,
            "energy_kwh": self.energy_kwh,
            "distribution_state": self.distribution_state,
            "device_fault_code": self.device_fault_code,
            "emergency_state": int(emergency),
            "cabinet_temperature_c": self.ambient_c(now) + 2.0 + self.input_power_w / 4000 + 20 * _ramp(worst, 0.8, 1),
            "flame_detected": flame,
            "smoke_detected": smoke,
            "co_ppm": 2.5 + 2.0 * _wiggle(now, self.phase + 4, 3000) + 300 * _ramp(worst, 0.75, 1.0),
            "co2_ppm": 600 + 150 * _wiggle(now, self.phase + 5, 86400 / 3) + 800 * _ramp(worst, 0.8, 1.0),
            "water_detected": self.water_detected,
            # Cabinet air: what the compartments vent, diluted, on a clean background.
            "cabinet_h2_ppm": max(0.0, 0.5 + 0.4 * _wiggle(now, self.phase + 6, 4100))
            + 0.2 * max((r.h2_ppm for r in runaways), default=0.0),
            "cabinet_voc_ppm": max(0.0, 0.3 + 0.3 * _wiggle(now, self.phase + 7, 3300))
            + 0.2 * max((r.voc_ppm for r in runaways), default=0.0),
            "door_open": self.door_open,
            "emergency_state_unmapped": self.emergency_state_unmapped,
            "device_fault_code_unmapped": self.device_fault_code_unmapped,
            "distribution_state_unmapped": self.distribution_state_unmapped,
            "extra": self.extra_report(),
        }
        return values

    def extra_report(self) -> dict[str, Any]:
        """Signals vendors serve that Cascade has no field for (profiles' ``extra:`` registers); an
        extra a profile names that is not here reads as zero, like an unmodelled field."""
        now = self.now
        cabinet_c = self.ambient_c(now) + 2.0 + self.input_power_w / 4000
        return {
            "fan_speed_rpm": max(0.0, 900 + 60 * (cabinet_c - 20) + 25 * _wiggle(now, self.phase + 8, 600)),
            "humidity_pct": 45 + 8 * _wiggle(now, self.phase + 9, 86400 / 2),
            "swap_count": 48_000 + sum(s.docks for s in self.slots),
        }

    def slot_report(self, slot: int) -> dict[str, Any]:
        """The slot's fields (1-based slot number) at the current time."""
        return self.slots[slot - 1].report(self.now, self.ambient_c(self.now))
