"""Warning-signal push (issue 14, P-5.5.3): alert level changes POSTed to each subscriber's webhook, signed
with HMAC-SHA256 over timestamp and body, retried with back-off, every attempt in the delivery log (file and
``GET /api/v1/logs/deliveries``). Real HTTP: the alert service started by ``start_app``, local aiohttp
receivers on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import aiohttp
import pytest
from aiohttp import web

from cascade.app import alerting_settings, start_app, webhook_pusher
from cascade.config import ConfigError
from tests import test_auth_api
from tests.fixtures.ports import free_port
from tests.test_auth_api import ALERT, CAB, SITE, auth_for, bearer, make_config, raise_alert

issuer = test_auth_api.issuer  # the local OpenID Connect issuer on a free port (a fixture)

pytestmark = pytest.mark.timeout(120)

SECRET = "s3cret-shared-with-the-city-platform"


class Receiver:
    """A subscriber's endpoint: answers each POST with the next status of ``script`` (then 200) and
    verifies the signature the way docs/api.md tells a subscriber to."""

    def __init__(self, script: list[int], secret: str = SECRET) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.script = list(script)
        self.secret = secret.encode()
        self.received: list[dict] = []
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers["X-Cascade-Timestamp"]
        expected = "sha256=" + hmac.new(self.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        self.received.append({"at": time.time(), "stamp": int(stamp), "body": json.loads(body),
                              "delivery": request.headers["X-Cascade-Delivery"],
                              "valid": hmac.compare_digest(expected, request.headers["X-Cascade-Signature"]),
                              "content_type": request.headers["Content-Type"]})
        return web.Response(status=self.script.pop(0) if self.script else 200)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def _until(predicate, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_signals_are_signed_retried_with_backoff_and_logged(tmp_path, issuer):
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    async with Receiver([503, 500]) as flaky, Receiver([400]) as refusing, Receiver([]) as critical_only:
        hooks = [
            {"name": "city-platform", "url": flaky.url, "secret_file": str(secret_file), "backoff_s": 0.2,
             "max_attempts": 4},
            {"name": "insurer", "url": refusing.url, "secret_file": str(secret_file), "backoff_s": 0.2},
            {"name": "fire-brigade", "url": critical_only.url, "secret_file": str(secret_file), "levels": [3]},
        ]
        log_file = tmp_path / "webhook-deliveries.jsonl"
        config = make_config(tmp_path, free_port(), auth=auth_for(issuer), webhooks=hooks,
                             webhook_log_file=str(log_file))
        async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
            await raise_alert(pipeline)  # pack_overvoltage level 2 on slot 3
            await _until(lambda: len(flaky.received) == 3 and len(refusing.received) == 1)

            # Signed: the signature verifies with the shared secret over '<timestamp>.<body>'.
            assert all(r["valid"] for r in flaky.received + refusing.received)
            assert all(abs(r["stamp"] - time.time()) < 30 for r in flaky.received)
            # One signal, three attempts: the same delivery id and body, later each time (back-off).
            assert len({r["delivery"] for r in flaky.received}) == 1
            assert len({json.dumps(r["body"], sort_keys=True) for r in flaky.received}) == 1
            gaps = [b["at"] - a["at"] for a, b in zip(flaky.received, flaky.received[1:])]
            assert gaps[0] >= 0.15 and gaps[1] >= 0.3 and gaps[1] > gaps[0], gaps
            signal = flaky.received[-1]["body"]
            assert signal["id"] == flaky.received[0]["delivery"] and signal["event"] == "alert"
            alert = signal["alert"]
            assert (alert["rule"], alert["kind"], alert["level"], alert["from_level"], alert["site"], alert["cabinet"],
                    alert["slot"], alert["category"]) == ("pack_overvoltage", "raise", 2, 0, SITE, CAB, 3,
                                                          "pack_over_voltage")
            assert alert["summary"] and flaky.received[0]["content_type"] == "application/json"
            # A receiver that refuses (4xx) is not retried; one that wants level 3 only gets nothing.
            await asyncio.sleep(0.5)
            assert len(refusing.received) == 1 and critical_only.received == []

            # The delivery log: a line per attempt, in the file and over the API.
            lines = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
            mine = [(e["subscriber"], e["attempt"], e["status"], e["result"]) for e in lines]
            assert [x for x in mine if x[0] == "city-platform"] == [
                ("city-platform", 1, 503, "retrying"), ("city-platform", 2, 500, "retrying"),
                ("city-platform", 3, 200, "delivered")]
            assert [x for x in mine if x[0] == "insurer"] == [("insurer", 1, 400, "failed")]
            url = f"http://127.0.0.1:{pipeline.metrics_port}/api/v1/logs/deliveries?limit=2"
            headers = bearer(issuer.token("dora", "regulator"))
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 200
                page = await resp.json()
            assert len(page["items"]) == 2 and page["next_cursor"]
            async with http.get(f"{url}&cursor={page['next_cursor']}", headers=headers) as resp:
                rest = await resp.json()
            api = [(e["subscriber"], e["attempt"], e["status"], e["result"]) for e in page["items"] + rest["items"]]
            assert api == mine and all(e["id"] == signal["id"] for e in page["items"] if e["subscriber"] ==
                                       "city-platform")

            # The clear goes out too (level 0, from level 2).
            from core.model import CabinetReading, SlotReading
            calm = CabinetReading(cabinet_id=CAB, site=SITE, model="reference-cabinet", timestamp_ns=time.time_ns(),
                                  slots=[SlotReading(slot=3, voltage_v=50.0, nominal_voltage_v=48.0)])
            await pipeline.alerts.handle_reading(calm)
            assert ALERT not in [a["key"] for a in pipeline.alerts.active_alerts()]
            await _until(lambda: len(flaky.received) == 4)
            assert flaky.received[-1]["body"]["alert"]["kind"] == "clear"
            assert flaky.received[-1]["body"]["alert"]["from_level"] == 2 and flaky.received[-1]["valid"]


async def test_a_subscriber_that_never_answers_is_given_up_after_max_attempts(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET, encoding="utf-8")
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens
    config = make_config(tmp_path, free_port(), webhook_log_file=str(tmp_path / "deliveries.jsonl"), webhooks=[
        {"name": "gone", "url": dead, "secret_file": str(secret_file), "backoff_s": 0.05, "max_attempts": 3}])
    async with start_app(config) as pipeline:
        await raise_alert(pipeline)
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{pipeline.metrics_port}/api/v1/logs/deliveries"
            for _ in range(100):
                async with http.get(url) as resp:  # no issuer configured: open on loopback
                    items = (await resp.json())["items"]
                if items and items[-1]["result"] == "failed":
                    break
                await asyncio.sleep(0.05)
        assert [(e["attempt"], e["status"], e["result"]) for e in items] == [
            (1, None, "retrying"), (2, None, "retrying"), (3, None, "failed")]
        assert "ClientConnectorError" in items[0]["error"] or "Connect" in items[0]["error"]


def test_subscriber_secrets_are_checked_at_start_up(tmp_path, monkeypatch):
    base = {"name": "city", "url": "https://platform.example/hook"}
    short = tmp_path / "short"
    short.write_text("too-short", encoding="utf-8")
    cases = {
        "secret_file": {**base, "secret_file": str(tmp_path / "missing")},
        "short": {**base, "secret_file": str(short)},
        "env": {**base, "secret_env": "CASCADE_TEST_WEBHOOK_SECRET"},
    }
    monkeypatch.delenv("CASCADE_TEST_WEBHOOK_SECRET", raising=False)
    for hook in cases.values():
        config = make_config(tmp_path, free_port(), webhooks=[hook])
        with pytest.raises(ConfigError, match=r"alerting\.webhooks\[0\]\.secret_(file|env)"):
            webhook_pusher(config, alerting_settings(config))
    monkeypatch.setenv("CASCADE_TEST_WEBHOOK_SECRET", SECRET)
    config = make_config(tmp_path, free_port(), webhooks=[cases["env"]])
    pusher = webhook_pusher(config, alerting_settings(config))
    assert pusher.subscribers[0].secret == SECRET.encode() and "secret" not in repr(pusher.subscribers[0]).lower()
    for bad in ({**base}, {**base, "secret_env": "X", "secret_file": "y"}, {**base, "secret_env": "X", "levels": [4]},
                {**base, "secret_env": "X", "name": "a b"}, {**base, "secret_env": "X", "url": "ftp://x"}):
        config = make_config(tmp_path, free_port(), webhooks=[bad])
        with pytest.raises(ConfigError, match=r"alerting\.webhooks"):
            alerting_settings(config)
