"""HTTP API of the alert service, served on the pipeline's metrics port (default 9108).

    add_routes(pipeline.app, service)     # before `async with pipeline` (aiohttp freezes the router)

| Method, path | Answer |
|---|---|
| ``GET /api/alerts`` | ``{"alerts": [...]}`` active alerts, worst first, with ack info |
| ``GET /api/alerts/rollup`` | ``{site: {level, cabinets: {cab: {level, slots: {n: level}}}}}`` |
| ``POST /api/alerts/{key}/ack`` | body ``{"who", "comment"}`` → 200 the alert; 404 unknown key; 400 bad body |
| ``GET /api/thresholds`` | ``{"rules": [...], "audit": [...]}`` base thresholds and this run's changes |
| ``PUT /api/thresholds/{rule}/{level}`` | body ``{"value", "who", "reason"}`` → 200 the audit entry; 400 invalid; 404 rule |
| ``GET /api/actions`` | ``{"actions": [...]}`` recent protective actions and remote commands, newest last (``?limit=N``) |
| ``POST /api/cabinets/{cabinet}/commands`` | body ``{"command", "slot", "value", "reason", "confirm"}`` → 200 the record (read back); 502 the cabinet refused; 400/404/409 not sent |

Who may call what is :class:`alerting.auth.ApiAuth`'s business (docs/security.md): with an issuer
configured every route needs a bearer JWT and a role (viewer and regulator read, a regulator without
personal data; operator acknowledges; engineer also changes thresholds and commands cabinets; admin all),
and the token's subject is recorded as who acted. Alert keys contain slashes (``rule@site/cabinet/slot``);
send them as they are or percent-encoded. Errors are ``{"error": "..."}`` saying what to send instead.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from aiohttp import web

from alerting.actions import CHARGING_COMMANDS, ForbiddenCommand
from alerting.auth import ApiAuth, redact_alert, redact_entries
from alerting.rules import RuleError
from alerting.service import AlertService, ControlRefused
from core.auth import ACK, CHARGING, CONTROL, READ, THRESHOLDS, Principal

__all__ = ["add_routes"]


def add_routes(app: web.Application, service: AlertService, *, token: str | None = None,
               auth: ApiAuth | None = None) -> None:
    """Register the alert routes on ``app`` (call before the app's runner is set up).

    ``auth`` decides who may do what (P-5.1.2.7; :class:`~alerting.auth.ApiAuth`). Without it, ``token``
    is the deprecated shared API token (changes need it, reading stays open); with neither, the API is
    open except for remote cabinet control.
    """
    engine = service.engine
    auth = auth if auth is not None else ApiAuth(api_token=token)

    def who_acts(principal: Principal, body: dict[str, Any]) -> str:
        """The token's subject when there is one: the audit names who acted, not who they say they are."""
        return principal.subject if principal.via == "jwt" else body["who"]

    def cross_site(request: web.Request) -> web.Response | None:
        """Refuse what a web page on another site could make a browser send (with or without a token:
        loopback without one is the local default). A browser sends a cross-site request without a
        preflight only as a "simple" request (text/plain, form bodies), and names the page's origin."""
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _error(415, f"send the body as JSON with 'Content-Type: application/json' (got "
                               f"{content_type or 'none'!r})")
        origin = request.headers.get("Origin")
        if origin is not None and urllib.parse.urlsplit(origin).netloc != request.host:
            return _error(403, f"a request from the web page {origin[:100]!r} may not change alerts; use the "
                               "API or `cascade alerts` directly")
        return None

    async def list_alerts(request: web.Request) -> web.Response:
        principal = await auth.require(request, READ)
        alerts = service.active_alerts()
        if not principal.can(READ):
            alerts = [redact_alert(a) for a in alerts]
        return web.json_response({"alerts": alerts})

    async def rollup(request: web.Request) -> web.Response:
        await auth.require(request, READ)
        return web.json_response(_json_keys(service.store.rollup()))

    async def ack(request: web.Request) -> web.Response:
        principal = await auth.require(request, ACK)
        if (bad := cross_site(request)) is not None:
            return bad
        key = urllib.parse.unquote(request.match_info["key"])
        by_token = principal.via == "jwt"
        body = await _json_body(request, {} if by_token else {"who": str}, {"comment": str, "who": str})
        if (bad := _too_long(body, who=MAX_WHO, comment=MAX_COMMENT)) is not None:
            return bad
        try:
            alert = service.acknowledge(key, who_acts(principal, body), body.get("comment", ""))
        except KeyError:
            return _error(404, f"no active alert {key!r}; list active alerts with GET /api/alerts "
                               "(it may have cleared already)")
        except ValueError as err:
            return _error(400, str(err))
        return web.json_response(alert)

    async def thresholds(request: web.Request) -> web.Response:
        principal = await auth.require(request, READ)
        rules = [_rule_dict(r) for r in engine.rules.values()]
        audit = engine.audit if principal.can(READ) else redact_entries(engine.audit, "who", "reason")
        return web.json_response({"rules": rules, "audit": audit})

    async def set_threshold(request: web.Request) -> web.Response:
        principal = await auth.require(request, THRESHOLDS)
        rule_id = request.match_info["rule"]
        try:
            level = int(request.match_info["level"])
        except ValueError:
            return _error(400, f"level {request.match_info['level']!r} is not 1, 2 or 3")
        if (bad := cross_site(request)) is not None:
            return bad
        if rule_id not in engine.rules:
            return _error(404, f"no rule {rule_id!r}; list rules with GET /api/thresholds")
        by_token = principal.via == "jwt"
        body = await _json_body(request, {"value": (int, float), "reason": str, **({} if by_token else {"who": str})},
                                {"who": str})
        if (bad := _too_long(body, who=MAX_WHO, reason=MAX_COMMENT)) is not None:
            return bad
        try:
            entry = engine.set_threshold(rule_id, level, body["value"], who_acts(principal, body), body["reason"])
        except (RuleError, ValueError) as err:
            return _error(400, str(err))
        return web.json_response(entry)

    async def actions(request: web.Request) -> web.Response:
        principal = await auth.require(request, READ)
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _error(400, "limit must be an integer, e.g. ?limit=20")
        records = list(service.actions.recent)[-max(limit, 0):] if limit > 0 else []
        out = [r.to_dict() for r in records]
        if not principal.can(READ):
            out = redact_entries(out, "actor", "reason")
        return web.json_response({"actions": out})

    async def command(request: web.Request) -> web.Response:
        principal = await auth.require(request, CHARGING)  # the least any command needs; more below
        if (bad := cross_site(request)) is not None:
            return bad
        cabinet = request.match_info["cabinet"]
        body = await _json_body(request, {"command": str, "reason": str},
                                {"slot": int, "value": int, "confirm": bool})
        if body["command"] not in CHARGING_COMMANDS:  # fault reset, parameters: the engineer's
            principal = await auth.require(request, CONTROL)
        if (bad := _too_long(body, reason=MAX_COMMENT, command=64)) is not None:
            return bad
        if not body["reason"].strip():
            return _error(400, "'reason' is empty; say why, e.g. \"battery replaced, fault cleared on site\"")
        try:
            record = await service.control(cabinet, body["command"], slot=body.get("slot"), value=body.get("value"),
                                           who=principal.subject, reason=body["reason"].strip(),
                                           confirm=body.get("confirm", False))
        except ControlRefused as err:
            return _error(err.status, str(err))
        except ForbiddenCommand as err:
            return _error(403, str(err))
        return web.json_response(record.to_dict(), status=200 if record.ok else 502)

    app.router.add_get("/api/alerts", list_alerts)
    app.router.add_get("/api/alerts/rollup", rollup)
    app.router.add_post("/api/alerts/{key:.+}/ack", ack)
    app.router.add_get("/api/thresholds", thresholds)
    app.router.add_put("/api/thresholds/{rule}/{level}", set_threshold)
    app.router.add_get("/api/actions", actions)
    app.router.add_post("/api/cabinets/{cabinet}/commands", command)


MAX_WHO = 64
"""Characters of ``who`` (a person or service name) in an acknowledgement or threshold change."""
MAX_COMMENT = 500
"""Characters of an acknowledgement's ``comment`` or a threshold change's ``reason``: they are kept in
the state file and the audit log, and a request must not be able to grow them without bound."""


def _too_long(body: dict[str, Any], **limits: int) -> web.Response | None:
    for name, limit in limits.items():
        value = body.get(name)
        if isinstance(value, str) and len(value) > limit:
            return _error(400, f"{name!r} is {len(value)} characters; at most {limit}")
        if name == "who" and isinstance(value, str) and not value.strip():
            return _error(400, "'who' is empty; say who acts, e.g. noc-alice")
    return None


async def _json_body(request: web.Request, required: dict[str, Any], optional: dict[str, Any]) -> dict[str, Any]:
    """The JSON object body with the given keys and types; raises HTTPBadRequest naming the problem."""
    example = json.dumps({k: _example(t) for k, t in {**required, **optional}.items()})
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: absurd nesting
        raise _bad(f"body is not JSON; send e.g. {example}") from None
    if not isinstance(body, dict):
        raise _bad(f"body must be a JSON object, e.g. {example}")
    for name in required:
        if name not in body:
            raise _bad(f"missing {name!r}; send e.g. {example}")
    for name, kind in {**required, **optional}.items():
        if name in body and (not isinstance(body[name], kind) or (isinstance(body[name], bool) and kind is not bool)):
            raise _bad(f"{name!r} must be {_kind_name(kind)}, got {body[name]!r}")
    unknown = set(body) - set(required) - set(optional)
    if unknown:
        raise _bad(f"unknown key(s) {sorted(unknown)}; allowed: {sorted({**required, **optional})}")
    return body


def _example(kind: Any) -> Any:
    return 52 if kind in ((int, float), int) else True if kind is bool else "text"


def _kind_name(kind: Any) -> str:
    return {int: "an integer", bool: "true or false", str: "a string"}.get(kind, "a number")


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _json_keys(value: Any) -> Any:
    """JSON object keys must be strings (slot numbers in the roll-up are ints)."""
    if isinstance(value, dict):
        return {str(k): _json_keys(v) for k, v in value.items()}
    return value


def _rule_dict(rule: Any) -> dict[str, Any]:
    return {
        "id": rule.id, "description": rule.description, "scope": rule.scope, "unit": rule.unit,
        "hysteresis": rule.hysteresis, "source": rule.source,
        "levels": {str(lv.level): {"threshold": lv.threshold, "compare": lv.compare, "for_s": lv.for_s,
                                   "protective_action": lv.protective_action} for lv in rule.levels},
    }
