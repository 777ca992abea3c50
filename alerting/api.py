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
| ``GET /api/cabinets/{cabinet}/commands`` | ``{"cabinet", "slots": [{"slot", "level"}], "commands": [...]}`` its slots and the commands the caller may send |
| ``POST /api/cabinets/{cabinet}/commands`` | body ``{"command", "slot", "value", "reason", "confirm"}`` → 200 the record (read back); 502 the cabinet refused; 400/404/409 not sent |
| ``GET /control?cabinet=C0003`` | the control page (:mod:`alerting.control`) |

Every answer of the app, whoever added the route, carries the security headers of ``/api/v1``, and each
client has a rate limit on the ``/api/...`` routes (:func:`alerting.api_v1.harden`: 429 ``rate_limited``
with ``Retry-After``); ``/metrics`` and ``/health`` are not limited.

Who may call what is :class:`alerting.auth.ApiAuth`'s business (docs/security.md): with an issuer
configured every route needs a bearer JWT and a role (viewer and regulator read, a regulator without
personal data; operator acknowledges and starts/stops charging; engineer also changes thresholds, resets
faults and sets parameters; admin all),
and the token's subject is recorded as who acted. Alert keys contain slashes (``rule@site/cabinet/slot``);
send them as they are or percent-encoded. Errors are ``{"error": <what to send instead, in the caller's
language>, "code": <stable code>, "detail": <the same in English>}``, like the auth refusals: the language
is the request's ``Accept-Language`` (``zh``/``en``), else the service's (Simplified Chinese by default).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from aiohttp import web

from alerting.actions import CHARGING_COMMANDS, CONTROLS, ForbiddenCommand
from alerting.api_v1 import harden
from alerting.apiv1.ratelimit import RateLimiter
from alerting.auth import ApiAuth, redact_alert, redact_entries
from alerting.control import COMMAND_LABELS, add_control_page
from alerting.i18n import N_, AlertTexts
from alerting.rules import RuleError
from alerting.service import AlertService, ControlRefused
from alerting.state import AlertKey
from core.auth import ACK, CHARGING, CONTROL, READ, THRESHOLDS, Principal

__all__ = ["add_routes"]


