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
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from alerting.actions import ALLOWED_COMMANDS, ActionPolicy
from alerting.api import add_routes
from alerting.api_v1 import add_v1_routes, harden
from alerting.apiv1 import InfluxReader, RateLimiter
from alerting.auth import ApiAuth
from alerting.engine import Engine
from alerting.rules import DEFAULT_CATALOGUE, RuleError, RuleSet, load_rules
from alerting.service import AlertService
from alerting.state import AlertStore
from alerting.webhooks import Subscriber, WebhookPusher
from cascade.commands import add_command_routes, forward_vehicle_commands, vehicle_commands_for
from cascade.config import ActionsSection, AlertingSection, AppConfig, ConfigError
from cascade.pipeline import Pipeline
from cascade.tracks import add_track_routes
from collectors.ble.commands import GatewayCommander
from core.auth import TokenSettings, TokenVerifier
from core.events import Point
from core.ports import EventHandler
from core.validation import validate

__all__ = ["ALERTING_DEFAULTS", "alert_service_for", "alerting_settings", "api_auth", "build_engine",
           "gateway_commander_for", "start_app", "webhook_pusher"]

#: Every ``alerting:`` key with its default (the schema is :class:`cascade.config.AlertingSection`).
ALERTING_DEFAULTS: dict[str, Any] = AlertingSection().model_dump()
#: At most one alert-state write per this many seconds; a crash loses at most this much of
#: alert-state changes (they re-derive from live data after the restart, docs/warnings.md).
STATE_SAVE_INTERVAL_S = 1.0
_DOC = "see docs/alert-service.md#configuration"


def _beside(path: str, suffix: str) -> Path:
    """A file next to ``path`` named after it (alerts.json -> alerts-failed-actions.json)."""
    p = Path(path)
    return p.with_name(p.stem + suffix)


def alerting_settings(config: AppConfig) -> dict[str, Any]:
    """``config.alerting`` validated (:class:`~cascade.config.AlertingSection`) and completed with
    defaults, plus ``"policy"`` (an :class:`ActionPolicy`); raises ConfigError naming the key."""
    section = validate(AlertingSection, config.alerting or {}, config.source, key="alerting", error=ConfigError)
    s = section.model_dump()
    s["policy"] = _action_policy(section.actions)
    if s["rules"] is None:
        s["rules"] = str(DEFAULT_CATALOGUE)
    if s["policy"].overrides:  # checked against the rules here too, so `cascade check-config` sees it
        _check_action_rules(config.source, _load_rules(config.source, s["rules"]), s["policy"])
    if s["enabled"]:
        _check_action_commands(config, s["policy"])
    if s["auth"]["issuer"] and s["api_token"] and not s["auth"]["accept_api_token"]:
        raise ConfigError(config.source, "alerting.api_token",
                          "a shared API token next to auth.issuer would be ignored: the API takes the issuer's tokens",
                          "remove api_token (give people tokens from the identity provider), or set "
                          "auth.accept_api_token: true while clients move over (deprecated)")
    return s


def api_auth(settings: dict[str, Any]) -> ApiAuth:
    """Who may call the alert API, from :func:`alerting_settings` (docs/security.md)."""
    a = settings["auth"]
    verifier = None
    if a["issuer"]:
        verifier = TokenVerifier(TokenSettings(
            issuer=a["issuer"], audience=a["audience"], jwks_url=a["jwks_url"], roles_claim=a["roles_claim"],
            subject_claim=a["subject_claim"], leeway_s=float(a["leeway_s"]), algorithms=tuple(a["algorithms"]),
            jwks_cache_s=float(a["jwks_cache_s"]), jwks_min_refresh_s=float(a["jwks_min_refresh_s"])))
    return ApiAuth(verifier, api_token=settings["api_token"], accept_api_token=a["accept_api_token"],
                   api_token_role=a["api_token_role"], language=settings.get("language", "zh_CN"))


