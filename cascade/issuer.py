"""A local OpenID Connect token issuer for ``make run`` and the tests: a signing key under ``var/``,
its public half served as a JWKS on loopback, and a command that mints tokens with it.

    cascade issuer                                       # serves http://127.0.0.1:9140/.well-known/openid-configuration
    cascade token --role operator --sub alice --ttl 8h   # prints a bearer token for the alert API

It stands in for the organisation's identity provider (Keycloak or any OIDC provider, docs/security.md):
the alert API checks a token from it exactly as it checks one from a real provider (signature against
the published JWKS, issuer, audience, expiry). Nothing here is meant for production: whoever can read
the key file can mint any role.

The key file (default ``var/issuer/signing-keys.json``, mode 0600 in a 0700 folder) is a JWKS with
private keys; the last key signs. ``rotate()`` (``cascade issuer --rotate``) adds a new key and keeps
the old ones published, as a provider does during a key rotation.

    issuer = LocalIssuer.load_or_create("var/issuer/signing-keys.json")
    token = issuer.mint("alice", ["operator"], ttl_s=8 * 3600)
    app = issuer.web_app()                               # aiohttp: the discovery document and /jwks.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from core.auth import ROLES
from core.durations import DurationError, parse_duration
from core.stackenv import stack_value

__all__ = ["DEFAULT_AUDIENCE", "DEFAULT_ISSUER", "DEFAULT_KEY_FILE", "LocalIssuer", "add_arguments"]

DEFAULT_ISSUER = "http://127.0.0.1:9140"
DEFAULT_AUDIENCE = "cascade-api"
DEFAULT_KEY_FILE = "var/issuer/signing-keys.json"
_ALG = "ES256"


class LocalIssuer:
    """Signing keys (a private JWKS in a file readable by its owner only) and the tokens they sign."""

    def __init__(self, keys: KeySet, *, path: Path | None = None, issuer: str = DEFAULT_ISSUER,
                 audience: str = DEFAULT_AUDIENCE, clock: Callable[[], float] = time.time) -> None:
        if not list(keys):
            raise ValueError("a local issuer needs at least one signing key")
        self.keys = keys
        self.path = path
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self._clock = clock

    @classmethod
    def load_or_create(cls, path: str | Path = DEFAULT_KEY_FILE, **options: Any) -> LocalIssuer:
        """The issuer of the key file at ``path``, creating the file (and a first key) if missing."""
        path = Path(path)
        if path.exists():
            doc = json.loads(path.read_text(encoding="utf-8"))
            return cls(KeySet.import_key_set(doc), path=path, **options)
        issuer = cls(KeySet([_new_key()]), path=path, **options)
        issuer.save()
        return issuer

    def save(self) -> None:
        """Write the key file, readable and writable by its owner only (never wider, even for a moment)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            os.chmod(self.path.parent, 0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.keys.as_dict(private=True), indent=1))
        os.replace(tmp, self.path)

    def rotate(self) -> str:
        """Add a new signing key (the old ones stay published for tokens they signed); its key id."""
        key = _new_key()
        self.keys = KeySet([*self.keys, key])
        self.save()
        return str(key.kid)

    @property
    def signing_key(self) -> ECKey:
        key = list(self.keys)[-1]
        assert isinstance(key, ECKey)
        return key

    def mint(self, subject: str, roles: Iterable[str], *, ttl_s: float = 8 * 3600, audience: str | None = None,
             issuer: str | None = None, not_before_s: float = 0.0, key: ECKey | None = None,
             extra: dict[str, Any] | None = None) -> str:
        """A signed token for ``subject`` with ``roles`` (claim ``roles``), valid for ``ttl_s`` seconds."""
        now = int(self._clock())
        key = key or self.signing_key
        claims: dict[str, Any] = {
            "iss": issuer or self.issuer, "aud": audience or self.audience, "sub": subject,
            "iat": now, "nbf": now + int(not_before_s), "exp": now + int(ttl_s), "jti": uuid.uuid4().hex,
            "roles": sorted(set(roles)), **(extra or {})}
        return jwt.encode({"alg": _ALG, "kid": key.kid}, claims, key, algorithms=[_ALG])

    def discovery(self) -> dict[str, Any]:
        """The OpenID Provider metadata this issuer serves (the parts a resource server reads)."""
        return {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks.json",
                "id_token_signing_alg_values_supported": [_ALG], "response_types_supported": ["token"],
                "subject_types_supported": ["public"]}

    def jwks(self) -> dict[str, Any]:
        """The public keys (never the private parts)."""
        return {"keys": [key.as_dict(private=False) for key in self.keys]}

    def web_app(self) -> web.Application:
        """``GET /.well-known/openid-configuration`` and ``GET /jwks.json`` (the keys read at each request,
        so a rotation by ``cascade issuer --rotate`` shows without a restart)."""
        async def discovery(request: web.Request) -> web.Response:
            return web.json_response(self.discovery())

        async def jwks(request: web.Request) -> web.Response:
            self._reload()
            return web.json_response(self.jwks(), headers={"Cache-Control": "max-age=300"})

        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", discovery)
        app.router.add_get("/jwks.json", jwks)
        return app

    def _reload(self) -> None:
        if self.path is not None and self.path.exists():
            with contextlib.suppress(OSError, ValueError):
                self.keys = KeySet.import_key_set(json.loads(self.path.read_text(encoding="utf-8")))


