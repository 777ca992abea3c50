"""Convert between Modbus register words and typed values, per field spec.

Byte and word order go by the names vendors print in their register maps (the names the Telegraf
and Home Assistant Modbus integrations use). For the 32-bit float 31.5 = 0x41FC0000, bytes A B C D =
41 FC 00 00:

========  =====================================  ====================
order     registers on the wire                  also called
========  =====================================  ====================
``ABCD``  ``0x41FC 0x0000``                      ``big`` (the Modbus convention, default)
``CDAB``  ``0x0000 0x41FC``  (words swapped)      ``little``, word swap
``BADC``  ``0xFC41 0x0000``  (bytes swapped)      byte swap
``DCBA``  ``0x0000 0xFC41``  (both)               little-endian
========  =====================================  ====================

64-bit values extend the same rule (``CDAB`` = ``GHEFCDAB``: the order of all four registers is
reversed). A byte swap also applies to 16-bit values and to the register a ``bit`` is taken from;
word order means nothing for one register. Strings are always first character in the high byte.

    >>> from collectors.modbus.profile import FieldSpec
    >>> spec = FieldSpec("voltage_v", "input", 0, "u16", scale=0.1)
    >>> decode_value(spec, [521])
    52.1
    >>> encode_value(spec, 52.1)
    [521]
    >>> encode_value(FieldSpec("voltage_v", "input", 0, "f32", word_order="CDAB"), 31.5)
    [0, 16892]
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from core.errors import CascadeError

if TYPE_CHECKING:
    from .profile import FieldSpec

__all__ = [
    "FLOAT_TYPES",
    "INLINE_KINDS",
    "INTEGER_TYPES",
    "WORDS",
    "WORD_ORDERS",
    "DecodeError",
    "OverRange",
    "compile_decoder",
    "compile_unmapped",
    "decode_unmapped",
    "decode_value",
    "encode_raw",
    "encode_value",
    "inline_source",
    "wire_words",
]

#: Registers (16-bit words) each data type occupies (strings: their ``length``).
WORDS = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "u64": 4, "i64": 4, "f32": 2, "f64": 4, "bool": 1, "bit": 1}
INTEGER_TYPES = frozenset({"u16", "i16", "u32", "i32", "u64", "i64"})
FLOAT_TYPES = frozenset({"f32", "f64"})

#: Word order name → (words reversed, bytes swapped inside each word). The 4-letter names are the
#: vendors' (Telegraf's, Home Assistant's ``swap``); ``big``/``little`` are Cascade's older names and
#: the 8-letter ones Telegraf's names for 64-bit values.
WORD_ORDERS: dict[str, tuple[bool, bool]] = {
    "ABCD": (False, False), "CDAB": (True, False), "BADC": (False, True), "DCBA": (True, True),
    "big": (False, False), "little": (True, False),
    "ABCDEFGH": (False, False), "GHEFCDAB": (True, False), "BADCFEHG": (False, True), "HGFEDCBA": (True, True),
}

_STRUCT = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "u64": ">Q", "i64": ">q", "f32": ">f", "f64": ">d"}
_RANGE = {"u16": (0, 0xFFFF), "i16": (-0x8000, 0x7FFF), "u32": (0, 0xFFFFFFFF), "i32": (-0x80000000, 0x7FFFFFFF),
          "u64": (0, 2**63 - 1), "i64": (-(2**63), 2**63 - 1)}
_INT64_MAX = 2**63 - 1


class DecodeError(CascadeError):
    """A register value that cannot be a valid reading of its field."""


class OverRange(DecodeError):
    """A plausible raw value beyond the field's valid range: a live sensor at or past its limit.

    Kept as the limit it passed (``limit``: "at least" the upper, "at most" the lower bound) and
    flagged, never dropped: a pack reading past the sensor's range is the worst case, not missing
    data. Raised only off the normal path, so decoding in range costs nothing extra.
    """

    def __init__(self, message: str, limit: float) -> None:
        super().__init__(message)
        self.limit = limit


#: Raw patterns devices send for "no value / error" (all bits set, or the signed extremes). Past the
#: valid range they are garbage, not a measurement (a declared ``missing`` sentinel is None earlier).
_SENTINELS: dict[str, frozenset[int]] = {
    "u16": frozenset({0xFFFF}), "i16": frozenset({0x7FFF, 0x8000}),
    "u32": frozenset({0xFFFFFFFF}), "i32": frozenset({0x7FFFFFFF, 0x80000000}),
    "u64": frozenset({2**64 - 1}), "i64": frozenset({2**63 - 1, 2**63}),
}
# Smallest normal float per width: a non-zero value below it is a decode artefact (wrong word order).
# Below this a non-zero float is no sensor reading: denormals, and the tiny values a wrong word
# order makes of ordinary ones (31.5 with swapped words is 2.4e-41; 230 V read as ABCD from a CDAB
# device is 3.4e-17). No field Cascade reads has a resolution anywhere near 1e-12 of its unit.
_TINY = {"f32": 1e-12, "f64": 1e-12}


def _out_of_range(field: str, unit: str, value: float, lo: float, hi: float, raw: int | None,
                  sentinels: frozenset[int]) -> DecodeError:
    """The error for a value outside ``lo..hi``: garbage (a sentinel) or :class:`OverRange`."""
    shown = f"{value:g} {unit}".rstrip()  # no double space for a field without a unit
    if raw is not None and raw in sentinels:
        return DecodeError(f"{field}: raw 0x{raw:X} is an error/no-value pattern, not a measurement "
                           f"({shown} is outside the valid range {lo:g}..{hi:g})")
    limit = hi if value > hi else lo
    kept = f"{limit:g} {unit}".rstrip()
    return OverRange(f"{field}: {shown} beyond the valid range {lo:g}..{hi:g}: kept as "
                     f"{'at least' if value > hi else 'at most'} {kept}", limit)


def _swap16(word: int) -> int:
    return ((word & 0xFF) << 8) | ((word >> 8) & 0xFF)


def wire_words(words: Sequence[int], swap_words: bool, swap_bytes: bool) -> list[int]:
    """Reorder register words between the wire and most-significant-first (the same operation both
    ways: reversing words and swapping bytes are their own inverses and commute)."""
    ordered = [w & 0xFFFF for w in (reversed(words) if swap_words else words)]
    return [_swap16(w) for w in ordered] if swap_bytes else ordered


def _packed(spec: FieldSpec, words: Sequence[int]) -> bytes:
    """The field's bytes, most significant first."""
    return b"".join(w.to_bytes(2, "big") for w in wire_words(words, spec.swap_words, spec.swap_bytes))


