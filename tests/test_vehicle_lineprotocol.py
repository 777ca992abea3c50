"""The vehicle hot path: compiled line-protocol formatters and the decode-time range checks.

* ``vehicle_to_lines`` (``TupleEncoder``) writes exactly what ``encode_line`` writes for the same
  point, and what influxdb-client's ``Point`` writes wherever Point's output is line protocol the
  server stores as sent, on full-precision random readings and odd ids;
* ``TupleEncoder`` on its own: every combination of value types, keys that would break a generated
  source if they were pasted into it, and the points it must hand to the slow path;
* ``decode_checked`` + ``to_reading``: a report decoded by the checked types (all in range) becomes the same
  reading as through the value-by-value checks, and one with anything off still goes through them.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from collectors.vehicles import wire
from core.model import BmsProtection, SlotReading, VehicleReading, describe_flags
from exporters.influx import schema
from exporters.influx.lineprotocol import LineProtocolError, TagSetEncoder, TupleEncoder, encode_line
from tests.test_lineprotocol import _point_line

# -- vehicle_to_lines against encode_line and Point ----------------------------------------------------

# Ids a provisioned device cannot have (spaces, commas, '=', quotes, non-ASCII) but a reading may carry:
# the line must still be right. Characters line protocol cannot carry in a tag (line breaks, tab, NUL, a
# backslash the server would unescape) are refused by both encoders alike (checked apart below).
_ID_CHARS = st.one_of(st.sampled_from(list(',= "#%{}.-_i0')), st.characters(codec="utf-8", exclude_characters="\n\r\t\x00\\"))
_ids = st.text(_ID_CHARS, min_size=0, max_size=12)
_texts = st.text(st.one_of(st.sampled_from(list('"\\,= %{}.0')), st.characters(codec="utf-8",
                                                                               exclude_characters="\n\r")), max_size=12)
# Full precision: any finite double (and integral ones, which Point writes without ".0"), NaN and infinities
# (left out by both), zeros of both signs.
_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6).map(float),
                    st.sampled_from([0.0, -0.0, 1e16, 1e-7, 48.0, 39.9241093, 116.544608]))
_ints = st.integers(-(2**63), 2**63 - 1)


def _maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


_VEHICLE_FLOATS = ("latitude_deg", "longitude_deg", "altitude_m", "speed_kmh", "odometer_km")
_SLOT_FLOATS = tuple(name for name in schema._BATTERY_FIELDS if SlotReading.__dataclass_fields__[name].type
                     in ("float | None",))
_SLOT_INTS = tuple(name for name in schema._BATTERY_FIELDS if SlotReading.__dataclass_fields__[name].type
                   in ("int | None",))


@st.composite
def _readings(draw: st.DrawFn) -> VehicleReading:
    battery = None
    if draw(st.integers(0, 5)):  # most reports carry the pack
        values = {name: draw(_maybe(_floats)) for name in _SLOT_FLOATS}
        values.update({name: draw(_maybe(st.integers(0, 0xFFFF) if name == "bms_protection" else _ints))
                       for name in _SLOT_INTS})
        battery = SlotReading(slot=1, battery_id=draw(_maybe(_texts)), battery_maker=draw(_maybe(_texts)), **values)
        battery.over_range = tuple(draw(st.lists(st.sampled_from(["temperature_c", "voltage_v"]), max_size=2,
                                                 unique=True)))
    ts = draw(st.integers(0, 2**62))
    reading = VehicleReading(
        vehicle_id=draw(_ids), fleet=draw(_ids), timestamp_ns=ts,
        received_ns=draw(st.one_of(st.just(0), st.integers(ts - 10**12, ts + 10**12))),
        model=draw(_maybe(_texts)), sequence=draw(_maybe(_ints)), state=draw(_maybe(st.integers(0, 3))),
        powered_on=draw(_maybe(st.booleans())), armed=draw(_maybe(st.booleans())),
        position_valid=draw(_maybe(st.booleans())),
        battery=battery, **{name: draw(_maybe(_floats)) for name in _VEHICLE_FLOATS})
    reading.over_range = tuple(draw(st.lists(st.sampled_from(["speed_kmh"]), max_size=1)))
    return reading


def _points(reading: VehicleReading) -> list[tuple[str, dict, dict]]:
    """The points of a reading as (measurement, tags, fields), built the plain way (as schema.py did)."""
    tags = {"fleet": reading.fleet, "vehicle": reading.vehicle_id}
    battery = reading.battery
    fields = {name: getattr(reading, name) for name in schema._VEHICLE_FIELDS}
    fields["battery_id"] = None if battery is None else battery.battery_id
    fields["lag_s"] = round((reading.received_ns - reading.timestamp_ns) / 1e9, 3) if reading.received_ns else None
    fields["over_range"] = ",".join(reading.over_range) or None
    out = [("vehicle", tags, fields)]
    if battery is not None:
        fields = {name: getattr(battery, name) for name in schema._BATTERY_FIELDS}
        fields["bms_protection_text"] = (None if battery.bms_protection is None
                                         else describe_flags(BmsProtection, battery.bms_protection))
        fields["latitude_deg"], fields["longitude_deg"] = reading.latitude_deg, reading.longitude_deg
        fields["over_range"] = ",".join(battery.over_range) or None
        out.append(("vehicle_battery", tags, fields))
    return out




def _expected(reading: VehicleReading) -> list[str]:
    lines = []
    for measurement, tags, fields in _points(reading):
        try:
            lines.append(encode_line(measurement, tags, fields, reading.timestamp_ns))
        except LineProtocolError:
            pass
    return lines


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(readings=st.lists(_readings(), min_size=1, max_size=3))
@example(readings=[VehicleReading(vehicle_id="V 1,a=b", fleet="北京", timestamp_ns=1, received_ns=2,
                                  model='EB "48" \\ 1.0,x', sequence=7, latitude_deg=39.9241093, odometer_km=48.0,
                                  battery=SlotReading(slot=1, battery_id="B1", voltage_v=float("nan"),
                                                      soc_pct=80.0, charge_count=2**63 - 1, bms_protection=5))])
def test_vehicle_lines_are_encode_lines_and_points_output(readings):
    for reading in readings:  # several per example: plans, tag texts and float texts come from the caches
        expected = _expected(reading)
        assert schema.vehicle_to_lines(reading) == expected
        for line, (measurement, tags, fields) in zip(expected, _points(reading)):
            kept = {k: v for k, v in fields.items() if v is not None and not (type(v) is float and not math.isfinite(v))}
            if kept and line:
                assert line == _point_line(measurement, tags, fields, reading.timestamp_ns)


def test_a_point_line_protocol_cannot_carry_is_skipped_the_other_kept():
    # A line break in the model would split the vehicle line; the pack's line is still written.
    reading = VehicleReading(vehicle_id="V1", fleet="bj", timestamp_ns=5, model="a\nb",
                             battery=SlotReading(slot=1, soc_pct=50.0))
    assert schema.vehicle_to_lines(reading) == ['vehicle_battery,fleet=bj,vehicle=V1 soc_pct=50 5']
    # A sequence beyond int64 cannot be an integer field: the vehicle line is skipped, as encode_line does.
    reading = VehicleReading(vehicle_id="V1", fleet="bj", timestamp_ns=5, sequence=2**63,
                             battery=SlotReading(slot=1, soc_pct=50.0))
    assert [line.split(",")[0] for line in schema.vehicle_to_lines(reading)] == ["vehicle_battery"]
    # An id with a tab cannot be a tag value: neither point.
    assert schema.vehicle_to_lines(VehicleReading(vehicle_id="V\t1", fleet="bj", timestamp_ns=5, sequence=1,
                                                  battery=SlotReading(slot=1, soc_pct=50.0))) == []
    with pytest.raises(LineProtocolError):
        encode_line("vehicle", {"fleet": "bj", "vehicle": "V\t1"}, {"sequence": 1}, 5)


def test_nan_is_left_out_and_the_rest_of_the_line_kept():
    reading = VehicleReading(vehicle_id="V1", fleet="bj", timestamp_ns=5, speed_kmh=float("nan"), odometer_km=12.0,
                             sequence=3)
    assert schema.vehicle_to_lines(reading) == ["vehicle,fleet=bj,vehicle=V1 odometer_km=12,sequence=3i 5"]


# -- TupleEncoder on its own -----------------------------------------------------------------------------

_KEY_CHARS = st.sampled_from(list('ab,= %{}"\\\'.0i'))
_keys = st.text(_KEY_CHARS, min_size=1, max_size=5).filter(
    lambda k: k != "time" and not (k.endswith("\\") or any(k[i] == "\\" and k[i + 1] in ',= "' for i in range(len(k) - 1))))
_values = st.one_of(st.none(), st.floats(), st.integers(-(2**64), 2**64), st.booleans(),
                    st.sampled_from([0.0, -0.0, 1.0, 48.0, 3.5, 1e16, 1e-7, 2**63, True, 1]),
                    st.text(max_size=3), st.sampled_from(['a"b', "c\\", "x\ny", "%s", "{a0}", ""]))


@settings(max_examples=400, deadline=None)
@given(field_keys=st.lists(_keys, min_size=1, max_size=6, unique=True), data=st.data())
def test_tuple_encoder_output_is_identical_to_encode_line(field_keys, data):
    tags = TagSetEncoder(("site", "id"))
    encoder = TupleEncoder("m 1", tags, field_keys)
    for _ in range(4):  # several points per encoder: compiled plans and cached texts are exercised
        tag_values = (data.draw(st.sampled_from(["bj", "", "a b", "x,y=z"])),
                      data.draw(st.one_of(st.none(), st.sampled_from(["V1", "V 2", "é", "a\\"]))))
        values = tuple(data.draw(_values) for _ in field_keys)
        ts = data.draw(st.one_of(st.integers(0, 2**62), st.just(2**63)))
        try:
            expected = encode_line("m 1", dict(zip(tags.keys, tag_values)), dict(zip(field_keys, values)), ts)
        except LineProtocolError:
            with pytest.raises(LineProtocolError):
                encoder.encode(tag_values, values, ts)
            continue
        assert encoder.encode(tag_values, values, ts) == expected


def test_keys_are_never_pasted_into_the_generated_source():
    keys = ("a}", "{b", 'c"', "d%s", "e\\x", "f'", "g=h", "i j")
    encoder = TupleEncoder("m", TagSetEncoder(("t",)), keys)
    values = (1.5, 2, True, "s", 48.0, "q\"", 3.25, None)
    assert encoder.encode(("v",), values, 9) == encode_line("m", {"t": "v"}, dict(zip(keys, values)), 9)


def test_a_float_text_is_written_as_point_writes_it():
    encoder = TupleEncoder("m", TagSetEncoder(("t",)), ("x",))
    for value in (48.0, -0.0, 0.0, 1e16, 1e22, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, 116.544608, -3.0):
        for _ in range(2):  # computed, then from the cache
            assert encoder.encode(("v",), (value,), 1) == _point_line("m", {"t": "v"}, {"x": value}, 1)


def test_tag_texts_are_one_bounded_cache_for_both_vehicle_points(monkeypatch):
    tags = TagSetEncoder(("fleet", "vehicle"))
    monkeypatch.setattr(TagSetEncoder, "_CACHE_LIMIT", 3)
    first, second = TupleEncoder("vehicle", tags, ("x",)), TupleEncoder("vehicle_battery", tags, ("x",))
    for n in range(10):
        assert first.encode(("bj", f"V{n}"), (1.5,), 1) == f"vehicle,fleet=bj,vehicle=V{n} x=1.5 1"
        assert second.encode(("bj", f"V{n}"), (1.5,), 1) == f"vehicle_battery,fleet=bj,vehicle=V{n} x=1.5 1"
        assert len(tags) <= 3


# -- decode: checked types and the value-by-value checks agree -------------------------------------------

_in_range = {field: (low, high) for field, (low, high, _) in wire._RANGES.items()}


def _number(field: str, integer: bool = False) -> st.SearchStrategy:
    low, high = _in_range[field]
    inside = st.integers(int(math.ceil(low)), int(high)) if integer else st.floats(low, high)
    outside = st.one_of(st.integers(-(2**40), 2**40), st.floats(-1e12, 1e12)) if not integer else st.integers(
        -(2**40), 2**40)
    return st.one_of(st.none(), inside, inside, inside, outside)


_WIRE_BATTERY = {wire_key: field for wire_key, field in wire._BATTERY_RANGED.items()}


@st.composite
def _reports(draw: st.DrawFn) -> dict:
    report: dict = {"v": 1, "vehicle": draw(st.sampled_from(["V000001", "V 1", "-V", "V" * 65])),
                    "ts": draw(st.integers(0, 2**50)), "seq": draw(st.integers(0, 2**40))}
    if draw(st.booleans()):
        report["model"] = draw(st.one_of(st.just("EB-48"), st.text(max_size=70)))
    if draw(st.booleans()):
        pos = {"valid": draw(st.booleans())}
        for key, field in (("lat", "latitude_deg"), ("lon", "longitude_deg"), ("alt", "altitude_m")):
            value = draw(_number(field))
            if value is not None:
                pos[key] = value
        report["pos"] = pos
    for key in ("speed_kmh", "odometer_km"):
        value = draw(_number(key))
        if value is not None:
            report[key] = value
    if draw(st.booleans()):
        battery: dict = {"id": draw(st.sampled_from(["B1", "B 1", "BP00000001", "x" * 70])),
                         "maker": draw(st.one_of(st.just("CATL"), st.text(max_size=70))),
                         "chemistry": draw(st.sampled_from(["LFP", "NMC", "NA_ION"])),
                         "state": draw(st.sampled_from(["charging", "discharging"]))}
        for key, field in _WIRE_BATTERY.items():
            value = draw(_number(field, integer=field in wire._INTEGERS))
            if value is not None:
                battery[key] = value
        report["battery"] = battery
    return report


def _plain(data: bytes) -> tuple:
    try:
        msg = wire._decoder.decode(data)
    except Exception as err:  # noqa: BLE001 - compared with what decode raises
        return ("error", type(err).__name__)
    if not wire._valid_id(msg.vehicle):
        return ("error", "id")
    return wire.to_reading(msg, fleet="bj", received_ns=7)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(report=_reports())
def test_checked_decode_gives_the_reading_the_value_checks_give(report):
    data = json.dumps(report).encode()
    expected = _plain(data)
    try:
        msg = wire.decode_checked(data)
    except wire.WireError:
        assert expected[0] == "error"
        return
    reading, problems = wire.to_reading(msg, fleet="bj", received_ns=7)
    assert expected[0] != "error"
    assert reading == expected[0]  # every field, the pack's and both over_range included
    assert [str(p) for p in problems] == [str(p) for p in expected[1]]
    if type(msg) is not wire.Telemetry:  # the checked path is taken only when nothing is off
        assert not problems and not reading.over_range and not (reading.battery and reading.battery.over_range)


def test_the_checked_path_is_taken_for_a_good_report_and_not_for_one_value_off():
    good = (b'{"v":1,"vehicle":"V1","seq":7,"ts":1700000000000,"pos":{"valid":true,"lat":39.9,"lon":116.5},'
            b'"battery":{"id":"B1","soc_pct":80,"temperature_c":31}}')
    assert type(wire.decode_checked(good)) is not wire.Telemetry
    assert type(wire.decode(good)) is wire.Telemetry  # the plain struct, equal to the one encoded
    hot = good.replace(b'"temperature_c":31', b'"temperature_c":260')
    msg = wire.decode_checked(hot)
    assert type(msg) is wire.Telemetry
    reading, problems = wire.to_reading(msg, fleet="bj", received_ns=0)
    assert reading.battery is not None and reading.battery.temperature_c == 200.0
    assert reading.battery.over_range == ("temperature_c",) and problems == []