def add_routes(app: web.Application, service: AlertService, *, token: str | None = None,
               auth: ApiAuth | None = None, limiter: RateLimiter | None = None) -> None:
    """Register the alert routes and the control page on ``app`` and harden the whole app (call before the
    app's runner is set up).

    ``auth`` decides who may do what (P-5.1.2.7; :class:`~alerting.auth.ApiAuth`). Without it, ``token``
    is the deprecated shared API token (changes need it, reading stays open); with neither, the API is
    open except for remote cabinet control. ``limiter``: each client's budget on the ``/api/...`` routes
    (default 10 requests/s, burst 50; pass ``/api/v1``'s to give a client one budget for both).
    """
    engine = service.engine
    auth = auth if auth is not None else ApiAuth(api_token=token)
    harden(app, auth=auth, limiter=limiter if limiter is not None else RateLimiter(10.0, 50))
    add_control_page(app, language=auth.language)

    def who_acts(principal: Principal, body: dict[str, Any]) -> str:
        """The token's subject when there is one: the audit names who acted, not who they say they are."""
        return principal.subject if principal.via == "jwt" else body["who"]

    def cross_site(request: web.Request) -> web.Response | None:
        """Refuse what a web page on another site could make a browser send (with or without a token:
        loopback without one is the local default). A browser sends a cross-site request without a
        preflight only as a "simple" request (text/plain, form bodies), and names the page's origin."""
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        texts = auth.texts_for(request)
        if content_type != "application/json":
            return _error(texts, 415, "unsupported_media_type",
                          N_("send the body as JSON with 'Content-Type: application/json' (got '{got}')"),
                          got=content_type or "none")
        origin = request.headers.get("Origin")
        if origin is not None and urllib.parse.urlsplit(origin).netloc != request.host:
            return _error(texts, 403, "cross_site",
                          N_("a request from the web page '{origin}' may not change anything; use the API or "
                             "`cascade alerts` directly"), origin=origin[:100])
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
        texts = auth.texts_for(request)
        key = urllib.parse.unquote(request.match_info["key"])
        by_token = principal.via == "jwt"
        body = await _json_body(request, texts, {} if by_token else {"who": str}, {"comment": str, "who": str})
        if (bad := _too_long(texts, body, who=MAX_WHO, comment=MAX_COMMENT)) is not None:
            return bad
        try:
            alert = service.acknowledge(key, who_acts(principal, body), body.get("comment", ""))
        except KeyError:
            return _error(texts, 404, "unknown_alert",
                          N_("no active alert '{key}'; list active alerts with GET /api/alerts (cascade alerts "
                             "list); it may have cleared already"), key=key)
        except ValueError as err:
            return _raw_error(400, "invalid", str(err))
        return web.json_response(alert)

    async def thresholds(request: web.Request) -> web.Response:
        principal = await auth.require(request, READ)
        rules = [_rule_dict(r) for r in engine.rules.values()]
        audit = engine.audit if principal.can(READ) else redact_entries(engine.audit, "who", "reason")
        return web.json_response({"rules": rules, "audit": audit})

    async def set_threshold(request: web.Request) -> web.Response:
        principal = await auth.require(request, THRESHOLDS)
        texts = auth.texts_for(request)
        rule_id = request.match_info["rule"]
        try:
            level = int(request.match_info["level"])
        except ValueError:
            return _error(texts, 400, "bad_level", N_("level '{level}' is not 1, 2 or 3"),
                          level=request.match_info["level"])
        if (bad := cross_site(request)) is not None:
            return bad
        if rule_id not in engine.rules:
            return _error(texts, 404, "unknown_rule", N_("no rule '{rule}'; list rules with GET /api/thresholds"),
                          rule=rule_id)
        by_token = principal.via == "jwt"
        body = await _json_body(request, texts,
                                {"value": (int, float), "reason": str, **({} if by_token else {"who": str})},
                                {"who": str})
        if (bad := _too_long(texts, body, who=MAX_WHO, reason=MAX_COMMENT)) is not None:
            return bad
        try:
            entry = engine.set_threshold(rule_id, level, body["value"], who_acts(principal, body), body["reason"])
        except (RuleError, ValueError) as err:
            return _raw_error(400, "invalid_threshold", str(err))
        return web.json_response(entry)

    async def actions(request: web.Request) -> web.Response:
        principal = await auth.require(request, READ)
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _error(auth.texts_for(request), 400, "bad_limit", N_("limit must be an integer, e.g. ?limit=20"))
        records = list(service.actions.recent)[-max(limit, 0):] if limit > 0 else []
        out = [r.to_dict() for r in records]
        if not principal.can(READ):
            out = redact_entries(out, "actor", "reason")
        return web.json_response({"actions": out})

    async def commands(request: web.Request) -> web.Response:
        """What the control page shows: the cabinet's slots with their alert level, and each command with
        what it needs and whether this caller may send it (a person's token with the role)."""
        principal = await auth.require(request, READ)
        texts = auth.texts_for(request)
        cabinet = request.match_info["cabinet"]
        commander = service.actions.commander
        count = None if commander is None else commander.slot_count(cabinet)
        if count is None:
            return _error(texts, 404, "unknown_cabinet",
                          N_("no cabinet '{cabinet}' in this collector; list cabinets with GET /api/alerts/rollup "
                             "(cascade alerts rollup) or check the fleet file"), cabinet=cabinet[:64])
        levels: dict[int | None, int] = {}
        for alert in service.active_alerts():
            key = AlertKey.parse(alert["key"])
            if key.cabinet == cabinet:
                levels[key.slot] = max(levels.get(key.slot, 0), int(alert["level"]))
        person = principal.via == "jwt"
        out = []
        for name, spec in CONTROLS.items():
            needed = _permission(name)
            out.append({"name": name, "label": texts.tr(COMMAND_LABELS[name]), "slot": spec.slot,
                        "confirm": spec.confirm, "permission": needed, "allowed": person and principal.can(needed),
                        "value": None if spec.value is not None else {"min": spec.limits[0], "max": spec.limits[1]}})
        return web.json_response({"cabinet": cabinet, "level": levels.get(None, 0),
                                  "slots": [{"slot": n, "level": max(levels.get(n, 0), levels.get(None, 0))}
                                            for n in range(1, count + 1)],
                                  "commands": out}, dumps=lambda v: json.dumps(v, ensure_ascii=False))

    async def command(request: web.Request) -> web.Response:
        # Charging is the least any command needs; fault reset and parameters need the engineer's CONTROL.
        # Asked for up front when the body names such a command, so a refusal names the role it needs.
        named = await _peek_command(request)
        needed = _permission(named) if named is not None and named in CONTROLS else CHARGING
        principal = await auth.require(request, needed)
        if (bad := cross_site(request)) is not None:
            return bad
        texts = auth.texts_for(request)
        cabinet = request.match_info["cabinet"]
        body = await _json_body(request, texts, {"command": str, "reason": str},
                                {"slot": int, "value": int, "confirm": bool})
        if body["command"] not in CHARGING_COMMANDS and needed != CONTROL:
            principal = await auth.require(request, CONTROL)
        if (bad := _too_long(texts, body, reason=MAX_COMMENT, command=64)) is not None:
            return bad
        if not body["reason"].strip():
            return _error(texts, 400, "empty_reason", N_("'reason' is empty; say why, e.g. \"battery replaced, fault "
                                                         "cleared on site\" (cascade alerts command: --reason)"))
        try:
            record = await service.control(cabinet, body["command"], slot=body.get("slot"), value=body.get("value"),
                                           who=principal.subject, reason=body["reason"].strip(),
                                           confirm=body.get("confirm", False))
        except ControlRefused as err:
            return _error(texts, err.status, err.code, err.msgid, **err.values)
        except ForbiddenCommand as err:
            return _raw_error(403, "forbidden_command", str(err))
        return web.json_response(record.to_dict(), status=200 if record.ok else 502)

    app.router.add_get("/api/alerts", list_alerts)
    app.router.add_get("/api/alerts/rollup", rollup)
    app.router.add_post("/api/alerts/{key:.+}/ack", ack)
    app.router.add_get("/api/thresholds", thresholds)
    app.router.add_put("/api/thresholds/{rule}/{level}", set_threshold)
    app.router.add_get("/api/actions", actions)
    app.router.add_get("/api/cabinets/{cabinet}/commands", commands)
    app.router.add_post("/api/cabinets/{cabinet}/commands", command)


