"""The cabinet control page (issue 14, item 3): `GET /control` on the alert service, opened from the cabinet
dashboard. Served with a strict Content-Security-Policy (its own script and style only, calls to its own
origin) and the security headers, no cookie; Chinese by default, English by option. What the page calls is
checked the way its script calls it, over real HTTP against `start_app` and a real simulated cabinet: the
slots and the commands the token's roles allow, a command with the confirmation the API requires, the
read-back in the answer, and a call from another site refused; and the page's own script, run by Node with
a minimal DOM against the served page and API, click by click."""

from __future__ import annotations

import asyncio
import json
import re
import shutil

import aiohttp
import pytest

from alerting.api_v1 import SECURITY_HEADERS
from alerting.control import CONTROL_PATH, PAGE_POLICY, STATIC
from cascade.app import start_app
from tests import test_auth_api
from tests.test_auth_api import CAB, auth_for, bearer, make_config

issuer = test_auth_api.issuer  # the local OpenID Connect issuer on a free port (a fixture)
cabinet = test_auth_api.cabinet  # one simulated cabinet on a real pymodbus server (a fixture)

pytestmark = pytest.mark.timeout(120)


def _texts(page: str) -> dict:
    data = re.search(r'<script id="cascade-texts" type="application/json">(.*?)</script>', page, re.S)
    assert data is not None
    return json.loads(data.group(1))


async def test_the_page_is_served_with_a_strict_policy_and_no_cookie(tmp_path, issuer, cabinet):
    config = make_config(tmp_path, cabinet.port, auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}"
        # The page itself needs no token: it holds no data, it asks for one.
        async with http.get(f"{base}{CONTROL_PATH}?cabinet={CAB}") as resp:
            assert resp.status == 200 and resp.content_type == "text/html" and resp.charset == "utf-8"
            page = await resp.text()
            headers = resp.headers
        assert headers["Content-Security-Policy"] == PAGE_POLICY
        policy = dict(part.strip().split(" ", 1) for part in PAGE_POLICY.split(";"))
        assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
        assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
        assert "unsafe" not in PAGE_POLICY
        for name, value in SECURITY_HEADERS.items():
            if name != "Content-Security-Policy":
                assert headers[name] == value, name
        assert "Set-Cookie" not in headers
        # Only its own script runs: one external script, and a JSON data block that is never executed.
        scripts = re.findall(r"<script([^>]*)>", page)
        assert sorted(scripts) == sorted([f' src="{CONTROL_PATH}/control.js" defer',
                                          ' id="cascade-texts" type="application/json"'])
        assert "style=" not in page and "onclick" not in page and "<style" not in page
        texts = _texts(page)
        assert texts["language"] == "zh-CN" and texts["texts"]["title"] == "换电柜远程控制"  # Chinese by default
        assert "换电柜远程控制" in page and 'href="?lang=en"' in page
        async with http.get(f"{base}{CONTROL_PATH}?lang=en") as resp:
            english = await resp.text()
        assert _texts(english)["texts"]["title"] == "Cabinet control" and "<title>Cascade · Cabinet control" in english
        assert _texts(english)["texts"]["confirm"].startswith("{command} on {cabinet}{slot}")  # filled by the script
        # The script and the style sheet, with the same headers.
        async with http.get(f"{base}{CONTROL_PATH}/control.js") as resp:
            assert resp.status == 200 and resp.content_type == "text/javascript"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            script = await resp.text()
        assert "sessionStorage" in script and '"Authorization": "Bearer "' in script
        assert 'credentials: "omit"' in script
        assert "document.cookie" not in script and "innerHTML" not in script and "eval(" not in script
        async with http.get(f"{base}{CONTROL_PATH}/control.css") as resp:
            assert resp.status == 200 and resp.content_type == "text/css"
        async with http.get(f"{base}{CONTROL_PATH}/../api/alerts") as resp:
            assert resp.status in (401, 404)  # nothing else is served from the page's folder


