"""Cabinet register profiles: one YAML file per cabinet model, validated once at start-up.

A profile names, for every field of :mod:`core.model`, where the cabinet keeps it: register
type, address, data type, word order, scale, unit. Cabinet-wide fields use absolute addresses;
slot fields use an offset inside a per-slot block (``slots.base`` + (slot − 1) × ``slots.stride``).
A vendor's own bit layouts (``bits:``) and registers Cascade has no field for (``extra:``) are data
too, so a new vendor needs only a new profile. Reference: ``docs/profiles.md`` (generated from the
schema below by ``python -m collectors.modbus.mapdoc --reference``); maps: ``docs/register-map*.md``.

The schema is pydantic models on :mod:`core.validation` (types, ranges, unknown keys, each key's
fix as its description); what depends on several keys (a slot field inside its stride, registers
used twice) is checked after, with the same file / key / fix errors.

    >>> profile = load_profile("profiles/reference-cabinet.yaml")
    >>> profile.model
    'reference-cabinet'
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BeforeValidator, field_validator

from core.errors import InputError
from core.model import (
    CABINET_FIELDS,
    SLOT_FIELDS,
    BmsProtection,
    CabinetReading,
    ChargerProtection,
    EmergencyState,
    SlotReading,
)
from core.validation import Bool, Field, Float, Int, Model, validate

from .codec import FLOAT_TYPES, WORD_ORDERS, WORDS, wire_words

__all__ = [
    "BITFIELDS",
    "CommandSpec",
    "DATA_TYPES",
    "FieldSpec",
    "Profile",
    "ProfileDoc",
    "ProfileError",
    "PROFILE_DIR",
    "REGISTER_TYPES",
    "find_profile",
    "load_profile",
    "unmapped_field",
]

PROFILE_DIR = Path(__file__).resolve().parents[2] / "profiles"

#: Register types and whether they hold 1-bit values.
REGISTER_TYPES = {"holding": False, "input": False, "coil": True, "discrete": True}
#: Every data type a field may have.
DATA_TYPES = (*WORDS, "string")


def _flag_bits(flags: type[enum.IntFlag]) -> dict[str, int]:
    return {member.name: int(member).bit_length() - 1 for member in flags if member.name}


#: Fields whose value is a set of flags, and Cascade's layout of each: flag name → bit number.
#: A profile's ``bits:`` map names these flags for the vendor's bit numbers.
BITFIELDS: dict[str, dict[str, int]] = {
    "bms_protection": _flag_bits(BmsProtection),
    "charger_protection": _flag_bits(ChargerProtection),
    "emergency_state": _flag_bits(EmergencyState),
    "distribution_state": {"MAINS_PRESENT": 0, "BREAKER_CLOSED": 1},  # core.model: bit 0 mains, bit 1 breaker
    # A vendor code without names in Cascade: the map chooses which vendor bits count as a device fault.
    "device_fault_code": {f"BIT{n}": n for n in range(32)},
}
#: Where each bitfield's layout is defined, for messages and docs.
BITFIELD_SOURCES = {"bms_protection": "core.model.BmsProtection", "charger_protection": "core.model.ChargerProtection",
                    "emergency_state": "core.model.EmergencyState",
                    "distribution_state": "core.model.CabinetReading.distribution_state",
                    "device_fault_code": "a vendor code, bits BIT0..BIT31"}


def unmapped_field(name: str) -> str:
    """The reading attribute that keeps the vendor bits a ``bits:`` map does not name."""
    return f"{name}_unmapped"


_READING_NAMES = frozenset(f.name for cls in (SlotReading, CabinetReading) for f in dataclasses.fields(cls))
_EXTRA_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class ProfileError(InputError):
    """A profile that cannot be used; the message names the file, the key and the fix."""


# -- the validated result --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Where and how one model field (or one ``extra`` register) is stored in the cabinet's registers.

    Everything the decoder needs per poll is derived here, once: register count, the ``missing``
    sentinel as wire words, word/byte swaps, the bit translation of a ``bits`` map.
    """

    field: str  # model field name, or the extra's name when ``extra``
    register_type: str
    address: int  # absolute for cabinet fields, offset inside the slot block for slot fields
    data_type: str
    scale: float = 1.0
    offset_value: float = 0.0
    unit: str = ""
    word_order: str = "ABCD"  # as the profile names it (ABCD, CDAB, BADC, DCBA, big, little, ...)
    length: int = 0  # registers, for strings only
    valid: tuple[float, float] | None = None
    missing: int | None = None  # raw value meaning "sensor not fitted / no reading"
    bit: int | None = None  # data_type "bit": the bit of the register, 0 = least significant
    bits: tuple[tuple[int, str], ...] | None = None  # vendor bit → Cascade flag name (BITFIELDS)
    extra: bool = False  # a vendor register with no Cascade field: decoded into ``reading.extra``
    description: str = ""
    words: int = dataclasses.field(init=False)
    missing_words: tuple[int, ...] = dataclasses.field(init=False)
    decimals: int = dataclasses.field(init=False)
    swap_words: bool = dataclasses.field(init=False)
    swap_bytes: bool = dataclasses.field(init=False)
    translate: tuple[tuple[int, int], ...] = dataclasses.field(init=False)  # (vendor bit mask, Cascade bit mask)
    encode_pairs: tuple[tuple[int, int], ...] = dataclasses.field(init=False)  # (Cascade mask, first vendor mask)
    mapped_mask: int = dataclasses.field(init=False)  # vendor bits the map names
    value_kind: type = dataclasses.field(init=False)  # what the decoded value is: bool, int, float or str

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        words = self.length if self.data_type == "string" else WORDS[self.data_type]
        set_(self, "words", words)
        try:
            swap_words, swap_bytes = WORD_ORDERS[self.word_order]
        except KeyError:
            raise ValueError(f"{self.field}: word order {self.word_order!r} is not one of {sorted(WORD_ORDERS)}") \
                from None
        set_(self, "swap_words", swap_words)
        set_(self, "swap_bytes", swap_bytes)
        missing_words: tuple[int, ...] = ()
        if self.missing is not None and self.data_type not in ("string", "bool", "bit"):
            raw = self.missing & ((1 << (16 * words)) - 1)
            big = [(raw >> (16 * (words - 1 - i))) & 0xFFFF for i in range(words)]
            missing_words = tuple(wire_words(big, swap_words, swap_bytes))
        set_(self, "missing_words", missing_words)
        decimals = max(0, len(f"{self.scale:.10f}".rstrip("0").split(".")[1])) if self.scale != 1 else 0
        set_(self, "decimals", decimals + 2)
        translate: list[tuple[int, int]] = []
        if self.bits is not None:
            layout = BITFIELDS.get(self.field)
            if layout is None:
                raise ValueError(f"{self.field}: not a bitfield, cannot have a bits map ({sorted(BITFIELDS)})")
            translate = sorted((1 << vendor, 1 << layout[name]) for vendor, name in self.bits)
        set_(self, "translate", tuple(translate))
        first: dict[int, int] = {}
        for vendor_mask, cascade_mask in translate:
            first.setdefault(cascade_mask, vendor_mask)
        set_(self, "encode_pairs", tuple(sorted(first.items())))
        mapped = 0
        for vendor_mask, _ in translate:
            mapped |= vendor_mask
        set_(self, "mapped_mask", mapped)
        kind: type
        if self.data_type in ("bool", "bit"):
            kind = bool
        elif self.data_type == "string":
            kind = str
        elif self.data_type in FLOAT_TYPES:
            kind = float
        else:
            integral = float(self.scale).is_integer() and float(self.offset_value).is_integer()
            kind = int if self.bits is not None or integral else float
        set_(self, "value_kind", kind)


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
    cabinet_extras: tuple[FieldSpec, ...] = ()  # vendor registers without a Cascade field, cabinet-wide
    slot_extras: tuple[FieldSpec, ...] = ()  # ... and in every slot's block
    word_order: str = "ABCD"  # the profile's default

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


