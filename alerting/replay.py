"""Replay a recorded or synthetic trace through the engine, at trace time.

Trace format (docs/warnings.md, "Trace format"): CSV with header ``timestamp,target,field,value``.

* ``timestamp``: ISO-8601 (``2024-05-01T08:00:00Z``; no zone = UTC) or Unix seconds.
* ``target``: ``site/cabinet`` for cabinet fields, ``site/cabinet/slot`` for slot fields.
* ``field``: a ``core.model`` field of that scope, or ``model`` (cabinet model) on a cabinet.
* ``value``: number, ``true``/``false``, text, enum names (``NMC``, ``CHARGING``), flag names
  joined by ``|`` (``SHORT_CIRCUIT|OVER_CURRENT``); empty = None.

Values are carried forward per target until changed (a trace lists changes, like a register map
polled for differences). Rows sharing a timestamp form one poll: each cabinet with a row at that
timestamp produces one ``CabinetReading`` with every slot it has seen. Lines starting with ``#`` are
comments; ``# key: value`` comments before the first row are the trace's metadata
(``read_metadata``: ``onset``, ``slot``, ``source`` ...).

Rows may arrive out of order within a reorder window (default 60 s): rows are buffered and released
in time order once the newest timestamp seen is more than the window past them. A row older than
the window relative to the newest row seen, and a value that is not finite or not physically
possible (``PHYSICAL_BOUNDS``), is a named, counted error (``file:line: ...``) and that row is
skipped; the rest of the trace is replayed (``TraceStats``). ``sort=True`` sorts the whole file
first. Structural errors (header, column count, unknown field or target, unparsable timestamp or
value) still reject the whole file.

    python -m alerting.replay bench/traces/gas_first.csv [--rules FILE] [--reorder-window S] [--sort]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import enum
import heapq
import math
import re
import sys
import typing
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alerting.engine import Engine
from alerting.rules import DEFAULT_CATALOGUE, RuleError, load_rules
from alerting.state import Transition
from core import model
from core.errors import CascadeError
from core.model import (
    CABINET_FIELDS,
    SLOT_FIELDS,
    BatteryState,
    BmsProtection,
    CabinetReading,
    ChargerProtection,
    Chemistry,
    EmergencyState,
    SlotReading,
)

__all__ = [
    "DEFAULT_REORDER_WINDOW_S",
    "HEADER",
    "PHYSICAL_BOUNDS",
    "SKIP_REASONS",
    "TraceClock",
    "TraceError",
    "TraceStats",
    "format_transition",
    "main",
    "physical_bounds",
    "print_skipped",
    "read_metadata",
    "read_trace",
    "replay",
    "replay_file",
    "write_trace",
]

HEADER = ["timestamp", "target", "field", "value"]
DEFAULT_REORDER_WINDOW_S = 60.0
"""Rows may arrive this far (seconds) behind the newest row seen and still be replayed in order."""

PHYSICAL_BOUNDS: dict[str, tuple[float, float, str]] = {
    # Field kind (the unit suffix of the field name, the core.model convention) or field name ->
    # (lowest, highest, what it is). A value outside is not a reading but a decoding error or a
    # sensor's garbage (0xFFFF, 0x8000, -300 °C, SOC 250 %): rejected by name, never taken for a
    # measurement and never for a missing value.
    "_c": (-60.0, 1500.0, "temperature in °C"),  # colder than any cabinet site / hotter than a battery fire
    "_ppm": (0.0, 1_000_000.0, "gas concentration in ppm"),  # 1,000,000 ppm is the pure gas
    # Up to 120 %: a BMS over-reading a little past 100 % is a calibration fault the soc_high
    # rule reports, not garbage; 250 % is garbage.
    "_pct": (0.0, 120.0, "percentage"),
    "_v": (0.0, 1500.0, "voltage in V"),
    "_a": (-2000.0, 2000.0, "current in A"),
    "_ah": (0.0, 10_000.0, "capacity in Ah"),
    "_kpa": (0.0, 10_000.0, "absolute pressure in kPa"),
    "_kohm": (0.0, math.inf, "resistance in kΩ"),
    "_w": (-10_000_000.0, 10_000_000.0, "power in W"),
    "_kwh": (0.0, 1e12, "energy in kWh"),
    "_s": (0.0, 1e11, "time in Unix seconds"),
    # Named fields refine their kind, or have no unit suffix.
    "cell_voltage_max_v": (0.0, 10.0, "cell voltage in V"),  # no lithium or sodium cell reaches 10 V
    "cell_voltage_min_v": (0.0, 10.0, "cell voltage in V"),
    "latitude_deg": (-90.0, 90.0, "latitude in °"),
    "longitude_deg": (-180.0, 180.0, "longitude in °"),
    "charge_count": (0.0, 10_000_000.0, "charge cycle count"),
    "cell_count": (1.0, 1000.0, "count of cells in series"),
    "valve_acoustic_events": (0.0, 1e12, "event count"),
    "charger_protection": (0.0, 2.0**32 - 1, "bitmask"),
    "bms_protection": (0.0, 2.0**32 - 1, "bitmask"),
    "emergency_state": (0.0, 2.0**32 - 1, "bitmask"),
    "device_fault_code": (0.0, 2.0**32 - 1, "code"),
    "distribution_state": (0.0, 2.0**32 - 1, "bitmask"),
}
"""Plausible physical bounds, one table: by field name first, else by the unit suffix."""

SKIP_REASONS = {
    "out_of_window": "row older than the reorder window",
    "non_finite": "value not finite",
    "out_of_range": "value physically impossible",
}
"""Why a row was skipped (``TraceStats.skipped`` keys) -> label for summaries."""

_MAX_KEPT_ERRORS = 1000


def physical_bounds(name: str) -> tuple[float, float, str] | None:
    """(lowest, highest, what) for a numeric field, or None for a field without bounds."""
    if name in PHYSICAL_BOUNDS:
        return PHYSICAL_BOUNDS[name]
    suffix = name[name.rfind("_"):] if "_" in name else ""
    return PHYSICAL_BOUNDS.get(suffix)


_ENUMS: dict[str, type[enum.Enum]] = {
    "chemistry": Chemistry,
    "battery_state": BatteryState,
    "charger_protection": ChargerProtection,
    "bms_protection": BmsProtection,
    "emergency_state": EmergencyState,
}


class TraceError(CascadeError):
    """A trace file is invalid; names file, line and what to fix."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        self.file, self.line, self.reason = file, line, reason
        super().__init__(reason, source=f"{file}:{line}", message=f"{file}:{line}: {reason}")


