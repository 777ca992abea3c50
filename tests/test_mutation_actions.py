"""Protective actions (alerting/actions.py) stated from outside: which writes an action plans, what
the audit record says for each outcome, and the P-3.3 allow-list. Written to kill the mutants
`make mutate` found alive. The commander is an in-memory stand-in at the ``core.ports.Commander``
seam (the Modbus path behind it is covered by tests/test_alert_service.py with the simulator)."""

from __future__ import annotations

import logging

import pytest

from alerting.actions import (
    ALLOWED_COMMANDS,
    ActionPolicy,
    ActionRecord,
    ActionRunner,
    Command,
    ForbiddenCommand,
    check_command,
)
from alerting.state import Target, Transition
from core.events import CommandResult
from core.ports import UnknownDevice


class Cabinets:
    """Commander over a dict of cabinet -> slot count; records every command it is given."""

    def __init__(self, slots: dict[str, int], *, outcome: str = "ok", readback: int | bool | None = 0) -> None:
        self.slots = slots
        self.outcome = outcome
        self.readback = readback
        self.calls: list[tuple[str, str, int | None, int | bool, str]] = []

    def slot_count(self, device: str) -> int | None:
        return self.slots.get(device)

    async def command(self, device: str, name: str, *, slot: int | None, value: int | bool,
                      actor: str) -> CommandResult:
        self.calls.append((device, name, slot, value, actor))
        if self.outcome == "unknown":
            raise UnknownDevice(f"no cabinet {device}")
        if self.outcome == "boom":
            raise RuntimeError("relay driver crashed")
        ok = self.outcome == "ok"
        return CommandResult(device, name, slot, value, actor, requested_at=100.0, ok=ok, readback=self.readback,
                             error="" if ok else "read back 1, expected 0", completed_at=101.5, site="s1")


def _transition(kind: str = "raise", *, slot: int | None = 3, to_level: int = 2,
                action: str | None = "slot_cutoff", rule: str = "thermal_runaway") -> Transition:
    return Transition(rule, Target("s1", "c1", slot, "B7"), 0 if kind == "raise" else 1, to_level, kind, 9.0, 50.0,
                      "diag", "act", action, {}, {})


def _command(**changes: object) -> Command:
    base = dict(site="s1", cabinet="c1", slot=3, name="slot_output", value=0, action="slot_cutoff",
                rule="thermal_runaway", level=2, alert="thermal_runaway@s1/c1/3")
    base.update(changes)
    return Command(**base)  # type: ignore[arg-type]


# -- allow-list -------------------------------------------------------------------------------------

def test_only_the_slot_relay_may_be_commanded() -> None:
    assert ALLOWED_COMMANDS == {"slot_output"}
    check_command("slot_output")
    with pytest.raises(ForbiddenCommand) as info:
        check_command("fire_suppression")
    assert str(info.value) == ("command 'fire_suppression' refused: Cascade only sends ['slot_output']; fire "
                               "suppression and anything else stay under the cabinet's own control (P-3.3)")


async def test_a_forbidden_command_is_refused_before_the_device_is_asked() -> None:
    cabinets = Cabinets({"c1": 4})
    runner = ActionRunner(cabinets)
    with pytest.raises(ForbiddenCommand):
        await runner.execute(_command(name="suppression_reset"))
    assert cabinets.calls == [] and list(runner.recent) == []


# -- policy -----------------------------------------------------------------------------------------

