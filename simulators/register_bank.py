"""Map a simulated cabinet's state onto a vendor's registers, through its profile.

Reads are computed on demand from :meth:`CabinetState.report` with
:func:`collectors.modbus.codec.encode_value`, the exact inverse of the collector's decoder, so
any profile works with no code change: a field the profile lacks is simply not served, and a
field the profile has but the simulator does not model reads as zero. The same holds for a
profile's ``extra:`` registers (values from the report's ``extra`` mapping), for ``bits:`` maps
(the report's Cascade flags written at the vendor's bit positions, plus the report's
``<field>_unmapped`` raw vendor bits) and for ``bit`` fields sharing one register (ORed).

Scenario faults sit between the state and the wire as :class:`Override` objects (a set or
ramped value, a frozen value, a dead sensor, garbage words), keyed by (slot, field) on the
cabinet, so the physics underneath keeps running.

    >>> from collectors.modbus.profile import find_profile
    >>> bank = RegisterBank(find_profile("reference-cabinet"), slot_count=12)
    >>> bank.is_mapped("input", 1000)
    True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from collectors.modbus.codec import FLOAT_TYPES, encode_raw, encode_value
from collectors.modbus.profile import FieldSpec, Profile, unmapped_field

from .cabinet import PARAMETERS, CabinetState

__all__ = [
    "CUTOFF_YIELDING_FIELDS",
    "FUNCTION_REGISTER_TYPES",
    "Override",
    "RegisterBank",
    "cut_off_slot",
    "release_override",
    "reported_value",
]

#: Modbus function code → register type it reads or writes.
FUNCTION_REGISTER_TYPES = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding",
                           16: "holding", 22: "holding", 23: "holding", 4: "input"}

#: Values driven by charging: a cut-off ends a scenario's hold on them and physics takes over,
#: so cutting a slot off visibly helps (current drops, voltage relaxes, temperature cools).
CUTOFF_YIELDING_FIELDS = frozenset({
    "charge_current_a", "voltage_v", "cell_voltage_max_v", "cell_voltage_min_v", "temperature_c",
    "surface_temperature_c", "cell_temperature_max_c", "cell_temperature_min_c",
})


@dataclass(slots=True)
class Override:
    """What a scenario makes one field report instead of the physics.

    ``kind``: ``value`` (set or frozen), ``ramp`` (linear from ``start_value`` at ``start_s`` to
    ``value`` at ``end_s``, then held), ``dead`` (the field's ``missing`` sentinel, else 0xFFFF
    words), ``garbage`` (random words, chosen outside the field's valid range when it has one).
    """

    kind: str
    owner: str  # id of the scenario run that set it; deleting the run removes only its own
    value: Any = None
    start_value: float = 0.0
    start_s: float = 0.0
    end_s: float = 0.0
    yields_to_cutoff: bool = False

    def current(self, now: float) -> Any:
        """The value this override reports at ``now`` (``None`` for dead/garbage)."""
        if self.kind == "value":
            return self.value
        if self.kind == "ramp":
            span = self.end_s - self.start_s
            frac = 1.0 if span <= 0 else min(1.0, max(0.0, (now - self.start_s) / span))
            return self.start_value + (float(self.value) - self.start_value) * frac
        return None

    def words(self, spec: FieldSpec, now: float, rng: random.Random) -> list[int]:
        if self.kind == "dead":
            return list(spec.missing_words) if spec.missing_words else [0xFFFF] * spec.words
        if self.kind == "garbage":
            return _garbage_words(spec, rng)
        return _encode(spec, self.current(now))


def _encode(spec: FieldSpec, value: Any, unmapped: Any = 0) -> list[int]:
    if value is None:
        return list(spec.missing_words) if spec.missing_words else [0] * spec.words
    if spec.data_type not in ("string", "bool", "bit") and isinstance(value, str):
        value = 0
    if spec.bits is not None:
        return encode_value(spec, value, unmapped=int(unmapped or 0))
    return encode_value(spec, value)


def _report_words(spec: FieldSpec, report: dict[str, Any]) -> list[int]:
    """The words of a field or extra from a report (a slot's or the cabinet's)."""
    if spec.extra:
        return _encode(spec, (report.get("extra") or {}).get(spec.field))
    if spec.bits is not None:
        return _encode(spec, report.get(spec.field), report.get(unmapped_field(spec.field)))
    return _encode(spec, report.get(spec.field))


def _garbage_words(spec: FieldSpec, rng: random.Random) -> list[int]:
    """Words a correct decoder must reject: what a faulty device sends instead of a measurement.

    Error patterns (all bits set, the signed extreme), NaN or a denormal float, bytes that are not
    UTF-8. Not merely out-of-range numbers: a plausible value past the valid range is a sensor at
    its limit, which the decoder keeps as the limit (docs/schema.md, "Over-range values").
    """
    if spec.data_type == "string":
        return [0xFFFE] * spec.words  # 0xFF/0xFE bytes are never valid UTF-8
    if spec.data_type in FLOAT_TYPES:
        denormal = 1e-41 if spec.data_type == "f32" else 1e-310
        return encode_raw(spec, math.nan if rng.random() < 0.5 else denormal)
    bits = 16 * spec.words
    patterns = {"u16": [0xFFFF], "i16": [0x8000, 0x7FFF], "u32": [0xFFFFFFFF], "i32": [0x80000000, 0x7FFFFFFF],
                "u64": [2**64 - 1], "i64": [2**63, 2**63 - 1]}.get(spec.data_type, [(1 << bits) - 1])
    for raw in patterns:
        words = encode_raw(spec, raw)
        if spec.missing_words and words == list(spec.missing_words):
            continue  # the "no reading" sentinel would decode cleanly, as None
        return words
    return [0xFFFF] * spec.words


def reported_value(cabinet: CabinetState, slot: int | None, name: str, now: float) -> Any:
    """What the cabinet reports for a field right now, scenario overrides included."""
    override = cabinet.overrides.get((slot, name))
    if override is not None and override.kind in ("value", "ramp"):
        return override.current(now)
    report = cabinet.report() if slot is None else cabinet.slot_report(slot)
    return report.get(name)


def release_override(cabinet: CabinetState, key: tuple[int | None, str], now: float) -> None:
    """Remove an override and let physics continue from where the scenario left the value."""
    override = cabinet.overrides.pop(key, None)
    slot, name = key
    if override is None or slot is None or name != "temperature_c":
        return
    battery = cabinet.slots[slot - 1].battery
    held = override.current(now)
    if battery is not None and isinstance(held, (int, float)) and not isinstance(held, bool):
        # A pack does not jump back to the physics value in one poll: it cools from here.
        battery.temperature_c = float(held)


def cut_off_slot(cabinet: CabinetState, slot: int, enabled: bool, now: float) -> None:
    """Apply the slot output relay; on cut-off, hand charging-driven overrides back to physics."""
    if not enabled:
        for key in [k for k, o in cabinet.overrides.items() if k[0] == slot and o.yields_to_cutoff]:
            release_override(cabinet, key, now)
    cabinet.slots[slot - 1].set_output(enabled)


class RegisterBank:
    """The register map of one profile for ``slot_count`` slots: address → field, per type."""

    def __init__(self, profile: Profile, slot_count: int, *, seed: int = 0) -> None:
        self.profile = profile
        self.slot_count = slot_count
        self._rng = random.Random(f"{seed}:garbage:{profile.model}")
        # register type → address → (slot or None, the specs read there (several only for `bit` fields
        # sharing a register; empty for a bare command), word index)
        self._map: dict[str, dict[int, tuple[int | None, tuple[FieldSpec, ...], int]]] = {
            kind: {} for kind in ("holding", "input", "coil", "discrete")
        }
        for slot in [None, *range(1, slot_count + 1)]:
            specs = (*profile.cabinet_fields, *profile.cabinet_extras) if slot is None else \
                (*profile.slot_fields, *profile.slot_extras)
            for spec in specs:
                base = spec.address if slot is None else profile.slot_address(spec.register_type, spec.address, slot)
                mapping = self._map[spec.register_type]
                for word in range(spec.words):
                    shared = mapping.get(base + word)
                    together = shared[1] if shared is not None and spec.data_type == "bit" else ()
                    mapping[base + word] = (slot, (*together, spec), word)
        # Writable addresses: the slot_output command per slot, the cabinet's fault reset and charging
        # parameters. A command address that is not also a field still reads back: the relay state, the
        # parameter's value, the fault reset's last write.
        self._commands: dict[tuple[str, int], tuple[str, int | None]] = {}
        for name, cmd in profile.commands.items():
            slots = range(1, slot_count + 1) if cmd.per_slot else [None]
            for slot in slots:
                kind, address = profile.command_address(name, slot)
                self._commands[(kind, address)] = (name, slot)
                self._map[kind].setdefault(address, (slot, (), 0))

    def is_mapped(self, register_type: str, address: int) -> bool:
        return address in self._map[register_type]

    def _legal(self, register_type: str, address: int, count: int) -> bool:
        """A read must start and end on mapped registers and bridge gaps no wider than the
        profile's ``max_gap``: the collector's planner makes exactly such reads."""
        mapping = self._map[register_type]
        if count < 1 or address not in mapping or address + count - 1 not in mapping:
            return False
        gap = 0
        for a in range(address, address + count):
            if a in mapping:
                gap = 0
            else:
                gap += 1
                if gap > self.profile.max_gap:
                    return False
        return True

    def read(self, cabinet: CabinetState, register_type: str, address: int, count: int,
             now: float) -> list[int] | list[bool] | None:
        """Words (or bits) at ``address``..+``count``; ``None`` for an illegal address."""
        if not self._legal(register_type, address, count):
            return None
        mapping = self._map[register_type]
        reports: dict[int | None, dict[str, Any]] = {}
        encoded: dict[tuple[int | None, str, bool], list[int]] = {}
        out: list[int] = []
        for a in range(address, address + count):
            entry = mapping.get(a)
            if entry is None:
                out.append(0)
                continue
            slot, specs, word = entry
            if not specs:  # a bare command: what it last set
                out.append(self._command_value(cabinet, register_type, a))
                continue
            value = 0
            for spec in specs:
                key = (slot, spec.field, spec.extra)
                words = encoded.get(key)
                if words is None:
                    override = None if spec.extra else cabinet.overrides.get((slot, spec.field))
                    if override is not None:
                        words = override.words(spec, now, self._rng)
                    else:
                        if slot not in reports:
                            reports[slot] = cabinet.report() if slot is None else cabinet.slot_report(slot)
                        words = _report_words(spec, reports[slot])
                    encoded[key] = words
                value |= words[word]
            out.append(value)
        if register_type in ("coil", "discrete"):
            return [bool(v) for v in out]
        return out

    def _command_value(self, cabinet: CabinetState, register_type: str, address: int) -> int:
        name, slot = self._commands.get((register_type, address), ("", None))
        if name == "slot_output":
            return 1 if slot is not None and cabinet.slots[slot - 1].output_enabled else 0
        if name == "fault_reset":
            return cabinet.fault_reset_register
        if name in PARAMETERS:
            return int(getattr(cabinet.limits, name))
        return 0

    def write(self, cabinet: CabinetState, register_type: str, address: int,
              values: list[int] | list[bool], now: float) -> str | None:
        """Apply a write; return ``None`` on success or the name of the Modbus exception."""
        for i, value in enumerate(values):
            command = self._commands.get((register_type, address + i))
            if command is None:
                return "ILLEGAL_ADDRESS"
            name, slot = command
            if name in PARAMETERS and slot is None:
                if not cabinet.set_parameter(name, int(value)):
                    return "ILLEGAL_VALUE"
                continue
            if int(value) not in (0, 1):
                return "ILLEGAL_VALUE"
            if name == "slot_output" and slot is not None:
                cut_off_slot(cabinet, slot, bool(value), now)
            elif name == "fault_reset" and slot is None:
                cabinet.fault_reset_register = int(value)
                if value:
                    cabinet.reset_faults(now)
            else:
                return "ILLEGAL_ADDRESS"  # a command the simulator does not model
        return None

