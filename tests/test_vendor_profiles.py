"""A new vendor, safely: the profile schema (word order names, bit fields, bits maps, extras), what
the decoder makes of a vendor's own bit layout, and the generated profile reference.

Bad profiles that must name their key live in tests/profile_cases/ (tests/test_profiles.py runs them).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.modbus.decode import compile_plan, decode_poll
from collectors.modbus.mapdoc import render_profile_reference, render_register_map
from collectors.modbus.planner import MAX_REGISTERS, minimum_reads, plan_reads
from collectors.modbus.profile import Profile, ProfileError, find_profile, load_profile
from core.model import CABINET_FIELDS, FIELD_KINDS, SLOT_FIELDS, BmsProtection, EmergencyState
from tests.fixtures.examples import examples

DOCS = Path(__file__).parents[1] / "docs"

_HEAD = "model: t\nslots: {count: 2, base: {input: 1000, coil: 10}, stride: {input: 40, coil: 1}}\n"


def _load(tmp_path: Path, body: str) -> Profile:
    path = tmp_path / "t.yaml"
    path.write_text(_HEAD + body, encoding="utf-8")
    return load_profile(path)


def _error(tmp_path: Path, body: str) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        _load(tmp_path, body)
    assert str(tmp_path / "t.yaml") in str(info.value) and "Fix:" in str(info.value)
    return info.value


def _poll(profile: Profile, registers: dict[int, int], slots: int = 1):
    """Decode a poll from a sparse register image (input registers by address; coils off)."""
    plan = plan_reads(profile, slots)
    responses = [[registers.get(r.address + i, 0) for i in range(r.count)] if r.register_type == "input"
                 else [False] * r.count for r in plan]
    reading = decode_poll(plan, responses, cabinet_id="C1", site="s", model=profile.model, slot_count=slots,
                          timestamp_ns=1)
    # the plan compiled to one function (what a cabinet polls with) decodes the same
    assert compile_plan(plan, slots)(responses, cabinet_id="C1", site="s", model=profile.model,
                                     timestamp_ns=1) == reading
    return reading


# -- schema --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "swapped_words", "swapped_bytes"), [
    ("ABCD", False, False), ("abcd", False, False), ("big", False, False),
    ("CDAB", True, False), ("cdab", True, False), ("little", True, False), ("GHEFCDAB", True, False),
    ("BADC", False, True), ("DCBA", True, True),
])
def test_word_order_takes_the_vendors_names(tmp_path: Path, name: str, swapped_words: bool,
                                            swapped_bytes: bool) -> None:
    profile = _load(tmp_path, f"word_order: {name}\nslot: [{{field: voltage_v, register: input, offset: 0, "
                              f"type: f32}}]\n")
    spec = profile.slot_fields[0]
    assert (spec.swap_words, spec.swap_bytes) == (swapped_words, swapped_bytes)


def test_the_default_order_is_abcd_and_a_field_may_override_it(tmp_path: Path) -> None:
    profile = _load(tmp_path, "slot:\n  - {field: voltage_v, register: input, offset: 0, type: f32}\n"
                              "  - {field: temperature_c, register: input, offset: 2, type: f32, word_order: DCBA}\n")
    assert profile.word_order == "ABCD"
    assert [s.word_order for s in profile.slot_fields] == ["ABCD", "DCBA"]


def test_commands_are_optional(tmp_path: Path) -> None:
    profile = _load(tmp_path, "slot: [{field: soc_pct, register: input, offset: 0, type: u16}]\n")
    assert profile.commands == {}


@pytest.mark.parametrize(("body", "key", "says"), [
    ("slot: [{field: soc_pct, register: input, address: 0, type: u16}]\n", "slot[0].address", "use offset"),
    ("slot: [{field: soc_pct, register: input, offset: 0, type: u16, length: 4}]\n",
     "slot[0](soc_pct).length", "only strings"),
    ("slot: [{field: soc_pct, register: input, offset: 0, type: u16, bit: 3}]\n", "slot[0](soc_pct).bit",
     "only a type: bit"),
    ("slot: [{field: soc_pct, register: input, offset: 0, type: u16, scale: 0}]\n", "slot[0](soc_pct).scale",
     "non-zero"),
    ("slot: [{field: soc_pct, register: input, offset: 0, type: u16, valid: [5, 1]}]\n", "slot[0](soc_pct).valid",
     "[min, max]"),
    ("slot: [{field: bms_protection, register: input, offset: 0, type: i16, bits: {0: OVER_VOLTAGE}}]\n",
     "slot[0](bms_protection).bits", "unsigned"),
    ("slot: [{field: bms_protection, register: input, offset: 0, type: u16, scale: 2, bits: {0: OVER_VOLTAGE}}]\n",
     "slot[0](bms_protection).scale", "bits map"),
    ("slot: [{field: soc_pct, register: input, offset: 0, type: u16}]\n"
     "extra: [{name: Fan, register: input, address: 0, type: u16}]\n", "extra[0].name", "lower case"),
    ("slot: [{field: soc_pct, register: input, offset: 0, type: u16}]\n"
     "extra: [{name: fan, register: input, address: 0, type: u16}, {name: fan, register: input, address: 1, "
     "type: u16}]\n", "extra[1].name", "twice"),
    ("slot: [{field: soc_pct, register: input, offset: 0, type: u16}]\n"
     "extra: [{name: fan, register: input, type: u16}]\n", "extra[0](fan)", "address"),
    ("slot: [{field: soc_pct, register: input, offset: 0, type: u16}]\n"
     "extra: [{name: fan, register: input, offset: 39, type: u32}]\n", "extra[0](fan).offset", "stride"),
    ("slot: [{field: soc_pct, register: input, offset: 0, type: u16}]\n"
     "extra: [{name: fan, register: input, address: 0, type: u16, bits: {0: X}}]\n", "extra[0].bits", "unknown key"),
    ("slot: [{field: soc_pct, register: input, offset: 0, type: u16}]\n"
     "commands: {cut: {register: coil, per_slot: true, address: 3}}\n", "commands.cut.offset", "missing"),
    ("slot: [{field: soc_pct, register: input, offset: 0, type: u16}]\n"
     "commands: {cut: {register: coil, per_slot: true, offset: 0, adress: 3}}\n", "commands.cut.adress",
     "unknown key"),
    ("slot: [{field: soc_pct, register: input, offset: 0, type: u16}]\nfoo: 1\n", "foo", "unknown key"),
])
def test_combinations_that_cannot_work_are_refused_by_key(tmp_path: Path, body: str, key: str, says: str) -> None:
    err = _error(tmp_path, body)
    assert err.key == key, str(err)
    assert says in str(err)


def test_bit_fields_share_a_register_each_bit_once(tmp_path: Path) -> None:
    profile = _load(tmp_path, "slot: [{field: soc_pct, register: input, offset: 0, type: u16}]\ncabinet:\n"
                              "  - {field: door_open, register: input, address: 9, type: bit, bit: 0}\n"
                              "  - {field: smoke_detected, register: input, address: 9, type: bit, bit: 1}\n")
    reading, errors = _poll(profile, {9: 0b10})
    assert errors == [] and reading.door_open is False and reading.smoke_detected is True
    err = _error(tmp_path, "slot: [{field: soc_pct, register: input, offset: 0, type: u16}]\ncabinet:\n"
                           "  - {field: door_open, register: input, address: 9, type: bit, bit: 0}\n"
                           "  - {field: co_ppm, register: input, address: 9, type: u16}\n")
    assert err.key == "cabinet(co_ppm)"


# -- vendor semantics at decode time ------------------------------------------------------------------

_VENDOR_BITS = """\
slot:
  - {field: bms_protection, register: input, offset: 0, type: u16,
     bits: {0: OVER_VOLTAGE, 4: HIGH_TEMPERATURE, 6: LOW_TEMPERATURE}}
  - {field: charger_protection, register: input, offset: 1, type: u16}
