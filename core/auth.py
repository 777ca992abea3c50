"""Who is calling, and what they may do: OAuth 2.0 / OpenID Connect bearer tokens (JWT) checked
against the issuer's published keys (JWKS), and Cascade's roles.

    verifier = TokenVerifier(TokenSettings(issuer="https://sso.example/realms/cascade", audience="cascade-api",
                                           roles_claim="realm_access.roles"))
    principal = await verifier.verify(token)          # raises AuthError (code, English detail, HTTP status)
    principal.can(ACK)                                # operator, engineer, admin

A token is accepted only when its signature verifies with a key of the issuer's JWKS (an asymmetric
algorithm from ``algorithms``; never ``none`` or a shared secret), its ``iss`` is the configured
issuer, its ``aud`` names the configured audience, it has not expired (``exp`` is required) and is
already valid (``nbf``, ``iat``), each with ``leeway_s`` of clock skew. The keys are fetched with
aiohttp from ``jwks_url`` (default: the ``jwks_uri`` of the issuer's
``/.well-known/openid-configuration``), cached for ``jwks_cache_s``, and fetched again at once when a
token names a key id the cache does not hold (a key rotation), at most every ``jwks_min_refresh_s``
so that tokens with made-up key ids cannot make Cascade hammer the identity provider.

Roles (P-5.1.2.7, P-5.4.3) come from one claim, ``roles_claim``, a dotted path (``roles``,
``realm_access.roles``, ``resource_access.cascade.roles``) to a list of names or a space-separated
string; names Cascade does not know are ignored. :data:`ROLE_PERMISSIONS` says what each role may do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from joserfc import jwt
from joserfc.errors import BadSignatureError, ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

__all__ = ["ACK", "ADMIN", "CHARGING", "CONTROL", "READ", "READ_REDACTED", "ROLES", "ROLE_PERMISSIONS", "THRESHOLDS",
           "VEHICLE", "VEHICLE_POWER", "AuthError", "Principal", "TokenSettings", "TokenVerifier", "permissions_of", "roles_from_claims"]

log = logging.getLogger(__name__)

READ = "read"
"""Read alerts, the roll-up, thresholds and their audit, actions: everything, with who did what."""
READ_REDACTED = "read:redacted"
"""Read the same without personal data: who acknowledged or changed something, and their comments."""
ACK = "ack"
"""Acknowledge an alert (which silences its repeat notifications)."""
THRESHOLDS = "thresholds"
"""Change a rule's threshold at run time."""
CHARGING = "control:charging"
"""Start or stop charging a slot of a cabinet (the operator's remote control, P-5.1.2.1)."""
CONTROL = "control"
"""Every cabinet command: charging, and also fault reset and parameters (the engineer's)."""
VEHICLE = "control:vehicle"
"""Remote vehicle commands of the day-to-day fleet: arm, disarm, motor lock and unlock (V-5.4, V-5.5)."""
VEHICLE_POWER = "control:vehicle:power"
"""Switching a vehicle's power on or off remotely (a power-off stops a vehicle on the road)."""
ADMIN = "admin"
"""Users and roles (kept in the identity provider; reserved for Cascade's own admin endpoints)."""

ROLES = ("viewer", "regulator", "operator", "engineer", "admin")
#: What each role may do. A token with several roles may do what any of them may.
ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "viewer": frozenset({READ}),
    "regulator": frozenset({READ_REDACTED}),
    "operator": frozenset({READ, ACK, CHARGING, VEHICLE}),
    "engineer": frozenset({READ, ACK, THRESHOLDS, CHARGING, CONTROL, VEHICLE, VEHICLE_POWER}),
    "admin": frozenset({READ, ACK, THRESHOLDS, CHARGING, CONTROL, VEHICLE, VEHICLE_POWER, ADMIN}),
}
MAX_SUBJECT = 64
"""Characters of a token's subject: it is recorded as ``who`` in the audit, like a typed name."""


