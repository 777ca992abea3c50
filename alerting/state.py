"""Alert lifecycle: active alerts, acknowledgement, roll-up and crash-safe persistence.

One alert exists per (rule, site, cabinet, slot). The engine produces ``Transition`` records and
hands them to ``AlertStore.apply``; the store keeps the current level of each active alert, who
acknowledged it, and a bounded history. The store is written to a JSON file with write-temp +
fsync + rename after every batch of changes, so a crash leaves either the old or the new file,
never a half-written one (P-8.4), and the engine resumes the same alerts after a restart.

Acknowledgement policy: an ack means "a person has seen *this* level". It survives
de-escalation (the situation got better), but an escalation re-opens the alert (ack cleared),
because the person acknowledged a milder situation than the one now in front of them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "KINDS",
    "SEVERITY",
    "Ack",
    "Alert",
    "AlertKey",
    "AlertStore",
    "Target",
    "Transition",
]

log = logging.getLogger(__name__)

KINDS = ("raise", "escalate", "deescalate", "clear")
SEVERITY = {1: "notice", 2: "warning", 3: "critical"}


def alert_labels(rule: str, level: int, site: str, cabinet: str, slot: int | None = None,
                 battery: str | None = None, **extra: str) -> dict[str, str]:
    """The Alertmanager label set of an alert: the one place it is built.

    Routing (provisioning/alertmanager) matches on ``level``/``severity``; ``alertname`` and
    ``rule`` are the rule id; ``slot`` and ``battery`` only when known; ``extra`` adds labels a
    kind of alert carries (``protective_action``, ``failed_rule``).
    """
    labels = {"alertname": rule, "rule": rule, "level": str(level), "severity": SEVERITY.get(level, "notice"),
              "site": site, "cabinet": cabinet, **extra}
    if slot is not None:
        labels["slot"] = str(slot)
    if battery:
        labels["battery"] = battery
    return labels
_FORMAT_VERSION = 1


class AlertKey(NamedTuple):
    """Identity of an alert. ``slot`` is None for cabinet-scope rules."""

    rule: str
    site: str
    cabinet: str
    slot: int | None = None

    def __str__(self) -> str:
        where = f"{self.site}/{self.cabinet}" + ("" if self.slot is None else f"/{self.slot}")
        return f"{self.rule}@{where}"

    @classmethod
    def parse(cls, text: str) -> AlertKey:
        """Inverse of ``str()``: ``rule@site/cabinet[/slot]``."""
        try:
            rule, where = text.split("@", 1)
            parts = where.split("/")
            if len(parts) == 2:
                return cls(rule, parts[0], parts[1], None)
            site, cabinet, slot = parts
            return cls(rule, site, cabinet, int(slot))
        except ValueError:
            raise ValueError(f"{text!r} is not an alert key; expected rule@site/cabinet[/slot]") from None


@dataclass(frozen=True, slots=True)
class Target:
    """What an alert is about. ``battery`` is the pack in the slot when known."""

    site: str
    cabinet: str
    slot: int | None = None
    battery: str | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of an alert's level, as produced by ``Engine.evaluate``.

    ``labels`` and ``annotations`` are ready for Alertmanager: ``labels['level']`` is the level
    after the transition, or for a ``clear`` the level that was cleared.
    """

    rule: str
    target: Target
    from_level: int
    to_level: int
    kind: str  # raise | escalate | deescalate | clear
    value: float | None
    at: float  # seconds since the epoch, from the engine's clock
    diagnosis: str
    action: str
    protective_action: str | None  # only on raise/escalate, for the level reached
    labels: dict[str, str]
    annotations: dict[str, str]
    #: On a raise/escalate on a vehicle: the vehicle command its rule asks for (``motor_lock``,
    #: ``power_off``; alerting.rules.VEHICLE_COMMANDS), else None. The vehicle is ``target.cabinet``.
    vehicle_command: str | None = None

    @property
    def key(self) -> AlertKey:
        return AlertKey(self.rule, self.target.site, self.target.cabinet, self.target.slot)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["key"] = str(self.key)
        return d


@dataclass(slots=True)
class Ack:
    who: str
    comment: str
    at: float
    level: int  # the level that was acknowledged


