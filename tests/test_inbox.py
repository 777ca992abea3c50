"""The local inbox (``cascade inbox``) and the local notifier config that points at it."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from notifier import build_app as build_notifier
from notifier import load_config, parse_config
from simulators.inbox import build_app, human_line

ROOT = Path(__file__).resolve().parents[1]
LOCAL_CONFIG = ROOT / "config" / "notifier.local.yaml"


@pytest.fixture
async def inbox(tmp_path):
    out = io.StringIO()
    app = build_app(tmp_path / "inbox.jsonl", limit=5, out=out)
    async with TestClient(TestServer(app)) as client:
        client.out = out
        client.log_path = tmp_path / "inbox.jsonl"
        yield client


async def test_json_and_form_posts_are_listed_printed_and_logged(inbox):
    resp = await inbox.post("/voice", json={"to": "+8613800000001", "speech": "Cascade critical alert.", "repeat": 2})
    assert resp.status == 200 and (await resp.json())["status"] == "received"
    resp = await inbox.post("/sms", data={"to": "+8613800000001", "text": "Cascade L3 firing: hot"})
    assert resp.status == 200
    resp = await inbox.post("/app", json={"audience": "site-oncall", "title": "[L3 critical] x", "text": "hot"})
    assert resp.status == 200

    body = await (await inbox.get("/messages")).json()
    assert body["total"] == 3
    assert [m["channel"] for m in body["messages"]] == ["voice", "sms", "app"]
    voice, sms, app = body["messages"]
    assert voice["body"] == {"to": "+8613800000001", "speech": "Cascade critical alert.", "repeat": 2}
    assert sms["body"] == {"to": "+8613800000001", "text": "Cascade L3 firing: hot"}
    assert sms["content_type"] == "application/x-www-form-urlencoded"
    assert app["body"]["audience"] == "site-oncall"

    lines = inbox.out.getvalue().splitlines()
    assert lines == [
        "INBOX voice → +8613800000001: Cascade critical alert.",
        "INBOX sms → +8613800000001: Cascade L3 firing: hot",
        "INBOX app → site-oncall: [L3 critical] x: hot",
    ]
    logged = [json.loads(line) for line in inbox.log_path.read_text().splitlines()]
    assert [m["channel"] for m in logged] == ["voice", "sms", "app"]
    assert logged[1]["body"]["text"] == "Cascade L3 firing: hot"

    only_sms = await (await inbox.get("/messages", params={"channel": "sms"})).json()
    assert [m["id"] for m in only_sms["messages"]] == [2]
    last = await (await inbox.get("/messages", params={"limit": "1"})).json()
    assert [m["channel"] for m in last["messages"]] == ["app"]


async def test_any_path_text_bodies_and_bounded_memory(inbox):
    resp = await inbox.post("/some/vendor/path", data=b"plain words", headers={"Content-Type": "text/plain"})
    assert resp.status == 200
    for i in range(6):
        await inbox.post("/sms", data={"to": str(i), "text": f"m{i}"})
    body = await (await inbox.get("/messages")).json()
    assert body["total"] == 7
    assert len(body["messages"]) == 5  # limit=5: the oldest are dropped from memory
    assert [m["body"]["to"] for m in body["messages"]] == ["1", "2", "3", "4", "5"]
    assert len(inbox.log_path.read_text().splitlines()) == 7  # ... but not from the log
    assert "INBOX some: plain words" in inbox.out.getvalue()
    assert (await inbox.get("/-/healthy")).status == 200
    assert (await inbox.get("/messages", params={"limit": "x"})).status == 400


def test_human_line_falls_back_to_json():
    line = human_line({"channel": "feed", "body": {"source": "cascade", "rule": "h2_gas"}})
    assert line == 'INBOX feed: {"source": "cascade", "rule": "h2_gas"}'
    line = human_line({"channel": "feed", "body": {"status": "firing", "summary": "L3 hot"}})
    assert line == "INBOX feed [firing]: L3 hot"


def test_local_notifier_config_loads_and_covers_every_receiver():
    config = load_config(LOCAL_CONFIG, env={})  # no secrets needed
    assert set(config.receivers) >= {"critical", "warning", "notice", "regulator", "ops"}
    channels = {name: {d.channel for d in deliveries} for name, deliveries in config.receivers.items()}
    assert channels["critical"] == {"voice", "sms", "app"}
    assert channels["warning"] == {"sms", "app"}
    assert channels["notice"] == {"app"}
    assert channels["regulator"] == {"feed"}
    assert "app" in channels["ops"]
    assert config.delivery_log and Path(config.delivery_log).resolve() == ROOT / "var" / "notify-deliveries.jsonl"
    for provider in config.providers.values():
        assert provider.url.source.startswith("http://127.0.0.1:9130/")
    # Every Alertmanager receiver that goes through the notifier has a notifier receiver.
    am = yaml.safe_load((ROOT / "provisioning/alertmanager/alertmanager.yml").read_text())
    webhook_receivers = {r["name"] for r in am["receivers"] if r.get("webhook_configs")}
    assert webhook_receivers <= set(config.receivers)


async def test_critical_webhook_reaches_the_inbox_as_voice_sms_and_app(inbox, tmp_path):
    port = inbox.server.port
    text = LOCAL_CONFIG.read_text().replace("http://127.0.0.1:9130/", f"http://127.0.0.1:{port}/")
    doc = yaml.safe_load(text)
    doc["notifier"]["delivery_log"] = str(tmp_path / "deliveries.jsonl")
    config = parse_config(doc, source="notifier.local.yaml", env={})
    payload = {"version": "4", "receiver": "critical", "status": "firing", "alerts": [{
        "status": "firing", "fingerprint": "f00d",
        "labels": {"alertname": "thermal_runaway", "rule": "thermal_runaway", "level": "3", "severity": "critical",
                   "site": "site-01", "cabinet": "C0003", "slot": "5"},
        "annotations": {"summary": "Thermal-runaway precursor", "action": "Cut off slot 5"},
        "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}]}
    async with aiohttp.ClientSession() as session, \
            TestClient(TestServer(build_notifier(config, session=session))) as notifier:
        resp = await notifier.post("/webhook/critical", json=payload)
        assert resp.status == 200
        for _ in range(100):
            body = await (await inbox.get("/messages")).json()
            if body["total"] >= 3:
                break
            await asyncio.sleep(0.05)
    assert sorted(m["channel"] for m in body["messages"]) == ["app", "sms", "voice"]
    sms = next(m for m in body["messages"] if m["channel"] == "sms")
    assert sms["body"]["to"] == "+8613800000001"
    # Simplified Chinese by default: level and place first, the place said once, no rule ids read aloud.
    assert sms["body"]["text"].startswith("【Cascade】三级预警：site-01/C0003 5号仓"), sms["body"]["text"]
    voice = next(m for m in body["messages"] if m["channel"] == "voice")["body"]["speech"]
    assert voice.startswith("电池安全三级预警。site-01，C0003号柜，5号仓"), voice
    assert "thermal_runaway" not in voice and voice.count("C0003") == 1
