"""The InfluxDB schema: how readings and commands become line-protocol points.

Documented in ``docs/schema.md``. Tags are the low-cardinality identifiers (site, cabinet, slot,
model); the battery id is a field, not a tag, because packs move between slots and cabinets all
day and a tag per pack would grow the series index without bound.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from operator import attrgetter

from core.events import AlertEvent, CommandResult, Point
from core.model import (
    BmsProtection,
    CabinetReading,
    ChargerProtection,
    EmergencyState,
    SlotReading,
    VehicleReading,
    describe_flags,
)

from .lineprotocol import (
    FieldValue,
    LineProtocolError,
    RecordEncoder,
    TagSetEncoder,
    TupleEncoder,
    encode_line,
)

__all__ = ["ALERT_MEASUREMENT", "CABINET_MEASUREMENT", "COMMAND_MEASUREMENT", "SLOT_MEASUREMENT",
           "VEHICLE_BATTERY_MEASUREMENT", "VEHICLE_MEASUREMENT", "alert_to_line", "command_to_line",
           "encode_points", "reading_to_lines", "vehicle_to_lines"]

CABINET_MEASUREMENT = "cabinet"
SLOT_MEASUREMENT = "slot"
COMMAND_MEASUREMENT = "command"
ALERT_MEASUREMENT = "alert"
VEHICLE_MEASUREMENT = "vehicle"
VEHICLE_BATTERY_MEASUREMENT = "vehicle_battery"

_CABINET_FIELDS = tuple(f.name for f in dataclasses.fields(CabinetReading)
                        if f.name not in {"cabinet_id", "site", "model", "timestamp_ns", "slots", "over_range", "extra"})
_SLOT_FIELDS = tuple(f.name for f in dataclasses.fields(SlotReading) if f.name not in {"slot", "over_range", "extra"})


# Both points of a poll are written by compiled formatters from tuples of the reading's attributes
# (:class:`~.lineprotocol.TupleEncoder`): no dict per point, no loop per field.
_CABINET_LINE = TupleEncoder(CABINET_MEASUREMENT, TagSetEncoder(("site", "cabinet", "model")),
                             (*_CABINET_FIELDS, "emergency_state_text", "over_range"))
_SLOT_LINE = TupleEncoder(SLOT_MEASUREMENT, TagSetEncoder(("site", "cabinet", "slot")),
                          (*_SLOT_FIELDS, "charger_protection_text", "bms_protection_text", "over_range"))
_cabinet_values = attrgetter(*_CABINET_FIELDS)
_slot_values = attrgetter(*_SLOT_FIELDS)
_SLOT_NAMES = tuple(str(n) for n in range(257))
_VEHICLE_FIELDS = ("model", "sequence", "state", "powered_on", "armed", "position_valid", "latitude_deg",
                   "longitude_deg", "altitude_m", "speed_kmh", "odometer_km")
_BATTERY_FIELDS = tuple(name for name in _SLOT_FIELDS
                        if name not in {"charger_protection", "charger_protection_unmapped", "charge_start_time_s",
                                        "expected_end_time_s", "surface_temperature_c", "h2_ppm", "voc_ppm",
                                        "module_pressure_kpa", "valve_acoustic_events", "output_enabled",
                                        "insulation_resistance_kohm"})
# Both vehicle points of a report have the same tags: one cache of tag texts per (fleet, vehicle).
_VEHICLE_TAGS = TagSetEncoder(("fleet", "vehicle"))
_VEHICLE_LINE = TupleEncoder(VEHICLE_MEASUREMENT, _VEHICLE_TAGS, (*_VEHICLE_FIELDS, "battery_id", "lag_s",
                                                                  "over_range"))
# A report with its pack: both points from one tuple, (vehicle fields, lag_s, over_range, pack fields,
# bms_protection_text, the pack's over_range); the vehicle's battery_id and the pack's position are the
# same values as the pack's battery_id and the vehicle's position (formatted once).
_V, _B = len(_VEHICLE_FIELDS), len(_BATTERY_FIELDS)
_VEHICLE_AND_PACK = RecordEncoder(_VEHICLE_TAGS, [
    (VEHICLE_MEASUREMENT, [*((name, i) for i, name in enumerate(_VEHICLE_FIELDS)),
                           ("battery_id", _V + 2 + _BATTERY_FIELDS.index("battery_id")), ("lag_s", _V),
                           ("over_range", _V + 1)]),
    (VEHICLE_BATTERY_MEASUREMENT, [*((name, _V + 2 + i) for i, name in enumerate(_BATTERY_FIELDS)),
                                   ("bms_protection_text", _V + 2 + _B),
                                   ("latitude_deg", _VEHICLE_FIELDS.index("latitude_deg")),
                                   ("longitude_deg", _VEHICLE_FIELDS.index("longitude_deg")),
                                   ("over_range", _V + 3 + _B)]),
])
_vehicle_values = attrgetter(*_VEHICLE_FIELDS)
_battery_values = attrgetter(*_BATTERY_FIELDS)
_BMS_TEXTS: dict[int, str] = {}  # protection word -> its text (at most 65,536: the word is 16 bits)
_CHARGER_TEXTS: dict[int, str] = {}
_EMERGENCY_TEXTS: dict[int, str] = {}


def reading_to_lines(reading: CabinetReading) -> list[str]:
    """One ``cabinet`` point and one ``slot`` point per slot, all at the poll's timestamp.

    A slot whose values cannot be encoded is skipped (and raises nothing): the rest of the
    poll is still written. Vendor ``extra`` registers go as ``extra_<name>`` fields of the same
    cabinet or slot point (one more line each, same series and time). Returns the lines.
    """
    ts = reading.timestamp_ns
    site, cabinet = reading.site, reading.cabinet_id
    lines: list[str] = []
    values = _cabinet_values(reading)
    over = reading.over_range
    # A BLE gateway (a "cabinet" of packs) has no cabinet values: no cabinet point.
    if over or any(value is not None for value in values):
        try:
            lines.append(_CABINET_LINE.encode((site, cabinet, reading.model), (
                *values, _flags_text(EmergencyState, _EMERGENCY_TEXTS, reading.emergency_state),
                (",".join(over) or None) if over else None), ts))
        except LineProtocolError:
            pass
    if reading.extra:
        _append_extra(lines, CABINET_MEASUREMENT, {"site": site, "cabinet": cabinet, "model": reading.model},
                      reading.extra, ts)
    for slot in reading.slots:
        number = slot.slot
        name = _SLOT_NAMES[number] if 0 <= number < len(_SLOT_NAMES) else str(number)
        over = slot.over_range
        try:
            lines.append(_SLOT_LINE.encode((site, cabinet, name), (
                *_slot_values(slot), _flags_text(ChargerProtection, _CHARGER_TEXTS, slot.charger_protection),
                _bms_text(slot.bms_protection), (",".join(over) or None) if over else None), ts))
        except LineProtocolError:
            pass
        if slot.extra:
            _append_extra(lines, SLOT_MEASUREMENT, {"site": site, "cabinet": cabinet, "slot": name}, slot.extra, ts)
    return lines


def _cabinet_point_expected(reading: CabinetReading) -> bool:
    return any(getattr(reading, name) is not None for name in _CABINET_FIELDS) or bool(reading.over_range)


def _append_extra(lines: list[str], measurement: str, tags: dict[str, str], extra: Mapping[str, object],
                  ts: int) -> None:
    """Vendor registers with no Cascade field, as ``extra_<name>`` fields of the same point (same
    series and timestamp: InfluxDB merges them). Never lost; never read by a rule."""
    try:
        lines.append(encode_line(measurement, tags, {f"extra_{k}": v for k, v in extra.items()}, ts))  # type: ignore[misc]
    except LineProtocolError:
        pass


def vehicle_to_lines(reading: VehicleReading) -> list[str]:
    """A ``vehicle`` point and, when the report carries the pack, a ``vehicle_battery`` point, both at
    the device's own report time (so a report stored twice is one point). The battery point has the
    same field names as a cabinet ``slot`` point and the vehicle's position (P-5.2.1e: where each
    battery is): ``WHERE battery_id = '…'`` over ``slot`` and ``vehicle_battery`` is the pack's history
    across swaps. A point that cannot be encoded is skipped (the other is still written).

    The hot path of vehicle ingest: the values are taken as one tuple straight from the reading's
    attributes and both lines written by one compiled formatter (:class:`~.lineprotocol.RecordEncoder`)."""
    ts = reading.timestamp_ns
    tags = (reading.fleet, reading.vehicle_id)
    battery = reading.battery
    received = reading.received_ns
    lag = round((received - ts) / 1e9, 3) if received else None
    over = (",".join(reading.over_range) or None) if reading.over_range else None
    if battery is not None:
        return _VEHICLE_AND_PACK.encode(tags, (
            *_vehicle_values(reading), lag, over, *_battery_values(battery), _bms_text(battery.bms_protection),
            (",".join(battery.over_range) or None) if battery.over_range else None), ts)
    try:
        return [_VEHICLE_LINE.encode(tags, (*_vehicle_values(reading), None, lag, over), ts)]
    except LineProtocolError:
        return []


def _bms_text(word: int | None) -> str | None:
    return _flags_text(BmsProtection, _BMS_TEXTS, word)


def _flags_text(flags: type[enum.IntFlag], texts: dict[int, str], word: int | None) -> str | None:
    """``describe_flags`` of a 16-bit word, remembered per word (at most 65,536 texts per flag type)."""
    if word is None:
        return None
    text = texts.get(word)
    if text is None:
        text = describe_flags(flags, word)
        if type(word) is int and 0 <= word <= 0xFFFF:
            texts[word] = text
    return text


def command_to_line(result: CommandResult) -> str:
    """A protective or operator command and its read-back (who, what, when, result)."""
    return encode_line(
        COMMAND_MEASUREMENT,
        {"site": result.site, "cabinet": result.cabinet_id, "slot": "" if result.slot is None else str(result.slot),
         "command": result.command},
        {"actor": result.actor, "value": int(result.value), "ok": result.ok,
         "readback": None if result.readback is None else int(result.readback), "error": result.error,
         "duration_s": max(0.0, result.completed_at - result.requested_at)},
        int(result.requested_at * 1e9),
    )


def alert_to_line(event: AlertEvent) -> str:
    """One alert level change (measurement ``alert``; Grafana annotations and history read it)."""
    tags = {"site": event.site, "cabinet": event.cabinet, "slot": None if event.slot is None else str(event.slot),
            "rule": event.rule, "severity": event.severity, "category": event.category}
    value = event.value
    fields: dict[str, FieldValue] = {"level": event.level, "from_level": event.from_level, "kind": event.kind,
              "value": None if isinstance(value, bool) or not isinstance(value, (int, float)) else float(value),
              "battery": event.battery,
              # One line is one point: a line break in a template would make the point unencodable.
              "summary": _one_line(event.summary), "diagnosis": _one_line(event.diagnosis),
              "action": _one_line(event.action)}
    return encode_line(ALERT_MEASUREMENT, tags, fields, event.timestamp_ns)


def _one_line(text: str | None) -> str | None:
    return None if text is None else " ".join(text.splitlines())


def encode_points(points: Iterable[Point]) -> tuple[list[str], list[tuple[str, str]]]:
    """Lines for every point that line protocol can carry, and ``(where, why)`` for each that it cannot.

    A reading yields one line per point (cabinet + slots); a point that cannot be encoded is
    skipped, the rest is kept.
    """
    lines: list[str] = []
    skipped: list[tuple[str, str]] = []
    for point in points:
        if isinstance(point, VehicleReading):  # first: the most frequent point by far
            encoded = vehicle_to_lines(point)
            missing = 1 + (point.battery is not None) - len(encoded)
            lines.extend(encoded)
            if missing:
                skipped.extend([(f"vehicle {point.fleet}/{point.vehicle_id}", "value not encodable")] * missing)
            continue
        if isinstance(point, CabinetReading):
            encoded = reading_to_lines(point)
            expected = (_cabinet_point_expected(point) + len(point.slots) + bool(point.extra)
                        + sum(1 for slot in point.slots if slot.extra))
            missing = expected - len(encoded)
            lines.extend(encoded)
            if missing:
                skipped.extend([(f"reading {point.site}/{point.cabinet_id}", "value not encodable")] * missing)
            continue
        try:
            if isinstance(point, AlertEvent):
                lines.append(alert_to_line(point))
            elif isinstance(point, CommandResult):
                lines.append(command_to_line(point))
            else:
                skipped.append((type(point).__name__, "not a point type this sink stores"))
        except (LineProtocolError, TypeError, ValueError) as err:
            where = getattr(point, "cabinet", None) or getattr(point, "cabinet_id", "?")
            skipped.append((f"{type(point).__name__} {where}", str(err)))
    return lines, skipped
