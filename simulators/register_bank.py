"""Map a simulated cabinet's state onto a vendor's registers, through its profile.

Reads are computed on demand from :meth:`CabinetState.report` with
:func:`collectors.modbus.codec.encode_value`, the exact inverse of the collector's decoder, so
any profile works with no code change: a field the profile lacks is simply not served, and a
field the profile has but the simulator does not model reads as zero.

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
import struct
from dataclasses import dataclass
from typing import Any

from collectors.modbus.codec import encode_value
from collectors.modbus.profile import FieldSpec, Profile

from .cabinet import CabinetState

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


def _encode(spec: FieldSpec, value: Any) -> list[int]:
    if value is None:
        return list(spec.missing_words) if spec.missing_words else [0] * spec.words
    if spec.data_type not in ("string", "bool") and isinstance(value, str):
        value = 0
    return encode_value(spec, value)


def _garbage_words(spec: FieldSpec, rng: random.Random) -> list[int]:
    """Words a correct decoder must reject: what a faulty device sends instead of a measurement.

    Error patterns (all bits set, the signed extreme), NaN or a denormal float, bytes that are not
    UTF-8. Not merely out-of-range numbers: a plausible value past the valid range is a sensor at
    its limit, which the decoder keeps as the limit (docs/schema.md, "Over-range values").
    """
    if spec.data_type == "string":
        return [0xFFFE] * spec.words  # 0xFF/0xFE bytes are never valid UTF-8
    if spec.data_type == "f32":
        return _encode_raw_f32(spec, math.nan if rng.random() < 0.5 else 1e-41)
    patterns = {"u16": [[0xFFFF]], "i16": [[0x8000], [0x7FFF]], "u32": [[0xFFFF, 0xFFFF]],
                "i32": [[0x8000, 0x0000], [0x7FFF, 0xFFFF]]}.get(spec.data_type, [[0xFFFF] * spec.words])
    for words in patterns:
        ordered = words if spec.word_order == "big" else list(reversed(words))
        if spec.missing_words and ordered == list(spec.missing_words):
            continue  # the "no reading" sentinel would decode cleanly, as None
        return ordered
    return [0xFFFF] * spec.words


def _encode_raw_f32(spec: FieldSpec, value: float) -> list[int]:
    raw = struct.pack(">f", value)
    words = [int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")]
    return words if spec.word_order == "big" else words[::-1]


def _decode_number(spec: FieldSpec, words: list[int]) -> float:
    ordered = words if spec.word_order == "big" else words[::-1]
    raw = b"".join(w.to_bytes(2, "big") for w in ordered)
    fmt = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "f32": ">f", "bool": ">H"}[spec.data_type]
    (number,) = struct.unpack(fmt, raw)
    return number * spec.scale + spec.offset_value


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
        # register type → address → (slot or None, spec or None for a bare command, word index)
        self._map: dict[str, dict[int, tuple[int | None, FieldSpec | None, int]]] = {
            kind: {} for kind in ("holding", "input", "coil", "discrete")
        }
        for spec in profile.cabinet_fields:
            for word in range(spec.words):
                self._map[spec.register_type][spec.address + word] = (None, spec, word)
        for slot in range(1, slot_count + 1):
            for spec in profile.slot_fields:
                base = profile.slot_address(spec.register_type, spec.address, slot)
                for word in range(spec.words):
                    self._map[spec.register_type][base + word] = (slot, spec, word)
        # Writable addresses: the slot_output command per slot. A command address that is not
        # also a field still reads back (as the relay state), like a real coil.
        self._commands: dict[tuple[str, int], tuple[str, int | None]] = {}
        for name, cmd in profile.commands.items():
            slots = range(1, slot_count + 1) if cmd.per_slot else [None]
            for slot in slots:
                kind, address = profile.command_address(name, slot)
                self._commands[(kind, address)] = (name, slot)
                self._map[kind].setdefault(address, (slot, None, 0))

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
        encoded: dict[tuple[int | None, str], list[int]] = {}
        out: list[int] = []
        for a in range(address, address + count):
            entry = mapping.get(a)
            if entry is None:
                out.append(0)
                continue
            slot, spec, word = entry
            if spec is None:
                out.append(1 if cabinet.slots[slot - 1].output_enabled else 0)
                continue
            key = (slot, spec.field)
            words = encoded.get(key)
            if words is None:
                override = cabinet.overrides.get(key)
                if override is not None:
                    words = override.words(spec, now, self._rng)
                else:
                    if slot not in reports:
                        reports[slot] = cabinet.report() if slot is None else cabinet.slot_report(slot)
                    words = _encode(spec, reports[slot].get(spec.field))
                encoded[key] = words
            out.append(words[word])
        if register_type in ("coil", "discrete"):
            return [bool(v) for v in out]
        return out

    def write(self, cabinet: CabinetState, register_type: str, address: int,
              values: list[int] | list[bool], now: float) -> str | None:
        """Apply a write; return ``None`` on success or the name of the Modbus exception."""
        for i, value in enumerate(values):
            command = self._commands.get((register_type, address + i))
            if command is None:
                return "ILLEGAL_ADDRESS"
            name, slot = command
            if int(value) not in (0, 1):
                return "ILLEGAL_VALUE"
            if name == "slot_output" and slot is not None:
                cut_off_slot(cabinet, slot, bool(value), now)
            else:
                return "ILLEGAL_ADDRESS"  # a command the simulator does not model
        return None

