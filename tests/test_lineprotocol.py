"""Line-protocol encoding: influxdb_client's Point as oracle, fuzzing, and a round trip through real influxd."""

from __future__ import annotations

import contextlib
import math
import re
import urllib.request

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from influxdb_client import Point, WritePrecision

from exporters.influx.lineprotocol import LineEncoder, LineProtocolError, encode_line

# Characters that matter to line protocol, mixed into ordinary text so hypothesis hits them often.
_SPECIAL = ',= "\\\n\r\t\x00#i.'
_names = st.text(st.one_of(st.sampled_from(_SPECIAL), st.characters(codec="utf-8")), max_size=8)
_floats = st.floats(allow_nan=True, allow_infinity=True)
_ints = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**70), 2**70))
_values = st.one_of(st.none(), _floats, _ints, st.booleans(), _names)
_timestamps = st.one_of(st.integers(-(2**63) + 2, 2**63 - 2), st.integers(-(2**64), 2**64))


def _point_line(measurement, tags, fields, ts) -> str:
    point = Point(measurement)
    for key, value in tags.items():
        point.tag(key, value)
    for key, value in fields.items():
        point.field(key, value)
    return point.time(ts, WritePrecision.NS).to_line_protocol()


def _unrepresentable(name: str, specials: str) -> bool:
    """Names encode_line rejects on purpose: the server would split, trim or unescape them."""
    return (name == "" or any(c in name for c in "\n\r\t\x00")
            or re.search(r'\\(?=[' + re.escape(specials) + r'"]|$)', name) is not None)


def _documented_rejection(measurement, tags, fields, ts) -> bool:
    """True when the input falls under one of the rejections documented in lineprotocol.py."""
    kept_tags = {k: v for k, v in tags.items() if v not in (None, "") and k != ""}
    kept_fields = {k: v for k, v in fields.items()
                   if v is not None and not (isinstance(v, float) and not math.isfinite(v))}
    return (_unrepresentable(measurement, ", ") or measurement.startswith("#")
            or any(_unrepresentable(k, ",= ") or _unrepresentable(v, ",= ") or k == "time"
                   for k, v in kept_tags.items())
            or not kept_fields
            or any(_unrepresentable(k, ",= ") or k == "time" for k in kept_fields)
            or any(isinstance(v, str) and ("\n" in v or "\r" in v) for v in kept_fields.values())
            or any(type(v) is int and not -(2**63) <= v < 2**63 for v in kept_fields.values())
            or not -(2**63) + 2 <= ts <= 2**63 - 2)


@settings(max_examples=400, deadline=None)
@given(measurement=_names, tags=st.dictionaries(_names, st.one_of(st.none(), _names), max_size=4),
       fields=st.dictionaries(_names, _values, max_size=5), ts=_timestamps)
@example(measurement="m", tags={"t": "a\\"}, fields={"f": 1.0}, ts=0)  # Point: 't=a\ ' -> server stores "a "
@example(measurement="m", tags={}, fields={"f": "x\ny"}, ts=0)
@example(measurement="#m", tags={}, fields={"f": 1}, ts=0)
@example(measurement="m", tags={}, fields={"f": float("nan")}, ts=0)
def test_matches_point_or_rejects_for_a_documented_reason(measurement, tags, fields, ts):
    try:
        line = encode_line(measurement, tags, fields, ts)
    except LineProtocolError:
        assert _documented_rejection(measurement, tags, fields, ts)
        return
    assert not _documented_rejection(measurement, tags, fields, ts)
    assert line == _point_line(measurement, tags, fields, ts)


_keys = st.text(st.one_of(st.sampled_from(",= %.0"), st.characters(codec="ascii", categories=["L", "N"])),
                min_size=1, max_size=6).filter(lambda k: k != "time")