async def test_what_the_page_calls_lists_commands_by_role_and_sends_with_confirmation(tmp_path, issuer, cabinet):
    config = make_config(tmp_path, cabinet.port, auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}"
        url = f"{base}/api/cabinets/{CAB}/commands"
        page_origin = {"Origin": base}  # what a browser sends from the page

        async def listing(role: str, **headers: str) -> dict:
            async with http.get(url, headers=bearer(issuer.token(f"otto-{role}", role), **headers)) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()

        operator = await listing("operator")
        assert operator["cabinet"] == CAB
        assert [s["slot"] for s in operator["slots"]] == list(range(1, len(cabinet.state.slots) + 1))
        assert all(s["level"] == 0 for s in operator["slots"])
        commands = {c["name"]: c for c in operator["commands"]}
        assert "fire_suppression" not in commands
        assert {n for n, c in commands.items() if c["allowed"]} == {"stop_charging", "start_charging"}
        assert commands["start_charging"]["confirm"] and not commands["stop_charging"]["confirm"]
        assert commands["stop_charging"]["slot"] and not commands["fault_reset"]["slot"]
        assert commands["charge_current_limit"]["value"] == {"min": 0, "max": 65535}
        assert commands["stop_charging"]["label"] == "停止充电"  # the page's language
        english = await listing("engineer", **{"Accept-Language": "en"})
        assert all(c["allowed"] for c in english["commands"])
        assert {c["name"]: c["label"] for c in english["commands"]}["fault_reset"] == "Fault reset"
        viewer = await listing("viewer")
        assert not any(c["allowed"] for c in viewer["commands"])
        async with http.get(url.replace(CAB, "C9999"), headers=bearer(issuer.token("otto", "operator"))) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == "unknown_cabinet"
        async with http.get(url) as resp:
            assert resp.status == 401

        # Stop, then start with the confirmation the page asks the operator for; the answer has the read-back.
        otto = bearer(issuer.token("otto", "operator"), **page_origin)
        async with http.post(url, headers=otto, json={"command": "stop_charging", "slot": 2, "reason": "from the page"}
                             ) as resp:
            record = await resp.json()
            assert resp.status == 200, record
        assert (record["result"], record["readback"], record["actor"]) == ("ok", 0, "user:otto")
        assert cabinet.state.slots[1].output_enabled is False
        start = {"command": "start_charging", "slot": 2, "reason": "from the page"}
        async with http.post(url, headers=otto, json=start) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == "confirm_needed"
        async with http.post(url, headers=otto, json={**start, "confirm": True}) as resp:
            record = await resp.json()
            assert resp.status == 200 and (record["result"], record["readback"]) == ("ok", 1)
        assert cabinet.state.slots[1].output_enabled is True
        # Another site's page cannot send it, token or not.
        async with http.post(url, headers={**otto, "Origin": "http://evil.example"},
                             json={"command": "stop_charging", "slot": 2, "reason": "x"}) as resp:
            assert resp.status == 403 and (await resp.json())["code"] == "cross_site"
        assert cabinet.state.slots[1].output_enabled is True


