"""Read planning: merge a profile's registers into as few Modbus reads as the protocol allows.

Computed once per (profile, slot count) at start-up. A read never exceeds 125 registers
(2000 bits for coils and discrete inputs), never splits a multi-word field, and bridges a gap
between fields only up to ``max_gap`` unused registers: some devices answer "illegal address"
for registers they do not map, so gap fill is a per-cabinet setting.

    >>> from collectors.modbus.profile import find_profile
    >>> plan = plan_reads(find_profile("reference-cabinet"), slot_count=12)
    >>> len(plan) == minimum_reads(find_profile("reference-cabinet"), slot_count=12)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.model import FIELD_KINDS

from .codec import compile_decoder, compile_unmapped
from .profile import REGISTER_TYPES, FieldSpec, Profile, unmapped_field

__all__ = ["FieldSlice", "ReadRequest", "MAX_BITS", "MAX_REGISTERS", "minimum_reads", "plan_reads"]

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
    """Plan the reads that fetch every field of ``profile`` for ``slot_count`` slots."""
    if not 1 <= max_registers <= MAX_REGISTERS:
        raise ValueError(f"max_registers must be 1..{MAX_REGISTERS}, got {max_registers}")
    max_gap = profile.max_gap if max_gap is None else max_gap
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    slot_count = profile.slot_count if slot_count is None else slot_count
    plan: list[ReadRequest] = []
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
                plan.append(_request(register_type, group))
            if extent[1] - extent[0] > limit:
                raise ValueError(f"{extent[3].field} is {extent[1] - extent[0]} registers, over the {limit} limit")
            group = [extent]
            end = extent[1]
        if group:
            plan.append(_request(register_type, group))
    return plan


def _request(register_type: str, group: list[tuple[int, int, int | None, FieldSpec]]) -> ReadRequest:
    start = group[0][0]
    end = max(e[1] for e in group)
    fields: list[FieldSlice] = []
    for s, _e, slot, spec in group:
        fields.append(FieldSlice(slot, spec, s - start))
        if spec.bits is not None:
            fields.append(FieldSlice(slot, spec, s - start, unmapped=True))
    return ReadRequest(register_type, start, end - start, tuple(fields))


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