@dataclass(slots=True)
class Alert:
    key: AlertKey
    level: int
    value: float | None
    raised_at: float
    updated_at: float
    battery: str | None
    protective_action: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    ack: Ack | None = None

    @property
    def acknowledged(self) -> bool:
        return self.ack is not None

    def to_dict(self) -> dict[str, Any]:
        # Written out by hand: dataclasses.asdict deep-copies and costs ~40 µs per alert, which
        # dominated a save of a store with many alerts.
        ack = self.ack
        return {
            "key": list(self.key), "level": self.level, "value": self.value, "raised_at": self.raised_at,
            "updated_at": self.updated_at, "battery": self.battery, "protective_action": self.protective_action,
            "labels": dict(self.labels), "annotations": dict(self.annotations),
            "ack": None if ack is None else {"who": ack.who, "comment": ack.comment, "at": ack.at, "level": ack.level},
        }

    @classmethod
    def from_dict(cls, d: Any) -> Alert:
        """Inverse of ``to_dict``; raises ValueError naming what is wrong with a stored alert."""
        if not isinstance(d, dict):
            raise ValueError(f"an alert must be an object, not {type(d).__name__}")
        key = d.get("key")
        if (not isinstance(key, list) or len(key) not in (3, 4) or not all(isinstance(k, str) for k in key[:3])
                or (len(key) == 4 and key[3] is not None and not _is_int(key[3]))):
            raise ValueError(f"alert key {key!r} is not [rule, site, cabinet, slot]")
        ack = d.get("ack")
        if ack is not None:
            if (not isinstance(ack, dict) or set(ack) != {"who", "comment", "at", "level"}
                    or not isinstance(ack["who"], str) or not isinstance(ack["comment"], str)
                    or not _is_number(ack["at"]) or not _is_int(ack["level"])):
                raise ValueError(f"alert {key!r}: ack {ack!r} is not {{who, comment, at, level}}")
            ack = Ack(ack["who"], ack["comment"], float(ack["at"]), ack["level"])
        level = d.get("level")
        if not _is_int(level) or level not in SEVERITY:
            raise ValueError(f"alert {key!r}: level {level!r} is not 1, 2 or 3")
        for name in ("raised_at", "updated_at"):
            if not _is_number(d.get(name)):
                raise ValueError(f"alert {key!r}: {name} {d.get(name)!r} is not a time")
        value = d.get("value")
        if value is not None and not _is_number(value):
            raise ValueError(f"alert {key!r}: value {value!r} is not a number")
        for name in ("battery", "protective_action"):
            if d.get(name) is not None and not isinstance(d[name], str):
                raise ValueError(f"alert {key!r}: {name} {d[name]!r} is not text")
        for name in ("labels", "annotations"):
            m = d.get(name) or {}
            if not isinstance(m, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
                raise ValueError(f"alert {key!r}: {name} is not a mapping of text to text")
        return cls(
            key=AlertKey(*key),
            level=level,
            value=value,
            raised_at=float(d["raised_at"]),
            updated_at=float(d["updated_at"]),
            battery=d.get("battery"),
            protective_action=d.get("protective_action"),
            labels=dict(d.get("labels") or {}),
            annotations=dict(d.get("annotations") or {}),
            ack=ack,
        )


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_number(v: Any) -> bool:
    """A finite int or float that converts to float (bools, NaN, ±inf and 10**400 do not)."""
    if type(v) is int:
        return -(2**1023) < v < 2**1023
    return type(v) is float and math.isfinite(v)


@dataclass
class _Index:
    """Active alert keys per slot target, so the engine can seed a target in O(1)."""

    by_target: dict[tuple, set[AlertKey]] = field(default_factory=dict)

    def add(self, key: AlertKey) -> None:
        self.by_target.setdefault(key[1:], set()).add(key)

    def discard(self, key: AlertKey) -> None:
        keys = self.by_target.get(key[1:])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.by_target[key[1:]]


class AlertStore:
    """Active alerts with persistence. ``path=None`` keeps everything in memory (tests, replay).

    ``save_interval_s`` coalesces writes under a burst: a batch of transitions is written at once
    if the last write is at least that long ago, otherwise it is written by a timer when the
    interval has passed (a background thread; normal interpreter exit waits for it), so a crash
    loses at most the last ``save_interval_s`` of changes. 0 (the default) writes every batch
    before ``apply`` returns. Acknowledgements are always written at once.
    """

    def __init__(
        self, path: str | Path | None = None, *, history_limit: int = 1000, clock=time.time,
        save_interval_s: float = 0.0,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self._clock = clock
        self._lock = threading.RLock()
        self._alerts: dict[AlertKey, Alert] = {}
        self._index = _Index()
        self._history: deque[dict[str, Any]] = deque(maxlen=history_limit)
        if isinstance(save_interval_s, bool) or not isinstance(save_interval_s, (int, float)) or not (
                0 <= save_interval_s < math.inf):
            raise ValueError(f"save_interval_s must be a number of seconds ≥ 0, got {save_interval_s!r}")
        self.save_interval_s = float(save_interval_s)
        self._dirty = False  # changes not yet on disk
        self._last_save = -math.inf  # time.monotonic() of the last write
        self._timer: threading.Timer | None = None
        self._save_failing = False
        self.saves = 0  # files written (for tests and the bench)
        if self.path is not None and self.path.exists():
            self._load()

    # --- queries ---------------------------------------------------------------------------
    def get(self, key: AlertKey | str) -> Alert | None:
        return self._alerts.get(_key(key))

    def active(self) -> list[Alert]:
        """Active alerts, worst first."""
        with self._lock:
            return sorted(self._alerts.values(), key=lambda a: (-a.level, str(a.key)))

    def alerts_for(self, site: str, cabinet: str, slot: int | None) -> list[Alert]:
        keys = self._index.by_target.get((site, cabinet, slot), ())
        return [self._alerts[k] for k in keys]

    def worst_level(
        self,
        site: str | None = None,
        cabinet: str | None = None,
        slot: int | None = None,
        battery: str | None = None,
    ) -> int:
        """Roll-up: the highest active level at or under the given place (0 = all clear).

        Battery → slot → cabinet → site: a cabinet's level includes its own cabinet-scope alerts
        and every slot's; a site's includes all its cabinets. Unset arguments match everything.
        """
        worst = 0
        with self._lock:
            for a in self._alerts.values():
                k = a.key
                if site is not None and k.site != site:
                    continue
                if cabinet is not None and k.cabinet != cabinet:
                    continue
                if slot is not None and k.slot != slot:
                    continue
                if battery is not None and a.battery != battery:
                    continue
                if a.level > worst:
                    worst = a.level
        return worst

    def rollup(self) -> dict[str, Any]:
        """``{site: {"level": n, "cabinets": {cab: {"level": n, "slots": {slot: n}}}}}``."""
        out: dict[str, Any] = {}
        with self._lock:
            for a in self._alerts.values():
                s = out.setdefault(a.key.site, {"level": 0, "cabinets": {}})
                c = s["cabinets"].setdefault(a.key.cabinet, {"level": 0, "slots": {}})
                s["level"] = max(s["level"], a.level)
                c["level"] = max(c["level"], a.level)
                if a.key.slot is not None:
                    c["slots"][a.key.slot] = max(c["slots"].get(a.key.slot, 0), a.level)
        return out

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Recent transitions and acknowledgements, oldest first (bounded)."""
        with self._lock:
            items = list(self._history)
        return items[-limit:] if limit else items

    # --- changes ---------------------------------------------------------------------------
    def apply(self, transitions: Iterable[Transition]) -> None:
        """Apply a batch of transitions, then persist once (or schedule it, see ``save_interval_s``).

        Never raises on a failed write (disk full, read-only): the alerts stay right in memory,
        the error is logged and the next batch or ``flush`` writes again. Alerting must go on."""
        changed = False
        with self._lock:
            for t in transitions:
                self._apply_one(t)
                changed = True
            if changed:
                self._dirty = True
                wait = self._last_save + self.save_interval_s - time.monotonic()
                if wait <= 0:
                    self._try_save_locked()
                elif self._timer is None:
                    self._timer = threading.Timer(wait, self._timed_flush)
                    self._timer.name = "alert-store-save"
                    self._timer.start()

    def flush(self) -> None:
        """Write pending changes now (call on shutdown when ``save_interval_s`` > 0)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._dirty:
                self._try_save_locked()

    def _timed_flush(self) -> None:
        with self._lock:
            self._timer = None
            if self._dirty:
                self._try_save_locked()

    def _try_save_locked(self) -> None:
        try:
            self._save_locked()
        except OSError as exc:
            self._last_save = time.monotonic()  # retry after the interval, not on every reading
            if not self._save_failing:
                log.error("alert state %s not written (%s); alerts are kept in memory and the write "
                          "is retried with the next change", self.path, exc)
            self._save_failing = True
            return
        if self._save_failing:
            log.info("alert state %s written again", self.path)
        self._save_failing = False

    def _apply_one(self, t: Transition) -> None:
        key = t.key
        self._history.append({"event": "transition", **_compact(t)})
        if t.kind == "clear" or t.to_level == 0:
            if self._alerts.pop(key, None) is not None:
                self._index.discard(key)
            return
        alert = self._alerts.get(key)
        if alert is None:
            alert = Alert(key, t.to_level, t.value, t.at, t.at, t.target.battery,
                          t.protective_action, t.labels, t.annotations)
            self._alerts[key] = alert
            self._index.add(key)
            return
        if t.to_level > alert.level:
            alert.ack = None  # escalation re-opens: the ack was for a milder situation
        alert.level = t.to_level
        alert.value = t.value
        alert.updated_at = t.at
        alert.labels = t.labels
        alert.annotations = t.annotations
        if t.target.battery is not None:
            alert.battery = t.target.battery
        if t.protective_action is not None:
            alert.protective_action = t.protective_action

    def acknowledge(
        self, key: AlertKey | str, who: str, comment: str = "", when: float | None = None
    ) -> Alert:
        """Mark an active alert as seen. Raises KeyError if it is not active."""
        if not isinstance(who, str) or not who.strip():
            raise ValueError("acknowledge needs who: the person acknowledging")
        k = _key(key)
        with self._lock:
            alert = self._alerts.get(k)
            if alert is None:
                raise KeyError(f"no active alert {k}; it may have cleared already")
            at = self._clock() if when is None else float(when)
            alert.ack = Ack(who.strip(), comment, at, alert.level)
            self._history.append({"event": "ack", "key": str(k), "who": alert.ack.who,
                                  "comment": comment, "at": at, "level": alert.level})
            self._save_locked()
            return alert

    # --- persistence -----------------------------------------------------------------------
    def save(self) -> None:
        with self._lock:
            self._save_locked()

    def _save_locked(self) -> None:
        if self.path is None:
            self._dirty = False
            return
        doc = {
            "version": _FORMAT_VERSION,
            "saved_at": self._clock(),
            "alerts": [a.to_dict() for a in self._alerts.values()],
            "history": list(self._history),
        }
        # One-shot dumps uses the C encoder; json.dump to a file streams through the pure-Python one.
        text = json.dumps(doc, separators=(",", ":"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)  # atomic on POSIX: readers see old or new, never half
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self._dirty = False
        self._last_save = time.monotonic()
        self.saves += 1

    def _load(self) -> None:
        assert self.path is not None
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError(f"expected a JSON object, found {type(doc).__name__}")
            if doc.get("version") != _FORMAT_VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            if not isinstance(doc.get("alerts"), list):
                raise ValueError("'alerts' is not a list")
            alerts = [Alert.from_dict(d) for d in doc["alerts"]]
            history = doc.get("history") or []
            if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
                raise ValueError("'history' is not a list of objects")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            # P-8.4: recover by ourselves, but keep the evidence. Starting empty means alerts
            # re-raise from live data within one `for` period; refusing to start would be worse.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            try:
                os.replace(self.path, aside)
            except OSError as move_err:
                log.error("alert state %s unreadable (%s) and not moved aside (%s); starting empty, "
                          "the next write replaces it", self.path, exc, move_err)
                return
            log.error("alert state %s unreadable (%s); moved to %s and starting empty",
                      self.path, exc, aside)
            return
        for a in alerts:
            self._alerts[a.key] = a
            self._index.add(a.key)
        self._history.extend(history)


def _key(key: AlertKey | str) -> AlertKey:
    if isinstance(key, AlertKey):
        return key
    if isinstance(key, tuple):
        return AlertKey(*key)
    return AlertKey.parse(key)


def _compact(t: Transition) -> dict[str, Any]:
    return {
        "key": str(t.key), "kind": t.kind, "from": t.from_level, "to": t.to_level,
        "value": t.value, "at": t.at, "battery": t.target.battery,
    }
