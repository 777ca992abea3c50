"""The vehicle telemetry wire format: one JSON object per report, decoded straight from bytes.

Annex A of the delivery e-bike standard (A.2 vehicle real-time data, A.3 battery basic info, A.4
battery real-time data) and Table 1 of the swap-vehicle standard (position with altitude, vehicle
code, speed, odometer, battery code, voltage, temperature, current, SOC, cycle count). The format is
documented in ``docs/vehicles.md``; the same bytes arrive over MQTT and in HTTPS batches.

Decoding is typed (``msgspec`` structs, no per-message dicts). A message whose *shape* is wrong
(not JSON, a text where a number belongs, no vehicle id) is refused whole with a reason: the
device's encoder is broken and nothing in it can be trusted. A message of the right shape with a
value out of its valid range loses that value only (rejected with what and where, counted); the
rest is kept. Temperatures and pack voltage past their range are a sensor at its limit, not garbage:
kept as the limit and listed in ``over_range``, as for cabinets (a burning pack is the worst case,
never missing data).

The hot path (:func:`decode_checked`, used by the ingest) has msgspec check the ranges while decoding: a
report entirely in range (nearly every one) becomes a reading without a check in Python; any other takes
the value-by-value checks above, with the same result.

    >>> msg = decode(b'{"v":1,"vehicle":"V1","seq":7,"ts":1700000000000,"battery":{"id":"B1","soc_pct":80}}')
    >>> reading, problems = to_reading(msg, fleet="bj", received_ns=0)
    >>> reading.battery.battery_id, reading.battery.soc_pct, problems
    ('B1', 80.0, [])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Annotated, Literal

import msgspec

from core.model import BatteryState, Chemistry, SlotReading, VehicleReading, VehicleState

__all__ = ["FORMAT_VERSION", "MAX_MESSAGE_BYTES", "Battery", "FieldProblem", "Position", "Telemetry",
           "WireError", "decode", "decode_batch", "decode_checked", "encode", "to_reading"]

FORMAT_VERSION = 1
MAX_MESSAGE_BYTES = 8192
"""A report is ~600 bytes; anything past this is refused before it is parsed."""

VEHICLE_STATES = {"parked": VehicleState.PARKED, "ready": VehicleState.READY, "riding": VehicleState.RIDING,
                  "charging": VehicleState.CHARGING}
BATTERY_STATES = {"charging": BatteryState.CHARGING, "full": BatteryState.FULL,
                  "discharging": BatteryState.DISCHARGING, "fault": BatteryState.FAULT, "idle": BatteryState.IDLE}
CHEMISTRIES = {"LFP": Chemistry.LFP, "NMC": Chemistry.NMC, "LMO": Chemistry.LMO, "NA_ION": Chemistry.NA_ION,
               "LTO": Chemistry.LTO}
# The codes stored (plain ints, as the checked path writes them)
_VEHICLE_STATE_CODES = {k: int(v) for k, v in VEHICLE_STATES.items()}
_BATTERY_STATE_CODES = {k: int(v) for k, v in BATTERY_STATES.items()}
_CHEMISTRY_CODES = {k: int(v) for k, v in CHEMISTRIES.items()}

class Position(msgspec.Struct, frozen=True):
    """A.2 position: valid flag, latitude and longitude (WGS-84 degrees), altitude (m, Table 1)."""

    valid: bool = True
    lat: float | None = None
    lon: float | None = None
    alt: float | None = None


class Battery(msgspec.Struct, frozen=True):
    """A.3 basic info (sent at power-on, may be omitted after) and A.4 real-time values.

    ``current_a`` is signed: positive into the pack (charging), negative out of it (riding).
    ``protection`` is the BMS protection word in Cascade's layout (``core.model.BmsProtection``).
    """

    id: str | None = None
    maker: str | None = None
    chemistry: Literal["LFP", "NMC", "LMO", "NA_ION", "LTO"] | None = None
    nominal_v: float | None = None
    nominal_ah: float | None = None
    cells: int | None = None
    max_charge_a: float | None = None
    max_discharge_a: float | None = None
    undervoltage_v: float | None = None
    soc_pct: float | None = None
    soh_pct: float | None = None
    temperature_c: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    cell_max_v: float | None = None
    cell_min_v: float | None = None
    cell_max_c: float | None = None
    cell_min_c: float | None = None
    state: Literal["charging", "full", "discharging", "fault", "idle"] | None = None
    cycles: int | None = None
    protection: int | None = None


class Telemetry(msgspec.Struct, frozen=True):
    """One vehicle report. ``ts`` is the device's clock in milliseconds since the epoch; ``seq``
    increases by one per report (de-duplication of redeliveries and replays); ``armed``: armed from
    the app (V-5.5), so motion or leaving the fence is an alarm."""

    vehicle: str
    ts: int
    seq: int
    v: Literal[1] = 1
    model: str | None = None
    state: Literal["parked", "ready", "riding", "charging"] | None = None
    power: bool | None = None
    armed: bool | None = None
    pos: Position | None = None
    speed_kmh: float | None = None
    odometer_km: float | None = None
    battery: Battery | None = None


class WireError(ValueError):
    """A message that is not a report (not JSON, wrong shape, too large). ``reason`` is the counter
    label, ``str()`` says what and where (``Expected `float`, got `str` - at `$.battery.voltage_v```)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """A value dropped from an otherwise good report: which vehicle, which field, why."""

    vehicle: str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"vehicle {self.vehicle}: {self.field} {self.problem}"