# -- the schema (docs/profiles.md is generated from these models) ----------------------------------

RegisterName = Literal["holding", "input", "coil", "discrete"]
DataTypeName = Literal["u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "bool", "bit", "string"]


def _order_name(value: Any) -> Any:
    # Vendors print "cdab" and "CDAB" alike; Cascade's older names are lower case.
    if isinstance(value, str):
        text = value.strip()
        return text.lower() if text.lower() in ("big", "little") else text.upper()
    return value


WordOrderName = Annotated[
    Literal["ABCD", "CDAB", "BADC", "DCBA", "big", "little", "ABCDEFGH", "GHEFCDAB", "BADCFEHG", "HGFEDCBA"],
    BeforeValidator(_order_name),
]
Address = Annotated[Int, Field(ge=0, le=0xFFFF)]
Stride = Annotated[Int, Field(ge=1, le=0xFFFF)]

_ORDER_FIX = ("ABCD (big-endian, the default), CDAB (words swapped; alias little), BADC (bytes swapped in "
              "each register) or DCBA (both); see 'Word and byte order'")


# A profile's key is `register`; pydantic warns that it shadows BaseModel's ABCMeta.register, which
# nothing calls on these models. Only that message, only for the models that declare it.
warnings.filterwarnings("ignore", message=r'Field name "register" in "(CabinetFieldEntry|SlotFieldEntry|ExtraEntry|'
                                          r'CommandEntry)" shadows', category=UserWarning)


def _ex(example: str) -> dict[str, Any]:
    return {"example": example}


def _register() -> Any:
    # Declared in each entry class, never inherited: pydantic would take an inherited `register` for
    # BaseModel's ABCMeta.register method, a default, and stop requiring the key.
    return Field(description="the Modbus table: holding (function 3), input (4), coil (1) or discrete (2)",
                 json_schema_extra=_ex("register: input"))


class _RegisterEntry(Model):
    """Keys shared by fields and extras: how to read the value (where: in each entry class)."""

    type: DataTypeName | None = Field(
        None, description="the data type: u16, i16, u32, i32, u64, i64, f32, f64, bool, bit or string "
                          "(default bool on coil/discrete registers, required on holding/input)",
        json_schema_extra=_ex("type: u32"))
    bit: Int | None = Field(
        None, ge=0, le=15, description="for type: bit, the bit of the register, 0 (least significant) to 15",
        json_schema_extra=_ex("{field: door_open, register: input, address: 9, type: bit, bit: 0}"))
    length: Int | None = Field(
        None, ge=1, le=64, description="for type: string, its length in registers, 1..64 (2 characters each)",
        json_schema_extra=_ex("{field: battery_id, register: holding, offset: 0, type: string, length: 10}"))
    scale: Float = Field(
        1.0, description="a non-zero number the raw value is multiplied by, e.g. scale: 0.1 for tenths",
        json_schema_extra=_ex("scale: 0.1"))
    offset_value: Float = Field(
        0.0, description="a number added after scaling: value = raw × scale + offset_value, e.g. -40",
        json_schema_extra=_ex("offset_value: -40"))
    unit: str = Field("", description="the unit of the value after scaling (documentation only), e.g. unit: V",
                      json_schema_extra=_ex("unit: degC"))
    word_order: WordOrderName | None = Field(
        None, description=f"this field's byte and word order, overriding the profile's: {_ORDER_FIX}",
        json_schema_extra=_ex("word_order: CDAB"))
    valid: tuple[Float, Float] | None = Field(
        None, description="the range a real reading can have, [min, max] after scaling, e.g. valid: [-40, 150]",
        json_schema_extra=_ex("valid: [-40, 150]"))
    missing: Int | None = Field(
        None, description="the raw register value meaning 'no sensor / no reading' (an integer pattern, also for "
                          "floats), e.g. missing: 0x7FFF",
        json_schema_extra=_ex("missing: 0x7FFF"))
    description: str = Field("", description="free text for people reading the profile",
                             json_schema_extra=_ex("description: pack temperature, NTC 1"))


class _FieldEntry(_RegisterEntry):
    bits: dict[Int, str] | None = Field(
        None, description=("for a bitfield (bms_protection, charger_protection, emergency_state, distribution_state, "
                           "device_fault_code): the vendor's bit number → Cascade's flag name, e.g. "
                           "{0: OVER_VOLTAGE, 4: HIGH_TEMPERATURE}"),
        json_schema_extra=_ex("bits: {0: OVER_VOLTAGE, 1: UNDER_VOLTAGE, 4: HIGH_TEMPERATURE}"))

    _allowed: ClassVar[frozenset[str]] = frozenset()

    @field_validator("field", check_fields=False)
    @classmethod
    def _known_field(cls, value: str) -> str:
        if value not in cls._allowed:
            raise ValueError(f"{value!r} is not a known field. Fix: use one of: {', '.join(sorted(cls._allowed))}")
        return value


class CabinetFieldEntry(_FieldEntry):
    """One cabinet-wide field (``cabinet:`` list)."""

    field: str = Field(description="a cabinet field of core.model (CabinetReading), e.g. field: input_voltage_v",
                       json_schema_extra=_ex("field: cabinet_temperature_c"))
    register: RegisterName = _register()
    address: Address = Field(description="the register number, 0..65535 (as the vendor's map numbers it, "
                                         "from 0)", json_schema_extra=_ex("address: 9"))

    _allowed: ClassVar[frozenset[str]] = CABINET_FIELDS


class SlotFieldEntry(_FieldEntry):
    """One per-slot field (``slot:`` list)."""

    field: str = Field(description="a slot field of core.model (SlotReading), e.g. field: voltage_v",
                       json_schema_extra=_ex("field: voltage_v"))
    register: RegisterName = _register()
    offset: Address = Field(description="the register inside each slot's block, from 0; below slots.stride",
                            json_schema_extra=_ex("offset: 4"))

    _allowed: ClassVar[frozenset[str]] = SLOT_FIELDS


class ExtraEntry(_RegisterEntry):
    """One vendor register Cascade has no field for (``extra:`` list), kept under its name."""

    name: str = Field(description="a new name: lower case letters, digits and _, starting with a letter, not "
                                  "a Cascade field's name, e.g. fan_speed_rpm (stored as extra_fan_speed_rpm)",
                      json_schema_extra=_ex("name: fan_speed_rpm"))
    register: RegisterName = _register()
    address: Address | None = Field(None, description="a cabinet-wide register, 0..65535 (give address or offset)",
                                    json_schema_extra=_ex("address: 24"))
    offset: Address | None = Field(None, description="a register in every slot's block (give address or offset)",
                                   json_schema_extra=_ex("offset: 22"))

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _EXTRA_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a name. Fix: lower case letters, digits and _, starting with a "
                             "letter, at most 64, e.g. fan_speed_rpm")
        return value


