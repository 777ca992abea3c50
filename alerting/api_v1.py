"""The third-party API, ``/api/v1`` (P-5.5.3; docs/api.md): readings, warning signals, thresholds and rules,
analysis data and logs, with an OpenAPI 3.1 document generated from its models (``alerting/apiv1/``);
mounted as a sub-application of the collector's HTTP server.

    add_v1_routes(pipeline.app, service, auth=api_auth(settings), influx=InfluxReader(...),
                  webhooks=pusher, limiter=RateLimiter(10, 50), control_audit_path="var/control-audit.jsonl")

Every route goes through one door (``_Api.endpoint``): the caller's token and role
(:class:`alerting.auth.ApiAuth`; a regulator reads without personal data), the caller's rate limit (token
subject, else address: 429 with ``Retry-After``), the query, path and body checked against the
operation's models (400 naming the problem, 413, 415, cross-site writes refused), and the answer
serialised through its response model. Every answer, refusals included, carries the security headers and
``Cache-Control: no-store``; every error is ``{"error", "code", "detail"}``, the shape of the alert API's
refusals. :func:`harden` gives every other route of the collector's server the same headers and the same
per-client limit (the alert API installs it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from alerting.apiv1 import models as m
from alerting.apiv1.influx import InfluxReader, StoreUnavailable
from alerting.apiv1.openapi import PREFIX, Operation, build_document
from alerting.apiv1.ratelimit import RateLimiter
from alerting.auth import ApiAuth, redact_alert, redact_entries
from alerting.categories import CATEGORY_NAMES, category_of
from alerting.i18n import DEFAULT_LANGUAGE, N_, AlertTexts
from alerting.rules import RuleError
from alerting.service import AlertService
from alerting.state import AlertKey
from alerting.webhooks import WebhookPusher
from core.auth import READ, THRESHOLDS, Principal

__all__ = ["OPERATIONS", "MAX_BODY", "SECURITY_HEADERS", "add_v1_routes", "harden", "openapi_document"]

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
"""Bytes of a request body at most (a threshold change is ~100)."""
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_MESSAGES = {
    "bad_request": N_("The request is not valid: see the detail for what to send."),
    "bad_cursor": N_("The cursor is not one this API gave for this query; start again without it."),
    "not_found": N_("There is no such resource in this API; see /api/v1/openapi.json."),
    "method_not_allowed": N_("This method is not allowed here; see /api/v1/openapi.json."),
    "payload_too_large": N_("The request body is too large."),
    "unsupported_media_type": N_("Send the body as JSON with 'Content-Type: application/json'."),
    "cross_site": N_("A request from another web site may not change anything; use the API directly."),
    "rate_limited": N_("Too many requests: wait {seconds} s and try again."),
    "storage_unavailable": N_("The reading store (InfluxDB) cannot answer now; try again shortly."),
    "internal": N_("Something went wrong on our side; the error is logged."),
}
_TEXTS = {lang: AlertTexts(lang) for lang in ("zh_CN", "en")}


class ApiError(Exception):
    """A refusal: HTTP ``status``, stable ``code``, English ``detail`` (and message values)."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None,
                 **values: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers, self.values = status, code, detail, headers or {}, values


def _language(request: web.Request, default: str) -> AlertTexts:
    wanted = request.headers.get("Accept-Language", "").split(",")[0].split(";")[0].strip().lower()
    return _TEXTS["zh_CN" if wanted.startswith("zh") else "en" if wanted.startswith("en") else default]


def _error_response(request: web.Request, status: int, code: str, detail: str, default_language: str,
                    headers: dict[str, str] | None = None, **values: str) -> web.Response:
    message = _language(request, default_language).tr(_MESSAGES.get(code, _MESSAGES["bad_request"]), **values)
    body = json.dumps({"error": message[:2000], "code": code, "detail": detail[:2000]}, ensure_ascii=False)
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


# --- helpers ----------------------------------------------------------------------------------------


def _take(limiter: RateLimiter, key: str) -> None:
    """One request of client ``key``; raises the 429 (with ``Retry-After``) when it has none left."""
    wait = limiter.take(key)
    if wait > 0:
        seconds = str(max(1, int(wait + 0.999)))
        raise ApiError(429, "rate_limited", f"rate limit of {limiter.rate_per_s:g} requests/s (burst "
                                            f"{limiter.burst}) reached for this client; retry after "
                                            f"{seconds} s", headers={"Retry-After": seconds}, seconds=seconds)


