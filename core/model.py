"""Typed domain model: what a cabinet poll produces.

Every numeric field carries its unit in its name (``voltage_v``, ``temperature_c``). A field is
``None`` when the cabinet's register profile does not carry it, so one model serves every vendor.

Field groups follow the delivery e-bike standard's Annex B (D-B.1…D-B.4) and the cabinet safety
sensors of P-5.2.2.2 / P-5.2.2.3.

    >>> slot = SlotReading(slot=1, voltage_v=52.1, soc_pct=80)
    >>> slot.voltage_v
    52.1
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "BatteryState",
    "BmsProtection",
    "CabinetReading",
    "ChargerProtection",
    "Chemistry",
    "EmergencyState",
    "SlotReading",
    "BLE_GATEWAY_MODEL",
    "UNCOMMANDED_MODELS",
    "VEHICLE_MODEL",
    "VehicleProfile",
    "VehicleReading",
    "VehicleState",
    "DERIVED_VEHICLE_FIELDS",
    "VEHICLE_FIELDS",
    "CABINET_FIELDS",
    "DERIVED_SLOT_FIELDS",
    "ExtraValue",
    "FIELD_CATEGORIES",
    "FIELD_KINDS",
    "SLOT_FIELDS",
    "describe_flags",
]


class BatteryState(enum.IntEnum):
    """D-B.3 battery state (charging / full / discharging / fault), plus empty slot and idle."""

    EMPTY = 0
    CHARGING = 1
    FULL = 2
    DISCHARGING = 3
    FAULT = 4
    IDLE = 5


class VehicleState(enum.IntEnum):
    """D-A.2 vehicle state: parked / ready / riding / charging."""

    PARKED = 0
    READY = 1
    RIDING = 2
    CHARGING = 3


class Chemistry(enum.IntEnum):
    """D-B.2 battery type. V-5.10 sets the discharge protection voltage by chemistry."""

    UNKNOWN = 0
    LFP = 1  # lithium iron phosphate
    NMC = 2  # ternary lithium
    LMO = 3  # lithium manganese oxide
    NA_ION = 4  # sodium-ion
    LTO = 5  # lithium titanate


class ChargerProtection(enum.IntFlag):
    """D-B.4 charger protection state (charger cut-offs)."""

    OVER_TEMPERATURE_CUTOFF = 1 << 0
    WATER_CUTOFF = 1 << 1
    FAULT_CUTOFF = 1 << 2
    OVER_VOLTAGE_CUTOFF = 1 << 3
    OVER_CURRENT_CUTOFF = 1 << 4
    HANDSHAKE_FAILED = 1 << 5  # D-5.1.5.2: mismatched battery refused
    OPERATOR_CUTOFF = 1 << 6  # a protective action commanded remotely


class BmsProtection(enum.IntFlag):
    """D-B.4 BMS protection state."""

    OVER_VOLTAGE = 1 << 0
    OVER_CURRENT = 1 << 1
    UNDER_VOLTAGE = 1 << 2
    SHORT_CIRCUIT = 1 << 3
    CELL_VOLTAGE_DIFFERENCE = 1 << 4
    HIGH_TEMPERATURE = 1 << 5
    LOW_TEMPERATURE = 1 << 6
    HARDWARE_FAULT = 1 << 7
    OVER_CHARGE = 1 << 8
    INSULATION = 1 << 9


class EmergencyState(enum.IntFlag):
    """D-B.4 emergency state: fire suppression started (by heat or smoke detection).

    Cascade only *reads* this. It never commands fire suppression (P-3.3).
    """

    SUPPRESSION_BY_HEAT = 1 << 0
    SUPPRESSION_BY_SMOKE = 1 << 1
    SUPPRESSION_MANUAL = 1 << 2


@functools.lru_cache(maxsize=4096)
def describe_flags(flag_type: type[enum.IntFlag], value: int | None) -> str:
    """Render a protection bitmask as comma-separated names; unknown bits as ``bitN``."""
    if not value:
        return ""
    names = []
    for bit in range(16):
        mask = 1 << bit
        if value & mask:
            try:
                names.append((flag_type(mask).name or f"bit{bit}").lower())
            except ValueError:
                names.append(f"bit{bit}")
    return ",".join(names)


ExtraValue = float | int | bool | str
"""A value of a vendor register Cascade has no field for (a profile's ``extra:``)."""

_NO_EXTRA: Mapping[str, ExtraValue] = MappingProxyType({})


def _no_extra() -> Mapping[str, ExtraValue]:
    return _NO_EXTRA  # one shared, read-only empty mapping: no allocation per reading


@dataclass(slots=True)
class SlotReading:
    """One cabinet slot (battery compartment) and the pack in it, at one poll."""

    slot: int
    # D-B.2 battery pack info
    battery_maker: str | None = None
    battery_id: str | None = None
    chemistry: int | None = None  # Chemistry
    nominal_voltage_v: float | None = None
    cell_count: int | None = None  # cells in series (BMS); with chemistry gives the nominal voltage
    nominal_capacity_ah: float | None = None
    max_charge_current_a: float | None = None
    max_discharge_current_a: float | None = None
    undervoltage_protection_v: float | None = None
    # D-B.3 charging status
    soc_pct: float | None = None
    temperature_c: float | None = None
    voltage_v: float | None = None
    charge_current_a: float | None = None
    soh_pct: float | None = None
    charge_start_time_s: int | None = None  # Unix seconds, 0 = not charging
    expected_end_time_s: int | None = None  # Unix seconds
    cell_voltage_max_v: float | None = None
    cell_voltage_min_v: float | None = None
    cell_temperature_max_c: float | None = None
    cell_temperature_min_c: float | None = None
    battery_state: int | None = None  # BatteryState
    charge_count: int | None = None
    insulation_resistance_kohm: float | None = None  # P-6.1
    # D-B.4 fault info (bitmasks)
    charger_protection: int | None = None  # ChargerProtection
    bms_protection: int | None = None  # BmsProtection
    # P-5.2.2.2 / P-5.2.2.3 compartment safety sensors
    surface_temperature_c: float | None = None
    h2_ppm: float | None = None  # characteristic gas of over-charge / short circuit
    voc_ppm: float | None = None  # electrolyte vapour after the valve opens
    module_pressure_kpa: float | None = None  # sealed (liquid-cooled) module pressure
    valve_acoustic_events: int | None = None  # safety-valve burst detections, cumulative
    # Output relay read back from the cabinet: True = slot may charge
    output_enabled: bool | None = None
    # Fields whose value is a sensor at or past its limit (kept as the limit, "at least"/"at most")
    over_range: tuple[str, ...] = ()
    # Vendor bits of bms_protection the profile's `bits:` map gives no Cascade meaning, at the vendor's bit
    # positions (None: the profile has no bits map, its word is in Cascade's layout; 0: none set)
    bms_protection_unmapped: int | None = None
    # Vendor bits of charger_protection without a Cascade meaning (as bms_protection_unmapped)
    charger_protection_unmapped: int | None = None
    # Values of the profile's per-slot `extra:` registers (no Cascade field), by extra name
    extra: Mapping[str, ExtraValue] = field(default_factory=_no_extra)

    # -- derived values the rules read (DERIVED_SLOT_FIELDS) -------------------------------------
    @property
    def hottest_temperature_c(self) -> float | None:
        """The hottest temperature any sensor of this pack reports: pack, hottest cell, surface.
        A cabinet that reports only some of them loses nothing."""
        values = [v for v in (self.temperature_c, self.cell_temperature_max_c, self.surface_temperature_c)
                  if v is not None]
        return max(values) if values else None

    @property
    def coldest_temperature_c(self) -> float | None:
        """The coldest temperature of the pack: pack or coldest cell (charging below 0 °C plates lithium)."""
        values = [v for v in (self.temperature_c, self.cell_temperature_min_c) if v is not None]
        return min(values) if values else None

    @property
    def pack_nominal_voltage_v(self) -> float | None:
        """The nominal voltage the BMS reports, else cell count × the chemistry's nominal cell voltage,
        else ``None`` (never a guessed default: rules relative to it then cannot decide, and say so)."""
        if self.nominal_voltage_v:
            return self.nominal_voltage_v
        from core.chemistry import nominal_pack_voltage  # the table imports this module

        return nominal_pack_voltage(self.chemistry, self.cell_count)

    @property
    def electrical_limits_unknown(self) -> bool | None:
        """True for a pack that reports a voltage but neither a nominal voltage nor chemistry and cell
        count: its voltage rules cannot decide. ``None`` when no pack voltage is reported."""
        if self.voltage_v is None or self.battery_state == BatteryState.EMPTY:
            return None
        return self.pack_nominal_voltage_v is None


@dataclass(slots=True)
class CabinetReading:
    """One poll of one cabinet: cabinet-level values and every slot."""

    cabinet_id: str
    site: str
    model: str
    timestamp_ns: int
    # D-B.1 charger / cabinet basic info
    operator: str | None = None
    charger_id: str | None = None
    latitude_deg: float | None = None
    longitude_deg: float | None = None
    contact: str | None = None
    fire_suppression_type: str | None = None
    # P-5.1.1.1 terminal real-time values
    input_voltage_v: float | None = None
    input_current_a: float | None = None
    input_power_w: float | None = None
    energy_kwh: float | None = None
    distribution_state: int | None = None  # bit 0 mains present, bit 1 breaker closed
    device_fault_code: int | None = None
    # D-B.4 emergency state (read only)
    emergency_state: int | None = None  # EmergencyState
    # P-5.2.2.3 cabinet sensors
    cabinet_temperature_c: float | None = None
    flame_detected: bool | None = None
    smoke_detected: bool | None = None
    co_ppm: float | None = None
    co2_ppm: float | None = None
    water_detected: bool | None = None
    slots: list[SlotReading] = field(default_factory=list)
    # Cabinet fields whose value is a sensor at or past its limit (kept as the limit)
    over_range: tuple[str, ...] = ()
    # P-5.2.2.3 cabinet air gas sensors (the compartment ones are SlotReading.h2_ppm / voc_ppm)
    cabinet_h2_ppm: float | None = None  # hydrogen in the cabinet air: off-gas of any pack
    cabinet_voc_ppm: float | None = None  # electrolyte vapour in the cabinet air
    # Cabinet door switch: True = open (service or forced entry)
    door_open: bool | None = None
    # Vendor bits of emergency_state without a Cascade meaning (see SlotReading.bms_protection_unmapped)
    emergency_state_unmapped: int | None = None
    # Vendor bits of device_fault_code the profile's bits map does not count as device faults
    device_fault_code_unmapped: int | None = None
    # Vendor bits of distribution_state without a Cascade meaning
    distribution_state_unmapped: int | None = None
    # Values of the profile's cabinet-wide `extra:` registers (no Cascade field), by extra name
    extra: Mapping[str, ExtraValue] = field(default_factory=_no_extra)
    # A vehicle's report (model VEHICLE_MODEL): the vehicle-scope rules read it; its pack is slot 1
    vehicle: VehicleReading | None = None


VEHICLE_MODEL = "vehicle"
"""The ``model`` of a :class:`CabinetReading` that carries a vehicle's pack (its one slot) to the warning
engine: the battery rules read it as they read a cabinet slot; alerts say vehicle, not cabinet."""
BLE_GATEWAY_MODEL = "ble-gateway"
"""The ``model`` of a BLE gateway's report: the gateway as a cabinet of the packs it reads."""
UNCOMMANDED_MODELS = frozenset({VEHICLE_MODEL})
"""Readings of devices no cabinet command reaches: their alerts carry no protective action (the
vehicle functions have their own commands). A BLE gateway's packs do take one: the cut-off reaches
them as a MOSFET-off command through the gateway (collectors/ble/commands.py)."""


@dataclass(frozen=True, slots=True)
class VehicleProfile:
    """What the user (or the operator) set for one vehicle: the fence around its home point (V-5.2), the
    SOC below which the user is reminded (V-5.6) and the report intervals it must keep (V-5.7, V-5.8).
    ``home_*`` None: the fence is centred where the vehicle was armed."""

    low_soc_pct: float | None = None
    fence_radius_m: float | None = None
    home_latitude_deg: float | None = None
    home_longitude_deg: float | None = None
    report_on_s: float = 60.0
    report_off_s: float = 3600.0


_METRES_PER_DEG_LAT = 111_132.0


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Metres between two nearby WGS-84 points (equirectangular: exact enough within a city)."""
    x = (lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    return _METRES_PER_DEG_LAT * math.hypot(lat2 - lat1, x)


@dataclass(slots=True)
class VehicleReading:
    """One report of one vehicle over cellular (MQTT or HTTPS): Annex A (D-A.2…D-A.4) and the
    swap-vehicle Table 1 (V-5.7): position with altitude, vehicle code, speed, odometer, and the pack.

    The pack is a :class:`SlotReading` (``slot`` 1: the vehicle's battery bay) with the same field
    names as a cabinet slot, so one battery is one identity (``battery_id``) wherever it sits, its
    history follows it across swaps, and the battery rules of the catalogue read it unchanged.
    ``timestamp_ns`` is the device's own time of the report (V-4.6), ``received_ns`` the platform's.

    The vehicle watch adds what the vehicle-scope rules need besides the report: the vehicle's
    ``profile`` (its user settings), ``fence_anchor`` (where it was armed, the fence centre when the
    profile has no home point) and ``report_gap_intervals`` (the watch's silence check sends a reading
    with only this when a vehicle falls silent).
    """

    vehicle_id: str
    fleet: str
    timestamp_ns: int
    received_ns: int = 0
    model: str | None = None
    sequence: int | None = None
    state: int | None = None  # VehicleState
    powered_on: bool | None = None
    armed: bool | None = None  # V-5.5: armed (设防) from the app; motion or leaving the fence is an alarm
    position_valid: bool | None = None
    latitude_deg: float | None = None
    longitude_deg: float | None = None
    altitude_m: float | None = None
    speed_kmh: float | None = None
    odometer_km: float | None = None
    battery: SlotReading | None = None
    # Vehicle fields whose value was at or past its limit (kept as the limit, as for cabinets)
    over_range: tuple[str, ...] = ()
    profile: VehicleProfile | None = None
    fence_anchor: tuple[float, float] | None = None
    # The gap before this report (or the silence so far), in report intervals of the power state the
    # vehicle was in meanwhile (V-5.7, V-5.8: 1/min on, 1/h off): 1 is on time
    report_gap_intervals: float | None = None

    # -- derived values the vehicle-scope rules read (DERIVED_VEHICLE_FIELDS) --------------------------
    @property
    def fence_distance_ratio(self) -> float | None:
        """Distance from the fence centre over the fence radius (V-5.2 alarms beyond 1.2); None without a
        radius, a centre or a position fix."""
        profile, lat, lon = self.profile, self.latitude_deg, self.longitude_deg
        if profile is None or not profile.fence_radius_m or lat is None or lon is None:
            return None
        if profile.home_latitude_deg is not None and profile.home_longitude_deg is not None:
            home = (profile.home_latitude_deg, profile.home_longitude_deg)
        elif self.fence_anchor is not None:
            home = self.fence_anchor
        else:
            return None
        return _distance_m(home[0], home[1], lat, lon) / profile.fence_radius_m

    @property
    def soc_below_reminder_pct(self) -> float | None:
        """How far the pack's SOC is below the user's reminder SOC (V-5.6); negative above it."""
        profile, pack = self.profile, self.battery
        if profile is None or profile.low_soc_pct is None or pack is None or pack.soc_pct is None:
            return None
        return profile.low_soc_pct - pack.soc_pct

    @property
    def below_discharge_protection_v(self) -> float | None:
        """How far the pack's voltage is below its chemistry's discharge protection voltage (V-5.10) while
        it drives the vehicle (drawing more than 1 A, or state discharging when no current is reported);
        None at rest or when the chemistry or voltage is unknown. Negative: above it."""
        pack = self.battery
        if pack is None or pack.voltage_v is None:
            return None
        current = pack.charge_current_a
        if not (current <= -1.0 if current is not None else pack.battery_state == BatteryState.DISCHARGING):
            return None
        from core.chemistry import discharge_protection_voltage  # the table imports this module

        limit = discharge_protection_voltage(pack.chemistry, pack.pack_nominal_voltage_v)
        return None if limit is None else limit - pack.voltage_v

    @property
    def chemistry_contradiction_v(self) -> float | None:
        """Volts per cell by which the pack contradicts its declared chemistry (V-5.10): its declared
        nominal voltage per cell away from the chemistry's, or, while it drives the vehicle, its highest
        cell above the chemistry's end-of-charge voltage (no cell of that chemistry discharges there)."""
        pack = self.battery
        if pack is None:
            return None
        from core.chemistry import chemistry_contradiction_v

        return chemistry_contradiction_v(pack)

    @property
    def clock_skew_s(self) -> float | None:
        """Seconds between the device's clock and the platform's at receipt (V-4.6), either way."""
        if not self.received_ns:
            return None
        return abs(self.timestamp_ns - self.received_ns) / 1e9


def _field_names(cls: type, skip: set[str]) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls) if f.name not in skip)