class AuthError(Exception):
    """A request that cannot be let through: ``code`` (stable, for messages and tests), an English
    ``detail`` and the HTTP ``status`` (401 not authenticated, 403 not allowed, 503 keys unavailable)."""

    def __init__(self, code: str, detail: str, status: int = 401) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: ``subject`` (recorded as who acted), ``roles`` and how they proved it (``via``:
    ``jwt``, ``api_token`` for the deprecated shared token, ``open`` when the API has no auth)."""

    subject: str
    roles: frozenset[str]
    via: str

    @property
    def permissions(self) -> frozenset[str]:
        return permissions_of(self.roles)

    def can(self, permission: str) -> bool:
        return permission in self.permissions


def permissions_of(roles: Iterable[str]) -> frozenset[str]:
    """Every permission any of ``roles`` grants."""
    out: set[str] = set()
    for role in roles:
        out |= ROLE_PERMISSIONS.get(role, frozenset())
    return frozenset(out)


def roles_from_claims(claims: Mapping[str, Any], path: str) -> frozenset[str]:
    """The Cascade roles named at the dotted ``path`` of ``claims`` (unknown names dropped)."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        names: Iterable[Any] = value.split()
    elif isinstance(value, list):
        names = value
    else:
        return frozenset()
    return frozenset(name for name in names if isinstance(name, str) and name in ROLE_PERMISSIONS)


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """How tokens are checked (``alerting.auth`` in the run configuration, docs/security.md)."""

    issuer: str
    audience: str
    jwks_url: str | None = None
    roles_claim: str = "roles"
    subject_claim: str = "sub"
    leeway_s: float = 60.0
    algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256", "EdDSA")
    jwks_cache_s: float = 3600.0
    jwks_min_refresh_s: float = 10.0
    fetch_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        weak = [a for a in self.algorithms if a == "none" or a.startswith("HS")]
        if weak:
            raise ValueError(f"algorithms {weak} are not allowed: a token must be signed with the issuer's private "
                             "key (RS256, ES256, PS256, EdDSA)")
        if not self.algorithms:
            raise ValueError("algorithms is empty; use e.g. [RS256, ES256]")


