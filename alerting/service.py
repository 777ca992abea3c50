"""The alert service: warning engine on every reading → InfluxDB, Prometheus, Alertmanager, actions.

    service = AlertService(engine, feed=pipeline, commander=pipeline.commander, emit=pipeline.submit,
                           registry=pipeline.registry, alertmanager_url="http://127.0.0.1:9093")
    async with service:              # subscribes to the reading feed, starts the pusher
        async with pipeline:
            ...

The collaborators are typed seams (:mod:`core.ports`): a reading feed to subscribe to, a commander
for protective writes, and an event handler that receives alert events and command records (the
app sends them to the sink). ``cascade.app.alert_service_for(pipeline, engine, ...)`` wires all four.

For every reading the hook runs ``engine.evaluate`` and, per level transition, without awaiting
any I/O (the poll loop never waits for Alertmanager, InfluxDB or a cabinet write):

* an :class:`~core.events.AlertEvent` goes to ``emit`` (stored; Grafana annotations read it);
* ``cascade_alert_transitions_total{kind,level}`` and ``cascade_alerts_active{level}`` change;
* Alertmanager is told: raise → fire; escalate/de-escalate → resolve the alert at the old
  ``level`` label, fire the new one; clear → resolve;
* the protective action (policy permitting) starts in a task of its own.

A protective action that fails is itself an alert: ``protective_action_failed`` at level 3 for the
slot, pushed and recorded like engine alerts but owned here (the engine's store holds only rule
alerts). It is retried every ``policy.retry_s`` and stays active until a write to that slot
succeeds. See docs/alert-service.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from alerting.actions import (
    CONTROL_COMMANDS,
    CONTROLS,
    ActionPolicy,
    ActionRecord,
    ActionRunner,
    Command,
    check_command,
)
from alerting.alertmanager import AlertmanagerPusher
from alerting.categories import category_of
from alerting.engine import Engine
from alerting.engine import _place as place_text
from alerting.i18n import N_, AlertTexts
from alerting.state import SEVERITY, Ack, Alert, AlertKey, Target, Transition, alert_labels
from core.errors import CascadeError
from core.events import AlertEvent
from core.model import BatteryState, CabinetReading
from core.ports import Commander, EventHandler, ReadingFeed

__all__ = ["ACTION_FAILED", "AlertService", "ControlRefused", "FailedAction"]

log = logging.getLogger(__name__)

ACTION_FAILED = "protective_action_failed"
CABINET_OFFLINE = "cabinet_offline"
#: How long an acknowledgement silences repeat notifications of an alert that neither clears nor
#: changes level; after that it pages again (someone acknowledged, nobody fixed it).
ACK_SILENCE_S = 12 * 3600.0
ACK_SILENCE_DELAY_S = 15.0
"""An acknowledgement's silence starts this much later: a notification already batched for the
regulator's feed (its route sends every 10 s) still goes out. Acknowledging is on-call's business; the
regulator gets every level an alert reached."""


class ControlRefused(CascadeError):
    """A remote-control request that was not sent to the cabinet: ``status`` (HTTP), a stable ``code`` and
    why. ``msgid`` (English, a catalogue text) and ``values`` let the API word it in the caller's language
    (``AlertTexts.tr(err.msgid, **err.values)``); ``str(err)`` is the English text."""

    def __init__(self, status: int, message: str, *, code: str = "refused", values: dict[str, Any] | None = None
                 ) -> None:
        self.status, self.code, self.msgid, self.values = status, code, message, dict(values or {})
        super().__init__(AlertTexts("en").tr(message, **self.values))


@dataclass(slots=True)
class FailedAction:
    """A protective write that did not take: a level-3 alert until a later write succeeds."""

    command: Command
    labels: dict[str, str]
    annotations: dict[str, str]
    raised_at: float
    attempts: int
    last_error: str
    ack: Ack | None = None

    @property
    def key(self) -> AlertKey:
        c = self.command
        return AlertKey(ACTION_FAILED, c.site, c.cabinet, c.slot)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": str(self.key), "level": 3, "value": None, "raised_at": self.raised_at,
            "updated_at": self.raised_at, "battery": self.labels.get("battery"), "protective_action": None,
            "labels": self.labels, "annotations": self.annotations, "acknowledged": self.ack is not None,
            "ack": None if self.ack is None else _ack_dict(self.ack), "source": "service",
            "attempts": self.attempts, "last_error": self.last_error,
        }


class AlertService:
    """Runs the warning engine on every reading of a feed and fans the transitions out."""

    def __init__(self, engine: Engine, *, feed: ReadingFeed | None = None, commander: Commander | None = None,
                 emit: EventHandler | None = None, cabinets: Iterable[tuple[str, str]] = (),
                 alertmanager_url: str | None,
                 resend_interval_s: float = 60.0, clock: Callable[[], float] = time.time,
                 session: aiohttp.ClientSession | None = None, policy: ActionPolicy | None = None,
                 registry: CollectorRegistry | None = None, generator_url: str | None = None,
                 on_pushed: Callable[[list[dict[str, Any]], float], None] | None = None,
                 failed_actions_path: str | Path | None = None,
                 offline_after_s: float | Mapping[tuple[str, str], float] | None = None,
                 escalate_after_s: float | None = None, elapsed: Callable[[], float] | None = None,
                 ack_silence_delay_s: float = ACK_SILENCE_DELAY_S,
                 control_audit_path: str | Path | None = None) -> None:
        self._ack_silence_delay_s = ack_silence_delay_s
        # Remote-control commands (who, what, when, result, read-back), one JSON line each, append-only.
        self._control_audit_path = Path(control_audit_path) if control_audit_path is not None else None
        self._feed = feed
        self._emit = emit
        self.engine = engine
        self.store = engine.state
        self._clock = clock
        # Silence and escalation are durations: measured on a clock that never jumps (a wall-clock step
        # must neither raise every cabinet offline at once nor hide a silent one for an hour). The wall
        # clock stamps what is stored and shown. An injected clock (tests) serves as both.
        self._elapsed: Callable[[], float] = elapsed or (time.monotonic if clock is time.time else clock)
        registry = registry if registry is not None else CollectorRegistry()
        self.pusher = None if alertmanager_url is None else AlertmanagerPusher(
            alertmanager_url, resend_interval_s=resend_interval_s, session=session, registry=registry, clock=clock,
            generator_url=generator_url, on_pushed=on_pushed)
        self.actions = ActionRunner(commander, policy, emit=emit, clock=clock)
        # Failed protective actions are safety state: kept on disk so a restart resumes the retries
        # and the level-3 alert instead of forgetting an energised faulty slot.
        self._failed_path = Path(failed_actions_path) if failed_actions_path is not None else None
        self.failed: dict[AlertKey, FailedAction] = self._load_failed()
        self._fired: dict[AlertKey, dict[str, str]] = {}  # labels last fired per alert (to resolve exactly)
        self._done: dict[AlertKey, int] = {}  # alert -> highest level whose action was started
        self._tasks: set[asyncio.Task[None]] = set()
        self._retry_task: asyncio.Task[None] | None = None
        self._running = False
        self._transitions = Counter("cascade_alert_transitions_total", "Alert level transitions",
                                    ["kind", "level"], registry=registry)
        self._active = Gauge("cascade_alerts_active", "Active alerts by level (protective_action_failed included)",
                             ["level"], registry=registry)
        # Roll-up for dashboards: a cabinet shows its worst level (0 = none). One series per cabinet.
        self._cabinet_level = Gauge("cascade_cabinet_alert_level", "Worst active alert level of the cabinet",
                                    ["site", "cabinet"], registry=registry)
        self._cabinets_seen: set[tuple[str, str]] = set(cabinets)  # (site, cabinet): every one gets a gauge
        # One series per active alert (1 while active, removed on clear), so Prometheus and Grafana show
        # the engine's safety alerts too: the rule CascadeSafetyAlert mirrors them on Prometheus' alerts
        # page (routed to no receiver: the alert service already pages through Alertmanager).
        self._alert_active = Gauge("cascade_alert_active", "1 for every active safety alert of the engine",
                                   ["rule", "level", "site", "cabinet", "slot"], registry=registry)
        self._alert_series: set[tuple[str, str, str, str, str]] = set()
        # The on-call view: how many active alerts someone is on, and how long acknowledging took.
        self._acknowledged = Gauge("cascade_alerts_acknowledged", "Active alerts acknowledged, by level",
                                   ["level"], registry=registry)
        self._ack_seconds = Histogram("cascade_alert_ack_seconds",
                                      "Time from an alert's raise (at its current level) to its acknowledgement",
                                      ["level"], buckets=(30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400),
                                      registry=registry)
        for level in ("1", "2", "3"):  # every series from the start: increase() must see the first one
            self._acknowledged.labels(level)
            self._ack_seconds.labels(level)
        # A cabinet that stops reporting leaves every safety rule on it blind: after offline_after_s
        # without a reading it is a level-2 cabinet_offline alert, raised here (no Prometheus needed).
        # One limit for all, or per (site, cabinet) (the app passes two poll intervals plus the timeout).
        self._offline_limits: dict[tuple[str, str], float] = (
            {k: float(v) for k, v in offline_after_s.items()} if isinstance(offline_after_s, Mapping)
            else dict.fromkeys(self._cabinets_seen, float(offline_after_s)) if offline_after_s else {})
        self._offline_after_s = min(self._offline_limits.values(), default=None)
        self._last_seen: dict[tuple[str, str], float] = dict.fromkeys(self._cabinets_seen, clock())
        self._last_tick: dict[tuple[str, str], float] = dict.fromkeys(self._cabinets_seen, self._elapsed())
        self._waiting_tick: dict[AlertKey, float] = {}  # unacknowledged level-3 alert -> when first seen (steady)
        # Whether each cabinet was charging a battery at its last reading: a silent cabinet that was
        # (or whose state is unknown) is level 2, one that was idle level 1.
        self._charging: dict[tuple[str, str], bool] = {}
        self.offline: dict[AlertKey, float] = {}  # cabinet_offline alert -> since
        self._offline_level: dict[AlertKey, int] = {}
        self._offline_notes: dict[AlertKey, dict[str, str]] = {}
        # A level-3 alert nobody acknowledged within escalate_after_s also pages the next on-call:
        # a copy of it with escalation="1" (routed to critical-escalation), until ack or clear.
        self._escalate_after_s = escalate_after_s
        self.escalated: dict[AlertKey, dict[str, str]] = {}  # alert -> labels of its escalation copy
        self._offline_task: asyncio.Task[None] | None = None
        self._update_gauge()

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> AlertService:
        if self.pusher is not None:
            await self.pusher.__aenter__()
            # After a restart the store still holds active alerts; Alertmanager may have timed
            # them out meanwhile, so tell it again what is firing.
            for alert in self.store.active():
                # The current level's label set started at the last level change (updated_at), which
                # is the startsAt Alertmanager already holds for it: the same, so it stays one alert.
                self._fire(alert.key, alert.labels, alert.annotations, alert.updated_at)
        # Alerts the engine cleared at start-up because the catalogue no longer has their rule or
        # level: resolve them everywhere (Alertmanager, InfluxDB, gauges) instead of letting them linger.
        stale = list(getattr(self.engine, "startup_transitions", []))
        for t in stale:
            if t.kind == "clear":
                self._fired.setdefault(t.key, dict(t.labels))
        self.apply(stale)
        for failed in self.failed.values():  # failures carried over a restart: page again, keep retrying
            self._fire(failed.key, failed.labels, failed.annotations, failed.raised_at)
        self._running = True
        # An action may have been cut short by a crash or a restart (the alert was stored before
        # its write finished). Re-issuing a cut-off is harmless, forgetting one is not: repeat the
        # protective action of every active alert that carries one.
        for alert in self.store.active():
            if alert.protective_action is not None:
                restart = _restart_transition(alert, self._clock())
                action = self.actions.policy.action_for(restart)
                if action is not None:
                    log.warning("re-issuing %s for %s (active at level %d when Cascade started)",
                                action, alert.key, alert.level)
                    self._start_action(restart, action)
        self._retry_task = asyncio.create_task(self._retry_loop(), name="protective-action-retry")
        if self._offline_after_s or self._escalate_after_s:
            now, tick = self._clock(), self._elapsed()
            self._last_seen = dict.fromkeys(self._last_seen, now)  # the watch starts now, not at construction
            self._last_tick = dict.fromkeys(self._last_seen, tick)
            self._offline_task = asyncio.create_task(self._watch_loop(), name="offline-and-escalation-watch")
        if self._feed is not None:
            self._feed.subscribe(self.handle_reading)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._feed is not None:
            self._feed.unsubscribe(self.handle_reading)
        await self.stop_actions()
        if self.pusher is not None:
            await self.pusher.__aexit__(*exc)

    async def stop_actions(self, timeout_s: float = 10.0) -> None:
        """Stop retrying and let in-flight cabinet writes finish (a cut-off half-sent helps nobody).
        Safe to call twice; start_app calls it before the pipeline closes its connections."""
        self._running = False
        if self._offline_task is not None:
            self._offline_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._offline_task
            self._offline_task = None
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry_task
            self._retry_task = None
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- hot path ------------------------------------------------------------------------------

    async def handle_reading(self, reading: CabinetReading) -> None:
        """The reading subscriber: evaluate, then fan out. Awaits no I/O."""
        where = (reading.site, reading.cabinet_id)
        if where in self._offline_limits:  # watched for silence (cabinets; a vehicle's rate is its own rule)
            self._last_seen[where] = self._clock()
            self._last_tick[where] = self._elapsed()
            self._charging[where] = any(slot.battery_state == BatteryState.CHARGING
                                        or (slot.charge_current_a or 0) > 0.5 for slot in reading.slots)
        if self.offline:
            self._back_online(where)
        transitions = self.engine.evaluate(reading)
        if transitions:
            self.apply(transitions, reading.timestamp_ns)

    def apply(self, transitions: Iterable[Transition], timestamp_ns: int | None = None) -> None:
        """Fan out transitions the engine already stored (InfluxDB, metrics, Alertmanager, actions)."""
        ts = timestamp_ns if timestamp_ns is not None else time.time_ns()
        events: list[AlertEvent] = []
        for t in transitions:
            self._transitions.labels(t.kind, t.labels.get("level", str(t.to_level))).inc()
            # One log line per level change (a state change, not a repeated condition): level 2 and 3
            # at WARNING so an operator tailing the log sees them; summaries carry the value.
            log.log(logging.WARNING if t.to_level >= 2 else logging.INFO, "alert %s %s L%d->L%d: %s",
                    t.kind, t.key, t.from_level, t.to_level, t.annotations.get("summary", ""))
            events.append(_alert_event(t.rule, t.target.site, t.target.cabinet, t.target.slot,
                                       t.labels.get("severity", ""), t.to_level, t.from_level, t.kind, t.value,
                                       t.target.battery, t.annotations, ts))
            if t.kind == "clear":
                self._resolve(t.key, t.annotations)
                self._done.pop(t.key, None)
            else:
                self._fire(t.key, t.labels, t.annotations, t.at)
            action = self.actions.policy.action_for(t)
            if action is not None:
                self._start_action(t, action)
        self._submit(events)
        self._update_gauge()

    # -- Alertmanager ----------------------------------------------------------------------------

    def _fire(self, key: AlertKey, labels: dict[str, str], annotations: dict[str, str], at: float) -> None:
        if self.pusher is None:
            return
        old = self._fired.get(key)
        if old is not None and old != labels:
            self.pusher.resolve(old)  # escalation/de-escalation: the old level's alert ends now
            self.pusher.unsilence(old)  # an acknowledgement covered that level only: the new one pages
            self._end_escalation(key)  # the escalation copy was of the old level
        self._fired[key] = labels
        self.pusher.fire(labels, annotations, starts_at=at)

    def _resolve(self, key: AlertKey, annotations: dict[str, str]) -> None:
        labels = self._fired.pop(key, None)
        if self.pusher is not None and labels is not None:
            self.pusher.resolve(labels, annotations)
            self.pusher.unsilence(labels)  # a later raise of the same alert must page again
        self._end_escalation(key)

    # -- protective actions --------------------------------------------------------------------

    def _start_action(self, t: Transition, action: str) -> None:
        if self._done.get(t.key, 0) >= t.to_level:
            log.info("protective action %s for %s already taken at level %d; not repeated",
                     action, t.key, self._done[t.key])
            return
        self._done[t.key] = t.to_level
        battery = t.target.battery
        for command in self.actions.plan(t, action):
            self._spawn(self._run_command(command, battery))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name="protective-action")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_command(self, command: Command, battery: str | None) -> None:
        try:
            record = await self.actions.execute(command)
        except asyncio.CancelledError:
            # Stopped before the write finished (shutdown): keep it as failed, so the next start
            # pages and retries it instead of forgetting an energised slot.
            self._settle(command, _failed_record(command, "interrupted by shutdown before read-back"), battery)
            raise
        except Exception as err:  # noqa: BLE001 - never lose a protective action silently
            log.exception("protective action %s for %s failed unexpectedly", command.action, command.alert)
            record = _failed_record(command, f"unexpected {type(err).__name__}: {err}")
        self._settle(command, record, battery)

    def _settle(self, command: Command, record: ActionRecord, battery: str | None) -> None:
        key = AlertKey(ACTION_FAILED, command.site, command.cabinet, command.slot)
        existing = self.failed.get(key)
        if record.ok:
            if existing is not None:
                del self.failed[key]
                self._save_failed()
                self._resolve(key, {**existing.annotations, "diagnosis": self.engine.texts.tr(
                    "Resolved: {name}={value} now reads back {readback} (by {actor}).", name=command.name,
                    value=command.value, readback=record.readback, actor=record.actor)})
                self._submit([_alert_event(ACTION_FAILED, command.site, command.cabinet, command.slot, "critical",
                                          0, 3, "clear", None, battery, existing.annotations, time.time_ns())])
                self._update_gauge()
            return
        if record.result != "failed":
            return  # skipped by policy: recorded, nothing to retry
        if existing is not None:
            existing.attempts += 1
            existing.last_error = record.error
            self._save_failed()
            return
        labels = alert_labels(ACTION_FAILED, 3, command.site, command.cabinet, command.slot, battery,
                              protective_action=command.action)
        t = self.engine.texts
        where = place_text(t, (command.site, command.cabinet, command.slot))
        what = _action_name(t, command.action)
        annotations = {
            "summary": t.tr("L{level} {name}{reading} at {where}", level=3, reading="", where=where,
                            name=t.tr("protective action {action} FAILED", action=what)),
            "diagnosis": t.tr("{action} for {alert} ({actor}) could not set {name}={value}: {error}. The slot may "
                              "still be energised.", action=what, alert=command.alert, actor=command.actor,
                              name=command.name, value=command.value, error=record.error or t.tr("no read-back")),
            "action": t.tr("Cut {where} off by hand now (isolator or cabinet panel; a pack behind a BLE gateway: "
                           "unplug its charger); check the device's control link (a cabinet's Modbus, a gateway's "
                           "MQTT). Cascade retries every {retry} s.", where=where,
                           retry=f"{self.actions.policy.retry_s:g}"),
        }
        failed = FailedAction(command, labels, annotations, record.at, 1, record.error)
        self.failed[key] = failed
        self._save_failed()
        self._fire(key, labels, annotations, record.at)
        self._submit([_alert_event(ACTION_FAILED, command.site, command.cabinet, command.slot, "critical", 3, 0,
                                  "raise", None, battery, annotations, time.time_ns())])
        self._update_gauge()

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.actions.policy.retry_s)
            for failed in list(self.failed.values()):
                if not self._running:
                    return
                try:
                    record = await self.actions.execute(failed.command)
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # noqa: BLE001 - one bad retry must not end all retries
                    log.exception("retrying %s for %s failed unexpectedly", failed.command.action,
                                  failed.command.alert)
                    record = _failed_record(failed.command, f"unexpected {type(err).__name__}: {err}")
                self._settle(failed.command, record, failed.labels.get("battery"))

    # -- failed-action persistence ----------------------------------------------------------------

    def _save_failed(self) -> None:
        if self._failed_path is None:
            return
        doc = [{"command": dataclasses.asdict(f.command), "labels": f.labels, "annotations": f.annotations,
                "raised_at": f.raised_at, "attempts": f.attempts, "last_error": f.last_error,
                "ack": None if f.ack is None else dataclasses.asdict(f.ack)} for f in self.failed.values()]
        try:
            self._failed_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._failed_path.with_name(self._failed_path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps(doc, indent=1))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._failed_path)  # atomic: a crash leaves the old or the new file
        except OSError as err:
            log.error("cannot save failed protective actions to %s: %s", self._failed_path, err)

    def _load_failed(self) -> dict[AlertKey, FailedAction]:
        if self._failed_path is None or not self._failed_path.exists():
            return {}
        try:
            doc = json.loads(self._failed_path.read_text(encoding="utf-8"))
            if not isinstance(doc, list):
                raise ValueError(f"expected a list, got {type(doc).__name__}")
            out: dict[AlertKey, FailedAction] = {}
            for item in doc:
                ack = item.get("ack")
                failed = FailedAction(Command(**item["command"]), dict(item["labels"]), dict(item["annotations"]),
                                      float(item["raised_at"]), int(item["attempts"]), str(item["last_error"]),
                                      None if ack is None else Ack(**ack))
                out[failed.key] = failed
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            aside = self._failed_path.with_name(f"{self._failed_path.name}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(self._failed_path, aside)  # kept for inspection, not overwritten
            log.error("cannot read failed protective actions from %s (%s): moved to %s; starting without them",
                      self._failed_path, err, aside)
            return {}
        if out:
            log.warning("%d failed protective action(s) carried over a restart: retrying", len(out))
        return out

    # -- queries used by the HTTP API ------------------------------------------------------------

    def active_alerts(self) -> list[dict[str, Any]]:
        """Active alerts, worst first: the engine's plus failed protective actions."""
        out = [_alert_dict(a) for a in self.store.active()]
        out += [f.to_dict() for f in self.failed.values()]
        out += [{"key": str(key), "level": self._offline_level.get(key, 2), "value": self._clock() - since, "raised_at": since, "updated_at": since,
                 "battery": None, "protective_action": None, "labels": self._fired.get(key, {}),
                 "annotations": self._offline_notes.get(key, {}), "acknowledged": False, "ack": None,
                 "source": "service"}
                for key, since in self.offline.items()]
        out.sort(key=lambda a: (-a["level"], a["key"]))
        return out

    def acknowledge(self, key: str, who: str, comment: str = "") -> dict[str, Any]:
        """Acknowledge an engine alert or a failed action; KeyError if not active, ValueError if bad."""
        parsed = AlertKey.parse(key)
        failed = self.failed.get(parsed)
        if failed is None:
            before = self.store.get(parsed)
            first = None if before is None or before.ack is not None else (before.level, before.updated_at)
            result = _alert_dict(self.store.acknowledge(parsed, who, comment))
            if first is not None:
                self._ack_seconds.labels(str(first[0])).observe(max(0.0, self._clock() - first[1]))
        else:
            if failed.ack is None:
                self._ack_seconds.labels("3").observe(max(0.0, self._clock() - failed.raised_at))
            if not isinstance(who, str) or not who.strip():
                raise ValueError("acknowledge needs who: the person acknowledging")
            failed.ack = Ack(who.strip(), comment, self._clock(), 3)
            self._save_failed()
            result = failed.to_dict()
        # Acknowledged means someone is on it: stop the repeat calls and messages for this alert at
        # this level (an escalation is a new label set and pages again; a clear ends the silence).
        labels = self._fired.get(parsed)
        if self.pusher is not None and labels is not None:
            for fired in (labels, self.escalated.get(parsed)):  # the escalation copy too: someone is on it
                if fired is not None:
                    self.pusher.silence(fired, who=str(who).strip(), comment=comment,
                                        until=self._clock() + ACK_SILENCE_S, starts_in=self._ack_silence_delay_s)
        self._update_gauge()
        return result

    # -- remote control (P-5.1.2.1-5) ---------------------------------------------------------------

    async def control(self, cabinet: str, name: str, *, slot: int | None, who: str, reason: str,
                      value: int | None = None, confirm: bool = False) -> ActionRecord:
        """Send a person's remote-control command (:data:`~alerting.actions.CONTROLS`) to a cabinet: written,
        read back, logged, stored as a ``command`` point and appended to the control audit. Raises
        :class:`ControlRefused` (nothing sent) for a request that is invalid, unconfirmed or unsafe now, and
        :class:`~alerting.actions.ForbiddenCommand` for anything outside the allow-list. A device that
        refuses or reads back otherwise gives a record with ``result == "failed"``."""
        spec = CONTROLS.get(name)
        if spec is None:
            raise ControlRefused(400, N_("unknown command '{name}'; use one of {names} (fire suppression is never "
                                         "commandable)"), code="unknown_command",
                                 values={"name": name, "names": ", ".join(sorted(CONTROLS))})
        check_command(spec.command, CONTROL_COMMANDS)
        commander = self.actions.commander
        count = None if commander is None else commander.slot_count(cabinet)
        site = next((s for s, c in sorted(self._cabinets_seen) if c == cabinet), None)
        if count is None or site is None:
            raise ControlRefused(404, N_("no cabinet '{cabinet}' in this collector; list cabinets with GET "
                                         "/api/alerts/rollup (cascade alerts rollup) or check the fleet file"),
                                 code="unknown_cabinet", values={"cabinet": cabinet})
        if spec.slot and slot is None:
            raise ControlRefused(400, N_("{name} needs a slot: send \"slot\": 1..{count} (cascade alerts command: "
                                         "--slot N)"), code="slot_missing", values={"name": name, "count": count})
        if slot is not None and not 1 <= slot <= count:
            raise ControlRefused(400, N_("slot {slot} is not a slot of {cabinet} (1..{count})"), code="bad_slot",
                                 values={"slot": slot, "cabinet": cabinet, "count": count})
        if spec.value is None:
            low, high = spec.limits
            if value is None:
                raise ControlRefused(400, N_("{name} needs \"value\": an integer {low}..{high} (raw register units "
                                             "of the cabinet's profile; cascade alerts command: --value N)"),
                                     code="value_missing", values={"name": name, "low": low, "high": high})
            if not low <= value <= high:
                raise ControlRefused(400, N_("{name}: value {value} is out of range; send an integer {low}..{high} "
                                             "(raw register units of the cabinet's profile)"),
                                     code="value_out_of_range",
                                     values={"name": name, "value": value, "low": low, "high": high})
        elif value is not None and value != spec.value:
            raise ControlRefused(400, N_("{name} writes {value}; leave \"value\" out"), code="value_not_allowed",
                                 values={"name": name, "value": spec.value})
        if spec.confirm and not confirm:
            raise ControlRefused(400, N_("{name} changes how the cabinet charges: send \"confirm\": true to go "
                                         "ahead (cascade alerts command: add --confirm)"), code="confirm_needed",
                                 values={"name": name})
        if name == "start_charging":
            blocking = self._blocking_alerts(site, cabinet, slot)
            if blocking:
                raise ControlRefused(409, N_("slot {slot} of {cabinet} is not re-energised while {alerts} is active; "
                                             "clear the cause first (docs/security.md)"), code="unsafe_now",
                                     values={"slot": slot, "cabinet": cabinet, "alerts": ", ".join(blocking)})
        command = Command(site, cabinet, slot, spec.command, spec.value if spec.value is not None else int(value or 0),
                          name, "", 0, "", by=who, reason=reason)
        record = await self.actions.execute(command)
        self._append_control_audit(record)
        return record

    def _blocking_alerts(self, site: str, cabinet: str, slot: int | None) -> list[str]:
        """Active level-2/3 alerts on the slot or its cabinet, failed cut-offs, a silent cabinet."""
        def here(key: AlertKey) -> bool:
            return key.site == site and key.cabinet == cabinet and key.slot in (None, slot)
        found = [str(a.key) for a in self.store.active() if a.level >= 2 and here(a.key)]
        found += [str(k) for k in self.failed if here(k)]
        found += [str(k) for k in self.offline if here(k)]
        return found

    def _append_control_audit(self, record: ActionRecord) -> None:
        if self._control_audit_path is None:
            return
        try:
            self._control_audit_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._control_audit_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            log.error("remote command by %s not written to the audit %s: %s", record.actor,
                      self._control_audit_path, err)

    # -- silent cabinets --------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        period = min(10.0, *(x / 3 for x in (self._offline_after_s, self._escalate_after_s) if x))
        period = max(period, 1.0)
        while True:
            await asyncio.sleep(period)
            self.check_offline()
            self.check_escalation()

    def check_escalation(self) -> None:
        """Page the next on-call for every level-3 alert left unacknowledged for ``escalate_after_s``."""
        if not self._escalate_after_s or self.pusher is None:
            return
        now, tick = self._clock(), self._elapsed()
        waiting = [(a.key, a.updated_at, a.annotations) for a in self.store.active() if a.level == 3 and a.ack is None]
        waiting += [(f.key, f.raised_at, f.annotations) for f in self.failed.values() if f.ack is None]
        # How long each has waited, on the steady clock from when this watch first saw it (the wall-clock
        # age, never negative, for what it had waited before: an alert restored at start-up).
        ticks = {key: self._waiting_tick.get(key, tick - max(0.0, now - since)) for key, since, _ in waiting}
        self._waiting_tick = ticks
        for key, _since, notes_before in waiting:
            labels = self._fired.get(key)
            waited = tick - ticks[key]
            if key in self.escalated or labels is None or waited < self._escalate_after_s:
                continue
            copy = {**labels, "escalation": "1"}
            self.escalated[key] = copy
            minutes = waited / 60
            notes = {**notes_before, "summary": self.engine.texts.tr(
                "ESCALATED, unacknowledged for {minutes} min: {summary}", minutes=f"{minutes:.0f}",
                summary=notes_before.get("summary", key.rule))}
            log.warning("alert %s at level 3 unacknowledged for %.0f min: paging the next on-call", key, minutes)
            self.pusher.fire(copy, notes, starts_at=now)

    def _end_escalation(self, key: AlertKey) -> None:
        copy = self.escalated.pop(key, None)
        if copy is not None and self.pusher is not None:
            self.pusher.resolve(copy)
            self.pusher.unsilence(copy)

    def check_offline(self) -> None:
        """Raise ``cabinet_offline`` for every cabinet silent longer than its limit: level 2 when it was
        charging at its last reading (or never reported), level 1 when it was idle."""
        if not self._offline_limits:
            return
        now, tick = self._clock(), self._elapsed()
        for (site, cabinet), seen in self._last_seen.items():
            key = AlertKey(CABINET_OFFLINE, site, cabinet, None)
            limit = self._offline_limits.get((site, cabinet))
            silent = tick - self._last_tick.get((site, cabinet), tick)
            if limit is None or silent < limit or key in self.offline:
                continue
            self.offline[key] = seen
            level = self._offline_level[key] = 2 if self._charging.get((site, cabinet), True) else 1
            labels = alert_labels(CABINET_OFFLINE, level, site, cabinet)
            t = self.engine.texts
            seconds = f"{silent:.0f}"
            annotations = {
                "summary": t.tr("L{level} {name}{reading} at {where}", level=level, reading="",
                                where=place_text(t, (site, cabinet, None)),
                                name=t.tr("cabinet silent for {seconds} s, its safety sensors unwatched",
                                          seconds=seconds)),
                "diagnosis": (t.tr("No reading from {cabinet} for {seconds} s (limit {limit} s): no rule can see its "
                                   "temperatures, gases or protections while it is silent, and it was charging.",
                                   cabinet=cabinet, seconds=seconds, limit=f"{limit:g}") if level == 2 else
                              t.tr("No reading from {cabinet} for {seconds} s (limit {limit} s): no rule can see its "
                                   "temperatures, gases or protections while it is silent.",
                                   cabinet=cabinet, seconds=seconds, limit=f"{limit:g}")),
                "action": t.tr("Check the cabinet's power and network link; send someone if it stays silent."),
            }
            self._offline_notes[key] = annotations
            log.warning("cabinet %s/%s silent for %.0f s: cabinet_offline raised", site, cabinet, silent)
            self._fire(key, labels, annotations, now)
            self._submit([_alert_event(CABINET_OFFLINE, site, cabinet, None, SEVERITY[level], level, 0, "raise", silent,
                                       None, annotations, int(now * 1e9))])
            self._transitions.labels("raise", str(level)).inc()
        self._update_gauge()

    def _back_online(self, where: tuple[str, str]) -> None:
        key = AlertKey(CABINET_OFFLINE, where[0], where[1], None)
        if self.offline.pop(key, None) is None:
            return
        level = self._offline_level.pop(key, 2)
        self._offline_notes.pop(key, None)
        t = self.engine.texts
        annotations = {"summary": t.tr("Cabinet {where} reports again", where=place_text(t, (where[0], where[1], None))),
                       "diagnosis": t.tr("Readings arrive again; its safety rules see it again."),
                       "action": t.tr("None.")}
        log.info("cabinet %s/%s reports again: cabinet_offline cleared", *where)
        self._resolve(key, annotations)
        self._submit([_alert_event(CABINET_OFFLINE, where[0], where[1], None, SEVERITY[level], 0, level, "clear", None,
                                   None, annotations, time.time_ns())])
        self._transitions.labels("clear", str(level)).inc()
        self._update_gauge()

    def _update_gauge(self) -> None:
        counts = {1: 0, 2: 0, 3: len(self.failed)}
        for level in self._offline_level.values():
            counts[level] += 1
        worst: dict[tuple[str, str], int] = {}
        series: set[tuple[str, str, str, str, str]] = set()
        for alert in self.store.active():
            counts[alert.level] = counts.get(alert.level, 0) + 1
            where = (alert.key.site, alert.key.cabinet)
            worst[where] = max(worst.get(where, 0), alert.level)
            series.add(_series(alert.key, alert.level))
        for key, level in self._offline_level.items():
            worst[(key.site, key.cabinet)] = max(worst.get((key.site, key.cabinet), 0), level)
            series.add(_series(key, level))
        for key in self.failed:
            worst[(key.site, key.cabinet)] = 3
            series.add(_series(key, 3))
        for gone in self._alert_series - series:
            self._alert_active.remove(*gone)
        for labels in series - self._alert_series:
            self._alert_active.labels(*labels).set(1)
        self._alert_series = series
        acked = {1: 0, 2: 0, 3: sum(1 for f in self.failed.values() if f.ack is not None)}
        for alert in self.store.active():
            if alert.ack is not None:
                acked[alert.level] = acked.get(alert.level, 0) + 1
        for level in (1, 2, 3):
            self._active.labels(str(level)).set(counts[level])
            self._acknowledged.labels(str(level)).set(acked.get(level, 0))
        self._cabinets_seen |= worst.keys()
        for where in self._cabinets_seen:
            self._cabinet_level.labels(*where).set(worst.get(where, 0))

    def _submit(self, events: list[AlertEvent]) -> None:
        if self._emit is None or not events:
            return
        try:
            self._emit(events)
        except Exception as err:  # noqa: BLE001 - storing history must never stop the fan-out
            log.warning("alert events not stored: %s", err)


