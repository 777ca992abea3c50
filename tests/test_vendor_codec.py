"""Vendor word/byte orders, 64-bit and bit types, bit translation: the codec's properties.

Encode then decode is the identity for every data type in every order; decoding anything raises
nothing but DecodeError; the compiled decoders agree with the reference ones.
"""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.modbus.codec import (
    WORD_ORDERS,
    DecodeError,
    OverRange,
    compile_decoder,
    compile_unmapped,
    decode_unmapped,
    decode_value,
    encode_raw,
    encode_value,
)
from collectors.modbus.profile import BITFIELDS, FieldSpec

ORDERS = sorted(WORD_ORDERS)
_INT_RANGES = {"u16": (0, 0xFFFF), "i16": (-0x8000, 0x7FFF), "u32": (0, 2**32 - 1), "i32": (-(2**31), 2**31 - 1),
               "u64": (0, 2**63 - 1), "i64": (-(2**63), 2**63 - 1)}


def _f32(value: float) -> float:
    return struct.unpack(">f", struct.pack(">f", value))[0]


# Measurements: finite, and zero or at least 1e-12 in size (smaller non-zero floats are rejected as
# the mark of a wrong word order, codec._TINY).
_finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False).filter(
    lambda v: v == 0 or abs(v) >= 1e-12)
_finite64 = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False).filter(
    lambda v: v == 0 or abs(v) >= 1e-12)


@st.composite
def _typed_values(draw: st.DrawFn) -> tuple[FieldSpec, object]:
    order = draw(st.sampled_from(ORDERS))
    kind = draw(st.sampled_from([*_INT_RANGES, "f32", "f64", "bool", "bit", "string"]))
    if kind in _INT_RANGES:
        return FieldSpec("charge_count", "holding", 0, kind, word_order=order), draw(st.integers(*_INT_RANGES[kind]))
    if kind == "f32":
        return FieldSpec("voltage_v", "holding", 0, kind, word_order=order), draw(_finite32)
    if kind == "f64":
        return FieldSpec("voltage_v", "holding", 0, kind, word_order=order), draw(_finite64)
    if kind == "bool":
        return FieldSpec("door_open", "holding", 0, kind, word_order=order), draw(st.booleans())
    if kind == "bit":
        spec = FieldSpec("door_open", "input", 0, kind, word_order=order, bit=draw(st.integers(0, 15)))
        return spec, draw(st.booleans())
    length = draw(st.integers(1, 8))
    text = draw(st.text(st.characters(codec="ascii", categories=["L", "N", "P", "S"]), min_size=1,
                        max_size=2 * length))
    return FieldSpec("battery_id", "holding", 0, kind, length=length, word_order=order), text


@settings(max_examples=1500, deadline=None)
@given(_typed_values())
def test_encode_then_decode_is_identity_for_every_type_and_order(case: tuple[FieldSpec, object]) -> None:
    spec, value = case
    words = encode_value(spec, value)
    assert len(words) == spec.words and all(0 <= w <= 0xFFFF for w in words)
    decoded = decode_value(spec, words)
    assert decoded == value and type(decoded) is type(value)
    assert compile_decoder(spec)([7, *words, 7], 1) == value


@pytest.mark.parametrize("kind", sorted(_INT_RANGES))
@pytest.mark.parametrize("order", ORDERS)
def test_scaled_integers_round_trip_in_every_order(kind: str, order: str) -> None:
    spec = FieldSpec("temperature_c", "input", 0, kind, scale=0.1, offset_value=-40, word_order=order)
    for raw in (0, 1, 517, _INT_RANGES[kind][1]):
        value = round(raw * 0.1 - 40, 1)
        assert decode_value(spec, encode_value(spec, value)) == pytest.approx(value, abs=1e-6)


@pytest.mark.parametrize(("order", "words"), [
    ("ABCD", [0x41FC, 0x0000]), ("big", [0x41FC, 0x0000]),
    ("CDAB", [0x0000, 0x41FC]), ("little", [0x0000, 0x41FC]),
    ("BADC", [0xFC41, 0x0000]),
    ("DCBA", [0x0000, 0xFC41]),
])
def test_the_vendor_order_names_of_31_5(order: str, words: list[int]) -> None:
    """31.5 is 0x41FC0000: A B C D = 41 FC 00 00 (the example in docs/profiles.md)."""
    spec = FieldSpec("temperature_c", "input", 0, "f32", word_order=order)
    assert encode_value(spec, 31.5) == words
    assert decode_value(spec, words) == 31.5