_decoder = msgspec.json.Decoder(Telemetry)
_batch_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_encoder = msgspec.json.Encoder()


def _wire_error(err: msgspec.DecodeError) -> WireError:
    text = str(err)
    reason = "schema" if isinstance(err, msgspec.ValidationError) else "not_json"
    return WireError(reason, text[:300])


def decode(data: bytes | bytearray | memoryview) -> Telemetry:
    """One report from its bytes, or :class:`WireError` saying what is wrong and where."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("too_large", f"message of {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    return _decode(data)


def decode_checked(data: bytes | bytearray | memoryview) -> Telemetry:
    """:func:`decode` for the hot path: a report whose every value is in range and whose ids and texts are
    well-formed (nearly every report) comes back as a subclass of :class:`Telemetry` whose ranges msgspec
    checked while decoding, which :func:`to_reading` turns into a reading without checking them again.
    The same values, the same errors; ``decode`` gives the plain struct (equal to the one encoded)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("too_large", f"message of {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    try:
        msg: Telemetry = _checked_decoder.decode(data)  # type: ignore[assignment]  # a Telemetry subclass
    except msgspec.DecodeError:
        return _decode(data)  # something is off: a plain report, checked value by value
    # The ids here, not as msgspec patterns (a regex call each, 4x the cost): most are letters and digits.
    battery = msg.battery
    if not (msg.vehicle.isalnum() and msg.vehicle.isascii() or _valid_id(msg.vehicle)) or (
            battery is not None and battery.id is not None
            and not (battery.id.isalnum() and battery.id.isascii() or _valid_id(battery.id))):
        return _decode(data)
    return msg


def _decode(data: bytes | bytearray | memoryview) -> Telemetry:
    try:
        msg = _decoder.decode(data)
    except msgspec.DecodeError as err:
        raise _wire_error(err) from None
    if not _valid_id(msg.vehicle):
        raise WireError("schema", f"vehicle id {msg.vehicle[:70]!r} is not 1-64 letters, digits, '.', '_' or '-'")
    return msg


def decode_batch(data: bytes) -> list[bytes | WireError]:
    """The items of a JSON array of reports, each still undecoded (so one bad item costs only itself),
    or a list with one :class:`WireError` when the body is not an array."""
    try:
        items = _batch_decoder.decode(data)
    except msgspec.DecodeError as err:
        error = _wire_error(err)
        return [WireError(error.reason if error.reason == "not_json" else "schema",
                          f"a batch is a JSON array of reports: {error}")]
    return [bytes(item) for item in items]


def encode(msg: Telemetry) -> bytes:
    """The bytes of a report (devices and the simulator)."""
    return _encoder.encode(msg)


def _valid_id(text: str) -> bool:
    return 0 < len(text) <= 64 and text.replace(".", "").replace("_", "").replace("-", "").isalnum() \
        and text.isascii() and text[0].isalnum()


# Battery keys on the wire -> the reading's field (and its range below).
_BATTERY_RANGED = {
    "nominal_v": "nominal_voltage_v", "nominal_ah": "nominal_capacity_ah", "cells": "cell_count",
    "max_charge_a": "max_charge_current_a", "max_discharge_a": "max_discharge_current_a",
    "undervoltage_v": "undervoltage_protection_v", "soc_pct": "soc_pct", "soh_pct": "soh_pct",
    "temperature_c": "temperature_c", "voltage_v": "voltage_v", "current_a": "charge_current_a",
    "cell_max_v": "cell_voltage_max_v", "cell_min_v": "cell_voltage_min_v", "cell_max_c": "cell_temperature_max_c",
    "cell_min_c": "cell_temperature_min_c", "cycles": "charge_count", "protection": "bms_protection",
}
_INTEGERS = {"cell_count", "charge_count", "bms_protection"}

# field -> (low, high, at_limit): at_limit keeps a value past the range as the limit (a sensor at its
# limit); otherwise the value is dropped as not a measurement. Ranges: A.4 where it gives one, else
# what the quantity can physically be on a light-vehicle pack.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "soc_pct": (0, 100, False), "soh_pct": (0, 100, False),
    "temperature_c": (-40, 200, True), "cell_temperature_max_c": (-40, 200, True),
    "cell_temperature_min_c": (-40, 200, True),
    "voltage_v": (0, 60, True),
    "charge_current_a": (-100, 100, False),
    "cell_voltage_max_v": (0, 5, False), "cell_voltage_min_v": (0, 5, False),
    "nominal_voltage_v": (0, 100, False), "nominal_capacity_ah": (0, 500, False),
    "max_charge_current_a": (0, 200, False), "max_discharge_current_a": (0, 500, False),
    "undervoltage_protection_v": (0, 100, False), "charge_count": (0, 100_000, False),
    "cell_count": (1, 64, False), "bms_protection": (0, 0xFFFF, False),
    "latitude_deg": (-90, 90, False), "longitude_deg": (-180, 180, False), "altitude_m": (-500, 9000, False),
    "speed_kmh": (0, 120, False), "odometer_km": (0, 2_000_000, False),
}


