"""Render profiles as Markdown: ``python -m collectors.modbus.mapdoc PROFILE`` (a register map) and
``python -m collectors.modbus.mapdoc --reference`` (the profile format, ``docs/profiles.md``).

``docs/register-map*.md`` are generated from ``profiles/*.yaml`` and ``docs/profiles.md`` from the
schema models in :mod:`collectors.modbus.profile`; tests check that the committed files equal the
output, so the documents cannot drift from the maps and the schema.
"""

from __future__ import annotations

import sys
import tempfile
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from core.model import CABINET_FIELDS, SLOT_FIELDS

from .codec import WORD_ORDERS, WORDS, encode_value
from .planner import minimum_reads, plan_reads
from .profile import (
    BITFIELD_SOURCES,
    BITFIELDS,
    PROFILE_DIR,
    CabinetFieldEntry,
    CommandEntry,
    ExtraEntry,
    FieldSpec,
    Profile,
    ProfileDoc,
    ProfileError,
    SlotFieldEntry,
    SlotsSection,
    find_profile,
    unmapped_field,
)

__all__ = ["render_profile_reference", "render_register_map"]

_FUNCTION = {"holding": "3 (read holding)", "input": "4 (read input)", "coil": "1 (read coils)",
             "discrete": "2 (read discrete inputs)"}


# -- register maps ---------------------------------------------------------------------------------


def _row(spec: FieldSpec, address: str) -> str:
    if spec.data_type == "string":
        kind = f"string[{spec.length}]"
    elif spec.data_type == "bit":
        kind = f"bit {spec.bit}"
    else:
        kind = spec.data_type
    valid = f"{spec.valid[0]:g} … {spec.valid[1]:g}" if spec.valid else ""
    missing = f"0x{spec.missing:X}" if spec.missing is not None else ""
    # Word order matters for more than one register, byte order for any number or bit.
    ordered = spec.data_type not in ("string", "bool") and (spec.words > 1 or spec.swap_bytes)
    order = spec.word_order if ordered else ""
    scale = f"{spec.scale:g}" if spec.scale != 1 else ""
    offset = f" {spec.offset_value:+g}" if spec.offset_value else ""
    name = f"`{spec.field}`" + (" (bits map)" if spec.bits is not None else "")
    return (f"| {address} | {spec.register_type} | {name} | {kind} | {order} | {scale}{offset} | {spec.unit} | "
            f"{valid} | {missing} |")


def _sorted(specs: Sequence[FieldSpec]) -> list[FieldSpec]:
    return sorted(specs, key=lambda s: (s.register_type, s.address, s.bit or 0))


def _bit_sections(profile: Profile) -> list[str]:
    specs = [s for s in (*profile.cabinet_fields, *profile.slot_fields) if s.field in BITFIELDS]
    if not specs:
        return []
    lines = ["", "## Bitfields", ""]
    for spec in specs:
        source = BITFIELD_SOURCES[spec.field]
        if spec.bits is None:
            lines += [f"- `{spec.field}`: Cascade layout ({source}): the vendor's bit *n* is Cascade's bit *n*."]
            continue
        lines += [f"- `{spec.field}`: the vendor's own layout, translated to {source}. Vendor bits not listed "
                  f"get no Cascade meaning: they are kept, at the vendor's positions, in `{unmapped_field(spec.field)}`.",
                  "", "  | vendor bit | Cascade flag | Cascade bit |", "  |---|---|---|"]
        layout = BITFIELDS[spec.field]
        lines += [f"  | {bit} | `{name}` | {layout[name]} |" for bit, name in spec.bits]
        lines.append("")
    if lines[-1] == "":
        lines.pop()
    return lines


def _extra_sections(profile: Profile, head: str) -> list[str]:
    if not profile.cabinet_extras and not profile.slot_extras:
        return []
    lines = ["", "## Extra registers", "",
             "Vendor registers Cascade has no field for, decoded like fields and kept in the reading's `extra` "
             "(cabinet) or the slot's `extra`, by name (stored as `extra_<name>`).", ""]
    if profile.cabinet_extras:
        lines += ["Cabinet-wide:", "", head.replace("| field |", "| extra |")]
        lines += [_row(s, str(s.address)) for s in _sorted(profile.cabinet_extras)]
        lines.append("")
    if profile.slot_extras:
        lines += ["Per slot:", "", head.replace("| address |", "| offset |").replace("| field |", "| extra |")]
        lines += [_row(s, f"+{s.address}") for s in _sorted(profile.slot_extras)]
        lines.append("")
    lines.pop()
    return lines


