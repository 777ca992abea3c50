"""Notifier service (P-5.2.2.4 app/SMS/voice notification, P-5.5.3 third-party push).

Real loopback servers stand in for the providers: an aiohttp app records HTTP requests and answers
with scripted statuses, an aiosmtpd server receives the e-mails.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_string
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from notifier import ConfigError, NotifierConfig, build_app, load_config, parse_config, serve, sign_hmac
from notifier.delivery import compute_backoff
from notifier.server import DISPATCHER_KEY
from tests.fixtures.http import wait_until_answers
from tests.fixtures.procs import free_port

NOW = 1_760_000_000.0
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- loopback providers

@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.body.decode()))


@dataclass
class ProviderServer:
    """Records requests per path; ``script[path]`` lists statuses to answer in turn (then 200)."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)
    delay_s: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0

    def on(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.read()
            # The raw path, so tests see exactly what the notifier percent-encoded.
            self.requests.append(Recorded(request.method, request.rel_url.raw_path, dict(request.query),
                                          dict(request.headers), body))
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            statuses = self.script.get(request.path, [])
            status = statuses.pop(0) if statuses else 200
            return web.Response(status=status, text="provider says hi" if status < 300 else "provider error")
        finally:
            self.in_flight -= 1


@pytest.fixture
async def provider() -> AsyncIterator[ProviderServer]:
    server = ProviderServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


class _MailHandler:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook name
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "data": envelope.content.decode(), "login": session.auth_data})
        return "250 OK"


def _authenticate(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"mailer" and auth_data.password == b"s3cret-mail"
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


@pytest.fixture
def smtp() -> Iterator[tuple[int, _MailHandler]]:
    handler = _MailHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, authenticator=_authenticate,
                            auth_require_tls=False)
    controller.start()
    yield port, handler
    controller.stop()


ENV = {"APP_TOKEN": "tok-123", "SMS_SECRET": "hmac-key", "VOICE_USER": "caller", "VOICE_PASS": "pw",
       "SMTP_USER": "mailer", "SMTP_PASS": "s3cret-mail"}


def make_config(provider_url: str, smtp_port: int = 1, **notifier: Any) -> dict[str, Any]:
    return {
        "notifier": {"concurrency": 4, "retry": {"attempts": 3, "initial_delay_s": 0.01, "max_delay_s": 0.05,
                                                 "timeout_s": 2}, **notifier},
        "providers": {
            "app-push": {"type": "http", "url": f"{provider_url}/app", "auth": {"type": "bearer", "token": "${APP_TOKEN}"},
                         "body": {"to": "{{recipient}}", "title": "L{{labels.level}} {{labels.alertname}} {{status}}",
                                  "text": "{{annotations.summary}}", "slot": "{{labels.slot}}"}},
            "sms": {"type": "http", "url": f"{provider_url}/sms", "format": "form",
                    "auth": {"type": "hmac", "secret": "${SMS_SECRET}", "signature_header": "X-Signature",
                             "timestamp_header": "X-Timestamp"},
                    "body": {"to": "{{recipient}}", "text": "{{labels.site}}/{{labels.cabinet}}: {{annotations.summary}}"}},
            "voice": {"type": "http", "url": f"{provider_url}/voice/{{{{recipient}}}}", "method": "PUT",
                      "headers": {"X-Cabinet": "{{labels.cabinet}}"},
                      "auth": {"type": "basic", "username": "${VOICE_USER}", "password": "${VOICE_PASS}"},
                      "body": "Critical: {{annotations.summary}}. {{annotations.action}}"},
            "feed": {"type": "http", "url": f"{provider_url}/feed",
                     "body": {"rule": "{{labels.rule}}", "level": "{{labels.level}}", "id": "{{fingerprint}}"}},
            "mail": {"type": "smtp", "host": "127.0.0.1", "port": smtp_port, "starttls": False,
                     "from": "cascade@example.test", "username": "${SMTP_USER}", "password": "${SMTP_PASS}"},
        },
        "receivers": {
            "critical": [{"channel": "voice", "provider": "voice", "to": ["+100"], "send_resolved": False},
                         {"channel": "sms", "provider": "sms", "to": ["+100", "+200"]},
                         {"channel": "app", "provider": "app-push", "to": ["oncall"]},
                         {"channel": "email", "provider": "mail", "to": ["safety@example.test"]}],
            "warning": [{"channel": "sms", "provider": "sms", "to": ["+100"]},
                        {"channel": "app", "provider": "app-push", "to": ["oncall"]}],
            "ops": [{"channel": "app", "provider": "app-push", "to": ["ops"]},
                    {"channel": "sms", "provider": "sms", "to": ["+900"], "levels": [3]}],
            "regulator": [{"channel": "feed", "provider": "feed"}],
        },
    }