class SlotsSection(Model):
    """The per-slot register blocks: slot n of a register type starts at base + (n − 1) × stride."""

    count: Int = Field(ge=1, le=256, description="how many slots the cabinet model has, 1..256, e.g. 12",
                       json_schema_extra=_ex("count: 12"))
    base: dict[RegisterName, Address] = Field(
        description="where slot 1's block starts, per register type used by slot fields, e.g. {input: 1000}",
        json_schema_extra=_ex("base: {input: 1000, holding: 5000, coil: 100}"))
    stride: Stride | dict[RegisterName, Stride] = Field(
        description="registers from one slot's block to the next: one number, or one per register type in base",
        json_schema_extra=_ex("stride: {input: 32, holding: 32, coil: 4}"))


class CommandEntry(Model):
    """A writable coil or holding register for protective actions (``commands:``)."""

    register: Literal["coil", "holding"] = Field(description="coil or holding: the writable tables",
                                                 json_schema_extra=_ex("register: coil"))
    per_slot: Bool = Field(False, description="true for one register per slot (then give offset), false for "
                                              "one for the cabinet (then give address)",
                           json_schema_extra=_ex("per_slot: true"))
    offset: Address | None = Field(None, description="with per_slot: true, the register in each slot's block",
                                   json_schema_extra=_ex("offset: 0"))
    address: Address | None = Field(None, description="with per_slot: false, the register number",
                                    json_schema_extra=_ex("address: 300"))
    description: str = Field("", description="what writing 0 and 1 does, for people and the register map",
                             json_schema_extra=_ex("description: Slot output relay. 0 cuts the slot off."))


