"""Protective actions: turn a warning's ``protective_action`` into cabinet commands, and audit them.

    policy = ActionPolicy(perform={"slot_cutoff", "cabinet_cutoff"}, overrides={("thermal_runaway", 2): None})
    runner = ActionRunner(commander, policy, emit=sink.submit)   # core.ports.Commander, EventHandler
    for command in runner.plan(transition, runner.policy.action_for(transition)):
        record = await runner.execute(command)       # ActionRecord: who, what, when, result, read-back

Every catalogue action ends in the same write: the slot's ``slot_output`` relay set to 0, which
the register profiles define as "cut the slot off (stops charging)". ``stop_charging`` and
``slot_cutoff`` write it for the alert's slot, ``cabinet_cutoff`` for every slot of the cabinet.
Nothing here ever re-enables a slot: that is a person's decision after inspection.

P-3.3: the warning system is independent of fire suppression. :func:`check_command` refuses any
command not in :data:`ALLOWED_COMMANDS` before a device is even looked up, so no configuration,
rule or API call can make Cascade command (or reset) suppression.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from alerting.rules import PROTECTIVE_ACTIONS
from alerting.state import Transition
from core.errors import CascadeError
from core.events import CommandResult
from core.ports import Commander, EventHandler, UnknownDevice

__all__ = [
    "ALLOWED_COMMANDS",
    "CHARGING_COMMANDS",
    "CONTROLS",
    "CONTROL_COMMANDS",
    "ActionPolicy",
    "ActionRecord",
    "ActionRunner",
    "Command",
    "ControlSpec",
    "ForbiddenCommand",
    "check_command",
]

log = logging.getLogger(__name__)

# The only commands Cascade may send to a cabinet (P-3.3: never fire suppression).
ALLOWED_COMMANDS = frozenset({"slot_output"})
_CUT_OFF = 0  # slot_output value that opens the relay


@dataclass(frozen=True, slots=True)
class ControlSpec:
    """A remote-control command people may send (P-5.1.2.1–5; engineer role, docs/security.md).

    ``command``: the profile command it writes (``commands:`` in the register profile); ``value``: the
    value written, or None when the request gives it (then it must lie in ``limits``, raw register
    units); ``slot``: the request must name a slot; ``confirm``: the request must say ``"confirm": true``
    (everything but stopping, the safe direction).
    """

    command: str
    value: int | None
    slot: bool
    confirm: bool
    limits: tuple[int, int] = (0, 1)


#: The remote-control commands, by the name a request uses. Starting charging re-energises a slot: the
#: service refuses it while the slot (or its cabinet) has an active level-2/3 alert or a failed cut-off.
CONTROLS: Mapping[str, ControlSpec] = {
    "stop_charging": ControlSpec("slot_output", 0, slot=True, confirm=False),
    "start_charging": ControlSpec("slot_output", 1, slot=True, confirm=True),
    "fault_reset": ControlSpec("fault_reset", 1, slot=False, confirm=True),
    "charge_current_limit": ControlSpec("charge_current_limit", None, slot=False, confirm=True, limits=(0, 65535)),
    "charge_temperature_limit": ControlSpec("charge_temperature_limit", None, slot=False, confirm=True,
                                            limits=(0, 65535)),
    # The daily charging window, minutes after midnight (Beijing time) at the cabinet.
    "charge_schedule_start": ControlSpec("charge_schedule_start", None, slot=False, confirm=True, limits=(0, 1439)),
    "charge_schedule_end": ControlSpec("charge_schedule_end", None, slot=False, confirm=True, limits=(0, 1439)),
}
#: The commands an operator may send (starting and stopping charging); the rest are the engineer's.
CHARGING_COMMANDS = frozenset({"stop_charging", "start_charging"})
#: Profile commands a person may write; whatever a profile defines beyond these stays out of reach.
CONTROL_COMMANDS = frozenset(spec.command for spec in CONTROLS.values())
# Never, whatever a profile or this table says (P-3.3): defence in depth behind the allow-lists.
_NEVER = ("suppress", "fire", "extinguish", "sprinkler", "aerosol", "deluge")


class ForbiddenCommand(CascadeError):
    """A command outside :data:`ALLOWED_COMMANDS` (or :data:`CONTROL_COMMANDS`); nothing was sent."""


def check_command(name: str, allowed: frozenset[str] = ALLOWED_COMMANDS) -> None:
    """Raise :class:`ForbiddenCommand` unless ``name`` is in ``allowed`` (default: the protective
    commands) and names nothing of fire suppression."""
    if name not in allowed or any(word in name.lower() for word in _NEVER):
        raise ForbiddenCommand(
            f"command {name!r} refused: Cascade only sends {sorted(allowed)}; fire suppression and anything "
            "else stay under the cabinet's own control (P-3.3)")


@dataclass(frozen=True, slots=True)
class ActionPolicy:
    """Which protective actions are executed.

    ``perform``: catalogue action names that are carried out; any other is logged and recorded
    as ``skipped``. ``overrides``: ``(rule, level) -> action name or None`` replacing the
    catalogue's choice for that rule and level (None = observe only). ``retry_s``: how often a
    failed action is retried.
    """

    perform: frozenset[str] = PROTECTIVE_ACTIONS
    overrides: Mapping[tuple[str, int], str | None] = field(default_factory=dict)
    retry_s: float = 10.0

    def __post_init__(self) -> None:
        unknown = set(self.perform) - PROTECTIVE_ACTIONS
        unknown |= {a for a in self.overrides.values() if a is not None and a not in PROTECTIVE_ACTIONS}
        if unknown:
            raise ValueError(f"unknown protective action(s) {sorted(unknown)}; use {sorted(PROTECTIVE_ACTIONS)}")
        if not self.retry_s > 0:
            raise ValueError(f"retry_s must be > 0 seconds, got {self.retry_s!r}")

    def action_for(self, t: Transition) -> str | None:
        """The action to take for this transition, or None (also None on de-escalate and clear)."""
        if t.kind not in ("raise", "escalate"):
            return None
        return self.overrides.get((t.rule, t.to_level), t.protective_action)


@dataclass(frozen=True, slots=True)
class Command:
    """One write a protective action needs, and why (the actor is the rule and level)."""

    site: str
    cabinet: str
    slot: int | None
    name: str
    value: int
    action: str  # the protective action it serves (slot_cutoff, ...)
    rule: str
    level: int
    alert: str  # the alert key it acts for ("" for a remote-control command)
    by: str = ""  # the person who sent a remote-control command (token subject); "" for a rule
    reason: str = ""  # why, as they said it

    @property
    def actor(self) -> str:
        return f"user:{self.by}" if self.by else f"rule:{self.rule}@level{self.level}"


@dataclass(slots=True)
class ActionRecord:
    """The audit entry of one executed (or refused, or skipped) command."""

    at: float
    completed_at: float
    actor: str
    alert: str
    action: str
    command: str
    site: str
    cabinet: str
    slot: int | None
    value: int
    result: str  # ok | failed | skipped
    readback: int | None = None
    error: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ActionRunner:
    """Plans and executes protective commands through a commander; keeps recent records.

    ``emit`` receives each command's :class:`~core.events.CommandResult` (the app stores it).
    """

    def __init__(self, commander: Commander | None, policy: ActionPolicy | None = None, *,
                 emit: EventHandler | None = None, clock: Callable[[], float] = time.time,
                 history: int = 500) -> None:
        self.commander = commander
        self._emit = emit
        self.policy = policy or ActionPolicy()
        self._clock = clock
        self.recent: deque[ActionRecord] = deque(maxlen=history)

    def plan(self, t: Transition, action: str | None) -> list[Command]:
        """The writes ``action`` needs for this transition's target (empty for None)."""
        if action is None:
            return []
        target = t.target
        if action == "cabinet_cutoff" or target.slot is None:
            # A cabinet-scope alert cannot single out a slot: protect the whole cabinet.
            count = None if self.commander is None else self.commander.slot_count(target.cabinet)
            slots: Iterable[int | None] = range(1, count + 1) if count is not None else [None]
        else:
            slots = [target.slot]
        return [Command(target.site, target.cabinet, s, "slot_output", _CUT_OFF, action, t.rule, t.to_level,
                        str(t.key)) for s in slots]

    async def execute(self, command: Command) -> ActionRecord:
        """Send one command (allow-list first), log it, write its ``command`` point; never raises
        on device errors. Actions not in ``policy.perform`` are recorded as skipped."""
        check_command(command.name, CONTROL_COMMANDS if command.by else ALLOWED_COMMANDS)
        now = self._clock()
        record = ActionRecord(now, now, command.actor, command.alert, command.action, command.name, command.site,
                              command.cabinet, command.slot, command.value, "skipped", reason=command.reason)
        # The policy governs what rules do on their own; a person's command is authorised by role instead.
        if not command.by and command.action not in self.policy.perform:
            record.error = f"{command.action} is not in alerting.actions.perform: observed only"
            log.warning("protective action %s for %s by %s not performed (%s)", command.action, command.alert,
                        command.actor, record.error)
            self.recent.append(record)
            return record
        known = self.commander is not None and self.commander.slot_count(command.cabinet) is not None
        # A protective write always targets a slot; a person's command may be cabinet-wide (fault reset).
        if self.commander is None or not known or (command.slot is None and not command.by):
            record.result = "failed"
            record.error = (f"cabinet {command.cabinet!r} is not configured in this collector; cut it off by hand"
                            if not known else "no slot to command")
        else:
            try:
                result = await self.commander.command(command.cabinet, command.name, slot=command.slot,
                                                      value=command.value, actor=command.actor)
            except asyncio.CancelledError:
                raise
            except UnknownDevice as err:
                record.result = "failed"
                record.error = f"{err}; cut it off by hand"
            except Exception as err:  # noqa: BLE001 - turn any surprise into a failed action (alerted)
                log.exception("protective action %s on %s: the command raised", command.action, command.alert)
                record.result = "failed"
                record.error = f"unexpected {type(err).__name__}: {err}"
            else:
                record.at, record.completed_at = result.requested_at, result.completed_at
                record.result = "ok" if result.ok else "failed"
                record.readback = None if result.readback is None else int(result.readback)
                record.error = result.error
                self._write_point(result)
        level = logging.INFO if record.ok else logging.ERROR
        log.log(level, "%s %s: %s %s=%s on %s/%s%s by %s: %s (read back %s)%s",
                "remote command" if command.by else "protective action", command.action,
                command.alert or command.reason, command.name, command.value, command.site, command.cabinet,
                "" if command.slot is None else f" slot {command.slot}", command.actor, record.result.upper(),
                record.readback,
                f": {record.error}" if record.error else "")
        self.recent.append(record)
        return record

    def _write_point(self, result: CommandResult) -> None:
        if self._emit is None:
            return
        try:
            self._emit((result,))
        except Exception as err:  # noqa: BLE001 - storing the audit point must not undo the action
            log.warning("command record for %s not stored: %s", result.cabinet_id, err)
