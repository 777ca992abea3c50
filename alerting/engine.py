"""Evaluate warning rules against every reading as it arrives.

``Engine.evaluate(reading)`` is the hot path: it runs once per cabinet poll for every cabinet,
so everything that can be decided earlier is. Rules are compiled at construction into
per-scope lists of *extractors* (one per distinct input, shared between rules, so a dT/dt
window used by two rules is buffered once) and per-(cabinet model, chemistry) threshold tables.
A rule with no active alert costs one comparison per reading.

Level logic for one (rule, target), with ``x`` the input value:

* level *n* is *met* when ``x`` passes threshold *n*; it is *reached* once met continuously for
  that level's ``for`` duration (a single glitched sample must not cut a slot off);
* an active level is *held* while ``x`` has not gone back past threshold − hysteresis;
* new level = max(reached, min(current, held)); a drop waits ``clear_for`` if the rule sets one;
* a missing value (None, NaN, ±inf, wrong type) changes nothing: stale data is not healthy data.

A rule that raises (a bug) must neither blind the other rules nor go unnoticed: its level is kept,
every failure counts in ``cascade_rule_errors_total{rule}``, the log says when it starts failing and
when it recovers, and the target gets a level-1 ``rule_evaluation_failed`` notice until the rule
evaluates there again. None of this costs anything while no rule fails.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from alerting.i18n import DEFAULT_LANGUAGE, N_, AlertTexts, for_level
from alerting.rules import Input, Rule, RuleError, RuleSet, finite_number, short_repr
from alerting.state import Alert, AlertStore, Target, Transition, alert_labels
from alerting.vehicle_commands import COMMAND_UNACKNOWLEDGED
from core.model import UNCOMMANDED_MODELS, VEHICLE_MODEL, BatteryState, CabinetReading, SlotReading

log = logging.getLogger(__name__)

__all__ = ["RULE_FAILED", "Engine", "Target", "Transition", "render_annotations"]

#: Alert (rule id) the engine raises itself, at level 1, for a target where a rule raised an exception.
#: Reserved: a catalogue rule may not use it.
RULE_FAILED = "rule_evaluation_failed"
#: ``rule`` label of ``cascade_rule_errors_total`` for an input (shared by rules) that raised.
INPUT_FAILED = "(input)"

_INF = math.inf
_RATE_MAXLEN = 256  # bounds memory if a cabinet polls much faster than the window needs
_RATE_POINTS = 16  # a rate window keeps a sample per window/16 at most (plus the newest)


JUMP_MAX_GAP_S = 180.0
"""A ``jump`` compares consecutive readings at most this far apart by their own timestamps (a 10-point
SOC jump needs ~6 min at 1C: 3 min of missed polls never adds up to one)."""


class _TargetState:
    """Per (site, cabinet, slot): input buffers and per-rule level state."""

    __slots__ = ("battery", "buffers", "prev", "holds", "rules", "failing", "notice", "context", "vehicle",
                 "sample_t", "commandable", "facts")

    def __init__(self) -> None:
        self.battery: str | None = None
        self.vehicle = False  # a vehicle's pack (core.model.VEHICLE_MODEL): no slot, no cabinet action
        self.commandable = True  # False for devices no cabinet command reaches (core.model.UNCOMMANDED_MODELS)
        self.sample_t = 0.0  # the reading's own time (seconds): what change between readings is measured on
        self.buffers: dict[tuple, array] = {}  # rate_of windows: (time, value) pairs, flat
        self.prev: dict[tuple, float] = {}  # jump: previous value
        self.holds: dict[tuple, tuple[float, float]] = {}  # fusion hold: (strength, at)
        self.rules: dict[str, _RuleState] = {}
        # Rules whose evaluation raised here and has not succeeded since. None (not an empty set) so
        # the hot path tests one attribute per target and does nothing more while no rule fails.
        self.failing: set[str] | None = None
        self.notice: dict[str, str] | None = None  # labels of the active RULE_FAILED notice
        # Baselines from the cabinet poll being evaluated (rules with ``minus:``); None when unused.
        self.context: dict[str, Any] | None = None
        # A vehicle's report as its alert texts show it (SOC and the user's reminder level); None elsewhere.
        self.facts: dict[str, str] | None = None

    def forget_history(self) -> None:
        """A different battery is in the slot: its rates and jumps start afresh."""
        self.buffers.clear()
        self.prev.clear()
        self.holds.clear()


class _RuleState:
    __slots__ = ("level", "since", "down_since")

    def __init__(self, level: int = 0) -> None:
        self.level = level
        self.since: list[float | None] = [None, None, None]  # by level-1: met continuously since
        self.down_since: float | None = None


class _Table:
    """Thresholds of one rule for one (model, chemistry), normalised to 'x above t' form."""

    __slots__ = ("sign", "levels", "hyst", "clear_for", "t0", "strict0", "raw")

    def __init__(self, rule: Rule, cabinet_model: str, chemistry: int | None) -> None:
        levels, hyst = rule.resolve(cabinet_model, chemistry)
        # '<' rules are negated so one comparison direction serves every rule.
        self.sign = 1.0 if levels[0].compare[0] == ">" else -1.0
        self.levels = tuple(
            (lv.level, lv.threshold * self.sign, len(lv.compare) == 1, lv.for_s) for lv in levels
        )
        self.hyst = hyst
        self.clear_for = rule.clear_for_s
        self.t0 = self.levels[0][1]
        self.strict0 = self.levels[0][2]
        self.raw = {lv.level: lv for lv in levels}


class _Compiled:
    """One rule bound to extractor indices of its scope."""

    __slots__ = ("rule", "id", "idx", "terms", "guard")

    def __init__(self, rule: Rule, index: dict[tuple, int]) -> None:
        self.rule = rule
        self.id = rule.id
        self.idx = index[rule.input.key] if rule.input is not None else -1
        self.terms = tuple(
            (index[t.input.key], t.start, t.full - t.start, t.weight, t.hold_s, t.input.describe())
            for t in rule.fusion
        ) or None
        self.guard = None
        if rule.when is not None:
            inp, compare, value = rule.when
            self.guard = (index[inp.key], _COMPARE[compare], value)


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _number(v: Any) -> float | None:
    """A finite float, or None for anything that is not usable data."""
    if v is None:
        return None
    if type(v) is not float:
        try:
            v = float(v)
        except (TypeError, ValueError, OverflowError):
            return None
    if v - v != 0.0:  # NaN or ±inf
        return None
    return v


def _extractor(inp: Input) -> Callable[[Any, _TargetState, float], float | None]:
    """Compile one input into ``fn(obj, target_state, now) -> value | None``."""
    key = inp.key
    name = inp.fields[0]
    if inp.kind == "field":
        if inp.minus is not None:
            base = inp.minus if inp.minus != "cabinet_min" else f"cabinet_min:{name}"
            absolute_fallback = inp.minus == "cabinet_min"

            def excess(obj, ts, now):
                a = _number(getattr(obj, name))
                if a is None:
                    return None
                b = ts.context.get(base) if ts.context is not None else None
                if b is None:
                    return a if absolute_fallback else None
                if type(b) is dict:  # cabinet_min: the lowest *other* slot (slot -> its baseline)
                    b = b.get(getattr(obj, "slot", None))
                    if b is None:
                        return a
                return _number(a - b)

            return excess
        if inp.per is None:
            return lambda obj, ts, now: _number(getattr(obj, name))
        per = inp.per

        def ratio(obj, ts, now):
            a, b = _number(getattr(obj, name)), _number(getattr(obj, per))
            if a is None or not b:
                return None
            return _number(a / b)

        return ratio
    if inp.kind == "bool":

        def as_bool(obj, ts, now):
            v = getattr(obj, name)
            return None if v is None else (1.0 if v else 0.0)

        return as_bool
    if inp.kind == "flag":
        mask = inp.mask

        def flag(obj, ts, now):
            v = getattr(obj, name)
            if v is None:
                return None
            try:
                return 1.0 if int(v) & mask else 0.0
            except (TypeError, ValueError, OverflowError):
                return None

        return flag
    if inp.kind == "delta":
        other = inp.fields[1]

        def delta(obj, ts, now):
            a, b = _number(getattr(obj, name)), _number(getattr(obj, other))
            if a is None or b is None:
                return None
            return _number(a - b)

        return delta
    if inp.kind == "jump":
        up_only = inp.up_only
        pack_value = name not in COMPARTMENT_FIELDS
        time_key = (*key, "t")

        def jump(obj, ts, now):
            if pack_value and getattr(obj, "battery_state", None) == BatteryState.EMPTY:
                # The pack left: the next one's first value is no step from this one's last, even when its
                # reading lacks the id that would tell them apart (a pack docked between the poll's
                # identity read and its SOC read).
                ts.prev.pop(key, None)
                ts.prev.pop(time_key, None)
                return None
            v = _number(getattr(obj, name))
            if v is None:
                return None
            prev = ts.prev.get(key)
            ts.prev[key] = v
            # Consecutive readings by their own times: after a gap (polls delayed or missed under load, a
            # cabinet offline) or out of order, the previous value is stale, not the step before this one.
            t, prev_t = ts.sample_t, ts.prev.get(time_key)
            ts.prev[time_key] = t
            if prev is None or (prev_t is not None and not 0.0 <= t - prev_t <= JUMP_MAX_GAP_S):
                return None
            d = v - prev
            if up_only:
                return d if d > 0.0 else 0.0
            return _number(abs(d))

        return jump
    if inp.kind == "lost":
        pack_value = name not in COMPARTMENT_FIELDS

        def lost(obj, ts, now):
            if pack_value and getattr(obj, "battery_state", None) == BatteryState.EMPTY:
                ts.prev.pop(key, None)  # no pack, no pack sensor: not lost, and start afresh
                return None
            if _number(getattr(obj, name)) is not None:
                ts.prev[key] = 1.0  # seen reporting
                return 0.0
            # Only a sensor that reported before can be lost: a field the cabinet's profile
            # does not carry is never there, and that is not a fault.
            return 1.0 if key in ts.prev else None

        return lost
    if inp.kind == "rate_of":
        window = inp.window_s
        min_span = window / 2  # a slope over a few seconds is mostly noise
        spacing = window / _RATE_POINTS

        def rate(obj, ts, now):
            v = _number(getattr(obj, name))
            if v is None:
                return None
            # One flat array of (time, value) pairs: 16 bytes a sample, not a tuple and a float object each
            # (a 12-slot cabinet's three windows were ~150 KiB as a deque of tuples).
            buf = ts.buffers.get(key)
            if buf is None:
                buf = ts.buffers[key] = array("d")
            if buf:
                last = buf[-2]
                if now <= last:
                    # Same timestamp: keep the latest sample. Clock went back: start afresh, so
                    # times in the window stay strictly increasing (no zero-length pairs).
                    del buf[-2 if now == last else 0:]
                elif len(buf) >= 4 and last - buf[-4] < spacing:
                    # The newest sample is closer than `spacing` to the one before it: this one takes
                    # its place. At most ~_RATE_POINTS samples a window however fast the polls
                    # (the safety fast lane), and always the newest value.
                    del buf[-2:]
            buf.append(now)
            buf.append(v)
            horizon = now - window
            i = 0
            while buf[i] < horizon:
                i += 2
            if i:
                del buf[:i]
            if len(buf) > 2 * _RATE_MAXLEN:
                del buf[: len(buf) - 2 * _RATE_MAXLEN]
            n = len(buf) >> 1
            if n < 3 or now - buf[0] < min_span:
                return None
            # Theil–Sen slope (median of pairwise slopes): one glitched sample in the window
            # cannot fake a fast rise, unlike least squares. All pairs for short windows; for
            # longer ones, pairs half a window apart keep it O(n).
            t, x = buf[0::2], buf[1::2]
            if n <= 10:
                slopes = [(x[j] - x[i]) / (t[j] - t[i]) for i in range(n - 1) for j in range(i + 1, n)]
            else:
                k = n // 2
                slopes = [(x[i + k] - x[i]) / (t[i + k] - t[i]) for i in range(n - k)]
            slopes.sort()
            m = len(slopes)
            mid = slopes[m // 2] if m % 2 else 0.5 * (slopes[m // 2 - 1] + slopes[m // 2])
            return _number(mid * 60.0)

        return rate
    raise ValueError(f"cannot compile input kind {inp.kind!r}")


def _context(needs: list[tuple[str, str]], reading: CabinetReading) -> dict[str, Any]:
    """Baselines from one cabinet poll: the cabinet temperature, and per field the lowest value among
    the *other* slots (slot -> baseline), so one slot's excursion never raises its own baseline."""
    ctx: dict[str, Any] = {}
    for minus, field in needs:
        if minus == "cabinet_temperature_c":
            ctx[minus] = _number(reading.cabinet_temperature_c)
            continue
        values = sorted((v, s.slot) for s in reading.slots if (v := _number(getattr(s, field))) is not None)
        if len(values) < 2:
            ctx[f"cabinet_min:{field}"] = {}  # nobody to compare with: absolute values
            continue
        (low, low_slot), (second, _) = values[0], values[1]
        ctx[f"cabinet_min:{field}"] = {slot: (second if slot == low_slot else low) for _, slot in values}
    return ctx


