"""Who may call the alert API: bearer tokens and roles at the HTTP door (docs/security.md).

    auth = ApiAuth(TokenVerifier(settings))                 # every route needs a valid token
    principal = await auth.require(request, ACK)            # raises a 401/403/503 JSON response

Three modes, from the configuration (``alerting.auth`` and ``alerting.api_token``):

* **tokens** (an issuer is configured): every route, reading included, needs ``Authorization: Bearer
  <JWT>`` from that issuer (:class:`core.auth.TokenVerifier`); the roles in it decide what the caller
  may do (:data:`core.auth.ROLE_PERMISSIONS`) and its subject is recorded as who acted. The shared
  API token is refused unless ``alerting.auth.accept_api_token`` is true (deprecated: it carries
  ``api_token_role`` and no person).
* **shared token** (only ``alerting.api_token``, deprecated): the behaviour before tokens — changes
  need the shared token, reading is open, who acted is what the request says.
* **open** (neither, the loopback default of ``make run`` without an issuer): everything is allowed
  except remote cabinet control, which always needs a person's token.

Refusals are JSON ``{"error": <message in the caller's language>, "code": <stable code>, "detail":
<English detail>}``; the language is the request's ``Accept-Language`` (``zh``/``en``), else the
service's (Simplified Chinese by default). 401 carries ``WWW-Authenticate: Bearer`` (RFC 6750).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterable

from aiohttp import web

from alerting.i18n import DEFAULT_LANGUAGE, N_, AlertTexts
from core.auth import (
    ACK,
    ADMIN,
    CHARGING,
    CONTROL,
    READ,
    READ_REDACTED,
    ROLE_PERMISSIONS,
    ROLES,
    THRESHOLDS,
    VEHICLE,
    VEHICLE_POWER,
    AuthError,
    Principal,
    TokenSettings,
    TokenVerifier,
)

__all__ = ["ApiAuth", "redact_alert", "redact_entries"]

log = logging.getLogger(__name__)

_MESSAGES = {
    "missing_token": N_("This API needs a bearer token: send 'Authorization: Bearer <token>' (cascade alerts "
                        "--token; locally `cascade token --role {role} --sub <you>`)."),
    "malformed": N_("The bearer token is not a valid signed token; get a new one from the identity provider."),
    "unsupported_alg": N_("The token is signed with an algorithm this API does not accept; get a token from the "
                          "configured identity provider."),
    "unknown_key": N_("The token was signed with a key the identity provider does not publish; get a new token."),
    "bad_signature": N_("The token's signature is not valid; get a new token from the identity provider."),
    "expired": N_("The token has expired; get a new one."),
    "not_yet_valid": N_("The token is not valid yet; check this machine's clock or wait."),
    "wrong_issuer": N_("The token comes from another issuer than the one this API trusts."),
    "wrong_audience": N_("The token is not meant for this API (wrong audience); ask for a token for {audience}."),
    "missing_claim": N_("The token lacks a required claim (subject, expiry, issuer or audience)."),
    "invalid_claim": N_("The token has an invalid claim."),
    "keys_unavailable": N_("The identity provider's signing keys cannot be fetched now; try again shortly."),
    "bad_api_token": N_("The API token is not valid; send 'Authorization: Bearer <token>' with the configured "
                        "token (cascade alerts --token, or CASCADE_API_TOKEN)."),
    "forbidden": N_("Your roles ({roles}) do not allow this: {what} needs one of the roles {needed}."),
    "needs_person": N_("Remote cabinet control needs a person's token with the role {role} from the identity "
                       "provider, so the audit names who sent each command."),
    "needs_person_vehicle": N_("Remote vehicle commands need a person's token with the role {role} from the "
                               "identity provider, so the audit names who sent each command."),
    "needs_issuer": N_("This Cascade has no identity provider configured (alerting.auth.issuer), so it cannot check "
                       "the token sent and remote control is off. Turn it on as docs/security.md says (locally: "
                       "uncomment auth: in config/local.yaml and restart make run)."),
}
_WHAT = {
    READ: N_("reading alerts, thresholds and actions"),
    ACK: N_("acknowledging an alert"),
    THRESHOLDS: N_("changing a threshold"),
    CONTROL: N_("remote cabinet control"),
    CHARGING: N_("starting and stopping charging"),
    VEHICLE: N_("remote vehicle commands (arm, disarm, motor lock and unlock)"),
    VEHICLE_POWER: N_("switching a vehicle's power on or off remotely"),
    ADMIN: N_("administration"),
}
_NO_ROLES = N_("none")
# A bearer token verified once per request: the rate limit keys on its subject before the route's own
# check, and a route may check twice (the cabinet command asks for more when the body names more).
_VERIFIED: web.RequestKey[tuple[TokenSettings, str, Principal | AuthError]] = web.RequestKey("cascade_verified_token")


class ApiAuth:
    """The HTTP door of the alert API: who the caller is (:meth:`require`) and what they may see.

    ``verifier``: checks bearer JWTs (None: no issuer configured). ``api_token``: the deprecated shared
    token (accepted with ``verifier`` only when ``accept_api_token``); it acts as ``api_token_role``.
    ``language``: the default language of refusals.
    """

    def __init__(self, verifier: TokenVerifier | None = None, *, api_token: str | None = None,
                 accept_api_token: bool = False, api_token_role: str = "engineer",
                 language: str = DEFAULT_LANGUAGE) -> None:
        if api_token_role not in ROLE_PERMISSIONS:
            raise ValueError(f"api_token_role {api_token_role!r} is not a role; use one of {', '.join(ROLES)}")
        self.verifier = verifier
        self._api_token = api_token or None
        self._accept_api_token = accept_api_token or verifier is None
        self._api_token_role = api_token_role
        self._texts = {lang: AlertTexts(lang) for lang in ("zh_CN", "en")}
        self._language = language if language in self._texts else DEFAULT_LANGUAGE
        self._warned = False

    @property
    def mode(self) -> str:
        """``tokens``, ``shared_token`` or ``open``."""
        return "tokens" if self.verifier is not None else "shared_token" if self._api_token else "open"

    @property
    def language(self) -> str:
        """The default language of answers (``zh_CN`` or ``en``), when the request names none."""
        return self._language

    async def client_key(self, request: web.Request) -> str:
        """Whom a request counts against for rate limits: ``sub:<subject>`` for a valid personal token,
        else ``ip:<address>`` (no token, a bad one, the shared token, no issuer). Never raises."""
        bearer = _bearer(request)
        if self.verifier is not None and bearer:
            outcome = await self._verify(request, bearer)
            if isinstance(outcome, Principal) and outcome.subject:
                return f"sub:{outcome.subject}"
        return f"ip:{request.remote}"

    async def _verify(self, request: web.Request, bearer: str) -> Principal | AuthError:
        """The verifier's verdict on ``bearer``, worked out once per request."""
        assert self.verifier is not None
        settings = self.verifier.settings
        if _VERIFIED in request:
            cached = request[_VERIFIED]
            if cached[0] == settings and cached[1] == bearer:
                return cached[2]
        outcome: Principal | AuthError
        try:
            outcome = await self.verifier.verify(bearer)
        except AuthError as err:
            outcome = err
        request[_VERIFIED] = (settings, bearer, outcome)
        return outcome

    async def require(self, request: web.Request, permission: str) -> Principal:
        """The caller, when allowed ``permission``; else raises the 401/403/503 response. For READ a
        regulator passes too: the caller must then show only what :data:`READ_REDACTED` allows."""
        principal = await self._identify(request, permission)
        allowed = principal.can(permission) or (permission == READ and principal.can(READ_REDACTED))
        if not allowed:
            needed = sorted(role for role, granted in ROLE_PERMISSIONS.items() if permission in granted)
            texts = self._texts_for(request)
            roles = ", ".join(sorted(principal.roles)) or texts.tr(_NO_ROLES)
            log.warning("refused %s %s to %s (roles: %s): needs %s", request.method, request.path,
                        principal.subject, roles, permission)
            raise self._refusal(request, 403, "forbidden", f"roles {roles} do not allow {permission}",
                                roles=roles, what=texts.tr(_WHAT.get(permission, permission)),
                                needed=", ".join(needed))
        if permission in (CONTROL, CHARGING, VEHICLE, VEHICLE_POWER) and principal.via != "jwt":
            # A token sent to an API that cannot check tokens: say what is off, not "send a token".
            unchecked = principal.via == "open" and bool(_bearer(request))
            raise self._refusal(request, 401 if principal.via == "open" else 403, "needs_person",
                                "remote control needs a person's token" + (
                                    "; no identity provider is configured (alerting.auth.issuer)" if unchecked else ""),
                                role=_least_role(permission),
                                message="needs_issuer" if unchecked else
                                "needs_person_vehicle" if permission in (VEHICLE, VEHICLE_POWER) else None)
        return principal

    async def _identify(self, request: web.Request, permission: str) -> Principal:
        bearer = _bearer(request)
        if self.verifier is None and self._api_token is None:
            return Principal("", frozenset(ROLES) - {"regulator"}, "open")
        if self.verifier is None:
            # The shared token of old: reading is open (whatever the header says), changing needs the token.
            if permission in (READ, READ_REDACTED):
                return Principal("", frozenset({"viewer"}), "open")
            if not bearer or not self._is_api_token(bearer):
                raise self._refusal(request, 401, "bad_api_token" if bearer else "missing_token", "no valid API token",
                                    role=_least_role(permission))
            return Principal("", frozenset({self._api_token_role}), "api_token")
        if not bearer:
            raise self._refusal(request, 401, "missing_token", "no bearer token", role=_least_role(permission))
        if self._accept_api_token and self._api_token is not None and self._is_api_token(bearer):
            if not self._warned:
                log.warning("the shared API token was used (deprecated): give people their own tokens from the "
                            "identity provider and remove alerting.api_token (docs/security.md)")
                self._warned = True
            return Principal("api-token", frozenset({self._api_token_role}), "api_token")
        outcome = await self._verify(request, bearer)
        if isinstance(outcome, AuthError):
            log.info("refused %s %s: %s (%s)", request.method, request.path, outcome.code, outcome.detail)
            raise self._refusal(request, outcome.status, outcome.code, outcome.detail,
                                audience=self.verifier.settings.audience)
        return outcome

    def _is_api_token(self, given: str) -> bool:
        return self._api_token is not None and hmac.compare_digest(given.encode(), self._api_token.encode())

    def texts_for(self, request: web.Request) -> AlertTexts:
        """The texts in the request's language (``Accept-Language`` zh/en, else the service's)."""
        return self._texts_for(request)

    def _texts_for(self, request: web.Request) -> AlertTexts:
        wanted = request.headers.get("Accept-Language", "").split(",")[0].split(";")[0].strip().lower()
        if wanted.startswith("zh"):
            return self._texts["zh_CN"]
        if wanted.startswith("en"):
            return self._texts["en"]
        return self._texts[self._language]

    def _refusal(self, request: web.Request, status: int, code: str, detail: str, *, message: str | None = None,
                 **values: str) -> web.HTTPException:
        """``message``: the key of the text in :data:`_MESSAGES` when it is not ``code``'s own."""
        texts = self._texts_for(request)
        text = texts.tr(_MESSAGES.get(message or code, _MESSAGES["invalid_claim"]), **values)
        body = json.dumps({"error": text, "code": code, "detail": detail}, ensure_ascii=False)
        kind: type[web.HTTPException] = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden}.get(
            status, web.HTTPServiceUnavailable)
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = f'Bearer realm="cascade", error="invalid_token", error_description="{code}"'
        elif status == 403:
            headers["WWW-Authenticate"] = f'Bearer realm="cascade", error="insufficient_scope", error_description="{code}"'
        return kind(text=body, content_type="application/json", headers=headers)


def _bearer(request: web.Request) -> str:
    """The credentials of an ``Authorization: Bearer`` header; empty without one."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def _least_role(permission: str) -> str:
    """The first role (fewest rights) that grants ``permission``: the one a missing-token hint names."""
    return next((role for role in ROLES if permission in ROLE_PERMISSIONS.get(role, ())), "admin")


def redact_alert(alert: dict[str, object]) -> dict[str, object]:
    """An alert as a regulator sees it: whether and when it was acknowledged, not by whom or why."""
    ack = alert.get("ack")
    if isinstance(ack, dict):
        alert = {**alert, "ack": {**ack, "who": None, "comment": None}}
    return alert


def redact_entries(entries: Iterable[dict[str, object]], *fields: str) -> list[dict[str, object]]:
    """Audit entries with the personal ``fields`` (who, reason, a person's actor) blanked."""
    out = []
    for entry in entries:
        entry = dict(entry)
        for name in fields:
            value = entry.get(name)
            if name == "actor" and isinstance(value, str) and not value.startswith("user:"):
                continue  # a rule acted: nothing personal
            if name in entry:
                entry[name] = None
        out.append(entry)
    return out