# The same ranges as constraints msgspec checks while decoding (in C): a report whose every value is in
# range and whose ids (decode_checked) and texts are well-formed (nearly all) decodes to these subclasses
# and becomes a reading with no check in Python. Any other fails them and is decoded again as a plain
# report, whose values are checked one by one (dropped, or kept at the limit, with what and why).
_ID = msgspec.Meta(min_length=1, max_length=64)  # and _valid_id, in decode_checked


def _ranged(field: str, kind: type) -> object:
    low, high, _ = _RANGES[field]
    return Annotated[kind, msgspec.Meta(ge=low, le=high)] | None


_CheckedPosition = msgspec.defstruct("_CheckedPosition", [
    (name, _ranged(field, float), None)
    for name, field in (("lat", "latitude_deg"), ("lon", "longitude_deg"), ("alt", "altitude_m"))],
    bases=(Position,), frozen=True, gc=False)
_CheckedBattery = msgspec.defstruct("_CheckedBattery", [
    ("id", Annotated[str, _ID] | None, None),
    ("maker", Annotated[str, msgspec.Meta(max_length=64)] | None, None),
    *((name, _ranged(field, int if field in _INTEGERS else float), None) for name, field in _BATTERY_RANGED.items())],
    bases=(Battery,), frozen=True, gc=False)