def _alert_event(rule: str, site: str, cabinet: str, slot: int | None, severity: str, level: int, from_level: int,
                 kind: str, value: float | None, battery: str | None, annotations: dict[str, str],
                 timestamp_ns: int) -> AlertEvent:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        value = None
    return AlertEvent(rule, site, cabinet, slot, severity, level, from_level, kind, value, battery,
                      annotations.get("summary"), annotations.get("diagnosis"), annotations.get("action"),
                      timestamp_ns, category_of(rule))


def _ack_dict(ack: Ack) -> dict[str, Any]:
    return {"who": ack.who, "comment": ack.comment, "at": ack.at, "level": ack.level}


def _alert_dict(alert: Alert) -> dict[str, Any]:
    return {
        "key": str(alert.key), "level": alert.level, "value": alert.value, "raised_at": alert.raised_at,
        "updated_at": alert.updated_at, "battery": alert.battery, "protective_action": alert.protective_action,
        "labels": alert.labels, "annotations": alert.annotations, "acknowledged": alert.ack is not None,
        "ack": None if alert.ack is None else _ack_dict(alert.ack), "source": "engine",
    }


def _restart_transition(alert: Alert, now: float) -> Transition:
    """The raise an active alert stands for, to repeat its protective action after a restart."""
    key = alert.key
    return Transition(rule=key.rule, target=Target(key.site, key.cabinet, key.slot, alert.battery), from_level=0,
                      to_level=alert.level, kind="raise", value=alert.value, at=now,
                      diagnosis=alert.annotations.get("diagnosis", ""), action=alert.annotations.get("action", ""),
                      protective_action=alert.protective_action, labels=dict(alert.labels),
                      annotations=dict(alert.annotations))


def _failed_record(command: Command, error: str) -> ActionRecord:
    now = time.time()
    record = ActionRecord(now, now, command.actor, command.alert, command.action, command.name, command.site,
                          command.cabinet, command.slot, command.value, "failed")
    record.error = error
    return record


def _series(key: AlertKey, level: int) -> tuple[str, str, str, str, str]:
    """The ``cascade_alert_active`` labels of an alert: rule, level, site, cabinet, slot ("" for none)."""
    return (key.rule, str(level), key.site, key.cabinet, "" if key.slot is None else str(key.slot))


_ACTION_NAMES = {"stop_charging": N_("stop charging"), "slot_cutoff": N_("slot cut-off"),
                 "cabinet_cutoff": N_("cabinet cut-off")}


def _action_name(texts: AlertTexts, action: str) -> str:
    """A protective action as people say it (``停止充电``); its id when it has no name."""
    name = _ACTION_NAMES.get(action)
    return texts.tr(name) if name is not None else action