@pytest.mark.parametrize(("order", "words"), [
    ("ABCD", [0x0102, 0x0304, 0x0506, 0x0708]),
    ("CDAB", [0x0708, 0x0506, 0x0304, 0x0102]), ("GHEFCDAB", [0x0708, 0x0506, 0x0304, 0x0102]),
    ("BADC", [0x0201, 0x0403, 0x0605, 0x0807]), ("BADCFEHG", [0x0201, 0x0403, 0x0605, 0x0807]),
    ("DCBA", [0x0807, 0x0605, 0x0403, 0x0201]), ("HGFEDCBA", [0x0807, 0x0605, 0x0403, 0x0201]),
])
def test_64_bit_orders_are_telegrafs(order: str, words: list[int]) -> None:
    spec = FieldSpec("charge_count", "input", 0, "u64", word_order=order)
    assert encode_value(spec, 0x0102030405060708) == words
    assert decode_value(spec, words) == 0x0102030405060708


def test_byte_swap_applies_to_one_register_and_to_bits() -> None:
    assert encode_value(FieldSpec("soc_pct", "input", 0, "u16", word_order="BADC"), 0x1234) == [0x3412]
    assert encode_value(FieldSpec("soc_pct", "input", 0, "u16", word_order="CDAB"), 0x1234) == [0x1234]
    door = FieldSpec("door_open", "input", 0, "bit", bit=1, word_order="DCBA")
    assert encode_value(door, True) == [0x0200]
    assert decode_value(door, [0x0200]) is True and decode_value(door, [0x0002]) is False
    assert compile_decoder(door)([0x0200], 0) is True


def test_wide_garbage_is_rejected_not_read() -> None:
    u64 = FieldSpec("charge_count", "input", 0, "u64")
    with pytest.raises(DecodeError, match="error/no-value pattern"):
        decode_value(u64, [0xFFFF] * 4)
    with pytest.raises(DecodeError, match="beyond any real count"):
        decode_value(u64, [0x8000, 0, 0, 1])
    f64 = FieldSpec("voltage_v", "input", 0, "f64", word_order="CDAB")
    with pytest.raises(DecodeError, match="not a finite number"):
        decode_value(f64, encode_raw(f64, math.nan))
    with pytest.raises(DecodeError, match="denormal"):
        decode_value(f64, encode_raw(f64, 1e-310))
    i64 = FieldSpec("charge_current_a", "input", 0, "i64", valid=(-100, 100))
    with pytest.raises(DecodeError, match="error/no-value pattern"):
        decode_value(i64, encode_raw(i64, 2**63 - 1))
    with pytest.raises(OverRange):  # a plausible value past the range is kept as the limit
        decode_value(i64, encode_raw(i64, 500))


# -- bit translation ----------------------------------------------------------------------------------


@st.composite
def _bitfield_specs(draw: st.DrawFn) -> FieldSpec:
    name = draw(st.sampled_from(sorted(BITFIELDS)))
    kind = draw(st.sampled_from(["u16", "u32", "u64"]))
    width = {"u16": 16, "u32": 32, "u64": 64}[kind]
    flags = sorted(BITFIELDS[name])
    bits = draw(st.dictionaries(st.integers(0, width - 1), st.sampled_from(flags), max_size=12))
    missing = draw(st.none() | st.just((1 << width) - 1))
    return FieldSpec(name, "input", 0, kind, word_order=draw(st.sampled_from(ORDERS)),
                     bits=tuple(sorted(bits.items())), missing=missing)


def _representable(spec: FieldSpec) -> int:
    mask = 0
    for _vendor, cascade in spec.translate:
        mask |= cascade
    return mask


