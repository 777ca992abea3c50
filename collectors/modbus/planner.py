"""Read planning: merge a profile's registers into as few Modbus reads as the protocol allows.

Computed once per (profile, slot count, gap) at start-up and shared: :func:`shared_plan` hands
every cabinet with the same profile, slot count and gap the same immutable plan (a plan holds a
compiled decoder per field; one per cabinet was ~300 KiB of a 12-slot cabinet's memory). A read never exceeds 125 registers
(2000 bits for coils and discrete inputs), never splits a multi-word field, and bridges a gap
between fields only up to ``max_gap`` unused registers: some devices answer "illegal address"
for registers they do not map, so gap fill is a per-cabinet setting.

    >>> from collectors.modbus.profile import find_profile
    >>> plan = plan_reads(find_profile("reference-cabinet"), slot_count=12)
    >>> len(plan) == minimum_reads(find_profile("reference-cabinet"), slot_count=12)
    True
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from core.model import FIELD_KINDS

from .codec import compile_decoder, compile_unmapped
from .profile import REGISTER_TYPES, FieldSpec, Profile, unmapped_field

__all__ = ["FieldSlice", "ReadRequest", "MAX_BITS", "MAX_REGISTERS", "minimum_reads", "plan_reads", "restrict_plan",
           "shared_plan"]

MAX_REGISTERS = 125  # Modbus application protocol limit for function codes 3 and 4
MAX_BITS = 2000  # ... and for function codes 1 and 2


@dataclass(frozen=True, slots=True)
class FieldSlice:
    """One value inside a read's response: slot ``None`` means a cabinet-wide field.

    Everything the decoder needs per poll is fixed here, at planning: the compiled decoder, the
    name the value is stored under (a reading attribute, or the key in ``reading.extra``), the
    type it is stored as and the label errors and ``over_range`` use (``extra_<name>`` for extras).
    A field with a ``bits`` map has a second slice on the same words, ``unmapped``: the vendor
    bits the map gives no meaning, stored in ``<field>_unmapped``.
    """

    slot: int | None
    spec: FieldSpec
    index: int  # position of the field's first word in the response
    decode: Callable[[Sequence[int], int], object] = field(compare=False, repr=False, default=None)  # type: ignore[assignment]
    unmapped: bool = False
    name: str = field(init=False)
    kind: type | None = field(init=False, compare=False, repr=False)
    extra: bool = field(init=False, compare=False, repr=False)
    label: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        spec = self.spec
        if self.decode is None:
            set_(self, "decode", compile_unmapped(spec) if self.unmapped else compile_decoder(spec))
        name = unmapped_field(spec.field) if self.unmapped else spec.field
        set_(self, "name", name)
        set_(self, "extra", spec.extra)
        set_(self, "kind", spec.value_kind if spec.extra else FIELD_KINDS.get(name))
        set_(self, "label", f"extra_{name}" if spec.extra else name)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read and the fields its response carries."""

    register_type: str
    address: int
    count: int
    fields: tuple[FieldSlice, ...]


def _field_extents(profile: Profile, slot_count: int) -> dict[str, list[tuple[int, int, int | None, FieldSpec]]]:
    """(start, end exclusive, slot, spec) for every field, extra and slot, grouped by register type."""
    by_type: dict[str, list[tuple[int, int, int | None, FieldSpec]]] = {k: [] for k in REGISTER_TYPES}
    for spec in (*profile.cabinet_fields, *profile.cabinet_extras):
        by_type[spec.register_type].append((spec.address, spec.address + spec.words, None, spec))
    for slot in range(1, slot_count + 1):
        for spec in (*profile.slot_fields, *profile.slot_extras):
            start = profile.slot_address(spec.register_type, spec.address, slot)
            by_type[spec.register_type].append((start, start + spec.words, slot, spec))
    for extents in by_type.values():
        extents.sort(key=lambda e: (e[0], e[1]))
    return by_type


def _limit(register_type: str, max_registers: int) -> int:
    return MAX_BITS if REGISTER_TYPES[register_type] else max_registers


