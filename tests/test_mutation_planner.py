"""Read planning (collectors/modbus/planner.py) at its limits, the numbers written here from the
Modbus specification rather than imported: 125 registers or 2000 bits per read, addresses up to
65535. Written to kill the mutants `make mutate` found alive."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.modbus.decode import decode_poll
from collectors.modbus.planner import minimum_reads, plan_reads
from collectors.modbus.profile import Profile, load_profile
from tests.fixtures.profiles import profile_from_text

PROFILE = """\
model: edges
max_gap: 124
slots:
  count: 2
  base: {input: 65534}
  stride: {input: 1}
cabinet:
  - {field: input_voltage_v, register: input, address: 0, type: u16}
  - {field: input_current_a, register: input, address: 124, type: u16}
  - {field: flame_detected, register: discrete, address: 0}
  - {field: smoke_detected, register: discrete, address: 124}
  - {field: water_detected, register: discrete, address: 248}
  - {field: door_open, register: discrete, address: 300}
slot:
  - {field: voltage_v, register: input, offset: 0, type: u16}
extra:
  - {name: fan_speed_rpm, register: input, address: 5, type: u16, valid: [0, 100]}
"""


@pytest.fixture
def profile(tmp_path: Path) -> Profile:
    return profile_from_text(tmp_path, PROFILE, "edges")


def test_bits_are_read_up_to_2000_per_request_registers_up_to_125(profile: Profile) -> None:
    plan = plan_reads(profile, 2)
    assert [(r.register_type, r.address, r.count) for r in plan] == [
        ("input", 0, 125),  # 0..124: exactly the register limit, one read
        ("input", 65534, 2),  # the two slots, up to the last address
        ("discrete", 0, 301),  # 301 bits: one read (a register read could not hold it)
    ]
    assert minimum_reads(profile, 2) == 3


def test_the_register_limit_can_be_lowered_down_to_one(profile: Profile) -> None:
    plan = plan_reads(profile, 2, max_registers=1)
    assert [(r.register_type, r.address, r.count) for r in plan if r.register_type == "input"] == [
        ("input", 0, 1), ("input", 5, 1), ("input", 124, 1), ("input", 65534, 1), ("input", 65535, 1)]
    assert minimum_reads(profile, 2, max_registers=1) == 6  # 5 registers, then the 301 bits in one


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_registers": 0}, "max_registers must be 1..125, got 0"),
    ({"max_registers": 126}, "max_registers must be 1..125, got 126"),
    ({"max_gap": -1}, "max_gap must be >= 0, got -1"),
])
def test_impossible_limits_are_refused(profile: Profile, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        plan_reads(profile, 2, **kwargs)
    assert str(info.value) == message


def test_registers_end_at_65535(profile: Profile) -> None:
    assert plan_reads(profile, 2)  # slot 2 is register 65535, the last one
    with pytest.raises(ValueError) as info:
        plan_reads(profile, 3)  # slot 3 would be register 65536
    assert str(info.value) == "3 slots of profile edges need input registers beyond 65535"


def test_minimum_reads_fits_exactly_125_registers_in_one_read(profile: Profile) -> None:
    # input 0..124 is one read; the slot block is another; the bits a third.
    assert minimum_reads(profile, 1) == 3


def test_an_extra_past_its_range_is_kept_as_an_int_at_the_limit(profile: Profile) -> None:
    plan = plan_reads(profile, 2)
    words = [0] * 125
    words[5] = 500
    responses = [words, [0, 0], [False] * 301]
    reading, errors = decode_poll(plan, responses, cabinet_id="C1", site="s", model="edges", slot_count=2,
                                  timestamp_ns=1)
    assert errors == []
    assert reading.extra == {"fan_speed_rpm": 100} and type(reading.extra["fan_speed_rpm"]) is int
    assert reading.over_range == ("extra_fan_speed_rpm",)


def test_a_field_wider_than_one_read_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "wide.yaml"
    path.write_text("""model: wide
slots: {count: 1, base: {input: 100}, stride: {input: 4}}
cabinet:
  - {field: input_power_w, register: input, address: 10, type: u32}
slot:
  - {field: voltage_v, register: input, offset: 0, type: u16}