def _from_packed(spec: FieldSpec, packed: bytes) -> list[int]:
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]
    return wire_words(words, spec.swap_words, spec.swap_bytes)


def _translate(pairs: Sequence[tuple[int, int]], raw: int) -> int:
    """Cascade's flags for a vendor word: only the vendor bits the profile maps get a meaning."""
    out = 0
    for vendor_mask, cascade_mask in pairs:
        if raw & vendor_mask:
            out |= cascade_mask
    return out


def _matches_missing(spec: FieldSpec, words: Sequence[int]) -> bool:
    return spec.missing is not None and tuple(words) == spec.missing_words


def decode_value(spec: FieldSpec, words: Sequence[int]) -> float | int | bool | str | None:
    """Decode the words of one field; ``None`` for the field's "not available" sentinel.

    Raises :class:`DecodeError` for a value that cannot be a measurement (NaN, inf, a denormal
    float, an all-ones or signed-extreme raw pattern outside the valid range, a u64 past the signed
    64-bit range no counter reaches): garbage from a device never becomes a reading. Raises
    :class:`OverRange` (carrying the limit) for a plausible value outside the field's ``valid``
    range: the caller keeps it as the limit, flagged.

    A field with a ``bits`` map decodes to Cascade's flags: the vendor bits the map names, moved to
    Cascade's positions; :func:`decode_unmapped` gives the vendor bits it does not name.
    """
    if len(words) != spec.words:
        raise DecodeError(f"{spec.field}: expected {spec.words} registers, got {len(words)}")
    kind = spec.data_type
    if kind == "bool":
        return bool(words[0])
    if kind == "bit":
        word = _swap16(words[0] & 0xFFFF) if spec.swap_bytes else words[0]
        return bool((word >> (spec.bit or 0)) & 1)
    if kind == "string":
        raw = b"".join((w & 0xFFFF).to_bytes(2, "big") for w in words)
        text = raw.split(b"\x00", 1)[0]
        try:
            decoded = text.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise DecodeError(f"{spec.field}: not UTF-8 text ({raw[:16]!r})") from err
        if not decoded.isprintable():
            # Control characters (line breaks...) are never part of an id or a name; passing them
            # on would make the whole point unwritable downstream, losing good fields with it.
            raise DecodeError(f"{spec.field}: control characters in text ({decoded[:16]!r})")
        return decoded or None
    if _matches_missing(spec, words):
        return None
    packed = _packed(spec, words)
    if spec.bits is not None:
        return _translate(spec.translate, int.from_bytes(packed, "big"))
    raw_value: float | int = struct.unpack(_STRUCT[kind], packed)[0]
    if kind in FLOAT_TYPES:
        if not math.isfinite(raw_value):
            raise DecodeError(f"{spec.field}: {raw_value} is not a finite number")
        if raw_value != 0 and abs(raw_value) < _TINY[kind]:
            raise DecodeError(f"{spec.field}: {raw_value:g} is an implausibly small float (denormal or near it), not a measurement "
                              f"(wrong word order? the profile says {spec.word_order!r})")
    elif kind == "u64" and raw_value > _INT64_MAX:
        what = "an error/no-value pattern" if raw_value == 2**64 - 1 else "beyond any real count"
        raise DecodeError(f"{spec.field}: raw 0x{raw_value:X} is {what}, not a measurement")
    value = raw_value * spec.scale + spec.offset_value if (spec.scale != 1 or spec.offset_value) else raw_value
    if spec.valid is not None and not (spec.valid[0] <= value <= spec.valid[1]):
        unsigned = int.from_bytes(packed, "big") if kind not in FLOAT_TYPES else None
        raise _out_of_range(spec.field, spec.unit, value, spec.valid[0], spec.valid[1], unsigned,
                            _SENTINELS.get(kind, frozenset()))
    if isinstance(value, float) and spec.scale != 1:
        # Round away binary noise from the scale (0.1 * 521 = 52.1000000001).
        value = round(value, spec.decimals)
    return value