_CheckedTelemetry = msgspec.defstruct("_CheckedTelemetry", [
    ("vehicle", Annotated[str, _ID]),
    ("model", Annotated[str, msgspec.Meta(max_length=64)] | None, None),
    ("pos", _CheckedPosition | None, None),
    ("speed_kmh", _ranged("speed_kmh", float), None),
    ("odometer_km", _ranged("odometer_km", float), None),
    ("battery", _CheckedBattery | None, None)],
    bases=(Telemetry,), frozen=True, gc=False)  # gc=False: scalars and these structs only, no cycle possible
_checked_decoder = msgspec.json.Decoder(_CheckedTelemetry)


class _Checker:
    """Range checks for one report: values that pass, problems for those that do not."""

    __slots__ = ("over_range", "problems", "vehicle")

    def __init__(self, vehicle: str) -> None:
        self.vehicle = vehicle
        self.problems: list[FieldProblem] = []
        self.over_range: list[str] = []

    def __call__(self, field: str, value: float | None) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value):
            self.problems.append(FieldProblem(self.vehicle, field, f"is {value}, not a finite number"))
            return None
        low, high, at_limit = _RANGES[field]
        if low <= value <= high:
            return float(value)
        if at_limit:
            self.over_range.append(field)
            return float(high if value > high else low)
        self.problems.append(FieldProblem(self.vehicle, field, f"{value!r} is outside {low:g}..{high:g}"))
        return None

    def integer(self, field: str, value: int | None) -> int | None:
        checked = self(field, value)
        return None if checked is None else int(checked)


def to_reading(msg: Telemetry, *, fleet: str, received_ns: int) -> tuple[VehicleReading, list[FieldProblem]]:
    """The domain reading of a decoded report, and the values it dropped (with what and why)."""
    if type(msg) is _CheckedTelemetry:
        return _checked_reading(msg, fleet, received_ns), []
    check = _Checker(msg.vehicle)
    pos = msg.pos
    lat = lon = alt = None
    valid = None
    if pos is not None:
        valid = pos.valid
        if pos.valid:
            lat, lon, alt = check("latitude_deg", pos.lat), check("longitude_deg", pos.lon), check("altitude_m", pos.alt)
            if (lat is None) != (lon is None):  # half a position is no position
                lat = lon = None
    battery = None
    b = msg.battery
    if b is not None:
        battery_id = b.id if b.id is None or _valid_id(b.id) else None
        if b.id is not None and battery_id is None:
            check.problems.append(FieldProblem(msg.vehicle, "battery_id", f"{b.id[:70]!r} is not a battery id"))
        battery = SlotReading(
            slot=1, battery_id=battery_id, battery_maker=b.maker[:64] if b.maker else b.maker,
            chemistry=None if b.chemistry is None else int(CHEMISTRIES[b.chemistry]),
            nominal_voltage_v=check("nominal_voltage_v", b.nominal_v),
            nominal_capacity_ah=check("nominal_capacity_ah", b.nominal_ah),
            cell_count=check.integer("cell_count", b.cells),
            max_charge_current_a=check("max_charge_current_a", b.max_charge_a),
            max_discharge_current_a=check("max_discharge_current_a", b.max_discharge_a),
            undervoltage_protection_v=check("undervoltage_protection_v", b.undervoltage_v),
            soc_pct=check("soc_pct", b.soc_pct), soh_pct=check("soh_pct", b.soh_pct),
            temperature_c=check("temperature_c", b.temperature_c), voltage_v=check("voltage_v", b.voltage_v),
            charge_current_a=check("charge_current_a", b.current_a),
            cell_voltage_max_v=check("cell_voltage_max_v", b.cell_max_v),
            cell_voltage_min_v=check("cell_voltage_min_v", b.cell_min_v),
            cell_temperature_max_c=check("cell_temperature_max_c", b.cell_max_c),
            cell_temperature_min_c=check("cell_temperature_min_c", b.cell_min_c),
            battery_state=None if b.state is None else int(BATTERY_STATES[b.state]),
            charge_count=check.integer("charge_count", b.cycles),
            bms_protection=check.integer("bms_protection", b.protection),
        )
        battery.over_range = tuple(check.over_range)
    reading = VehicleReading(
        vehicle_id=msg.vehicle, fleet=fleet, timestamp_ns=msg.ts * 1_000_000, received_ns=received_ns,
        model=msg.model[:64] if msg.model else msg.model, sequence=msg.seq,
        state=None if msg.state is None else int(VEHICLE_STATES[msg.state]), powered_on=msg.power, armed=msg.armed,
        position_valid=valid, latitude_deg=lat, longitude_deg=lon, altitude_m=alt,
        speed_kmh=check("speed_kmh", msg.speed_kmh), odometer_km=check("odometer_km", msg.odometer_km),
        battery=battery,
    )
    vehicle_over = [f for f in check.over_range if battery is None or f not in battery.over_range]
    reading.over_range = tuple(vehicle_over)
    return reading, check.problems


