"""Register profiles, codec and read planner (issue: core pipeline, item 3)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.modbus.codec import DecodeError, OverRange, compile_decoder, decode_value, encode_value
from collectors.modbus.decode import decode_poll
from collectors.modbus.planner import MAX_REGISTERS, minimum_reads, plan_reads
from collectors.modbus.profile import FieldSpec, ProfileError, find_profile, load_profile
from core.model import CABINET_FIELDS, SLOT_FIELDS
from tests.fixtures.examples import examples

CASES = sorted((Path(__file__).parent / "profile_cases").iterdir())
SHIPPED = ["reference-cabinet", "volta-s8"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_profile_names_file_key_and_fix(case: Path) -> None:
    expected_key = (case / "expected_error.txt").read_text().strip()
    with pytest.raises(ProfileError) as info:
        load_profile(case / "profile.yaml")
    message = str(info.value)
    assert str(case / "profile.yaml") in message
    assert info.value.key == expected_key or expected_key in info.value.key, message
    assert "Fix:" in message


def test_unknown_profile_name_lists_shipped_ones() -> None:
    with pytest.raises(ProfileError, match="reference-cabinet"):
        find_profile("no-such-vendor")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_plan_the_minimum_reads(name: str) -> None:
    profile = find_profile(name)
    for slots in (1, profile.slot_count, 24):
        plan = plan_reads(profile, slots)
        assert len(plan) == minimum_reads(profile, slots)
        for request in plan:
            limit = 2000 if request.register_type in ("coil", "discrete") else MAX_REGISTERS
            assert 1 <= request.count <= limit
            for item in request.fields:  # no field is split across reads
                assert 0 <= item.index and item.index + item.spec.words <= request.count
        covered = {(i.slot, i.spec.field) for r in plan for i in r.fields}
        expected = {(None, s.field) for s in profile.cabinet_fields} | {
            (slot, s.field) for slot in range(1, slots + 1) for s in profile.slot_fields}
        assert covered == expected


def test_reference_profile_carries_every_model_field() -> None:
    profile = find_profile("reference-cabinet")
    assert {s.field for s in profile.slot_fields} == SLOT_FIELDS
    assert {s.field for s in profile.cabinet_fields} == CABINET_FIELDS


def test_profiles_differ_in_layout() -> None:
    ref, other = find_profile("reference-cabinet"), find_profile("volta-s8")
    assert ref.slot_base != other.slot_base
    assert {s.word_order for s in other.slot_fields if s.words == 2} == {"little"}


def test_gap_fill_is_configurable() -> None:
    profile = find_profile("reference-cabinet")
    assert len(plan_reads(profile, 12, max_gap=0)) > len(plan_reads(profile, 12))


@pytest.mark.parametrize(("data_type", "order", "value", "words"), [
    ("u16", "big", 65535, [0xFFFF]),
    ("i16", "big", -2, [0xFFFE]),
    ("u32", "big", 0x12345678, [0x1234, 0x5678]),
    ("u32", "little", 0x12345678, [0x5678, 0x1234]),
    ("i32", "little", -1, [0xFFFF, 0xFFFF]),
    ("f32", "big", 1.5, [0x3FC0, 0x0000]),
    ("f32", "little", 1.5, [0x0000, 0x3FC0]),
])
def test_codec_word_orders(data_type: str, order: str, value: float, words: list[int]) -> None:
    spec = FieldSpec("voltage_v", "holding", 0, data_type, word_order=order)
    assert encode_value(spec, value) == words
    assert decode_value(spec, words) == value


def test_scale_sentinel_and_range() -> None:
    spec = FieldSpec("temperature_c", "input", 0, "i16", scale=0.1, valid=(-40, 300), missing=0x7FFF)
    assert decode_value(spec, encode_value(spec, -12.3)) == -12.3
    assert decode_value(spec, [0x7FFF]) is None
    # Past the valid range but a plausible raw value: a sensor at its limit, kept as the limit.
    with pytest.raises(OverRange, match="kept as at least 300") as over:
        decode_value(spec, [5000])
    assert over.value.limit == 300
    with pytest.raises(OverRange, match="kept as at most -40") as under:
        decode_value(spec, [0x10000 - 600])  # -60.0 °C
    assert under.value.limit == -40
    # The signed extreme is an error pattern, not a measurement: rejected, never "at most -40".
    with pytest.raises(DecodeError, match="error/no-value pattern") as garbage:
        decode_value(spec, [0x8000])
    assert not isinstance(garbage.value, OverRange)
    fast = compile_decoder(spec)  # the compiled 16-bit path agrees
    with pytest.raises(OverRange):
        fast([5000], 0)
    with pytest.raises(DecodeError, match="error/no-value pattern"):
        fast([0x8000], 0)


def test_a_denormal_float_is_garbage_even_inside_the_valid_range() -> None:
    """31.5 °C as f32 read with the wrong word order is 2.4e-41: inside -40..300, but no measurement."""
    spec = FieldSpec("temperature_c", "holding", 0, "f32", valid=(-40, 300))
    swapped = list(reversed(encode_value(spec, 31.5)))
    with pytest.raises(DecodeError, match="implausibly small float.*wrong word order"):
        decode_value(spec, swapped)
    assert decode_value(spec, encode_value(spec, 31.5)) == 31.5
    # Not only denormals: 230 V from a CDAB device read as ABCD is 3.4e-17, normal but no measurement.
    volts = FieldSpec("input_voltage_v", "input", 0, "f32", word_order="CDAB", valid=(0, 500))
    wrong = FieldSpec("input_voltage_v", "input", 0, "f32", word_order="ABCD", valid=(0, 500))
    with pytest.raises(DecodeError, match="implausibly small"):
        decode_value(wrong, encode_value(volts, 230.0))


def test_nan_float_is_rejected() -> None:
    spec = FieldSpec("voltage_v", "holding", 0, "f32")
    nan = struct.unpack(">HH", struct.pack(">f", math.nan))
    with pytest.raises(DecodeError, match="not a finite number"):
        decode_value(spec, list(nan))


def test_string_roundtrip() -> None:
    spec = FieldSpec("battery_id", "holding", 0, "string", length=5)
    assert decode_value(spec, encode_value(spec, "13IMP16/6")) == "13IMP16/6"
    with pytest.raises(DecodeError, match="UTF-8"):
        decode_value(spec, [0xFFFE, 0, 0, 0, 0])


_SPECS = [s for name in SHIPPED for s in (*find_profile(name).cabinet_fields, *find_profile(name).slot_fields)]


@settings(max_examples=examples(400), deadline=None)
@given(st.sampled_from(_SPECS), st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=70))
def test_decode_returns_a_value_or_its_own_error(spec: FieldSpec, words: list[int]) -> None:
    try:
        value = decode_value(spec, words)
    except DecodeError:
        return
    assert value is None or isinstance(value, (int, float, bool, str))


@settings(max_examples=examples(60), deadline=None)
@given(st.data())
def test_decode_poll_keeps_good_fields_when_others_are_garbage(data: st.DataObject) -> None:
    profile = find_profile("reference-cabinet")
    plan = plan_reads(profile, 3)
    responses = [data.draw(st.lists(st.integers(0, 0xFFFF), min_size=r.count, max_size=r.count))
                 if r.register_type not in ("coil", "discrete") else [True] * r.count for r in plan]
    reading, errors = decode_poll(plan, responses, cabinet_id="C1", site="s", model=profile.model,
                                  slot_count=3, timestamp_ns=1)
    rejected = {(e.slot, e.field) for e in errors}
    for slot in reading.slots:
        for spec in profile.slot_fields:
            if (slot.slot, spec.field) not in rejected and spec.data_type != "string":
                assert getattr(slot, spec.field) is not None or spec.missing is not None
    for err in errors:
        assert err.cabinet_id == "C1" and err.address >= 0 and err.reason


@pytest.mark.parametrize(("name", "doc"), [("reference-cabinet", "register-map.md"),
                                           ("volta-s8", "register-map-volta-s8.md")])
def test_register_map_docs_are_generated_from_the_profiles(name: str, doc: str) -> None:
    from collectors.modbus.mapdoc import render_register_map
    committed = (Path(__file__).parents[1] / "docs" / doc).read_text(encoding="utf-8")
    assert committed == render_register_map(find_profile(name)), \
        f"docs/{doc} is stale: run python -m collectors.modbus.mapdoc {name} > docs/{doc}"


@settings(max_examples=examples(400), deadline=None)
@given(st.sampled_from(_SPECS), st.lists(st.integers(0, 0xFFFF), min_size=70, max_size=70),
       st.integers(0, 5))
def test_compiled_decoder_agrees_with_decode_value(spec: FieldSpec, words: list[int], index: int) -> None:
    from collectors.modbus.codec import compile_decoder
    decoder = compile_decoder(spec)
    try:
        expected = decode_value(spec, words[index : index + spec.words])
    except DecodeError:
        with pytest.raises(DecodeError):
            decoder(words, index)
        return
    assert decoder(words, index) == expected


def test_text_with_control_characters_is_rejected_as_that_field_only() -> None:
    spec = FieldSpec("battery_id", "holding", 0, "string", length=5)
    with pytest.raises(DecodeError, match="control characters"):
        decode_value(spec, encode_value(spec, "NM48\n001"))
