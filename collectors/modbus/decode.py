"""Turn the responses of one poll's planned reads into a typed :class:`CabinetReading`.

A field whose registers are garbage becomes ``None`` and a :class:`FieldError` naming the
cabinet, slot, register and reason; every other field of the poll is kept. A plausible value past
the field's valid range is kept as the limit and its name listed in the reading's (or slot's)
``over_range``: a sensor at its limit is evidence of the worst case, not missing data.

A profile's ``extra:`` registers land in ``reading.extra`` / ``slot.extra`` (name → value; a value
that is missing or rejected is left out), named ``extra_<name>`` in errors and ``over_range``. A
field with a ``bits:`` map holds Cascade's flags only; the vendor bits the map does not name are
kept in ``<field>_unmapped``.

:func:`decode_poll` is the definition. A cabinet polls with the same decoding compiled once per read plan
(:func:`compile_plan`, shared through :func:`shared_decoder`): one generated function per plan, the
16-bit and bit fields written out as straight-line code, the values passed straight to the reading's
constructors. ``tests/test_compiled_decoder.py`` holds the two to each other on every shipped profile
and on randomly edited ones; the behaviour tests run against both.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.model import CabinetReading, SlotReading

from .codec import DecodeError, OverRange, inline_source
from .planner import ReadRequest

__all__ = ["FieldError", "PlanDecoder", "compile_plan", "decode_poll", "decode_read", "shared_decoder"]

Responses = Sequence[Sequence[int] | Sequence[bool] | None]
PlanDecoder = Callable[..., "tuple[CabinetReading, list[FieldError]]"]
"""``decoder(responses, cabinet_id=..., site=..., model=..., timestamp_ns=...)``: :func:`decode_poll` of one
plan, compiled."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """A field rejected while decoding: where it came from and why."""

    cabinet_id: str
    slot: int | None
    field: str
    register_type: str
    address: int
    reason: str

    def __str__(self) -> str:
        where = f"cabinet {self.cabinet_id}" + (f" slot {self.slot}" if self.slot is not None else "")
        return f"{where}: {self.field} ({self.register_type} register {self.address}): {self.reason}"


def _coerce(kind: type, value: object) -> object:
    if kind is float:
        return float(value)  # type: ignore[arg-type]
    if kind is int:
        return int(round(value))  # type: ignore[arg-type]
    return kind(value)


def decode_poll(plan: Sequence[ReadRequest], responses: Sequence[Sequence[int] | Sequence[bool] | None], *,
                cabinet_id: str, site: str, model: str, slot_count: int,
                timestamp_ns: int) -> tuple[CabinetReading, list[FieldError]]:
    """Decode ``responses`` (one per planned read, ``None`` for a read that failed)."""
    cabinet: dict[str, object] = {}
    slots: list[dict[str, object]] = [{} for _ in range(slot_count)]
    errors: list[FieldError] = []
    over: dict[int | None, list[str]] = {}  # slot (None = cabinet) -> fields kept at their limit
    for request, words in zip(plan, responses):
        if words is None:
            continue
        for item, value in zip(request.fields, decode_read(request, words, cabinet_id, errors, over)):
            target = cabinet if item.slot is None else slots[item.slot - 1]
            if item.extra:
                if value is not None:
                    extra = target.get("extra")
                    if extra is None:
                        extra = target["extra"] = {}
                    extra[item.name] = value  # type: ignore[index]
            else:
                target[item.name] = value
    for where, names in over.items():
        (cabinet if where is None else slots[where - 1])["over_range"] = tuple(names)
    reading = CabinetReading(
        cabinet_id=cabinet_id, site=site, model=model, timestamp_ns=timestamp_ns,
        slots=[SlotReading(slot=i + 1, **values) for i, values in enumerate(slots)],
        **cabinet,
    )
    return reading, errors


def decode_read(request: ReadRequest, words: Sequence[int] | Sequence[bool], cabinet_id: str,
                errors: list[FieldError], over: dict[int | None, list[str]]) -> list[object]:
    """The value of each of ``request``'s fields in ``words`` (its answer), in the read's order: converted
    to the type the reading stores; a value past the field's valid range kept at the limit, its label
    appended to ``over[slot]``; ``None`` (a reading field's default) for a field whose words are garbage,
    its :class:`FieldError` appended to ``errors``. (A field a plan named twice for one slot, which no
    profile can, would take its last read's value, ``None`` if that one is rejected.)"""
    values: list[object] = []
    for item in request.fields:
        kind = item.kind
        try:
            value = item.decode(words, item.index)
            if value is not None and type(value) is not kind and kind is not None:
                value = _coerce(kind, value)
        except OverRange as err:
            value = float(err.limit) if kind is float or kind is None else _coerce(kind, err.limit)
            over.setdefault(item.slot, []).append(item.label)
        except DecodeError as err:
            errors.append(FieldError(cabinet_id, item.slot, item.label, request.register_type,
                                     request.address + item.index, str(err)))
            value = None
        values.append(value)
    return values


# -- the same decoding compiled per read plan --------------------------------------------------------

_SPECIAL_SLOT = frozenset({"slot", "over_range", "extra"})
_SPECIAL_CABINET = frozenset({"cabinet_id", "site", "model", "timestamp_ns", "slots", "over_range", "extra",
                              "vehicle"})


def _none_default(cls: type, names: set[str]) -> bool:
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return all(defaults.get(name, 0) is None for name in names)


class _Unusual(Exception):
    """Raised by the written-out code of a compiled plan where a field's decoder would raise."""


def compile_plan(plan: Sequence[ReadRequest], slot_count: int) -> PlanDecoder:
    """:func:`decode_poll` for this one plan as one generated function: the same reading and errors (in
    the same order) for the same responses, without a loop, a call and a dict per field.

    Per read the function holds the common path only: each field's decoder written out where
    :mod:`.codec` can (16-bit numbers, bits: most of a cabinet's fields), else a call of the decoder the
    plan holds, then the conversion to the type the reading stores; values go straight into the slot
    and cabinet constructors. A read where any field is past its valid range or rejected is decoded
    again by :func:`decode_read`, the definition itself, for the limits, ``over_range`` and errors:
    rare, and it keeps the generated code (and the memory the compiler takes to build it) small. Only
    names of our own go into the source (``v12``, ``k3``); every profile text and number of a profile is
    a constant passed in. A plan it cannot write (a field name the readings do not have, a slot past
    ``slot_count``) gets :func:`decode_poll` itself.
    """
    constants: dict[str, Any] = {}
    by_value: dict[tuple[type, object], str] = {}

    def constant(value: object) -> str:
        # by type and value (a float by its text: -0.0 is not 0.0 in a message), anything else by identity
        key = (type(value), repr(value) if type(value) is float else
               value if isinstance(value, (str, int, bool, type(None))) else id(value))
        name = by_value.get(key)
        if name is None:
            name = by_value[key] = f"k{len(constants)}"
            constants[name] = value
        return name

    variables: dict[tuple[int | None, str], str] = {}  # (slot, reading attribute) -> variable
    extras: list[str] = []  # variables of extra registers
    body: list[str] = []
    for r, request in enumerate(plan):
        names: list[str] = []  # the read's variables, in its fields' order
        code: list[str] = []
        after: list[str] = []  # extra registers: into the slot's (cabinet's) dict once the read is decoded
        for item in request.fields:
            if item.slot is not None and not 1 <= item.slot <= slot_count:
                return _reference(plan, slot_count)
            if item.extra:
                var = f"x{len(extras)}"
                extras.append(var)
                t = "c" if item.slot is None else str(item.slot)
                after += [f"if {var} is not None:", f"    if e{t} is None: e{t} = {{}}",
                          f"    e{t}[{constant(item.name)}] = {var}"]
            else:
                var = variables.setdefault((item.slot, item.name), f"v{len(variables)}")
            names.append(var)
            code += _field_source(item, var, constant)
        body.append(f"w = responses[{r}]")
        if names:
            body += ["if w is not None:", "    try:", *("        " + line for line in code),
                     "    except (OverRange, DecodeError, _Unusual):",
                     "        if o is None: o = {}",
                     f"        {', '.join(names)}, = decode_read({constant(request)}, w, cabinet_id, errors, o)",
                     *("    " + line for line in after)]
    cabinet_names = {name for (slot, name) in variables if slot is None}
    slot_names = {name for (slot, name) in variables if slot is not None}
    if cabinet_names & _SPECIAL_CABINET or slot_names & _SPECIAL_SLOT or \
            not _none_default(CabinetReading, cabinet_names) or not _none_default(SlotReading, slot_names):
        return _reference(plan, slot_count)
    numbers = range(1, slot_count + 1)
    everything = [*variables.values(), *extras, *(f"e{t}" for t in ("c", *numbers))]
    head = [" = ".join(everything[i:i + 32]) + " = None" for i in range(0, len(everything), 32)]

    def arguments(slot: int | None) -> str:
        t = "c" if slot is None else str(slot)
        args = [f"{name}={var}" for (s, name), var in variables.items() if s == slot]
        args.append(f"over_range=() if o is None or {slot!r} not in o else tuple(o[{slot!r}])")
        args.append(f"extra=NO_EXTRA if e{t} is None else e{t}")
        return ", ".join(args)

    slots = ", ".join(f"SlotReading(slot={n}, {arguments(n)})" for n in numbers)
    source = "\n".join([
        "def decode(responses, *, cabinet_id, site, model, timestamp_ns):",
        f"    if len(responses) != {len(plan)}:",
        "        return decode_poll(PLAN, responses, cabinet_id=cabinet_id, site=site, model=model, "
        f"slot_count={slot_count}, timestamp_ns=timestamp_ns)",
        "    errors = []",
        "    o = None",
        *("    " + line for line in head),
        *("    " + line for line in body),
        "    reading = CabinetReading(cabinet_id=cabinet_id, site=site, model=model, timestamp_ns=timestamp_ns, "
        f"slots=[{slots}], {arguments(None)})",
        "    return reading, errors",
    ])
    namespace: dict[str, Any] = {
        **constants, "CabinetReading": CabinetReading, "SlotReading": SlotReading, "OverRange": OverRange,
        "DecodeError": DecodeError, "_Unusual": _Unusual, "_coerce": _coerce, "decode_read": decode_read,
        "NO_EXTRA": SlotReading(slot=0).extra, "decode_poll": decode_poll, "PLAN": tuple(plan),
    }
    exec(compile(source, f"<read plan: {len(plan)} reads, {slot_count} slots>", "exec"), namespace)  # noqa: S102
    decoder: PlanDecoder = namespace["decode"]
    decoder.source = source  # type: ignore[attr-defined]  # the generated code, to read (and for the tests)
    return decoder


def _field_source(item: Any, var: str, constant: Callable[[object], str]) -> list[str]:
    """The common path of one field into ``var``: its decoder written out, or called; then the conversion to
    the type the reading stores, only where the decoder's type differs (or is not known here)."""
    kind = item.kind
    inline = getattr(item.decode, "inline", None)
    if inline is not None:
        gives = _inline_type(item)
        then = [] if kind is None or kind is gives else [f"{var} = {_coercion(kind, var, constant)}"]
        code = inline_source(item.decode, item.spec, "w", item.index, var, constant, "_Unusual", then)
        if code is not None:
            return code
    code = [f"{var} = {constant(item.decode)}(w, {item.index})"]
    if kind is not None:  # a decoder's own type: converted only when it differs, as decode_read does
        code.append(f"if {var} is not None and type({var}) is not {constant(kind)}: "
                    f"{var} = _coerce({constant(kind)}, {var})")
    return code


def _inline_type(item: Any) -> type:
    """The type a written-out decoder gives (besides ``None``)."""
    if item.decode.inline in ("bool", "bit"):
        return bool
    scale = item.spec.scale  # word16: the raw int, or round(raw * scale, decimals): an int for an int scale
    return float if scale != 1 and isinstance(scale, float) else int


def _coercion(kind: type, var: str, constant: Callable[[object], str]) -> str:
    if kind is float:
        return f"float({var})"
    if kind is int:
        return f"int(round({var}))"
    return f"_coerce({constant(kind)}, {var})"


def _reference(plan: Sequence[ReadRequest], slot_count: int) -> PlanDecoder:
    def decode(responses: Responses, *, cabinet_id: str, site: str, model: str,
               timestamp_ns: int) -> tuple[CabinetReading, list[FieldError]]:
        return decode_poll(plan, responses, cabinet_id=cabinet_id, site=site, model=model, slot_count=slot_count,
                           timestamp_ns=timestamp_ns)
    return decode


_SHARED_MAX = 256
_shared: OrderedDict[int, tuple[Sequence[ReadRequest], int, PlanDecoder]] = OrderedDict()


def shared_decoder(plan: Sequence[ReadRequest], slot_count: int) -> PlanDecoder:
    """:func:`compile_plan` once per plan object (``planner.shared_plan`` hands every cabinet of a profile
    the same one): the generated code is large, one copy per cabinet would cost more than the cabinet.
    Keyed by the plan's identity (the cache keeps the plan alive, so the id is not reused); bounded."""
    hit = _shared.get(id(plan))
    if hit is not None and hit[0] is plan and hit[1] == slot_count:
        _shared.move_to_end(id(plan))
        return hit[2]
    decoder = compile_plan(plan, slot_count)
    _shared[id(plan)] = (plan, slot_count, decoder)
    while len(_shared) > _SHARED_MAX:
        _shared.popitem(last=False)
    return decoder