def webhook_pusher(config: AppConfig, settings: dict[str, Any]) -> WebhookPusher:
    """The warning-signal push to ``alerting.webhooks`` (docs/api.md), each subscriber's secret read now:
    a missing or short secret fails at start-up, naming the key."""
    subscribers = []
    for i, hook in enumerate(settings["webhooks"]):
        key = f"alerting.webhooks[{i}]"
        if hook["secret_file"] is not None:
            try:
                secret = Path(hook["secret_file"]).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as err:
                raise ConfigError(config.source, f"{key}.secret_file", f"cannot read {hook['secret_file']}: {err}",
                                  "create the file with the secret shared with the subscriber (mode 0600)") from err
            where = f"{key}.secret_file"
        else:
            secret = os.environ.get(hook["secret_env"], "").strip()
            where = f"{key}.secret_env"
        if len(secret) < 16:
            raise ConfigError(config.source, where, f"the secret of webhook {hook['name']!r} is missing or shorter "
                              "than 16 characters", "share a long random secret, e.g. `openssl rand -hex 32`")
        subscribers.append(Subscriber(
            hook["name"], hook["url"], secret.encode("utf-8"), frozenset(hook["levels"]), float(hook["timeout_s"]),
            int(hook["max_attempts"]), float(hook["backoff_s"]), float(hook["backoff_cap_s"])))
    try:
        return WebhookPusher(subscribers, log_path=settings["webhook_log_file"])
    except ValueError as err:
        raise ConfigError(config.source, "alerting.webhooks", str(err), "give every subscriber its own name") from err


def _check_action_commands(config: AppConfig, policy: ActionPolicy) -> None:
    """Every protective action the policy performs must be something each cabinet's profile can do:
    refused at start-up, not discovered as an error at every poll during an incident."""
    if not policy.perform:
        return
    used = sorted({c.profile for c in config.cabinets})
    for name in used:
        profile = config.profiles[name]
        missing = sorted(ALLOWED_COMMANDS - set(profile.commands))
        if missing:
            raise ConfigError(config.source, "alerting.actions.perform",
                              f"protective actions {sorted(policy.perform)} write {', '.join(missing)}, which "
                              f"profile {name!r}{'' if str(profile.source) == name else f' ({profile.source})'} "
                              "does not define",
                              f"add commands.{missing[0]} to that profile, or write perform: [] to observe only")


def _action_policy(actions: ActionsSection) -> ActionPolicy:
    """The validated ``alerting.actions`` as the policy the action runner applies."""
    overrides = {(rule, level): action for rule, levels in actions.rules.items() for level, action in levels.items()}
    return ActionPolicy(frozenset(actions.perform), overrides, actions.retry_s)


def _load_rules(src: str, path: str) -> RuleSet:
    try:
        return load_rules(path)
    except (RuleError, OSError) as err:
        raise ConfigError(src, "alerting.rules", str(err), "fix the rule file or leave the key out") from err
    except UnicodeDecodeError as err:
        raise ConfigError(src, "alerting.rules", f"{path} is not a UTF-8 text file",
                          "give a rule YAML file or leave the key out") from err


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
    return Engine(rules, state=store, audit_path=settings["audit_file"], registry=registry,
                  language=settings.get("language", "zh_CN"))


def _offline_limits(config: AppConfig, configured: float | None) -> dict[tuple[str, str], float]:
    """Seconds of silence after which each cabinet is offline: the configured value, else two poll
    intervals plus the request timeout (a missed poll can be a hiccup; two are not), at least 10 s."""
    return {(c.site, c.id): configured if configured is not None else max(10.0, 2 * c.interval_s + c.timeout_s)
            for c in config.cabinets}


def alert_service_for(pipeline: Pipeline, engine: Engine, *, also_emit: EventHandler | None = None,
                      **options: Any) -> AlertService:
    """The alert service wired to ``pipeline``: it subscribes to its readings, commands its sources'
    devices, stores its events (alert changes, command records) through its sink and registers
    its metrics on its registry. ``also_emit`` receives the same events too (the webhook push).
    ``options`` are :class:`AlertService` keywords."""
    options.setdefault("registry", pipeline.registry)
    cabinets = [(site, device) for source in pipeline.sources for device, site in source.devices().items()]
    emit: EventHandler = pipeline.submit
    if also_emit is not None:
        second = also_emit

        def emit(points: Iterable[Point]) -> None:
            points = list(points)
            pipeline.submit(points)
            second(points)
    return AlertService(engine, feed=pipeline, commander=pipeline.commander, emit=emit,
                        cabinets=cabinets, **options)


