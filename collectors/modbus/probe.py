"""``cascade probe``: read one device once with a profile and show every field raw and decoded.

For integrating a new vendor from its register map: each field's registers as sent, the decoded
value, and a verdict — ok, missing (the profile's "no reading" sentinel), kept at the sensor's
limit, or rejected (an error pattern, NaN, a denormal float, past the range) — and, when another
word or byte order would give a plausible value, which one (ABCD/CDAB/BADC/DCBA, docs/profiles.md).

    result = await probe(ModbusCabinet(config, profile))
    print(format_probe(result))
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from collectors.runner import PollFailed

from .codec import DecodeError, OverRange, decode_value
from .device import ModbusCabinet
from .profile import FieldSpec

__all__ = ["FieldProbe", "ProbeResult", "format_probe", "probe"]

_ORDERS_BY_WORDS = {1: ("ABCD", "BADC"), 2: ("ABCD", "CDAB", "BADC", "DCBA"), 4: ("ABCD", "CDAB", "BADC", "DCBA")}


@dataclass(slots=True)
class FieldProbe:
    """One field of one poll: where, the raw registers, the decoded value and the verdict."""

    where: str  # "cabinet" or "slot N"
    field: str
    register: str
    address: int
    raw: list[int]
    value: Any
    unit: str
    verdict: str  # ok | missing | at limit | rejected | not read
    note: str = ""
    alternatives: list[tuple[str, Any]] = field(default_factory=list)  # (word order, plausible value)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class ProbeResult:
    device: str
    profile: str
    fields: list[FieldProbe]
    failed_reads: list[str]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.fields:
            out[f.verdict] = out.get(f.verdict, 0) + 1
        return out


def _plausible(spec: FieldSpec, words: list[int]) -> Any:
    """The value ``words`` decode to under ``spec``, if it is a measurement inside the valid range."""
    try:
        value = decode_value(spec, words)
    except DecodeError:
        return None
    if value is None or isinstance(value, (bool, str)):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or (value != 0 and abs(value) < 1e-30)):
        return None
    if spec.valid is None and isinstance(value, (int, float)) and abs(value) > 1e12:
        return None  # no range declared: a wild magnitude is still no measurement
    return value


def _alternatives(spec: FieldSpec, words: list[int]) -> list[tuple[str, Any]]:
    if spec.data_type in ("string", "bool", "bit"):
        return []
    out = []
    for order in _ORDERS_BY_WORDS.get(spec.words, ()):
        try:
            other = dataclasses.replace(spec, word_order=order)
        except ValueError:
            continue
        if other.swap_words == spec.swap_words and other.swap_bytes == spec.swap_bytes:
            continue
        value = _plausible(other, words)
        if value is not None:
            out.append((order, value))
    return out


def _judge(decode: Any, words: list[int]) -> tuple[Any, str, str]:
    try:
        value = decode(words, 0)
    except OverRange as err:
        return err.limit, "at limit", str(err)
    except DecodeError as err:
        return None, "rejected", str(err)
    if value is None:
        return None, "missing", "the profile's 'missing' sentinel: no sensor fitted or no reading"
    return value, "ok", ""


async def probe(cabinet: ModbusCabinet) -> ProbeResult:
    """Read every planned register of ``cabinet`` once and judge every field (raises PollFailed when
    the device cannot be reached: its message names the unit id, function and what to check)."""
    try:
        responses, failed = await cabinet.read_plan()
    except BaseException:
        await cabinet.close()
        raise
    if failed and len(failed) == len(cabinet.plan):
        await cabinet.close()
        raise PollFailed("exception", "every read was refused; the first: " + failed[0])
    fields: list[FieldProbe] = []
    try:
        for request, words in zip(cabinet.plan, responses):
            for item in request.fields:
                spec = item.spec
                where = "cabinet" if item.slot is None else f"slot {item.slot}"
                address = request.address + item.index
                if words is None:
                    fields.append(FieldProbe(where, item.label, spec.register_type, address, [], None, spec.unit,
                                             "not read", "the device refused this read (see below)"))
                    continue
                raw = [int(w) for w in words[item.index: item.index + spec.words]]
                value, verdict, note = _judge(item.decode, raw)
                probe_ = FieldProbe(where, item.label, spec.register_type, address, raw, value, spec.unit, verdict,
                                    note)
                if verdict in ("rejected", "at limit"):
                    probe_.alternatives = _alternatives(spec, raw)
                fields.append(probe_)
    finally:
        await cabinet.close()
    return ProbeResult(cabinet.name, cabinet.profile.model, fields, failed)


def format_probe(result: ProbeResult) -> str:
    """A table for people: one line per field, then what to check."""
    lines = [f"probe {result.device} with profile {result.profile}: "
             + ", ".join(f"{n} {k}" for k, n in sorted(result.counts().items()))]
    for f in result.fields:
        raw = " ".join(f"{w:04X}" if not isinstance(w, bool) else str(int(w)) for w in f.raw) or "-"
        value = "-" if f.value is None else (f"{f.value:g}" if isinstance(f.value, float) else str(f.value))
        line = (f"  {f.where:<9} {f.field:<30} {f.register:<8} {f.address:>6}  [{raw}]  = {value} {f.unit}".rstrip()
                + f"  {f.verdict.upper() if f.verdict != 'ok' else 'ok'}")
        if f.note and f.verdict != "ok":
            line += f": {f.note}"
        if f.alternatives:
            line += "; plausible with word_order " + ", ".join(f"{o} = {v:g}" if isinstance(v, float) else f"{o} = {v}"
                                                                for o, v in f.alternatives)
        lines.append(line)
    for detail in result.failed_reads:
        lines.append(f"  read refused: {detail}")
    return "\n".join(lines)
