"""Remote vehicle commands (V-5.4, D-5.1.5.1): power on/off, motor lock/unlock, arm/disarm.

    async with VehicleCommandService(mqtt_settings, devices, audit_path="var/vehicle-commands.jsonl",
                                     emit=pipeline.submit, pusher=alerts.pusher) as commands:
        record = commands.issue("V000001", "motor_lock", who="user:alice")
        record = await commands.wait(record.id, timeout_s=30)     # ok | failed | rejected | expired

Every command gets an id and an expiry and goes out QoS 1 on ``cascade/v1/<fleet>/<vehicle>/cmd``.
MQTT devices receive it there; the ingest workers hold it for HTTPS devices, which poll
``GET /v1/commands`` (``collectors.vehicles.commands.DownlinkBridge``). The device's acknowledgement
comes back on ``.../ack`` (an HTTPS device posts it, its worker publishes it), with the device's state
after the command: the command counts as done only when that read-back shows what it asked for.
Unacknowledged, it is sent again every ``retry_s`` up to ``max_attempts`` times; still unacknowledged at
its expiry it is an alert (``vehicle_command_unacknowledged``, one per vehicle), held by the alert service
like every warning (listed in ``GET /api/alerts``, acknowledged with ``POST /api/alerts/{key}/ack``,
pushed to Alertmanager). It clears when the vehicle acknowledges any command again, when a report shows
the state the command asked for (power, arming), or ``resolve_after_s`` after the vehicle reports again.
Commands go to vehicles only: a device that reported as a BLE gateway is refused (``not_a_vehicle``).

Who, what, when and the result (with the read-back) are appended to an audit file (JSON lines), stored
as a ``command`` point (InfluxDB, the same measurement as cabinet cut-offs) and counted in Prometheus.
Commands come from the CLI and the HTTP API (:func:`add_command_routes`) as ``user:<name>`` and from
the warning engine as ``rule:<rule>@level<n>``, for a rule that names a ``vehicle_command``
(:func:`forward_vehicle_commands`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from alerting.i18n import DEFAULT_LANGUAGE, LANGUAGES, N_, AlertTexts, fill
from alerting.state import SEVERITY, Target, Transition
from alerting.vehicle_commands import (
    COMMAND_UNACKNOWLEDGED,
    STATE_NAMES,
    YES_NO,
    command_alert_labels,
    command_alert_texts,
    command_cleared_texts,
)
from collectors.vehicles.commands import (
    COMMANDS,
    EXPECTED_STATE,
    Ack,
    Command,
    CommandWireError,
    decode_ack,
    encode,
    exchange,
    keep_connected,
    mqtt_client,
)
from collectors.vehicles.mqtt import TOPIC_ROOT, topic
from collectors.vehicles.settings import MqttSettings
from collectors.vehicles.trust import DeviceRegistry
from core.auth import READ, VEHICLE, VEHICLE_POWER
from core.errors import CascadeError
from core.events import AlertEvent, CommandResult
from core.model import BLE_GATEWAY_MODEL, VEHICLE_MODEL, VehicleState
from core.ports import EventHandler
from core.tasks import cancel_and_wait

__all__ = ["CommandMetrics", "CommandRecord", "CommandRefused", "VehicleCommandService", "add_command_routes",
           "forward_vehicle_commands", "redact_record", "vehicle_commands_for"]

log = logging.getLogger("cascade.commands")

DONE = ("ok", "failed", "rejected", "expired")
POWER_COMMANDS = ("power_on", "power_off")
"""Commands that need :data:`core.auth.VEHICLE_POWER` (engineer, admin); the others need
:data:`core.auth.VEHICLE` (operator too): docs/security.md."""


MOVING_KMH = 3.0  # wheel_motion_armed's threshold: at or above it a vehicle is moving
MOVING_FRESH_S = 180.0  # a report older than this says nothing about now


class CommandRefused(CascadeError):
    """A command that is never sent: ``reason`` (a stable code) is ``unknown_vehicle``, ``not_a_vehicle``,
    ``unknown_command``, ``vehicle_moving`` or ``bad_request``.

    ``problem`` and ``fix`` are English texts of the catalogue with ``{placeholders}`` filled from ``values``:
    ``str()`` is the English message (logs, the API's ``detail``), :meth:`text` the operator's language.

        >>> CommandRefused(N_("unknown command {command}"), fix=N_("use one of {commands}"),
        ...                command="'x'", commands="arm").text(AlertTexts("en"))
        "unknown command 'x'. Fix: use one of arm"
    """

    def __init__(self, problem: str, *, fix: str, reason: str = "bad_request", **values: Any) -> None:
        super().__init__(fill(problem, problem, values), fix=fill(fix, fix, values))
        self.reason = reason
        self.msgids = (problem, fix)
        self.values = values

    def text(self, texts: AlertTexts) -> str:
        """The refusal in ``texts``' language: what is wrong, then what to do."""
        problem, fix = self.msgids
        return texts.tr("{problem}. Fix: {fix}", problem=texts.tr(problem, **self.values),
                        fix=texts.tr(fix, **self.values))


class _Pusher(Protocol):
    """What the service needs of :class:`alerting.alertmanager.AlertmanagerPusher`."""

    def fire(self, labels: Mapping[str, str], annotations: Mapping[str, str], *,
             starts_at: float | None = None) -> None: ...

    def resolve(self, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None) -> None: ...


@dataclass(slots=True)
class CommandRecord:
    """One command, from issue to result. ``status``: pending, then ok, failed, rejected or expired."""

    id: str
    vehicle: str
    fleet: str
    command: str
    who: str
    reason: str
    issued_at: float
    expires_at: float
    level: int = 0  # the level of the rule that asked (0: a person)
    attempts: int = 0
    status: str = "pending"
    completed_at: float | None = None
    state: dict[str, bool] | None = None  # the device's state after the command (its read-back)
    detail: str = ""  # English (logs, audit, the API's ``detail``); the device's own words when it gave some
    _sent_at: float = field(default=0.0, repr=False)
    # Cascade's own detail as a message id and its values: the API's ``detail_text`` in the caller's language.
    _detail_id: str = field(default="", repr=False)
    _detail_values: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        return self.status in DONE

    def to_dict(self, texts: AlertTexts | None = None) -> dict[str, Any]:
        """The record as the API gives it; with ``texts``, also ``detail_text``: the detail in that language
        (a device's own words stay as it sent them)."""
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        if texts is not None:
            out["detail_text"] = self._detail_in(texts) if self._detail_id else self.detail
        return out

    def set_detail(self, msgid: str, **values: Any) -> None:
        """Cascade's own detail: English in ``detail``, the message kept for ``detail_text``."""
        self._detail_id, self._detail_values = msgid, values
        self.detail = self._detail_in(_TEXTS["en"])

    def _detail_in(self, texts: AlertTexts) -> str:
        """The detail in ``texts``' language: a state key by its name, a read-back as yes or no."""
        values = {k: texts.tr(STATE_NAMES[v]) if k == "key" and v in STATE_NAMES
                  else texts.tr(YES_NO[v]) if isinstance(v, bool) else v for k, v in self._detail_values.items()}
        return texts.tr(self._detail_id, **values)

    def wire(self) -> Command:
        return Command(id=self.id, vehicle=self.vehicle, command=self.command,  # type: ignore[arg-type]
                       issued_ms=int(self.issued_at * 1000), expires_ms=int(self.expires_at * 1000),
                       attempt=self.attempts)


class CommandMetrics:
    """The ``cascade_vehicle_command*`` series on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.commands = Counter("cascade_vehicle_commands_total",
                                "Vehicle commands by outcome: sent (issued), acked (done, read back), failed (the "
                                "device answered failed, rejected, or read back another state), expired",
                                ["command", "outcome"], registry=registry)
        self.publishes = Counter("cascade_vehicle_command_publishes_total",
                                 "Vehicle command publishes, first sends and retries", ["command"], registry=registry)
        self.pending = Gauge("cascade_vehicle_commands_pending", "Vehicle commands waiting for an acknowledgement",
                             registry=registry)
        for command in COMMANDS:  # every series from the start (rates, increase())
            self.publishes.labels(command)
            for outcome in ("sent", "acked", "failed", "expired"):
                self.commands.labels(command, outcome)


class VehicleCommandService:
    """Issues vehicle commands and follows each to its acknowledgement or expiry (module docstring).

    ``emit`` stores the ``command`` points and the alert events (the pipeline's sink); ``pusher`` is
    the alert service's Alertmanager pusher (None: the expiry alert is logged and stored only).
    """

    def __init__(self, mqtt: MqttSettings, devices: DeviceRegistry, *, audit_path: str | Path | None = None,
                 emit: EventHandler | None = None, pusher: _Pusher | None = None,
                 language: str = DEFAULT_LANGUAGE, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time, expiry_s: float = 120.0, retry_s: float = 20.0,
                 max_attempts: int = 3, client_id: str = "cascade-commands", history: int = 1000,
                 alerts: Any = None, resolve_after_s: float = 600.0) -> None:
        if not (expiry_s > 0 and retry_s > 0 and max_attempts >= 1):
            raise ValueError("expiry_s and retry_s must be > 0 and max_attempts >= 1")
        self.mqtt = mqtt
        self.devices = devices
        self.audit_path = Path(audit_path) if audit_path is not None else None
        self._emit = emit
        self.pusher = pusher
        self.texts = AlertTexts(language)
        self.clock = clock
        self.expiry_s, self.retry_s, self.max_attempts = expiry_s, retry_s, max_attempts
        self.client_id = client_id
        self.records: OrderedDict[str, CommandRecord] = OrderedDict()
        self.history = history
        # The alert service (``store`` and ``apply``): the unacknowledged-command alert is one of its alerts.
        # None (tests): pushed through ``pusher`` only.
        self.alert_service = alerts
        self.resolve_after_s = resolve_after_s
        self.alerts: dict[str, _CommandAlert] = {}  # vehicle -> its unacknowledged-command alert
        self.gateways: set[str] = set()  # devices that reported as BLE gateways: never sent a vehicle command
        # Vehicles whose last report showed them moving, with when: a person's `arm` is refused while one rides
        # (arming a ridden vehicle would raise wheel_motion_armed and lock its motor on the road).
        self.moving: dict[str, float] = {}
        self.connected = asyncio.Event()
        self.metrics = CommandMetrics(registry if registry is not None else CollectorRegistry())
        self._outbox: asyncio.Queue[CommandRecord] = asyncio.Queue()
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> VehicleCommandService:
        self.adopt_alerts()
        self._tasks = [asyncio.create_task(self._run(), name="vehicle-commands-mqtt"),
                       asyncio.create_task(self._watch(), name="vehicle-commands-watch")]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._tasks)

    # -- issuing -----------------------------------------------------------------------------------

    def issue(self, vehicle: str, command: str, *, who: str, reason: str = "", expiry_s: float | None = None,
              level: int = 0) -> CommandRecord:
        """Send ``command`` to ``vehicle`` on behalf of ``who`` (``user:alice``, ``rule:theft@level3``);
        returns its record at once (pending). :class:`CommandRefused` when it cannot be sent at all."""
        if command not in COMMANDS:
            raise CommandRefused(N_("unknown command {command}"), fix=N_("use one of {commands}"),
                                 reason="unknown_command", command=repr(command[:40]), commands=", ".join(COMMANDS))
        device = self.devices.get(vehicle)
        if device is None:
            raise CommandRefused(N_("vehicle {vehicle} is not a provisioned device"),
                                 fix=N_("check the vehicle id (devices.json, `cascade devices provision`)"),
                                 reason="unknown_vehicle", vehicle=repr(vehicle[:70]))
        # A gateway is known from the registry (provisioned as one) or, for an older devices.json, from its
        # first report: refused either way, never sent a vehicle command.
        if device.kind == "gateway" or vehicle in self.gateways:
            raise CommandRefused(N_("device {vehicle} is a BLE gateway, not a vehicle"),
                                 fix=N_("vehicle commands go to vehicles only; a gateway's packs are switched by the "
                                        "protective actions (docs/ble-gateway.md)"), reason="not_a_vehicle",
                                 vehicle=repr(vehicle[:70]))
        if not who or not who.strip():
            raise CommandRefused(N_("no one named"), fix=N_("say who asks (--who NAME, or a token): it is recorded"))
        now = self.clock()
        moving_at = self.moving.get(vehicle)
        if command == "arm" and moving_at is not None and now - moving_at <= MOVING_FRESH_S:
            raise CommandRefused(N_("vehicle {vehicle} is moving (its last report)"),
                                 fix=N_("arm a parked vehicle: armed, wheel motion raises the theft alarm and locks "
                                        "the motor, which on the road would stop the rider"),
                                 reason="vehicle_moving", vehicle=repr(vehicle[:70]))
        expiry = self.expiry_s if expiry_s is None else expiry_s
        if not 0 < expiry <= 86400:
            raise CommandRefused(N_("expiry {expiry} s is out of range"), fix=N_("use 1..86400 seconds"),
                                 expiry=repr(expiry))
        record = CommandRecord(id=f"c-{secrets.token_hex(8)}", vehicle=vehicle, fleet=device.fleet, command=command,
                               who=who.strip()[:120], reason=reason[:500], issued_at=now, expires_at=now + expiry,
                               level=level)
        self.records[record.id] = record
        while len(self.records) > self.history:  # forget the oldest finished ones
            oldest = next((r for r in self.records.values() if r.done), None)
            if oldest is None:
                break
            del self.records[oldest.id]
        self.metrics.commands.labels(command, "sent").inc()
        self._audit(record, "sent")
        log.info("vehicle command %s %s for %s/%s by %s (expires in %.0f s)", record.id, command, device.fleet,
                 vehicle, record.who, expiry)
        self._send(record)
        self._update_gauge()
        return record

    def get(self, command_id: str) -> CommandRecord | None:
        return self.records.get(command_id)

    def recent(self, vehicle: str | None = None, limit: int = 100) -> list[CommandRecord]:
        """Recent commands, newest last (of one vehicle when given)."""
        found = [r for r in self.records.values() if vehicle is None or r.vehicle == vehicle]
        return found[-limit:]

    async def wait(self, command_id: str, timeout_s: float) -> CommandRecord:
        """The record once it is done, or as it stands after ``timeout_s``; KeyError for an unknown id."""
        record = self.records[command_id]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                async with self._changed:
                    await self._changed.wait_for(lambda: record.done)
        return record

    def on_transition(self, transition: Any) -> CommandRecord | None:
        """The engine's side: a raise or escalation of a rule with a ``vehicle_command`` commands the
        vehicle (the alert's ``cabinet``), unless the same command to it is already pending."""
        name = getattr(transition, "vehicle_command", None)
        if not name or transition.kind not in ("raise", "escalate"):
            return None
        vehicle = transition.target.cabinet
        if any(r.vehicle == vehicle and r.command == name and not r.done for r in self.records.values()):
            return None
        who = f"rule:{transition.rule}@level{transition.to_level}"
        try:
            return self.issue(vehicle, name, who=who, reason=transition.annotations.get("summary", ""),
                              level=transition.to_level)
        except CommandRefused as err:
            log.error("%s asked for %s on %s: not sent: %s", who, name, vehicle, err)
            return None

    # -- acknowledgements ------------------------------------------------------------------------

    def handle_ack(self, vehicle: str, ack: Ack) -> CommandRecord | None:
        """An acknowledgement that arrived on ``vehicle``'s ack topic (the broker vouches for the
        sender). Finishes its command: ok only when the device's read-back shows the state asked for."""
        record = self.records.get(ack.id)
        if record is None or ack.vehicle != vehicle or record.vehicle != vehicle:
            log.info("acknowledgement %s from %s matches no pending command of it; ignored", ack.id[:40], vehicle)
            return None
        # The vehicle answers a command of ours again (any command, any result): it is reachable and its state
        # is read back, so an earlier unacknowledged command's alert ends.
        self._clear_alert(vehicle, record)
        if record.done:
            return record  # a repeated acknowledgement (a retry answered twice)
        state = None if ack.state is None else {k: v for k, v in (("power", ack.state.power),
                                                                  ("locked", ack.state.locked),
                                                                  ("armed", ack.state.armed)) if v is not None}
        record.state = state
        key, wanted = EXPECTED_STATE[record.command]
        if ack.result != "ok":
            status = ack.result
            if ack.detail:
                record.detail = ack.detail
            elif ack.result == "rejected":
                record.set_detail(N_("the vehicle refused the command"))
            elif ack.result == "failed":
                record.set_detail(N_("the vehicle could not carry the command out"))
            else:
                record.set_detail(N_("the vehicle answered {result}"), result=ack.result)
        elif state is None or state.get(key) is None:
            status = "failed"
            record.set_detail(N_("acknowledged without a read-back of {key}"), key=key)
        elif state[key] != wanted:
            status = "failed"
            record.set_detail(N_("acknowledged, but {key} reads back {value} instead of {wanted}"), key=key,
                              value=state[key], wanted=wanted)
        else:
            status = "ok"
            record.detail = ack.detail or ""
        self._finish(record, status, record.detail)
        return record

    # -- internals ------------------------------------------------------------------------------

    def _send(self, record: CommandRecord) -> None:
        record.attempts += 1
        record._sent_at = self.clock()
        self.metrics.publishes.labels(record.command).inc()
        if record.attempts > 1:
            self._audit(record, "retry")
        self._outbox.put_nowait(record)

    def _finish(self, record: CommandRecord, status: str, detail: str) -> None:
        now = self.clock()
        record.status, record.detail, record.completed_at = status, detail, now
        outcome = {"ok": "acked", "expired": "expired"}.get(status, "failed")
        self.metrics.commands.labels(record.command, outcome).inc()
        self._audit(record, status)
        key, wanted = EXPECTED_STATE[record.command]
        readback = None if record.state is None else record.state.get(key)
        self._store([CommandResult(cabinet_id=record.vehicle, command=record.command, slot=None, value=wanted,
                                   actor=_actor(record.who), requested_at=record.issued_at, ok=status == "ok",
                                   readback=readback, error=detail if status != "ok" else "", completed_at=now,
                                   site=record.fleet)])
        level = logging.INFO if status == "ok" else logging.ERROR
        log.log(level, "vehicle command %s %s for %s/%s by %s: %s after %d attempt(s)%s; state %s", record.id,
                record.command, record.fleet, record.vehicle, record.who, status.upper(), record.attempts,
                f" ({detail})" if detail else "", record.state)
        if status == "expired":
            self._raise_alert(record)
        self._update_gauge()
        self._notify()

    def _raise_alert(self, record: CommandRecord) -> None:
        """One alert per vehicle: a second command that expires while it is active takes it over."""
        level = max(2, record.level)
        old = self.alerts.get(record.vehicle)
        if old is not None and old.level > level:
            level = old.level
        labels = command_alert_labels(level, record.fleet, record.vehicle, record.command)
        notes = command_alert_texts(self.texts, fleet=record.fleet, vehicle=record.vehicle, command=record.command,
                                    by_rule=record.who.startswith("rule:"), attempts=record.attempts,
                                    waited_s=record.expires_at - record.issued_at, level=level)
        from_level = old.level if old is not None else 0
        kind = "raise" if old is None or level == from_level else "escalate"
        self.alerts[record.vehicle] = _CommandAlert(record.fleet, record.command, level, labels)
        self._transition(record.fleet, record.vehicle, from_level, level, kind, labels, notes, old)

    def _clear_alert(self, vehicle: str, record: CommandRecord | None = None, *,
                     notes: dict[str, str] | None = None) -> None:
        """The vehicle is back (it acknowledged a command, or reports again): its alert ends."""
        alert = self.alerts.pop(vehicle, None)
        if alert is None:
            return
        if notes is None:
            notes = command_cleared_texts(self.texts, fleet=alert.fleet, vehicle=vehicle, command=alert.command,
                                          command_id=record.id if record is not None else "")
        self._transition(alert.fleet, vehicle, alert.level, 0, "clear", alert.labels, notes, None)

    def _transition(self, fleet: str, vehicle: str, from_level: int, to_level: int, kind: str,
                    labels: dict[str, str], notes: dict[str, str], old: _CommandAlert | None) -> None:
        now = self.clock()
        service = self.alert_service
        if service is not None:  # the alert service holds it: /api/alerts, acknowledgement, Alertmanager, InfluxDB
            t = Transition(rule=COMMAND_UNACKNOWLEDGED, target=Target(fleet, vehicle, None, None),
                           from_level=from_level, to_level=to_level, kind=kind, value=None, at=now,
                           diagnosis=notes.get("diagnosis", ""), action=notes.get("action", ""),
                           protective_action=None, labels=dict(labels), annotations=dict(notes))
            try:
                service.store.apply([t])
                service.apply([t])
            except Exception:  # noqa: BLE001 - an alert that cannot be fanned out must not stop the commands
                log.exception("vehicle command alert for %s/%s not applied", fleet, vehicle)
            return
        if self.pusher is not None:
            if kind == "clear":
                self.pusher.resolve(labels, notes)
            else:
                if old is not None and old.labels != labels:
                    self.pusher.resolve(old.labels)
                self.pusher.fire(labels, notes, starts_at=now)
        self._store([_event(fleet, vehicle, to_level, from_level, kind, notes, now)])

    def adopt_alerts(self) -> None:
        """Take over the unacknowledged-command alerts the alert service restored after a restart, so they
        clear as they would have (the vehicle acknowledges a command, or reports again)."""
        service = self.alert_service
        if service is None:
            return
        for alert in service.store.active():
            if alert.key.rule == COMMAND_UNACKNOWLEDGED and alert.key.cabinet not in self.alerts:
                self.alerts[alert.key.cabinet] = _CommandAlert(alert.key.site, alert.labels.get("command", ""),
                                                               alert.level, dict(alert.labels))

    def observe(self, reading: Any) -> None:
        """A reading of the pipeline (a hook): learns which devices are BLE gateways, and notes vehicles
        that report again while their command alert is active (see :meth:`check`)."""
        model = getattr(reading, "model", None)
        if model == BLE_GATEWAY_MODEL:
            self.gateways.add(reading.cabinet_id)
            return
        if model != VEHICLE_MODEL:
            return
        report = reading.vehicle
        if report is not None and report.received_ns:
            if (report.speed_kmh or 0.0) >= MOVING_KMH or report.state == VehicleState.RIDING:
                self.moving[reading.cabinet_id] = self.clock()
            else:
                self.moving.pop(reading.cabinet_id, None)
        if not self.alerts:
            return
        alert = self.alerts.get(reading.cabinet_id)
        if alert is None or report is None or not report.received_ns:  # a silence reading: nothing reported
            return
        key, wanted = EXPECTED_STATE.get(alert.command, ("", None))
        shown = {"power": report.powered_on, "armed": report.armed}.get(key)
        if shown is not None and shown == wanted:
            self._clear_alert(reading.cabinet_id, notes=command_cleared_texts(
                self.texts, fleet=alert.fleet, vehicle=reading.cabinet_id, command=alert.command, command_id="",
                reported=True))
        elif alert.back_since is None:
            alert.back_since = self.clock()

    def _store(self, points: list[CommandResult] | list[AlertEvent]) -> None:
        if self._emit is None:
            return
        try:
            self._emit(points)
        except Exception as err:  # noqa: BLE001 - storing history must not stop a command
            log.warning("vehicle command points not stored: %s", err)

    def _audit(self, record: CommandRecord, event: str) -> None:
        if self.audit_path is None:
            return
        entry = {"at": self.clock(), "event": event, "id": record.id, "fleet": record.fleet,
                 "vehicle": record.vehicle, "command": record.command, "who": record.who, "reason": record.reason,
                 "attempt": record.attempts, "expires_at": record.expires_at, "result": record.status,
                 "state": record.state, "detail": record.detail}
        try:
            self.audit_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.audit_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        except OSError as err:
            log.error("vehicle command audit %s not written: %s", self.audit_path, err)

    def _update_gauge(self) -> None:
        self.metrics.pending.set(sum(1 for r in self.records.values() if not r.done))

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()
        with contextlib.suppress(RuntimeError):  # no running loop: nobody can be waiting
            asyncio.get_running_loop().create_task(wake())

    async def _watch(self) -> None:
        """Retries and expiries, on the clock (coarse: a command lives for seconds to minutes)."""
        period = max(0.1, min(1.0, self.retry_s / 4))
        while True:
            await asyncio.sleep(period)
            self.check()

    def check(self) -> None:
        """Send again what waited ``retry_s`` (up to ``max_attempts``); expire what is past its expiry."""
        now = self.clock()
        for vehicle, alert in list(self.alerts.items()):
            if alert.back_since is not None and now - alert.back_since >= self.resolve_after_s:
                self._clear_alert(vehicle, notes=command_cleared_texts(
                    self.texts, fleet=alert.fleet, vehicle=vehicle, command=alert.command, command_id="",
                    reported=True, minutes=self.resolve_after_s / 60))
        for record in [r for r in self.records.values() if not r.done]:
            if now >= record.expires_at:
                record.set_detail(N_("no acknowledgement after {attempts} attempt(s)"), attempts=record.attempts)
                self._finish(record, "expired", record.detail)
            elif record.attempts < self.max_attempts and now - record._sent_at >= self.retry_s:
                log.info("vehicle command %s %s for %s: no acknowledgement in %.0f s, sending again (%d of %d)",
                         record.id, record.command, record.vehicle, self.retry_s, record.attempts + 1,
                         self.max_attempts)
                self._send(record)

    async def _run(self) -> None:
        await keep_connected(self._session, self.connected, self.mqtt, "vehicle commands")

    async def _session(self) -> None:
        s = self.mqtt
        async with mqtt_client(s, self.client_id) as client:
            await client.subscribe(f"{TOPIC_ROOT}/+/+/ack", qos=1)
            self.connected.set()
            log.info("vehicle commands: connected to %s:%s, listening for acknowledgements", s.host, s.port)
            await exchange(client, self._publish, self._received, name="vehicle-commands")

    async def _publish(self, client: aiomqtt.Client) -> None:
        while True:
            record = await self._outbox.get()
            if record.done:
                continue
            try:
                await client.publish(topic(record.fleet, record.vehicle, "cmd"), encode(record.wire()), qos=1)
            except (aiomqtt.MqttError, asyncio.CancelledError):
                self._outbox.put_nowait(record)  # sent again once reconnected (the retries go on meanwhile)
                raise

    def _received(self, where: str, payload: object) -> None:
        parts = where.split("/")
        if len(parts) != 5 or parts[4] != "ack":
            return
        data = payload if isinstance(payload, bytes) else str(payload or "").encode()
        try:
            ack = decode_ack(data)
        except CommandWireError as err:
            log.warning("unreadable acknowledgement on %s: %s", where[:120], err)
            return
        self.handle_ack(parts[3], ack)


def _actor(who: str) -> str:
    return who if who.startswith(("rule:", "user:")) else f"user:{who}"


@dataclass(slots=True)
class _CommandAlert:
    """A vehicle's active unacknowledged-command alert; ``back_since``: when the vehicle reported again."""

    fleet: str
    command: str
    level: int
    labels: dict[str, str]
    back_since: float | None = None


def _event(fleet: str, vehicle: str, level: int, from_level: int, kind: str, notes: dict[str, str],
           now: float) -> AlertEvent:
    severity = SEVERITY.get(level or from_level, "warning")
    return AlertEvent(COMMAND_UNACKNOWLEDGED, fleet, vehicle, None, severity, level, from_level, kind,
                      None, None, notes.get("summary"), notes.get("diagnosis"), notes.get("action"),
                      int(now * 1e9), "device_fault")


def vehicle_commands_for(config: Any, alerts: Any, pipeline: Any, settings: Mapping[str, Any],
                         **options: Any) -> VehicleCommandService | None:
    """The command service of ``cascade run``: on the vehicles' broker (``vehicles.mqtt``; None without
    one), storing through the pipeline, alerting through the alert service's Alertmanager pusher, its
    audit (``vehicle-commands.jsonl``) beside the threshold audit. ``options``: service keywords."""
    vehicles = getattr(config, "vehicles", None)
    if vehicles is None or vehicles.mqtt is None:
        return None
    options.setdefault("alerts", alerts if hasattr(alerts, "store") else None)
    service = VehicleCommandService(
        vehicles.mqtt, DeviceRegistry.load(vehicles.devices),
        audit_path=Path(settings["audit_file"]).with_name("vehicle-commands.jsonl"), emit=pipeline.submit,
        pusher=alerts.pusher, language=settings.get("language", DEFAULT_LANGUAGE), registry=pipeline.registry,
        client_id=f"cascade-commands-{os.getpid()}", **options)
    if hasattr(pipeline, "subscribe"):
        pipeline.subscribe(service.observe)  # which devices are gateways; vehicles that report again
    return service


def forward_vehicle_commands(alerts: Any, commands: VehicleCommandService) -> None:
    """Hand every transition the alert service fans out to ``commands`` too (rules with a
    ``vehicle_command``). The alert service has no transition listener of its own, so this wraps its
    ``apply``: the alert goes out first, then the command."""
    apply = alerts.apply

    def apply_and_command(transitions: Iterable[Any], timestamp_ns: int | None = None) -> None:
        transitions = list(transitions)
        apply(transitions, timestamp_ns)
        for t in transitions:
            commands.on_transition(t)

    alerts.apply = apply_and_command


# -- HTTP API ----------------------------------------------------------------------------------------


def add_command_routes(app: web.Application, commands: VehicleCommandService, *, auth: Any = None) -> None:
    """``POST /api/vehicles/{vehicle}/commands`` body ``{"command", "who"?, "reason"?, "wait_s"?, "expiry_s"?}``
    → 200 the finished record (or 202 still pending after ``wait_s``, default 0); 400 bad command or body,
    or a device that is not a vehicle; 404 unknown vehicle. ``GET /api/vehicles/commands`` (``?vehicle=``,
    ``?limit=``) and ``GET /api/vehicles/commands/{id}`` read records.

    ``auth``: the alert API's :class:`alerting.auth.ApiAuth` (anything with ``await require(request,
    permission)``). Arming, disarming and the motor lock need :data:`core.auth.VEHICLE` (operator,
    engineer, admin), power on/off :data:`core.auth.VEHICLE_POWER` (engineer, admin: a power-off stops a
    vehicle on the road); always a person's token, whose subject is recorded as who asked (``who`` in the
    body is then not needed and not used). Reading needs ``read``; a regulator's token sees the records
    without a person's ``who`` and ``reason`` (null), as in ``/api/actions``. Without ``auth`` the routes
    are open, like the alert API without one (loopback, tests).
    """

    async def who_may(request: web.Request, permission: str) -> Any:
        return None if auth is None else await auth.require(request, permission)

    def texts_for(request: web.Request) -> AlertTexts:
        if auth is not None and hasattr(auth, "texts_for"):
            return auth.texts_for(request)  # type: ignore[no-any-return]
        wanted = request.headers.get("Accept-Language", "").split(",")[0].split(";")[0].strip().lower()
        return _TEXTS["en"] if wanted.startswith("en") else _TEXTS["zh_CN"] if wanted.startswith("zh") else \
            commands.texts

    async def issue(request: web.Request) -> web.Response:
        principal = await who_may(request, VEHICLE)
        texts = texts_for(request)
        if request.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
            return _error(texts, 415, "unsupported_media_type",
                          N_("send the body as JSON with 'Content-Type: application/json'"))
        origin = request.headers.get("Origin")
        if origin is not None and urllib.parse.urlsplit(origin).netloc != request.host:
            return _error(texts, 403, "cross_origin", N_("a request from the web page {origin} may not command "
                                                         "vehicles"), origin=repr(origin[:100]))
        try:
            body = await request.json()
        except ValueError:
            return _error(texts, 400, "not_json", N_("the body is not JSON; send {example}"),
                          example='{"command": "motor_lock", "who": "alice"}')
        if not isinstance(body, dict) or not isinstance(body.get("command"), str):
            return _error(texts, 400, "bad_request", N_("send {example} (and \"who\" without a token)"),
                          example='{"command": "<one of ' + ", ".join(COMMANDS) + '>"}')
        if body["command"] in POWER_COMMANDS:
            principal = await who_may(request, VEHICLE_POWER)
        subject = str(getattr(principal, "subject", "") or "")
        if not subject and not isinstance(body.get("who"), str):
            return _error(texts, 400, "empty_who", N_("say who asks: send {example}, or use a token"),
                          example='{"command": "...", "who": "<your name>"}')
        try:
            wait_s = min(120.0, max(0.0, float(body.get("wait_s", 0))))
            expiry_s = None if body.get("expiry_s") is None else float(body["expiry_s"])
        except (TypeError, ValueError):
            return _error(texts, 400, "bad_request", N_("wait_s and expiry_s are numbers of seconds"))
        who = (subject or str(body.get("who", ""))).strip()  # a token's subject wins: it is who asked
        try:
            record = commands.issue(request.match_info["vehicle"], body["command"], who=_actor(who) if who else "",
                                    reason=str(body.get("reason", "")), expiry_s=expiry_s)
        except CommandRefused as err:
            return _refusal(texts, 404 if err.reason == "unknown_vehicle" else 400, err)
        if wait_s:
            record = await commands.wait(record.id, wait_s)
        return web.json_response(record.to_dict(texts), status=200 if record.done else 202,
                                 dumps=_json_dumps)

    def shown(request_principal: Any, record: CommandRecord, texts: AlertTexts) -> dict[str, Any]:
        out = record.to_dict(texts)
        if request_principal is not None and not request_principal.can(READ):  # a regulator: no personal data
            out = redact_record(out)
        return out

    async def listing(request: web.Request) -> web.Response:
        principal = await who_may(request, READ)
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "100"))))
        except ValueError:
            return _error(texts_for(request), 400, "bad_limit", N_("limit is a whole number"))
        found = commands.recent(request.query.get("vehicle"), limit)
        texts = texts_for(request)
        return web.json_response({"commands": [shown(principal, r, texts) for r in found]}, dumps=_json_dumps)

    async def one(request: web.Request) -> web.Response:
        principal = await who_may(request, READ)
        record = commands.get(request.match_info["id"])
        if record is None:
            return _error(texts_for(request), 404, "unknown_command_id", N_("no command {id} in this run's records"),
                          id=repr(request.match_info["id"][:40]))
        return web.json_response(shown(principal, record, texts_for(request)), dumps=_json_dumps)

    app.router.add_post("/api/vehicles/{vehicle}/commands", issue)
    app.router.add_get("/api/vehicles/commands", listing)
    app.router.add_get("/api/vehicles/commands/{id}", one)


def redact_record(record: dict[str, Any]) -> dict[str, Any]:
    """A command record as a regulator sees it, like ``alerting.auth.redact_entries`` does for
    ``/api/actions``: a person's ``who`` and ``reason`` are null; a rule's stay (nothing personal)."""
    who = record.get("who")
    if isinstance(who, str) and who.startswith("rule:"):
        return record
    return {**record, "who": None, "reason": None}


_TEXTS = {language: AlertTexts(language) for language in LANGUAGES}


def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _error(texts: AlertTexts, status: int, code: str, msgid: str, **values: Any) -> web.Response:
    """A refusal as the alert API words one: the text in the caller's language, the stable code, the English."""
    return web.json_response({"error": texts.tr(msgid, **values), "code": code,
                              "detail": _TEXTS["en"].tr(msgid, **values)}, status=status)


def _refusal(texts: AlertTexts, status: int, err: CommandRefused) -> web.Response:
    return web.json_response({"error": err.text(texts), "code": err.reason, "detail": str(err)}, status=status)