class _Rejected(ValueError):
    """A value that parsed but cannot be a reading: its row is skipped and counted."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason


@dataclass
class TraceStats:
    """What reading a trace did: rows read and used, rows skipped by reason with their errors."""

    file: str = ""
    rows: int = 0  # data rows (header and comments excluded)
    used: int = 0  # rows applied to the replay
    reordered: int = 0  # rows that arrived behind a later row but within the window
    polls: int = 0  # CabinetReadings produced
    first_ts: float | None = None
    last_ts: float | None = None
    skipped: Counter = field(default_factory=Counter)  # SKIP_REASONS key -> rows
    errors: list[TraceError] = field(default_factory=list)  # the first 1,000 skipped rows' errors
    metadata: dict[str, list[str]] = field(default_factory=dict)  # leading "# key: value" comments

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def skip(self, error: TraceError, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.errors) < _MAX_KEPT_ERRORS:
            self.errors.append(error)

    def summary(self) -> str:
        """One line: rows read/used, skipped by reason, reordered."""
        if self.skipped_total:
            why = ", ".join(f"{n} {SKIP_REASONS.get(r, r)}" for r, n in sorted(self.skipped.items()))
            skipped = f"{self.skipped_total} skipped ({why})"
        else:
            skipped = "0 skipped"
        return (f"{self.rows} rows read, {self.used} used, {skipped}; {self.reordered} reordered; "
                f"{self.polls} polls")

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "rows": self.rows, "used": self.used, "reordered": self.reordered,
                "polls": self.polls, "first_ts": self.first_ts, "last_ts": self.last_ts,
                "skipped": dict(self.skipped), "errors": [str(e) for e in self.errors]}


class TraceClock:
    """A clock the replay moves forward; pass ``Engine(..., clock=TraceClock())`` or let
    ``replay`` install one for the duration of the run."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _types(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls, vars(model))
    out = {}
    for f in dataclasses.fields(cls):
        args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)] or [hints[f.name]]
        out[f.name] = args[0]
    return out


