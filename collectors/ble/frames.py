"""What the BMS protocols share: the pack sample, frame errors, fragment reassembly, plausibility.

A BMS answers a request in one or more GATT notifications of at most MTU - 3 bytes (20 on most
adapters); a frame is whole when its own length field says so. :class:`Reassembler` collects the
fragments of one protocol and hands out complete frames; bytes that cannot start a frame are skipped
to the next start byte and reported once (``garbage``). Each protocol module (``jbd``, ``daly``)
checks a complete frame (start, end, length, checksum, status) and decodes it into a
:class:`PackSample`. Nothing here raises anything but :class:`FrameError`: a frame from the air is
outside input, and a bad one costs only itself.

    >>> from collectors.ble import jbd
    >>> r = Reassembler(jbd.PROTOCOL)
    >>> frame = bytes.fromhex("dd0500023031ff9d77")
    >>> r.feed(frame[:4]), r.feed(frame[4:])
    ([], [b'\\xdd\\x05\\x00\\x0201\\xff\\x9dw'])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from core.errors import CascadeError

__all__ = ["MAX_BUFFER", "BmsProtocol", "FrameError", "PackSample", "Reassembler", "Step", "check_plausible",
           "map_bits"]

MAX_BUFFER = 1024
"""Bytes of unfinished frames kept per pack; a JBD frame is at most 4 + 255 + 3 bytes."""


class FrameError(CascadeError):
    """A frame that cannot be used. ``reason`` is a short, bounded label (the counter's and the
    log's key): ``checksum``, ``length``, ``start``, ``end``, ``status``, ``command``, ``layout``,
    ``garbage``, ``overflow``."""

    def __init__(self, reason: str, problem: str) -> None:
        super().__init__(problem)
        self.reason = reason


@dataclass(slots=True)
class PackSample:
    """One poll of one pack, in the pack's own terms and SI units. ``None``: not reported.

    ``protection`` is in Cascade's layout (``core.model.BmsProtection``), mapped per protocol;
    ``protection_raw`` the vendor's word as received and ``protection_unmapped`` its bits that have no
    Cascade meaning (at the vendor's positions). ``current_a``: + into the pack (charging).
    """

    voltage_v: float | None = None
    current_a: float | None = None
    soc_pct: float | None = None
    remaining_ah: float | None = None
    nominal_ah: float | None = None
    cycles: int | None = None
    protection: int | None = None
    protection_raw: int | None = None
    protection_unmapped: int | None = None
    mosfet_charge: bool | None = None
    mosfet_discharge: bool | None = None
    cell_count: int | None = None
    temperature_count: int | None = None
    temperatures_c: tuple[float, ...] = ()
    cell_voltages_v: tuple[float, ...] = ()
    cell_max_v: float | None = None
    cell_min_v: float | None = None
    temperature_max_c: float | None = None
    temperature_min_c: float | None = None
    hardware: str | None = None
    over_range: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Step:
    """One request of a poll: the bytes to write, the command byte of the answer, and how many answer
    frames to expect (a function of what this poll decoded so far: Daly sends one frame per 3 cells).
    ``once``: read once per pack (identity), not every poll; ``required``: a poll without it
    fails."""

    command: int
    request: bytes
    frames: Callable[[PackSample], int] = lambda _sample: 1
    once: bool = False
    required: bool = True


class BmsProtocol(Protocol):
    """What the gateway needs of a BMS protocol (``jbd.PROTOCOL``, ``daly.PROTOCOL``)."""

    name: Literal["jbd", "daly"]
    service_uuid: str
    notify_uuid: str
    write_uuid: str
    start_byte: int
    name_prefixes: tuple[str, ...]
    steps: Sequence[Step]

    def frame_length(self, head: bytes) -> int | None:
        """Total length of the frame ``head`` starts (``head[0]`` is the start byte), ``None`` until
        enough of it has arrived to tell; :class:`FrameError` if it cannot be a frame."""
        ...

    def command_of(self, frame: bytes) -> int:
        """The command byte of a complete frame (to match it to its request)."""
        ...

    def decode(self, command: int, frame: bytes, sample: PackSample) -> None:
        """Check ``frame`` (checksum, end, status) and add what it carries to ``sample``; only
        :class:`FrameError` on bad input."""
        ...


class Reassembler:
    """Fragments in, complete frames out (unchecked beyond their length; the protocol checks them).

    Bounded: at most :data:`MAX_BUFFER` bytes wait. Bytes before a start byte are dropped and
    counted in ``garbage_bytes``; ``errors`` lists the reasons of frames given up on since the last
    :meth:`take_errors`.
    """

    __slots__ = ("_buf", "_protocol", "errors", "garbage_bytes")

    def __init__(self, protocol: BmsProtocol) -> None:
        self._protocol = protocol
        self._buf = bytearray()
        self.garbage_bytes = 0
        self.errors: list[FrameError] = []

    def reset(self) -> None:
        """Forget a half frame (a new request, or the connection dropped mid-answer)."""
        self._buf.clear()

    def take_errors(self) -> list[FrameError]:
        errors, self.errors = self.errors, []
        return errors

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Add one notification's bytes; return the frames it completed, oldest first."""
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        start = self._protocol.start_byte
        while buf:
            if buf[0] != start:
                at = buf.find(bytes((start,)))
                skipped = len(buf) if at < 0 else at
                self.garbage_bytes += skipped
                self.errors.append(FrameError("garbage", f"{skipped} bytes before a frame start"))
                del buf[:skipped]
                continue
            try:
                length = self._protocol.frame_length(bytes(buf[:8]))
            except FrameError as err:
                self.errors.append(err)
                del buf[:1]  # resynchronise on the next start byte
                continue
            if length is None or len(buf) < length:
                if len(buf) > MAX_BUFFER:
                    self.errors.append(FrameError("overflow", f"{len(buf)} bytes without a whole frame"))
                    buf.clear()
                break
            frames.append(bytes(buf[:length]))
            del buf[:length]
        return frames


# Ranges of what a light-vehicle or cabinet pack can physically report. Outside: the value is
# dropped with a problem, except temperatures and pack voltage, which are a sensor at its limit and
# kept as the limit (as for cabinets and vehicles: a burning pack is the worst case, never missing data).
_RANGES: dict[str, tuple[float, float, bool]] = {
    "voltage_v": (0.0, 100.0, True), "current_a": (-500.0, 500.0, False), "soc_pct": (0.0, 100.0, False),
    "remaining_ah": (0.0, 1000.0, False), "nominal_ah": (0.0, 1000.0, False),
    "cycles": (0, 100_000, False), "cell_count": (1, 64, False),
}
_CELL_V = (0.0, 5.0)
_TEMP_C = (-40.0, 200.0)


def map_bits(word: int, width: int, table: Mapping[int, int]) -> tuple[int, int]:
    """A vendor's protection word (``width`` bits) in Cascade's layout through ``table`` (vendor bit →
    ``BmsProtection`` flag), and the vendor bits without a Cascade meaning, at their positions."""
    mapped = unmapped = 0
    for bit in range(width):
        if word >> bit & 1:
            flag = table.get(bit)
            if flag is None:
                unmapped |= 1 << bit
            else:
                mapped |= flag
    return mapped, unmapped


def check_plausible(sample: PackSample) -> PackSample:
    """Drop what a pack cannot have measured (NaN, out of range), keep temperatures and pack voltage
    past their range at the limit (named in ``over_range``), derive cell max/min, and note each
    problem in ``sample.problems``. Returns ``sample``."""
    over: list[str] = list(sample.over_range)
    for name, (low, high, at_limit) in _RANGES.items():
        value = getattr(sample, name)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            sample.problems.append(f"{name} is {value}")
            setattr(sample, name, None)
        elif not low <= value <= high:
            if at_limit:
                setattr(sample, name, type(value)(high if value > high else low))
                over.append(name)
            else:
                sample.problems.append(f"{name} {value!r} is outside {low:g}..{high:g}")
                setattr(sample, name, None)
    cells = sample.cell_voltages_v
    if cells and any(math.isnan(v) for v in cells):
        sample.problems.append(f"cell voltages incomplete: {sum(math.isnan(v) for v in cells)} of {len(cells)} missing")
        sample.cell_voltages_v = cells = ()
    elif cells:
        if not all(_CELL_V[0] < v <= _CELL_V[1] for v in cells):
            sample.problems.append(f"a cell voltage is outside {_CELL_V[0]:g}..{_CELL_V[1]:g} V: {list(cells)}")
            sample.cell_voltages_v = cells = ()
        elif sample.cell_count is not None and len(cells) != sample.cell_count:
            sample.problems.append(f"{len(cells)} cell voltages for {sample.cell_count} cells")
    if cells:
        sample.cell_max_v, sample.cell_min_v = max(cells), min(cells)
    if any(math.isnan(t) for t in sample.temperatures_c):
        sample.problems.append("temperatures incomplete")
        sample.temperatures_c = ()
    temps = []
    for t in sample.temperatures_c:
        if not _TEMP_C[0] <= t <= _TEMP_C[1]:
            t = min(max(t, _TEMP_C[0]), _TEMP_C[1])
            over.append("temperatures_c")
        temps.append(t)
    sample.temperatures_c = tuple(temps)
    if temps:
        sample.temperature_max_c, sample.temperature_min_c = max(temps), min(temps)
    else:
        for name in ("temperature_max_c", "temperature_min_c"):
            t = getattr(sample, name)
            if t is not None and not _TEMP_C[0] <= t <= _TEMP_C[1]:
                setattr(sample, name, min(max(t, _TEMP_C[0]), _TEMP_C[1]))
                over.append(name)
    sample.over_range = tuple(dict.fromkeys(over))
    return sample