def gateway_commander_for(config: AppConfig, pipeline: Pipeline, **options: Any) -> GatewayCommander | None:
    """The protective path to BLE gateways' packs (docs/ble-gateway.md): on the vehicles' broker, when the
    watch feeds gateway readings to the engine; it learns the gateways from the pipeline's readings and
    serves their packs as one more commander. None without a watched broker. ``options``: its keywords."""
    v = config.vehicles
    if v is None or v.mqtt is None or not v.watch:
        return None
    m = v.mqtt
    options.setdefault("client_id", f"cascade-gateway-commands-{os.getpid()}")
    commander = GatewayCommander(host=m.host, port=m.port, username=m.username, password=m.password,
                                 tls_ca=m.tls_ca or None, keepalive_s=m.keepalive_s, **options)
    pipeline.subscribe(commander.observe)  # before the alert service: it knows the slot before it is commanded
    pipeline.commander.add(commander)
    return commander


@contextlib.asynccontextmanager
async def start_app(config: AppConfig) -> AsyncIterator[Pipeline]:
    """Start the pipeline (and the alert service unless ``alerting.enabled`` is false)."""
    settings = alerting_settings(config)
    pipeline = Pipeline(config)
    limiter = RateLimiter(float(settings["api_v1"]["rate_per_s"]), int(settings["api_v1"]["burst"]))
    if not settings["enabled"]:
        harden(pipeline.app, auth=api_auth(settings), limiter=limiter)  # /metrics, /health: the headers
        async with pipeline:
            yield pipeline
        return
    engine = build_engine(config, settings, pipeline.registry)
    gateways = gateway_commander_for(config, pipeline)
    webhooks = webhook_pusher(config, settings)
    service = alert_service_for(pipeline, engine, also_emit=webhooks.handle if webhooks.subscribers else None,
                                alertmanager_url=settings["alertmanager_url"],
                                resend_interval_s=float(settings["resend_interval_s"]), policy=settings["policy"],
                                offline_after_s=_offline_limits(config, settings["offline_after_s"]),
                                escalate_after_s=settings["escalate_after_s"],
                                generator_url=settings["generator_url"],
                                failed_actions_path=_beside(settings["state_file"], "-failed-actions.json"),
                                control_audit_path=settings["control_audit_file"])
    # One rate-limit budget per client for the whole HTTP API (/api/... and /api/v1).
    add_routes(pipeline.app, service, auth=api_auth(settings), limiter=limiter)
    influx = config.influxdb
    add_v1_routes(pipeline.app, service, auth=api_auth(settings),
                  influx=None if influx is None or influx.api != "v1" else InfluxReader(
                      influx.url, influx.database, username=influx.username, password=influx.password),
                  webhooks=webhooks, limiter=limiter,
                  control_audit_path=settings["control_audit_file"], language=settings.get("language", "zh_CN"))
    # Vehicle commands (docs/vehicles.md, "Commands"): from the HTTP API, the CLI and rules with a vehicle_command.
    commands = vehicle_commands_for(config, service, pipeline, settings)
    if commands is not None:
        add_command_routes(pipeline.app, commands, auth=api_auth(settings))
        forward_vehicle_commands(service, commands)
    if config.vehicles is not None and config.influxdb is not None and config.influxdb.api == "v1":
        add_track_routes(pipeline.app, config.influxdb.url, config.influxdb.database,
                         username=config.influxdb.username, password=config.influxdb.password, auth=api_auth(settings))
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(engine.state.flush)  # runs last: the final alert changes reach the disk
        await stack.enter_async_context(webhooks)
        await stack.enter_async_context(service)
        if commands is not None:
            await stack.enter_async_context(commands)
        if gateways is not None:
            await stack.enter_async_context(gateways)
        await stack.enter_async_context(pipeline)
        stack.push_async_callback(service.stop_actions)  # runs first on exit, while cabinets are connected
        pipeline.alerts = service  # for callers that want the service (tests, status)
        yield pipeline