def decode_unmapped(spec: FieldSpec, words: Sequence[int]) -> int | None:
    """The vendor bits of a ``bits``-mapped field that the map does not name, at the vendor's own
    positions (never given a Cascade meaning); ``None`` for the field's "not available" sentinel."""
    if len(words) != spec.words:
        raise DecodeError(f"{spec.field}: expected {spec.words} registers, got {len(words)}")
    if _matches_missing(spec, words):
        return None
    return int.from_bytes(_packed(spec, words), "big") & ~spec.mapped_mask


def _byte_tables(spec: FieldSpec) -> tuple[tuple[int, ...], ...]:
    """Per byte of the raw value (least significant first): byte value → Cascade flags it sets."""
    tables = []
    for byte in range(spec.words * 2):
        shift = 8 * byte
        pairs = [(v >> shift, c) for v, c in spec.translate if (v >> shift) & 0xFF]
        tables.append(tuple(_translate(pairs, b) for b in range(256)))
    return tuple(tables)


def compile_decoder(spec: FieldSpec) -> Callable[[Sequence[int], int], float | int | bool | str | None]:
    """A decoder for one field, built once at start-up: ``decoder(words, index)`` decodes the
    field's words starting at ``index`` of a read's response, exactly as :func:`decode_value` would.

    Bits, bit maps and 16-bit numbers avoid ``struct`` and slicing (translation by per-byte tables
    built here); everything else falls back to :func:`decode_value`, so there is one definition of
    the semantics.
    """
    kind = spec.data_type
    if kind == "bool":
        return _inlinable(lambda words, i: bool(words[i]), "bool")
    if kind == "bit":
        mask = 1 << (spec.bit or 0)
        wire_mask = _swap16(mask) if spec.swap_bytes else mask
        return _inlinable(lambda words, i: bool(words[i] & wire_mask), "bit")
    width = spec.words
    if spec.bits is not None and width == 1:
        low, high = _byte_tables(spec)
        missing = spec.missing_words[0] if spec.missing_words else -1
        swap = spec.swap_bytes

        def flags16(words: Sequence[int], i: int) -> int | None:
            word = words[i]
            if word == missing:
                return None
            if swap:
                word = _swap16(word)
            return low[word & 0xFF] | high[(word >> 8) & 0xFF]
        return flags16
    if kind in ("u32", "i32", "f32") and not spec.offset_value and spec.bits is None:
        return _compile_32(spec)
    if kind == "string":
        return _compile_text(spec)
    if kind not in ("u16", "i16") or spec.offset_value or spec.bits is not None:
        def general(words: Sequence[int], i: int) -> float | int | bool | str | None:
            return decode_value(spec, words[i : i + width])
        return general
    signed = kind == "i16"
    swap = spec.swap_bytes
    missing = spec.missing_words[0] if spec.missing_words else None  # None: no word is "not available"
    scale = spec.scale
    lo, hi = spec.valid if spec.valid is not None else (-math.inf, math.inf)
    decimals = spec.decimals
    field, unit = spec.field, spec.unit
    sentinels = _SENTINELS[kind]

    def word16(words: Sequence[int], i: int) -> float | int | None:
        word = words[i]
        if word == missing:
            return None
        raw = _swap16(word & 0xFFFF) if swap else word
        unsigned = raw
        if signed and raw & 0x8000:
            raw -= 0x10000
        value = round(raw * scale, decimals) if scale != 1 else raw
        if not lo <= value <= hi:
            raise _out_of_range(field, unit, value, lo, hi, unsigned & 0xFFFF, sentinels)
        return value
    return _inlinable(word16, "word16")