_SLOT_TYPES = {k: v for k, v in _types(SlotReading).items() if k in SLOT_FIELDS}
_CABINET_TYPES = {k: v for k, v in _types(CabinetReading).items() if k in CABINET_FIELDS}
_CABINET_TYPES["model"] = str


def _parse_time(text: str) -> float:
    text = text.strip()
    try:
        t = float(text)
    except ValueError:
        stamp = dt.datetime.fromisoformat(text)  # raises ValueError on garbage
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        return stamp.timestamp()
    if not math.isfinite(t):
        raise ValueError("timestamp is not finite")
    return t


def _parse_value(name: str, kind: type, text: str) -> Any:
    """The typed value; ValueError for text that is not a value of the field's type, _Rejected for
    a number that parsed but is not finite or not physically possible."""
    value = _parse_text(name, kind, text)
    if value is None or kind not in (int, float) or isinstance(value, bool):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise _Rejected("non_finite", f"{text!r} is not a finite number")
    bounds = physical_bounds(name)
    if bounds is not None:
        low, high, what = bounds
        if value < low:
            raise _Rejected("out_of_range", f"{text} is below {low:g}, the lowest physically possible {what}")
        if value > high:
            raise _Rejected("out_of_range", f"{text} is above {high:g}, the highest plausible {what}")
    return value


def _parse_text(name: str, kind: type, text: str) -> Any:
    if text == "":
        return None
    if kind is str:
        return text
    if kind is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{text!r} is not a boolean; use true/false or 1/0")
    if kind is int:
        enum_type = _ENUMS.get(name)
        if enum_type is not None and re.fullmatch(r"[A-Za-z_|\s]+", text):
            total = 0
            for part in text.split("|"):
                part = part.strip().upper()
                if part not in enum_type.__members__:
                    raise ValueError(f"{part!r} is not a {enum_type.__name__} name; "
                                     f"known: {', '.join(enum_type.__members__)}")
                total |= int(enum_type[part])
            return total
        try:
            return int(text, 0)
        except ValueError:
            f = float(text)  # "3.0" is acceptable for an integer field
            if not math.isfinite(f):
                raise _Rejected("non_finite", f"{text!r} is not a finite number") from None
            if not f.is_integer():
                raise ValueError(f"{text!r} is not an integer") from None
            return int(f)
    return float(text)


def read_trace(path: str | Path, *, reorder_window_s: float = DEFAULT_REORDER_WINDOW_S, sort: bool = False,
               stats: TraceStats | None = None) -> list[tuple[float, CabinetReading]]:
    """Parse a whole trace (so a structurally bad file fails before anything is evaluated).

    Rows may be out of order by up to ``reorder_window_s`` seconds (``sort=True``: any amount, the
    whole file is sorted first). Rows outside the window and values that are not finite or not
    physically possible are skipped; pass ``stats`` (a ``TraceStats``) to get their errors and
    counts. Raises ``TraceError`` for a structural error (the file is unusable) and ``ValueError``
    for a negative window."""
    if not (reorder_window_s >= 0):  # also refuses NaN
        raise ValueError(f"reorder window must be >= 0 seconds, got {reorder_window_s!r}")
    path = Path(path)
    name = path.name
    stats = stats if stats is not None else TraceStats()
    stats.file = name
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceError(name, 0, f"cannot open trace ({exc.strerror})") from exc
    with handle:
        reader = csv.reader(handle)
        try:
            readings = list(_readings(reader, name, math.inf if sort else float(reorder_window_s), stats))
        except (csv.Error, UnicodeDecodeError) as exc:
            # The csv module and the decoder report the line they reached; say so, like every other error.
            raise TraceError(name, reader.line_num, f"not a readable CSV line ({exc})") from exc
    stats.metadata = read_metadata(path)
    return readings