class TokenVerifier:
    """Checks bearer tokens against the issuer's JWKS (fetched with aiohttp, cached).

    ``session``: an aiohttp session to fetch with (default: one per fetch, which is rare).
    ``clock``: wall-clock seconds, for ``exp``/``nbf``/``iat`` and the cache.
    """

    def __init__(self, settings: TokenSettings, *, session: aiohttp.ClientSession | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._session = session
        self._clock = clock
        self._keys: KeySet | None = None
        self._kids: frozenset[str | None] = frozenset()
        self._fetched_at = float("-inf")
        self._jwks_url = settings.jwks_url
        self._lock = asyncio.Lock()
        self._failing = False
        self.fetches = 0
        """JWKS fetches so far (tests and the status line)."""

    async def verify(self, token: str) -> Principal:
        """The principal a valid token stands for; raises :class:`AuthError` saying what is wrong."""
        s = self.settings
        try:
            header = extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError) as err:
            raise AuthError("malformed", f"the bearer token is not a signed JWT ({err})") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in s.algorithms:
            raise AuthError("unsupported_alg", f"token signed with {alg!r}; accepted: {', '.join(s.algorithms)}")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed", "the token's 'kid' header is not a string")
        keys = await self._keys_for(kid)
        try:
            decoded = jwt.decode(token, keys, algorithms=list(s.algorithms))
        except BadSignatureError:
            raise AuthError("bad_signature", "the token's signature does not verify with the issuer's keys") from None
        except JoseError as err:
            raise AuthError("malformed", f"the token cannot be decoded: {err.error}") from None
        claims = decoded.claims
        leeway = int(s.leeway_s)
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()), leeway=leeway,
            iss={"essential": True, "value": s.issuer}, aud={"essential": True, "value": s.audience},
            exp={"essential": True})
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise AuthError("expired", "the token has expired; get a new one") from None
        except MissingClaimError as err:
            raise AuthError("missing_claim", f"the token lacks the claim(s) {err.description}") from None
        except InvalidClaimError as err:
            code = {"iss": "wrong_issuer", "aud": "wrong_audience", "nbf": "not_yet_valid",
                    "iat": "not_yet_valid"}.get(err.claim, "invalid_claim")
            raise AuthError(code, f"claim {err.claim!r} refused: {err.description or 'invalid value'} "
                                  f"(expected issuer {s.issuer!r}, audience {s.audience!r})") from None
        subject = claims.get(s.subject_claim)
        if not isinstance(subject, str) or not subject.strip() or len(subject) > MAX_SUBJECT:
            raise AuthError("missing_claim", f"the token's {s.subject_claim!r} claim must be a name of 1 to "
                                             f"{MAX_SUBJECT} characters")
        return Principal(subject.strip(), roles_from_claims(claims, s.roles_claim), "jwt")

    async def _keys_for(self, kid: str | None) -> KeySet:
        """The cached key set when it holds ``kid``; else fetched again (rate-limited)."""
        now = self._clock()
        fresh = now - self._fetched_at < self.settings.jwks_cache_s
        if self._keys is not None and fresh and (kid in self._kids or (kid is None and len(self._kids) == 1)):
            return self._keys
        async with self._lock:
            now = self._clock()
            have = self._keys is not None and (kid in self._kids or (kid is None and len(self._kids) == 1))
            stale = now - self._fetched_at >= self.settings.jwks_cache_s
            may_refresh = now - self._fetched_at >= self.settings.jwks_min_refresh_s
            if (stale or not have) and may_refresh:
                await self._refresh()
            if self._keys is None:
                raise AuthError("keys_unavailable", "the identity provider's signing keys cannot be fetched now; "
                                                    "try again shortly", status=503)
            if kid not in self._kids and not (kid is None and len(self._kids) == 1):
                raise AuthError("unknown_key", f"the token was signed with key {kid!r}, which the issuer does not "
                                               "publish")
            return self._keys

    async def _refresh(self) -> None:
        self._fetched_at = self._clock()  # also on failure: the rate limit holds while the provider is down
        try:
            if self._jwks_url is None:
                discovery = await self._get_json(self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration")
                uri = discovery.get("jwks_uri")
                if not isinstance(uri, str):
                    raise ValueError("the issuer's openid-configuration has no jwks_uri")
                self._jwks_url = uri
            doc = await self._get_json(self._jwks_url)
            keys = KeySet.import_key_set(doc)  # type: ignore[arg-type]
        except (TimeoutError, aiohttp.ClientError, ValueError, JoseError, TypeError, KeyError) as err:
            if not self._failing:
                log.error("cannot fetch the identity provider's keys (%s): %s; %s", self._jwks_url or
                          self.settings.issuer, err, "keeping the cached keys" if self._keys is not None
                          else "tokens are refused until it answers")
            self._failing = True
            return
        if self._failing:
            log.info("identity provider keys fetched again from %s", self._jwks_url)
        self._failing = False
        self._keys = keys
        self._kids = frozenset(key.kid for key in keys)
        self.fetches += 1

    async def _get_json(self, url: str) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self.settings.fetch_timeout_s)
        if self._session is not None:
            return await self._fetch(self._session, url, timeout)
        async with aiohttp.ClientSession() as session:
            return await self._fetch(session, url, timeout)

    @staticmethod
    async def _fetch(session: aiohttp.ClientSession, url: str, timeout: aiohttp.ClientTimeout) -> dict[str, Any]:
        async with session.get(url, timeout=timeout) as resp:
            if resp.status != 200:
                raise ValueError(f"GET {url}: HTTP {resp.status}")
            doc = await resp.json(content_type=None)
        if not isinstance(doc, dict):
            raise ValueError(f"GET {url}: not a JSON object")
        return doc
