"""Render a profile as a Markdown register map: ``python -m collectors.modbus.mapdoc PROFILE``.

``docs/register-map.md`` is generated from ``profiles/reference-cabinet.yaml`` by this module, and a
test checks that the committed file equals the output, so the document cannot drift from the map.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .planner import minimum_reads, plan_reads
from .profile import PROFILE_DIR, FieldSpec, Profile, find_profile

__all__ = ["render_register_map"]

_FUNCTION = {"holding": "3 (read holding)", "input": "4 (read input)", "coil": "1 (read coils)",
             "discrete": "2 (read discrete inputs)"}


def _row(spec: FieldSpec, address: str) -> str:
    kind = f"string[{spec.length}]" if spec.data_type == "string" else spec.data_type
    valid = f"{spec.valid[0]:g} … {spec.valid[1]:g}" if spec.valid else ""
    missing = f"0x{spec.missing:X}" if spec.missing is not None else ""
    order = spec.word_order if spec.words == 2 and spec.data_type != "string" else ""
    scale = f"{spec.scale:g}" if spec.scale != 1 else ""
    return f"| {address} | {spec.register_type} | `{spec.field}` | {kind} | {order} | {scale} | {spec.unit} | {valid} | {missing} |"


def render_register_map(profile: Profile) -> str:
    """The profile as a Markdown document, register by register."""
    head = "| address | register | field | type | word order | scale | unit | valid range | missing |\n" \
           "|---|---|---|---|---|---|---|---|---|"
    source = Path(profile.source).resolve()
    shown = source.relative_to(PROFILE_DIR.parent) if source.is_relative_to(PROFILE_DIR.parent) else source.name
    lines = [f"# Register map: `{profile.model}`", "",
             f"Generated from `{shown}` by `python -m collectors.modbus.mapdoc {profile.model}`; "
             "do not edit by hand.", "",
             f"{profile.description}", "",
             f"Vendor: {profile.vendor}. Slots: {profile.slot_count}. Default gap fill: {profile.max_gap} registers.",
             "Bytes within a register are big-endian (Modbus). `scale` multiplies the raw value; `missing` is the raw",
             "value meaning \"sensor not fitted / no reading\" (stored as no value, not as zero); a value outside",
             "`valid range` is rejected as garbage, counted in `cascade_decode_errors_total` and not stored.", "",
             "## Cabinet registers", "", head]
    lines += [_row(s, str(s.address)) for s in sorted(profile.cabinet_fields, key=lambda s: (s.register_type, s.address))]
    lines += ["", "## Slot registers", "",
              "Slot *n* (1-based) of each register type starts at `base + (n - 1) × stride`:", ""]
    lines += [f"- {kind}: base {profile.slot_base[kind]}, stride {profile.slot_stride[kind]} "
              f"(slot 1 at {profile.slot_base[kind]}, slot 2 at {profile.slot_base[kind] + profile.slot_stride[kind]})"
              for kind in sorted(profile.slot_base)]
    lines += ["", head.replace("| address |", "| offset |")]
    lines += [_row(s, f"+{s.address}") for s in sorted(profile.slot_fields, key=lambda s: (s.register_type, s.address))]
    lines += ["", "## Commands", "", "| command | register | address | description |", "|---|---|---|---|"]
    for cmd in profile.commands.values():
        where = f"slot block +{cmd.address}" if cmd.per_slot else str(cmd.address)
        lines.append(f"| `{cmd.name}` | {cmd.register_type} | {where} | {cmd.description} |")
    lines += ["", "Every command is written, then read back; the result is logged with who asked (see docs/schema.md,",
              "measurement `command`).", "", "## Read plan", "",
              f"With {profile.slot_count} slots the collector sends {len(plan_reads(profile))} reads per poll "
              f"(theoretical minimum {minimum_reads(profile)}):", "",
              "| function | start | count |", "|---|---|---|"]
    lines += [f"| {_FUNCTION[r.register_type]} | {r.address} | {r.count} |" for r in plan_reads(profile)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    for name in sys.argv[1:] or ["reference-cabinet"]:
        sys.stdout.write(render_register_map(find_profile(name)))