class ProfileDoc(Model):
    """A cabinet register profile, one YAML file per cabinet model."""

    model: str = Field(min_length=1, description="name the cabinet model, e.g. model: acme-s12 (the name "
                                                 "configs use: profile: acme-s12)",
                       json_schema_extra=_ex("model: acme-s12"))
    vendor: str = Field("", description="who makes the cabinet (documentation only)",
                        json_schema_extra=_ex("vendor: Acme Swap Systems"))
    description: str = Field("", description="one line on the model and its map (documentation only)",
                             json_schema_extra=_ex("description: 12-slot cabinet, input registers, CDAB floats"))
    word_order: WordOrderName = Field("ABCD", description=f"the default byte and word order of every field: {_ORDER_FIX}",
                                      json_schema_extra=_ex("word_order: CDAB"))
    max_gap: Int = Field(16, ge=0, le=124, description="unused registers one read may bridge, 0..124: raise it only "
                                                       "for a device that answers unmapped registers",
                         json_schema_extra=_ex("max_gap: 4"))
    slots: SlotsSection = Field(description="describe the per-slot block: count, base, stride")
    cabinet: list[CabinetFieldEntry] | None = Field(
        None, description="a list of cabinet fields: [{field: ..., register: ..., address: ..., type: ...}, ...]",
        json_schema_extra=_ex("cabinet: [{field: input_voltage_v, register: input, address: 0, type: u16, "
                              "scale: 0.1, unit: V}]"))
    slot: list[SlotFieldEntry] = Field(
        description="list the per-slot fields: [{field: ..., register: ..., offset: ..., type: ...}, ...]",
        json_schema_extra=_ex("slot: [{field: soc_pct, register: input, offset: 2, type: u16, unit: '%'}]"))
    extra: list[ExtraEntry] | None = Field(
        None, description="a list of vendor registers without a Cascade field: [{name: ..., register: ..., "
                          "address: ... (or offset: ...), type: ...}, ...]",
        json_schema_extra=_ex("extra: [{name: fan_speed_rpm, register: input, address: 24, type: u16, unit: rpm}]"))
    commands: dict[str, CommandEntry] | None = Field(
        None, description="a mapping of command names, e.g. commands: {slot_output: {register: coil, per_slot: "
                          "true, offset: 0}}",
        json_schema_extra=_ex("commands: {slot_output: {register: coil, per_slot: true, offset: 0}}"))