def test_policy_defaults_perform_every_catalogue_action_and_retry_every_10_s() -> None:
    policy = ActionPolicy()
    assert policy.perform == {"stop_charging", "slot_cutoff", "cabinet_cutoff"}
    assert policy.overrides == {} and policy.retry_s == 10.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"perform": frozenset({"slot_cutoff", "vent"})},
     "unknown protective action(s) ['vent']; use ['cabinet_cutoff', 'slot_cutoff', 'stop_charging']"),
    ({"overrides": {("r", 2): "flood"}},
     "unknown protective action(s) ['flood']; use ['cabinet_cutoff', 'slot_cutoff', 'stop_charging']"),
    ({"retry_s": 0}, "retry_s must be > 0 seconds, got 0"),
    ({"retry_s": -1.0}, "retry_s must be > 0 seconds, got -1.0"),
])
def test_policy_refuses_unknown_actions_and_a_zero_retry(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        ActionPolicy(**kwargs)
    assert str(info.value) == message


def test_policy_accepts_an_observe_only_override_and_a_small_retry() -> None:
    policy = ActionPolicy(overrides={("thermal_runaway", 2): None}, retry_s=0.5)
    assert policy.retry_s == 0.5


@pytest.mark.parametrize(("kind", "expected"), [("raise", "slot_cutoff"), ("escalate", "slot_cutoff"),
                                                ("deescalate", None), ("clear", None)])
def test_action_only_on_raise_and_escalate(kind: str, expected: str | None) -> None:
    assert ActionPolicy().action_for(_transition(kind)) == expected


def test_override_replaces_the_catalogue_action_for_that_rule_and_level_only() -> None:
    policy = ActionPolicy(overrides={("thermal_runaway", 2): None, ("thermal_runaway", 3): "cabinet_cutoff"})
    assert policy.action_for(_transition(to_level=2)) is None
    assert policy.action_for(_transition(to_level=3)) == "cabinet_cutoff"
    assert policy.action_for(_transition(to_level=2, rule="overheat")) == "slot_cutoff"


# -- planning ---------------------------------------------------------------------------------------

def test_slot_actions_write_the_alert_slot_relay_to_zero() -> None:
    runner = ActionRunner(Cabinets({"c1": 4}))
    for action in ("slot_cutoff", "stop_charging"):
        assert runner.plan(_transition(action=action), action) == [
            Command("s1", "c1", 3, "slot_output", 0, action, "thermal_runaway", 2, "thermal_runaway@s1/c1/3")]


def test_cabinet_cutoff_and_cabinet_scope_alerts_write_every_slot() -> None:
    runner = ActionRunner(Cabinets({"c1": 3}))
    planned = runner.plan(_transition(), "cabinet_cutoff")
    assert [(c.slot, c.name, c.value, c.action) for c in planned] == [
        (1, "slot_output", 0, "cabinet_cutoff"), (2, "slot_output", 0, "cabinet_cutoff"),
        (3, "slot_output", 0, "cabinet_cutoff")]
    cabinet_wide = runner.plan(_transition(slot=None), "slot_cutoff")
    assert [c.slot for c in cabinet_wide] == [1, 2, 3]
    assert {c.alert for c in cabinet_wide} == {"thermal_runaway@s1/c1"}


def test_no_action_plans_nothing_and_an_unknown_cabinet_one_command_without_a_slot() -> None:
    assert ActionRunner(Cabinets({"c1": 3})).plan(_transition(), None) == []
    assert [c.slot for c in ActionRunner(Cabinets({})).plan(_transition(), "cabinet_cutoff")] == [None]
    assert [c.slot for c in ActionRunner(None).plan(_transition(slot=None), "slot_cutoff")] == [None]


def test_command_actor_names_rule_and_level() -> None:
    assert _command(rule="overheat", level=3).actor == "rule:overheat@level3"


# -- execution and audit ----------------------------------------------------------------------------

async def test_a_confirmed_cut_off_is_recorded_ok_with_the_device_times_and_stored(caplog) -> None:
    caplog.set_level(logging.INFO, logger="alerting.actions")
    cabinets = Cabinets({"c1": 4}, readback=False)
    stored: list[tuple[CommandResult, ...]] = []
    runner = ActionRunner(cabinets, emit=stored.append, clock=lambda: 42.0)
    record = await runner.execute(_command())
    assert cabinets.calls == [("c1", "slot_output", 3, 0, "rule:thermal_runaway@level2")]
    assert record == ActionRecord(100.0, 101.5, "rule:thermal_runaway@level2", "thermal_runaway@s1/c1/3",
                                  "slot_cutoff", "slot_output", "s1", "c1", 3, 0, "ok", readback=0, error="")
    assert type(record.readback) is int and record.ok
    assert record.to_dict()["result"] == "ok" and record.to_dict()["readback"] == 0
    assert len(stored) == 1 and stored[0][0].ok and stored[0][0].cabinet_id == "c1"
    assert list(runner.recent) == [record]
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(
        logging.INFO, "protective action slot_cutoff: thermal_runaway@s1/c1/3 slot_output=0 on s1/c1 slot 3 by "
                      "rule:thermal_runaway@level2: OK (read back 0)")]


async def test_a_relay_that_did_not_open_is_a_failed_action_and_still_stored(caplog) -> None:
    stored: list[tuple[CommandResult, ...]] = []
    runner = ActionRunner(Cabinets({"c1": 4}, outcome="stuck", readback=1), emit=stored.append)
    record = await runner.execute(_command())
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(
        logging.ERROR, "protective action slot_cutoff: thermal_runaway@s1/c1/3 slot_output=0 on s1/c1 slot 3 by "
                       "rule:thermal_runaway@level2: FAILED (read back 1): read back 1, expected 0")]
    assert (record.result, record.readback, record.error, record.ok) == ("failed", 1, "read back 1, expected 0",
                                                                         False)
    assert len(stored) == 1


async def test_no_read_back_is_recorded_as_none() -> None:
    record = await ActionRunner(Cabinets({"c1": 4}, readback=None)).execute(_command())
    assert record.result == "ok" and record.readback is None


async def test_an_action_outside_perform_is_skipped_and_nothing_is_sent(caplog) -> None:
    cabinets = Cabinets({"c1": 4})
    runner = ActionRunner(cabinets, ActionPolicy(perform=frozenset({"cabinet_cutoff"})), clock=lambda: 7.0)
    record = await runner.execute(_command())
    assert cabinets.calls == []
    assert (record.result, record.at, record.completed_at) == ("skipped", 7.0, 7.0)
    assert record.error == "slot_cutoff is not in alerting.actions.perform: observed only"
    assert list(runner.recent) == [record]
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(
        logging.WARNING, "protective action slot_cutoff for thermal_runaway@s1/c1/3 by rule:thermal_runaway@level2 "
                         "not performed (slot_cutoff is not in alerting.actions.perform: observed only)")]