""", encoding="utf-8")
    profile = load_profile(path)
    assert [(r.address, r.count) for r in plan_reads(profile, max_registers=2)] == [(10, 2), (100, 1)]
    with pytest.raises(ValueError) as info:
        plan_reads(profile, max_registers=1)
    assert str(info.value) == "input_power_w is 2 registers, over the 1 limit"


# -- plans shared between cabinets --------------------------------------------------------------------

def test_a_shared_plan_is_the_planned_reads_once_per_profile_slots_gap_and_fields(monkeypatch) -> None:
    from collections import OrderedDict

    from collectors.modbus import planner
    from collectors.modbus.planner import restrict_plan, shared_plan
    from collectors.modbus.profile import find_profile

    monkeypatch.setattr(planner, "_shared", OrderedDict())
    profile = find_profile("reference-cabinet")  # 12 slots, max_gap 16 by its profile
    full = shared_plan(profile)
    assert full == tuple(plan_reads(profile)) and shared_plan(profile) is full
    assert shared_plan(profile, profile.slot_count, max_gap=profile.max_gap) is full  # the defaults spelled out
    assert shared_plan(profile, 2) == tuple(plan_reads(profile, 2)) and shared_plan(profile, 2) is not full
    tight = shared_plan(profile, 2, max_gap=0)
    assert tight == tuple(plan_reads(profile, 2, max_gap=0)) and len(tight) > len(shared_plan(profile, 2))
    # a restricted plan cuts the plan of the same slots and gap
    only = {"temperature_c", "flame_detected", "battery_id"}
    assert restrict_plan(plan_reads(profile, 2, max_gap=0), only) != restrict_plan(plan_reads(profile, 2), only)
    assert shared_plan(profile, 2, max_gap=0, only=only) == tuple(restrict_plan(plan_reads(profile, 2, max_gap=0), only))
    assert shared_plan(profile, only=only) == tuple(restrict_plan(plan_reads(profile), only))
    # an equal profile that is another object gets its own plan (the key is the object, kept alive)
    other = find_profile("reference-cabinet")
    mine = shared_plan(profile, 2)
    assert other is not profile and shared_plan(other, 2) is not mine
    assert shared_plan(profile, 2) is mine and shared_plan(other, 2) is shared_plan(other, 2)  # both kept
    # at most _SHARED_MAX plans, the least recently used dropped first
    monkeypatch.setattr(planner, "_shared", OrderedDict())
    monkeypatch.setattr(planner, "_SHARED_MAX", 3)
    a, b = shared_plan(profile, 1), shared_plan(profile, 2)
    shared_plan(profile, 3)
    assert shared_plan(profile, 1) is a  # used again: most recent
    shared_plan(profile, 4)  # pushes out the least recently used: slots 2
    assert len(planner._shared) == 3
    assert shared_plan(profile, 1) is a and shared_plan(profile, 2) is not b


RESTRICT = """\
model: restrict
max_gap: 10
slots:
  count: 1
  base: {input: 100}
  stride: {input: 1}
slot:
  - {field: voltage_v, register: input, offset: 0, type: u16}
cabinet:
  - {field: input_voltage_v, register: input, address: 0, type: u16}
  - {field: co_ppm, register: input, address: 1, type: f32}
  - {field: input_current_a, register: input, address: 3, type: u16}
  - {field: smoke_detected, register: discrete, address: 0}
  - {field: flame_detected, register: discrete, address: 1}
  - {field: water_detected, register: discrete, address: 2}
"""


def test_a_restricted_read_covers_each_kept_field_whole_and_nothing_past_it(tmp_path: Path) -> None:
    """The fast lane's reads: from the first kept field to the end of the last one, a two-register value
    whole (not cut to one register), a bit read one bit per field, never past the last kept field."""
    from collectors.modbus.planner import restrict_plan

    path = tmp_path / "restrict.yaml"
    path.write_text(RESTRICT, encoding="utf-8")
    plan = plan_reads(load_profile(path))
    assert [(r.register_type, r.address, r.count) for r in plan] == [("input", 0, 4), ("input", 100, 1),
                                                                      ("discrete", 0, 3)]
    fast = restrict_plan(plan, {"co_ppm", "smoke_detected", "flame_detected"})
    assert [(r.register_type, r.address, r.count) for r in fast] == [("input", 1, 2), ("discrete", 0, 2)]
    assert [[(f.name, f.index) for f in r.fields] for r in fast] == [[("co_ppm", 0)],
                                                                     [("smoke_detected", 0), ("flame_detected", 1)]]


def test_a_field_slice_built_without_a_decoder_compiles_its_own() -> None:
    from collectors.modbus.planner import FieldSlice
    from collectors.modbus.profile import FieldSpec, unmapped_field

    temperature = FieldSpec("temperature_c", "input", 0, "i16", scale=0.1)
    item = FieldSlice(2, temperature, 1)
    assert (item.decode([0, 0xFFF6], 1), item.name, item.slot, item.index) == (-1.0, "temperature_c", 2, 1)
    from collectors.modbus.codec import decode_unmapped, decode_value
    from collectors.modbus.profile import find_profile

    flags = next(s for s in find_profile("kestrel-k10").slot_fields if s.bits is not None and s.words == 1)
    mapped, unmapped = FieldSlice(1, flags, 0), FieldSlice(1, flags, 0, unmapped=True)
    for word in (0, 0x0001, 0x8421, 0xFFFE):
        assert mapped.decode([word], 0) == decode_value(flags, [word])
        assert unmapped.decode([word], 0) == decode_unmapped(flags, [word])
    assert {mapped.decode([w], 0) for w in range(0, 0x10000, 97)} != {unmapped.decode([w], 0) for w in range(0, 0x10000, 97)}
    assert unmapped.name == unmapped_field(flags.field) and mapped.name == flags.field


def test_each_field_spec_is_compiled_once_per_plan() -> None:
    """A plan holds one decoder per field spec (and unmapped flag), shared by that field's slices in every
    slot: a 12-slot plan does not hold twelve copies."""
    from collectors.modbus.profile import find_profile

    plan = plan_reads(find_profile("kestrel-k10"))
    decoders: dict[tuple[int, bool], object] = {}
    slices = [f for r in plan for f in r.fields]
    for f in slices:
        assert decoders.setdefault((id(f.spec), f.unmapped), f.decode) is f.decode
    assert len(decoders) < len(slices) and any(f.unmapped for f in slices)