def _new_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"alg": _ALG, "use": "sig"}, auto_kid=True)


# -- command line ----------------------------------------------------------------------------------

def _default_issuer() -> str:
    return stack_value("CASCADE_ISSUER_URL") or DEFAULT_ISSUER


def add_arguments(sub: Any) -> None:
    """Add ``cascade token`` and ``cascade issuer`` to the CLI's sub-command parsers."""
    token = sub.add_parser("token", help="mint a bearer token for the alert API from the local issuer (development)",
                           description="Print a signed JWT for the alert API, from the local issuer's key "
                                       f"({DEFAULT_KEY_FILE}, created if missing). For `make run` and tests; "
                                       "production tokens come from the organisation's identity provider "
                                       "(docs/security.md).")
    token.add_argument("--sub", required=True, help="who the token stands for (recorded as who acted), e.g. alice")
    token.add_argument("--role", action="append", required=True, choices=ROLES,
                       help="a role; repeat for several (viewer, regulator, operator, engineer, admin)")
    token.add_argument("--ttl", default="8h", help="how long it is valid, e.g. 15m, 8h or 30d (default 8h)")
    _common(token)
    token.set_defaults(func=_cmd_token)

    issuer = sub.add_parser("issuer", help="serve the local issuer's OIDC discovery document and JWKS on loopback",
                            description="Serve /.well-known/openid-configuration and /jwks.json for the local "
                                        "signing key, so the alert API can check tokens from `cascade token`.")
    issuer.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    issuer.add_argument("--port", type=int, default=9140, help="port (default 9140)")
    issuer.add_argument("--rotate", action="store_true", help="add a new signing key first (the old stay published)")
    _common(issuer)
    issuer.set_defaults(func=_cmd_issuer)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", default=DEFAULT_KEY_FILE, metavar="FILE",
                        help=f"the signing key file (default {DEFAULT_KEY_FILE}; created, mode 0600, if missing)")
    parser.add_argument("--issuer", default=None,
                        help=f"the issuer URL put in tokens and the discovery document (default $CASCADE_ISSUER_URL "
                             f"or var/stack.env, else {DEFAULT_ISSUER})")
    parser.add_argument("--audience", default=DEFAULT_AUDIENCE, help=f"the audience (default {DEFAULT_AUDIENCE})")


def _cmd_token(args: argparse.Namespace) -> int:
    try:
        ttl = parse_duration(args.ttl)
    except DurationError:
        ttl = 0.0
    if not ttl > 0:
        print(f"cascade token: --ttl {args.ttl!r} is not a duration: give one such as 15m, 8h or 30d (s seconds, "
              "m minutes, h hours, d days; more than 0)", file=sys.stderr)
        return 2
    issuer = LocalIssuer.load_or_create(args.key, issuer=args.issuer or _default_issuer(), audience=args.audience)
    print(issuer.mint(args.sub, args.role, ttl_s=ttl))
    return 0


def _cmd_issuer(args: argparse.Namespace) -> int:
    url = args.issuer or f"http://{args.host}:{args.port}"
    issuer = LocalIssuer.load_or_create(args.key, issuer=url, audience=args.audience)
    if args.rotate:
        print(f"cascade issuer: new signing key {issuer.rotate()}", file=sys.stderr)
    print(f"cascade issuer: {issuer.issuer}/.well-known/openid-configuration (keys: {args.key})", file=sys.stderr)
    web.run_app(issuer.web_app(), host=args.host, port=args.port, print=None)
    return 0