def alert(level: str = "3", status: str = "firing", slot: str | None = "4", **labels: str) -> dict[str, Any]:
    severity = {"1": "notice", "2": "warning", "3": "critical"}[level]
    all_labels = {"alertname": "thermal_runaway", "rule": "thermal_runaway", "level": level, "severity": severity,
                  "site": "s1", "cabinet": "c7", "battery": "B-0042", **labels}
    if slot is not None:
        all_labels["slot"] = slot
    return {"status": status, "labels": all_labels, "fingerprint": f"fp{level}{slot}{status[0]}",
            "annotations": {"summary": 'Slot 4 at 92 °C, "rising" 3 K/min', "diagnosis": "cell overheating",
                            "action": "Evacuate and cut power"},
            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://engine"}


def payload(*alerts: dict[str, Any], receiver: str = "critical") -> dict[str, Any]:
    return {"version": "4", "receiver": receiver, "status": "firing", "alerts": list(alerts), "groupKey": "{}:{}",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "truncatedAlerts": 0}


@dataclass
class Notifier:
    url: str
    app: web.Application
    registry: CollectorRegistry
    session: aiohttp.ClientSession
    log_path: Path

    async def post(self, receiver: str, body: Any, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.session.post(f"{self.url}/webhook/{receiver}", data=data) as resp:
            return resp.status, await resp.json()

    async def drain(self) -> None:
        await self.app[DISPATCHER_KEY].drain(timeout_s=10)

    def log(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def start_notifier(tmp_path: Path) -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession()

    async def start(config_data: dict[str, Any]) -> Notifier:
        log_path = tmp_path / f"deliveries-{len(runners)}.jsonl"
        config_data = {**config_data, "notifier": {**config_data.get("notifier", {}), "delivery_log": str(log_path)}}
        config = parse_config(config_data, source="test.yaml", env=ENV)
        registry = CollectorRegistry()
        app = build_app(config, session=session, registry=registry, clock=lambda: NOW, rng=random.Random(7))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]
        return Notifier(f"http://127.0.0.1:{port}", app, registry, session, log_path)

    yield start
    for runner in runners:
        await runner.cleanup()
    await session.close()


# ---------------------------------------------------------------- fan-out and templates

async def test_critical_fans_out_to_voice_sms_app_and_email(provider, smtp, start_notifier):
    smtp_port, mail = smtp
    notifier = await start_notifier(make_config(provider.url, smtp_port))

    status, answer = await notifier.post("critical", payload(alert("3")))
    assert status == 200, answer
    assert answer == {"status": "accepted", "alerts": 1, "deliveries": 5}
    await notifier.drain()

    (voice,) = provider.on("/voice/%2B100")  # recipient percent-encoded into the URL
    assert voice.method == "PUT"
    assert voice.headers["Authorization"] == "Basic " + base64.b64encode(b"caller:pw").decode()
    assert voice.headers["X-Cabinet"] == "c7"
    assert voice.body.decode() == 'Critical: Slot 4 at 92 °C, "rising" 3 K/min. Evacuate and cut power'

    sms = provider.on("/sms")
    assert sorted(r.form()["to"] for r in sms) == ["+100", "+200"]
    for request in sms:
        assert request.form()["text"] == 's1/c7: Slot 4 at 92 °C, "rising" 3 K/min'
        assert request.headers["X-Timestamp"] == str(int(NOW))
        assert request.headers["X-Signature"] == sign_hmac("hmac-key", str(int(NOW)), request.body)

    (app_msg,) = provider.on("/app")
    assert app_msg.headers["Authorization"] == "Bearer tok-123"
    assert app_msg.json() == {"to": "oncall", "title": "L3 thermal_runaway firing",
                              "text": 'Slot 4 at 92 °C, "rising" 3 K/min', "slot": "4"}

    (email,) = mail.messages
    assert email["to"] == ["safety@example.test"]
    # Default subject and body: the ready-made e-mail in the default language, Simplified Chinese.
    sent = message_from_string(email["data"], policy=default_policy)
    assert sent["Subject"] == '【Cascade】三级预警：s1/c7 4号仓 Slot 4 at 92 °C, "rising" 3 K/min'
    body = sent.get_content()
    assert "处置：Evacuate and cut power" in body and "电池：B-0042" in body
    assert "开始时间：2026年1月1日 08:00:00（UTC+08:00）" in body  # Asia/Shanghai, no nanoseconds
    assert email["login"] == b"mailer"  # authenticated with the credentials from the environment

    log = notifier.log()
    assert sorted((r["channel"], r["recipient"], r["result"], r["attempts"]) for r in log) == [
        ("app", "oncall", "sent", 1), ("email", "safety@example.test", "sent", 1),
        ("sms", "+100", "sent", 1), ("sms", "+200", "sent", 1), ("voice", "+100", "sent", 1)]
    assert {r["fingerprint"] for r in log} == {"fp34f"}
    assert {r["status"] for r in log} == {"firing"}
    assert {r["receiver"] for r in log} == {"critical"}
    assert log[0]["time"].startswith("2025-10-09T")  # the injected clock
    assert notifier.metric("cascade_notify_deliveries_total", channel="sms", result="sent") == 2
    assert notifier.metric("cascade_notify_delivery_seconds_count", channel="voice") == 1
    assert notifier.metric("cascade_notify_webhooks_total", receiver="critical", result="accepted") == 1


async def test_cabinet_level_alert_renders_missing_slot_empty(provider, start_notifier):
    notifier = await start_notifier(make_config(provider.url))
    await notifier.post("warning", payload(alert("2", slot=None), receiver="warning"))
    await notifier.drain()
    (app_msg,) = provider.on("/app")
    assert app_msg.json()["slot"] == ""


async def test_resolved_skips_channels_with_send_resolved_false(provider, smtp, start_notifier):
    notifier = await start_notifier(make_config(provider.url, smtp[0]))
    status, answer = await notifier.post("critical", payload(alert("3", status="resolved")))
    assert status == 200 and answer["deliveries"] == 4  # no voice call for a resolved alert
    await notifier.drain()
    assert provider.on("/voice/%2B100") == []
    assert provider.on("/app")[0].json()["title"] == "L3 thermal_runaway resolved"


async def test_levels_filter_per_delivery(provider, start_notifier):
    notifier = await start_notifier(make_config(provider.url))
    health = {"status": "firing", "labels": {"alertname": "CascadeCabinetOffline", "level": "2",
                                             "severity": "warning", "component": "collector"}, "annotations": {}}
    await notifier.post("ops", payload(health, receiver="ops"))
    await notifier.drain()
    assert len(provider.on("/app")) == 1 and provider.on("/sms") == []  # ops SMS only for level 3


async def test_regulator_feed_gets_structured_alert(provider, start_notifier):
    notifier = await start_notifier(make_config(provider.url))
    await notifier.post("regulator", payload(alert("2"), receiver="regulator"))
    await notifier.drain()
    (feed,) = provider.on("/feed")
    assert feed.json() == {"rule": "thermal_runaway", "level": "2", "id": "fp24f"}
    assert "Authorization" not in feed.headers


# ---------------------------------------------------------------- retries

async def test_5xx_is_retried_then_succeeds(provider, start_notifier):
    provider.script["/feed"] = [503, 502]
    notifier = await start_notifier(make_config(provider.url))
    await notifier.post("regulator", payload(alert("3"), receiver="regulator"))
    await notifier.drain()
    assert len(provider.on("/feed")) == 3
    (record,) = notifier.log()
    assert (record["result"], record["attempts"], record["code"], record["error"]) == ("sent", 3, 200, None)
    assert notifier.metric("cascade_notify_deliveries_total", channel="feed", result="sent") == 1


async def test_4xx_is_not_retried(provider, start_notifier):
    provider.script["/feed"] = [400]
    notifier = await start_notifier(make_config(provider.url))
    await notifier.post("regulator", payload(alert("3"), receiver="regulator"))
    await notifier.drain()
    assert len(provider.on("/feed")) == 1
    (record,) = notifier.log()
    assert (record["result"], record["attempts"], record["code"]) == ("failed", 1, 400)
    assert "HTTP 400" in record["error"]
    assert notifier.metric("cascade_notify_deliveries_total", channel="feed", result="failed") == 1


async def test_retries_exhausted_on_persistent_5xx(provider, start_notifier):
    provider.script["/feed"] = [500, 500, 500, 500]
    notifier = await start_notifier(make_config(provider.url))
    await notifier.post("regulator", payload(alert("3"), receiver="regulator"))
    await notifier.drain()
    assert len(provider.on("/feed")) == 3  # attempts: 3
    assert notifier.log()[0]["result"] == "failed"


async def test_connection_refused_is_retried_and_logged(start_notifier):
    notifier = await start_notifier(make_config(f"http://127.0.0.1:{free_port()}"))
    await notifier.post("regulator", payload(alert("3"), receiver="regulator"))
    await notifier.drain()
    (record,) = notifier.log()
    assert (record["result"], record["attempts"], record["code"]) == ("failed", 3, None)
    assert "Connect" in record["error"]


async def test_smtp_rejection_is_final(provider, start_notifier, smtp):
    config = make_config(provider.url, smtp[0])
    config["providers"]["mail"]["password"] = "${SMTP_USER}"  # wrong password: 535, permanent
    notifier = await start_notifier(config)
    await notifier.post("critical", payload(alert("3")))
    await notifier.drain()
    (record,) = [r for r in notifier.log() if r["channel"] == "email"]
    assert (record["result"], record["attempts"], record["code"]) == ("failed", 1, 535)
    assert smtp[1].messages == []


async def test_concurrency_is_bounded(provider, start_notifier):
    provider.delay_s = 0.1
    config = make_config(provider.url, concurrency=2)
    config["receivers"]["regulator"] = [{"channel": "feed", "provider": "feed", "to": [f"r{i}" for i in range(6)]}]
    notifier = await start_notifier(config)
    await notifier.post("regulator", payload(alert("3"), receiver="regulator"))
    await notifier.drain()
    assert len(provider.on("/feed")) == 6
    assert provider.max_in_flight == 2


@given(attempt=st.integers(1, 30), initial=st.floats(0.001, 5), cap=st.floats(0.001, 60), seed=st.integers())
def test_backoff_is_exponential_capped_and_jittered(attempt, initial, cap, seed):
    delay = compute_backoff(attempt, initial, cap, random.Random(seed))
    ceiling = min(cap, initial * 2 ** (attempt - 1))
    assert 0.5 * ceiling <= delay <= ceiling


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("raw, message", [
    (b"{not json", "not JSON"),
    (b'{"version": "3", "alerts": []}', 'expected "4"'),
    (b'{"version": "4", "alerts": {}}', "'alerts' must be a list"),
    (b'{"version": "4", "alerts": [{"status": "firing", "labels": {"level": 3, "alertname": "x"}}]}',
     "alerts[0].labels must be an object of string values"),
    (b'{"version": "4", "alerts": [{"status": "burning", "labels": {"alertname": "x"}}]}', "alerts[0].status"),
])
async def test_bad_webhook_is_400_with_reason_and_counted(provider, start_notifier, raw, message):
    notifier = await start_notifier(make_config(provider.url))
    status, answer = await notifier.post("critical", None, raw=raw)
    assert status == 400
    assert message in answer["error"]
    assert notifier.metric("cascade_notify_webhooks_total", receiver="critical", result="bad_request") == 1
    assert provider.requests == []


async def test_unknown_receiver_is_404_naming_the_fix(provider, start_notifier):
    notifier = await start_notifier(make_config(provider.url))
    status, answer = await notifier.post("pager", payload(alert("3")))
    assert status == 404
    assert "unknown receiver 'pager'" in answer["error"] and "test.yaml" in answer["error"]
    assert notifier.metric("cascade_notify_webhooks_total", receiver="unknown", result="unknown_receiver") == 1


async def test_metrics_endpoint_exposes_notify_metrics(provider, start_notifier):
    notifier = await start_notifier(make_config(provider.url))
    await notifier.post("regulator", payload(alert("3"), receiver="regulator"))
    await notifier.drain()
    async with notifier.session.get(f"{notifier.url}/metrics") as resp:
        text = await resp.text()
    assert 'cascade_notify_deliveries_total{channel="feed",result="sent"} 1.0' in text
    assert 'cascade_notify_webhooks_total{receiver="regulator",result="accepted"} 1.0' in text
    assert "cascade_notify_delivery_seconds_bucket" in text


# ---------------------------------------------------------------- config validation

def _config_error(tmp_path: Path, data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    path = tmp_path / "notifier.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(path, env=ENV if env is None else env)
    assert str(path) in str(err.value)
    return str(err.value)


def test_literal_secret_is_refused(tmp_path):
    data = make_config("http://x")
    data["providers"]["app-push"]["auth"]["token"] = "plain-token"
    message = _config_error(tmp_path, data)
    assert "providers.app-push.auth.token" in message and "${VAR_NAME}" in message


def test_missing_env_var_is_named(tmp_path):
    message = _config_error(tmp_path, make_config("http://x"), env={k: v for k, v in ENV.items() if k != "SMS_SECRET"})
    assert "providers.sms.auth.secret" in message and "export SMS_SECRET" in message


def test_unknown_provider_in_receiver(tmp_path):
    data = make_config("http://x")
    data["receivers"]["warning"][0]["provider"] = "smss"
    message = _config_error(tmp_path, data)
    assert "receivers.warning[0].provider" in message and "unknown provider 'smss'" in message


def test_unknown_placeholder(tmp_path):
    data = make_config("http://x")
    data["providers"]["sms"]["body"]["text"] = "{{label.site}}"
    message = _config_error(tmp_path, data)
    assert "providers.sms.body.text" in message and "unknown placeholder" in message


def test_unknown_channel_and_key(tmp_path):
    data = make_config("http://x")
    data["receivers"]["warning"][0]["channel"] = "pager"
    assert "receivers.warning[0].channel" in _config_error(tmp_path, data)
    data = make_config("http://x")
    data["providers"]["sms"]["retries"] = 3
    assert "unknown key(s) ['retries']" in _config_error(tmp_path, data)


def _set(*path: str | int, value: Any) -> Any:
    """A change to make_config(): ``value`` at ``path`` (``DELETE`` removes the key)."""
    def change(data: dict[str, Any]) -> None:
        node: Any = data
        for part in path[:-1]:
            node = node[part]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return change


DELETE = object()
_NO_SMS_SECRET = {k: v for k, v in ENV.items() if k != "SMS_SECRET"}
_PLACEHOLDER_FIX = "use placeholders like {{labels.site}}, {{annotations.summary}}, {{recipient}}"
_SECRET_FIX = "put the value in an environment variable and write ${VAR_NAME} here"

# (change, env, dotted key, text of the problem, text of the fix). Every message must read
# "<file>: <key>: <problem> - <fix>".
BAD_CONFIGS = {
    # unknown key at each level, all unknown keys of the level listed, the allowed ones offered
    "unknown key, top level": (_set("notifiers", value={}), None, "(file)", "unknown key(s) ['notifiers']",
                               "did you mean 'notifier'? Otherwise remove them or use one of ['notifier', 'providers', 'receivers']"),
    "unknown key, notifier": (_set("notifier", "threads", value=2), None, "notifier", "unknown key(s) ['threads']",
                              "use one of ['concurrency', 'delivery_log', 'language', 'max_alerts_per_request', 'retry', 'timezone', 'webhook_token_file']"),
    "unknown key, retry": (_set("notifier", "retry", "backoff", value=2), None, "notifier.retry",
                           "unknown key(s) ['backoff']", "use one of ['attempts', 'initial_delay_s', 'max_delay_s', 'timeout_s']"),
    "unknown key, http provider": (_set("providers", "sms", "retries", value=3), None, "providers.sms",
                                   "unknown key(s) ['retries']", "'auth', 'body', 'format', 'headers', 'method', 'type', 'url'"),
    "unknown key, smtp provider": (_set("providers", "mail", "tls", value=True), None, "providers.mail",
                                   "unknown key(s) ['tls']", "'starttls'"),
    "unknown key, auth of its type": (_set("providers", "app-push", "auth", "secret", value="${SMS_SECRET}"), None,
                                      "providers.app-push.auth", "unknown key(s) ['secret']", "use one of ['token', 'type']"),
    "unknown key, delivery": (_set("receivers", "critical", 1, "recipients", value=["+1"]), None, "receivers.critical[1]",
                              "unknown key(s) ['recipients']",
                              "'channel', 'language', 'levels', 'provider', 'send_resolved', 'to'"),
    # wrong type
    "text for a number": (_set("notifier", "concurrency", value="many"), None, "notifier.concurrency",
                          "'many' is not an integer", "a whole number >= 1"),
    "fraction for an integer": (_set("notifier", "retry", "attempts", value=2.5), None, "notifier.retry.attempts",
                                "2.5 is not an integer", "total tries per message"),
    "number out of range": (_set("providers", "mail", "port", value=70000), None, "providers.mail.port", "70000",
                            "a port number 1-65535"),
    "text for a boolean": (_set("providers", "mail", "starttls", value="yes"), None, "providers.mail.starttls",
                           "'yes' is not true or false", "true or false"),
    "mapping for text": (_set("providers", "mail", "host", value={"name": "smtp"}), None, "providers.mail.host",
                         "expected text, got a mapping", "the SMTP server's host name"),
    "list for a mapping": (_set("providers", "voice", "headers", value=["X-A: 1"]), None, "providers.voice.headers",
                           "expected a mapping, got a list", "header: value pairs"),
    "text for a list": (_set("receivers", "ops", 0, "to", value="ops"), None, "receivers.ops[0].to",
                        "expected a list, got text", "a list of recipients"),
    "mapping for a receiver's list": (_set("receivers", "ops", value={"channel": "app"}), None, "receivers.ops",
                                      "expected a list, got a mapping", "one list of deliveries per Alertmanager receiver"),
    "unknown level": (_set("receivers", "ops", 1, "levels", value=[3, 4]), None, "receivers.ops[1].levels[1]",
                      "'4' is not supported", "a list of alert levels among 1, 2, 3"),
    "unknown method": (_set("providers", "voice", "method", value="DELETE"), None, "providers.voice.method",
                       "'DELETE' is not supported", "GET, POST, PUT or PATCH"),
    "unknown provider type": (_set("providers", "sms", "type", value="ftp"), None, "providers.sms.type",
                              "'ftp' is not supported", "use one of ['http', 'smtp']"),
    "unknown auth type": (_set("providers", "sms", "auth", "type", value="oauth"), None, "providers.sms.auth.type",
                          "'oauth' is not supported", "use one of ['none', 'bearer', 'basic', 'hmac']"),
    "empty mapping": (lambda data: data.clear(), None, "providers", "missing", "add providers:"),
    # a boolean where a number belongs (YAML reads yes/true as booleans)
    "bool as integer": (_set("notifier", "retry", "attempts", value=True), None, "notifier.retry.attempts", "true",
                        "a whole number >= 1: total tries per message"),
    "bool as port": (_set("providers", "mail", "port", value=False), None, "providers.mail.port", "false",
                     "a port number 1-65535"),
    "bool as seconds": (_set("notifier", "retry", "timeout_s", value=True), None, "notifier.retry.timeout_s", "true",
                        "seconds > 0 per request"),
    # missing key
    "missing url": (_set("providers", "sms", "url", value=DELETE), None, "providers.sms.url", "missing",
                    "add url: the provider's full http:// or https:// URL"),
    "missing from": (_set("providers", "mail", "from", value=DELETE), None, "providers.mail.from", "missing",
                     "add from: the sender address"),
    "missing type": (_set("providers", "feed", "type", value=DELETE), None, "providers.feed.type", "missing",
                     "add type: http or smtp"),
    "missing token": (_set("providers", "app-push", "auth", "token", value=DELETE), None,
                      "providers.app-push.auth.token", "missing", "add token: an environment reference like ${VAR_NAME}"),
    "missing channel": (_set("receivers", "regulator", 0, "channel", value=DELETE), None, "receivers.regulator[0].channel",
                        "missing", "add channel: one of app, sms, voice, email, feed"),
    "missing receivers": (_set("receivers", value=DELETE), None, "receivers", "missing", "add receivers:"),
    "empty providers": (_set("providers", value={}), None, "providers", "is empty", "define at least one provider"),
    # literal secret: refused, and never repeated in the message
    "literal token": (_set("providers", "app-push", "auth", "token", value="plain-token"), None,
                      "providers.app-push.auth.token", "secrets must not be written in the file", _SECRET_FIX),
    "number as password": (_set("providers", "mail", "password", value=123456), None, "providers.mail.password",
                           "secrets must not be written in the file", _SECRET_FIX),
    "secret with a literal default": (_set("providers", "voice", "auth", "password", value="${VOICE_PASS:-hunter2}"),
                                      None, "providers.voice.auth.password", "secrets must not be written", _SECRET_FIX),
    "secret inside text": (_set("providers", "sms", "auth", "secret", value="key-${SMS_SECRET}"), None,
                           "providers.sms.auth.secret", "secrets must not be written", _SECRET_FIX),
    # unset environment variable: in a secret and in ordinary text
    "unset secret variable": (lambda data: None, _NO_SMS_SECRET, "providers.sms.auth.secret",
                              "environment variable SMS_SECRET is not set", "export SMS_SECRET before starting"),
    "unset variable in a url": (_set("providers", "feed", "url", value="${FEED_URL}/warnings"), None,
                                "providers.feed.url", "environment variable FEED_URL is not set", "export FEED_URL"),
    "unset variable in a recipient": (_set("receivers", "ops", 0, "to", value=["${OPS_AUDIENCE}"]), None,
                                      "receivers.ops[0].to[0]", "OPS_AUDIENCE is not set", "export OPS_AUDIENCE"),
    # bad template placeholder, wherever templates are
    "placeholder in a body": (_set("providers", "sms", "body", "text", value="{{label.site}}"), None,
                              "providers.sms.body.text", "unknown placeholder {{label.site}}", _PLACEHOLDER_FIX),
    "placeholder in a body list": (_set("providers", "feed", "body", value={"tags": ["ok", "{{labels}}"]}), None,
                                   "providers.feed.body.tags[1]", "unknown placeholder {{labels}}", _PLACEHOLDER_FIX),
    "placeholder in a url": (_set("providers", "voice", "url", value="http://x/{{phone}}"), None, "providers.voice.url",
                             "unknown placeholder {{phone}}", _PLACEHOLDER_FIX),
    "placeholder in a header": (_set("providers", "voice", "headers", "X-Cabinet", value="{{labels.cabinet"), None,
                                "providers.voice.headers.X-Cabinet", "malformed placeholder", _PLACEHOLDER_FIX),
    "placeholder in a subject": (_set("providers", "mail", "subject", value="{{alertname}}"), None,
                                 "providers.mail.subject", "unknown placeholder {{alertname}}", _PLACEHOLDER_FIX),
    # checks across keys
    "email through http": (_set("receivers", "critical", 3, "provider", value="app-push"), None,
                           "receivers.critical[3].provider", "channel email needs an smtp provider", "type: smtp"),
    "e-mail without addresses": (_set("receivers", "critical", 3, "to", value=DELETE), None, "receivers.critical[3].to",
                                 "e-mail needs recipient addresses", "list addresses under to:"),
    "form body as text": (_set("providers", "voice", "format", value="form"), None, "providers.voice.format",
                          "format form needs a mapping body", "write the body as key: value pairs"),
    "url without scheme": (_set("providers", "feed", "url", value="feed.example/api"), None, "providers.feed.url",
                           "must start with http:// or https://", "write the full provider URL"),
}


@pytest.mark.parametrize("change, env, key, problem, fix", list(BAD_CONFIGS.values()), ids=list(BAD_CONFIGS))
def test_bad_config_names_file_key_and_fix(tmp_path, change, env, key, problem, fix):
    data = make_config("http://x")
    change(data)
    message = _config_error(tmp_path, data, env)
    where = f"{tmp_path / 'notifier.yaml'}: {key}: "
    assert message.startswith(where), message
    rest = message.removeprefix(where)
    # (lower case: a boolean is spelt true or True depending on the message)
    assert problem.lower() in rest.lower() and fix in rest, message
    assert rest.lower().index(problem.lower()) < rest.rindex(fix), message
    assert "plain-token" not in message and "123456" not in message and "hunter2" not in message


def test_config_error_parts_are_attributes():
    data = make_config("http://x")
    data["notifier"]["retry"]["attempts"] = 0
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="notifier.yaml", env=ENV)
    assert (err.value.source, err.value.key) == ("notifier.yaml", "notifier.retry.attempts")
    assert err.value.fix == "a whole number >= 1: total tries per message"
    assert str(err.value) == f"notifier.yaml: notifier.retry.attempts: {err.value.problem} - {err.value.fix}"


def test_unquoted_numbers_are_text_and_names_may_be_numbers(tmp_path):
    path = tmp_path / "notifier.yaml"
    data = make_config("http://x")
    data["receivers"]["ops"][1]["to"] = [8613800000009]  # a phone number written without quotes
    data["receivers"][2] = [{"channel": "app", "provider": "app-push", "to": ["ops"], "levels": [2, "3"]}]
    path.write_text(yaml.safe_dump(data))
    config = load_config(path, env=ENV)
    assert config.receivers["ops"][1].recipients == ("8613800000009",)
    assert config.receivers["2"][0].levels == frozenset({"2", "3"})


def test_env_references_resolve_in_text_secrets_and_templates():
    data = make_config("${BASE_URL:-http://fallback}")
    data["providers"]["mail"]["host"] = "${SMTP_HOST}"
    config = parse_config(data, env={**ENV, "SMTP_HOST": "mail.test"})
    assert config.providers["feed"].url.source == "http://fallback/feed"
    assert config.providers["mail"].host == "mail.test" and config.providers["mail"].password == "s3cret-mail"
    assert config.providers["app-push"].auth.token == "tok-123"
    assert config.providers["sms"].body_format == "form" and config.providers["voice"].body_format == "text"
    assert config.providers["feed"].auth.type == "none" and config.providers["feed"].method == "POST"


# Arbitrary YAML-like trees, with the file's own keys and values mixed in so that validation gets deep.
_KEYS = st.sampled_from(["notifier", "providers", "receivers", "retry", "attempts", "timeout_s", "concurrency",
                         "delivery_log", "type", "url", "body", "format", "auth", "token", "secret", "headers",
                         "host", "port", "from", "password", "channel", "provider", "to", "levels", "sms", "mail",
                         "critical"]) | st.text(max_size=6) | st.integers(-2, 5)
_LEAVES = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
           | st.sampled_from(["http", "smtp", "hmac", "bearer", "none", "json", "form", "text", "sms", "app", "email",
                              "mail", "http://x/{{recipient}}", "{{nope}}", "{{labels.site", "${APP_TOKEN}", "${UNSET}",
                              "${X:-1}", "3", ""]))
_TREES = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
                      max_leaves=25)


