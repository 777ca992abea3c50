"""The BLE gateway's uplink message: one ``PackReport`` per publish, the packs it polled.

Topic ``cascade/v1/<fleet>/<gateway>/packs`` (QoS 1); the gateway's MQTT user is its id, as for a
vehicle. One JSON object (at most :data:`MAX_MESSAGE_BYTES`)::

    {"v": 1, "gateway": "G000001", "seq": 42, "ts": 1764990000123,
     "packs": [{"address": "C0:D6:3C:00:00:01", "name": "xiaoxiang-01", "protocol": "jbd", "slot": 1,
                "battery": {"nominal_ah": 10.0, "cells": 15, "soc_pct": 72, "temperature_c": 21.5,
                            "voltage_v": 58.88, "current_a": 0.0, "cell_max_v": 3.942, "cell_min_v": 3.895,
                            "cell_max_c": 21.5, "cell_min_c": 20.3, "state": "idle", "cycles": 0,
                            "protection": 0, "cell_v": [3.942, …], "mosfet_charge": true,
                            "mosfet_discharge": true},
                "protection_unmapped": 0, "hardware": "JBD-SP16S020-L16S-200A"}]}

``battery`` is the vehicle report's battery object (``collectors.vehicles.wire.Battery``, the same keys,
ranges and meaning: docs/vehicles.md) plus the cell voltages and the MOSFET states. ``seq`` increases
by one per report and survives restarts (the gateway's disk buffer keeps it); ``ts`` is when the
readings were taken, not when the report was sent (reports buffered through an outage keep their time).
``slot`` is the pack's stable number at this gateway (kept in the gateway's state file).

    >>> report = PackReport(gateway="G1", seq=1, ts=1_700_000_000_000, packs=[PackEntry(
    ...     address="C0:D6:3C:00:00:01", name="xiaoxiang", protocol="jbd", slot=1,
    ...     battery=PackBattery(voltage_v=52.1, soc_pct=80, protection=0))])
    >>> decode(encode(report)) == report
    True
    >>> to_reading(report, fleet="bj").slots[0].voltage_v
    52.1
"""

from __future__ import annotations

from typing import Literal

import msgspec

from collectors.vehicles.wire import Battery, FieldProblem, Telemetry, WireError
from collectors.vehicles.wire import to_reading as _vehicle_reading
from core.model import BLE_GATEWAY_MODEL, CabinetReading, SlotReading

__all__ = ["FORMAT_VERSION", "GATEWAY_MODEL", "MAX_MESSAGE_BYTES", "PackBattery", "PackEntry", "PackReport",
           "WireError", "decode", "encode", "to_reading", "topic"]

FORMAT_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024
"""A pack is ~600 bytes; a report carries at most a few hundred packs."""
GATEWAY_MODEL = BLE_GATEWAY_MODEL


def topic(fleet: str, gateway: str) -> str:
    """``cascade/v1/<fleet>/<gateway>/packs``."""
    return f"cascade/v1/{fleet}/{gateway}/packs"


class PackBattery(Battery, frozen=True):
    """The vehicle report's battery object plus what a BMS read over BLE adds: every cell's voltage
    (V, cell 1 first) and the MOSFET states (``True``: the charge / discharge path is on)."""

    cell_v: list[float] | None = None
    mosfet_charge: bool | None = None
    mosfet_discharge: bool | None = None


class PackEntry(msgspec.Struct, frozen=True):
    """One pack of a report. ``protection_unmapped``: BMS protection bits without a Cascade meaning,
    at the vendor's positions (``battery.protection`` carries the mapped ones); ``hardware``: the BMS's
    hardware version text (JBD 0x05), when it gave one."""

    address: str
    protocol: Literal["jbd", "daly"]
    slot: int
    battery: PackBattery
    name: str | None = None
    protection_unmapped: int | None = None
    hardware: str | None = None


class PackReport(msgspec.Struct, frozen=True):
    """One publish of a gateway."""

    gateway: str
    seq: int
    ts: int
    packs: list[PackEntry]
    v: Literal[1] = 1


_decoder = msgspec.json.Decoder(PackReport)
_encoder = msgspec.json.Encoder()


def encode(report: PackReport) -> bytes:
    return _encoder.encode(report)


def decode(data: bytes | bytearray | memoryview) -> PackReport:
    """One report from its bytes, or :class:`WireError` (``too_large``, ``not_json``, ``schema``) saying
    what is wrong and where."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("too_large", f"message of {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as err:
        raise WireError("schema", str(err)[:300]) from None
    except msgspec.DecodeError as err:
        raise WireError("not_json", str(err)[:300]) from None


def to_reading(report: PackReport, *, fleet: str, problems: list[FieldProblem] | None = None) -> CabinetReading:
    """The report as one cabinet reading for the store and the warning engine: ``site`` = fleet,
    ``cabinet_id`` = gateway, model ``ble-gateway``, one slot per pack at its ``slot``, and the number of
    packs as the extra ``packs``.

    Each pack's values pass the same checks as a vehicle's battery (``collectors.vehicles.wire``:
    out-of-range values dropped, temperatures and pack voltage past their range kept at the limit);
    what was dropped is appended to ``problems`` when given. The MOSFET states go to the slot's
    ``extra`` (``mosfet_charge``, ``mosfet_discharge``); cell voltages stay on the wire (no slot field).
    A pack listed twice under one slot keeps its first entry.
    """
    slots: dict[int, SlotReading] = {}
    for pack in report.packs:
        if pack.slot in slots or pack.slot < 1:
            if problems is not None:
                problems.append(FieldProblem(report.gateway, f"packs[{pack.address}].slot",
                                             f"{pack.slot} is taken or not a slot number"))
            continue
        b = pack.battery
        plain = Battery(**{name: getattr(b, name) for name in Battery.__struct_fields__})
        vehicle, dropped = _vehicle_reading(Telemetry(vehicle=report.gateway, ts=report.ts, seq=report.seq,
                                                      battery=plain), fleet=fleet, received_ns=0)
        if problems is not None:
            problems.extend(dropped)
        slot = vehicle.battery
        assert slot is not None  # a report with a battery has a battery reading
        slot.slot = pack.slot
        slot.bms_protection_unmapped = pack.protection_unmapped
        extra = {k: v for k, v in (("mosfet_charge", b.mosfet_charge), ("mosfet_discharge", b.mosfet_discharge))
                 if v is not None}
        if extra:
            slot.extra = extra
        slots[pack.slot] = slot
    # ``packs`` makes the store keep a ``cabinet`` point (model ``ble-gateway``) for the gateway, which has no
    # cabinet values of its own: the health report tells its packs from a cabinet's by it.
    return CabinetReading(cabinet_id=report.gateway, site=fleet, model=GATEWAY_MODEL,
                          timestamp_ns=report.ts * 1_000_000, slots=[slots[n] for n in sorted(slots)],
                          extra={"packs": len(slots)})
