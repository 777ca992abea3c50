"""Poll decoding (collectors/modbus/decode.py): the stored type of each value, where a value at its
limit is reported, and what an error names. Written to kill the mutants `make mutate` found alive."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.modbus.decode import FieldError, compile_plan, decode_poll
from collectors.modbus.planner import plan_reads
from collectors.modbus.profile import Profile
from tests.fixtures.profiles import profile_from_text

PROFILE = """\
model: mut-decode
word_order: big
slots:
  count: 3
  base: {input: 100}
  stride: {input: 10}
cabinet:
  - {field: latitude_deg, register: input, address: 0, type: f32, valid: [-90, 90]}
  - {field: input_power_w, register: input, address: 2, type: u16}
  - {field: door_open, register: input, address: 3, type: u16}
  - {field: device_fault_code, register: input, address: 4, type: u16, scale: 0.5, valid: [0, 100]}
slot:
  - {field: soc_pct, register: input, offset: 0, type: u16, valid: [0, 100]}
  - {field: charge_count, register: input, offset: 1, type: u16, scale: 0.5, valid: [0, 100]}
  - {field: temperature_c, register: input, offset: 2, type: f32, valid: [-40, 300]}
extra:
  - {name: fan_speed_rpm, register: input, address: 5, type: u16}
"""
F32_1_5 = [0x3FC0, 0x0000]  # 1.5
F32_NAN = [0x7FC0, 0x0000]


@pytest.fixture
def profile(tmp_path: Path) -> Profile:
    return profile_from_text(tmp_path, PROFILE, "profile")


def _decode(profile: Profile, cabinet: list[int] | None, slots: dict[int, list[int] | None]):
    plan = plan_reads(profile, 3, max_gap=0)
    # The plan: one read of the cabinet block (6 registers), then one of 4 registers per slot.
    assert [(r.address, r.count) for r in plan] == [(0, 6), (100, 4), (110, 4), (120, 4)]
    responses = [cabinet] + [slots.get(n, [50, 20, *F32_1_5]) for n in (1, 2, 3)]
    if _IMPLEMENTATION == "compiled":
        return compile_plan(plan, 3)(responses, cabinet_id="C7", site="S1", model="mut-decode", timestamp_ns=123)
    return decode_poll(plan, responses, cabinet_id="C7", site="S1", model="mut-decode", slot_count=3,
                       timestamp_ns=123)


_IMPLEMENTATION = "reference"


@pytest.fixture(autouse=True, params=["reference", "compiled"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs against decode_poll and against the plan compiled to one function."""
    monkeypatch.setattr(f"{__name__}._IMPLEMENTATION", request.param)
    return request.param


def test_values_are_stored_as_the_model_field_types(profile: Profile) -> None:
    reading, errors = _decode(profile, [*F32_1_5, 250, 1, 7, 1200], {1: [40, 7, *F32_1_5]})
    assert errors == []
    assert (reading.cabinet_id, reading.site, reading.model, reading.timestamp_ns) == ("C7", "S1", "mut-decode", 123)
    # u16 words into float fields: floats, not ints
    assert reading.input_power_w == 250.0 and type(reading.input_power_w) is float
    assert reading.slots[0].soc_pct == 40.0 and type(reading.slots[0].soc_pct) is float
    # a u16 into a bool field: True, not 1
    assert reading.door_open is True
    # a scaled value into an int field is rounded: 7 * 0.5 = 3.5 -> 4
    assert reading.device_fault_code == 4 and type(reading.device_fault_code) is int
    assert reading.slots[0].charge_count == 4 and type(reading.slots[0].charge_count) is int
    assert reading.latitude_deg == 1.5 and reading.slots[0].temperature_c == 1.5
    assert reading.extra == {"fan_speed_rpm": 1200}
    assert reading.over_range == () and all(s.over_range == () for s in reading.slots)


def test_a_zero_register_in_a_bool_field_is_false(profile: Profile) -> None:
    reading, _ = _decode(profile, [*F32_1_5, 0, 0, 0, 0], {})
    assert reading.door_open is False


def test_an_int_field_past_its_range_is_kept_as_an_int_at_the_limit(profile: Profile) -> None:
    reading, errors = _decode(profile, [*F32_1_5, 0, 0, 1000, 0], {})  # 1000 * 0.5 = 500 > 100
    assert errors == []
    assert reading.device_fault_code == 100 and type(reading.device_fault_code) is int
    assert reading.over_range == ("device_fault_code",)
    assert all(s.over_range == () for s in reading.slots)


def test_a_slot_value_past_its_range_is_reported_on_that_slot_only(profile: Profile) -> None:
    reading, errors = _decode(profile, [*F32_1_5, 0, 0, 0, 0], {2: [500, 900, *F32_1_5]})
    assert errors == []
    assert reading.over_range == ()
    assert [s.over_range for s in reading.slots] == [(), ("soc_pct", "charge_count"), ()]
    slot = reading.slots[1]
    assert slot.soc_pct == 100.0 and type(slot.soc_pct) is float
    assert slot.charge_count == 100 and type(slot.charge_count) is int


def test_a_rejected_field_names_where_it_came_from_and_the_rest_of_its_read_is_kept(profile: Profile) -> None:
    reading, errors = _decode(profile, [*F32_NAN, 250, 1, 0, 0], {3: [60, 2, *F32_NAN]})
    assert reading.latitude_deg is None and reading.input_power_w == 250.0 and reading.door_open is True
    assert reading.slots[2].temperature_c is None and reading.slots[2].soc_pct == 60.0
    assert [(e.cabinet_id, e.slot, e.field, e.register_type, e.address) for e in errors] == [
        ("C7", None, "latitude_deg", "input", 0),
        ("C7", 3, "temperature_c", "input", 122),
    ]
    assert str(errors[0]) == "cabinet C7: latitude_deg (input register 0): latitude_deg: nan is not a finite number"
    assert str(errors[1]) == (
        "cabinet C7 slot 3: temperature_c (input register 122): temperature_c: nan is not a finite number")


def test_a_failed_read_leaves_its_fields_empty_and_the_later_reads_are_decoded(profile: Profile) -> None:
    reading, errors = _decode(profile, None, {2: None, 3: [70, 4, *F32_1_5]})
    assert errors == []
    assert reading.input_power_w is None and reading.latitude_deg is None and reading.extra == {}
    assert [s.soc_pct for s in reading.slots] == [50.0, None, 70.0]
    assert [s.charge_count for s in reading.slots] == [10, None, 2]


def test_field_error_text_is_where_what_and_why() -> None:
    error = FieldError("C1", 2, "soc_pct", "holding", 5002, "not a number")
    assert str(error) == "cabinet C1 slot 2: soc_pct (holding register 5002): not a number"
    assert str(FieldError("C1", None, "co_ppm", "input", 10, "garbage")) == (
        "cabinet C1: co_ppm (input register 10): garbage")