# -- loading ---------------------------------------------------------------------------------------

_ENTRY_KEY = re.compile(r"(cabinet|slot|extra)\[(\d+)\](.*)")


def _with_entry_name(err: ProfileError, doc: Mapping[Any, Any]) -> ProfileError:
    """``slot[0](voltage_v).type`` for ``slot[0].type``: the entry named by its field, as the
    semantic checks below name it (not for an unknown key or the name key itself)."""
    match = _ENTRY_KEY.fullmatch(err.key or "")
    if match is None:
        return err
    section, index, rest = match.groups()
    if err.problem == "unknown key":
        # The one mix-up every new profile makes: slot fields sit at an offset, cabinet ones at an address.
        hint = {"slot": ("address", "use offset: a slot field sits at an offset inside each slot's block"),
                "cabinet": ("offset", "use address: a cabinet field sits at an absolute register number")}.get(section)
        if hint is not None and difflib.get_close_matches(rest.lstrip("."), [hint[0]], n=1, cutoff=0.75):
            return ProfileError(err.source or "", err.key or "", err.problem, hint[1])
        return err
    name_key = "name" if section == "extra" else "field"
    entries = doc.get(section)
    if rest == f".{name_key}" or not isinstance(entries, list) or int(index) >= len(entries):
        return err
    entry = entries[int(index)]
    name = entry.get(name_key) if isinstance(entry, dict) else None
    allowed = CABINET_FIELDS if section == "cabinet" else SLOT_FIELDS
    if not isinstance(name, str) or not (name in allowed if section != "extra" else _EXTRA_NAME.fullmatch(name)):
        return err
    return ProfileError(err.source or "", f"{section}[{index}]({name}){rest}", err.problem, err.fix or "")


