"""Tiered safety warnings: rule catalogue, evaluation engine, alert lifecycle and replay.

Public API (other components call these):

    rules = load_rules()                      # the shipped catalogue, validated
    engine = Engine(rules, state=AlertStore("state/alerts.json"))
    for t in engine.evaluate(reading): ...    # Transition records, already stored
    engine.set_threshold("over_temperature", 2, 52, who="noc-alice", reason="summer")
    engine.state.acknowledge(t.key, who="noc-alice", comment="on it")
    engine.state.worst_level(site="s1", cabinet="c7")

See docs/warnings.md.
"""

from alerting.engine import Engine
from alerting.rules import DEFAULT_CATALOGUE, PROTECTIVE_ACTIONS, Rule, RuleError, RuleSet, load_rules
from alerting.state import Ack, Alert, AlertKey, AlertStore, Target, Transition

__all__ = [
    "DEFAULT_CATALOGUE",
    "PROTECTIVE_ACTIONS",
    "Ack",
    "Alert",
    "AlertKey",
    "AlertStore",
    "Engine",
    "Rule",
    "RuleError",
    "RuleSet",
    "Target",
    "Transition",
    "load_rules",
]
