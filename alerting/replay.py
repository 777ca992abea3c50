"""Replay a recorded or synthetic trace through the engine, at trace time.

Trace format (docs/warnings.md, "Trace format"): CSV with header ``timestamp,target,field,value``.

* ``timestamp``: ISO-8601 (``2024-05-01T08:00:00Z``; no zone = UTC) or Unix seconds.
* ``target``: ``site/cabinet`` for cabinet fields, ``site/cabinet/slot`` for slot fields.
* ``field``: a ``core.model`` field of that scope, or ``model`` (cabinet model) on a cabinet.
* ``value``: number, ``true``/``false``, text, enum names (``NMC``, ``CHARGING``), flag names
  joined by ``|`` (``SHORT_CIRCUIT|OVER_CURRENT``); empty = None.

Values are carried forward per target until changed (a trace lists changes, like a register map
polled for differences). Rows sharing a timestamp form one poll: each cabinet with a row at that
timestamp produces one ``CabinetReading`` with every slot it has seen. Timestamps must not go back.
Lines starting with ``#`` are comments.

    python -m alerting.replay bench/traces/gas_first.csv [--rules FILE]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import enum
import math
import re
import sys
import typing
from collections.abc import Iterable, Iterator
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
    "HEADER",
    "TraceClock",
    "TraceError",
    "format_transition",
    "main",
    "read_trace",
    "replay",
    "replay_file",
    "write_trace",
]

HEADER = ["timestamp", "target", "field", "value"]
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
            if not f.is_integer():
                raise ValueError(f"{text!r} is not an integer") from None
            return int(f)
    return float(text)


def read_trace(path: str | Path) -> list[tuple[float, CabinetReading]]:
    """Parse a whole trace (so a bad file fails before anything is evaluated)."""
    path = Path(path)
    name = path.name
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceError(name, 0, f"cannot open trace ({exc.strerror})") from exc
    with handle:
        reader = csv.reader(handle)
        try:
            return list(_readings(reader, name))
        except (csv.Error, UnicodeDecodeError) as exc:
            # The csv module and the decoder report the line they reached; say so, like every other error.
            raise TraceError(name, reader.line_num, f"not a readable CSV line ({exc})") from exc


def _readings(rows: Iterable[list[str]], name: str) -> Iterator[tuple[float, CabinetReading]]:
    cabinets: dict[tuple[str, str], dict[str, Any]] = {}
    slots: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    touched: dict[tuple[str, str], None] = {}  # cabinets polled at the current timestamp, in order
    current: float | None = None
    header_seen = False
    line = 0
    for line, row in enumerate(rows, start=1):
        if not row or (row[0].startswith("#")):
            continue
        if not header_seen:
            if [c.strip() for c in row] != HEADER:
                raise TraceError(name, line, f"first line must be the header {','.join(HEADER)}")
            header_seen = True
            continue
        if len(row) != 4:
            raise TraceError(name, line, f"expected 4 columns ({','.join(HEADER)}), got {len(row)}")
        ts_text, target, fname, value_text = (c.strip() for c in row)
        try:
            ts = _parse_time(ts_text)
        except ValueError:
            raise TraceError(name, line, f"bad timestamp {ts_text!r}; use ISO-8601 or Unix seconds") from None
        if current is not None and ts < current:
            raise TraceError(name, line, f"timestamp {ts_text} goes back in time; sort the trace by time")
        if current is not None and ts != current:
            yield from _emit(current, touched, cabinets, slots)
        current = ts
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
        try:
            value = _parse_value(fname, types[fname], value_text)
        except ValueError as exc:
            raise TraceError(name, line, f"bad value for {fname}: {exc}") from None
        cab = cabinets.setdefault(cab_key, {})
        if len(parts) == 3:
            try:
                slot_no = int(parts[2])
            except ValueError:
                raise TraceError(name, line, f"slot {parts[2]!r} is not an integer") from None
            slots.setdefault(cab_key, {}).setdefault(slot_no, {})[fname] = value
        else:
            cab[fname] = value
        touched[cab_key] = None
    if not header_seen:
        raise TraceError(name, max(line, 1), f"empty trace; the first line must be {','.join(HEADER)}")
    if current is not None:
        yield from _emit(current, touched, cabinets, slots)


def _emit(ts, touched, cabinets, slots) -> Iterator[tuple[float, CabinetReading]]:
    for cab_key in touched:
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


def replay_file(path: str | Path, engine: Engine) -> list[Transition]:
    """Parse a trace file (TraceError names the line) and replay it through ``engine``."""
    return replay(read_trace(path), engine)


def format_transition(t: Transition) -> str:
    when = dt.datetime.fromtimestamp(t.at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    where = f"{t.target.site}/{t.target.cabinet}" + (f"/{t.target.slot}" if t.target.slot is not None else "")
    battery = f" [{t.target.battery}]" if t.target.battery else ""
    action = f"  -> {t.protective_action}" if t.protective_action else ""
    value = "-" if t.value is None else f"{t.value:.4g}"
    return (f"{when}  {t.kind:<10} L{t.from_level}->L{t.to_level}  {t.rule:<28} {where}{battery}"
            f"  value={value}{action}")


def write_trace(readings: Iterable[CabinetReading], path: str | Path,
                fields: Iterable[str] | None = None) -> int:
    """Write readings as a trace, listing only values that changed (optionally only ``fields``,
    plus ``model``). Returns rows written."""
    keep = None if fields is None else set(fields) | {"model"}
    last: dict[tuple, Any] = {}
    rows = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
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
    """``python -m alerting.replay FILE [--rules FILE]``: print every level transition."""
    p = argparse.ArgumentParser(prog="replay", description="Replay a trace through the warning rules.")
    p.add_argument("trace", help="trace CSV (timestamp,target,field,value)")
    p.add_argument("--rules", default=str(DEFAULT_CATALOGUE), help="rule file (default: shipped catalogue)")
    args = p.parse_args(argv)
    try:
        engine = Engine(load_rules(args.rules), clock=TraceClock())
        transitions = replay_file(args.trace, engine)
    except (RuleError, TraceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for t in transitions:
        print(format_transition(t))
    worst = max((t.to_level for t in transitions), default=0)
    print(f"# {len(transitions)} transitions, highest level reached {worst}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