# Not fields a profile maps: the vendor bits a `bits:` map leaves without meaning, and `extra` values.
_UNMAPPED_FIELDS = {"bms_protection_unmapped", "charger_protection_unmapped", "emergency_state_unmapped",
                    "device_fault_code_unmapped", "distribution_state_unmapped", "extra"}
SLOT_FIELDS = _field_names(SlotReading, {"slot", "over_range", *_UNMAPPED_FIELDS})
CABINET_FIELDS = _field_names(
    CabinetReading, {"cabinet_id", "site", "model", "timestamp_ns", "slots", "over_range", "vehicle", *_UNMAPPED_FIELDS}
)


def _scalar_type(hint: object) -> type | None:
    """``float`` for ``float | None`` and the like; ``None`` for anything not a single scalar."""
    args = set(typing.get_args(hint)) or {hint}
    args.discard(type(None))
    kind = args.pop() if len(args) == 1 else None
    return kind if kind in (bool, float, int, str) else None


def _field_kinds() -> dict[str, type]:
    """Field name → its value type, from the dataclasses' resolved annotations. Storage types must
    not depend on the vendor's register type (a u32 on one cabinet and an f32 on another is one
    float field in InfluxDB)."""
    kinds: dict[str, type] = {}
    for cls in (SlotReading, CabinetReading):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = _scalar_type(hints[f.name])
            if kind is not None:
                kinds[f.name] = kind
    return kinds