INLINE_KINDS = ("bool", "bit", "word16")
"""What :func:`compile_decoder` may return that a compiled read plan writes out in place
(``collectors.modbus.decode.compile_plan``): the decoder's ``inline`` attribute names it."""


def inline_source(decoder: Callable[[Sequence[int], int], Any], spec: FieldSpec, words: str, index: int,
                  out: str, constant: Callable[[object], str], unusual: str,
                  then: Sequence[str] = ()) -> list[str] | None:
    """Python statements that put ``decoder(words, index)`` into the variable ``out`` (the same value or
    ``None``), for a decoder :func:`compile_decoder` marked inlinable; ``None`` for any other. Where the
    decoder would raise (a value past the field's valid range) the statements raise ``unusual`` instead,
    and the caller decodes again with the decoder itself, for its exception and message: the written-out
    code carries only the common path. ``constant(value)`` gives the name a value is passed under (no
    profile text goes into the source). ``then``: statements to run after, on a value that is not
    ``None``. The statements are what ``word16`` and the bit decoders do, without a call per field.
    """
    kind = getattr(decoder, "inline", None)
    if kind not in INLINE_KINDS:
        return None
    if kind == "bool":
        return [f"{out} = bool({words}[{index}])", *then]
    if kind == "bit":
        mask = 1 << (spec.bit or 0)
        return [f"{out} = bool({words}[{index}] & {_swap16(mask) if spec.swap_bytes else mask})", *then]
    body = []
    if spec.swap_bytes:
        body.append(f"{out} = (({out} & 0xFF) << 8) | (({out} >> 8) & 0xFF)")
    if spec.data_type == "i16":
        body.append(f"if {out} & 0x8000: {out} -= 0x10000")
    scale = spec.scale
    if scale != 1:
        divisor = _exact_divisor(scale, spec.decimals)
        body.append(f"{out} = {out} / {divisor}" if divisor else
                    f"{out} = round({out} * {constant(scale)}, {spec.decimals})")
    if spec.valid is not None:
        lo, hi = (constant(v) for v in spec.valid)
        body.append(f"if not {lo} <= {out} <= {hi}: raise {unusual}")
    body.extend(then)
    lines = [f"{out} = {words}[{index}]"]
    if body and not spec.missing_words and body[0].startswith(f"{out} = {out} "):  # one statement, not two
        lines = [f"{out} = {words}[{index}] {body.pop(0).split(' ', 3)[3]}"]
    if spec.missing_words and body:
        lines.append(f"if {out} == {spec.missing_words[0]}: {out} = None")
        lines.append("else:")
        lines.extend("    " + line for line in body)
    else:
        if spec.missing_words:
            lines.append(f"if {out} == {spec.missing_words[0]}: {out} = None")
        lines.extend(body)
    return lines