_fast_values = st.one_of(st.none(), st.floats(), st.integers(-(2**64), 2**64), st.booleans(),
                         st.sampled_from([0.0, -0.0, 1.0, -1.0, 3.5, 1e16, 1e-7, 1e308, -1e308, 2**63]),
                         st.text(max_size=3), st.sampled_from(['a"b', "c\\", "x\ny", "r\r", "LF48-0001", ""]))


@settings(max_examples=400, deadline=None)
@given(tag_keys=st.lists(_keys, max_size=3, unique=True), field_keys=st.lists(_keys, min_size=1, max_size=6, unique=True),
       data=st.data())
def test_line_encoder_output_is_identical_to_encode_line(tag_keys, field_keys, data):
    encoder = LineEncoder("battery slot", tag_keys, field_keys)
    for _ in range(3):  # several points per encoder so cached plans and heads are exercised
        tags = {k: data.draw(st.one_of(st.none(), st.sampled_from(["", "c 1", "7", "a,b=c"]))) for k in tag_keys}
        fields = {k: data.draw(_fast_values) for k in field_keys}
        if data.draw(st.booleans()):  # sometimes a missing or an extra key
            fields.pop(field_keys[0], None) if data.draw(st.booleans()) else fields.update(extra=1.5)
        ts = data.draw(_timestamps)
        try:
            expected = encode_line("battery slot", tags, fields, ts)
        except LineProtocolError:
            with pytest.raises(LineProtocolError):
                encoder.encode(tags, fields, ts)
            continue
        assert encoder.encode(tags, fields, ts) == expected


_anything = st.one_of(st.text(st.characters()), st.text(st.characters(categories=["Cs", "Cc", "Zs", "Zl"])),
                      st.binary(max_size=4), st.floats(), st.integers(-(2**80), 2**80), st.booleans(), st.none(),
                      st.lists(st.integers(), max_size=2))


@settings(max_examples=500, deadline=None)
@given(measurement=_anything, tags=st.dictionaries(_anything.filter(lambda v: v.__hash__ is not None), _anything,
                                                   max_size=3),
       fields=st.dictionaries(_anything.filter(lambda v: v.__hash__ is not None), _anything, max_size=3),
       ts=st.one_of(_timestamps, _anything))
def test_arbitrary_input_encodes_or_raises_line_protocol_error(measurement, tags, fields, ts):
    try:
        line = encode_line(measurement, tags, fields, ts)
    except LineProtocolError:
        return
    assert isinstance(line, str) and "\n" not in line and "\r" not in line
    line.encode("utf-8")


def test_text_fuzz_never_raises_anything_else():
    @settings(max_examples=500, deadline=None)
    @given(st.text(st.characters(categories=["Cs", "Cc", "Zs", "L", "P"])), st.text(st.characters()))
    def check(name, value):
        for call in (lambda: encode_line(name, {name: value}, {name: value}, 1),
                     lambda: encode_line("m", {"t": name}, {"f": value}, 1),
                     lambda: LineEncoder(name, [name], [name]).encode({name: value}, {name: 1.5}, 1)):
            try:
                line = call()
            except LineProtocolError:
                continue
            assert "\n" not in line and "\r" not in line
            line.encode("utf-8")
    check()


@pytest.mark.parametrize("measurement, tags, fields, expected", [
    ("battery slot", {"cab": "c,1", "slot": "7"}, {"v": 3.512, "n": 3, "ok": True, "s": 'say "hi" \\o/'},
     r'battery\ slot,cab=c\,1,slot=7 n=3i,ok=true,s="say \"hi\" \\o/",v=3.512 5'),
    ("m", {"b": "2", "a": "1", "e": ""}, {"x=y": 1.0, "z": None, "w": float("inf")}, r"m,a=1,b=2 x\=y=1 5"),
    ("m", {}, {"f": -0.0, "g": 1e16, "h": 1.5e-07}, "m f=-0,g=1e+16,h=1.5e-07 5"),
])
def test_known_lines(measurement, tags, fields, expected):
    assert encode_line(measurement, tags, fields, 5) == expected
    assert LineEncoder(measurement, tags, fields).encode(tags, fields, 5) == expected