# _checked_reading passes the readings' fields by position (a dataclass binds 20 keywords ~3x slower than
# 20 positions, once per report): the order it relies on, checked at import.
_SLOT_ORDER = ("slot", "battery_maker", "battery_id", "chemistry", "nominal_voltage_v", "cell_count",
               "nominal_capacity_ah", "max_charge_current_a", "max_discharge_current_a", "undervoltage_protection_v",
               "soc_pct", "temperature_c", "voltage_v", "charge_current_a", "soh_pct", "charge_start_time_s",
               "expected_end_time_s", "cell_voltage_max_v", "cell_voltage_min_v", "cell_temperature_max_c",
               "cell_temperature_min_c", "battery_state", "charge_count", "insulation_resistance_kohm",
               "charger_protection", "bms_protection")
_VEHICLE_ORDER = ("vehicle_id", "fleet", "timestamp_ns", "received_ns", "model", "sequence", "state", "powered_on",
                  "armed", "position_valid", "latitude_deg", "longitude_deg", "altitude_m", "speed_kmh", "odometer_km",
                  "battery")
for _cls, _order in ((SlotReading, _SLOT_ORDER), (VehicleReading, _VEHICLE_ORDER)):
    if tuple(f.name for f in fields(_cls))[:len(_order)] != _order:
        raise RuntimeError(f"{_cls.__name__}'s fields changed order: update _checked_reading in {__name__}")


def _checked_reading(msg: Telemetry, fleet: str, received_ns: int) -> VehicleReading:
    """:func:`to_reading` of a report :func:`decode_checked` found entirely in range: the same reading, no
    checks (the fields by position: ``_SLOT_ORDER``, ``_VEHICLE_ORDER``)."""
    pos = msg.pos
    lat = lon = alt = None
    valid = None
    if pos is not None:
        valid = pos.valid
        if valid:
            lat, lon, alt = pos.lat, pos.lon, pos.alt
            if (lat is None) != (lon is None):  # half a position is no position
                lat = lon = None
    b = msg.battery
    battery = None if b is None else SlotReading(
        1, b.maker, b.id, None if b.chemistry is None else _CHEMISTRY_CODES[b.chemistry], b.nominal_v, b.cells,
        b.nominal_ah, b.max_charge_a, b.max_discharge_a, b.undervoltage_v, b.soc_pct, b.temperature_c, b.voltage_v,
        b.current_a, b.soh_pct, None, None, b.cell_max_v, b.cell_min_v, b.cell_max_c, b.cell_min_c,
        None if b.state is None else _BATTERY_STATE_CODES[b.state], b.cycles, None, None, b.protection)
    return VehicleReading(
        msg.vehicle, fleet, msg.ts * 1_000_000, received_ns, msg.model, msg.seq,
        None if msg.state is None else _VEHICLE_STATE_CODES[msg.state], msg.power, msg.armed, valid, lat, lon, alt,
        msg.speed_kmh, msg.odometer_km, battery)
