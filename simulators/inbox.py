"""A local inbox standing in for the SMS, voice-call and app-push providers.

``cascade inbox --host 127.0.0.1 --port 9130 [--log var/inbox.jsonl]`` accepts whatever the
notifier's HTTP providers send (``POST /app``, ``/sms``, ``/voice`` or any other path; JSON,
form-encoded or plain-text bodies), prints one human line per message to stdout::

    INBOX sms → +8613800000001: Cascade L3 firing: Thermal-runaway precursor ...

appends one JSON line per message to the log file and answers ``GET /messages`` with the most
recent messages, so a user or a test can see what arrived. Nothing leaves the machine: this is
what ``make run`` points the notifier at (config/notifier.local.yaml), see docs/demo.md.

Routes:
    POST /{path}        any path; the path's first segment is the channel (app, sms, voice, ...)
    GET  /messages      ``{"messages": [...], "total": n}``, oldest first; ``?channel=sms``, ``?limit=N``
    GET  /-/healthy     liveness
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl

from aiohttp import web

__all__ = ["DEFAULT_LOG", "MAX_MESSAGES", "INBOX_KEY", "Inbox", "build_app", "serve"]

log = logging.getLogger(__name__)

DEFAULT_LOG = "var/inbox.jsonl"
MAX_MESSAGES = 1000
# Fields that carry the addressee / the text, in the order they are looked for, across the
# example providers (sms-gateway: to/text, voice-call: to/speech, app-push: audience/title/text).
_TO_KEYS = ("to", "audience", "recipient", "phone", "number")
_TEXT_KEYS = ("text", "speech", "message", "body", "summary")
_MAX_BODY = 1 << 20


class Inbox:
    """Keeps the last ``limit`` messages, appends each to ``log_path`` and prints it to ``out``."""

    def __init__(self, log_path: str | os.PathLike[str] | None = None, limit: int = MAX_MESSAGES,
                 out: TextIO | None = None) -> None:
        self.messages: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
        self.total = 0
        self._out = out
        self._file = None
        if log_path is not None:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the app

    def add(self, message: dict[str, Any]) -> dict[str, Any]:
        self.total += 1
        message = {"id": self.total, **message}
        self.messages.append(message)
        if self._file is not None:
            self._file.write(json.dumps(message, ensure_ascii=False) + "\n")
            self._file.flush()
        out = self._out if self._out is not None else sys.stdout
        print(human_line(message), file=out, flush=True)
        return message

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


INBOX_KEY = web.AppKey("inbox", Inbox)


def human_line(message: dict[str, Any]) -> str:
    """``INBOX sms → +8613800000001: Cascade L3 firing: ...`` (one line, whatever the body)."""
    body = message.get("body")
    to, text = "?", ""
    if isinstance(body, dict):
        to = next((str(body[k]) for k in _TO_KEYS if body.get(k) not in (None, "")), "?")
        title = body.get("title")
        text = next((str(body[k]) for k in _TEXT_KEYS if body.get(k) not in (None, "")), "")
        if title:
            text = f"{title}: {text}" if text else str(title)
        if not text:
            text = json.dumps(body, ensure_ascii=False)
    elif body is not None:
        text = str(body)
    text = " ".join(text.split())
    channel = message.get("channel", "?")
    if to == "?":  # a feed has no addressee: say whether it is a warning or its all-clear
        status = body.get("status") if isinstance(body, dict) else None
        return f"INBOX {channel} [{status}]: {text}" if status in ("firing", "resolved") else f"INBOX {channel}: {text}"
    return f"INBOX {channel} → {to}: {text}"


def _parse_body(raw: bytes, content_type: str) -> Any:
    text = raw.decode("utf-8", errors="replace")
    if not text:
        return None
    if "json" in content_type or (not content_type.startswith("application/x-www-form-urlencoded")
                                  and text.lstrip()[:1] in "{["):
        try:
            return json.loads(text)
        except ValueError:
            return text
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(text, keep_blank_values=True))
    return text


async def _handle_post(request: web.Request) -> web.Response:
    raw = await request.content.read(_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        return web.json_response({"status": "error", "error": f"body larger than {_MAX_BODY} bytes"}, status=413)
    path = request.path
    channel = path.strip("/").split("/", 1)[0] or "root"
    headers = {k: v for k, v in request.headers.items()
               if k.lower() not in ("authorization",) and (k.lower().startswith("x-") or k.lower() == "content-type")}
    message = request.app[INBOX_KEY].add({
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "channel": channel,
        "path": path,
        "method": request.method,
        "query": dict(request.query),
        "content_type": request.content_type,
        "headers": headers,
        "body": _parse_body(raw, request.content_type),
    })
    return web.json_response({"status": "received", "id": message["id"]})


async def _handle_messages(request: web.Request) -> web.Response:
    inbox = request.app[INBOX_KEY]
    messages = list(inbox.messages)
    channel = request.query.get("channel")
    if channel:
        messages = [m for m in messages if m["channel"] == channel]
    try:
        limit = int(request.query.get("limit", "0"))
    except ValueError:
        return web.json_response({"status": "error", "error": "limit must be an integer"}, status=400)
    if limit > 0:
        messages = messages[-limit:]
    return web.json_response({"messages": messages, "total": inbox.total})


async def _handle_healthy(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def build_app(log_path: str | os.PathLike[str] | None = None, *, limit: int = MAX_MESSAGES,
              out: TextIO | None = None) -> web.Application:
    """The inbox app: messages kept in memory (last ``limit``), appended to ``log_path`` when given."""
    app = web.Application(client_max_size=_MAX_BODY + 1)
    inbox = Inbox(log_path, limit=limit, out=out)
    app[INBOX_KEY] = inbox

    async def on_cleanup(app: web.Application) -> None:
        app[INBOX_KEY].close()

    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/messages", _handle_messages)
    app.router.add_get("/-/healthy", _handle_healthy)
    app.router.add_route("POST", "/{tail:.*}", _handle_post)
    app.router.add_route("PUT", "/{tail:.*}", _handle_post)
    app.router.add_route("PATCH", "/{tail:.*}", _handle_post)
    return app


async def serve(host: str, port: int, log_path: str | os.PathLike[str] | None = DEFAULT_LOG) -> None:
    """Serve the inbox on ``host:port`` until cancelled (``cascade inbox``)."""
    runner = web.AppRunner(build_app(log_path))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("inbox listening on http://%s:%d (POST /app, /sms, /voice, ...; GET /messages); log %s",
                 host, port, log_path or "(none)")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