@pytest.mark.parametrize("measurement, tags, fields, ts", [
    ("", {}, {"f": 1}, 1),
    ("#comment", {}, {"f": 1}, 1),
    ("m", {}, {"f": None, "g": float("nan")}, 1),
    ("m", {"t": "a\\"}, {"f": 1}, 1),
    ("m", {"t": "a\nb"}, {"f": 1}, 1),
    ("m", {}, {"f": "two\nlines"}, 1),
    ("m", {}, {"time": 1}, 1),
    ("m", {"time": "x"}, {"f": 1}, 1),
    ("m", {}, {"f": 2**63}, 1),
    ("m", {}, {"f": 1}, 2**63 - 1),
    ("m", {}, {"f": "\ud800"}, 1),
    ("m", {"t": 7}, {"f": 1}, 1),
])
def test_rejections(measurement, tags, fields, ts):
    with pytest.raises(LineProtocolError):
        encode_line(measurement, tags, fields, ts)


_NASTY = ["plain", "with space", "com,ma", "eq=uals", 'quo"te', "back\\slash", "a\\\\b", "ünï ćødé ✓",
          " lead", "trail ", ",=, =", "x" * 200, '"', "%s%d", "i", "1.0", "true"]


def test_round_trip_through_real_influxd(influxdb):
    """What encode_line accepts, influxd 1.x stores exactly: tag values, string values, field keys, measurements."""
    lines, expected = [], []
    for n, text in enumerate(_NASTY):
        lines.append(encode_line("round trip", {"tag": text}, {"s": f"{text}\\", "f": n + 0.25}, n))
        lines.append(encode_line(text, {}, {text: n}, n))
        expected.append((n, text))
    body = ("\n".join(lines) + "\n").encode()
    req = urllib.request.Request(f"{influxdb.url}/write?db={influxdb.database}&precision=ns", data=body)
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204
    rows = influxdb.query('SELECT * FROM "round trip"')
    assert [(r["time"], r["tag"], r["s"], r["f"]) for r in rows] == [(n, t, f"{t}\\", n + 0.25) for n, t in expected]
    names = {r["name"] for r in influxdb.query("SHOW MEASUREMENTS")}
    assert names == set(_NASTY) | {"round trip"}
    for n, text in expected:
        keys = {r["fieldKey"] for r in influxdb.query(f'SHOW FIELD KEYS FROM "{_ident(text)}"')}
        assert keys == {text}


