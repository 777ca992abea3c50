"""InfluxDB line protocol encoding: one point -> one line, escaped so the server stores exactly what we sent.

Rules (checked against influxd 1.6 and influxdb-client's ``Point``; see docs/influxdb-sink.md):

* measurement: ``,`` and space are backslash-escaped; tag keys, tag values and field keys: ``,`` ``=``
  and space. Names must not start a comment (``#`` first in the measurement), and must not contain
  line breaks, tabs or NUL: the server splits lines on ``\\n`` and drops leading whitespace/NUL, and
  has no escape for them (``Point`` writes ``\\n``, which the server stores as a literal backslash-n).
* a backslash in a name is kept as is, except where the server would read it as an escape
  (before an escaped character or ``"``, or last): that input cannot round-trip, so it is rejected.
* string field values: ``"`` and ``\\`` are escaped; line breaks are rejected so that one line is
  always one point (InfluxDB documents newlines in field values as unsupported).
* floats: shortest ``repr`` with a trailing ``.0`` dropped (same as ``Point``); NaN and +-inf are
  skipped, because InfluxDB rejects the whole line otherwise. ints get ``i`` and must fit int64;
  bools are ``true``/``false``; ``None`` fields are skipped. ``time`` is not a valid tag or field key.
* tags are sorted by key (the server's canonical order, saves it a sort); fields too, like ``Point``.
  Tags with an empty key or value, or value ``None``, are skipped.

Anything that cannot be encoded raises :class:`LineProtocolError` (a ``ValueError``), never something else.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from core.errors import CascadeError

__all__ = ["FieldValue", "LineEncoder", "LineProtocolError", "RecordEncoder", "TagSetEncoder", "TupleEncoder",
           "encode_line"]

FieldValue = float | int | bool | str | None

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
# influxd refuses timestamps at the two extremes of int64 ("time outside range").
_TIME_MIN, _TIME_MAX = -(2**63) + 2, 2**63 - 2

_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})

# A backslash the server would pair with the next character, changing or breaking the name.
_BAD_MEASUREMENT = re.compile(r'[\n\r\t\x00]|\\(?=[, "]|$)')
_BAD_KEY = re.compile(r'[\n\r\t\x00]|\\(?=[,= "]|$)')

# Escaped names repeat constantly (same keys, same cabinet ids); bounded so odd inputs cannot grow it.
_CACHE_LIMIT = 8192
_measurement_cache: dict[str, str] = {}
_key_cache: dict[str, str] = {}


class LineProtocolError(CascadeError):
    """A point that InfluxDB line protocol cannot carry as given."""


def encode_line(measurement: str, tags: Mapping[str, str | None], fields: Mapping[str, FieldValue],
                timestamp_ns: int) -> str:
    """One line of line protocol (no trailing newline) for a point with nanosecond timestamp."""
    head = _escape_measurement(measurement)
    if tags:
        head += _encode_tags(tags)
    return f"{head} {_encode_fields(fields)} {_check_timestamp(timestamp_ns)}"


class LineEncoder:
    """Hot-path encoder for points with a known measurement, tag keys and field keys.

    Names are validated and escaped once here; each distinct tag-value combination is escaped once
    (cached); the fields are formatted by a ``%`` template compiled per combination of value types.
    Any point the fast path does not cover (missing/extra keys, bad strings, NaN, huge ints...) goes
    through :func:`encode_line`, so the output is always identical to it.
    """

    _HEAD_CACHE_LIMIT = 65536

    def __init__(self, measurement: str, tag_keys: Iterable[str], field_keys: Iterable[str]) -> None:
        self.measurement = measurement
        self._measurement = _escape_measurement(measurement)
        self._tag_keys = tuple(tag_keys)
        self._field_keys = tuple(sorted(field_keys))
        for key in self._tag_keys:
            _escape_key(_check_key(key, "tag key"), "tag key")
        if not self._field_keys:
            raise LineProtocolError("LineEncoder needs at least one field key")
        self._prefixes = [_escape_key(_check_key(key, "field key"), "field key") + "=" for key in self._field_keys]
        self._tag_values = _picker(self._tag_keys) or (lambda tags: ())
        self._field_values = _picker(self._field_keys)
        self._heads: dict[tuple, str] = {}
        self._plans: dict[tuple, _Plan | None] = {}

    def encode(self, tags: Mapping[str, str | None], fields: Mapping[str, FieldValue], timestamp_ns: int) -> str:
        """Same result as ``encode_line(self.measurement, tags, fields, timestamp_ns)``, faster."""
        if len(tags) != len(self._tag_keys) or len(fields) != len(self._field_keys) \
                or type(timestamp_ns) is not int or not _TIME_MIN <= timestamp_ns <= _TIME_MAX:
            return encode_line(self.measurement, tags, fields, timestamp_ns)
        try:
            tag_values = self._tag_values(tags)
            values = self._field_values(fields)
        except KeyError:
            return encode_line(self.measurement, tags, fields, timestamp_ns)
        signature = tuple(map(type, values))
        try:
            plan = self._plans[signature]
        except KeyError:
            plan = self._plans[signature] = _compile_plan(self._prefixes, signature)
        body = plan(values) if plan is not None else None
        if body is None:
            return encode_line(self.measurement, tags, fields, timestamp_ns)
        try:
            head = self._heads[tag_values]
        except KeyError:
            head = self._measurement + _encode_tags(tags)
            if len(self._heads) >= self._HEAD_CACHE_LIMIT:
                self._heads.clear()
            self._heads[tag_values] = head
        except TypeError:  # an unhashable tag value: let encode_line report it
            return encode_line(self.measurement, tags, fields, timestamp_ns)
        return f"{head} {body} {timestamp_ns}"


class _Plan:
    """Formats one combination of field value types; returns None when a value needs the slow path.

    Per point this is C-level getters, a float-text cache lookup, one dict lookup and one ``%``
    format: Python-level loops per field would cost more than the formatting itself.
    """

    __slots__ = ("_parts", "_floats", "_ints", "_strs", "_bools", "_order", "_templates")

    _TEMPLATE_LIMIT = 256

    def __init__(self, prefixes: list[str], signature: tuple[type, ...], kept: list[int]) -> None:
        self._parts = [(prefixes[i].replace("%", "%%"), signature[i]) for i in kept]
        floats = [i for i in kept if signature[i] is float]
        ints = [i for i in kept if signature[i] is int]
        strs = [i for i in kept if signature[i] is str]
        self._floats = _picker(floats)
        self._ints = _picker(ints)
        self._strs = _picker(strs)
        self._bools = _picker([i for i in kept if signature[i] is bool]) or (lambda values: ())
        # Arguments arrive as (float texts..., ints..., string texts...); put them back in field order.
        slot = {field: n for n, field in enumerate(floats + ints + strs)}
        self._order = _picker([slot[i] for i in kept if signature[i] is not bool]) or (lambda values: ())
        # Bool values are baked into the template, one template per combination seen.
        self._templates: dict[tuple[bool, ...], str] = {}

    def __call__(self, values: tuple) -> str | None:
        texts: tuple = ()
        if self._floats is not None:
            floats = self._floats(values)
            # One C-level sum instead of a finiteness test per value: NaN/inf anywhere makes it
            # non-finite (and a finite overflow just takes the slow path, which is still correct).
            total = sum(floats)
            if total - total != 0.0:
                return None
            found = list(map(_float_texts.get, floats))
            if None in found:
                found = [text if text is not None else _float_text(value) for text, value in zip(found, floats)]
            texts = tuple(found)
        if self._ints is not None:
            ints = self._ints(values)
            if min(ints) < _INT_MIN or max(ints) > _INT_MAX:
                return None
            texts += ints
        if self._strs is not None:
            strs = self._strs(values)
            quoted = list(map(_string_texts.get, strs))
            if None in quoted:
                try:
                    quoted = [text if text is not None else _string_text(value) for text, value in zip(quoted, strs)]
                except LineProtocolError:
                    return None  # the slow path raises the error with the field's name
            texts += tuple(quoted)
        bools = self._bools(values)
        try:
            template = self._templates[bools]
        except KeyError:
            template = self._template(bools)
        return template % self._order(texts)

    def _template(self, bools: tuple[bool, ...]) -> str:
        given = iter(bools)
        parts = []
        for prefix, kind in self._parts:
            if kind is bool:
                parts.append(prefix + ("true" if next(given) else "false"))
            else:
                parts.append(prefix + ("%di" if kind is int else "%s"))
        if len(self._templates) >= self._TEMPLATE_LIMIT:
            self._templates.clear()
        self._templates[bools] = template = ",".join(parts)
        return template


class TagSetEncoder:
    """The escaped tag part of a line (``,fleet=bj,vehicle=V1``, sorted by key) for each combination of
    tag values, cached (bounded): one cache for every measurement with these tag keys, so the points
    of one report (a vehicle and its pack) share one entry.

    A miss costs one test for characters that need escaping (none in provisioned ids), not a re-escape;
    anything unusual goes through the rules of :func:`encode_line` (and raises as it does).
    """

    _CACHE_LIMIT = 65536

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)
        for key in self.keys:
            _escape_key(_check_key(key, "tag key"), "tag key")
        order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
        self._pick = _picker(order) or (lambda values: ())
        self._sorted_prefixes = ["," + _escape_key(self.keys[i], "tag key") + "=" for i in order]
        self._texts: dict[tuple[str | None, ...], str] = {}

    def encode(self, values: tuple[str | None, ...]) -> str:
        """The tag text for ``values`` (in the order of ``keys``); :class:`LineProtocolError` as
        :func:`encode_line` raises it for a tag it cannot carry."""
        try:
            text = self._texts.get(values)  # get, not [] and KeyError: a fleet larger than the cache misses a lot
        except TypeError:  # an unhashable value: let the general rules report it
            return _encode_tags(dict(zip(self.keys, values, strict=True)))
        if text is not None:
            return text
        text = self._build(values)
        if len(self._texts) >= self._CACHE_LIMIT:
            self._texts.clear()
        self._texts[values] = text
        return text

    def _build(self, values: tuple[str | None, ...]) -> str:
        # A fleet larger than the cache misses it on every report (each vehicle reports once a minute): the
        # common case, plain non-empty text, takes a handful of C calls.
        if len(values) != len(self.keys):
            raise LineProtocolError(f"{len(values)} tag values for the {len(self.keys)} keys {self.keys}")
        picked = self._pick(values)
        try:
            joined = "".join(picked)
        except TypeError:  # None (a tag left out) or not text
            joined = None
        if joined is None or not joined.isascii() or not (joined.isalnum() or _TAG_SPECIAL.search(joined) is None) \
                or not all(picked):
            return _encode_tags(dict(zip(self.keys, values, strict=True)))
        return "".join(map(operator.add, self._sorted_prefixes, picked))

    def clear(self) -> None:
        self._texts.clear()

    def __len__(self) -> int:
        return len(self._texts)


# Characters a tag value must not hold as is (escaped: , = space; refused: line breaks, tab, NUL, backslash).
_TAG_SPECIAL = re.compile(r"[,= \\\n\r\t\x00]")


class TupleEncoder:
    """Hot-path encoder for points whose field values come as a tuple in a fixed order (what an
    ``operator.attrgetter`` over a domain object returns): no dict per point, no loop over fields.

    For each combination of value types (in practice one or two per measurement) a formatter is
    compiled once: a function whose body is one f-string with the line's fields in order (sorted by
    key, ``None`` left out), a float as its cached text (:func:`_float_text` on a miss), an int with
    its ``i``, a string quoted and escaped (cached too). Compiled code is what makes this fast: a
    per-field loop or a dict per point costs more than the formatting itself (``bench lineprotocol``,
    ``bench vehicles``). Only names of our own go into the generated source (``a3``, ``p3``) and keys
    made of letters, digits, ``_``, ``,``, ``=`` and spaces (as literal text, which formats faster than a
    substitution); any other key or text is an argument. The output is identical to :func:`encode_line`, which every point the
    formatter does not cover goes through (NaN or infinity to skip, an int beyond 64 bits, a string it
    cannot carry, an odd type, a bad timestamp), raising as it does.

        tags = TagSetEncoder(("fleet", "vehicle"))
        line = TupleEncoder("vehicle", tags, ("speed_kmh", "model")).encode(("bj", "V1"), (25.0, "EB"), ts)
    """

    def __init__(self, measurement: str, tags: TagSetEncoder, field_keys: Sequence[str]) -> None:
        self.measurement = measurement
        self.field_keys = tuple(field_keys)
        self._record = RecordEncoder(tags, [(measurement, [(key, i) for i, key in enumerate(self.field_keys)])])
        self.tags = tags

    def encode(self, tag_values: tuple[str | None, ...], values: tuple[FieldValue, ...], timestamp_ns: int) -> str:
        """Same result as ``encode_line`` of the same point, with tags and fields given as values in
        the order of ``tags.keys`` and ``field_keys``."""
        lines = self._record.lines(tag_values, values, timestamp_ns)
        if lines is None:
            return encode_line(self.measurement, dict(zip(self.tags.keys, tag_values, strict=True)),
                               dict(zip(self.field_keys, values, strict=True)), timestamp_ns)
        return lines[0]


class RecordEncoder:
    """The points of one record (a vehicle and its pack): the same tags and time, each point's fields
    taken from one tuple of values by index (a value may be a field of several points, its text is
    then made once). One compiled formatter per combination of value types writes every line, as
    :class:`TupleEncoder` does for one.

        record = RecordEncoder(TagSetEncoder(("fleet", "vehicle")),
                               [("vehicle", [("speed_kmh", 0), ("latitude_deg", 1)]),
                                ("vehicle_battery", [("soc_pct", 2), ("latitude_deg", 1)])])
        lines = record.encode(("bj", "V1"), (25.0, 39.92, 80.0), ts)
    """

    _PLAN_LIMIT = 1024

    def __init__(self, tags: TagSetEncoder, points: Sequence[tuple[str, Sequence[tuple[str, int]]]]) -> None:
        self.tags = tags
        self._tag_texts = tags._texts
        self.points = [(measurement, tuple(fields)) for measurement, fields in points]
        self._size = 1 + max((i for _, fields in self.points for _, i in fields), default=-1)
        self._lines: list[tuple[str, list[tuple[str, int]]]] = []
        for measurement, fields in self.points:
            keys = [key for key, _ in fields]
            if not keys:
                raise LineProtocolError(f"point {measurement!r} of a RecordEncoder needs at least one field key")
            if len(set(keys)) != len(keys):
                raise LineProtocolError(f"field keys of {measurement!r} are not unique: {keys}")
            self._lines.append((_escape_measurement(measurement), [  # sorted by key, as encode_line writes them
                (_escape_key(_check_key(key, "field key"), "field key") + "=", i) for key, i in sorted(fields)]))
        self._plans: dict[tuple[type, ...], _Formatter | None] = {}
        self._last_signature: tuple[type, ...] = ()
        self._last_plan: _Formatter | None = None

    def encode(self, tag_values: tuple[str | None, ...], values: tuple[FieldValue, ...],
               timestamp_ns: int) -> list[str]:
        """Every point's line, in the order given; a point line protocol cannot carry is left out (its
        :class:`LineProtocolError` is not raised: the others are written)."""
        try:
            lines = self.lines(tag_values, values, timestamp_ns)
        except LineProtocolError:  # the tags: every point fails below, as encode_line says
            lines = None
        if lines is not None:
            return lines
        tags = dict(zip(self.tags.keys, tag_values, strict=True))
        out = []
        for measurement, fields in self.points:
            try:
                out.append(encode_line(measurement, tags, {key: values[i] for key, i in fields}, timestamp_ns))
            except LineProtocolError:
                pass
        return out

    def lines(self, tag_values: tuple[str | None, ...], values: tuple[FieldValue, ...],
              timestamp_ns: int) -> list[str] | None:
        """Every point's line by the compiled formatter, or None when one needs the rules of
        :func:`encode_line` (raises :class:`LineProtocolError` for tags it cannot carry)."""
        signature = tuple(map(type, values))
        if signature == self._last_signature:  # nearly always: an identity test per value, no hashing
            plan = self._last_plan
        else:
            try:
                plan = self._plans[signature]
            except KeyError:
                plan = self._compile(signature)
            self._last_signature, self._last_plan = signature, plan
        if plan is None or type(timestamp_ns) is not int or not _TIME_MIN <= timestamp_ns <= _TIME_MAX:
            return None
        try:
            # The shared cache; a miss is the rule, not the exception, with more vehicles than its 65,536
            # entries (each reports once a minute): get() costs 0.85 µs less than a KeyError there.
            tags = self._tag_texts.get(tag_values)
        except TypeError:
            tags = None
        if tags is None:
            tags = self.tags.encode(tag_values)
        try:
            return plan(values, tags, timestamp_ns)
        except (_NotFinite, LineProtocolError):
            return None

    def _compile(self, signature: tuple[type, ...]) -> _Formatter | None:
        plan = None
        if len(signature) == self._size:
            points = [(head, [(prefix, signature[i], i) for prefix, i in fields if signature[i] is not type(None)])
                      for head, fields in self._lines]
            if all(kept for _, kept in points) and all(kind in (float, int, bool, str)
                                                       for _, kept in points for _, kind, _ in kept):
                plan = _compile_formatter(self._size, points)
        if len(self._plans) >= self._PLAN_LIMIT:
            self._plans.clear()
        self._plans[signature] = plan
        return plan


_Formatter = Callable[[tuple[FieldValue, ...], str, int], "list[str] | None"]


class _NotFinite(Exception):
    """A NaN or infinite float: the slow path leaves the field out."""


# Measurement names and field keys made only of these go into a formatter's source as literal text (an
# f-string piece costs less than a substitution); they need no escaping in Python or line protocol.
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9_=, ]*")


def _compile_formatter(size: int, points: list[tuple[str, list[tuple[str, type, int]]]]) -> _Formatter:
    """``points``: (escaped measurement, [(prefix ``key=``, value type, index in the tuple)] in line
    order) as one function ``(values, tag text, timestamp) -> lines``."""
    constants: dict[str, Any] = {}  # texts and helpers, passed as the function's defaults (fast local names)

    def literal(text: str) -> str:
        if _PLAIN_TEXT.fullmatch(text):  # letters, digits, _ , = and spaces: written into the f-string as is
            return text
        name = f"p{len(constants)}"  # anything else is an argument: no text of unknown make in the source
        constants[name] = text
        return f"{{{name}}}"

    body: list[str] = []
    made: set[int] = set()
    ints: list[str] = []
    lines = []
    for head, fields in points:
        pieces = [literal(head), "{tags} "]
        for n, (prefix, kind, index) in enumerate(fields):
            pieces.append(literal(("," if n else "") + prefix))
            if kind is float or kind is str:
                if index not in made:  # a value in several points: its text once
                    made.add(index)
                    body.append(f"    t{index} = fget(a{index}) or ftext(a{index})" if kind is float
                                else f"    t{index} = sget(a{index}) or stext(a{index})")
                pieces.append(f"{{t{index}}}")
            elif kind is bool:
                pieces.append(f"{{'true' if a{index} else 'false'}}")
            else:
                if f"a{index}" not in ints:
                    ints.append(f"a{index}")
                pieces.append(f"{{a{index}}}i")
        pieces.append(" {ts}")
        lines.append('f"' + "".join(pieces) + '"')
    constants.update(fget=_float_texts.get, ftext=_exact_float_text, sget=_string_texts.get, stext=_string_text)
    source = [f"def formatter(values, tags, ts, {', '.join(f'{name}={name}' for name in constants)}):",
              f"    {''.join(f'a{i}, ' for i in range(size))}= values"]
    if len(ints) == 1:
        source += [f"    if not {_INT_MIN} <= {ints[0]} <= {_INT_MAX}:", "        return None"]
    elif ints:
        source += [f"    if min({', '.join(ints)}) < {_INT_MIN} or max({', '.join(ints)}) > {_INT_MAX}:",
                   "        return None"]
    source += body
    source.append(f"    return [{', '.join(lines)}]")
    exec("\n".join(source), constants)  # noqa: S102 - our own names only; see TupleEncoder
    formatter: _Formatter = constants["formatter"]
    return formatter


# Sensor values are register readings scaled to units (3.512 V, 25.3 degC), so the same floats recur
# and their text is worth caching: repr() is most of the encoding cost. Keyed by float only (never
# int/bool, which compare equal to floats); zeros are never stored because 0.0 == -0.0.
_FLOAT_TEXT_LIMIT = 65536
_FLOAT_TEXT_CACHED_CHARS = 7
_float_texts: dict[float, str] = {}


def _float_text(value: float) -> str:
    """The text of a finite float, as ``Point`` writes it: ``repr`` without a trailing ``.0``. Cached."""
    # float(): a float subclass (numpy's float64) may repr itself otherwise.
    return _exact_float_text(value if type(value) is float else float(value))


def _exact_float_text(value: float) -> str:
    """:func:`_float_text` of an exact float (the compiled formatters' miss of both caches), raising
    :class:`_NotFinite` for NaN and infinities (the slow path leaves the field out)."""
    if value - value != 0.0:
        raise _NotFinite
    text = repr(value)
    if text.endswith(".0"):
        text = text[:-2]
    # Short texts recur (a sensor's resolution: 25.3, 3.512); long ones are positions and odometers that
    # never do and would only push the others out. Zeros never: 0.0 == -0.0.
    if value != 0.0 and len(text) <= _FLOAT_TEXT_CACHED_CHARS:
        if len(_float_texts) >= _FLOAT_TEXT_LIMIT:
            _float_texts.clear()
        _float_texts[value] = text
    return text


# String fields (battery ids, makers, protection texts) also repeat poll after poll.
_STRING_TEXT_LIMIT = 65536
_string_texts: dict[str, str] = {}
_STRING_SPECIAL = re.compile(r'["\\\n\r]')


def _string_text(value: str) -> str:
    if value.isascii() and _STRING_SPECIAL.search(value) is None:  # most ids and names: nothing to escape
        text = f'"{value}"'
    else:
        text = '"' + _escape_string(value, "") + '"'
    if len(_string_texts) >= _STRING_TEXT_LIMIT:
        _string_texts.clear()
    _string_texts[value] = text
    return text


def _compile_plan(prefixes: list[str], signature: tuple[type, ...]) -> _Plan | None:
    kept = [i for i, kind in enumerate(signature) if kind is not type(None)]
    if not kept or any(signature[i] not in (float, int, bool, str) for i in kept):
        return None  # all None (an error) or other types: encode_line handles (and reports) those
    return _Plan(prefixes, signature, kept)


def _picker(indices: Sequence) -> Callable[[Any], tuple] | None:
    """A C-level getter that always returns a tuple (itemgetter returns a bare item for one index)."""
    if not indices:
        return None
    if len(indices) == 1:
        only = indices[0]
        return lambda values: (values[only],)
    return itemgetter(*indices)


def _encode_tags(tags: Mapping[str, str | None]) -> str:
    parts = []
    for key, value in _sorted_items(tags, "tag"):
        if value is None or key == "" or value == "":
            continue
        if type(value) is not str:
            raise LineProtocolError(f"tag {key!r} has a {type(value).__name__} value {value!r}: "
                                    f"tag values must be str, convert it where the tags are built")
        parts.append(f",{_escape_key(_check_key(key, 'tag key'), 'tag key')}={_escape_key(value, 'tag value')}")
    return "".join(parts)


def _encode_fields(fields: Mapping[str, FieldValue]) -> str:
    parts = []
    for key, value in _sorted_items(fields, "field"):
        if value is None:
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                continue
            text = _float_texts.get(value) or _float_text(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            if not _INT_MIN <= value <= _INT_MAX:
                raise LineProtocolError(f"field {key!r} = {value} does not fit a signed 64-bit integer: "
                                        f"send it as float or scale it down")
            text = "%di" % value  # noqa: UP031 - the fastest integer formatting here (bench lineprotocol)
        elif isinstance(value, str):
            text = f'"{_escape_string(value, key)}"'
        else:
            raise LineProtocolError(f"field {key!r} has unsupported type {type(value).__name__}: "
                                    f"use float, int, bool or str")
        parts.append(f"{_escape_key(_check_key(key, 'field key'), 'field key')}={text}")
    if not parts:
        raise LineProtocolError("point has no fields left (all None or non-finite): InfluxDB needs at least one")
    return ",".join(parts)


def _sorted_items(mapping: Mapping, what: str) -> list[tuple]:
    try:
        return sorted(mapping.items(), key=_first)
    except TypeError:
        raise LineProtocolError(f"{what} keys must all be str, got "
                                f"{sorted({type(k).__name__ for k in mapping})}") from None


def _first(item: tuple) -> Any:
    return item[0]


def _check_timestamp(timestamp_ns: int) -> int:
    if type(timestamp_ns) is not int:
        raise LineProtocolError(f"timestamp must be int nanoseconds, got {type(timestamp_ns).__name__}")
    if not _TIME_MIN <= timestamp_ns <= _TIME_MAX:
        raise LineProtocolError(f"timestamp {timestamp_ns} is outside InfluxDB's range "
                                f"{_TIME_MIN}..{_TIME_MAX} ns")
    return timestamp_ns


def _escape_measurement(name: str) -> str:
    try:
        return _measurement_cache[name]
    except (KeyError, TypeError):
        pass
    _check_name(name, "measurement", _BAD_MEASUREMENT)
    if name.startswith("#"):
        raise LineProtocolError(f"measurement {name!r} starts with '#', which makes the line a comment: rename it")
    escaped = name.translate(_ESCAPE_MEASUREMENT)
    _remember(_measurement_cache, name, escaped)
    return escaped


def _escape_key(name: str, what: str) -> str:
    try:
        return _key_cache[name]
    except (KeyError, TypeError):
        pass
    _check_name(name, what, _BAD_KEY)
    escaped = name.translate(_ESCAPE_KEY)
    _remember(_key_cache, name, escaped)
    return escaped


def _check_key(key: str, what: str) -> str:
    if key == "time":
        raise LineProtocolError(f"'time' is reserved in InfluxDB and rejected as {what}: rename it")
    return key


def _check_name(name: str, what: str, bad: re.Pattern[str]) -> None:
    if type(name) is not str:
        raise LineProtocolError(f"{what} must be str, got {type(name).__name__} {name!r}")
    if not name:
        raise LineProtocolError(f"{what} is empty: InfluxDB needs a non-empty name")
    _check_utf8(name, what)
    match = bad.search(name)
    if match:
        raise LineProtocolError(f"{what} {name!r} cannot be written as line protocol: it has "
                                f"{_describe(match.group())} at offset {match.start()}; remove it where the name is built")


def _escape_string(value: str, key: str) -> str:
    _check_utf8(value, f"string field {key!r}")
    if "\n" in value or "\r" in value:
        raise LineProtocolError(f"string field {key!r} contains a line break, which would split the line: "
                                f"replace it (e.g. with a space) before encoding")
    return value.translate(_ESCAPE_STRING)


def _check_utf8(text: str, what: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise LineProtocolError(f"{what} is not valid UTF-8 text ({err.reason} at {err.start}): "
                                    f"decode the source bytes properly") from None


def _describe(found: str) -> str:
    return {"\n": "a line feed", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL"}.get(
        found, "a backslash the server would read as an escape")


def _remember(cache: dict[str, str], name: str, escaped: str) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[name] = escaped
