"""Register decoding (collectors/modbus/codec.py): what a garbage or out-of-range register is called,
word by word, for the reference decoder and the compiled one alike (the text is what an operator
reads in a FieldError). Written to kill the mutants `make mutate` found alive."""

from __future__ import annotations

import struct

import pytest

from collectors.modbus.codec import (
    DecodeError,
    OverRange,
    compile_decoder,
    decode_unmapped,
    decode_value,
    encode_raw,
    encode_value,
)
from collectors.modbus.profile import FieldSpec


def _f32(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def _both(spec: FieldSpec, words: list[int]):
    """The outcome of decode_value and of the compiled decoder (at an offset in a longer read)."""
    outcomes = []
    for decode in (lambda: decode_value(spec, words), lambda: compile_decoder(spec)([0xAAAA, *words, 0xBBBB], 1)):
        try:
            outcomes.append(("ok", decode()))
        except OverRange as err:
            outcomes.append(("over", str(err), err.limit))
        except DecodeError as err:
            outcomes.append(("garbage", str(err)))
    assert outcomes[0] == outcomes[1], "the compiled decoder must agree with decode_value"
    return outcomes[0]


GARBAGE = [
    (FieldSpec("battery_id", "holding", 0, "string", length=2), [0xFFFE, 0x4142],
     "battery_id: not UTF-8 text (b'\\xff\\xfeAB')"),
    (FieldSpec("battery_id", "holding", 0, "string", length=2), [0x410A, 0x4200],
     "battery_id: control characters in text ('A\\nB')"),
    (FieldSpec("temperature_c", "input", 0, "f32"), [0x7FC0, 0], "temperature_c: nan is not a finite number"),
    (FieldSpec("temperature_c", "input", 0, "f32"), [0xFF80, 0], "temperature_c: -inf is not a finite number"),
    (FieldSpec("temperature_c", "input", 0, "f64"), [0x7FF8, 0, 0, 0], "temperature_c: nan is not a finite number"),
    (FieldSpec("temperature_c", "input", 0, "f32", word_order="CDAB"), [0x41FC, 0x0000],
     "temperature_c: 2.36707e-41 is an implausibly small float (denormal or near it), not a measurement "
     "(wrong word order? the profile says 'CDAB')"),
    (FieldSpec("temperature_c", "input", 0, "f64"), [0, 0, 0, 1],
     "temperature_c: 4.94066e-324 is an implausibly small float (denormal or near it), not a measurement "
     "(wrong word order? the profile says 'ABCD')"),
    (FieldSpec("charge_start_time_s", "input", 0, "u64"), [0xFFFF] * 4,
     "charge_start_time_s: raw 0xFFFFFFFFFFFFFFFF is an error/no-value pattern, not a measurement"),
    (FieldSpec("charge_start_time_s", "input", 0, "u64"), [0x8000, 0, 0, 1],
     "charge_start_time_s: raw 0x8000000000000001 is beyond any real count, not a measurement"),
    (FieldSpec("soc_pct", "input", 0, "u16", valid=(0, 100), unit="%"), [0xFFFF],
     "soc_pct: raw 0xFFFF is an error/no-value pattern, not a measurement (65535 % is outside the valid "
     "range 0..100)"),
    (FieldSpec("temperature_c", "input", 0, "i16", scale=0.1, valid=(-40, 300), unit="degC"), [0x8000],
     "temperature_c: raw 0x8000 is an error/no-value pattern, not a measurement (-3276.8 degC is outside the "
     "valid range -40..300)"),
    (FieldSpec("temperature_c", "input", 0, "i16", scale=0.1, valid=(-40, 300), unit="degC"), [0x7FFF],
     "temperature_c: raw 0x7FFF is an error/no-value pattern, not a measurement (3276.7 degC is outside the "
     "valid range -40..300)"),
    (FieldSpec("input_power_w", "input", 0, "u32", valid=(0, 1000), unit="W"), [0xFFFF, 0xFFFF],
     "input_power_w: raw 0xFFFFFFFF is an error/no-value pattern, not a measurement (4.29497e+09 W is outside "
     "the valid range 0..1000)"),
    (FieldSpec("input_power_w", "input", 0, "i32", valid=(-10, 1000), unit="W"), [0x8000, 0],
     "input_power_w: raw 0x80000000 is an error/no-value pattern, not a measurement (-2.14748e+09 W is outside "
     "the valid range -10..1000)"),
]


@pytest.mark.parametrize(("spec", "words", "message"), GARBAGE, ids=[m.split(":")[1][:40] for _, _, m in GARBAGE])
def test_garbage_is_rejected_with_what_it_is(spec: FieldSpec, words: list[int], message: str) -> None:
    assert _both(spec, words) == ("garbage", message)


OVER = [
    (FieldSpec("soc_pct", "input", 0, "u16", valid=(0, 100), unit="%"), [150],
     "soc_pct: 150 % beyond the valid range 0..100: kept as at least 100 %", 100),
    (FieldSpec("temperature_c", "input", 0, "i16", scale=0.1, valid=(-40, 300), unit="degC"), [0xFE00],
     "temperature_c: -51.2 degC beyond the valid range -40..300: kept as at most -40 degC", -40),
    (FieldSpec("input_power_w", "input", 0, "i32", valid=(0, 1000), unit="W", scale=0.5), [0, 5000],
     "input_power_w: 2500 W beyond the valid range 0..1000: kept as at least 1000 W", 1000),
    (FieldSpec("input_power_w", "input", 0, "u32", valid=(10, 1000), unit="W", word_order="CDAB"), [5, 0],
     "input_power_w: 5 W beyond the valid range 10..1000: kept as at most 10 W", 10),
    (FieldSpec("temperature_c", "input", 0, "f32", valid=(0, 100), unit="degC"), _f32(150.0),
     "temperature_c: 150 degC beyond the valid range 0..100: kept as at least 100 degC", 100),
    (FieldSpec("temperature_c", "input", 0, "f32", valid=(0, 100), unit="degC", scale=10), _f32(-0.5),
     "temperature_c: -5 degC beyond the valid range 0..100: kept as at most 0 degC", 0),
]


@pytest.mark.parametrize(("spec", "words", "message", "limit"), OVER, ids=[m[:40] for _, _, m, _ in OVER])
def test_a_value_past_its_range_is_kept_at_the_limit(spec: FieldSpec, words: list[int], message: str,
                                                      limit: float) -> None:
    assert _both(spec, words) == ("over", message, limit)


@pytest.mark.parametrize(("spec", "words", "value"), [
    (FieldSpec("soc_pct", "input", 0, "u16", valid=(0, 100)), [100], 100),  # the limits themselves are valid
    (FieldSpec("soc_pct", "input", 0, "u16", valid=(0, 100)), [0], 0),
    (FieldSpec("temperature_c", "input", 0, "i16", scale=0.1, valid=(-40, 300)), [0xFE70], -40.0),
    (FieldSpec("temperature_c", "input", 0, "i16", scale=0.1), [0x7FFF], 3276.7),  # no range: a sentinel is a value
    (FieldSpec("voltage_v", "input", 0, "u16", scale=0.1), [521], 52.1),
    (FieldSpec("voltage_v", "input", 0, "u32", scale=0.001, word_order="CDAB"), [0xD431, 0x0000], 54.321),
    (FieldSpec("input_power_w", "input", 0, "i32"), [0xFFFF, 0xFFFE], -2),
    (FieldSpec("input_power_w", "input", 0, "i32", word_order="DCBA"), [0xFEFF, 0xFFFF], -2),
    (FieldSpec("temperature_c", "input", 0, "f32", valid=(0, 100)), _f32(0.0), 0.0),  # zero is not "tiny"
    (FieldSpec("temperature_c", "input", 0, "f32", word_order="BADC"), [0xFC41, 0x0000], 31.5),
    (FieldSpec("temperature_c", "input", 0, "f32", scale=0.5), _f32(3.3), 1.65),
    (FieldSpec("soc_pct", "input", 0, "u16", missing=0xFFFF, valid=(0, 100)), [0xFFFF], None),
    (FieldSpec("input_power_w", "input", 0, "u32", missing=0xFFFFFFFF), [0xFFFF, 0xFFFF], None),
    (FieldSpec("input_power_w", "input", 0, "u32", missing=0xFFFFFFFF), [0xFFFF, 0xFFFE], 0xFFFFFFFE),
    (FieldSpec("temperature_c", "input", 0, "i16", offset_value=-40), [65], 25.0),
    (FieldSpec("input_power_w", "input", 0, "u32", scale=2), [0x0001, 0x0002], 131076.0),  # a scale of 2 applies
    (FieldSpec("input_power_w", "input", 0, "u32", valid=(0, 1000)), [0, 1000], 1000),  # 32 bits: the limits too
    (FieldSpec("input_power_w", "input", 0, "i32", valid=(-10, 1000)), [0xFFFF, 0xFFF6], -10),
    (FieldSpec("temperature_c", "input", 0, "f32", valid=(0, 100)), _f32(100.0), 100.0),
])
def test_good_registers_decode_to_their_value(spec: FieldSpec, words: list[int], value: object) -> None:
    result = _both(spec, words)
    assert result[0] == "ok" and result[1] == (pytest.approx(value) if isinstance(value, float) else value)
    assert type(result[1]) is type(value)


def test_the_reference_decoder_checks_the_register_count() -> None:
    with pytest.raises(DecodeError) as info:
        decode_value(FieldSpec("soc_pct", "input", 0, "u16"), [1, 2])
    assert str(info.value) == "soc_pct: expected 1 registers, got 2"


def test_the_unmapped_bits_decoder_checks_the_register_count() -> None:
    spec = FieldSpec("bms_protection", "input", 0, "u32", bits=((0, "OVER_VOLTAGE"),))
    with pytest.raises(DecodeError) as info:
        decode_unmapped(spec, [1])
    assert str(info.value) == "bms_protection: expected 2 registers, got 1"


# -- the simulator's side of the wire ---------------------------------------------------------------

def test_booleans_and_text_are_encoded_as_the_registers_a_device_holds() -> None:
    flag = FieldSpec("door_open", "input", 0, "bool")
    assert encode_value(flag, True) == [1] and encode_value(flag, False) == [0]
    text = FieldSpec("battery_id", "holding", 0, "string", length=2)
    assert encode_value(text, "AB") == [0x4142, 0x0000]  # padded with NUL, not spaces
    assert encode_value(text, "ABCDEFG") == [0x4142, 0x4344]  # cut to the field's registers
    assert encode_value(text, None) == [0, 0]


def test_none_is_the_missing_sentinel_and_text_is_no_number() -> None:
    assert encode_value(FieldSpec("soc_pct", "input", 0, "u16", missing=0xFFFF), None) == [0xFFFF]
    with pytest.raises(ValueError) as info:
        encode_value(FieldSpec("soc_pct", "input", 0, "u16"), None)
    assert str(info.value) == "soc_pct: no 'missing' sentinel declared, cannot encode None"
    with pytest.raises(ValueError) as info:
        encode_value(FieldSpec("soc_pct", "input", 0, "u16"), "50")
    assert str(info.value) == "soc_pct: cannot encode text '50' as u16"


def test_raw_patterns_wrap_to_the_field_width() -> None:
    assert encode_raw(FieldSpec("soc_pct", "input", 0, "u16"), -1) == [0xFFFF]
    assert encode_raw(FieldSpec("input_power_w", "input", 0, "u32", word_order="CDAB"), -2) == [0xFFFE, 0xFFFF]
    assert encode_raw(FieldSpec("input_power_w", "input", 0, "u32"), 0x1_0000_0001) == [0x0000, 0x0001]


def test_a_field_without_a_unit_has_no_stray_spaces_in_its_messages() -> None:
    spec = FieldSpec("charge_count", "input", 0, "u16", valid=(0, 10))
    assert _both(spec, [20]) == ("over", "charge_count: 20 beyond the valid range 0..10: kept as at least 10", 10)
    assert _both(spec, [0xFFFF]) == ("garbage", "charge_count: raw 0xFFFF is an error/no-value pattern, not a "
                                                "measurement (65535 is outside the valid range 0..10)")
