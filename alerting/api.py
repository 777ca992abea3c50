"""HTTP API of the alert service, served on the pipeline's metrics port (default 9108).

    add_routes(pipeline.app, service)     # before `async with pipeline` (aiohttp freezes the router)

| Method, path | Answer |
|---|---|
| ``GET /api/alerts`` | ``{"alerts": [...]}`` active alerts, worst first, with ack info |
| ``GET /api/alerts/rollup`` | ``{site: {level, cabinets: {cab: {level, slots: {n: level}}}}}`` |
| ``POST /api/alerts/{key}/ack`` | body ``{"who", "comment"}`` → 200 the alert; 404 unknown key; 400 bad body |
| ``GET /api/thresholds`` | ``{"rules": [...], "audit": [...]}`` base thresholds and this run's changes |
| ``PUT /api/thresholds/{rule}/{level}`` | body ``{"value", "who", "reason"}`` → 200 the audit entry; 400 invalid; 404 rule |
| ``GET /api/actions`` | ``{"actions": [...]}`` recent protective actions, newest last (``?limit=N``) |

With an API token configured (``alerting.api_token``), ack and PUT need ``Authorization: Bearer
<token>`` (401 otherwise). Alert keys contain slashes (``rule@site/cabinet/slot``); send them as they are or percent-encoded.
Errors are ``{"error": "..."}`` saying what to send instead.
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
from typing import Any

from aiohttp import web

from alerting.rules import RuleError
from alerting.service import AlertService

__all__ = ["add_routes"]


def add_routes(app: web.Application, service: AlertService, *, token: str | None = None) -> None:
    """Register the alert routes on ``app`` (call before the app's runner is set up).

    With ``token``, the routes that change something (acknowledge, set a threshold) need
    ``Authorization: Bearer <token>`` (P-5.1.2.7: only authorised people act); reading stays open,
    like /metrics.
    """
    engine = service.engine

    def authorised(request: web.Request) -> bool:
        if not token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def refused() -> web.Response:
        return _error(401, "this action needs the API token: send 'Authorization: Bearer <token>' "
                           "(cascade alerts --token, or CASCADE_API_TOKEN)")

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
        return web.json_response({"alerts": service.active_alerts()})

    async def rollup(request: web.Request) -> web.Response:
        return web.json_response(_json_keys(service.store.rollup()))

    async def ack(request: web.Request) -> web.Response:
        if not authorised(request):
            return refused()
        if (bad := cross_site(request)) is not None:
            return bad
        key = urllib.parse.unquote(request.match_info["key"])
        body = await _json_body(request, {"who": str}, {"comment": str})
        if (bad := _too_long(body, who=MAX_WHO, comment=MAX_COMMENT)) is not None:
            return bad
        try:
            alert = service.acknowledge(key, body["who"], body.get("comment", ""))
        except KeyError:
            return _error(404, f"no active alert {key!r}; list active alerts with GET /api/alerts "
                               "(it may have cleared already)")
        except ValueError as err:
            return _error(400, str(err))
        return web.json_response(alert)

    async def thresholds(request: web.Request) -> web.Response:
        rules = [_rule_dict(r) for r in engine.rules.values()]
        return web.json_response({"rules": rules, "audit": engine.audit})

    async def set_threshold(request: web.Request) -> web.Response:
        if not authorised(request):
            return refused()
        rule_id = request.match_info["rule"]
        try:
            level = int(request.match_info["level"])
        except ValueError:
            return _error(400, f"level {request.match_info['level']!r} is not 1, 2 or 3")
        if (bad := cross_site(request)) is not None:
            return bad
        if rule_id not in engine.rules:
            return _error(404, f"no rule {rule_id!r}; list rules with GET /api/thresholds")
        body = await _json_body(request, {"value": (int, float), "who": str, "reason": str}, {})
        if (bad := _too_long(body, who=MAX_WHO, reason=MAX_COMMENT)) is not None:
            return bad
        try:
            entry = engine.set_threshold(rule_id, level, body["value"], body["who"], body["reason"])
        except (RuleError, ValueError) as err:
            return _error(400, str(err))
        return web.json_response(entry)

    async def actions(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _error(400, "limit must be an integer, e.g. ?limit=20")
        records = list(service.actions.recent)[-max(limit, 0):] if limit > 0 else []
        return web.json_response({"actions": [r.to_dict() for r in records]})

    app.router.add_get("/api/alerts", list_alerts)
    app.router.add_get("/api/alerts/rollup", rollup)
    app.router.add_post("/api/alerts/{key:.+}/ack", ack)
    app.router.add_get("/api/thresholds", thresholds)
    app.router.add_put("/api/thresholds/{rule}/{level}", set_threshold)
    app.router.add_get("/api/actions", actions)


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
        if name in body and (not isinstance(body[name], kind) or isinstance(body[name], bool)):
            raise _bad(f"{name!r} must be {_kind_name(kind)}, got {body[name]!r}")
    unknown = set(body) - set(required) - set(optional)
    if unknown:
        raise _bad(f"unknown key(s) {sorted(unknown)}; allowed: {sorted({**required, **optional})}")
    return body


def _example(kind: Any) -> Any:
    return 52 if kind == (int, float) else "text"


def _kind_name(kind: Any) -> str:
    return "a number" if kind == (int, float) else "a string"


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