def _parses_or_config_error(data: Any) -> None:
    try:
        config = parse_config(data, source="fuzz.yaml", env=ENV)
    except ConfigError as err:
        assert err.source == "fuzz.yaml" and err.key and err.problem and err.fix
        assert str(err) == f"fuzz.yaml: {err.key}: {err.problem} - {err.fix}"
    else:
        assert isinstance(config, NotifierConfig)


@given(_TREES)
def test_parse_config_on_any_tree_returns_or_raises_config_error(data):
    _parses_or_config_error(data)


@given(st.data())
def test_parse_config_on_a_damaged_valid_config_returns_or_raises_config_error(data):
    config = make_config("http://x", 25)
    node: Any = config
    while True:  # walk down a random path of the valid config, then replace, add or delete there
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
            node = child
            continue
        action = data.draw(st.sampled_from(["replace", "add", "delete"]))
        if action == "replace":
            node[key] = data.draw(_TREES)
        elif action == "add" and isinstance(node, dict):
            node[data.draw(_KEYS)] = data.draw(_TREES)
        elif isinstance(node, dict):
            del node[key]
        else:
            node.pop(key)
        break
    _parses_or_config_error(config)


def test_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match="notifier.example.yaml"):
        load_config(tmp_path / "absent.yaml")


def test_example_config_is_valid_and_matches_routing(tmp_path):
    env = {name: "x" for name in ("CASCADE_APP_PUSH_TOKEN", "CASCADE_SMS_HMAC_SECRET", "CASCADE_VOICE_USER",
                                  "CASCADE_VOICE_PASSWORD", "CASCADE_REGULATOR_TOKEN", "CASCADE_SMTP_USER",
                                  "CASCADE_SMTP_PASSWORD")}
    (tmp_path / "token").write_text("0123456789abcdef0123456789abcdef\n")
    env["CASCADE_NOTIFIER_TOKEN_FILE"] = str(tmp_path / "token")
    config = load_config(REPO / "config" / "notifier.example.yaml", env=env)
    channels = {name: {d.channel for d in deliveries} for name, deliveries in config.receivers.items()}
    assert {"voice", "sms", "app"} <= channels["critical"]
    assert channels["warning"] == {"sms", "app"}
    assert channels["notice"] == {"app"}
    assert channels["regulator"] == {"feed"}
    # Every Alertmanager webhook receiver has a notifier receiver of the same name.
    am = yaml.safe_load((REPO / "provisioning" / "alertmanager" / "alertmanager.yml").read_text())
    webhook_receivers = {r["name"] for r in am["receivers"] if r.get("webhook_configs")}
    assert webhook_receivers == set(config.receivers)