def _spec(entry: CabinetFieldEntry | SlotFieldEntry | ExtraEntry, name: str, address: int, where: str, default_order: str, source: Path,
          *, extra: bool = False) -> FieldSpec:
    """A :class:`FieldSpec` from a validated entry, after the checks that involve several keys."""
    register = entry.register
    given = entry.model_fields_set
    data_type = entry.type
    if data_type is None:
        if not REGISTER_TYPES[register]:
            raise ProfileError(source, f"{where}.type", "missing",
                               f"give the data type of a {register} register, one of {list(DATA_TYPES)}")
        data_type = "bool"
    if REGISTER_TYPES[register] and data_type != "bool":
        raise ProfileError(source, f"{where}.type", f"{register} registers hold single bits",
                           "use type: bool, or move the field to a holding/input register")
    if data_type == "bit" and entry.bit is None:
        raise ProfileError(source, f"{where}.bit", "missing",
                           "give the bit of the register, 0 (least significant) to 15, e.g. bit: 5")
    if data_type != "bit" and entry.bit is not None:
        raise ProfileError(source, f"{where}.bit", f"only a type: bit field has a bit number (this is {data_type})",
                           "remove bit, or use type: bit")
    if data_type == "string" and entry.length is None:
        raise ProfileError(source, f"{where}.length", "missing",
                           "give strings a length of 1..64 registers (2 characters each)")
    if data_type != "string" and entry.length is not None:
        raise ProfileError(source, f"{where}.length", f"only strings have a length ({data_type} has a fixed size)",
                           "remove length")
    if entry.scale == 0:
        raise ProfileError(source, f"{where}.scale", "0 is not a non-zero number", "e.g. scale: 0.1")
    if data_type in ("bool", "bit", "string"):
        for key in ("scale", "offset_value", "valid", "missing"):
            if key in given:
                raise ProfileError(source, f"{where}.{key}", f"a {data_type} field has no {key}",
                                   f"remove {key} (it applies to numbers only)")
    if entry.valid is not None and entry.valid[0] > entry.valid[1]:
        raise ProfileError(source, f"{where}.valid", f"{list(entry.valid)!r} is not [min, max]",
                           "e.g. valid: [-40, 150]")
    words = (entry.length or 0) if data_type == "string" else WORDS[data_type]
    if entry.missing is not None and not -(1 << (16 * words - 1)) <= entry.missing < (1 << (16 * words)):
        raise ProfileError(source, f"{where}.missing", f"{entry.missing:#x} does not fit {words} register(s)",
                           f"give the raw {data_type} pattern the device sends, e.g. missing: 0x{'F' * 4 * words}")
    bits: tuple[tuple[int, str], ...] | None = None
    raw_bits = getattr(entry, "bits", None)
    if raw_bits is not None:
        layout = BITFIELDS.get(name)
        if layout is None:
            raise ProfileError(source, f"{where}.bits", f"{name} is not a bitfield",
                               f"use bits only on {', '.join(sorted(BITFIELDS))}")
        if data_type not in ("u16", "u32", "u64"):
            raise ProfileError(source, f"{where}.bits", f"a bits map reads an unsigned word, not {data_type}",
                               "declare the register as u16 (u32/u64 for wider words)")
        for key in ("scale", "offset_value", "valid"):
            if key in given:
                raise ProfileError(source, f"{where}.{key}", f"a field with a bits map has no {key}",
                                   f"remove {key}: the bits map alone gives the value")
        pairs = []
        for vendor_bit, flag in sorted(raw_bits.items()):
            if not 0 <= vendor_bit < 16 * words:
                raise ProfileError(source, f"{where}.bits.{vendor_bit}", f"bit {vendor_bit} is not in a {data_type}",
                                   f"use bit numbers 0..{16 * words - 1} (0 = least significant)")
            if flag.strip().upper() not in layout:
                raise ProfileError(source, f"{where}.bits.{vendor_bit}",
                                   f"{flag!r} is not a flag of {BITFIELD_SOURCES[name]}",
                                   f"use one of {', '.join(sorted(layout, key=layout.__getitem__))}")
            pairs.append((vendor_bit, flag.strip().upper()))
        bits = tuple(pairs)
    order = entry.word_order or default_order
    return FieldSpec(name, register, address, data_type, float(entry.scale), float(entry.offset_value), entry.unit,
                     order, entry.length or 0, entry.valid, entry.missing, bit=entry.bit, bits=bits, extra=extra,
                     description=entry.description)


