"""Shipped Alertmanager routing (P-5.2.2.4 tiered notification, P-5.5.3 regulator feed), checked by
amtool and by a real Alertmanager delivering to the real notifier, whose providers are loopback servers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from notifier import build_app, parse_config, render_alertmanager_config
from tests.fixtures.procs import require_binary
from tests.fixtures.prom import SHIPPED_ALERTMANAGER_CONFIG


def test_shipped_config_passes_amtool():
    amtool = require_binary("amtool")
    result = subprocess.run([amtool, "check-config", str(SHIPPED_ALERTMANAGER_CONFIG)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rendered_config_passes_amtool(tmp_path):
    amtool = require_binary("amtool")
    path = tmp_path / "am.yml"
    path.write_text(render_alertmanager_config(SHIPPED_ALERTMANAGER_CONFIG.read_text(), "http://127.0.0.1:9120/",
                                               smtp_smarthost="127.0.0.1:2525"))
    assert "cascade-notifier" not in path.read_text() and "127.0.0.1:2525" in path.read_text()
    result = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_refuses_a_foreign_config():
    with pytest.raises(ValueError, match="shipped"):
        render_alertmanager_config("route: {}", "http://127.0.0.1:1")


@pytest.mark.parametrize("labels, receivers", [
    ({"level": "3", "rule": "thermal_runaway", "alertname": "thermal_runaway", "site": "s", "cabinet": "c"},
     "regulator,critical"),
    ({"level": "2", "rule": "overtemp", "alertname": "overtemp", "site": "s", "cabinet": "c"}, "regulator,warning"),
    ({"level": "1", "rule": "soc_drift", "alertname": "soc_drift", "site": "s", "cabinet": "c"}, "notice"),
    ({"level": "3", "rule": "thermal_runaway", "alertname": "thermal_runaway", "site": "s", "cabinet": "c",
      "escalation": "1"}, "critical-escalation"),
    ({"level": "3", "component": "collector", "alertname": "CascadeCollectorDown"}, "ops"),
    ({"level": "3", "component": "notifier", "alertname": "CascadeNotifierDown"}, "ops-fallback,ops"),
    ({"alertname": "Unlabelled"}, "ops"),
    # Prometheus' mirror of an engine alert is shown, never sent (the engine's own alert pages).
    ({"alertname": "CascadeSafetyAlert", "mirror": "engine", "level": "3", "rule": "thermal_runaway", "site": "s",
      "cabinet": "c"}, "null"),
])
def test_routing_by_level(labels, receivers):
    amtool = require_binary("amtool")
    result = subprocess.run([amtool, "config", "routes", "test", f"--config.file={SHIPPED_ALERTMANAGER_CONFIG}",
                             *(f"{k}={v}" for k, v in labels.items())], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receivers


def test_level_timings_match_urgency():
    routes = {r["receiver"]: r for r in yaml.safe_load(SHIPPED_ALERTMANAGER_CONFIG.read_text())["route"]["routes"]}
    assert routes["critical"]["group_wait"] in ("0s", "1s")
    assert routes["critical"]["repeat_interval"] == "5m"
    assert routes["warning"]["repeat_interval"] == "1h"
    assert routes["notice"]["repeat_interval"] == "24h"  # standing notices: one daily digest per site
    assert routes["notice"]["group_by"] == ["site"]
    assert routes["regulator"]["continue"] is True


# ---------------------------------------------------------------- real Alertmanager -> real notifier

class _Provider:
    """Loopback stand-in for the voice/SMS/app/feed providers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any], float]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, await request.json(), time.monotonic()))
        return web.Response(text="ok")

    def on(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body, _ in self.requests if p == path]


async def _serve(app: web.Application, runners: list[web.AppRunner]) -> str:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    runners.append(runner)
    return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def notifier_chain() -> AsyncIterator[tuple[str, _Provider]]:
    runners: list[web.AppRunner] = []
    provider = _Provider()
    provider_app = web.Application()
    provider_app.router.add_post("/{tail:.*}", provider.handle)
    provider_url = await _serve(provider_app, runners)

    def http(path: str) -> dict[str, Any]:
        return {"type": "http", "url": f"{provider_url}/{path}",
                "body": {"to": "{{recipient}}", "alert": "{{labels.alertname}}", "level": "{{labels.level}}",
                         "slot": "{{labels.slot}}", "status": "{{status}}"}}

    config = parse_config({
        "notifier": {"retry": {"attempts": 2, "initial_delay_s": 0.01}},
        "providers": {"voice": http("voice"), "sms": http("sms"), "app": http("app"), "feed": http("feed")},
        "receivers": {
            "critical": [{"channel": "voice", "provider": "voice", "to": ["+100"]},
                         {"channel": "sms", "provider": "sms", "to": ["+100"]},
                         {"channel": "app", "provider": "app", "to": ["oncall"]}],
            "warning": [{"channel": "sms", "provider": "sms", "to": ["+100"]},
                        {"channel": "app", "provider": "app", "to": ["oncall"]}],
            "notice": [{"channel": "app", "provider": "app", "to": ["maintenance"]}],
            "regulator": [{"channel": "feed", "provider": "feed"}],
            "ops": [{"channel": "app", "provider": "app", "to": ["ops"]}],
        },
    }, source="chain.yaml", env={})
    notifier_url = await _serve(build_app(config, registry=CollectorRegistry()), runners)
    yield notifier_url, provider
    for runner in runners:
        await runner.cleanup()


