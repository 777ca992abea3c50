"""Texts and labels of the alert raised when a vehicle never acknowledges a remote command.

The command service (``cascade.commands``) sends motor-lock, power and arming commands to vehicles and
waits for each to be acknowledged; one still unacknowledged at its expiry is this alert, pushed through
the same Alertmanager routing as every other warning, in the operators' language (the texts are in the
gettext catalogue, ``locale/``).

    >>> texts = AlertTexts("en")
    >>> command_alert_texts(texts, fleet="bj", vehicle="V000001", command="motor_lock", who="alice",
    ...                     attempts=3, waited_s=120)["summary"]
    'L2 command motor lock not acknowledged at bj/V000001 vehicle'
"""

from __future__ import annotations

from alerting.i18n import N_, AlertTexts
from alerting.state import alert_labels

__all__ = ["COMMAND_UNACKNOWLEDGED", "command_alert_labels", "command_alert_texts", "command_cleared_texts",
           "command_name"]

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


def command_alert_texts(texts: AlertTexts, *, fleet: str, vehicle: str, command: str, who: str, attempts: int,
                        waited_s: float, level: int = 2) -> dict[str, str]:
    """Summary, diagnosis and action of the alert, in ``texts``' language."""
    what = command_name(texts, command)
    return {
        "summary": texts.tr("L{level} {name}{reading} at {where}", level=level, reading="",
                            where=_place(texts, fleet, vehicle),
                            name=texts.tr("command {command} not acknowledged", command=what)),
        "diagnosis": texts.tr("The {command} command for vehicle {vehicle}, asked by {who}, was sent {attempts} "
                              "time(s) and not acknowledged within {seconds} s: the vehicle may be off the network, "
                              "powered off or out of coverage, and its state is unknown.", command=what,
                              vehicle=vehicle, who=who, attempts=attempts, seconds=f"{waited_s:.0f}"),
        "action": texts.tr("Call the rider or send someone to the vehicle's last position; send the command again "
                           "when it reports."),
    }


def command_cleared_texts(texts: AlertTexts, *, fleet: str, vehicle: str, command: str, command_id: str) -> dict[str, str]:
    """The texts that resolve the alert: a later command of the same kind went through."""
    return {
        "summary": texts.tr("Vehicle {where} acknowledged {command} again", where=_place(texts, fleet, vehicle),
                            command=command_name(texts, command)),
        "diagnosis": texts.tr("Command {id} was acknowledged and read back as asked.", id=command_id),
        "action": texts.tr("None."),
    }