def _check_overlaps(specs: Sequence[tuple[str, FieldSpec]], source: Path) -> None:
    """No register read by two fields, except bits of one register (each bit once)."""
    taken: dict[tuple[str, int], tuple[str, FieldSpec]] = {}
    bits: dict[tuple[str, int, int], str] = {}
    for label, spec in specs:
        for word in range(spec.words):
            key = (spec.register_type, spec.address + word)
            other = taken.get(key)
            if spec.data_type == "bit" and (other is None or other[1].data_type == "bit"):
                bit_key = (*key, spec.bit or 0)
                if bit_key in bits:
                    raise ProfileError(source, label, f"bit {spec.bit} of {spec.register_type} register "
                                                      f"{spec.address} is already used by {bits[bit_key]}",
                                       "give each field its own bit")
                bits[bit_key] = spec.field
                taken.setdefault(key, (label, spec))
                continue
            if other is not None:
                raise ProfileError(source, label, f"{spec.register_type} register {spec.address + word} is already "
                                                  f"used by {other[1].field}", "give each field its own registers")
            taken[key] = (label, spec)


def _check_in_slot_block(spec: FieldSpec, where: str, source: Path, count: int, base: Mapping[str, int],
                         stride: Mapping[str, int], address_key: str) -> None:
    if spec.register_type in base:
        last = spec.address + base[spec.register_type] + (count - 1) * stride[spec.register_type] + spec.words
        if last > 0x10000:
            raise ProfileError(source, where, f"slot {count} would need register {last - 1}, beyond 65535",
                               "lower slots.base or slots.stride, or slots.count")
    if spec.register_type not in base:
        raise ProfileError(source, f"{where}.register", f"no slots.base for {spec.register_type}",
                           f"add slots.base.{spec.register_type}")
    if spec.address + spec.words > stride[spec.register_type]:
        raise ProfileError(source, f"{where}.{address_key}",
                           f"offset {spec.address} runs past the slot stride {stride[spec.register_type]}",
                           "increase slots.stride or move the field")


def _read(source: Path) -> Any:
    try:
        return yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as err:
        raise ProfileError(source, "(file)", f"cannot read: {err.strerror}", "check the path") from err
    except (yaml.YAMLError, ValueError) as err:  # ValueError: e.g. a timestamp YAML cannot represent
        raise ProfileError(source, "(file)", f"not valid YAML: {err}", "fix the YAML syntax") from err


def load_profile(path: str | Path) -> Profile:
    """Load and validate a profile file; raise :class:`ProfileError` naming file, key and fix."""
    source = Path(path)
    doc = _read(source)
    if not isinstance(doc, dict):
        raise ProfileError(source, "(top level)", "expected a mapping", "see profiles/reference-cabinet.yaml")
    try:
        parsed = validate(ProfileDoc, doc, source, error=ProfileError)
    except ProfileError as err:
        raise _with_entry_name(err, doc) from None
    return _build(parsed, source)