def render_register_map(profile: Profile) -> str:
    """The profile as a Markdown document, register by register."""
    head = "| address | register | field | type | word order | scale | unit | valid range | missing |\n" \
           "|---|---|---|---|---|---|---|---|---|"
    source = Path(profile.source).resolve()
    shown = source.relative_to(PROFILE_DIR.parent) if source.is_relative_to(PROFILE_DIR.parent) else source.name
    swaps = WORD_ORDERS[profile.word_order]
    order = {(False, False): "most significant register first (ABCD)",
             (True, False): "least significant register first (CDAB)",
             (False, True): "bytes swapped in each register (BADC)",
             (True, True): "least significant register first, bytes swapped (DCBA)"}[swaps]
    lines = [f"# Register map: `{profile.model}`", "",
             f"Generated from `{shown}` by `python -m collectors.modbus.mapdoc {profile.model}`; "
             "do not edit by hand. The profile format: [profiles.md](profiles.md).", "",
             f"{profile.description}", "",
             f"Vendor: {profile.vendor}. Slots: {profile.slot_count}. Default gap fill: {profile.max_gap} registers.",
             f"Default word order: `{profile.word_order}`, {order}. `scale` multiplies the raw value (a signed",
             "number after the scale is the `offset_value` added to it); `missing` is the raw value meaning \"sensor",
             "not fitted / no reading\" (stored as no value, not as zero). A plausible value outside `valid range` is a sensor at its",
             "limit: kept as the limit and listed in `over_range`; an error pattern there (all ones, the signed",
             "extremes), NaN or a denormal float is rejected, counted in `cascade_decode_errors_total` and not stored.",
             "", "## Cabinet registers", "", head]
    lines += [_row(s, str(s.address)) for s in _sorted(profile.cabinet_fields)]
    lines += ["", "## Slot registers", "",
              "Slot *n* (1-based) of each register type starts at `base + (n - 1) × stride`:", ""]
    lines += [f"- {kind}: base {profile.slot_base[kind]}, stride {profile.slot_stride[kind]} "
              f"(slot 1 at {profile.slot_base[kind]}, slot 2 at {profile.slot_base[kind] + profile.slot_stride[kind]})"
              for kind in sorted(profile.slot_base)]
    lines += ["", head.replace("| address |", "| offset |")]
    lines += [_row(s, f"+{s.address}") for s in _sorted(profile.slot_fields)]
    lines += _bit_sections(profile)
    lines += _extra_sections(profile, head)
    lines += ["", "## Commands", "", "| command | register | address | description |", "|---|---|---|---|"]
    for cmd in profile.commands.values():
        where = f"slot block +{cmd.address}" if cmd.per_slot else str(cmd.address)
        lines.append(f"| `{cmd.name}` | {cmd.register_type} | {where} | {cmd.description} |")
    if not profile.commands:
        lines.append("| (none) | | | this cabinet is read only: no protective action can be performed |")
    lines += ["", "Every command is written, then read back; the result is logged with who asked (see docs/schema.md,",
              "measurement `command`).", "", "## Read plan", "",
              f"With {profile.slot_count} slots the collector sends {len(plan_reads(profile))} reads per poll "
              f"(theoretical minimum {minimum_reads(profile)}):", "",
              "| function | start | count |", "|---|---|---|"]
    lines += [f"| {_FUNCTION[r.register_type]} | {r.address} | {r.count} |" for r in plan_reads(profile)]
    return "\n".join(lines) + "\n"


# -- the profile reference -------------------------------------------------------------------------

_SCALARS = {int: "integer", float: "number", str: "text", bool: "true/false"}


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return "text"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is tuple:
        return f"[{', '.join(_type_name(a) for a in args)}]"
    if origin is dict:
        return f"mapping {_type_name(args[0])} → {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping (below)"
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _literals(annotation: Any) -> list[str]:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    found: list[str] = []
    for arg in typing.get_args(annotation):
        for name in _literals(arg):
            if name not in found:
                found.append(name)
    return found