cabinet:
  - {field: emergency_state, register: input, address: 0, type: u16, bits: {0: SUPPRESSION_BY_SMOKE}}
"""


def test_vendor_bits_at_cascade_positions_raise_no_cascade_flag(tmp_path: Path) -> None:
    """The vendor's bit 5 is 'cell balancing' and bit 9 'comm timeout': Cascade's HIGH_TEMPERATURE and
    INSULATION sit at those positions. Neither may appear; both are kept, at the vendor's positions."""
    profile = _load(tmp_path, _VENDOR_BITS)
    reading, errors = _poll(profile, {1000: 1 << 5 | 1 << 9, 0: 1 << 1 | 1 << 2})
    assert errors == []
    slot = reading.slots[0]
    assert slot.bms_protection == 0
    assert slot.bms_protection_unmapped == 1 << 5 | 1 << 9
    assert reading.emergency_state == 0  # Cascade's SUPPRESSION_BY_SMOKE (bit 1) is not the vendor's bit 1
    assert reading.emergency_state_unmapped == 1 << 1 | 1 << 2


def test_mapped_vendor_bits_move_to_cascade_positions(tmp_path: Path) -> None:
    profile = _load(tmp_path, _VENDOR_BITS)
    reading, _ = _poll(profile, {1000: 1 << 4 | 1 << 6 | 1 << 5, 0: 1})
    slot = reading.slots[0]
    assert slot.bms_protection == BmsProtection.HIGH_TEMPERATURE | BmsProtection.LOW_TEMPERATURE
    assert type(slot.bms_protection) is int
    assert slot.bms_protection_unmapped == 1 << 5
    assert reading.emergency_state == EmergencyState.SUPPRESSION_BY_SMOKE and reading.emergency_state_unmapped == 0