# The page's script run by Node against the served page and the real API, with a minimal DOM (no browser
# here): what an operator does on the page, click by click.
HARNESS = r"""
// Runs alerting/static/control.js in Node against the served page and API, with a minimal DOM.
"use strict";
const fs = require("fs");
const vm = require("vm");
const [base, scriptPath, token, cabinet] = process.argv.slice(2);

class Element {
  constructor(tag, id) {
    this.tagName = tag; this.id = id || ""; this.children = []; this._text = ""; this.value = "";
    this.hidden = false; this.disabled = false; this.title = ""; this.className = ""; this.dataset = {};
    this.listeners = {}; this.href = "";
  }
  get textContent() { return this._text + this.children.map((c) => c.textContent).join(""); }
  set textContent(v) { this._text = String(v); this.children = []; }
  append(...nodes) { this.children.push(...nodes); }
  replaceChildren(...nodes) { this.children = nodes; }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  click() { for (const fn of this.listeners.click || []) fn(); }
  focus() { this.focused = true; }
  all() { return [this, ...this.children.flatMap((c) => c.all())]; }
}

async function main() {
  const page = await (await fetch(base + "/control?cabinet=" + cabinet)).text();
  const elements = {};
  for (const m of page.matchAll(/<(\w+)[^>]*\sid="([^"]+)"[^>]*>/g)) elements[m[2]] = new Element(m[1], m[2]);
  const data = page.match(/<script id="cascade-texts" type="application\/json">(.*?)<\/script>/s)[1];
  elements["cascade-texts"].textContent = data;
  elements["commands"].hidden = true;
  const docListeners = [];
  const storage = new Map();
  const confirms = [];
  let answerConfirm = false;
  const sent = [];
  const context = {
    document: {
      getElementById: (id) => elements[id] || null,
      createElement: (tag) => new Element(tag),
      addEventListener: (type, fn) => docListeners.push(fn),
    },
    sessionStorage: {getItem: (k) => (storage.has(k) ? storage.get(k) : null), setItem: (k, v) => storage.set(k, v),
                      removeItem: (k) => storage.delete(k)},
    window: {location: {search: "?cabinet=" + cabinet}, confirm: (text) => { confirms.push(text); return answerConfirm; }},
    history: {replaceState: () => {}},
    URLSearchParams, JSON, Number, String, encodeURIComponent, console,
    fetch: (path, init) => {
      sent.push({method: init.method, path, body: init.body ? JSON.parse(init.body) : null,
                 auth: init.headers.Authorization, lang: init.headers["Accept-Language"],
                 credentials: init.credentials});
      // A browser names the page's origin on a POST: the API checks it.
      return fetch(base + path, {...init, headers: {...init.headers, Origin: base}});
    },
  };
  vm.createContext(context);
  vm.runInContext(fs.readFileSync(scriptPath, "utf8"), context);
  for (const fn of docListeners) fn();
  const settle = () => new Promise((r) => setTimeout(r, 300));
  const status = () => ({text: elements.status.textContent, kind: elements.status.className});
  const out = {cabinetField: elements.cabinet.value, steps: []};
  const step = (name) => out.steps.push({name, ...status(), shown: !elements.commands.hidden});

  elements.load.click(); await settle(); step("no token");
  elements.token.value = token; elements["save-token"].click(); await settle(); step("loaded");
  out.tokenField = elements.token.value;
  out.stored = storage.get("cascade.control.token") === token;
  const rows = elements.slots.children;
  out.slots = rows.map((r) => r.children[0].textContent);
  const buttons = (row) => row.children[2].children;
  out.slotButtons = buttons(rows[1]).map((b) => [b.dataset.command, b.textContent, b.disabled]);
  out.cabinetButtons = elements["cabinet-commands"].all().filter((e) => e.tagName === "button")
    .map((b) => [b.dataset.command, b.disabled]);
  const press = async (row, command) => { buttons(row).find((b) => b.dataset.command === command).click(); await settle(); };
  await press(rows[1], "stop_charging"); step("stop without reason");
  elements.reason.value = "from the page";
  await press(rows[1], "stop_charging"); step("stop");
  await press(rows[1], "start_charging"); step("start, not confirmed");
  answerConfirm = true;
  await press(rows[1], "start_charging"); step("start, confirmed");
  elements["forget-token"].click(); await settle(); step("forgotten");
  out.storedAfter = storage.has("cascade.control.token");
  out.confirms = confirms;
  out.sent = sent;
  console.log(JSON.stringify(out));
}
main().catch((err) => { console.error(err); process.exit(1); });
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's script")
async def test_the_pages_script_loads_the_cabinet_and_sends_with_confirmation(tmp_path, issuer, cabinet):
    config = make_config(tmp_path, cabinet.port, auth=auth_for(issuer))
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS, encoding="utf-8")
    async with start_app(config) as pipeline:
        base = f"http://127.0.0.1:{pipeline.metrics_port}"
        token = issuer.token("otto", "operator")
        node = await asyncio.create_subprocess_exec(
            shutil.which("node") or "node", str(harness), base, str(STATIC / "control.js"), token, CAB,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, err.decode()
    seen = json.loads(out)
    steps = {s["name"]: s for s in seen["steps"]}
    assert seen["cabinetField"] == CAB  # from ?cabinet= of the dashboard's link
    assert steps["no token"]["text"] == "请先粘贴令牌。" and not steps["no token"]["shown"]
    assert steps["loaded"]["shown"] and seen["stored"] and seen["tokenField"] == ""  # kept in the tab, not the field
    assert seen["slots"] == [str(n) for n in range(1, len(cabinet.state.slots) + 1)]
    assert seen["slotButtons"] == [["stop_charging", "停止充电", False], ["start_charging", "开始充电", False]]
    assert sorted(seen["cabinetButtons"]) == [  # the engineer's: shown, not allowed
        ["charge_current_limit", True], ["charge_schedule_end", True], ["charge_schedule_start", True],
        ["charge_temperature_limit", True], ["fault_reset", True]]
    assert steps["stop without reason"]["text"].startswith("请先填写原因")
    assert steps["stop"]["kind"] == "ok" and "回读值 0" in steps["stop"]["text"], steps["stop"]
    assert steps["start, not confirmed"] == {**steps["stop"], "name": "start, not confirmed"}  # nothing sent
    assert seen["confirms"][0] == f"对 {CAB} 2号仓执行“开始充电”：这会改变换电柜的充电方式。确定发送？"
    assert steps["start, confirmed"]["kind"] == "ok" and "回读值 1" in steps["start, confirmed"]["text"]
    assert cabinet.state.slots[1].output_enabled is True
    assert not steps["forgotten"]["shown"] and seen["storedAfter"] is False
    posts = [s for s in seen["sent"] if s["method"] == "POST"]
    assert [p["body"] for p in posts] == [
        {"command": "stop_charging", "reason": "from the page", "slot": 2},
        {"command": "start_charging", "reason": "from the page", "slot": 2, "confirm": True}]
    assert all(s["auth"] == f"Bearer {token}" and s["credentials"] == "omit" and s["lang"] == "zh-CN"
               for s in seen["sent"])

