"""The read plan compiled to one function (collectors/modbus/decode.py ``compile_plan``) decodes exactly as
``decode_poll``: the same reading, the same errors in the same order, on every shipped profile and on
profiles edited at random, for random register words, the no-value patterns and reads that failed.

The behaviour itself is stated from outside in test_mutation_decode.py, test_vendor_profiles.py and
test_profiles.py, which run against both implementations; here the two are held to each other on inputs
those tests do not reach."""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from collectors.modbus.codec import _exact_divisor
from collectors.modbus.decode import compile_plan, decode_poll, shared_decoder
from collectors.modbus.planner import plan_reads, shared_plan
from collectors.modbus.profile import PROFILE_DIR, Profile, ProfileError, find_profile, load_profile
from tests.fixtures.examples import examples

_SHIPPED = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
# Words a device sends that decoders treat specially: zero, all ones, the signed extremes, NaN and
# infinity halves of a float, and a random word.
_WORD = st.one_of(st.sampled_from([0, 1, 0xFFFF, 0x8000, 0x7FFF, 0x7FC0, 0x7F80, 0xFF80, 0x00FF, 0xFF00]),
                  st.integers(0, 0xFFFF))


def _responses(data: st.DataObject, plan) -> list:
    out = []
    for request in plan:
        if data.draw(st.integers(0, 9)) == 0:
            out.append(None)  # a read the device refused with an exception
        elif request.register_type in ("coil", "discrete"):
            out.append(data.draw(st.lists(st.booleans(), min_size=request.count, max_size=request.count)))
        else:
            out.append(data.draw(st.lists(_WORD, min_size=request.count, max_size=request.count)))
    return out


def _same(plan, slots: int, responses: list) -> None:
    args = {"cabinet_id": "C1", "site": "s", "model": "m", "timestamp_ns": 7}
    expected = decode_poll(plan, responses, slot_count=slots, **args)
    got = compile_plan(plan, slots)(responses, **args)
    assert got[0] == expected[0]
    assert [str(e) for e in got[1]] == [str(e) for e in expected[1]]
    assert got[1] == expected[1]
    # the same types too (1 == 1.0 == True would hide a wrong one)
    for mine, theirs in zip([got[0], *got[0].slots], [expected[0], *expected[0].slots]):
        for name in type(mine).__slots__:
            assert type(getattr(mine, name)) is type(getattr(theirs, name)), name


@pytest.mark.parametrize("name", _SHIPPED)
@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_shipped_profiles_decode_the_same_compiled(name: str, data: st.DataObject) -> None:
    profile = find_profile(name)
    slots = min(profile.slot_count, 4)
    plan = plan_reads(profile, slots)
    _same(plan, slots, _responses(data, plan))


_KESTREL = yaml.safe_load((PROFILE_DIR / "kestrel-k10.yaml").read_text(encoding="utf-8"))
_EDITS = st.fixed_dictionaries({
    "type": st.sampled_from(["u16", "i16", "u32", "i32", "f32", "bit", "bool"]),
    "scale": st.sampled_from([1, 0.1, 0.01, 0.001, 0.5, 0.05, 2, 10, 0.25]),
    "valid": st.one_of(st.none(), st.tuples(st.integers(-200, 100), st.integers(100, 70000)).map(list)),
    "missing": st.one_of(st.none(), st.sampled_from([0xFFFF, 0x8000, 0])),
    "word_order": st.sampled_from(["ABCD", "CDAB", "BADC", "DCBA"]),
    "bit": st.integers(0, 15),
})


