"""Turn the responses of one poll's planned reads into a typed :class:`CabinetReading`.

A field whose registers are garbage becomes ``None`` and a :class:`FieldError` naming the
cabinet, slot, register and reason; every other field of the poll is kept. A plausible value past
the field's valid range is kept as the limit and its name listed in the reading's (or slot's)
``over_range``: a sensor at its limit is evidence of the worst case, not missing data.

A profile's ``extra:`` registers land in ``reading.extra`` / ``slot.extra`` (name → value; a value
that is missing or rejected is left out), named ``extra_<name>`` in errors and ``over_range``. A
field with a ``bits:`` map holds Cascade's flags only; the vendor bits the map does not name are
kept in ``<field>_unmapped``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.model import CabinetReading, SlotReading

from .codec import DecodeError, OverRange
from .planner import ReadRequest

__all__ = ["FieldError", "decode_poll"]


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
        for item in request.fields:
            target = cabinet if item.slot is None else slots[item.slot - 1]
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
                continue
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