def _bounds(info: FieldInfo) -> str:
    lo = hi = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            lo = item.ge
        elif isinstance(item, annotated_types.Le):
            hi = item.le
        elif isinstance(item, annotated_types.MinLen) and item.min_length == 1:
            return "not empty"
    if lo is None and info.annotation is not None:  # bounds inside Annotated[...] members (Address)
        for arg in typing.get_args(info.annotation):
            for item in getattr(arg, "__metadata__", ()):
                inner = item.metadata if isinstance(item, FieldInfo) else [item]
                for bound in inner:
                    if isinstance(bound, annotated_types.Ge):
                        lo = bound.ge
                    elif isinstance(bound, annotated_types.Le):
                        hi = bound.le
    if lo is None and hi is None:
        return ""
    return f"{lo if lo is not None else '…'}..{hi if hi is not None else '…'}"


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    default = info.get_default(call_default_factory=True)
    if default is None or default is PydanticUndefined:
        return "–"
    if isinstance(default, str):
        return f"`{default}`" if default else '`""`'
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default:g}`" if isinstance(default, float) else f"`{default}`"


_ENTRY_ORDER = ("field", "name", "register", "address", "offset", "type", "bit", "length", "scale", "offset_value",
                "unit", "word_order", "valid", "missing", "bits", "description")


def _key_table(model: type[BaseModel], prefix: str) -> list[str]:
    lines = ["| key | type | default | allowed | what to give (the fix an error names) | example |",
             "|---|---|---|---|---|---|"]
    fields = list(model.model_fields.items())
    if "type" in model.model_fields:  # an entry: where first, then how
        fields.sort(key=lambda item: _ENTRY_ORDER.index(item[0]))
    for name, info in fields:
        allowed = ", ".join(f"`{v}`" for v in _literals(info.annotation)) or _bounds(info)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        example = f"`{extra['example']}`" if "example" in extra else ""
        description = (info.description or "").replace("|", "\\|")
        lines.append(f"| `{prefix}{name}` | {_type_name(info.annotation)} | {_default(info)} | {allowed} | "
                     f"{description} | {example.replace('|', chr(92) + '|')} |")
    return lines


_EXAMPLE = """\
model: acme-s4
vendor: Acme Swap Systems
description: 4-slot cabinet, input registers, CDAB floats.
word_order: CDAB            # the vendor's floats and counters put the low word first
max_gap: 4                  # the device answers 'illegal address' for larger holes

slots:
  count: 4
  base: {input: 1000, coil: 500}
  stride: {input: 40, coil: 1}

cabinet:
  - {field: input_voltage_v, register: input, address: 0, type: f32, unit: V, valid: [0, 500]}
  - {field: energy_kwh, register: input, address: 2, type: u32, scale: 0.1, unit: kWh}
  - {field: cabinet_temperature_c, register: input, address: 4, type: i16, scale: 0.1, unit: degC,
     valid: [-40, 200], missing: 0x8000}
  - {field: door_open, register: input, address: 5, type: bit, bit: 0}
  - {field: smoke_detected, register: input, address: 5, type: bit, bit: 1}
  - {field: emergency_state, register: input, address: 6, type: u16,
     bits: {0: SUPPRESSION_BY_SMOKE, 1: SUPPRESSION_BY_HEAT, 3: SUPPRESSION_MANUAL}}

slot:
  - {field: voltage_v, register: input, offset: 0, type: f32, unit: V, valid: [0, 80]}
  - {field: temperature_c, register: input, offset: 2, type: f32, unit: degC, valid: [-40, 300]}
  - {field: bms_protection, register: input, offset: 4, type: u16,
     bits: {0: OVER_VOLTAGE, 1: UNDER_VOLTAGE, 4: HIGH_TEMPERATURE, 7: SHORT_CIRCUIT}}
  - {field: output_enabled, register: coil, offset: 0}

extra:
  - {name: fan_speed_rpm, register: input, address: 8, type: u16, unit: rpm}
  - {name: charger_module_temp_c, register: input, offset: 6, type: f32, unit: degC}

commands:
  slot_output: {register: coil, per_slot: true, offset: 0, description: "0 cuts the slot off, 1 re-enables"}
"""


def _load_example(text: str) -> Profile:
    """``text`` loaded like any profile file (``profiles/acme-s4.yaml`` in messages)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "acme-s4.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            return find_profile(path)
        except ProfileError as err:
            raise ProfileError("profiles/acme-s4.yaml", err.key or "", err.problem, err.fix or "") from None


def _example_error() -> str:
    """What a typo in the example's word order gives: the real message, not a made-up one."""
    typo = _EXAMPLE.replace("type: f32, unit: degC, valid: [-40, 300]}",
                            "type: f32, word_order: CBAD, unit: degC, valid: [-40, 300]}")
    try:
        _load_example(typo)
    except ProfileError as err:
        return str(err)
    raise AssertionError("the example with a typo loaded")


def _order_rows() -> list[str]:
    rows = ["| order | registers on the wire for 31.5 (f32 0x41FC0000) | bytes A B C D sent as | also accepted |",
            "|---|---|---|---|"]
    aliases = {"ABCD": "`big`, `ABCDEFGH`", "CDAB": "`little`, `GHEFCDAB`", "BADC": "`BADCFEHG`",
               "DCBA": "`HGFEDCBA`"}
    for name in ("ABCD", "CDAB", "BADC", "DCBA"):
        words = encode_value(FieldSpec("voltage_v", "holding", 0, "f32", word_order=name), 31.5)
        sent = " ".join(f"{b:02X}" for w in words for b in w.to_bytes(2, "big"))
        letters = {"ABCD": "A B C D", "CDAB": "C D A B", "BADC": "B A D C", "DCBA": "D C B A"}[name]
        rows.append(f"| `{name}` | {' '.join(f'`0x{w:04X}`' for w in words)} | {letters} = {sent} | {aliases[name]} |")
    return rows


def _type_rows() -> list[str]:
    notes = {
        "u16": "unsigned", "i16": "signed (two's complement)", "u32": "unsigned", "i32": "signed",
        "u64": "unsigned; values from 2^63 up are rejected (no counter reaches them; the storage holds signed 64-bit)",
        "i64": "signed", "f32": "IEEE 754 single; NaN, ±inf and denormals are rejected",
        "f64": "IEEE 754 double; NaN, ±inf and denormals are rejected",
        "bool": "any non-zero register is true; the default on coil/discrete registers",
        "bit": "one bit of a holding/input register (`bit:` 0..15); several bit fields may share a register",
        "string": "`length` registers, 2 UTF-8 bytes each, first character in the high byte; ends at the first "
                  "NUL; word_order does not apply",
    }
    rows = ["| type | registers | value | notes |", "|---|---|---|---|"]
    for kind in (*WORDS, "string"):
        words = "length" if kind == "string" else str(WORDS[kind])
        value = ("true/false" if kind in ("bool", "bit") else "text" if kind == "string"
                 else "number" if kind.startswith("f") else "integer (number when scaled by a fraction)")
        rows.append(f"| `{kind}` | {words} | {value} | {notes[kind]} |")
    return rows


def render_profile_reference() -> str:
    """``docs/profiles.md``: every key of a profile from the schema, with the format's rules."""
    example = _load_example(_EXAMPLE)  # the reference cannot show a profile that does not load
    first_slot = example.slot_fields[0]
    lines = [
        "# Register profiles", "",
        "Generated from the schema in `collectors/modbus/profile.py` by "
        "`python -m collectors.modbus.mapdoc --reference`; do not edit by hand.", "",
        "A profile is one YAML file per cabinet model, in `profiles/` (used by name) or anywhere (used by path). It",
        "says where the cabinet keeps each Cascade field (see docs/schema.md for the fields), how to read it, what",
        "the vendor's bits mean and which other registers to keep. A new vendor needs a profile, no code. Every",
        "profile is validated at start-up; a problem stops `cascade run` and `cascade check-config` with one line:",
        "file, key, problem and the fix (the *what to give* column below), e.g.", "",
        "```text", _example_error(), "```", "",
        "Check a new profile with `cascade check-config` (prints the read plan) and serve it from the simulator",
        "(`cascade simulate --profile PATH`, docs/simulator.md) before pointing Cascade at a real cabinet.",
        "`python -m collectors.modbus.mapdoc PATH` renders its register map (docs/register-map*.md are made so).", "",
        "Then read the real cabinet once with it: `cascade probe --host H [--port P] [--unit ID] --profile PATH`",
        "prints every field's registers as read, the decoded value and a verdict (ok, missing, at the sensor's",
        "limit, rejected), the word order that would fit a rejected value, and each refused read with the unit",
        "id and function tried. Exit 0 when every field decodes, 3 when some are rejected or refused, 1 when the",
        "device cannot be read; `--json` for a script.", "",
        "`--pipelining [N]` also finds how many requests the device answers in flight, the cabinet setting",
        "`max_in_flight` (docs/configuration.md): the plan's reads written 2, 4, 8 … up to N (2-32, default 32;",
        "never more than the plan's reads) at once, a fresh connection each, until a batch is not answered in",
        "full. It names the value to set, or says to keep 1. It runs only once the profile fits (no field",
        "rejected, no read refused), and only where a dropped connection is harmless: a device that does not",
        "queue requests may drop the connection or stop answering for a while.", "",
        "## Example", "",
        "```yaml", _EXAMPLE.rstrip("\n"), "```", "",
        f"This example loads as written: {len(example.cabinet_fields)} cabinet fields, {len(example.slot_fields)} "
        f"slot fields × {example.slot_count} slots, {len(example.cabinet_extras) + len(example.slot_extras)} extras, "
        f"{len(plan_reads(example))} reads per poll. Slot 2's `{first_slot.field}` is input register "
        f"{example.slot_address(first_slot.register_type, first_slot.address, 2)}.", "",
        "## Top-level keys", "",
        *_key_table(ProfileDoc, ""), "",
        "`commands` is optional: without it a cabinet is read only. Cascade then refuses to start with a",
        "protective action (`alerting.actions.perform`) that needs a command the profile lacks, and says which.",
        "", "## `slots`", "",
        "Slot *n* (1-based) of a register type starts at `base + (n − 1) × stride`; a slot field's `offset` counts",
        "from there and must stay below the stride, and the last slot must end at or below register 65535.", "",
        *_key_table(SlotsSection, "slots."), "",
        "## `cabinet` and `slot` entries", "",
        "One entry per Cascade field the cabinet has; a field the cabinet lacks is left out (stored as no value).",
        "Cabinet entries give `address` (absolute), slot entries `offset` (inside each slot's block). No register",
        "may be read by two entries, except `bit` fields sharing one register (each bit once).", "",
        *_key_table(CabinetFieldEntry, ""), "",
        "A slot entry has the same keys with `offset` instead of `address`:", "",
        *_key_table(SlotFieldEntry, "")[:2],
        *[row for row in _key_table(SlotFieldEntry, "") if row.startswith(("| `field`", "| `offset`"))], "",
        "Cabinet fields: " + ", ".join(f"`{n}`" for n in sorted(CABINET_FIELDS)) + ".", "",
        "Slot fields: " + ", ".join(f"`{n}`" for n in sorted(SLOT_FIELDS)) + ".", "",
        "Keys that only some types take: `bit` (type `bit`), `length` (type `string`), `scale`, `offset_value`,",
        "`valid` and `missing` (numbers only, not `bool`, `bit` or `string`); `bits` (unsigned integers of the",
        "bitfields below, without `scale`, `offset_value` or `valid`). Any other combination is refused.", "",
        "## `extra` entries", "",
        *_key_table(ExtraEntry, ""), "",
        "## `commands.<name>`", "",
        *_key_table(CommandEntry, "commands.<name>."), "",
        "## Data types", "",
        *_type_rows(), "",
        "## Word and byte order", "",
        "Vendors print the order of a value's bytes as letters: A is the most significant byte. `word_order` takes",
        "those names (upper or lower case), for the whole profile and per field. For 31.5 as f32, 0x41FC0000, the",
        "bytes are A = 41, B = FC, C = 00, D = 00:", "",
        *_order_rows(), "",
        "For 64-bit types the same four names apply to all four registers: `CDAB` reverses the order of the",
        "registers (Telegraf's `GHEFCDAB`), `BADC` swaps the bytes in each, `DCBA` does both. Byte swapping also",
        "applies to 16-bit numbers and to the register a `bit` is taken from; word order changes nothing for a",
        "single register. A float read with the wrong order is usually a denormal or NaN, which the decoder rejects",
        "(\"wrong word order?\" in the error): check the order before anything else.", "",
        "## Values: scale, offset_value, missing, valid", "",
        "A number is `raw × scale + offset_value` (e.g. a temperature sent as tenths of a degree above −40 °C:",
        "`scale: 0.1, offset_value: -40`), rounded to the scale's decimals. Then, in this order:", "",
        "1. `missing`: the raw register pattern meaning \"sensor not fitted / no reading\" (for a float also the",
        "   integer pattern, e.g. `0x7FC00000`). It is stored as no value, never as zero.",
        "2. NaN, ±inf and denormal floats are rejected as garbage: the field is left empty, the rest of the poll",
        "   is kept, and `cascade_decode_errors_total` counts it.",
        "3. `valid: [min, max]`: the range a real reading can have. A value outside it that is a device's error",
        "   pattern (all bits set, or the signed extremes 0x7FFF/0x8000 and their 32/64-bit forms) is rejected",
        "   like garbage. Any other value outside it is a live sensor at or past its limit: it is kept *as the",
        "   limit* (\"at least 300 °C\") and its field listed in the reading's `over_range`, never dropped.",
        "   Without `valid` every value is taken as it is.", "",
        "## Reads: `max_gap`", "",
        "The collector plans its reads once: fields of one register type are merged into as few Modbus reads as",
        "possible (at most 125 registers or 2000 bits each, a multi-register value never split), bridging unused",
        "registers between them up to `max_gap`. Many devices answer \"illegal address\" for a read touching a",
        "register they do not map; for those keep `max_gap` small (0 bridges nothing). A cabinet's config may",
        "override it (`cabinets[].max_gap`). `cascade check-config` prints the plan.", "",
        "## Vendor bit layouts: `bits`", "",
        "Protection and status words are sets of flags, and vendors number them their own way. Without `bits` a",
        "word is taken in **Cascade layout**: the vendor's bit *n* is Cascade's bit *n* (the tables below). With",
        "`bits`, a map from the vendor's bit numbers to Cascade's flag names, the decoder moves each listed vendor",
        "bit to its Cascade flag (two vendor bits may name the same flag). A vendor bit that is not listed is",
        "never given a Cascade meaning, whatever its position: it is kept, raw at the vendor's position, in the",
        "field's `_unmapped` companion (below), so nothing is lost and no false Cascade flag is raised. Names are",
        "upper or lower case. The translation is compiled once per field when the profile loads.", "",
        "| field | Cascade layout (flag = bit) | vendor bits without a meaning go to |", "|---|---|---|",
        *[f"| `{name}` | {', '.join(f'`{flag}` = {bit}' for flag, bit in layout.items()) if len(layout) < 32 else '`BIT0` = 0 … `BIT31` = 31 (a vendor code: the map chooses which bits count as a fault)'} | "
          f"`{unmapped_field(name)}` |" for name, layout in BITFIELDS.items()], "",
        "`<field>_unmapped` is `null` for a profile without a bits map (nothing to keep: the word is in Cascade",
        "layout) and `0` when the map covers every bit the vendor set.", "",
        "## Vendor registers without a Cascade field: `extra`", "",
        "Nothing a vendor sends needs to be lost: an `extra` entry reads any register like a field (same keys",
        "except `field` and `bits`) under a `name` of its own. `address` makes it cabinet-wide, `offset` per slot.",
        "The decoded values are carried in the reading, never mixed with Cascade's fields:", "",
        "- `CabinetReading.extra` and `SlotReading.extra`: a read-only mapping, name → value (`float`, `int`,",
        "  `bool` or `str`), empty when the profile has no extras. A value that is missing or rejected is",
        "  left out of the mapping (and a rejected one counted, as above).",
        "- The value's type is fixed by the entry, so it never changes between polls: `bool` for `bool`/`bit`,",
        "  `str` for `string`, `float` for floats and for integers with a fractional `scale`/`offset_value`,",
        "  otherwise `int`.",
        "- Errors and `over_range` name it `extra_<name>`, the name it is stored under.", "",
        "An extra's name must not be a Cascade field's: a register with a Cascade meaning belongs under",
        "`cabinet:` or `slot:`, where rules and dashboards see it.", "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["--reference"]:
        sys.stdout.write(render_profile_reference())
    else:
        for name in args or ["reference-cabinet"]:
            sys.stdout.write(render_register_map(find_profile(name)))