def _build(doc: ProfileDoc, source: Path) -> Profile:
    count = doc.slots.count
    base: dict[str, int] = {str(kind): start for kind, start in doc.slots.base.items()}
    given = doc.slots.stride
    stride: dict[str, int] = {str(k): v for k, v in given.items()} if isinstance(given, dict) else \
        {k: given for k in base}
    for kind in base:
        if kind not in stride:
            raise ProfileError(source, f"slots.stride.{kind}", "missing or not a positive integer",
                               "give a stride for every register type in slots.base")
    order = doc.word_order

    cabinet_fields = [_spec(e, e.field, e.address, f"cabinet[{i}]({e.field})", order, source)
                      for i, e in enumerate(doc.cabinet or [])]
    slot_fields = [_spec(e, e.field, e.offset, f"slot[{i}]({e.field})", order, source)
                   for i, e in enumerate(doc.slot)]
    for i, spec in enumerate(slot_fields):
        _check_in_slot_block(spec, f"slot[{i}]({spec.field})", source, count, base, stride, "offset")

    cabinet_extras: list[tuple[str, FieldSpec]] = []
    slot_extras: list[tuple[str, FieldSpec]] = []
    seen: set[str] = set()
    for i, e in enumerate(doc.extra or []):
        where = f"extra[{i}]({e.name})"
        if e.name in _READING_NAMES:
            raise ProfileError(source, f"extra[{i}].name", f"{e.name!r} is a Cascade field",
                               f"map it as a field under cabinet: or slot: (field: {e.name}), or rename the extra")
        if e.name in seen:
            raise ProfileError(source, f"extra[{i}].name", f"{e.name!r} is listed twice", "give each extra its own name")
        seen.add(e.name)
        if (e.address is None) == (e.offset is None):
            raise ProfileError(source, where, "give address (a cabinet-wide register) or offset (a register in "
                                              "every slot's block)" + (", not both" if e.address is not None else ""),
                               "e.g. {name: fan_speed_rpm, register: input, address: 24, type: u16}")
        if e.address is not None:
            cabinet_extras.append((where, _spec(e, e.name, e.address, where, order, source, extra=True)))
        else:
            spec = _spec(e, e.name, e.offset or 0, where, order, source, extra=True)
            _check_in_slot_block(spec, where, source, count, base, stride, "offset")
            slot_extras.append((where, spec))

    for section, specs in (("cabinet", cabinet_fields), ("slot", slot_fields)):
        names = [s.field for s in specs]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ProfileError(source, section, f"fields listed twice: {sorted(dupes)}", "list each field once")
    _check_overlaps([(f"cabinet({s.field})", s) for s in cabinet_fields] + cabinet_extras, source)
    _check_overlaps([(f"slot({s.field})", s) for s in slot_fields] + slot_extras, source)

    commands: dict[str, CommandSpec] = {}
    for name, entry in (doc.commands or {}).items():
        where = f"commands.{name}"
        register = entry.register
        per_slot = entry.per_slot
        key, other = ("offset", "address") if per_slot else ("address", "offset")
        address = entry.offset if per_slot else entry.address
        if address is None:
            raise ProfileError(source, f"{where}.{key}", "missing",
                               "a register number (offset in the slot block when per_slot)")
        if (entry.address if per_slot else entry.offset) is not None:
            raise ProfileError(source, f"{where}.{other}", f"a command with per_slot: {str(per_slot).lower()} "
                                                           f"has no {other}", f"give {key} only")
        if per_slot and register not in base:
            raise ProfileError(source, f"{where}.register", f"no slots.base for {register}",
                               f"add slots.base.{register}")
        if per_slot and address + base[register] + (count - 1) * stride[register] > 0xFFFF:
            raise ProfileError(source, where, f"address {address} falls outside 0..65535 for some slot",
                               "use a register number that fits every slot")
        commands[name] = CommandSpec(name, register, address, per_slot, entry.description)

    return Profile(model=doc.model, vendor=doc.vendor, description=doc.description, source=str(source),
                   slot_count=count, slot_base=base, slot_stride=stride, cabinet_fields=tuple(cabinet_fields),
                   slot_fields=tuple(slot_fields), commands=commands, max_gap=doc.max_gap,
                   cabinet_extras=tuple(s for _, s in cabinet_extras), slot_extras=tuple(s for _, s in slot_extras),
                   word_order=order)


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