def _permission(command: str) -> str:
    """What sending ``command`` needs: starting and stopping charging is the operator's, the rest the engineer's."""
    return CHARGING if command in CHARGING_COMMANDS else CONTROL


MAX_WHO = 64
"""Characters of ``who`` (a person or service name) in an acknowledgement or threshold change."""
MAX_COMMENT = 500
"""Characters of an acknowledgement's ``comment`` or a threshold change's ``reason``: they are kept in
the state file and the audit log, and a request must not be able to grow them without bound."""


def _too_long(texts: AlertTexts, body: dict[str, Any], **limits: int) -> web.Response | None:
    for name, limit in limits.items():
        value = body.get(name)
        if isinstance(value, str) and len(value) > limit:
            return _error(texts, 400, "too_long", N_("'{name}' is {length} characters; at most {limit}"), name=name,
                          length=len(value), limit=limit)
        if name == "who" and isinstance(value, str) and not value.strip():
            return _error(texts, 400, "empty_who", N_("'who' is empty; say who acts, e.g. noc-alice"))
    return None


async def _peek_command(request: web.Request) -> str | None:
    """The ``command`` a request body names, if it is a JSON object naming one (the body is read again later)."""
    try:
        body = await request.json()
    except Exception:  # noqa: BLE001 - not JSON: _json_body says so, after the token is checked
        return None
    command = body.get("command") if isinstance(body, dict) else None
    return command if isinstance(command, str) else None


async def _json_body(request: web.Request, texts: AlertTexts, required: dict[str, Any],
                     optional: dict[str, Any]) -> dict[str, Any]:
    """The JSON object body with the given keys and types; raises HTTPBadRequest naming the problem."""
    example = json.dumps({k: _example(t) for k, t in {**required, **optional}.items()})
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: absurd nesting
        raise _bad(texts, "not_json", N_("body is not JSON; send e.g. {example}"), example=example) from None
    if not isinstance(body, dict):
        raise _bad(texts, "not_object", N_("body must be a JSON object, e.g. {example}"), example=example)
    for name in required:
        if name not in body:
            raise _bad(texts, "missing_key", N_("missing '{name}'; send e.g. {example}"), name=name, example=example)
    for name, kind in {**required, **optional}.items():
        if name in body and (not isinstance(body[name], kind) or (isinstance(body[name], bool) and kind is not bool)):
            raise _bad(texts, "wrong_type", N_("'{name}' must be {kind}, got {got}"), name=name,
                       kind=_KindName(kind), got=json.dumps(body[name], ensure_ascii=False)[:100])
    unknown = set(body) - set(required) - set(optional)
    if unknown:
        raise _bad(texts, "unknown_key", N_("unknown key(s) {unknown}; allowed: {allowed}"),
                   unknown=", ".join(sorted(unknown))[:200], allowed=", ".join(sorted({**required, **optional})))
    return body


def _example(kind: Any) -> Any:
    return 52 if kind in ((int, float), int) else True if kind is bool else "text"


_KIND_NAMES = {int: N_("an integer"), bool: N_("true or false"), str: N_("a string")}
_A_NUMBER = N_("a number")


class _KindName:
    """A JSON type's name, translated when the message is (a value of :func:`_error`)."""

    def __init__(self, kind: Any) -> None:
        self.msgid = _KIND_NAMES.get(kind, _A_NUMBER)


_ENGLISH = AlertTexts("en")


def _texts_of(texts: AlertTexts, values: dict[str, Any]) -> dict[str, Any]:
    return {k: texts.tr(v.msgid) if isinstance(v, _KindName) else v for k, v in values.items()}


def _body(texts: AlertTexts, code: str, msgid: str, values: dict[str, Any]) -> dict[str, str]:
    """The error body: the message in the caller's language, the stable code, the English detail."""
    return {"error": texts.tr(msgid, **_texts_of(texts, values)), "code": code,
            "detail": _ENGLISH.tr(msgid, **_texts_of(_ENGLISH, values))}


def _bad(texts: AlertTexts, code: str, msgid: str, **values: Any) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps(_body(texts, code, msgid, values), ensure_ascii=False),
                              content_type="application/json")


def _error(texts: AlertTexts, status: int, code: str, msgid: str, **values: Any) -> web.Response:
    return web.json_response(_body(texts, code, msgid, values), status=status,
                             dumps=lambda v: json.dumps(v, ensure_ascii=False))


def _raw_error(status: int, code: str, message: str) -> web.Response:
    """An error whose text comes from elsewhere (the rule validation, the allow-list): English only."""
    return web.json_response({"error": message, "code": code, "detail": message}, status=status,
                             dumps=lambda v: json.dumps(v, ensure_ascii=False))


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
