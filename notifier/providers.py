"""Send one message through one provider: a templated HTTP request or an SMTP e-mail.

One call is one attempt; retrying is the caller's job (delivery.py), so each function only says
whether its failure is worth retrying. HTTP 5xx, 408, 429 and connection errors are transient; any
other 4xx means the request itself is wrong (bad number, bad token) and repeating it would only
hammer the provider, so it is final. SMTP follows its own reply classes: 4yz transient, 5yz final.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiohttp

from .config import HttpAuth, HttpProvider, SmtpProvider
from .templates import render_tree

__all__ = ["Outcome", "send_message", "sign_hmac"]

_RETRYABLE_4XX = frozenset({408, 429})


@dataclass(frozen=True)
class Outcome:
    ok: bool
    retryable: bool = False
    code: int | None = None
    error: str | None = None


def sign_hmac(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, timestamp + "." + body); receivers recompute and compare."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


async def send_message(provider: HttpProvider | SmtpProvider, context: Mapping[str, Any], *,
                       session: aiohttp.ClientSession, timeout_s: float, clock: Callable[[], float]) -> Outcome:
    """One attempt to deliver the message described by ``context`` (alert fields + recipient)."""
    if isinstance(provider, SmtpProvider):
        return await _send_smtp(provider, context, timeout_s)
    return await _send_http(provider, context, session=session, timeout_s=timeout_s, clock=clock)


async def _send_http(provider: HttpProvider, context: Mapping[str, Any], *, session: aiohttp.ClientSession,
                     timeout_s: float, clock: Callable[[], float]) -> Outcome:
    url = provider.url.render(context, escape=lambda v: urllib.parse.quote(v, safe=""))
    headers = {name: tmpl.render(context) for name, tmpl in provider.headers.items()}
    body = _encode_body(provider, context, headers)
    _apply_auth(provider.auth, headers, body, clock)
    try:
        async with session.request(provider.method, url, data=body, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            detail = (await resp.text(errors="replace"))[:200]
            if resp.status < 300:
                return Outcome(ok=True, code=resp.status)
            retryable = resp.status >= 500 or resp.status in _RETRYABLE_4XX
            return Outcome(ok=False, retryable=retryable, code=resp.status, error=f"HTTP {resp.status}: {detail}")
    except TimeoutError:
        return Outcome(ok=False, retryable=True, error=f"timeout after {timeout_s}s")
    except aiohttp.ClientError as err:
        return Outcome(ok=False, retryable=True, error=f"{type(err).__name__}: {err}")


def _encode_body(provider: HttpProvider, context: Mapping[str, Any], headers: dict[str, str]) -> bytes | None:
    if provider.body is None:
        return None
    rendered = render_tree(provider.body, context)
    if provider.body_format == "json":
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(rendered, ensure_ascii=False, separators=(",", ":")).encode()
    if provider.body_format == "form":
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        return urllib.parse.urlencode(rendered).encode()
    headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    return rendered.encode()


def _apply_auth(auth: HttpAuth, headers: dict[str, str], body: bytes | None, clock: Callable[[], float]) -> None:
    if auth.type == "bearer":
        headers["Authorization"] = f"Bearer {auth.token}"
    elif auth.type == "basic":
        headers["Authorization"] = aiohttp.encode_basic_auth(auth.username, auth.password)
    elif auth.type == "hmac":
        # The timestamp is signed with the body so a captured request cannot be replayed later.
        timestamp = str(int(clock()))
        headers[auth.timestamp_header] = timestamp
        headers[auth.signature_header] = sign_hmac(auth.secret, timestamp, body or b"")


async def _send_smtp(provider: SmtpProvider, context: Mapping[str, Any], timeout_s: float) -> Outcome:
    message = EmailMessage()
    message["From"] = provider.sender
    message["To"] = str(context.get("recipient", ""))
    message["Subject"] = provider.subject.render(context).replace("\n", " ")
    # base64: Chinese (or a °C) survives any relay, with or without 8BITMIME.
    message.set_content(provider.body.render(context), charset="utf-8", cte="base64")
    # smtplib is blocking; a thread keeps the event loop (and other pages) moving.
    return await asyncio.to_thread(_smtp_transaction, provider, message, timeout_s)


def _smtp_transaction(provider: SmtpProvider, message: EmailMessage, timeout_s: float) -> Outcome:
    try:
        with smtplib.SMTP(provider.host, provider.port, timeout=timeout_s) as smtp:
            if provider.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if provider.username:
                smtp.login(provider.username, provider.password)
            smtp.send_message(message)
        return Outcome(ok=True, code=250)
    except smtplib.SMTPRecipientsRefused as err:
        codes = [code for code, _ in err.recipients.values()]
        code = max(codes) if codes else 550
        return Outcome(ok=False, retryable=code < 500, code=code, error=f"recipient refused: {err.recipients}")
    except smtplib.SMTPResponseException as err:
        detail = err.smtp_error.decode(errors="replace") if isinstance(err.smtp_error, bytes) else str(err.smtp_error)
        return Outcome(ok=False, retryable=err.smtp_code < 500, code=err.smtp_code,
                       error=f"SMTP {err.smtp_code}: {detail}")
    except smtplib.SMTPNotSupportedError as err:
        return Outcome(ok=False, retryable=False,
                       error=f"{err}: the server does not offer it; set starttls: false or drop the credentials")
    except (smtplib.SMTPException, OSError) as err:
        return Outcome(ok=False, retryable=True, error=f"{type(err).__name__}: {err}")