_divisors: dict[tuple[float, int], int | None] = {}


def _exact_divisor(scale: float, decimals: int) -> int | None:
    """The power of ten ``p`` with ``raw / p == round(raw * scale, decimals)`` for every 16-bit raw value,
    signed or not (one correctly rounded division instead of a multiplication and a rounding), or None.
    Checked exhaustively, once per (scale, decimals)."""
    key = (scale, decimals)
    if key not in _divisors:
        found = None
        for p in (10, 100, 1000, 10000):
            if scale == 1 / p:
                if all(raw / p == round(raw * scale, decimals) for raw in range(-0x8000, 0x10000)):
                    found = p
                break
        _divisors[key] = found
    return _divisors[key]


def _inlinable(decoder: Callable[[Sequence[int], int], Any], kind: str) -> Callable[[Sequence[int], int], Any]:
    decoder.inline = kind  # type: ignore[attr-defined]
    return decoder


def _compile_32(spec: FieldSpec) -> Callable[[Sequence[int], int], float | int | None]:
    """The two-register numbers (u32, i32, f32) in any order without slicing or reordering lists:
    the most common vendor values (CDAB floats and counters). Same checks as :func:`decode_value`."""
    kind = spec.data_type
    high, low = (1, 0) if spec.swap_words else (0, 1)
    swap = spec.swap_bytes
    missing = spec.missing_words or None
    scale, decimals = spec.scale, spec.decimals
    lo, hi = spec.valid if spec.valid is not None else (-math.inf, math.inf)
    field, unit, order = spec.field, spec.unit, spec.word_order
    sentinels = _SENTINELS.get(kind, frozenset())
    is_float, signed = kind == "f32", kind == "i32"
    unpack_f32 = struct.Struct(">f").unpack
    tiny = _TINY["f32"]

    def word32(words: Sequence[int], i: int) -> float | int | None:
        if missing is not None and words[i] == missing[0] and words[i + 1] == missing[1]:
            return None
        first, second = words[i + high] & 0xFFFF, words[i + low] & 0xFFFF
        if swap:
            first, second = _swap16(first), _swap16(second)
        unsigned = first << 16 | second
        value: float | int
        if is_float:
            (value,) = unpack_f32(unsigned.to_bytes(4, "big"))
            if not math.isfinite(value):
                raise DecodeError(f"{field}: {value} is not a finite number")
            if value != 0 and abs(value) < tiny:
                raise DecodeError(f"{field}: {value:g} is an implausibly small float (denormal or near it), not a measurement "
                                  f"(wrong word order? the profile says {order!r})")
        else:
            value = unsigned - 0x100000000 if signed and unsigned & 0x80000000 else unsigned
        if scale != 1:
            value = value * scale
        if not lo <= value <= hi:
            raise _out_of_range(field, unit, value, lo, hi, None if is_float else unsigned, sentinels)
        if scale != 1:
            value = round(value, decimals)
        return value
    return word32