def _alert(rule: str, level: str, cabinet: str = "c7", slot: str | None = "4", **extra: str) -> dict[str, Any]:
    labels = {"alertname": rule, "rule": rule, "level": level,
              "severity": {"1": "notice", "2": "warning", "3": "critical"}[level],
              "site": "s1", "cabinet": cabinet, "battery": "B-1", **extra}
    if slot is not None:
        labels["slot"] = slot
    return {"labels": labels, "annotations": {"summary": f"{rule} on {cabinet}/{slot}", "diagnosis": "d",
                                              "action": "a"}}


def _by_rule_and_place(alerts: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(a["labels"]["alertname"], a["labels"]["cabinet"], a["labels"].get("slot", "")): a for a in alerts}


async def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_level3_pages_at_once_and_inhibits_lower_levels_on_same_target(alertmanager_factory, notifier_chain):
    notifier_url, provider = notifier_chain
    am = alertmanager_factory(render_alertmanager_config(SHIPPED_ALERTMANAGER_CONFIG.read_text(), notifier_url))

    posted = time.monotonic()
    await asyncio.to_thread(am.post_alerts, [
        _alert("thermal_runaway", "3"),                      # source: slot c7/4
        _alert("overtemp", "2"),                             # same slot, other rule  -> inhibited
        _alert("soc_drift", "1"),                            # same slot, level 1     -> inhibited
        _alert("overtemp", "2", slot="5"),                   # other slot             -> not inhibited
        _alert("cabinet_fire", "3", cabinet="c9", slot=None),  # cabinet-wide level 3
        _alert("overtemp", "2", cabinet="c9", slot="1"),       # slot in that cabinet -> inhibited
        _alert("door_open", "2", cabinet="c3", slot=None),   # cabinet-level 2 elsewhere
        _alert("soc_drift", "1", cabinet="c3", slot="2"),    # not the same slot target -> not inhibited
        {"labels": {"alertname": "CascadeCabinetOffline", "component": "collector", "level": "3",
                    "severity": "critical", "site": "s1", "cabinet": "c3"}, "annotations": {}},
    ])

    # Alertmanager's inhibition state is visible in API v2 (status.inhibitedBy).
    def states() -> dict[tuple[str, str, str], dict[str, Any]]:
        return _by_rule_and_place(am.alerts())

    await _wait_for(lambda: len(states()) == 9, 5, "all alerts in Alertmanager")
    await _wait_for(lambda: states()[("overtemp", "c7", "4")]["status"]["inhibitedBy"], 5, "inhibition")
    alerts = states()
    source = alerts[("thermal_runaway", "c7", "4")]["fingerprint"]
    assert alerts[("overtemp", "c7", "4")]["status"]["inhibitedBy"] == [source]
    assert alerts[("soc_drift", "c7", "4")]["status"]["inhibitedBy"]  # by level 3 (and level-2 overtemp)
    assert alerts[("overtemp", "c7", "5")]["status"]["inhibitedBy"] == []
    assert alerts[("overtemp", "c9", "1")]["status"]["inhibitedBy"] == [alerts[("cabinet_fire", "c9", "")]["fingerprint"]]
    assert alerts[("soc_drift", "c3", "2")]["status"]["inhibitedBy"] == []  # health level 3 inhibits nothing
    assert alerts[("door_open", "c3", "")]["status"]["inhibitedBy"] == []
    assert alerts[("thermal_runaway", "c7", "4")]["status"]["state"] == "active"

    # Level 3: voice + SMS + app within a few seconds (group_wait 1s), only for the level-3 alerts.
    await _wait_for(lambda: len(provider.on("/voice")) >= 2, 8, "the level-3 voice calls")
    first_call = min(t for p, _, t in provider.requests if p == "/voice")
    assert first_call - posted < 5
    assert {(b["alert"], b["slot"]) for b in provider.on("/voice")} == {("thermal_runaway", "4"), ("cabinet_fire", "")}
    assert {b["level"] for b in provider.on("/sms")} == {"3"}  # level-2 SMS only after its 10s group_wait
    assert {b["to"] for b in provider.on("/app")} >= {"oncall"}

    # Regulator feed (continue: true) gets the level-3 alerts too, after its 5s group_wait; the
    # inhibited level 2 never reaches it.
    await _wait_for(lambda: len(provider.on("/feed")) >= 2, 10, "the regulator feed")
    feed = {(b["alert"], b["slot"]) for b in provider.on("/feed")}
    assert ("thermal_runaway", "4") in feed and ("cabinet_fire", "") in feed
    assert ("overtemp", "4") not in feed and ("overtemp", "1") not in feed
    # The level-3 health alert (ops route, 30s group_wait) reached none of the on-call channels.
    assert all(b["alert"] != "CascadeCabinetOffline" for _, b, _ in provider.requests)


