"""Texts and labels of the alert raised when a vehicle never acknowledges a remote command.

The command service (``cascade.commands``) sends motor-lock, power and arming commands to vehicles and
waits for each to be acknowledged; one still unacknowledged at its expiry is this alert, pushed through
the same Alertmanager routing as every other warning, in the operators' language (the texts are in the
gettext catalogue, ``locale/``). The texts say whether a person or a rule asked, never who: they reach
the regulator's feed; the command audit names the person.

    >>> texts = AlertTexts("en")
    >>> command_alert_texts(texts, fleet="bj", vehicle="V000001", command="motor_lock", by_rule=False,
    ...                     attempts=3, waited_s=120)["summary"]
    'L2 command motor lock not acknowledged at bj/V000001 vehicle'
"""

from __future__ import annotations

from alerting.i18n import N_, AlertTexts
from alerting.state import alert_labels

__all__ = ["COMMAND_UNACKNOWLEDGED", "STATE_NAMES", "STATUS_NAMES", "YES_NO", "command_alert_labels",
           "command_alert_texts", "command_cleared_texts", "command_name"]

#: A vehicle's read-back state keys and values, and a command's outcome, as people read them (the CLI's
#: lines and the API's ``detail_text``).
STATE_NAMES = {"power": N_("power"), "locked": N_("motor locked"), "armed": N_("armed")}
YES_NO = {True: N_("yes"), False: N_("no")}
STATUS_NAMES = {"ok": N_("OK"), "failed": N_("FAILED"), "rejected": N_("REJECTED"), "expired": N_("EXPIRED"),
                "pending": N_("PENDING")}

COMMAND_UNACKNOWLEDGED = "vehicle_command_unacknowledged"
"""The rule id (``alertname``) of the alert."""

_NAMES = {"power_on": N_("power on"), "power_off": N_("power off"), "motor_lock": N_("motor lock"),
          "motor_unlock": N_("motor unlock"), "arm": N_("arm"), "disarm": N_("disarm")}


def command_name(texts: AlertTexts, command: str) -> str:
    """A command as people say it (``电机锁定``); its id when it has no name."""
    name = _NAMES.get(command)
    return texts.tr(name) if name is not None else command


def _place(texts: AlertTexts, fleet: str, vehicle: str) -> str:
    return texts.tr("{fleet}/{vehicle} vehicle", fleet=fleet, vehicle=vehicle)


def command_alert_labels(level: int, fleet: str, vehicle: str, command: str) -> dict[str, str]:
    """The alert's Alertmanager labels: like a vehicle battery alert (vehicle id as ``cabinet``, which
    routing groups by), plus ``vehicle`` and ``command``."""
    return alert_labels(COMMAND_UNACKNOWLEDGED, level, fleet, vehicle, vehicle=vehicle, command=command)


def command_alert_texts(texts: AlertTexts, *, fleet: str, vehicle: str, command: str, by_rule: bool, attempts: int,
                        waited_s: float, level: int = 2) -> dict[str, str]:
    """Summary, diagnosis and action of the alert, in ``texts``' language. ``by_rule``: a rule asked (else
    a person); the alert never names the person (the audit does)."""
    what = command_name(texts, command)
    values = {"command": what, "vehicle": vehicle, "attempts": attempts, "seconds": f"{waited_s:.0f}"}
    diagnosis = (texts.tr("The {command} command a rule asked for vehicle {vehicle} was sent {attempts} time(s) and "
                          "not acknowledged within {seconds} s: the vehicle may be off the network, powered off or "
                          "out of coverage, and its state is unknown.", **values) if by_rule else
                 texts.tr("The {command} command a person asked for vehicle {vehicle} was sent {attempts} time(s) "
                          "and not acknowledged within {seconds} s: the vehicle may be off the network, powered off "
                          "or out of coverage, and its state is unknown.", **values))
    return {
        "summary": texts.tr("L{level} {name}{reading} at {where}", level=level, reading="",
                            where=_place(texts, fleet, vehicle),
                            name=texts.tr("command {command} not acknowledged", command=what)),
        "diagnosis": diagnosis,
        "action": texts.tr("Call the rider or send someone to the vehicle's last position; send the command again "
                           "when it reports."),
    }


def command_cleared_texts(texts: AlertTexts, *, fleet: str, vehicle: str, command: str, command_id: str,
                          reported: bool = False, minutes: float | None = None) -> dict[str, str]:
    """The texts that resolve the alert: the vehicle acknowledged a command again (``command_id``), or it
    reports again (``reported``: its report shows the state asked for, or, with ``minutes``, it has
    reported again for that long without the command being confirmed)."""
    where = _place(texts, fleet, vehicle)
    what = command_name(texts, command)
    if not reported:
        return {
            "summary": texts.tr("Vehicle {where} acknowledges commands again", where=where),
            "diagnosis": texts.tr("Command {id} was acknowledged: the vehicle is reachable and its state is read "
                                  "back.", id=command_id),
            "action": texts.tr("None."),
        }
    if minutes is None:
        return {
            "summary": texts.tr("Vehicle {where} reports the state {command} asked for", where=where, command=what),
            "diagnosis": texts.tr("The vehicle reports again, in the state the {command} command asked for.",
                                  command=what),
            "action": texts.tr("None."),
        }
    return {
        "summary": texts.tr("Vehicle {where} reports again", where=where),
        "diagnosis": texts.tr("The vehicle has reported again for {minutes} min; the {command} command was not "
                              "confirmed.", minutes=f"{minutes:.0f}", command=what),
        "action": texts.tr("If the {command} command is still needed, send it again.", command=what),
    }
