"""Assemble the running application from a validated configuration.

    async with start_app(config) as pipeline:
        await pipeline.wait()

Order: the pipeline is built, the warning engine and the alert service are built and their HTTP
routes added (aiohttp freezes routes when the pipeline's server starts), then the alert service
is entered (reading hook, Alertmanager pusher) *before* the pipeline starts polling, so the
first reading is already evaluated. On exit, in reverse: in-flight protective writes finish,
the pipeline stops polling and flushes InfluxDB, and the alert service pushes its last changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from alerting.actions import ActionPolicy
from alerting.api import add_routes
from alerting.engine import Engine
from alerting.rules import DEFAULT_CATALOGUE, PROTECTIVE_ACTIONS, RuleError, RuleSet, load_rules
from alerting.service import AlertService
from alerting.state import AlertStore
from cascade.config import AppConfig, ConfigError
from cascade.pipeline import Pipeline

__all__ = ["ALERTING_DEFAULTS", "alert_service_for", "alerting_settings", "build_engine", "start_app"]

ALERTING_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "rules": None,  # None = the shipped catalogue
    "state_file": "var/alerts.json",
    "audit_file": "var/threshold-audit.jsonl",
    "alertmanager_url": "http://127.0.0.1:9093",
    "resend_interval_s": 60.0,
    "generator_url": None,
    "actions": {},
    "api_token": None,  # bearer token for ack / set-threshold; usually ${CASCADE_API_TOKEN}
}
_ACTION_KEYS = {"perform", "rules", "retry_s"}
#: At most one alert-state write per this many seconds; a crash loses at most this much of
#: alert-state changes (they re-derive from live data after the restart, docs/warnings.md).
STATE_SAVE_INTERVAL_S = 1.0
_DOC = "see docs/alert-service.md#configuration"


def _beside(path: str, suffix: str) -> Path:
    """A file next to ``path`` named after it (alerts.json -> alerts-failed-actions.json)."""
    p = Path(path)
    return p.with_name(p.stem + suffix)


def alerting_settings(config: AppConfig) -> dict[str, Any]:
    """``config.alerting`` checked and completed with defaults; raises ConfigError naming the key."""
    raw = config.alerting or {}
    src = config.source
    for key in raw:
        if key not in ALERTING_DEFAULTS:
            raise ConfigError(src, f"alerting.{key}", "unknown key", f"use one of {sorted(ALERTING_DEFAULTS)}")
    s = {**ALERTING_DEFAULTS, **raw}
    if not isinstance(s["enabled"], bool):
        raise ConfigError(src, "alerting.enabled", f"{s['enabled']!r} is not true/false", "write true or false")
    for key in ("rules", "generator_url", "api_token"):
        if s[key] is not None and not (isinstance(s[key], str) and s[key]):
            raise ConfigError(src, f"alerting.{key}", f"{s[key]!r} is not text", "give a path/URL or leave it out")
    for key in ("state_file", "audit_file"):
        if not isinstance(s[key], str) or not s[key]:
            raise ConfigError(src, f"alerting.{key}", f"{s[key]!r} is not a path", f"e.g. {ALERTING_DEFAULTS[key]}")
    url = s["alertmanager_url"]
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise ConfigError(src, "alerting.alertmanager_url", f"{url!r} is not an http(s) URL",
                          "e.g. http://127.0.0.1:9093, or null to push nothing")
    resend = s["resend_interval_s"]
    if isinstance(resend, bool) or not isinstance(resend, (int, float)) or not resend > 0:
        raise ConfigError(src, "alerting.resend_interval_s", f"{resend!r} is not a positive number",
                          "seconds between re-sends to Alertmanager, e.g. 60")
    s["policy"] = _action_policy(src, s["actions"])
    if s["rules"] is None:
        s["rules"] = str(DEFAULT_CATALOGUE)
    if s["policy"].overrides:  # checked against the rules here too, so `cascade check-config` sees it
        _check_action_rules(src, _load_rules(src, s["rules"]), s["policy"])
    return s


def _action_policy(src: str, doc: Any) -> ActionPolicy:
    if not isinstance(doc, dict):
        raise ConfigError(src, "alerting.actions", "expected a mapping", f"keys: {sorted(_ACTION_KEYS)}")
    for key in doc:
        if key not in _ACTION_KEYS:
            raise ConfigError(src, f"alerting.actions.{key}", "unknown key", f"use one of {sorted(_ACTION_KEYS)}")
    perform = doc.get("perform", sorted(PROTECTIVE_ACTIONS))
    if not isinstance(perform, list) or any(p not in PROTECTIVE_ACTIONS for p in perform):
        raise ConfigError(src, "alerting.actions.perform", f"{perform!r} is not a list of protective actions",
                          f"list some of {sorted(PROTECTIVE_ACTIONS)} ([] = observe only)")
    overrides: dict[tuple[str, int], str | None] = {}
    rules = doc.get("rules") or {}
    if not isinstance(rules, dict):
        raise ConfigError(src, "alerting.actions.rules", "expected a mapping",
                          "e.g. rules: {thermal_runaway: {2: none}}")
    for rule, levels in rules.items():
        if not isinstance(levels, dict):
            raise ConfigError(src, f"alerting.actions.rules.{rule}", "expected {level: action}",
                              "e.g. {2: none, 3: slot_cutoff}")
        for level, action in levels.items():
            key = f"alerting.actions.rules.{rule}.{level}"
            if level not in (1, 2, 3):
                raise ConfigError(src, key, f"level {level!r} is not 1, 2 or 3", "use level numbers 1-3")
            if action in (None, "none"):
                action = None
            elif action not in PROTECTIVE_ACTIONS:
                raise ConfigError(src, key, f"{action!r} is not a protective action",
                                  f"use one of {sorted(PROTECTIVE_ACTIONS)} or none")
            overrides[(str(rule), level)] = action
    retry = doc.get("retry_s", 10.0)
    if isinstance(retry, bool) or not isinstance(retry, (int, float)) or not retry > 0:
        raise ConfigError(src, "alerting.actions.retry_s", f"{retry!r} is not a positive number",
                          "seconds between retries of a failed action, e.g. 10")
    return ActionPolicy(frozenset(perform), overrides, float(retry))


def _load_rules(src: str, path: str) -> RuleSet:
    try:
        return load_rules(path)
    except (RuleError, OSError) as err:
        raise ConfigError(src, "alerting.rules", str(err), "fix the rule file or leave the key out") from err


def _check_action_rules(src: str, rules: RuleSet, policy: ActionPolicy) -> None:
    """Per-rule action overrides must name a catalogue rule, and must not make a rule that reads
    fire-suppression state (input, fusion term or `when` guard) drive a protective action (P-3.3)."""
    for (rule, level), action in policy.overrides.items():
        if rule not in rules:
            raise ConfigError(src, f"alerting.actions.rules.{rule}", "no such rule",
                              "use a rule id from the catalogue (docs/warnings.md)")
        read_only = rules[rule].read_only_fields
        if action is not None and read_only:
            raise ConfigError(src, f"alerting.actions.rules.{rule}.{level}",
                              f"rule {rule!r} reads fire-suppression state ({', '.join(sorted(read_only))}) and "
                              f"is read-only (P-3.3): it must never drive a protective action, not {action!r}",
                              "write none or remove the entry; Cascade never acts on fire-suppression state")


def build_engine(config: AppConfig, settings: dict[str, Any], registry: CollectorRegistry | None = None) -> Engine:
    """The warning engine with its persistent store and threshold audit log; its metrics
    (``cascade_rule_errors_total``) go on ``registry``."""
    rules = _load_rules(config.source, settings["rules"])
    _check_action_rules(config.source, rules, settings["policy"])
    # Writes coalesced to one per STATE_SAVE_INTERVAL_S under a burst; start_app flushes on exit.
    store = AlertStore(settings["state_file"], save_interval_s=STATE_SAVE_INTERVAL_S)
    return Engine(rules, state=store, audit_path=settings["audit_file"], registry=registry)


def alert_service_for(pipeline: Pipeline, engine: Engine, **options: Any) -> AlertService:
    """The alert service wired to ``pipeline``: it subscribes to its readings, commands its sources'
    devices, stores its events (alert changes, command records) through its sink and registers
    its metrics on its registry. ``options`` are :class:`AlertService` keywords."""
    options.setdefault("registry", pipeline.registry)
    cabinets = [(site, device) for source in pipeline.sources for device, site in source.devices().items()]
    return AlertService(engine, feed=pipeline, commander=pipeline.commander, emit=pipeline.submit,
                        cabinets=cabinets, **options)


@contextlib.asynccontextmanager
async def start_app(config: AppConfig) -> AsyncIterator[Pipeline]:
    """Start the pipeline (and the alert service unless ``alerting.enabled`` is false)."""
    settings = alerting_settings(config)
    pipeline = Pipeline(config)
    if not settings["enabled"]:
        async with pipeline:
            yield pipeline
        return
    engine = build_engine(config, settings, pipeline.registry)
    service = alert_service_for(pipeline, engine, alertmanager_url=settings["alertmanager_url"],
                                resend_interval_s=float(settings["resend_interval_s"]), policy=settings["policy"],
                                generator_url=settings["generator_url"],
                                failed_actions_path=_beside(settings["state_file"], "-failed-actions.json"))
    add_routes(pipeline.app, service, token=settings["api_token"])
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(engine.state.flush)  # runs last: the final alert changes reach the disk
        await stack.enter_async_context(service)
        await stack.enter_async_context(pipeline)
        stack.push_async_callback(service.stop_actions)  # runs first on exit, while cabinets are connected
        pipeline.alerts = service  # for callers that want the service (tests, status)
        yield pipeline