class _Program:
    """Everything precompiled from one RuleSet; replaced wholesale by set_threshold."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.scopes: dict[str, tuple[list, list[_Compiled]]] = {}
        for scope in ("cabinet", "slot", "vehicle"):
            index: dict[tuple, int] = {}
            extractors = []
            scoped = [r for r in rules.values() if r.scope == scope]
            for r in scoped:
                for inp in r.inputs:
                    if inp.key not in index:
                        index[inp.key] = len(extractors)
                        extractors.append(_extractor(inp))
            self.scopes[scope] = (extractors, [_Compiled(r, index) for r in scoped])
        # (baseline, field) pairs slot rules measure against (``minus:``): computed once per poll.
        self.context_needs = sorted({(inp.minus, inp.fields[0]) for r in rules.values() if r.scope == "slot"
                                     for inp in r.inputs if inp.minus is not None})
        self._tables: dict[tuple, list[_Table]] = {}

    def tables(self, scope: str, cabinet_model: str, chemistry: int | None) -> list[_Table]:
        key = (scope, cabinet_model, chemistry)
        t = self._tables.get(key)
        if t is None:
            t = self._tables[key] = [_Table(c.rule, cabinet_model, chemistry) for c in self.scopes[scope][1]]
        return t


class Engine:
    """Turns readings into alert level transitions and records them in ``state``.

    ``clock`` returns seconds since the epoch; replay passes the trace's clock so ``for``,
    rates and transition times run at trace time. ``registry`` takes ``cascade_rule_errors_total``
    (the app passes the pipeline's to export it); None keeps it on a private registry, so engines
    built in tests and benches never collide on the global one. ``language`` (``zh_CN``, the
    default, or ``en``) is the language of the alert texts (summary, diagnosis, action;
    alerting/i18n.py).
    """

    def __init__(
        self,
        rules: RuleSet | Iterable[Rule],
        *,
        clock: Callable[[], float] = time.time,
        state: AlertStore | None = None,
        audit_path: str | Path | None = None,
        registry: CollectorRegistry | None = None,
        language: str = DEFAULT_LANGUAGE,
        elapsed: Callable[[], float] | None = None,
    ) -> None:
        #: Alert texts in the operators' language (ValueError for an unsupported one, at start-up).
        self.texts = AlertTexts(language)
        if not isinstance(rules, RuleSet):
            rules = RuleSet(list(rules))
        if RULE_FAILED in rules:
            raise RuleError(rules[RULE_FAILED].file, RULE_FAILED, "id",
                            "reserved: the engine raises this alert itself when a rule fails; choose another id")
        self.clock = clock
        # Durations (`for`, clear delays, rate windows, fusion holds) run on a clock that never jumps:
        # a wall-clock step of an hour must neither raise a 5-minute rule at once nor delay it an hour.
        # The wall clock stamps transitions. An injected clock (replay, tests) serves as both.
        self._elapsed = elapsed
        self.state = state if state is not None else AlertStore()
        self.audit_path = Path(audit_path) if audit_path is not None else None
        self.audit: list[dict[str, Any]] = []  # threshold changes in force: re-applied at start, then this process's
        self._program = _Program(self._reapply_audit(rules))
        self._targets: dict[tuple, _TargetState] = {}
        self._lock = threading.Lock()
        self._evidence: list[str] = []
        # Rule id -> targets where it is failing (this process). The log line is written when a rule
        # starts failing anywhere and when it works again everywhere, not on every failed reading.
        self._failing: dict[str, set[tuple[str, str, int | None]]] = {}
        self._failed_inputs: set[int] = set()
        #: ``cascade_rule_errors_total{rule}``, on ``registry`` (a private one when None, so two
        #: engines never collide; the app passes the pipeline's to export it).
        self.rule_errors: Counter = _rule_error_counter(
            registry if registry is not None else CollectorRegistry(), self._program.rules)
        #: Clear transitions for persisted alerts the current catalogue can no longer evaluate
        #: (rule removed, scope changed, level removed). Already applied to ``state``, like the
        #: return value of ``evaluate``; the caller fans them out once after start-up.
        self.startup_transitions: list[Transition] = self._reconcile()

    def _reapply_audit(self, rules: RuleSet) -> RuleSet:
        """Run-time threshold changes (P-5.4.4) survive a restart: re-apply the audit log in order.

        An entry applies only while the threshold it changed still has the value it changed from,
        so an edited catalogue wins over a stale run-time change; skipped entries are logged.
        """
        if self.audit_path is None or not self.audit_path.exists():
            return rules
        current = dict(rules.items())
        applied = 0
        for number, line in enumerate(self.audit_path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                entry = json.loads(line)
                rule = current[entry["rule"]]
                level, old, new = int(entry["level"]), finite_number(entry["old"]), finite_number(entry["new"])
                if new is None:
                    raise ValueError(f"new value {short_repr(entry['new'])} is not a finite number")
                now = next((lv.threshold for lv in rule.levels if lv.level == level), None)
                if old is None or now is None or not math.isclose(now, old, rel_tol=1e-9, abs_tol=1e-12):
                    log.warning("%s:%d: threshold change %s level %s %s -> %s not re-applied: the catalogue now "
                                "says %s", self.audit_path, number, entry["rule"], level, old, new, now)
                    continue
                current[rule.id] = rule.with_threshold(level, new)
                applied += 1
                self.audit.append(entry)  # GET /api/thresholds lists it after a restart too
            except (ValueError, KeyError, TypeError, OverflowError, AttributeError) as err:
                log.warning("%s:%d: audit entry not re-applied: %s", self.audit_path, number, err)
        if applied:
            log.info("re-applied %d run-time threshold changes from %s", applied, self.audit_path)
        return RuleSet(list(current.values()))

    def _reconcile(self) -> list[Transition]:
        """Clear stored alerts that the current rules cannot evaluate, so none is stuck forever.

        An alert persisted before a restart is resumed and cleared by live data (``_target``). That
        only works while its rule exists with the same scope and still has the alert's level: a
        removed rule is never evaluated again (its alert would never clear and would be re-sent to
        Alertmanager on every start), and a removed level has no threshold to clear against. Such
        alerts are cleared now, with a logged warning and a ``clear`` transition each; if the
        condition persists, the current rules raise it again from live data.
        """
        rules = self.rules
        out: list[Transition] = []
        now = self.clock()
        for alert in self.state.active():
            key = alert.key
            if key.rule == COMMAND_UNACKNOWLEDGED:
                continue  # not a rule of the catalogue: the vehicle command service clears it (cascade/commands.py)
            rule = rules.get(key.rule)
            if key.rule == RULE_FAILED:
                # The failing rule may be fixed by the restart; one still broken raises the notice
                # again on its first reading, with no `for` delay.
                log.info("stored alert %s cleared at start-up: rules are re-checked from scratch", key)
                out.append(_notice_cleared(
                    self.texts, alert.labels, self.texts.tr(
                        "Cleared at start-up: rule failures are re-checked from scratch after a restart; "
                        "a rule that still fails raises it again on its first reading."), alert.battery, now, key[1:]))
                continue
            values: dict[str, Any]
            if rule is None:
                why, values = N_("rule {rule!r} is no longer in the catalogue"), {"rule": key.rule}
            elif (rule.scope == "slot") != (key.slot is not None):
                why, values = N_("rule {rule!r} is now a {scope}-scope rule"), {"rule": key.rule, "scope": rule.scope}
            elif all(lv.level != alert.level for lv in rule.levels):
                have = ", ".join(str(lv.level) for lv in rule.levels)
                why, values = (N_("rule {rule!r} no longer has level {level} (it has {have})"),
                               {"rule": key.rule, "level": alert.level, "have": have})
            else:
                continue
            # The log stays English (for whoever reads it next to the code); the alert speaks the operators' language.
            log.warning("stored alert %s L%d cleared at start-up: %s", key, alert.level, why.format_map(values))
            out.append(_retired(self.texts, alert, self.texts.tr(why, **values), now))
        if out:
            self.state.apply(out)
        return out

    @property
    def rules(self) -> RuleSet:
        return self._program.rules

    # --- hot path --------------------------------------------------------------------------
    def evaluate(self, reading: CabinetReading) -> list[Transition]:
        """Evaluate every rule for this reading; return (and store) the level transitions."""
        prog = self._program  # one snapshot: a concurrent set_threshold swaps it atomically
        now = self.clock()
        tick = self._tick()
        out: list[Transition] = []
        site, cab, cab_model = reading.site, reading.cabinet_id, reading.model
        vehicle = cab_model == VEHICLE_MODEL
        # A vehicle has no cabinet: its own rules (vehicle scope) read the report instead, at the same target.
        scope, obj = ("vehicle", reading.vehicle) if vehicle else ("cabinet", reading)
        extractors, compiled = prog.scopes[scope]
        if compiled and obj is not None:
            ts = self._target(site, cab, None)
            ts.sample_t = reading.timestamp_ns / 1e9
            if vehicle:
                ts.vehicle, ts.commandable = True, False
                if obj.battery is not None and obj.battery.battery_id is not None:
                    ts.battery = obj.battery.battery_id  # the pack a vehicle alert names
                ts.facts = _vehicle_facts(obj)
            values = self._extract(extractors, obj, ts, tick, cab, None)
            self._run(compiled, prog.tables(scope, cab_model, None), values, ts, now, tick,
                      site, cab, None, out)
        extractors, compiled = prog.scopes["slot"]
        commandable = cab_model not in UNCOMMANDED_MODELS
        if compiled:
            context = _context(prog.context_needs, reading) if prog.context_needs else None
            for slot in reading.slots:
                if slot.battery_state == BatteryState.EMPTY:
                    slot = _compartment_only(slot)
                sid = slot.slot
                ts = self._target(site, cab, sid)
                battery = slot.battery_id
                if battery is not None and battery != ts.battery:
                    # A different pack, or the first one into an empty slot: rates and jumps of
                    # the compartment's sensors before it (an empty slot at cabinet temperature) are
                    # not this pack's, and would read as a sudden rise.
                    ts.forget_history()
                    ts.battery = battery
                ts.context = context
                ts.sample_t = reading.timestamp_ns / 1e9
                ts.vehicle = vehicle
                ts.commandable = commandable
                values = self._extract(extractors, slot, ts, tick, cab, sid)
                chem = slot.chemistry
                if chem is not None and type(chem) is not int:
                    chem = None  # garbage chemistry: fall back to base thresholds
                self._run(compiled, prog.tables("slot", cab_model, chem), values, ts, now, tick,
                          site, cab, sid, out)
                ts.context = None  # this poll's baselines only: not kept alive until the next (memory)
        if out:
            self.state.apply(out)
        return out

    def _tick(self) -> float:
        """The steady clock durations run on: ``elapsed`` if given, else the monotonic clock while
        ``clock`` is the wall clock, else ``clock`` itself (replay swaps in the trace's clock)."""
        if self._elapsed is not None:
            return self._elapsed()
        clock = self.clock
        return time.monotonic() if clock is time.time else clock()

    def _target(self, site: str, cab: str, slot: int | None) -> _TargetState:  # noqa: D401
        key = (site, cab, slot)
        ts = self._targets.get(key)
        if ts is None:
            ts = self._targets[key] = _TargetState()
            # Resume alerts persisted before a restart: they clear only on healthy data.
            for alert in self.state.alerts_for(site, cab, slot):
                ts.rules[alert.key.rule] = _RuleState(alert.level)
                ts.battery = alert.battery
        return ts

    def _run(self, compiled, tables, values, ts, now, tick, site, cab, sid, out) -> None:
        """``now``: wall time (transition stamps); ``tick``: the steady clock (every duration)."""
        states = ts.rules
        failed: dict[str, str] | None = None  # rule id -> error, only once a rule raised
        for c, tab in zip(compiled, tables):
            try:  # one failing rule must not cost the other rules' transitions of this reading
                if c.terms is None:
                    v = values[c.idx]
                else:
                    v = self._fuse(c, values, ts, tick)
                if v is None:
                    continue
                x = v * tab.sign
                if c.guard is not None:
                    g = values[c.guard[0]]
                    if g is None:
                        continue
                    if not c.guard[1](g, c.guard[2]):
                        x = -_INF  # guard off (e.g. not charging): the rule's condition is healthy
                rs = states.get(c.id)
                if rs is None:
                    if not (x > tab.t0 if tab.strict0 else x >= tab.t0):
                        continue  # fast path: nothing active, nothing met
                    rs = states[c.id] = _RuleState()
                old = rs.level
                new = _advance(rs, tab, x, tick)
                if new != old:
                    # Level changes only once its transition exists: engine and store never disagree.
                    out.append(self._transition(c, tab, old, new, v, now, site, cab, sid, ts.battery, ts.vehicle,
                                                ts.commandable, ts.facts))
                    rs.level = new
                if new == 0 and rs.down_since is None and rs.since.count(None) == 3:  # 0.0 is a time
                    del states[c.id]
            except Exception as err:  # noqa: BLE001 - a bug in one rule must not blind the others
                if failed is None:
                    failed = {}
                failed[c.id] = _error_text(err)
                self._rule_failed(c.id, (site, cab, sid))
        if failed is not None or ts.failing is not None:  # the only cost while no rule fails
            self._rule_health(compiled, values, failed or {}, ts, now, (site, cab, sid), out)

    def _extract(self, extractors: list[Callable[[Any, _TargetState, float], float | None]], obj: Any,
                 ts: _TargetState, now: float, cab: str, sid: int | None) -> list[float | None]:
        """Every input's value; an input that raises is missing data for its rules, never the end of
        the reading's evaluation. Counted as ``cascade_rule_errors_total{rule="(input)"}``."""
        # Each input runs once per reading: an input with memory (a jump, a rate) run twice would compare
        # the reading with itself. After a failure the values so far are kept and the rest go on.
        values: list[float | None] = []
        append = values.append
        start = 0
        while True:
            try:
                for ex in extractors[start:] if start else extractors:
                    append(ex(obj, ts, now))
                return values
            except Exception:  # noqa: BLE001 - the failing input is missing data for its rules only
                failed = extractors[len(values)]
                append(None)
                start = len(values)
                self.rule_errors.labels(INPUT_FAILED).inc()
                if id(failed) not in self._failed_inputs:
                    self._failed_inputs.add(id(failed))
                    log.exception("an input of the rules failed at %s%s; its rules see missing data "
                                  "(logged once per input)", cab, "" if sid is None else f"/{sid}")

    def _rule_failed(self, rule_id: str, target: tuple[str, str, int | None]) -> None:
        """Count the failure; log it with its traceback only when the rule starts failing.

        Called inside the ``except``, so the traceback is the rule's. A broken rule fails on every
        reading of every target; one error line per change keeps the log readable, the counter
        keeps the rate.
        """
        self.rule_errors.labels(rule_id).inc()
        targets = self._failing.get(rule_id)
        if targets is None:
            targets = self._failing[rule_id] = set()
        first = not targets
        targets.add(target)
        if first:
            log.exception("rule %s failed at %s; its level is kept, the other rules go on and it is retried "
                          "on the next reading (logged again only after it recovers)", rule_id, _where(target))
        else:
            log.debug("rule %s failed again at %s", rule_id, _where(target), exc_info=True)

    def _rule_recovered(self, rule_id: str, target: tuple[str, str, int | None]) -> None:
        """Log that a rule works again once it works at every target where it failed."""
        targets = self._failing.get(rule_id)
        if targets is None:
            return
        targets.discard(target)
        if targets:
            log.debug("rule %s evaluates again at %s; still failing at %d other target(s)",
                      rule_id, _where(target), len(targets))
            return
        del self._failing[rule_id]
        # WARNING, not INFO: it pairs with the ERROR that said it failed, in a log filtered at WARNING.
        log.warning("rule %s recovered: it evaluates again at %s", rule_id, _where(target))

    def _rule_health(self, compiled: list[_Compiled], values: list[float | None], failed: dict[str, str],
                     ts: _TargetState, now: float, target: tuple[str, str, int | None],
                     out: list[Transition]) -> None:
        """Slow path, only while a rule fails or failed at this target: track which rules fail here,
        raise the target's RULE_FAILED notice when the first one fails and clear it when the last
        one evaluates again.

        A rule recovers only on a reading where it had its data and did not raise: a rule skipped
        for a missing value has not shown that it works (stale data is not healthy data).
        """
        before = ts.failing or set()
        recovered = [c.id for c in compiled
                     if c.id in before and c.id not in failed and _has_data(c, values)]
        for rule_id in recovered:
            self._rule_recovered(rule_id, target)
        failing = (before | failed.keys()).difference(recovered)
        ts.failing = failing or None
        if failing and ts.notice is None:
            order = [c.id for c in compiled if c.id in failing]
            notice = _notice_raised(self.texts, order, failed, ts, now, target)
            ts.notice = notice.labels
            out.append(notice)
        elif not failing and ts.notice is not None:
            diagnosis = self.texts.tr("Cleared: rule {rules} evaluates again at {where}.",
                                      rules=", ".join(recovered), where=_place(self.texts, target))
            out.append(_notice_cleared(self.texts, ts.notice, diagnosis, ts.battery, now, target))
            ts.notice = None

    def _fuse(self, c: _Compiled, values: list, ts: _TargetState, now: float) -> float | None:
        """Weighted evidence score: sum of weight × strength, strength ramping 0→1."""
        score = 0.0
        seen = False
        evidence = self._evidence
        evidence.clear()
        for i, (idx, start, span, weight, hold, label) in enumerate(c.terms):
            v = values[idx]
            s = 0.0
            if v is not None:
                seen = True
                s = (v - start) / span
                s = 0.0 if s < 0.0 else 1.0 if s > 1.0 else s
            if hold:
                hkey = (c.id, i)
                h = ts.holds.get(hkey)
                if h is not None and now - h[1] <= hold and h[0] > s:  # as strong again: held from now
                    s = h[0]
                    seen = True
                elif s > 0.0:
                    ts.holds[hkey] = (s, now)
            if s > 0.0:
                score += weight * s
                evidence.append(f"{label}={v if v is None else round(v, 3)} ({weight * s:.2f})")
        return score if seen else None

    def _transition(self, c, tab, old, new, value, now, site, cab, sid, battery, vehicle=False,
                    commandable=True, facts=None) -> Transition:
        rule = c.rule
        if new == 0:
            kind, shown = "clear", old
        elif old == 0:
            kind, shown = "raise", new
        else:
            kind, shown = ("escalate" if new > old else "deescalate"), new
        lv = tab.raw.get(shown)  # a level the rule no longer has (stored before a catalogue change)
        evidence = "; ".join(self._evidence) if c.terms else ""
        whole_vehicle = rule.scope == "vehicle"
        annotations = render_annotations(self.texts, rule, shown, value, lv.threshold if lv is not None else "-",
                                         (site, cab, sid), battery, evidence=evidence, cleared=kind == "clear",
                                         vehicle=vehicle and not whole_vehicle, whole_vehicle=whole_vehicle,
                                         facts=facts if whole_vehicle else None)
        diagnosis, action = annotations["diagnosis"], annotations["action"]
        # A vehicle's pack: `vehicle` names it (routing still groups by `cabinet`, the target's device id).
        labels = alert_labels(rule.id, shown, site, cab, sid, battery, **({"vehicle": cab} if vehicle else {}))
        return Transition(
            rule=rule.id,
            target=Target(site, cab, sid, battery),
            from_level=old,
            to_level=new,
            kind=kind,
            value=value,
            at=now,
            diagnosis=diagnosis,
            action=action,
            # A cabinet's cut-off has no counterpart on a vehicle (its commands are part of the vehicle
            # functions): the alert tells people what to do instead (the action text).
            protective_action=(lv.protective_action if lv is not None and kind in ("raise", "escalate")
                               and commandable else None),
            labels=labels,
            annotations=annotations,
            # What the rule asks of a vehicle (motor lock, power off); the app's vehicle command service sends it.
            vehicle_command=rule.vehicle_command if vehicle and kind in ("raise", "escalate") else None,
        )

    # --- run-time thresholds (P-5.4.4) ---------------------------------------------------------
    def set_threshold(self, rule_id: str, level: int, value: float, who: str, reason: str) -> dict[str, Any]:
        """Change one base threshold at run time; validate, apply atomically, audit.

        Returns the audit entry (also appended as a JSON line to ``audit_path`` if set).
        Raises RuleError (a ValueError) if the change is invalid; nothing changes then.
        """
        if not isinstance(who, str) or not who.strip():
            raise ValueError("set_threshold needs who: the person making the change")
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("set_threshold needs reason: why the threshold changes (audited)")
        with self._lock:
            prog = self._program
            rule = prog.rules.get(rule_id)
            if rule is None:
                raise RuleError("<run-time>", rule_id, None, "no such rule; see the catalogue for ids")
            number = finite_number(value)  # None also for an int too large for a float (10**400)
            if number is None:
                raise RuleError(rule.file, rule_id, f"levels.{level}", f"{short_repr(value)} is not a finite number")
            value = number
            if isinstance(level, bool) or level not in (1, 2, 3):
                raise RuleError(rule.file, rule_id, f"levels.{level}", "level must be 1, 2 or 3")
            old = next(lv.threshold for lv in rule.levels if lv.level == level) if any(
                lv.level == level for lv in rule.levels) else None
            new_rule = rule.with_threshold(level, value)  # validates ordering, raises RuleError
            rules = RuleSet([new_rule if r.id == rule_id else r for r in prog.rules.values()])
            new_prog = _Program(rules)
            entry = {
                "at": self.clock(), "who": who.strip(), "reason": reason.strip(),
                "rule": rule_id, "level": level, "old": old, "new": float(value),
            }
            if self.audit_path is not None:
                _append_jsonl(self.audit_path, entry)  # audit first: no unaudited change
            self._program = new_prog
            self.audit.append(entry)
            return entry


def _advance(rs: _RuleState, tab: _Table, x: float, now: float) -> int:
    since = rs.since
    reached = 0
    held = 0
    current = rs.level
    hyst = tab.hyst
    for n, t, strict, for_s in tab.levels:
        i = n - 1
        if x > t if strict else x >= t:
            if since[i] is None:
                since[i] = now
            if now - since[i] >= for_s:
                reached = n
        else:
            since[i] = None
        if n <= current and (x > t - hyst if strict else x >= t - hyst):
            held = n
    new = max(reached, min(current, held))
    if new < current and tab.clear_for > 0.0:
        if rs.down_since is None:
            rs.down_since = now
        if now - rs.down_since < tab.clear_for:
            return current
    rs.down_since = None
    return new


def render_annotations(texts: AlertTexts, rule: Rule, level: int, value: Any, threshold: Any,
                       target: tuple[str, str, int | None], battery: str | None, *, evidence: str = "",
                       cleared: bool = False, vehicle: bool = False, whole_vehicle: bool = False,
                       facts: dict[str, str] | None = None) -> dict[str, str]:
    """A transition's ``summary``, ``diagnosis`` and ``action`` in ``texts``' language.

    The summary leads with the level, then what (the rule's name and the value with its unit),
    then where: ``L3 电池温度过高 85.2 °C（site-01/C0003 5号仓）`` /
    ``L3 Battery over-temperature 85.2 °C at site-01/C0003 slot 5``. The action is the part for
    this level when the rule writes one per level. ``evidence`` is the fusion rule's
    ``label=value (share); ...`` with English labels. ``vehicle``: a battery rule on a vehicle's pack
    (the place is the vehicle's battery, the action what to do with the rider); ``whole_vehicle``: a
    vehicle rule (the place is the vehicle, the action the rule's own). ``facts``: a vehicle report's
    values the summary shows instead of the rule's value where that is clearer (:data:`_FACT_READINGS`:
    the SOC and the reminder level, not the points below it). Never raises (alerting/i18n.py).
    """
    site, cab, sid = target
    if evidence and texts.language != "en":
        for term in rule.fusion:
            label = term.input.describe()
            evidence = evidence.replace(f"{label}=", f"{texts.ptr('evidence', label)}=")
    fmt = {
        "value": value, "threshold": threshold, "level": level, "site": site, "cabinet": cab,
        "slot": sid if sid is not None else "-", "battery": battery or texts.tr("(unknown)"), "rule": rule.id,
        "evidence": evidence,
    }
    name = texts.rule_text(rule.name or rule.description)
    reading = texts.reading(value, rule.unit, rule.diagnosis)
    shown = _FACT_READINGS.get(getattr(rule.input, "fields", ("",))[0]) if facts else None
    if shown is not None and facts is not None and all(facts.get(name) for name in shown[1]):
        reading = texts.tr(shown[0], **{name: facts[name] for name in shown[1]})
    diagnosis = texts.rule_text(rule.diagnosis, fmt)
    if cleared:
        diagnosis = texts.tr("Cleared: {name} back within limits ({reading}).", name=name,
                             reading=reading or texts.tr("value {value}", value=_number_text(value)))
    return {
        "summary": texts.tr("L{level} {name}{reading} at {where}", level=level, name=name,
                            reading=f" {reading}" if reading else "",
                            where=(_vehicle_place(texts, target) if vehicle else _whole_vehicle_place(texts, target)
                                   if whole_vehicle else _place(texts, target))),
        "diagnosis": diagnosis,
        "action": (_vehicle_action(texts, level, battery) if vehicle
                   else for_level(texts.rule_text(rule.action, fmt), level)),
    }


#: Vehicle-rule inputs whose summary shows the report's values instead: input field -> (text, facts it needs).
_FACT_READINGS = {"soc_below_reminder_pct": (N_("SOC {soc} %, reminder at {reminder} %"), ("soc", "reminder"))}


def _vehicle_facts(report: Any) -> dict[str, str] | None:
    """What :data:`_FACT_READINGS` shows of a vehicle report: its pack's SOC and the user's reminder level."""
    pack, profile = getattr(report, "battery", None), getattr(report, "profile", None)
    soc, reminder = getattr(pack, "soc_pct", None), getattr(profile, "low_soc_pct", None)
    if finite_number(soc) is None or finite_number(reminder) is None:
        return None
    return {"soc": f"{soc:.0f}", "reminder": f"{reminder:.0f}"}


def _retired(texts: AlertTexts, alert: Alert, why: str, now: float) -> Transition:
    """The clear transition for a stored alert the current rules cannot evaluate any more. Its
    labels are the ones the alert was fired with, so Alertmanager resolves exactly that alert."""
    key, shown = alert.key, alert.level
    where = _place(texts, (key.site, key.cabinet, key.slot))
    diagnosis = texts.tr("Cleared at start-up: {why}; the alert can no longer be evaluated.", why=why)
    action = texts.tr("None for the retired alert. If the condition may persist, check the site: the current "
                      "rules raise it again from live data.")
    # The labels it was fired with (so Alertmanager resolves exactly that alert), level made exact.
    labels = {**alert.labels, **alert_labels(key.rule, shown, key.site, key.cabinet, key.slot, alert.battery)}
    annotations = {**alert.annotations,
                   "summary": texts.tr("Cleared L{level} {rule} at {where} (rule changed)", level=shown,
                                       rule=key.rule, where=where),
                   "diagnosis": diagnosis, "action": action}
    return Transition(
        rule=key.rule, target=Target(key.site, key.cabinet, key.slot, alert.battery),
        from_level=shown, to_level=0, kind="clear", value=None, at=now, diagnosis=diagnosis,
        action=action, protective_action=None, labels=labels, annotations=annotations,
    )


# --- rule failures ---------------------------------------------------------------------------

def _rule_error_counter(registry: CollectorRegistry, rules: RuleSet) -> Counter:
    """``cascade_rule_errors_total{rule}``, with a zero series per rule so ``increase()`` sees the
    first failure too (a series born at 1 looks like no increase)."""
    counter = Counter("cascade_rule_errors_total",
                      "Rule evaluations that raised an exception (the rule's level is kept; see the log)",
                      ["rule"], registry=registry)
    for rule_id in rules:
        counter.labels(rule_id)
    return counter


def _where(target: tuple[str, str, int | None]) -> str:
    site, cab, sid = target
    return f"{site}/{cab}" + ("" if sid is None else f"/{sid}")


def _error_text(err: Exception, limit: int = 200) -> str:
    """``Type: message`` cut to ``limit`` characters, for an annotation (the log has the traceback)."""
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _has_data(c: _Compiled, values: list[float | None]) -> bool:
    """Whether the rule had the values to decide on this reading (its input, or for a fusion rule
    any evidence term, and its guard). Conservative for fusion holds: data is needed, not a hold."""
    if c.terms is None:
        if values[c.idx] is None:
            return False
    elif all(values[term[0]] is None for term in c.terms):
        return False
    return c.guard is None or values[c.guard[0]] is not None


def _notice_labels(target: tuple[str, str, int | None], battery: str | None, failed_rule: str) -> dict[str, str]:
    site, cab, sid = target
    return alert_labels(RULE_FAILED, 1, site, cab, sid, battery, failed_rule=failed_rule)


def _notice_raised(texts: AlertTexts, rule_ids: list[str], failed: dict[str, str], ts: _TargetState, now: float,
                   target: tuple[str, str, int | None]) -> Transition:
    """Level 1 and no protective action: a software fault is no reason to cut a slot off, but the
    rule that failed no longer protects this target, and someone must know that."""
    site, cab, sid = target
    first = rule_ids[0]
    where = _place(texts, target)
    kept = ts.rules.get(first)
    error = failed.get(first) or texts.tr("see the log")
    diagnosis = texts.tr("Rule {rule} raised an error at {where} ({error}): while it fails it cannot change its "
                         "alert here, kept at L{level}; the other rules are evaluated as usual. "
                         "Failing here: {rules}.", rule=first, where=where, error=error,
                         level=kept.level if kept is not None else 0, rules=", ".join(rule_ids))
    action = texts.tr("Not a battery fault: a software fault in Cascade. Report it with the log line 'rule {rule} "
                      "failed' (metric {metric}); until it is fixed, watch {where} by other means for what "
                      "{rule} checks.", rule=first, where=where,
                      metric=f'cascade_rule_errors_total{{rule="{first}"}}')
    return Transition(
        rule=RULE_FAILED, target=Target(site, cab, sid, ts.battery), from_level=0, to_level=1, kind="raise",
        value=None, at=now, diagnosis=diagnosis, action=action, protective_action=None,
        labels=_notice_labels(target, ts.battery, first),
        annotations={"summary": texts.tr("L1 rule {rule} cannot be evaluated at {where}", rule=first, where=where),
                     "diagnosis": diagnosis, "action": action},
    )


def _notice_cleared(texts: AlertTexts, labels: dict[str, str], diagnosis: str, battery: str | None, now: float,
                    target: tuple[str, str, int | None]) -> Transition:
    """Clears with the labels the notice was raised with, so Alertmanager resolves exactly it."""
    site, cab, sid = target
    nothing = texts.tr("None.")
    return Transition(
        rule=RULE_FAILED, target=Target(site, cab, sid, battery), from_level=1, to_level=0, kind="clear",
        value=None, at=now, diagnosis=diagnosis, action=nothing, protective_action=None, labels=dict(labels),
        annotations={"summary": texts.tr("Cleared L1 rule evaluation failure at {where}",
                                         where=_place(texts, target)),
                     "diagnosis": diagnosis, "action": nothing},
    )


def _vehicle_place(texts: AlertTexts, target: tuple[str, str, int | None]) -> str:
    """Where a vehicle's pack is: ``bj/V000123 battery`` (``bj/V000123号车 电池``)."""
    return texts.tr("{fleet}/{vehicle} battery", fleet=target[0], vehicle=target[1])


def _whole_vehicle_place(texts: AlertTexts, target: tuple[str, str, int | None]) -> str:
    """Where a vehicle is: ``bj/V000123 vehicle`` (``bj/V000123号车``)."""
    return texts.tr("{fleet}/{vehicle} vehicle", fleet=target[0], vehicle=target[1])


def _vehicle_action(texts: AlertTexts, level: int, battery: str | None) -> str:
    """What to do about a vehicle's pack: the cabinet actions (cut off a slot) do not apply to it."""
    pack = battery or texts.tr("(unknown)")
    if level >= 3:
        return texts.tr("Call the rider now: stop, get off, keep away from the battery and from buildings and "
                        "people; send staff. Battery {battery}.", battery=pack)
    if level == 2:
        return texts.tr("Tell the rider to end the ride and swap battery {battery} at the nearest station; "
                        "inspect it before it is issued again.", battery=pack)
    return texts.tr("Watch battery {battery}; inspect it at its next swap.", battery=pack)


def _place(texts: AlertTexts, target: tuple[str, str, int | None]) -> str:
    """Where, in words: ``site-01/C0003 slot 5`` (``site-01/C0003 5号仓``), or ``site-01/C0003``."""
    site, cab, sid = target
    if sid is None:
        return f"{site}/{cab}"
    return texts.tr("{site}/{cabinet} slot {slot}", site=site, cabinet=cab, slot=sid)


def _number_text(value: Any) -> str:
    try:
        return f"{value:g}"
    except (ValueError, TypeError):
        return str(value)


def _append_jsonl(path: Path, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


#: Sensors of the compartment itself, meaningful with or without a pack in the slot (P-5.2.2.2):
#: gas, vapour and pressure can linger after a venting pack was pulled out.
COMPARTMENT_FIELDS = ("surface_temperature_c", "h2_ppm", "voc_ppm", "module_pressure_kpa",
                      "valve_acoustic_events", "charger_protection", "output_enabled")


def _compartment_only(slot: SlotReading) -> SlotReading:
    """An empty slot reports zeros for pack values it cannot measure. Treat them as missing, so
    they neither raise (a 0 V "pack" is not under-voltage) nor clear an alert raised on the pack."""
    return SlotReading(slot=slot.slot, battery_state=BatteryState.EMPTY,
                       **{name: getattr(slot, name) for name in COMPARTMENT_FIELDS})