def _edited(section: str, index: int, edit: dict) -> Profile | None:
    doc = copy.deepcopy(_KESTREL)
    entries = doc[section]
    entry = entries[index % len(entries)]
    for key, value in edit.items():
        if value is None:
            entry.pop(key, None)
        elif key != "bit" or edit["type"] == "bit":
            entry[key] = value
    if edit["type"] != "bit":
        entry.pop("bit", None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        try:
            return load_profile(path)
        except ProfileError:
            return None


@settings(max_examples=examples(200), deadline=None)
@given(st.sampled_from(["cabinet", "slot", "extra"]), st.integers(0, 40), _EDITS, st.data())
def test_edited_profiles_decode_the_same_compiled(section: str, index: int, edit: dict, data: st.DataObject) -> None:
    profile = _edited(section, index, edit)
    if profile is None:
        return
    plan = plan_reads(profile, 2)
    _same(plan, 2, _responses(data, plan))


def test_a_division_stands_for_scale_and_rounding_only_where_it_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors.modbus import codec

    monkeypatch.setattr(codec, "_divisors", {})  # decided here, not remembered from an earlier test
    # 0.1 (and its powers) with the profile's rounding: raw / 10 is the same float for every 16-bit raw value.
    for scale, decimals, divisor in ((0.1, 3, 10), (0.01, 4, 100), (0.001, 5, 1000), (0.0001, 6, 10000)):
        assert _exact_divisor(scale, decimals) == divisor
        assert all(raw / divisor == round(raw * scale, decimals) for raw in range(-0x8000, 0x10000, 7))
    # not a power of ten, or rounded to fewer places than the scale has: no division
    assert _exact_divisor(0.5, 3) is None and _exact_divisor(0.05, 4) is None and _exact_divisor(0.01, 1) is None


def test_a_wrong_number_of_responses_decodes_as_decode_poll_does() -> None:
    profile = find_profile("reference-cabinet")
    plan = plan_reads(profile, 2)
    responses = [[0] * r.count if r.register_type not in ("coil", "discrete") else [False] * r.count
                 for r in plan][:-1]
    _same(plan, 2, responses)


def test_one_compiled_decoder_per_shared_plan() -> None:
    profile = find_profile("reference-cabinet")
    plan = shared_plan(profile, 12)
    assert shared_decoder(plan, 12) is shared_decoder(shared_plan(profile, 12), 12)
    assert shared_decoder(plan, 11) is not shared_decoder(plan, 12)


@pytest.mark.parametrize("words", [[0x4142, 0x4300], [0x4142], [0x1_4142, 0x4300], [0x4142, 0x0041], [0x2020, 0x2020],
                                   [0xC3A9, 0x0000], [0xFF41, 0x4200], [0x4109, 0x4200]])
def test_text_decodes_as_decode_value_says(words: list[int]) -> None:
    """Text fields have a compiled decoder of their own: same value or same error as decode_value, for a
    short read at the end of a response and a word past 16 bits too."""
    from collectors.modbus.codec import DecodeError, compile_decoder, decode_value
    from collectors.modbus.profile import FieldSpec

    spec = FieldSpec("battery_id", "holding", 0, "string", length=2)
    outcomes = []
    for decode in (lambda: decode_value(spec, words), lambda: compile_decoder(spec)([7, *words], 1)):
        try:
            outcomes.append(("ok", decode()))
        except DecodeError as err:
            outcomes.append(("error", str(err)))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("name", _SHIPPED)
def test_every_shipped_plan_is_compiled_not_handed_to_the_reference(name: str) -> None:
    profile = find_profile(name)
    for slots in (1, min(profile.slot_count, 12)):
        decoder = compile_plan(plan_reads(profile, slots), slots)
        assert decoder.__code__.co_filename.startswith("<read plan:"), decoder.__code__.co_filename


def test_a_plan_with_a_slot_past_the_count_is_decoded_by_decode_poll_itself() -> None:
    profile = find_profile("reference-cabinet")
    plan = plan_reads(profile, 3)
    decoder = compile_plan(plan, 2)  # slot 3's fields have no reading to go to
    assert not decoder.__code__.co_filename.startswith("<read plan:")
    responses = [[0] * r.count if r.register_type not in ("coil", "discrete") else [False] * r.count for r in plan]
    with pytest.raises(IndexError):  # as decode_poll does: the plan does not fit the slot count
        decoder(responses, cabinet_id="C1", site="s", model="m", timestamp_ns=1)


def test_the_shared_decoders_are_bounded_least_recently_used_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import OrderedDict

    from collectors.modbus import decode

    monkeypatch.setattr(decode, "_SHARED_MAX", 2)
    monkeypatch.setattr(decode, "_shared", OrderedDict())
    profile = find_profile("volta-s8")
    plans = [shared_plan(profile, n) for n in (1, 2, 3)]
    first = shared_decoder(plans[0], 1)
    shared_decoder(plans[1], 2)
    assert shared_decoder(plans[0], 1) is first  # used again: now the most recent
    shared_decoder(plans[2], 3)  # the third pushes out the least recently used (plans[1])
    assert len(decode._shared) == 2
    assert shared_decoder(plans[0], 1) is first
    assert id(plans[1]) not in decode._shared


def test_sixteen_bit_and_bit_fields_are_written_out_and_only_the_others_call_their_decoder() -> None:
    """What makes the compiled plan fast, held here so a change cannot quietly give it up: 16-bit numbers
    and bits as statements (a power-of-ten scale as a division), a call only for the other fields, the
    stored type's check only where the decoder's type is not known when the plan is compiled."""
    from collectors.modbus import codec
    from collectors.modbus.codec import INLINE_KINDS

    plan = plan_reads(find_profile("reference-cabinet"), 12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "_divisors", {})  # the divisions decided for this plan, not remembered
        source = compile_plan(plan, 12).source
    slices = [f for r in plan for f in r.fields]
    called = [f for f in slices if getattr(f.decode, "inline", None) not in INLINE_KINDS]
    assert 0 < len(called) < len(slices) / 5
    assert source.count("(w, ") == len(called)
    assert len(re.findall(r"type\([vx]\d+\) is not", source)) == sum(1 for f in called if f.kind is not None)
    assert " / 10" in source and "round(" not in source
    # a decoder it cannot write out gets no statements: the plan calls it
    text = next(f for f in slices if f.spec.data_type == "string")
    assert codec.inline_source(text.decode, text.spec, "w", 0, "v", repr, "_Unusual") is None


def test_the_compiled_plan_holds_the_common_path_only() -> None:
    """A field past its range or rejected is decoded again by decode_read, so the generated code has no
    handler per field: one per read. That keeps it small: the compiler's memory for a 5,000-line function
    stayed with the process (about 20 MiB at start-up, charged to every cabinet)."""
    plan = plan_reads(find_profile("reference-cabinet"), 12)
    source = compile_plan(plan, 12).source
    fields = sum(len(r.fields) for r in plan)
    assert source.count("except") == source.count("try:") == len(plan)
    assert source.count("decode_read(") == len(plan)
    assert source.count("\n") < 3 * fields  # was 13 lines a field


def test_hand_built_plans_decode_the_same_compiled() -> None:
    """Plans no profile file makes but code can: an integer scale (the stored type follows the decoder's), a
    read without fields, a word past 16 bits where no word means "not available"."""
    from collectors.modbus.planner import FieldSlice, ReadRequest
    from collectors.modbus.profile import FieldSpec

    twice = FieldSpec("input_power_w", "input", 0, "u16", scale=2)
    signed = FieldSpec("cabinet_temperature_c", "input", 1, "i16", scale=0.1)
    raw = FieldSpec("device_fault_code", "input", 2, "u16", missing=0xFFFF)  # an int as sent: a no-value check only
    plan = [ReadRequest("input", 0, 3, (FieldSlice(None, twice, 0), FieldSlice(None, signed, 1),
                                        FieldSlice(None, raw, 2))),
            ReadRequest("input", 10, 1, ())]
    for responses in ([[3, 0xFFF6, 0xFFFF], [0]], [[0x1_0003, -1, 7], None], [None, [1]]):
        _same(plan, 1, responses)
    source = compile_plan(plan, 1).source
    assert "== 65535: v2 = None" in source


@pytest.mark.parametrize("order", ["ABCD", "BADC", "DCBA"])
def test_a_bit_in_a_byte_swapped_word_decodes_the_same_compiled(order: str) -> None:
    """A bit field of a device that sends its bytes swapped: the compiled plan tests the swapped mask, as the
    field's decoder does (bit 3 of the value is bit 11 on the wire)."""
    from collectors.modbus.planner import FieldSlice, ReadRequest
    from collectors.modbus.profile import FieldSpec

    smoke = FieldSpec("smoke_detected", "input", 0, "bit", bit=3, word_order=order)
    plan = [ReadRequest("input", 0, 1, (FieldSlice(None, smoke, 0),))]
    for word in (0x0008, 0x0800, 0x0808, 0):
        _same(plan, 1, [[word]])
    swapped = order != "ABCD"
    got = compile_plan(plan, 1)([[0x0800]], cabinet_id="C1", site="s", model="m", timestamp_ns=1)[0]
    assert got.smoke_detected is swapped


def test_a_plan_it_cannot_write_is_decoded_by_decode_poll_with_every_argument() -> None:
    """A slot field named like a reading's own bookkeeping (``over_range``) cannot become a constructor
    argument of the generated code: such a plan is decoded by ``decode_poll``, handed the cabinet, site,
    model, time and slot count as given."""
    from collectors.modbus.planner import FieldSlice, ReadRequest
    from collectors.modbus.profile import FieldSpec

    odd = FieldSpec("over_range", "input", 0, "u16")
    temp = FieldSpec("cell_temperature_max_c", "input", 1, "i16", scale=0.1)
    plan = [ReadRequest("input", 0, 2, (FieldSlice(2, odd, 0), FieldSlice(1, temp, 1)))]
    decoder = compile_plan(plan, 2)
    assert not decoder.__code__.co_filename.startswith("<read plan:")
    for responses in ([[0, 250]], [[5, 0xFFF6]], [None]):
        _same(plan, 2, responses)
    reading = decoder([[0, 250]], cabinet_id="C9", site="north", model="m2", timestamp_ns=11)[0]
    assert (reading.cabinet_id, reading.site, reading.model, reading.timestamp_ns) == ("C9", "north", "m2", 11)
    assert [s.slot for s in reading.slots] == [1, 2] and reading.slots[0].cell_temperature_max_c == 25.0


@pytest.mark.parametrize("name", ["reference-cabinet", "volta-s8", "kestrel-k10"])
def test_the_compiled_plan_converts_only_what_needs_it_and_guards_only_what_can_be_none(name: str) -> None:
    """The other half of the speed: a written-out 16-bit value comes out an int (a float when scaled by a
    fraction) and a bit a bool, so only a field stored as another type gets a conversion, written where
    the value is known not to be None; only a called decoder's value (its type known only when it runs)
    is checked for None and its type first."""
    from collectors.modbus import codec
    from collectors.modbus.codec import INLINE_KINDS

    profile = find_profile(name)
    plan = plan_reads(profile, min(profile.slot_count, 4))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "_divisors", {})
        lines = [line.strip() for line in compile_plan(plan, min(profile.slot_count, 4)).source.splitlines()]
    guarded = converted = 0
    for f in (f for r in plan for f in r.fields):
        inline = getattr(f.decode, "inline", None)
        if f.kind is None:
            continue
        if inline not in INLINE_KINDS:
            guarded += 1
            continue
        gives = bool if inline in ("bool", "bit") else \
            float if f.spec.scale != 1 and isinstance(f.spec.scale, float) else int
        converted += gives is not f.kind
    assert sum(bool(re.match(r"if [vx]\d+ is not None and type\([vx]\d+\) is not k\d+: [vx]\d+ = _coerce\(", line))
               for line in lines) == guarded
    assert sum(bool(re.match(r"([vx]\d+) = (float\(\1\)|int\(round\(\1\)\)|_coerce\(k\d+, \1\))$", line))
               for line in lines) == converted
    # besides the check of a called decoder's value, None is checked only to keep an extra register out
    assert not any(re.match(r"if [vx]\d+ is not None", line) and "type(" not in line
                   and not re.fullmatch(r"if x\d+ is not None:", line) for line in lines)