async def test_level1_goes_to_the_app_only(alertmanager_factory, notifier_chain):
    notifier_url, provider = notifier_chain
    # Same routing with the notice group_wait shortened so the test need not wait 30s.
    text = render_alertmanager_config(SHIPPED_ALERTMANAGER_CONFIG.read_text(), notifier_url)
    marker = "      receiver: notice\n      group_by: [site]\n      group_wait: 30s"
    assert marker in text
    am = alertmanager_factory(text.replace(marker, marker.replace("30s", "1s")))
    await asyncio.to_thread(am.post_alerts, [_alert("soc_drift", "1")])
    await _wait_for(lambda: provider.on("/app"), 8, "the level-1 app message")
    await asyncio.sleep(0.5)
    assert [(p, b["to"]) for p, b, _ in provider.requests] == [("/app", "maintenance")]


def test_default_fixture_runs_the_shipped_routing(alertmanager):
    with urllib.request.urlopen(f"{alertmanager.url}/api/v2/status", timeout=10) as resp:
        status = json.load(resp)
    assert status["cluster"]["status"] == "disabled"
    assert "receiver: critical" in status["config"]["original"]
    assert alertmanager.config_path.read_text().count("/webhook/") == 6
    alertmanager.post_alerts([_alert("thermal_runaway", "3")])
    assert [a["labels"]["rule"] for a in alertmanager.alerts()] == ["thermal_runaway"]


async def test_the_webhook_takes_only_alertmanager_with_the_token_and_bounded_requests(alertmanager_factory,
                                                                                      tmp_path):
    """A process on the same host cannot make the notifier page anyone: the webhook wants the token
    Alertmanager reads from its credentials file, and a request carries at most max_alerts alerts."""
    runners: list[web.AppRunner] = []
    provider = _Provider()
    provider_app = web.Application()
    provider_app.router.add_post("/{tail:.*}", provider.handle)
    provider_url = await _serve(provider_app, runners)
    token = tmp_path / "notifier-webhook-token"
    token.write_text("f" * 40 + "\n")
    config = parse_config({
        "notifier": {"retry": {"attempts": 1}, "webhook_token_file": str(token), "max_alerts_per_request": 5},
        "providers": {"app": {"type": "http", "url": f"{provider_url}/app",
                              "body": {"to": "{{recipient}}", "alert": "{{labels.alertname}}"}}},
        "receivers": {name: [{"channel": "app", "provider": "app", "to": [name]}]
                      for name in ("critical", "critical-escalation", "warning", "notice", "regulator", "ops")},
    }, source="token.yaml", env={})
    notifier_url = await _serve(build_app(config, registry=CollectorRegistry()), runners)
    try:
        payload = {"version": "4", "receiver": "critical", "status": "firing", "alerts": [
            {"status": "firing", "labels": {"alertname": "forged", "level": "3"}, "annotations": {}}]}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{notifier_url}/webhook/critical", json=payload) as resp:
                assert resp.status == 401
            async with http.post(f"{notifier_url}/webhook/critical", json=payload,
                                 headers={"Authorization": "Bearer not-the-token-0000000000"}) as resp:
                assert resp.status == 401
            many = {**payload, "alerts": payload["alerts"] * 6}
            async with http.post(f"{notifier_url}/webhook/critical", json=many,
                                 headers={"Authorization": f"Bearer {'f' * 40}"}) as resp:
                assert resp.status == 413 and "at most 5" in (await resp.json())["error"]
        assert provider.requests == []  # nothing forged was delivered
        # Alertmanager, given the token file, gets through.
        am = alertmanager_factory(render_alertmanager_config(SHIPPED_ALERTMANAGER_CONFIG.read_text(), notifier_url,
                                                             token_file=str(token)))
        await asyncio.to_thread(am.post_alerts, [_alert("thermal_runaway", "3")])
        await _wait_for(lambda: provider.on("/app"), 10, "the level-3 page through the authenticated webhook")
    finally:
        for runner in runners:
            await runner.cleanup()


def test_the_shipped_config_sends_the_token_and_caps_alerts():
    doc = yaml.safe_load(SHIPPED_ALERTMANAGER_CONFIG.read_text())
    hooks = [h for r in doc["receivers"] for h in r.get("webhook_configs", [])]
    assert hooks and all(h["max_alerts"] == 100 for h in hooks)
    assert all(h["http_config"]["authorization"] == {"type": "Bearer",
                                                     "credentials_file": "/run/secrets/notifier_webhook_token"}
               for h in hooks)