FIELD_KINDS: dict[str, type] = _field_kinds()
"""Every scalar field of a reading (slot and cabinet) → ``bool``, ``int``, ``float`` or ``str``."""

DERIVED_SLOT_FIELDS: dict[str, str] = {
    "hottest_temperature_c": "number", "coldest_temperature_c": "number", "pack_nominal_voltage_v": "number",
    "electrical_limits_unknown": "bool",
}
"""Values computed from a slot reading (properties of :class:`SlotReading`) that rules may read."""

FIELD_CATEGORIES: dict[str, str] = {
    name: "bool" if kind is bool else "number" if kind in (int, float) else "str" for name, kind in FIELD_KINDS.items()}
"""Field → what a rule may do with it: ``number`` (compare, rate), ``bool`` or ``str``."""


def _vehicle_field_kinds() -> dict[str, str]:
    hints = typing.get_type_hints(VehicleReading)
    out: dict[str, str] = {}
    for f in dataclasses.fields(VehicleReading):
        kind = _scalar_type(hints[f.name])
        if kind is not None and kind is not str and f.name not in {"timestamp_ns", "received_ns", "sequence"}:
            out[f.name] = "bool" if kind is bool else "number"
    return out


DERIVED_VEHICLE_FIELDS: dict[str, str] = {
    "fence_distance_ratio": "number", "soc_below_reminder_pct": "number", "below_discharge_protection_v": "number",
    "chemistry_contradiction_v": "number", "clock_skew_s": "number",
}
"""Values computed from a vehicle reading (properties of :class:`VehicleReading`) that rules may read."""

VEHICLE_FIELDS: dict[str, str] = {**_vehicle_field_kinds(), **DERIVED_VEHICLE_FIELDS}
"""What vehicle-scope rules may read → ``number`` or ``bool``: the report's own scalars and the derived values."""
