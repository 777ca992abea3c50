"""Convert between Modbus register words and typed values, per field spec.

Word order is the profile's (``big`` = most significant word first, the Modbus convention;
``little`` = swapped words, common on some vendors). Bytes within a word are always big-endian,
as the Modbus specification requires.

    >>> from collectors.modbus.profile import FieldSpec
    >>> spec = FieldSpec("voltage_v", "input", 0, "u16", scale=0.1)
    >>> decode_value(spec, [521])
    52.1
    >>> encode_value(spec, 52.1)
    [521]
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from core.errors import CascadeError

if TYPE_CHECKING:
    from .profile import FieldSpec

__all__ = ["WORDS", "DecodeError", "OverRange", "compile_decoder", "decode_value", "encode_value"]

#: Registers (16-bit words) each numeric data type occupies.
WORDS = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "f32": 2, "bool": 1}

_STRUCT = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "f32": ">f"}


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
}
_F32_TINY = 1.1754943508222875e-38  # smallest normal f32: a non-zero value below it is a decode artefact


def _out_of_range(field: str, unit: str, value: float, lo: float, hi: float, raw: int | None,
                  sentinels: frozenset[int]) -> DecodeError:
    """The error for a value outside ``lo..hi``: garbage (a sentinel) or :class:`OverRange`."""
    if raw is not None and raw in sentinels:
        return DecodeError(f"{field}: raw 0x{raw:X} is an error/no-value pattern, not a measurement "
                           f"({value:g} {unit} is outside the valid range {lo:g}..{hi:g})")
    limit = hi if value > hi else lo
    return OverRange(f"{field}: {value:g} {unit} beyond the valid range {lo:g}..{hi:g}: kept as "
                     f"{'at least' if value > hi else 'at most'} {limit:g} {unit}", limit)


def _words_to_bytes(words: Sequence[int], word_order: str) -> bytes:
    ordered = words if word_order == "big" else list(reversed(words))
    return b"".join((w & 0xFFFF).to_bytes(2, "big") for w in ordered)


def _bytes_to_words(raw: bytes, word_order: str) -> list[int]:
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    return words if word_order == "big" else list(reversed(words))


def decode_value(spec: FieldSpec, words: Sequence[int]) -> float | int | bool | str | None:
    """Decode the words of one field; ``None`` for the field's "not available" sentinel.

    Raises :class:`DecodeError` for a value that cannot be a measurement (NaN, inf, a denormal
    float, an all-ones or signed-extreme raw pattern outside the valid range): garbage from a device
    never becomes a reading. Raises :class:`OverRange` (carrying the limit) for a plausible value
    outside the field's ``valid`` range: the caller keeps it as the limit, flagged.
    """
    if len(words) != spec.words:
        raise DecodeError(f"{spec.field}: expected {spec.words} registers, got {len(words)}")
    kind = spec.data_type
    if kind == "bool":
        return bool(words[0])
    if kind == "string":
        raw = _words_to_bytes(words, "big")
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
    if spec.missing is not None and list(words) == list(spec.missing_words):
        return None
    packed = _words_to_bytes(words, spec.word_order)
    (raw_value,) = struct.unpack(_STRUCT[kind], packed)
    if kind == "f32" and not math.isfinite(raw_value):
        raise DecodeError(f"{spec.field}: {raw_value} is not a finite number")
    if kind == "f32" and raw_value != 0 and abs(raw_value) < _F32_TINY:
        raise DecodeError(f"{spec.field}: {raw_value:g} is a denormal float, not a measurement "
                          f"(wrong word order? the profile says {spec.word_order!r})")
    value = raw_value * spec.scale + spec.offset_value if (spec.scale != 1 or spec.offset_value) else raw_value
    if spec.valid is not None and not (spec.valid[0] <= value <= spec.valid[1]):
        unsigned = int.from_bytes(packed, "big") if kind != "f32" else None
        raise _out_of_range(spec.field, spec.unit, value, spec.valid[0], spec.valid[1], unsigned,
                            _SENTINELS.get(kind, frozenset()))
    if isinstance(value, float) and spec.scale != 1:
        # Round away binary noise from the scale (0.1 * 521 = 52.1000000001).
        value = round(value, spec.decimals)
    return value


def compile_decoder(spec: FieldSpec) -> Callable[[Sequence[int], int], float | int | bool | str | None]:
    """A decoder for one field, built once at start-up: ``decoder(words, index)`` decodes the
    field's words starting at ``index`` of a read's response, exactly as :func:`decode_value` would.

    The common 16-bit cases avoid ``struct`` and slicing; everything else falls back to
    :func:`decode_value`, so there is one definition of the semantics.
    """
    kind = spec.data_type
    if kind == "bool":
        return lambda words, i: bool(words[i])
    if kind not in ("u16", "i16") or spec.offset_value:
        width = spec.words

        def general(words: Sequence[int], i: int) -> float | int | bool | str | None:
            return decode_value(spec, words[i : i + width])
        return general
    signed = kind == "i16"
    missing = spec.missing_words[0] if spec.missing_words else -1
    scale = spec.scale
    lo, hi = spec.valid if spec.valid is not None else (-math.inf, math.inf)
    decimals = spec.decimals
    field, unit = spec.field, spec.unit
    sentinels = _SENTINELS[kind]

    def word16(words: Sequence[int], i: int) -> float | int | None:
        word = raw = words[i]
        if raw == missing:
            return None
        if signed and raw & 0x8000:
            raw -= 0x10000
        value = round(raw * scale, decimals) if scale != 1 else raw
        if not lo <= value <= hi:
            raise _out_of_range(field, unit, value, lo, hi, word & 0xFFFF, sentinels)
        return value
    return word16


def encode_value(spec: FieldSpec, value: float | int | bool | str | None) -> list[int]:
    """Encode a value into the field's register words (the simulator's side of the wire)."""
    kind = spec.data_type
    if kind == "bool":
        return [1 if value else 0]
    if kind == "string":
        raw = (value or "").encode("utf-8")[: spec.words * 2].ljust(spec.words * 2, b"\x00")
        return _bytes_to_words(raw, "big")
    if value is None:
        if spec.missing is None:
            raise ValueError(f"{spec.field}: no 'missing' sentinel declared, cannot encode None")
        return list(spec.missing_words)
    raw_value = (value - spec.offset_value) / spec.scale
    if kind == "f32":
        packed = struct.pack(">f", raw_value)
    else:
        fmt = _STRUCT[kind]
        lo, hi = _RANGE[kind]
        packed = struct.pack(fmt, max(lo, min(hi, round(raw_value))))
    return _bytes_to_words(packed, spec.word_order)


_RANGE = {"u16": (0, 0xFFFF), "i16": (-0x8000, 0x7FFF), "u32": (0, 0xFFFFFFFF), "i32": (-0x80000000, 0x7FFFFFFF)}