@settings(max_examples=800, deadline=None)
@given(_bitfield_specs(), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_bits_maps_translate_both_ways_and_keep_the_rest(spec: FieldSpec, flags: int, vendor_raw: int) -> None:
    flags &= _representable(spec)
    words = encode_value(spec, flags, unmapped=vendor_raw)
    if spec.missing is not None and tuple(words) == spec.missing_words:
        return  # the vendor's raw pattern happens to be the "no value" sentinel
    assert decode_value(spec, words) == flags
    assert compile_decoder(spec)(words, 0) == flags
    unmapped = vendor_raw & ~spec.mapped_mask & ((1 << (16 * spec.words)) - 1)
    assert decode_unmapped(spec, words) == unmapped
    assert compile_unmapped(spec)(words, 0) == unmapped


def test_a_vendor_bit_at_a_cascade_position_gets_no_cascade_meaning() -> None:
    """Vendor bit 5 is 'cell balancing' (a status); Cascade's bit 5 is HIGH_TEMPERATURE."""
    spec = FieldSpec("bms_protection", "input", 0, "u16", bits=((0, "OVER_VOLTAGE"), (4, "HIGH_TEMPERATURE")))
    assert decode_value(spec, [1 << 5]) == 0
    assert decode_unmapped(spec, [1 << 5]) == 1 << 5
    assert decode_value(spec, [1 << 4 | 1 << 5]) == 1 << 5  # HIGH_TEMPERATURE, from vendor bit 4 only
    assert decode_unmapped(spec, [1 << 4 | 1 << 5]) == 1 << 5
    # Two vendor bits may mean one Cascade flag; encoding uses the first.
    both = FieldSpec("bms_protection", "input", 0, "u16", bits=((2, "OVER_CURRENT"), (3, "OVER_CURRENT")))
    assert decode_value(both, [1 << 3]) == 1 << 1
    assert encode_value(both, 1 << 1) == [1 << 2]
    # An empty map: no vendor bit has a Cascade meaning, every one is kept.
    none = FieldSpec("emergency_state", "input", 0, "u16", bits=())
    assert decode_value(none, [0x0007]) == 0 and decode_unmapped(none, [0x0007]) == 7


# -- robustness ---------------------------------------------------------------------------------------


@st.composite
def _any_spec(draw: st.DrawFn) -> FieldSpec:
    if draw(st.booleans()):
        return draw(_bitfield_specs())
    kind = draw(st.sampled_from([*_INT_RANGES, "f32", "f64", "bool", "bit", "string"]))
    order = draw(st.sampled_from(ORDERS))
    if kind in ("bool", "bit", "string"):
        return FieldSpec("door_open" if kind != "string" else "battery_id", "input", 0, kind, word_order=order,
                         bit=draw(st.integers(0, 15)) if kind == "bit" else None,
                         length=draw(st.integers(1, 4)) if kind == "string" else 0)
    scale = draw(st.sampled_from([1.0, 0.1, 0.001, 10.0, -0.5]))
    lo = draw(st.integers(-1000, 1000))
    valid = draw(st.none() | st.just((float(lo), float(lo + draw(st.integers(0, 5000))))))
    missing = draw(st.none() | st.integers(0, 0xFFFF))
    return FieldSpec("temperature_c", "input", 0, kind, scale=scale, offset_value=draw(st.sampled_from([0.0, -40.0])),
                     word_order=order, valid=valid, missing=missing)


@settings(max_examples=1500, deadline=None)
@given(_any_spec(), st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=8))
def test_decode_raises_nothing_but_decode_error(spec: FieldSpec, words: list[int]) -> None:
    for decode in (decode_value, decode_unmapped):
        try:
            value = decode(spec, words)
        except DecodeError:
            continue
        assert value is None or isinstance(value, (int, float, bool, str))


@settings(max_examples=1500, deadline=None)
@given(_any_spec(), st.lists(st.integers(0, 0xFFFF), min_size=12, max_size=12), st.integers(0, 4))
def test_compiled_decoders_agree_with_the_reference(spec: FieldSpec, words: list[int], index: int) -> None:
    window = words[index : index + spec.words]
    for reference, compiled in ((decode_value, compile_decoder(spec)), (decode_unmapped, compile_unmapped(spec))):
        try:
            expected = reference(spec, window)
        except DecodeError as err:
            with pytest.raises(type(err)):
                compiled(words, index)
            continue
        assert compiled(words, index) == expected


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("kind", ["u32", "i32", "f32"])
def test_compiled_32_bit_path_matches_on_the_edge_cases(order: str, kind: str) -> None:
    spec = FieldSpec("temperature_c", "input", 0, kind, scale=0.1, word_order=order, valid=(-40, 300),
                     missing=0x7FFF0000)
    raws = [0x7FFF0000, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0, 1, 2999, 3001, 0x7FC00000, 0x00000001, 0x41FC0000]
    decoder = compile_decoder(spec)
    for raw in raws:
        words = encode_raw(spec, raw)
        try:
            expected = decode_value(spec, words)
        except DecodeError as err:
            with pytest.raises(type(err), match=str(err).split(":")[0]):
                decoder([0, *words], 1)
            continue
        assert decoder([0, *words], 1) == expected, hex(raw)