def plan_reads(profile: Profile, slot_count: int | None = None, *, max_gap: int | None = None,
               max_registers: int = MAX_REGISTERS) -> list[ReadRequest]:
    """Plan the reads that fetch every field of ``profile`` for ``slot_count`` slots.

    Each distinct field spec is compiled once per plan: its slices in every slot share the decoder
    (a decoder reads ``words`` at the slice's index, so it does not depend on the slot)."""
    if not 1 <= max_registers <= MAX_REGISTERS:
        raise ValueError(f"max_registers must be 1..{MAX_REGISTERS}, got {max_registers}")
    max_gap = profile.max_gap if max_gap is None else max_gap
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    slot_count = profile.slot_count if slot_count is None else slot_count
    plan: list[ReadRequest] = []
    decoders: dict[tuple[int, bool], Callable[[Sequence[int], int], object]] = {}
    for register_type, extents in _field_extents(profile, slot_count).items():
        if extents and extents[-1][1] > 0x10000:
            raise ValueError(f"{slot_count} slots of profile {profile.model} need {register_type} registers "
                             f"beyond 65535")
        limit = _limit(register_type, max_registers)
        group: list[tuple[int, int, int | None, FieldSpec]] = []
        end = 0
        for extent in extents:
            if group:
                if extent[0] - end <= max_gap and extent[1] - group[0][0] <= limit:
                    group.append(extent)
                    end = max(end, extent[1])
                    continue
                plan.append(_request(register_type, group, decoders))
            if extent[1] - extent[0] > limit:
                raise ValueError(f"{extent[3].field} is {extent[1] - extent[0]} registers, over the {limit} limit")
            group = [extent]
            end = extent[1]
        if group:
            plan.append(_request(register_type, group, decoders))
    return plan


def _request(register_type: str, group: list[tuple[int, int, int | None, FieldSpec]],
             decoders: dict[tuple[int, bool], Callable[[Sequence[int], int], object]]) -> ReadRequest:
    start = group[0][0]
    end = max(e[1] for e in group)
    fields: list[FieldSlice] = []
    for s, _e, slot, spec in group:
        for unmapped in (False, True) if spec.bits is not None else (False,):
            key = (id(spec), unmapped)  # the spec lives in the profile, which the plan's slices hold
            decode = decoders.get(key)
            if decode is None:
                decode = decoders[key] = compile_unmapped(spec) if unmapped else compile_decoder(spec)
            fields.append(FieldSlice(slot, spec, s - start, decode, unmapped))
    return ReadRequest(register_type, start, end - start, tuple(fields))


def restrict_plan(plan: Sequence[ReadRequest], only: Collection[str]) -> list[ReadRequest]:
    """The reads of ``plan`` that carry a model field named in ``only``, each cut to the span from
    its first to its last such field, with just those fields (the safety fast lane's plan).

    Never more reads than ``plan``, and never a register ``plan`` does not read: a device that
    refuses unmapped registers (``max_gap: 0``) gets only the registers its full poll reads.
    """
    out: list[ReadRequest] = []
    for request in plan:
        keep = [f for f in request.fields if not f.extra and f.spec.field in only]
        if not keep:
            continue
        low = min(f.index for f in keep)
        # bit reads (coils, discrete inputs) hold one bit per field
        high = max(f.index + (1 if REGISTER_TYPES[request.register_type] else f.spec.words) for f in keep)
        out.append(ReadRequest(request.register_type, request.address + low, high - low,
                               tuple(FieldSlice(f.slot, f.spec, f.index - low, f.decode, f.unmapped) for f in keep)))
    return out


_SHARED_MAX = 256  # distinct (profile, slots, gap, fields) plans kept; a fleet uses a handful
_shared: OrderedDict[tuple[int, int, int, frozenset[str] | None], tuple[Profile, tuple[ReadRequest, ...]]] = OrderedDict()


def shared_plan(profile: Profile, slot_count: int | None = None, *, max_gap: int | None = None,
                only: Collection[str] | None = None) -> tuple[ReadRequest, ...]:
    """:func:`plan_reads` (with ``only``: :func:`restrict_plan` of it), as one immutable plan shared by
    every caller with the same arguments.

    Keyed by the profile object (kept alive by the cache, so its id cannot be reused while cached),
    slot count, gap and ``only``; the least recently used of more than 256 plans is dropped (the
    cabinets using it keep theirs).
    """
    slot_count = profile.slot_count if slot_count is None else slot_count
    max_gap = profile.max_gap if max_gap is None else max_gap
    key = (id(profile), slot_count, max_gap, None if only is None else frozenset(only))
    hit = _shared.get(key)
    if hit is not None and hit[0] is profile:
        _shared.move_to_end(key)
        return hit[1]
    plan = tuple(plan_reads(profile, slot_count, max_gap=max_gap) if only is None else
                 restrict_plan(shared_plan(profile, slot_count, max_gap=max_gap), only))
    _shared[key] = (profile, plan)
    while len(_shared) > _SHARED_MAX:
        _shared.popitem(last=False)
    return plan


def minimum_reads(profile: Profile, slot_count: int | None = None, *, max_registers: int = MAX_REGISTERS) -> int:
    """The fewest reads that can fetch every field: unlimited gap fill, no field split.

    Greedy covering from the lowest address is optimal for fixed-width windows on a line.
    """
    slot_count = profile.slot_count if slot_count is None else slot_count
    total = 0
    for register_type, extents in _field_extents(profile, slot_count).items():
        limit = _limit(register_type, max_registers)
        window_start: int | None = None
        for start, end, _slot, _spec in extents:
            if window_start is None or end - window_start > limit:
                total += 1
                window_start = start
    return total