def test_without_a_bits_map_the_word_is_in_cascade_layout(tmp_path: Path) -> None:
    profile = _load(tmp_path, _VENDOR_BITS)
    reading, _ = _poll(profile, {1001: 0b1010})
    assert reading.slots[0].charger_protection == 0b1010
    assert reading.slots[0].charger_protection_unmapped is None
    assert reading.device_fault_code_unmapped is None


def test_extras_keep_what_the_vendor_sends_with_a_fixed_type(tmp_path: Path) -> None:
    profile = _load(tmp_path, "slot: [{field: soc_pct, register: input, offset: 0, type: u16}]\nextra:\n"
                              "  - {name: fan_speed_rpm, register: input, address: 0, type: u16}\n"
                              "  - {name: humidity_pct, register: input, address: 1, type: u16, scale: 0.1, "
                              "valid: [0, 100]}\n"
                              "  - {name: lid_open, register: input, address: 2, type: bit, bit: 3}\n"
                              "  - {name: probe_c, register: input, address: 3, type: i16, missing: 0x7FFF}\n"
                              "  - {name: module_c, register: input, offset: 2, type: f32, word_order: CDAB}\n")
    module = profile.slot_extras[0]
    words = {0: 1450, 1: 1234, 2: 0b1000, 3: 0x7FFF, 1002: 0x0000, 1003: 0x41FC}
    reading, errors = _poll(profile, words)
    assert errors == []
    assert dict(reading.extra) == {"fan_speed_rpm": 1450, "humidity_pct": 100.0, "lid_open": True}
    assert type(reading.extra["fan_speed_rpm"]) is int and type(reading.extra["humidity_pct"]) is float
    assert reading.over_range == ("extra_humidity_pct",)  # 123.4 % kept as the limit, named as stored
    assert dict(reading.slots[0].extra) == {"module_c": 31.5} and module.value_kind is float
    # A rejected extra is left out and reported under its stored name; the rest of the poll stays.
    reading, errors = _poll(profile, {**words, 1002: 0x7FC0, 1003: 0x7FC0})
    assert "module_c" not in reading.slots[0].extra and reading.slots[0].soc_pct == 0
    assert [(e.slot, e.field) for e in errors] == [(1, "extra_module_c")]


def test_a_profile_without_extras_shares_one_empty_mapping() -> None:
    profile = find_profile("reference-cabinet")
    reading, _ = _poll(profile, {}, slots=2)
    assert reading.extra == {} and reading.slots[0].extra is reading.slots[1].extra
    with pytest.raises(TypeError):
        reading.extra["x"] = 1  # type: ignore[index]


def test_extras_and_unmapped_bits_are_not_profile_fields() -> None:
    for name in ("extra", "bms_protection_unmapped", "emergency_state_unmapped"):
        assert name not in SLOT_FIELDS | CABINET_FIELDS
    assert "extra" not in FIELD_KINDS and FIELD_KINDS["bms_protection_unmapped"] is int
    assert {"cabinet_h2_ppm", "cabinet_voc_ppm", "door_open"} <= CABINET_FIELDS


# -- the third vendor's profile ------------------------------------------------------------------------