async def test_an_unconfigured_cabinet_fails_with_what_to_do() -> None:
    cabinets = Cabinets({"c2": 4})
    record = await ActionRunner(cabinets).execute(_command())
    assert cabinets.calls == []
    assert record.result == "failed"
    assert record.error == "cabinet 'c1' is not configured in this collector; cut it off by hand"
    record = await ActionRunner(None).execute(_command())
    assert record.result == "failed" and record.error.startswith("cabinet 'c1' is not configured")


async def test_a_command_without_a_slot_fails_without_being_sent() -> None:
    cabinets = Cabinets({"c1": 4})
    record = await ActionRunner(cabinets).execute(_command(slot=None))
    assert cabinets.calls == []
    assert (record.result, record.error) == ("failed", "no slot to command")


async def test_a_device_that_vanished_or_a_crashing_command_is_a_failed_action(caplog) -> None:
    stored: list[tuple[CommandResult, ...]] = []
    record = await ActionRunner(Cabinets({"c1": 4}, outcome="unknown"), emit=stored.append).execute(_command())
    assert (record.result, record.error) == ("failed", "no cabinet c1; cut it off by hand")
    caplog.clear()
    record = await ActionRunner(Cabinets({"c1": 4}, outcome="boom"), emit=stored.append).execute(_command())
    assert (record.result, record.error) == ("failed", "unexpected RuntimeError: relay driver crashed")
    assert stored == []
    crash = caplog.records[0]
    assert crash.getMessage() == "protective action slot_cutoff on thermal_runaway@s1/c1/3: the command raised"
    assert crash.levelno == logging.ERROR and crash.exc_info is not None


async def test_a_failing_store_does_not_undo_the_action(caplog) -> None:
    def broken_store(points: object) -> None:
        raise OSError("disk full")

    record = await ActionRunner(Cabinets({"c1": 4}), emit=broken_store).execute(_command())
    assert record.result == "ok"
    assert (logging.WARNING, "command record for c1 not stored: disk full") in [
        (r.levelno, r.getMessage()) for r in caplog.records]


async def test_recent_records_are_bounded_by_history() -> None:
    runner = ActionRunner(Cabinets({"c1": 4}), history=2)
    for slot in (1, 2, 3):
        await runner.execute(_command(slot=slot))
    assert [r.slot for r in runner.recent] == [2, 3]


def test_the_last_500_records_are_kept_by_default() -> None:
    assert ActionRunner(None).recent.maxlen == 500


# -- a person's commands (remote control) beside the rules' --------------------------------------------

def test_the_fire_suppression_words_are_refused_in_any_case_even_when_allowed() -> None:
    """The never-list is defence in depth: it holds even for a name an allow-list were to carry, whatever
    its letter case."""
    for name in ("Release_Suppression", "FIRE_door", "SprinklerValve"):
        with pytest.raises(ForbiddenCommand):
            check_command(name, frozenset({name}))


async def test_a_rule_may_not_send_a_control_command_but_a_person_may() -> None:
    """Rules send the slot relay only (ALLOWED_COMMANDS); a person's command (``by``) is checked against the
    control commands instead, and is recorded with the reason they gave."""
    cabinets = Cabinets({"c1": 4})
    runner = ActionRunner(cabinets, ActionPolicy(perform=frozenset()))
    with pytest.raises(ForbiddenCommand):
        await runner.execute(_command(name="fault_reset", slot=None))
    assert cabinets.calls == []
    record = await runner.execute(_command(name="fault_reset", slot=None, value=1, action="fault_reset", alert="",
                                           by="eng1", reason="reset after inspection"))
    assert cabinets.calls == [("c1", "fault_reset", None, 1, "user:eng1")]
    assert record.result == "ok" and record.reason == "reset after inspection" and record.actor == "user:eng1"


async def test_a_skipped_action_keeps_its_reason() -> None:
    runner = ActionRunner(Cabinets({"c1": 4}), ActionPolicy(perform=frozenset()))
    record = await runner.execute(_command(reason="drill"))
    assert record.result == "skipped" and record.reason == "drill"


@pytest.mark.parametrize(("by", "slot", "expected"), [
    ("", 3, "protective action slot_cutoff: thermal_runaway@s1/c1/3 slot_output=0 on s1/c1 slot 3 by "
            "rule:thermal_runaway@level2: OK (read back 0)"),
    ("eng1", None, "remote command slot_cutoff: thermal_runaway@s1/c1/3 slot_output=0 on s1/c1 by user:eng1: "
                   "OK (read back 0)"),
])
async def test_the_log_line_says_whose_command_and_where(caplog, by: str, slot: int | None, expected: str) -> None:
    runner = ActionRunner(Cabinets({"c1": 4}))
    with caplog.at_level(logging.INFO, logger="alerting.actions"):
        await runner.execute(_command(by=by, slot=slot))
    assert expected in caplog.text