def _iso(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def _clip(text: Any, limit: int) -> str | None:
    return None if text is None else str(text)[:limit]


def _explain(err: ValidationError, where: str) -> str:
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(x) for x in e["loc"]) or where
        parts.append(f"{where} {loc}: {e['msg']}")
    return "; ".join(parts)[:1000]


def _encode_cursor(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _decode_cursor(cursor: str | None, scope: str) -> dict[str, Any]:
    """The state of a cursor this API gave for the same query (``scope``); {} for none."""
    if cursor is None:
        return {}
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        state = None
    if not isinstance(state, dict) or state.get("q") != scope:
        raise ApiError(400, "bad_cursor", "cursor is not a next_cursor of this query; repeat the same parameters or "
                                          "leave the cursor out")
    return state


def _scope(name: str, query: BaseModel) -> str:
    """A short fingerprint of the query a cursor belongs to (everything but the page itself)."""
    params = query.model_dump(exclude={"cursor", "limit"}, mode="json")
    return hashlib.sha256(json.dumps([name, params], sort_keys=True).encode()).hexdigest()[:12]


def _page(name: str, query: m.PageQuery, items: list[Any]) -> tuple[list[Any], str | None]:
    """An offset page of ``items`` and the cursor of the next one."""
    scope = _scope(name, query)
    offset = _decode_cursor(query.cursor, scope).get("o", 0)
    if not isinstance(offset, int) or offset < 0:
        raise ApiError(400, "bad_cursor", "cursor offset is not valid; leave the cursor out")
    chunk = items[offset:offset + query.limit]
    more = offset + query.limit < len(items)
    return chunk, _encode_cursor({"q": scope, "o": offset + query.limit}) if more else None


@dataclass(slots=True)
class Call:
    """One authorised request, parsed: the caller, its query, path and body models and whether it reads
    without personal data."""

    request: web.Request
    principal: Principal
    query: Any
    path: Any
    body: Any
    texts: AlertTexts  # the caller's language (Accept-Language, else the service's)

    @property
    def redacted(self) -> bool:
        return not self.principal.can(READ)


Handler = Callable[[Call], Awaitable[Any]]


# --- the API ------------------------------------------------------------------------------------


class _Api:
    def __init__(self, service: AlertService, auth: ApiAuth, *, influx: InfluxReader | None,
                 webhooks: WebhookPusher | None, limiter: RateLimiter, control_audit_path: str | Path | None,
                 language: str) -> None:
        self.service = service
        self.engine = service.engine
        self.auth = auth
        self.influx = influx
        self.webhooks = webhooks
        self.limiter = limiter
        self.control_audit_path = Path(control_audit_path) if control_audit_path is not None else None
        self.language = language
        self.document: dict[str, Any] = {}

    # -- the door ---------------------------------------------------------------------------------

    def _limit(self, key: str) -> None:
        _take(self.limiter, key)

    async def _principal(self, request: web.Request, permission: str) -> Principal:
        address = f"ip:{request.remote}"
        try:
            principal = await self.auth.require(request, permission)
        except web.HTTPException:
            self._limit(address)  # refused callers are limited too: by address, before any more work
            raise
        self._limit(f"sub:{principal.subject}" if principal.via == "jwt" and principal.subject else address)
        return principal

    async def _body(self, request: web.Request, model: type[BaseModel]) -> BaseModel:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", f"send the body as JSON with 'Content-Type: "
                                                          f"application/json' (got {content_type[:60] or 'none'!r})")
        origin = request.headers.get("Origin")
        if origin is not None and urllib.parse.urlsplit(origin).netloc != request.host:
            raise ApiError(403, "cross_site", f"a request from the web page {origin[:100]!r} may not change anything")
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise ApiError(413, "payload_too_large", f"the body is {request.content_length} bytes; at most {MAX_BODY}")
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise ApiError(413, "payload_too_large", f"the body is over {MAX_BODY} bytes")
        try:
            return model.model_validate_json(raw)
        except ValidationError as err:
            raise ApiError(400, "bad_request", f"{_explain(err, 'body')}; the body's schema is {model.__name__} in "
                                               f"{PREFIX}/openapi.json") from None

    def endpoint(self, op: Operation, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            principal = await self._principal(request, op.permission)
            query = path = body = None
            try:
                if op.query is not None:
                    repeated = sorted({k for k in request.query if len(request.query.getall(k)) > 1})
                    if repeated:
                        raise ApiError(400, "bad_request", f"give each parameter once ({', '.join(repeated)[:100]})")
                    query = op.query.model_validate_strings(dict(request.query))
                elif request.query:
                    raise ApiError(400, "bad_request", f"{op.operation_id} takes no query parameters")
                if op.path_params is not None:
                    path = op.path_params.model_validate_strings(dict(request.match_info))
            except ValidationError as err:
                raise ApiError(400, "bad_request", _explain(err, "parameter")) from None
            if op.body is not None:
                body = await self._body(request, op.body)
            result = await handler(Call(request, principal, query, path, body, _language(request, self.language)))
            if isinstance(result, BaseModel):
                return web.Response(text=result.model_dump_json(), content_type="application/json")
            return web.json_response(result)
        return handle

    # -- data exchange ------------------------------------------------------------------------------

    async def openapi(self, call: Call) -> dict[str, Any]:
        return self.document

    async def readings(self, call: Call) -> m.ReadingPage:
        q: m.ReadingsQuery = call.query
        if self.influx is None:
            raise ApiError(503, "storage_unavailable", "this collector stores no readings (no influxdb section, or "
                                                       "not InfluxDB 1.x)")
        until = q.until or datetime.now(UTC)
        since = q.since or until - timedelta(hours=1)
        if since > until:
            raise ApiError(400, "bad_request", "since is after until; give the start first")
        if q.slot is not None and q.cabinet is None:
            raise ApiError(400, "bad_request", "slot needs cabinet: slot numbers repeat in every cabinet")
        filters: dict[str, str | int] = {k: v for k, v in (("site", q.site), ("cabinet", q.cabinet),
                                                            ("slot", q.slot), ("battery_id", q.battery))
                                         if v is not None}
        scope = _scope("readings", q)
        state = _decode_cursor(q.cursor, scope)
        start_ns, skip = state.get("t"), state.get("n", 0)
        if state and (not isinstance(start_ns, int) or not isinstance(skip, int) or skip < 0 or skip > 100_000):
            raise ApiError(400, "bad_cursor", "cursor position is not valid; leave the cursor out")
        since_ns = start_ns if start_ns is not None else int(since.timestamp() * 1e9)
        try:
            rows = await self.influx.readings(filters, since_ns, int(until.timestamp() * 1e9), limit=q.limit + 1,
                                              offset=skip)
        except StoreUnavailable as err:
            log.warning("readings query: %s", err)
            raise ApiError(503, "storage_unavailable", err.problem) from None
        more = len(rows) > q.limit
        rows = rows[:q.limit]
        items = [self._reading(r) for r in rows]
        cursor = None
        if more and rows:
            last = int(rows[-1]["time"])
            at_last = sum(1 for r in rows if int(r["time"]) == last)
            at_last += skip if start_ns == last else 0
            cursor = _encode_cursor({"q": scope, "t": last, "n": at_last})
        return m.ReadingPage(items=items, next_cursor=cursor)

    @staticmethod
    def _reading(row: dict[str, Any]) -> m.Reading:
        values = {k: row.get(k) for k in m.READING_FIELDS}
        values["battery_id"] = _clip(values["battery_id"], 64)
        slot = row.get("slot")
        return m.Reading(time=datetime.fromtimestamp(int(row["time"]) / 1e9, UTC), site=str(row.get("site"))[:64],
                         cabinet=str(row.get("cabinet"))[:64], slot=int(str(slot)) if str(slot).isdigit() else 0, **values)

    # -- warning signals ------------------------------------------------------------------------------

    async def alerts(self, call: Call) -> m.AlertPage:
        q: m.AlertsQuery = call.query
        out = []
        for alert in self.service.active_alerts():
            if call.redacted:
                alert = redact_alert(alert)
            item = self._alert(alert)
            if (q.level is None or item.level == q.level) and (q.site is None or item.site == q.site) and (
                    q.cabinet is None or item.cabinet == q.cabinet):
                out.append(item)
        items, cursor = _page("alerts", q, out)
        return m.AlertPage(items=items, next_cursor=cursor)

    @staticmethod
    def _alert(alert: dict[str, Any]) -> m.Alert:
        key = AlertKey.parse(alert["key"])
        notes = alert.get("annotations") or {}
        ack = alert.get("ack")
        value = alert.get("value")
        return m.Alert(
            key=str(alert["key"])[:256], rule=key.rule[:64], category=category_of(key.rule), level=alert["level"],
            site=key.site[:64], cabinet=key.cabinet[:64], slot=key.slot, battery=_clip(alert.get("battery"), 64),
            value=float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None,
            raised_at=_iso(alert["raised_at"]), updated_at=_iso(alert["updated_at"]),
            protective_action=_clip(alert.get("protective_action"), 64), summary=_clip(notes.get("summary"), 2000),
            diagnosis=_clip(notes.get("diagnosis"), 2000), action=_clip(notes.get("action"), 2000),
            acknowledged=bool(alert.get("acknowledged")),
            ack=None if not isinstance(ack, dict) else m.AlertAck(
                at=_iso(ack["at"]), level=ack["level"], who=_clip(ack.get("who"), 64),
                comment=_clip(ack.get("comment"), 2000)),
            source=alert.get("source", "engine"))

    # -- configuration sharing and trigger conditions -----------------------------------------------

    @staticmethod
    def _levels(rule: Any) -> list[m.LevelCondition]:
        return [m.LevelCondition(level=lv.level, threshold=lv.threshold, compare=lv.compare, for_s=lv.for_s,
                                 protective_action=lv.protective_action) for lv in rule.levels]

    async def thresholds(self, call: Call) -> m.ThresholdList:
        return m.ThresholdList(rules=[
            m.RuleThresholds(id=r.id, description=call.texts.rule_text(r.description)[:2000], unit=r.unit[:64],
                             scope=r.scope, hysteresis=r.hysteresis, levels=self._levels(r))
            for r in self.engine.rules.values()])

    async def set_threshold(self, call: Call) -> m.AuditEntry:
        path: m.ThresholdPath = call.path
        body: m.ThresholdChange = call.body
        if path.rule not in self.engine.rules:
            raise ApiError(404, "not_found", f"no rule {path.rule!r}; list rules with GET {PREFIX}/thresholds")
        if call.principal.via == "jwt":
            who = call.principal.subject
        elif body.who is not None:
            who = body.who.strip()
        else:
            raise ApiError(400, "bad_request", "without a personal token say who changes it: send \"who\"")
        try:
            entry = self.engine.set_threshold(path.rule, path.level, body.value, who, body.reason)
        except (RuleError, ValueError) as err:
            raise ApiError(400, "bad_request", str(err)) from None
        return self._audit(entry)

    async def rules(self, call: Call) -> m.TriggerList:
        t = call.texts
        out = []
        for r in self.engine.rules.values():
            guard = None
            if r.when is not None:
                inp, compare, value = r.when
                guard = f"{inp.describe()} {compare} {value:g}"[:256]
            out.append(m.TriggerCondition(
                id=r.id, name=t.rule_text(r.name or r.description)[:256], description=t.rule_text(r.description)[:2000],
                category=category_of(r.id), scope=r.scope, unit=r.unit[:64],
                input=None if r.input is None else r.input.describe()[:256],
                fusion=[m.FusionTerm(input=term.input.describe()[:256], start=term.start, full=term.full,
                                     weight=term.weight) for term in r.fusion],
                guard=guard, hysteresis=r.hysteresis, clear_for_s=r.clear_for_s, levels=self._levels(r),
                overrides=len(r.overrides), diagnosis=t.rule_text(r.diagnosis)[:2000],
                action=t.rule_text(r.action)[:2000]))
        return m.TriggerList(rules=out)

    # -- analysis ----------------------------------------------------------------------------------

    async def alarm_stats(self, call: Call) -> m.AlarmStats:
        q: m.AlarmStatsQuery = call.query
        if self.influx is None:
            raise ApiError(503, "storage_unavailable", "this collector stores no alert history (no influxdb section)")
        until = q.until or datetime.now(UTC)
        since = q.since or until - timedelta(days=1)
        if since > until:
            raise ApiError(400, "bad_request", "since is after until; give the start first")
        try:
            counts = await self.influx.alarm_counts(int(since.timestamp() * 1e9), int(until.timestamp() * 1e9))
        except StoreUnavailable as err:
            raise ApiError(503, "storage_unavailable", err.problem) from None
        zh = call.texts.language.startswith("zh")
        items = [m.AlarmCount(category=cat[:64], category_name=CATEGORY_NAMES.get(cat, (cat, cat))[1 if zh else 0][:256],
                              level=level, count=n) for (cat, level), n in sorted(counts.items())]
        return m.AlarmStats(since=since, until=until, total=sum(counts.values()), counts=items)

    async def _health_rows(self, battery: str | None) -> list[dict[str, Any]]:
        if self.influx is None:
            raise ApiError(503, "storage_unavailable", "this collector reads no InfluxDB (no influxdb section, or not "
                                                       "InfluxDB 1.x): health analyses are stored there")
        try:
            return await self.influx.health_packs(battery)
        except StoreUnavailable as err:
            log.warning("health query: %s", err)
            raise ApiError(503, "storage_unavailable", err.problem) from None

    @staticmethod
    def _health_pack(row: dict[str, Any]) -> m.HealthPack:
        values = {name: row.get(name) for name in m.HEALTH_VALUES if isinstance(row.get(name), (int, float))}
        grade = row.get("grade")
        slot, last_seen = row.get("slot"), row.get("last_seen_ns")
        return m.HealthPack(
            battery=str(row.get("battery") or row.get("battery_id"))[:64], analysed_at=_iso(int(row["time"]) / 1e9),
            last_seen=_iso(last_seen / 1e9) if isinstance(last_seen, (int, float)) else None,
            site=str(row.get("site") or "")[:64], place=str(row.get("place") or "")[:64],
            place_kind=_clip(row.get("kind"), 64), slot=int(slot) if isinstance(slot, (int, float)) else None,
            grade=grade if grade in ("keep", "restrict", "retire") else "unknown",
            limits_crossed=[x[:64] for x in str(row.get("limits_crossed") or "").split(",") if x][:20], **values)

    async def health_packs(self, call: Call) -> m.HealthPackPage:
        q: m.HealthPacksQuery = call.query
        packs = sorted((self._health_pack(r) for r in await self._health_rows(q.battery)), key=lambda p: p.battery)
        packs = [p for p in packs if (q.site is None or p.site == q.site) and (
            q.cabinet is None or p.place == q.cabinet) and (q.grade is None or p.grade == q.grade)]
        items, cursor = _page("health-packs", q, packs)
        return m.HealthPackPage(items=items, next_cursor=cursor)

    async def health_pack(self, call: Call) -> m.HealthPack:
        path: m.HealthPackPath = call.path
        rows = await self._health_rows(path.battery)
        if not rows:
            raise ApiError(404, "not_found", f"no health analysis of battery {path.battery!r}; list the analysed packs "
                                             f"with GET {PREFIX}/health/packs (`cascade health analyse` stores them)")
        return self._health_pack(rows[0])

    # -- logs ----------------------------------------------------------------------------------------

    @staticmethod
    def _audit(entry: dict[str, Any]) -> m.AuditEntry:
        return m.AuditEntry(at=_iso(entry["at"]), rule=entry["rule"], level=entry["level"], old=entry.get("old"),
                            new=entry["new"], who=_clip(entry.get("who"), 64), reason=_clip(entry.get("reason"), 2000))

    async def threshold_log(self, call: Call) -> m.AuditPage:
        entries = self.engine.audit if not call.redacted else redact_entries(self.engine.audit, "who", "reason")
        items, cursor = _page("threshold-log", call.query, entries)
        return m.AuditPage(items=[self._audit(e) for e in items], next_cursor=cursor)

    @staticmethod
    def _command(entry: dict[str, Any]) -> m.CommandEntry:
        return m.CommandEntry(
            at=_iso(entry["at"]), completed_at=_iso(entry["completed_at"]), actor=_clip(entry.get("actor"), 256),
            alert=str(entry.get("alert", ""))[:256], action=str(entry["action"])[:64],
            command=str(entry["command"])[:64], site=str(entry["site"])[:64], cabinet=str(entry["cabinet"])[:64],
            slot=entry.get("slot"), value=int(entry["value"]), result=str(entry["result"])[:64],
            readback=entry.get("readback"), error=str(entry.get("error") or "")[:2000],
            reason=_clip(entry.get("reason"), 2000))

    def _commands(self, call: Call, name: str, entries: Iterable[dict[str, Any]]) -> m.CommandPage:
        entries = list(entries)
        if call.redacted:
            entries = redact_entries(entries, "actor", "reason")
        items, cursor = _page(name, call.query, entries)
        return m.CommandPage(items=[self._command(e) for e in items], next_cursor=cursor)

    async def action_log(self, call: Call) -> m.CommandPage:
        return self._commands(call, "action-log", (r.to_dict() for r in self.service.actions.recent))

    async def control_log(self, call: Call) -> m.CommandPage:
        q: m.LogQuery = call.query
        scope = _scope("control-log", q)
        offset = _decode_cursor(q.cursor, scope).get("o", 0)
        if not isinstance(offset, int) or offset < 0:
            raise ApiError(400, "bad_cursor", "cursor offset is not valid; leave the cursor out")
        entries: list[dict[str, Any]] = []
        path = self.control_audit_path
        if path is not None and path.exists():
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in islice(f, offset, offset + q.limit + 1):
                    try:
                        entries.append(json.loads(line))
                    except ValueError:
                        entries.append({"at": 0, "completed_at": 0, "actor": None, "alert": "", "action": "unreadable",
                                        "command": "", "site": "", "cabinet": "", "slot": None, "value": 0,
                                        "result": "unreadable", "error": "this audit line is not JSON"})
        more = len(entries) > q.limit
        entries = entries[:q.limit]
        if call.redacted:
            entries = redact_entries(entries, "actor", "reason")
        cursor = _encode_cursor({"q": scope, "o": offset + q.limit}) if more else None
        return m.CommandPage(items=[self._command(e) for e in entries], next_cursor=cursor)

    async def delivery_log(self, call: Call) -> m.DeliveryPage:
        recent = list(self.webhooks.recent) if self.webhooks is not None else []
        items, cursor = _page("delivery-log", call.query, recent)
        return m.DeliveryPage(items=[m.Delivery(
            id=d["id"], subscriber=d["subscriber"], event=d["event"], attempt=d["attempt"], at=_iso(d["at"]),
            status=d["status"], result=d["result"], error=d["error"][:2000]) for d in items], next_cursor=cursor)


def _operations(api: _Api | None) -> list[tuple[Operation, Handler | None]]:
    def h(name: str) -> Handler | None:
        return None if api is None else getattr(api, name)

    return [
        (Operation("GET", "/openapi.json", "getOpenApi", "This document", "meta", READ, None), h("openapi")),
        (Operation("GET", "/readings", "listReadings", "Slot readings by site, cabinet, slot, battery and time",
                   "data", READ, m.ReadingPage, query=m.ReadingsQuery,
                   description="Oldest first, from InfluxDB (measurement `slot`, docs/schema.md)."), h("readings")),
        (Operation("GET", "/alerts", "listAlerts", "Active warning signals, worst first", "warnings", READ,
                   m.AlertPage, query=m.AlertsQuery), h("alerts")),
        (Operation("GET", "/thresholds", "listThresholds", "The thresholds in force", "configuration", READ,
                   m.ThresholdList), h("thresholds")),
        (Operation("PUT", "/thresholds/{rule}/{level}", "setThreshold", "Change a base threshold (audited)",
                   "configuration", THRESHOLDS, m.AuditEntry, path_params=m.ThresholdPath, body=m.ThresholdChange,
                   errors=(404,)), h("set_threshold")),
        (Operation("GET", "/rules", "listRules", "Trigger conditions: the catalogue's rules and levels", "configuration",
                   READ, m.TriggerList), h("rules")),
        (Operation("GET", "/analysis/alarms", "alarmStatistics", "Alarms by category and level over a time range",
                   "analysis", READ, m.AlarmStats, query=m.AlarmStatsQuery), h("alarm_stats")),
        (Operation("GET", "/health/packs", "listHealthPacks", "Battery health: the newest analysis of each pack",
                   "analysis", READ, m.HealthPackPage, query=m.HealthPacksQuery,
                   description="From InfluxDB (measurement `battery_health`, written by `cascade health analyse`, "
                               "docs/battery-health.md), by battery id; `site` and `cabinet` are where each pack was "
                               "last seen. No personal data: a regulator reads the same."), h("health_packs")),
        (Operation("GET", "/health/packs/{battery}", "getHealthPack", "One pack's newest health analysis", "analysis",
                   READ, m.HealthPack, path_params=m.HealthPackPath, errors=(404,)), h("health_pack")),
        (Operation("GET", "/logs/thresholds", "thresholdLog", "Threshold changes in force (who, why, old, new)", "logs",
                   READ, m.AuditPage, query=m.LogQuery), h("threshold_log")),
        (Operation("GET", "/logs/actions", "actionLog", "Recent protective actions and remote commands", "logs", READ,
                   m.CommandPage, query=m.LogQuery), h("action_log")),
        (Operation("GET", "/logs/control", "controlLog", "The remote-control audit (append-only)", "logs", READ,
                   m.CommandPage, query=m.LogQuery), h("control_log")),
        (Operation("GET", "/logs/deliveries", "deliveryLog", "Warning-signal push attempts per subscriber", "logs",
                   READ, m.DeliveryPage, query=m.LogQuery), h("delivery_log")),
    ]


OPERATIONS: tuple[Operation, ...] = tuple(op for op, _ in _operations(None))


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of ``/api/v1`` (what ``GET /api/v1/openapi.json`` serves)."""
    return build_document(OPERATIONS)


def _middleware(language: str) -> Any:
    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse
        try:
            response = await handler(request)
        except ApiError as err:
            response = _error_response(request, err.status, err.code, err.detail, language, err.headers, **err.values)
        except web.HTTPException as err:
            if err.content_type == "application/json":  # the auth door's refusals: already this shape
                response = web.Response(status=err.status, text=err.text, content_type="application/json",
                                        headers={k: v for k, v in err.headers.items() if k.lower() not in (
                                            "content-type", "content-length")})
            else:
                code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                        415: "unsupported_media_type"}.get(err.status, "bad_request")
                keep = {k: v for k, v in err.headers.items() if k.lower() == "allow"}
                response = _error_response(request, err.status if err.status >= 400 else 400, code,
                                           f"{request.method} {request.path[:200]}: {err.reason}", language, keep)
        except Exception:
            log.exception("%s %s failed", request.method, request.path[:200])
            response = _error_response(request, 500, "internal", "internal error (logged)", language)
        response.headers.update(SECURITY_HEADERS)
        return response
    return guard


async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """Every answer gets the headers; a route that needs another policy (the control page's script) sets
    its own ``Content-Security-Policy`` and keeps it."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _limited(path: str) -> bool:
    """Routes the main guard counts: the ``/api/...`` ones, not ``/api/v1`` (its own door counts them) and not
    ``/metrics``, ``/health`` or the control page (Prometheus and health checks scrape without limit)."""
    return path.startswith("/api/") and not (path == PREFIX or path.startswith(PREFIX + "/"))


def harden(app: web.Application, *, auth: ApiAuth, limiter: RateLimiter) -> None:
    """Guard every route of ``app`` (the collector's HTTP server), however it was added: every answer,
    refusals and 404s included, carries :data:`SECURITY_HEADERS`; each client (token subject, else address,
    :meth:`ApiAuth.client_key`) has ``limiter``'s budget on the ``/api/...`` routes, past which it gets the
    same 429 as ``/api/v1`` (``rate_limited``, ``Retry-After``, in the caller's language). Call before the
    app's runner is set up."""
    @web.middleware
    async def limit(request: web.Request, handler: Any) -> web.StreamResponse:
        if _limited(request.path):
            try:
                _take(limiter, await auth.client_key(request))
            except ApiError as err:
                return _error_response(request, err.status, err.code, err.detail, auth.language, err.headers,
                                       **err.values)
        response: web.StreamResponse = await handler(request)
        return response

    app.middlewares.append(limit)
    app.on_response_prepare.append(_security_headers)


def add_v1_routes(app: web.Application, service: AlertService, *, auth: ApiAuth, influx: InfluxReader | None = None,
                  webhooks: WebhookPusher | None = None, limiter: RateLimiter | None = None,
                  control_audit_path: str | Path | None = None, language: str = DEFAULT_LANGUAGE) -> None:
    """Mount ``/api/v1`` on ``app`` (before its runner is set up). ``limiter`` default: 10 requests/s, burst 50."""
    api = _Api(service, auth, influx=influx, webhooks=webhooks, limiter=limiter or RateLimiter(10.0, 50),
               control_audit_path=control_audit_path, language=language)
    api.document = openapi_document()
    sub = web.Application(middlewares=[_middleware(language)])
    for op, handler in _operations(api):
        assert handler is not None
        sub.router.add_route(op.method, op.path, api.endpoint(op, handler))
    if influx is not None:
        async def close(_app: web.Application) -> None:
            await influx.close()
        sub.on_cleanup.append(close)
    app.add_subapp(PREFIX, sub)