def _ident(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def test_vendor_extras_are_stored_as_extra_fields_of_the_same_point() -> None:
    """Registers a vendor sends with no Cascade field (profile ``extra:``) are never lost: they are
    ``extra_<name>`` fields of the same cabinet/slot series and timestamp (InfluxDB merges them)."""
    from core.model import CabinetReading, SlotReading
    from exporters.influx.schema import encode_points, reading_to_lines

    reading = CabinetReading("C1", "s1", "kestrel-k10", 1_700_000_000_000_000_000, door_open=False,
                             extra={"fan_speed_rpm": 724, "swap_count": 48008},
                             slots=[SlotReading(1, voltage_v=52.1, extra={"humidity_pct": 52.5}),
                                    SlotReading(2, voltage_v=52.0)])
    lines = reading_to_lines(reading)
    assert len(lines) == 5  # cabinet, its extras, slot 1, slot 1's extras, slot 2
    assert "cabinet,cabinet=C1,model=kestrel-k10,site=s1 extra_fan_speed_rpm=724i,extra_swap_count=48008i " \
           "1700000000000000000" in lines
    assert any(line.startswith("slot,cabinet=C1,site=s1,slot=1 extra_humidity_pct=52.5 ") for line in lines)
    assert any("door_open=false" in line for line in lines)
    assert encode_points([reading]) == (lines, [])  # nothing counted as unencodable


def _reference_lines(reading) -> list[str]:
    """What reading_to_lines must write, by the general rules (encode_line), one dict per point."""
    import dataclasses

    from core.model import BmsProtection, ChargerProtection, EmergencyState, describe_flags
    from exporters.influx.lineprotocol import LineProtocolError, encode_line

    def text(flags, word):
        return None if word is None else describe_flags(flags, word)

    out = []
    fixed = {"cabinet_id", "site", "model", "timestamp_ns", "slots", "over_range", "extra"}
    fields = {f.name: getattr(reading, f.name) for f in dataclasses.fields(reading) if f.name not in fixed}
    fields["emergency_state_text"] = text(EmergencyState, reading.emergency_state)
    fields["over_range"] = ",".join(reading.over_range) or None
    tags = {"site": reading.site, "cabinet": reading.cabinet_id, "model": reading.model}
    if any(v is not None for v in fields.values()):
        with contextlib.suppress(LineProtocolError):
            out.append(encode_line("cabinet", tags, fields, reading.timestamp_ns))
    if reading.extra:
        out.append(encode_line("cabinet", tags, {f"extra_{k}": v for k, v in reading.extra.items()}, reading.timestamp_ns))
    for slot in reading.slots:
        fields = {f.name: getattr(slot, f.name) for f in dataclasses.fields(slot)
                  if f.name not in {"slot", "over_range", "extra"}}
        fields["charger_protection_text"] = text(ChargerProtection, slot.charger_protection)
        fields["bms_protection_text"] = text(BmsProtection, slot.bms_protection)
        fields["over_range"] = ",".join(slot.over_range) or None
        tags = {"site": reading.site, "cabinet": reading.cabinet_id, "slot": str(slot.slot)}
        with contextlib.suppress(LineProtocolError):
            out.append(encode_line("slot", tags, fields, reading.timestamp_ns))
        if slot.extra:
            out.append(encode_line("slot", tags, {f"extra_{k}": v for k, v in slot.extra.items()}, reading.timestamp_ns))
    return out


_ANY_VALUE = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**65), 2**65),
                       st.booleans(), st.text(max_size=6))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_reading_lines_are_what_the_general_rules_write(data: st.DataObject) -> None:
    """The compiled formatters of reading_to_lines write exactly what encode_line writes for each point, for
    decoded polls of the simulated cabinets and for readings with odd values (NaN, huge ints, text with
    quotes or line breaks, tags with spaces): a point the general rules refuse is left out, the others kept."""
    import dataclasses

    from core.model import CabinetReading, SlotReading
    from exporters.influx.schema import reading_to_lines

    def fill(cls, fixed):
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in fixed or not data.draw(st.booleans()):
                continue
            if f.name in ("charger_protection", "bms_protection", "emergency_state"):  # words, as decoded
                values[f.name] = data.draw(st.integers(0, 0xFFFF))
                continue
            values[f.name] = data.draw(_ANY_VALUE) if data.draw(st.integers(0, 4)) == 0 else \
                data.draw(st.one_of(st.none(), st.floats(-1e6, 1e6), st.integers(0, 70000), st.booleans()))
        return values

    slots = [SlotReading(n, **fill(SlotReading, {"slot", "over_range", "extra"}),
                         over_range=tuple(data.draw(st.lists(st.sampled_from(["soc_pct", "temperature_c"]), max_size=2))))
             for n in range(1, data.draw(st.integers(0, 4)) + 1)]
    reading = CabinetReading(data.draw(st.sampled_from(["C1", "C 2", "c,3"])), data.draw(st.sampled_from(["s1", "s=2"])),
                             "m", data.draw(st.sampled_from([1, 1_700_000_000_000_000_000])), slots=slots,
                             **fill(CabinetReading, {"cabinet_id", "site", "model", "timestamp_ns", "slots",
                                                     "over_range", "extra", "vehicle"}))
    assert reading_to_lines(reading) == _reference_lines(reading)
