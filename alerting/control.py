"""The cabinet control page (P-5.1.2.1–5, issue 14 item 3): ``GET /control?cabinet=C0003`` on the alert
service, opened from the cabinet dashboard in Grafana.

    add_control_page(app, language="zh_CN")      # with the alert API (alerting.api.add_routes does it)

One static page, its script and its style sheet (``alerting/static/``). It keeps no session and sets no
cookie: the operator pastes a bearer token, which stays in the browser tab's ``sessionStorage`` and goes
with each call to the alert API as ``Authorization: Bearer``. A page of another site can neither read that
token nor make the browser send it, so a cross-site request cannot command a cabinet (CSRF); the
``Content-Security-Policy`` lets the page run only its own script and talk only to its own origin.

The page lists the cabinet's slots with their alert level and the commands the token's roles allow
(``GET /api/cabinets/{cabinet}/commands``), sends one with the reason and, where the API requires it, the
confirmation the operator gave (``POST``), and shows the answer: the result and the value read back, or
the refusal. Simplified Chinese by default, English with ``?lang=en``; the API answers in the same
language (the page sends ``Accept-Language``).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from aiohttp import web

from alerting.i18n import DEFAULT_LANGUAGE, N_, AlertTexts

__all__ = ["COMMAND_LABELS", "CONTROL_PATH", "PAGE_POLICY", "STATIC", "add_control_page"]

CONTROL_PATH = "/control"
STATIC = Path(__file__).resolve().parent / "static"
"""The page's script and style sheet (read once, when the page is added)."""
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
"""The page's ``Content-Security-Policy``: its own script and style sheet, calls to its own origin only."""

#: What the page calls each command of :data:`alerting.actions.CONTROLS`.
COMMAND_LABELS = {
    "stop_charging": N_("Stop charging"),
    "start_charging": N_("Start charging"),
    "fault_reset": N_("Fault reset"),
    "charge_current_limit": N_("Charge current limit"),
    "charge_temperature_limit": N_("Charge temperature limit"),
    "charge_schedule_start": N_("Charging window start (minutes after midnight)"),
    "charge_schedule_end": N_("Charging window end (minutes after midnight)"),
}
# The page's texts; the script reads them from the page (a JSON data block, not a script).
_TEXTS = {
    "title": N_("Cabinet control"),
    "intro": N_("Start and stop charging, reset faults and set limits of one cabinet. Every command is written, "
                "read back and recorded with your name."),
    "token": N_("Bearer token"),
    "token_hint": N_("Paste an access token from the identity provider (locally: cascade token --role operator "
                     "--sub <you>). It is kept in this browser tab only and sent with each request."),
    "save_token": N_("Use token"),
    "forget_token": N_("Forget token"),
    "cabinet": N_("Cabinet"),
    "load": N_("Show"),
    "reason": N_("Reason (kept in the audit)"),
    "reason_missing": N_("Say why first: the reason is kept in the audit."),
    "slots": N_("Slots"),
    "slot": N_("Slot"),
    "level": N_("Alert level"),
    "cabinet_commands": N_("Cabinet commands"),
    "value": N_("Value (raw register units, {low}..{high})"),
    "confirm": N_("{command} on {cabinet}{slot}: this changes how the cabinet charges. Send it?"),
    "slot_suffix": N_(", slot {slot}"),
    "sending": N_("Sending {command}..."),
    "result_ok": N_("{command}: done, read back {readback}."),
    "result_failed": N_("{command}: the cabinet did not take it ({error})."),
    "refused": N_("Refused ({status}): {error}"),
    "no_token": N_("Paste a token first."),
    "not_allowed": N_("Your roles do not allow this command."),
    "unreachable": N_("The alert service cannot be reached: {error}"),
}
# The switch to the other language, named in that language.
_OTHER_LANGUAGE = {"zh_CN": ("en", "English"), "en": ("zh", "中文")}


def _page(language: str) -> bytes:
    texts = AlertTexts(language)
    # Translated but not filled: the script fills the {placeholders} (tr() would fall back to English).
    words = {key: texts.rule_text(msgid) for key, msgid in _TEXTS.items()}
    data = json.dumps({"texts": words, "language": "zh-CN" if language == "zh_CN" else "en"},
                      ensure_ascii=False).replace("<", "\\u003c")
    e = {key: html.escape(value) for key, value in words.items()}
    other, other_name = _OTHER_LANGUAGE[language]
    page = f"""<!doctype html>
<html lang="{'zh-CN' if language == 'zh_CN' else 'en'}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Cascade · {e['title']}</title>
<link rel="stylesheet" href="{CONTROL_PATH}/control.css">
<script id="cascade-texts" type="application/json">{data}</script>
<script src="{CONTROL_PATH}/control.js" defer></script>
</head>
<body>
<header><h1>{e['title']}</h1><a id="language" href="?lang={other}">{other_name}</a></header>
<p>{e['intro']}</p>
<section id="auth">
<label for="token">{e['token']}</label>
<input id="token" type="password" autocomplete="off" spellcheck="false">
<button id="save-token" type="button">{e['save_token']}</button>
<button id="forget-token" type="button">{e['forget_token']}</button>
<p class="hint">{e['token_hint']}</p>
</section>
<section id="pick">
<label for="cabinet">{e['cabinet']}</label>
<input id="cabinet" maxlength="64" spellcheck="false">
<button id="load" type="button">{e['load']}</button>
<label for="reason">{e['reason']}</label>
<input id="reason" maxlength="500">
</section>
<p id="status" role="status" aria-live="polite"></p>
<section id="commands" hidden>
<h2>{e['slots']}</h2>
<table><thead><tr><th>{e['slot']}</th><th>{e['level']}</th><th></th></tr></thead><tbody id="slots"></tbody></table>
<h2>{e['cabinet_commands']}</h2>
<div id="cabinet-commands"></div>
</section>
</body>
</html>
"""
    return page.encode("utf-8")


def add_control_page(app: web.Application, *, language: str = DEFAULT_LANGUAGE) -> None:
    """Serve the control page at :data:`CONTROL_PATH` (``?lang=en`` for English; else ``language``)."""
    pages = {lang: _page(lang) for lang in ("zh_CN", "en")}
    script = (STATIC / "control.js").read_bytes()
    style = (STATIC / "control.css").read_bytes()
    default = language if language in pages else DEFAULT_LANGUAGE
    page_headers = {"Content-Security-Policy": PAGE_POLICY}

    async def page(request: web.Request) -> web.Response:
        wanted = request.query.get("lang", "").lower()
        lang = "en" if wanted.startswith("en") else "zh_CN" if wanted.startswith("zh") else default
        return web.Response(body=pages[lang], content_type="text/html", charset="utf-8", headers=page_headers)

    async def asset(request: web.Request) -> web.Response:
        if request.match_info["name"] == "control.js":
            return web.Response(body=script, content_type="text/javascript", charset="utf-8")
        return web.Response(body=style, content_type="text/css", charset="utf-8")

    app.router.add_get(CONTROL_PATH, page)
    app.router.add_get(CONTROL_PATH + "/{name:control\\.(?:js|css)}", asset)
