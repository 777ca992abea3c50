"""``cascade probe``: read one device once with a profile and show every field raw and decoded.

For integrating a new vendor from its register map: each field's registers as sent, the decoded
value, and a verdict — ok, missing (the profile's "no reading" sentinel), kept at the sensor's
limit, or rejected (an error pattern, NaN, a denormal float, past the range) — and, when another
word or byte order would give a plausible value, which one (ABCD/CDAB/BADC/DCBA, docs/profiles.md).

    result = await probe(ModbusCabinet(config, profile))
    print(format_probe(result))

``--pipelining`` (:func:`probe_pipelining`) also finds how many requests the device takes in flight
(``max_in_flight``, docs/configuration.md): the plan's reads written 2, 4, 8 … at once on a fresh
connection each, until one batch is not answered in full. Only against a device that may drop a
connection: one that does not queue requests answers the first and drops the rest.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from pymodbus.exceptions import ModbusException

from collectors.runner import PollFailed

from .codec import DecodeError, OverRange, decode_value
from .device import ModbusCabinet
from .profile import FieldSpec
from .tcp import ModbusTcpLink

__all__ = ["FieldProbe", "PipeliningResult", "ProbeResult", "format_pipelining", "format_probe", "probe",
           "probe_pipelining"]

_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
MAX_IN_FLIGHT = 32  # the cabinet setting's upper bound (cascade/config.py)

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


@dataclass(slots=True)
class PipeliningResult:
    """How many of the plan's reads the device answered in full when written at once."""

    device: str
    tried: list[tuple[int, str]]  # (requests in flight, "ok" or why not)
    plan_reads: int

    @property
    def takes(self) -> int:
        """The most requests in flight answered in full (1: one at a time only)."""
        return max([depth for depth, outcome in self.tried if outcome == "ok"], default=1)

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "takes": self.takes, "plan_reads": self.plan_reads,
                "tried": [{"in_flight": depth, "outcome": outcome} for depth, outcome in self.tried]}


def _depths(most: int) -> list[int]:
    depths, depth = [], 2
    while depth < most:
        depths.append(depth)
        depth *= 2
    return [*depths, most] if most >= 2 else []


async def probe_pipelining(cabinet: ModbusCabinet, most: int = MAX_IN_FLIGHT) -> PipeliningResult:
    """Write the first 2, 4, 8 … (up to ``most`` and the plan's length) of the plan's reads at once, each
    batch on a fresh connection, and stop at the first batch not answered in full: no answer within the
    timeout, the connection dropped, an answer out of step, or an answer shorter than asked. A read the
    device refuses or answers short one at a time too (``probe`` shows those) is left out of the batches."""
    config = cabinet.config
    single = []
    link = ModbusTcpLink(config.host, config.port, timeout=config.timeout_s)
    try:
        await link.connect()
        for request in cabinet.plan:
            code = _CODES[request.register_type]
            answer = (await link.read_many([(code, request.address, request.count)], device_id=config.device_id))[0]
            got = len(answer.bits if code <= 2 else answer.registers)
            if not answer.isError() and got >= request.count:  # refused or short alone too: not pipelining's
                single.append((code, request.address, request.count))
    except (ModbusException, OSError) as err:
        raise PollFailed("connect", f"{config.host}:{config.port}: one request at a time failed: {err}") from err
    finally:
        link.close()
    tried: list[tuple[int, str]] = []
    for depth in _depths(min(most, len(single))):
        batch = single[:depth]
        link = ModbusTcpLink(config.host, config.port, timeout=config.timeout_s)
        try:
            await link.connect()
            answers = await link.read_many(batch, device_id=config.device_id)
            outcome = "ok"
            for (code, address, count), answer in zip(batch, answers):
                got = len(answer.bits if code <= 2 else answer.registers)
                if answer.isError():
                    outcome = f"read {address}+{count} refused in a batch (Modbus exception {answer.exception_code})"
                    break
                if got < count:
                    outcome = f"read {address}+{count} answered {got} values in a batch"
                    break
        except (ModbusException, OSError) as err:
            outcome = str(err) or type(err).__name__
        finally:
            link.close()
        tried.append((depth, outcome))
        if outcome != "ok":
            break
    return PipeliningResult(cabinet.name, tried, len(single))


def format_pipelining(result: PipeliningResult) -> str:
    """What the device took, and the setting to use."""
    lines = [f"pipelining: {depth} requests in flight: {outcome}" for depth, outcome in result.tried]
    if not result.tried:
        lines.append("pipelining: the plan has fewer than 2 reads the device answers; nothing to pipeline")
    takes = result.takes
    if takes > 1:
        lines.append(f"  the device answered {takes} requests in flight in full: max_in_flight: {takes} for this "
                     "cabinet (docs/configuration.md); run it for a while and watch its poll errors")
    else:
        lines.append("  the device answers one request at a time: keep max_in_flight: 1 (the default)")
    return "\n".join(lines)