# ---------------------------------------------------------------- entry point

async def test_serve_runs_until_cancelled(tmp_path, provider, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "notifier.yaml"
    path.write_text(yaml.safe_dump(make_config(provider.url)))
    port = free_port()
    task = asyncio.create_task(serve(str(path), "127.0.0.1", port))
    async with aiohttp.ClientSession() as session:
        await wait_until_answers(session, f"http://127.0.0.1:{port}/-/healthy", "serve()", pause_s=0.02)
        async with session.post(f"http://127.0.0.1:{port}/webhook/regulator",
                                json=payload(alert("3"), receiver="regulator")) as resp:
            assert resp.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(provider.on("/feed")) == 1  # shutdown waited for the accepted delivery


def test_target_placeholder_reads_well_for_slot_and_cabinet_alerts():
    from notifier.delivery import describe_target
    assert describe_target({"site": "site-01", "cabinet": "C0003", "slot": "5"}) == "site-01/C0003 slot 5"
    assert describe_target({"site": "site-01", "cabinet": "C0003"}) == "site-01/C0003"
    assert describe_target({"component": "influxdb"}) == "influxdb"


def test_absurdly_nested_json_is_a_payload_error_not_a_crash():
    from notifier.webhook import PayloadError, parse_webhook
    with pytest.raises(PayloadError, match="not JSON"):
        parse_webhook(b"[" * 100_000 + b"]" * 100_000)
