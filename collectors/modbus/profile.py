"""Cabinet register profiles: one YAML file per cabinet model, validated once at start-up.

A profile names, for every field of :mod:`core.model`, where the cabinet keeps it: register
type, address, data type, word order, scale, unit. Cabinet-wide fields use absolute addresses;
slot fields use an offset inside a per-slot block (``slots.base`` + (slot − 1) × ``slots.stride``).
A new vendor needs only a new profile. See ``docs/register-map.md``.

    >>> profile = load_profile("profiles/reference-cabinet.yaml")
    >>> profile.model
    'reference-cabinet'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import InputError
from core.model import CABINET_FIELDS, SLOT_FIELDS

from .codec import WORDS

__all__ = [
    "CommandSpec",
    "FieldSpec",
    "Profile",
    "ProfileError",
    "PROFILE_DIR",
    "REGISTER_TYPES",
    "find_profile",
    "load_profile",
]

PROFILE_DIR = Path(__file__).resolve().parents[2] / "profiles"

#: Register types and whether they hold 1-bit values.
REGISTER_TYPES = {"holding": False, "input": False, "coil": True, "discrete": True}
_DATA_TYPES = set(WORDS) | {"string"}
_WORD_ORDERS = {"big", "little"}


class ProfileError(InputError):
    """A profile that cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Where and how one model field is stored in the cabinet's registers."""

    field: str
    register_type: str
    address: int  # absolute for cabinet fields, offset inside the slot block for slot fields
    data_type: str
    scale: float = 1.0
    offset_value: float = 0.0
    unit: str = ""
    word_order: str = "big"
    length: int = 0  # registers, for strings only
    valid: tuple[float, float] | None = None
    missing: int | None = None  # raw value meaning "sensor not fitted / no reading"
    words: int = field(init=False)
    missing_words: tuple[int, ...] = field(init=False)
    decimals: int = field(init=False)

    def __post_init__(self) -> None:
        words = self.length if self.data_type == "string" else WORDS[self.data_type]
        object.__setattr__(self, "words", words)
        missing_words: tuple[int, ...] = ()
        if self.missing is not None and self.data_type not in ("string", "bool"):
            raw = self.missing & ((1 << (16 * words)) - 1)
            big = [(raw >> (16 * (words - 1 - i))) & 0xFFFF for i in range(words)]
            missing_words = tuple(big if self.word_order == "big" else reversed(big))
        object.__setattr__(self, "missing_words", missing_words)
        decimals = max(0, len(f"{self.scale:.10f}".rstrip("0").split(".")[1])) if self.scale != 1 else 0
        object.__setattr__(self, "decimals", decimals + 2)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A writable coil/register used for protective actions, read back after writing."""

    name: str
    register_type: str  # "coil" or "holding"
    address: int  # absolute, or offset in the slot block when per_slot
    per_slot: bool
    description: str = ""


@dataclass(frozen=True, slots=True)
class Profile:
    """A validated cabinet register map."""

    model: str
    vendor: str
    description: str
    source: str
    slot_count: int
    slot_base: Mapping[str, int]
    slot_stride: Mapping[str, int]
    cabinet_fields: tuple[FieldSpec, ...]
    slot_fields: tuple[FieldSpec, ...]
    commands: Mapping[str, CommandSpec]
    max_gap: int = 16  # unused registers a read may bridge; raise it only for devices that allow it

    def slot_address(self, register_type: str, offset: int, slot: int) -> int:
        """Absolute address of ``offset`` inside slot ``slot`` (1-based)."""
        return self.slot_base[register_type] + (slot - 1) * self.slot_stride[register_type] + offset

    def command_address(self, name: str, slot: int | None) -> tuple[str, int]:
        """(register type, absolute address) of a command, for a slot when it is per-slot."""
        try:
            cmd = self.commands[name]
        except KeyError:
            raise KeyError(f"profile {self.model} has no command {name!r}; it has {sorted(self.commands)}") from None
        if cmd.per_slot:
            if slot is None:
                raise ValueError(f"command {name!r} is per slot: give a slot number")
            return cmd.register_type, self.slot_address(cmd.register_type, cmd.address, slot)
        return cmd.register_type, cmd.address


def _require(mapping: Any, key: str, where: str, source: Path, kind: type | tuple[type, ...], fix: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ProfileError(source, f"{where}{key}", "missing", fix)
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ProfileError(source, f"{where}{key}", f"{value!r} has the wrong type", fix)
    return value


def _parse_field(entry: Any, where: str, source: Path, allowed: frozenset[str], default_order: str,
                 address_key: str) -> FieldSpec:
    if not isinstance(entry, dict):
        raise ProfileError(source, where, f"expected a mapping, got {entry!r}",
                           "write each field as {field: ..., register: ..., " + address_key + ": ..., type: ...}")
    known = {"field", "register", address_key, "type", "scale", "offset_value", "unit", "word_order", "length",
             "valid", "missing", "description"}
    for key in entry:
        if key not in known:
            raise ProfileError(source, f"{where}.{key}", "unknown key", f"use one of {sorted(known)}")
    name = _require(entry, "field", f"{where}.", source, str, "name a field of core.model")
    if name not in allowed:
        raise ProfileError(source, f"{where}.field", f"{name!r} is not a known field",
                           f"use one of: {', '.join(sorted(allowed))}")
    where = f"{where}({name})"
    register = _require(entry, "register", f"{where}.", source, str, f"one of {sorted(REGISTER_TYPES)}")
    if register not in REGISTER_TYPES:
        raise ProfileError(source, f"{where}.register", f"{register!r} is not a register type",
                           f"use one of {sorted(REGISTER_TYPES)}")
    address = _require(entry, address_key, f"{where}.", source, int, "a register number from 0 to 65535")
    if not 0 <= address <= 0xFFFF:
        raise ProfileError(source, f"{where}.{address_key}", f"{address} out of range", "use 0..65535")
    data_type = entry.get("type", "bool" if REGISTER_TYPES[register] else None)
    if data_type not in _DATA_TYPES:
        raise ProfileError(source, f"{where}.type", f"{data_type!r} is not a data type",
                           f"use one of {sorted(_DATA_TYPES)}")
    if REGISTER_TYPES[register] and data_type != "bool":
        raise ProfileError(source, f"{where}.type", f"{register} registers hold single bits",
                           "use type: bool, or move the field to a holding/input register")
    length = entry.get("length", 0)
    if data_type == "string" and (not isinstance(length, int) or not 1 <= length <= 64):
        raise ProfileError(source, f"{where}.length", f"{length!r} is not a register count",
                           "give strings a length of 1..64 registers (2 characters each)")
    scale = entry.get("scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale == 0:
        raise ProfileError(source, f"{where}.scale", f"{scale!r} is not a non-zero number", "e.g. scale: 0.1")
    order = entry.get("word_order", default_order)
    if order not in _WORD_ORDERS:
        raise ProfileError(source, f"{where}.word_order", f"{order!r}", "use big or little")
    valid = entry.get("valid")
    if valid is not None:
        if (not isinstance(valid, list) or len(valid) != 2
                or not all(isinstance(v, (int, float)) for v in valid) or valid[0] > valid[1]):
            raise ProfileError(source, f"{where}.valid", f"{valid!r} is not [min, max]", "e.g. valid: [-40, 150]")
        valid = (float(valid[0]), float(valid[1]))
    missing = entry.get("missing")
    if missing is not None and not isinstance(missing, int):
        raise ProfileError(source, f"{where}.missing", f"{missing!r} is not an integer", "e.g. missing: 0x7FFF")
    offset_value = entry.get("offset_value", 0.0)
    if not isinstance(offset_value, (int, float)) or isinstance(offset_value, bool):
        raise ProfileError(source, f"{where}.offset_value", f"{offset_value!r} is not a number",
                           "e.g. offset_value: -40 (added after scaling)")
    return FieldSpec(name, register, address, data_type, float(scale), float(offset_value),
                     str(entry.get("unit", "")), order, length, valid, missing)


def _check_overlaps(specs: list[FieldSpec], source: Path, section: str) -> None:
    taken: dict[tuple[str, int], str] = {}
    for spec in specs:
        for word in range(spec.words):
            key = (spec.register_type, spec.address + word)
            if key in taken:
                raise ProfileError(source, f"{section}({spec.field})",
                                   f"{spec.register_type} register {spec.address + word} is already used by "
                                   f"{taken[key]}", "give each field its own registers")
            taken[key] = spec.field


def load_profile(path: str | Path) -> Profile:
    """Load and validate a profile file; raise :class:`ProfileError` naming file, key and fix."""
    source = Path(path)
    try:
        doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as err:
        raise ProfileError(source, "(file)", f"cannot read: {err.strerror}", "check the path") from err
    except yaml.YAMLError as err:
        raise ProfileError(source, "(file)", f"not valid YAML: {err}", "fix the YAML syntax") from err
    if not isinstance(doc, dict):
        raise ProfileError(source, "(top level)", "expected a mapping", "see profiles/reference-cabinet.yaml")
    model = _require(doc, "model", "", source, str, "name the cabinet model, e.g. model: acme-s12")
    order = doc.get("word_order", "big")
    if order not in _WORD_ORDERS:
        raise ProfileError(source, "word_order", f"{order!r}", "use big or little")

    slots = _require(doc, "slots", "", source, dict, "describe the per-slot block: count, base, stride")
    count = _require(slots, "count", "slots.", source, int, "number of slots, e.g. 12")
    if not 1 <= count <= 256:
        raise ProfileError(source, "slots.count", f"{count}", "use 1..256")
    base = _require(slots, "base", "slots.", source, dict, "start address per register type, e.g. {input: 1000}")
    stride_doc = _require(slots, "stride", "slots.", source, (int, dict), "registers between slots, e.g. 32")
    stride = stride_doc if isinstance(stride_doc, dict) else {kind: stride_doc for kind in base}
    for kind in base:
        if kind not in REGISTER_TYPES:
            raise ProfileError(source, f"slots.base.{kind}", "not a register type", f"use {sorted(REGISTER_TYPES)}")
        if not isinstance(base[kind], int) or not isinstance(stride.get(kind), int) or stride[kind] < 1:
            raise ProfileError(source, f"slots.stride.{kind}", "missing or not a positive integer",
                               "give a stride for every register type in slots.base")

    cabinet_list = doc.get("cabinet") or []
    if not isinstance(cabinet_list, list):
        raise ProfileError(source, "cabinet", f"expected a list of fields, got {cabinet_list!r}",
                           "write cabinet: [{field: ..., register: ..., address: ..., type: ...}, ...]")
    cabinet_fields = [
        _parse_field(e, f"cabinet[{i}]", source, CABINET_FIELDS, order, "address")
        for i, e in enumerate(cabinet_list)
    ]
    slot_fields = [
        _parse_field(e, f"slot[{i}]", source, SLOT_FIELDS, order, "offset")
        for i, e in enumerate(_require(doc, "slot", "", source, list, "list the per-slot fields"))
    ]
    for i, spec in enumerate(slot_fields):
        if spec.register_type in base:
            last = spec.address + base[spec.register_type] + (count - 1) * stride[spec.register_type] + spec.words
            if last > 0x10000:
                raise ProfileError(source, f"slot[{i}]({spec.field})",
                                   f"slot {count} would need register {last - 1}, beyond 65535",
                                   "lower slots.base or slots.stride, or slots.count")
        if spec.register_type not in base:
            raise ProfileError(source, f"slot[{i}]({spec.field}).register",
                               f"no slots.base for {spec.register_type}", f"add slots.base.{spec.register_type}")
        if spec.address + spec.words > stride[spec.register_type]:
            raise ProfileError(source, f"slot[{i}]({spec.field}).offset",
                               f"offset {spec.address} runs past the slot stride {stride[spec.register_type]}",
                               "increase slots.stride or move the field")
    for section, specs in (("cabinet", cabinet_fields), ("slot", slot_fields)):
        names = [s.field for s in specs]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ProfileError(source, section, f"fields listed twice: {sorted(dupes)}", "list each field once")
    _check_overlaps(cabinet_fields, source, "cabinet")
    _check_overlaps(slot_fields, source, "slot")

    commands: dict[str, CommandSpec] = {}
    commands_doc = doc.get("commands") or {}
    if not isinstance(commands_doc, dict):
        raise ProfileError(source, "commands", f"expected a mapping of command names, got {commands_doc!r}",
                           "write commands: {slot_output: {register: coil, per_slot: true, offset: 0}}")
    for name, entry in commands_doc.items():
        where = f"commands.{name}"
        if not isinstance(entry, dict):
            raise ProfileError(source, where, f"expected a mapping, got {entry!r}",
                               "give register, per_slot and offset (or address)")
        register = _require(entry, "register", f"{where}.", source, str, "coil or holding")
        if register not in ("coil", "holding"):
            raise ProfileError(source, f"{where}.register", f"{register!r} is not writable", "use coil or holding")
        per_slot = bool(entry.get("per_slot", False))
        address = _require(entry, "offset" if per_slot else "address", f"{where}.", source, int,
                           "a register number (offset in the slot block when per_slot)")
        if per_slot and register not in base:
            raise ProfileError(source, f"{where}.register", f"no slots.base for {register}",
                               f"add slots.base.{register}")
        if not 0 <= address <= 0xFFFF or (per_slot and address + base[register] + (count - 1) * stride[register]
                                             > 0xFFFF):
            raise ProfileError(source, where, f"address {address} falls outside 0..65535 for some slot",
                               "use a register number that fits every slot")
        commands[name] = CommandSpec(name, register, address, per_slot, str(entry.get("description", "")))

    max_gap = doc.get("max_gap", 16)
    if not isinstance(max_gap, int) or isinstance(max_gap, bool) or not 0 <= max_gap <= 124:
        raise ProfileError(source, "max_gap", f"{max_gap!r}", "use 0..124 unused registers a read may bridge")
    return Profile(model=model, max_gap=max_gap, vendor=str(doc.get("vendor", "")), description=str(doc.get("description", "")),
                   source=str(source), slot_count=count, slot_base=dict(base), slot_stride=dict(stride),
                   cabinet_fields=tuple(cabinet_fields), slot_fields=tuple(slot_fields), commands=commands)


def find_profile(name: str | Path, search: Path = PROFILE_DIR) -> Profile:
    """Load a profile by file path, or by model name from the shipped ``profiles/`` folder."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_profile(path)
    candidate = search / f"{name}.yaml"
    if not candidate.exists():
        known = sorted(p.stem for p in search.glob("*.yaml"))
        raise ProfileError(candidate, "(file)", f"no profile named {name!r}", f"use a file path or one of {known}")
    return load_profile(candidate)