def _compile_text(spec: FieldSpec) -> Callable[[Sequence[int], int], str | None]:
    """Text (ids, names): the words packed in one call instead of a bytes object per word; anything
    unusual (a short slice, a word past 16 bits) goes through :func:`decode_value`, as do the checks'
    messages. Same result as :func:`decode_value`."""
    width = spec.words
    pack = struct.Struct(f">{width}H").pack
    field = spec.field

    def text(words: Sequence[int], i: int) -> str | None:
        chunk = words[i : i + width]
        try:
            raw = pack(*chunk)
        except struct.error:
            return decode_value(spec, chunk)  # type: ignore[return-value]
        try:
            decoded = raw.split(b"\x00", 1)[0].decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise DecodeError(f"{field}: not UTF-8 text ({raw[:16]!r})") from err
        if not decoded.isprintable():
            raise DecodeError(f"{field}: control characters in text ({decoded[:16]!r})")
        return decoded or None
    return text


def compile_unmapped(spec: FieldSpec) -> Callable[[Sequence[int], int], int | None]:
    """Like :func:`compile_decoder`, for :func:`decode_unmapped` (the vendor bits without a meaning)."""
    width = spec.words
    if width == 1:
        missing = spec.missing_words[0] if spec.missing_words else -1
        swap = spec.swap_bytes
        keep = ~spec.mapped_mask & 0xFFFF

        def unmapped16(words: Sequence[int], i: int) -> int | None:
            word = words[i]
            if word == missing:
                return None
            return (_swap16(word) if swap else word) & keep
        return unmapped16
    return lambda words, i: decode_unmapped(spec, words[i : i + width])


def encode_value(spec: FieldSpec, value: float | int | bool | str | None, *, unmapped: int = 0) -> list[int]:
    """Encode a value into the field's register words (the simulator's side of the wire).

    A ``bits``-mapped field takes Cascade's flags and writes the vendor bits they map to (a flag
    the vendor cannot express is left out), plus ``unmapped``: raw vendor bits without a Cascade
    meaning (those the map names are ignored there). A ``bit`` field gives only its own bit: the
    caller ORs the bits that share a register.
    """
    kind = spec.data_type
    if kind == "bool":
        return [1 if value else 0]
    if kind == "bit":
        word = 1 << (spec.bit or 0) if value else 0
        return [_swap16(word) if spec.swap_bytes else word]
    if kind == "string":
        text = str(value or "").encode("utf-8")[: spec.words * 2].ljust(spec.words * 2, b"\x00")
        return [int.from_bytes(text[i : i + 2], "big") for i in range(0, len(text), 2)]
    if value is None:
        if spec.missing is None:
            raise ValueError(f"{spec.field}: no 'missing' sentinel declared, cannot encode None")
        return list(spec.missing_words)
    if spec.bits is not None:
        flags = int(value)
        raw = 0
        for cascade_mask, vendor_mask in spec.encode_pairs:
            if flags & cascade_mask:
                raw |= vendor_mask
        raw |= int(unmapped) & ~spec.mapped_mask & ((1 << (16 * spec.words)) - 1)
        return _from_packed(spec, raw.to_bytes(2 * spec.words, "big"))
    if isinstance(value, str):
        raise ValueError(f"{spec.field}: cannot encode text {value!r} as {kind}")
    raw_value: float | int
    if spec.scale == 1 and not spec.offset_value:
        raw_value = value  # no float detour: a 64-bit integer keeps every digit
    else:
        raw_value = (value - spec.offset_value) / spec.scale
    if kind in FLOAT_TYPES:
        packed = struct.pack(_STRUCT[kind], raw_value)
    else:
        lo, hi = _RANGE[kind]
        packed = struct.pack(_STRUCT[kind], max(lo, min(hi, round(raw_value))))
    return _from_packed(spec, packed)


def encode_raw(spec: FieldSpec, raw: int | float) -> list[int]:
    """The field's words for a raw register value (before scale), in its word order: what a faulty
    device sends (NaN, a denormal, an all-ones pattern) for simulators and tests."""
    kind = spec.data_type
    if kind in FLOAT_TYPES:
        return _from_packed(spec, struct.pack(_STRUCT[kind], raw))
    width = 2 * spec.words
    return _from_packed(spec, (int(raw) & ((1 << (8 * width)) - 1)).to_bytes(width, "big"))