_META = re.compile(r"#\s*([A-Za-z][\w-]*)\s*:\s?(.*)$")


def read_metadata(path: str | Path) -> dict[str, list[str]]:
    """The ``# key: value`` comment lines before the first data row, key -> values in file order
    (``onset``, ``slot``, ``source`` ... in the trace library). Other comments are ignored."""
    meta: dict[str, list[str]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            if not line.startswith("#"):
                if [c.strip() for c in line.split(",")] == HEADER:
                    continue  # the header may come before or after the metadata block
                break
            m = _META.match(line)
            if m:
                meta.setdefault(m.group(1).lower(), []).append(m.group(2).strip())
    return meta


def _readings(rows: Iterable[list[str]], name: str, window: float,
              stats: TraceStats) -> Iterator[tuple[float, CabinetReading]]:
    cabinets: dict[tuple[str, str], dict[str, Any]] = {}
    slots: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    touched: dict[tuple[str, str], None] = {}  # cabinets polled at the current timestamp, in order
    # Rows waiting for the reorder window, a heap by (ts, line); fname None = a skipped value's poll.
    pending: list[tuple[float, int, tuple[str, str], int | None, str | None, Any]] = []
    current: float | None = None
    newest = -math.inf
    header_seen = False
    line = 0

    def release(limit: float) -> Iterator[tuple[float, CabinetReading]]:
        # Apply buffered rows older than ``limit`` in time order; a new timestamp closes the poll.
        nonlocal current
        while pending and pending[0][0] < limit:
            ts, _, cab_key, slot_no, fname, value = heapq.heappop(pending)
            if current is not None and ts != current:
                yield from _emit(current, touched, cabinets, slots, stats)
            current = ts
            cab = cabinets.setdefault(cab_key, {})
            touched[cab_key] = None
            if fname is None:  # a skipped value: the poll happened, nothing changes
                continue
            if slot_no is None:
                cab[fname] = value
            else:
                slots.setdefault(cab_key, {}).setdefault(slot_no, {})[fname] = value
            stats.used += 1

    for line, row in enumerate(rows, start=1):
        if not row or (row[0].startswith("#")):
            continue
        if not header_seen:
            if [c.strip() for c in row] != HEADER:
                raise TraceError(name, line, f"first line must be the header {','.join(HEADER)}")
            header_seen = True
            continue
        stats.rows += 1
        if len(row) != 4:
            raise TraceError(name, line, f"expected 4 columns ({','.join(HEADER)}), got {len(row)}")
        ts_text, target, fname, value_text = (c.strip() for c in row)
        try:
            ts = _parse_time(ts_text)
        except ValueError:
            raise TraceError(name, line, f"bad timestamp {ts_text!r}; use ISO-8601 or Unix seconds") from None
        parts = target.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise TraceError(name, line, f"bad target {target!r}; use site/cabinet or site/cabinet/slot")
        cab_key = (parts[0], parts[1])
        if len(parts) == 2:
            types, scope = _CABINET_TYPES, "cabinet"
        else:
            types, scope = _SLOT_TYPES, "slot"
        if fname not in types:
            other = _SLOT_TYPES if scope == "cabinet" else _CABINET_TYPES
            hint = f" (it is a {'slot' if scope == 'cabinet' else 'cabinet'} field: fix the target)" \
                if fname in other else ""
            raise TraceError(name, line, f"{fname!r} is not a {scope} field of core.model{hint}")
        slot_no: int | None = None
        if len(parts) == 3:
            try:
                slot_no = int(parts[2])
            except ValueError:
                raise TraceError(name, line, f"slot {parts[2]!r} is not an integer") from None
        try:
            value = _parse_value(fname, types[fname], value_text)
            rejected = None
        except _Rejected as exc:
            value, rejected = None, exc
        except ValueError as exc:
            raise TraceError(name, line, f"bad value for {fname}: {exc}") from None
        if ts < newest - window:
            stats.skip(TraceError(
                name, line, f"timestamp {ts_text} is {newest - ts:g} s older than the newest row "
                            f"({_format_time(newest)}), outside the {window:g} s reorder window; row skipped "
                            f"(use --sort, or a larger --reorder-window)"), "out_of_window")
            continue
        newest = max(newest, ts)  # a bad value still has a good timestamp: the trace reached it
        if ts < newest:
            stats.reordered += 1
        if rejected is not None:
            # The value is dropped, the poll it belongs to is not: the cabinet was polled at ts.
            stats.skip(TraceError(name, line, f"{fname}: {rejected}; row skipped"), rejected.reason)
            heapq.heappush(pending, (ts, line, cab_key, None, None, None))
        else:
            heapq.heappush(pending, (ts, line, cab_key, slot_no, fname, value))
        yield from release(newest - window)
    if not header_seen:
        raise TraceError(name, max(line, 1), f"empty trace; the first line must be {','.join(HEADER)}")
    yield from release(math.inf)
    if current is not None:
        yield from _emit(current, touched, cabinets, slots, stats)


def _format_time(ts: float) -> str:
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{ts:g}"


def _emit(ts, touched, cabinets, slots, stats: TraceStats) -> Iterator[tuple[float, CabinetReading]]:
    if stats.first_ts is None:
        stats.first_ts = ts
    stats.last_ts = ts
    for cab_key in touched:
        stats.polls += 1
        fields = dict(cabinets[cab_key])
        cab_model = fields.pop("model", None) or "unknown"
        yield ts, CabinetReading(
            cabinet_id=cab_key[1],
            site=cab_key[0],
            model=cab_model,
            timestamp_ns=int(round(ts * 1e9)),
            slots=[SlotReading(slot=n, **vals) for n, vals in sorted(slots.get(cab_key, {}).items())],
            **fields,
        )
    touched.clear()


def replay(readings: Iterable[tuple[float, CabinetReading]], engine: Engine) -> list[Transition]:
    """Evaluate readings in order with the engine's clock following trace time."""
    saved = engine.clock
    clock = saved if isinstance(saved, TraceClock) else TraceClock()
    engine.clock = clock
    out: list[Transition] = []
    try:
        for ts, reading in readings:
            clock.now = ts
            out.extend(engine.evaluate(reading))
    finally:
        engine.clock = saved
    return out


def replay_file(path: str | Path, engine: Engine, *, reorder_window_s: float = DEFAULT_REORDER_WINDOW_S,
                sort: bool = False, stats: TraceStats | None = None) -> list[Transition]:
    """Parse a trace file (TraceError names the line; skipped rows go to ``stats``) and replay it
    through ``engine``."""
    return replay(read_trace(path, reorder_window_s=reorder_window_s, sort=sort, stats=stats), engine)


def format_transition(t: Transition) -> str:
    when = dt.datetime.fromtimestamp(t.at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    where = f"{t.target.site}/{t.target.cabinet}" + (f"/{t.target.slot}" if t.target.slot is not None else "")
    battery = f" [{t.target.battery}]" if t.target.battery else ""
    action = f"  -> {t.protective_action}" if t.protective_action else ""
    value = "-" if t.value is None else f"{t.value:.4g}"
    return (f"{when}  {t.kind:<10} L{t.from_level}->L{t.to_level}  {t.rule:<28} {where}{battery}"
            f"  value={value}{action}")


def write_trace(readings: Iterable[CabinetReading], path: str | Path,
                fields: Iterable[str] | None = None, *, comments: Iterable[str] = ()) -> int:
    """Write readings as a trace, listing only values that changed (optionally only ``fields``,
    plus ``model``), after ``comments`` as ``# `` lines (metadata such as ``onset: 1714525200``).
    Returns rows written."""
    keep = None if fields is None else set(fields) | {"model"}
    last: dict[tuple, Any] = {}
    rows = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        for comment in comments:
            f.write(f"# {comment}".rstrip() + "\n")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        for r in readings:
            ts = f"{r.timestamp_ns / 1e9:.3f}".rstrip("0").rstrip(".")
            cab = f"{r.site}/{r.cabinet_id}"
            changes = [(cab, "model", r.model)]
            changes += [(cab, n, getattr(r, n)) for n in sorted(CABINET_FIELDS)]
            for s in r.slots:
                changes += [(f"{cab}/{s.slot}", n, getattr(s, n)) for n in sorted(SLOT_FIELDS)]
            wrote_cab = False
            for target, fname, value in changes:
                if keep is not None and fname not in keep:
                    continue
                key = (target, fname)
                if key not in last and value is None:
                    continue
                if last.get(key, object()) == value:
                    continue
                last[key] = value
                w.writerow([ts, target, fname, _format_value(value)])
                rows += 1
                wrote_cab = True
            if not wrote_cab:
                # Nothing changed, but the cabinet was still polled: keep the poll in the trace.
                w.writerow([ts, cab, "model", r.model])
                rows += 1
    return rows


def _format_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    """``python -m alerting.replay FILE [--rules FILE] [--reorder-window S] [--sort]``: print every
    level transition; skipped rows are warnings on stderr, counted in the summary."""
    p = argparse.ArgumentParser(prog="replay", description="Replay a trace through the warning rules.")
    p.add_argument("trace", help="trace CSV (timestamp,target,field,value)")
    p.add_argument("--rules", default=str(DEFAULT_CATALOGUE), help="rule file (default: shipped catalogue)")
    p.add_argument("--reorder-window", type=float, default=DEFAULT_REORDER_WINDOW_S, metavar="SECONDS",
                   help="rows may arrive this far behind the newest row and still be replayed in order; "
                        f"older rows are skipped and counted (default {DEFAULT_REORDER_WINDOW_S:g})")
    p.add_argument("--sort", action="store_true", help="sort the whole file by time first (no row is too old)")
    args = p.parse_args(argv)
    if not args.reorder_window >= 0:
        p.error("--reorder-window must be >= 0 seconds")
    stats = TraceStats()
    try:
        engine = Engine(load_rules(args.rules), clock=TraceClock())
        transitions = replay_file(args.trace, engine, reorder_window_s=args.reorder_window, sort=args.sort,
                                  stats=stats)
    except (RuleError, TraceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for t in transitions:
        print(format_transition(t))
    print_skipped(stats)
    worst = max((t.to_level for t in transitions), default=0)
    print(f"# {len(transitions)} transitions, highest level reached {worst}; {stats.summary()}", file=sys.stderr)
    return 0


def print_skipped(stats: TraceStats, limit: int = 20, file: typing.TextIO | None = None) -> None:
    """The first ``limit`` skipped rows as ``warning: file:line: ...`` lines (stderr by default)."""
    out = sys.stderr if file is None else file
    for err in stats.errors[:limit]:
        print(f"warning: {err}", file=out)
    if stats.skipped_total > limit:
        print(f"warning: ... and {stats.skipped_total - limit} more skipped rows", file=out)


if __name__ == "__main__":
    sys.exit(main())