def test_kestrel_plan_covers_everything_within_its_gap_limit() -> None:
    profile = find_profile("kestrel-k10")
    assert profile.word_order == "CDAB" and profile.max_gap == 4
    for slots in (1, profile.slot_count):
        plan = plan_reads(profile, slots)
        assert len(plan) >= minimum_reads(profile, slots)
        covered = {(i.slot, i.name, i.extra) for r in plan for i in r.fields}
        expected = {(None, s.field, False) for s in profile.cabinet_fields} | {
            (slot, s.field, False) for slot in range(1, slots + 1) for s in profile.slot_fields}
        expected |= {(None, s.field, True) for s in profile.cabinet_extras} | {
            (slot, s.field, True) for slot in range(1, slots + 1) for s in profile.slot_extras}
        expected |= {(slot, f"{name}_unmapped", False) for slot in range(1, slots + 1)
                     for name in ("bms_protection", "charger_protection")} | {(None, "emergency_state_unmapped", False)}
        assert covered == expected
        for request in plan:
            assert request.count <= (2000 if request.register_type == "coil" else MAX_REGISTERS)
            used = {request.address + i.index + w for i in request.fields for w in range(i.spec.words)}
            holes = sorted(set(range(request.address, request.address + request.count)) - used)
            run = longest = 0
            for a, b in zip([None, *holes], holes):
                run = run + 1 if a is not None and b == a + 1 else 1
                longest = max(longest, run)
            assert longest <= profile.max_gap, request


# -- generated documents -------------------------------------------------------------------------------


def test_profile_reference_is_generated_from_the_schema() -> None:
    committed = (DOCS / "profiles.md").read_text(encoding="utf-8")
    assert committed == render_profile_reference(), \
        "docs/profiles.md is stale: run python -m collectors.modbus.mapdoc --reference > docs/profiles.md"


def test_kestrel_register_map_is_generated() -> None:
    committed = (DOCS / "register-map-kestrel-k10.md").read_text(encoding="utf-8")
    assert committed == render_register_map(find_profile("kestrel-k10")), \
        "run python -m collectors.modbus.mapdoc kestrel-k10 > docs/register-map-kestrel-k10.md"


def test_the_reference_documents_every_key_of_the_schema() -> None:
    from collectors.modbus.profile import CabinetFieldEntry, CommandEntry, ExtraEntry, ProfileDoc, SlotsSection
    text = render_profile_reference()
    for model, prefix in ((ProfileDoc, ""), (SlotsSection, "slots."), (CabinetFieldEntry, ""), (ExtraEntry, ""),
                          (CommandEntry, "commands.<name>.")):
        for key, info in model.model_fields.items():
            assert f"| `{prefix}{key}` |" in text and (info.description or "") in text, key
    for order in ("ABCD", "CDAB", "BADC", "DCBA"):
        assert f"| `{order}` |" in text
    assert "`0x0000` `0xFC41`" in text  # 31.5 in DCBA


# -- hostile edits of a real profile -------------------------------------------------------------------

_KESTREL = yaml.safe_load((Path(__file__).parents[1] / "profiles" / "kestrel-k10.yaml").read_text(encoding="utf-8"))
_hostile = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8),
                     st.sampled_from(["CDAB", "dcba", "bit", "u64", "f64", "OVER_VOLTAGE", "BIT31", "fan", "soc_pct",
                                      "input", "coil", "0x7FFF"]),
                     st.lists(st.integers(-5, 70), max_size=3),
                     st.dictionaries(st.one_of(st.integers(-3, 70), st.text(max_size=3)),
                                     st.sampled_from(["OVER_VOLTAGE", "HOT", "bit3", "SUPPRESSION_MANUAL", ""]),
                                     max_size=3))
_entry_keys = st.sampled_from(["field", "name", "register", "address", "offset", "type", "bit", "bits", "length",
                               "scale", "offset_value", "word_order", "valid", "missing", "unit", "nonsense"])


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["cabinet", "slot", "extra"]), st.integers(0, 40), _entry_keys, _hostile)
def test_any_edit_of_an_entry_loads_or_names_its_key(section: str, index: int, key: str, value: object) -> None:
    doc = copy.deepcopy(_KESTREL)
    entries = doc[section]
    entry = entries[index % len(entries)]
    entry[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        try:
            profile = load_profile(path)
        except ProfileError as err:
            assert str(path) in str(err) and "Fix:" in str(err)
            assert err.key and (err.key.startswith((section, "extra", "cabinet", "slot")) or err.key == "(file)"), err
            return
    plan = plan_reads(profile)  # whatever loads can be planned and decoded
    responses = [[0xFFFF] * r.count if r.register_type in ("input", "holding") else [True] * r.count for r in plan]
    expected = decode_poll(plan, responses, cabinet_id="C1", site="s", model="m", slot_count=profile.slot_count,
                           timestamp_ns=1)
    assert compile_plan(plan, profile.slot_count)(responses, cabinet_id="C1", site="s", model="m",
                                                  timestamp_ns=1) == expected
