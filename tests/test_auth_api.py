"""Who may do what on the alert API (issue 14, P-5.1.2.7, P-5.4.3, P-8.2.2): real HTTP against the alert
service started by ``start_app``, tokens from the local issuer (``cascade.issuer``) served on loopback,
cabinet commands against a real pymodbus simulated cabinet."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from alerting import cli as alerts_cli
from cascade.app import alerting_settings, start_app
from cascade.config import AppConfig, ConfigError
from cascade.issuer import LocalIssuer
from collectors.modbus.profile import find_profile
from collectors.modbus.settings import CabinetConfig
from core.model import CabinetReading, SlotReading
from exporters.influx.sink import InfluxConfig
from simulators.fleet import build_fleet
from simulators.server import SimulatorServer
from tests.fixtures.ports import free_port

pytestmark = pytest.mark.timeout(120)

SITE, CAB, SLOT = "site-01", "C0001", 3
ALERT = f"pack_overvoltage@{SITE}/{CAB}/{SLOT}"


class Issuer:
    """The local issuer, its JWKS served on a free loopback port."""

    def __init__(self, path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.local = LocalIssuer.load_or_create(path, issuer=self.url)
        self.requests = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = self.local.web_app()

        @web.middleware
        async def count(request: web.Request, handler):
            self.requests += 1
            return await handler(request)

        app.middlewares.append(count)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def token(self, sub: str, *roles: str, **options) -> str:
        return self.local.mint(sub, roles, **options)


@pytest.fixture
async def issuer(tmp_path):
    served = Issuer(tmp_path / "issuer" / "signing-keys.json")
    await served.start()
    yield served
    await served.stop()


@pytest.fixture
async def cabinet():
    """One reference cabinet on a real pymodbus server; yields the simulated cabinet."""
    port = free_port()
    fleet = build_fleet([("reference-cabinet", find_profile("reference-cabinet"))], cabinets=1, base_port=port,
                        seed=11)
    server = SimulatorServer(fleet, control_port=0, timer_s=0.05)
    await server.start()
    yield fleet.cabinets[0]
    await server.stop()


def make_config(tmp_path: Path, port: int, influx_url: str | None = None, **alerting) -> AppConfig:
    cabinets = [CabinetConfig(id=CAB, host="127.0.0.1", port=port, site=SITE, interval_s=3600, timeout_s=1,
                                fast_interval_s=None)]
    influx = None if influx_url is None else InfluxConfig(url=influx_url, database="cascade",
                                                          spool_dir=str(tmp_path / "spool"), flush_interval_s=0.2)
    config = AppConfig(source=str(tmp_path / "test.yaml"), cabinets=cabinets,
                       profiles={"reference-cabinet": find_profile("reference-cabinet")}, influxdb=influx,
                       metrics_port=0, status_interval_s=0)
    config.alerting = {"state_file": str(tmp_path / "alerts.json"), "audit_file": str(tmp_path / "audit.jsonl"),
                       "control_audit_file": str(tmp_path / "control-audit.jsonl"), "alertmanager_url": None,
                       "actions": {"perform": []}, **alerting}
    return config


def auth_for(issuer: Issuer, **extra) -> dict:
    return {"issuer": issuer.url, "audience": "cascade-api", "leeway_s": 5, "jwks_min_refresh_s": 0, **extra}


async def raise_alert(pipeline) -> None:
    """pack_overvoltage level 2 on slot 3 (no `for`: at once); observe-only policy, nothing is written."""
    reading = CabinetReading(cabinet_id=CAB, site=SITE, model="reference-cabinet", timestamp_ns=time.time_ns(),
                             slots=[SlotReading(slot=SLOT, voltage_v=59.5, nominal_voltage_v=48.0)])
    await pipeline.alerts.handle_reading(reading)


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def _b64(doc: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


async def test_bad_tokens_are_refused_with_401_and_a_reason(tmp_path, issuer):
    config = make_config(tmp_path, free_port(), auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}"
        await raise_alert(pipeline)

        async def status(token: str | None, **headers: str) -> tuple[int, dict, aiohttp.ClientResponse]:
            sent = bearer(token, **headers) if token is not None else headers
            async with http.get(f"{base}/api/alerts", headers=sent) as resp:
                return resp.status, await resp.json(), resp

        # No token: every route, reading included.
        for method, path in (("GET", "/api/alerts"), ("GET", "/api/alerts/rollup"), ("GET", "/api/thresholds"),
                             ("GET", "/api/actions"), ("POST", f"/api/alerts/{ALERT}/ack"),
                             ("PUT", "/api/thresholds/over_temperature/1"),
                             ("POST", f"/api/cabinets/{CAB}/commands")):
            async with http.request(method, f"{base}{path}", json={}) as resp:
                assert resp.status == 401, (method, path)
                assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
                body = await resp.json()
                assert body["code"] == "missing_token" and "Authorization: Bearer" in body["error"]
        # The refusal speaks the operators' language by default, English on request.
        code, body, _ = await status(None)
        assert "令牌" in body["error"]
        code, body, _ = await status(None, **{"Accept-Language": "en-US,en;q=0.9"})
        assert body["error"].startswith("This API needs a bearer token")

        good = issuer.token("alice", "viewer")
        assert (await status(good))[0] == 200
        kid = issuer.local.signing_key.kid
        claims = {"iss": issuer.url, "aud": "cascade-api", "sub": "alice", "exp": int(time.time()) + 600,
                  "roles": ["admin"]}
        forged = jwt.encode({"alg": "ES256", "kid": kid}, claims, ECKey.generate_key("P-256"))
        hmac_forged = jwt.encode({"alg": "HS256", "kid": kid}, claims, OctKey.import_key("public-key-as-secret"))
        unsigned = f"{_b64({'alg': 'none', 'kid': kid})}.{_b64(claims)}."
        foreign_kid = jwt.encode({"alg": "ES256", "kid": "not-published"}, claims,
                                 ECKey.generate_key("P-256"))
        cases = {
            "bad_signature": forged,
            "unsupported_alg": hmac_forged,
            "malformed": "not.a.jwt",
            "wrong_audience": issuer.token("alice", "viewer", audience="another-api"),
            "wrong_issuer": issuer.token("alice", "viewer", issuer="http://evil.example"),
            "expired": issuer.token("alice", "viewer", ttl_s=-30),  # 30 s ago, leeway 5 s
            "not_yet_valid": issuer.token("alice", "viewer", not_before_s=600),
            "unknown_key": foreign_kid,
        }
        for expected, token in cases.items():
            code, body, resp = await status(token)
            assert (code, body["code"]) == (401, expected), (expected, body)
            assert body["error"] and body["detail"]
        code, body, _ = await status(unsigned)
        assert code == 401 and body["code"] in ("unsupported_alg", "malformed")
        # Clock skew: expired 2 s ago is still inside the 5 s leeway.
        assert (await status(issuer.token("alice", "viewer", ttl_s=-2)))[0] == 200
        # A token without a subject is refused: the audit must name someone.
        no_sub = jwt.encode({"alg": "ES256", "kid": kid}, {k: v for k, v in claims.items() if k != "sub"},
                            issuer.local.signing_key)
        assert (await status(no_sub))[1]["code"] == "missing_claim"
        # A token with no Cascade role is authenticated but may do nothing.
        code, body, resp = await status(issuer.token("nobody", "janitor"))
        assert code == 403 and body["code"] == "forbidden" and "viewer" in body["detail"] + body["error"]


async def test_a_rotated_key_is_fetched_on_first_use_and_made_up_key_ids_do_not_hammer_the_issuer(
        tmp_path, issuer):
    config = make_config(tmp_path, free_port(), auth=auth_for(issuer, jwks_min_refresh_s=30))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{pipeline.metrics_port}/api/alerts"
        async with http.get(url, headers=bearer(issuer.token("alice", "viewer"))) as resp:
            assert resp.status == 200
        fetched = issuer.requests
        assert fetched == 2  # discovery document + JWKS, then cached
        async with http.get(url, headers=bearer(issuer.token("alice", "viewer"))) as resp:
            assert resp.status == 200 and issuer.requests == fetched, "the keys are cached"
        # The provider rotates its key: a token signed with the new key makes the service fetch again.
        issuer.local.rotate()
        # Within jwks_min_refresh_s of the last fetch the new key is unknown (rate limit) ...
        async with http.get(url, headers=bearer(issuer.token("bob", "viewer"))) as resp:
            assert resp.status == 401 and (await resp.json())["code"] == "unknown_key"
        assert issuer.requests == fetched
    # ... and with the limit off (next start), the unknown key id triggers one fetch and is accepted.
    config = make_config(tmp_path, free_port(), auth=auth_for(issuer, jwks_min_refresh_s=0))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{pipeline.metrics_port}/api/alerts"
        old_key = list(issuer.local.keys)[0]
        async with http.get(url, headers=bearer(issuer.token("alice", "viewer", key=old_key))) as resp:
            assert resp.status == 200  # tokens of the old key stay valid while it is published
        before = issuer.requests
        issuer.local.rotate()
        async with http.get(url, headers=bearer(issuer.token("bob", "viewer"))) as resp:
            assert resp.status == 200
        assert issuer.requests == before + 1, "one JWKS fetch for the new key id"


async def test_keys_that_cannot_be_fetched_are_a_503_not_an_open_door(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    local = LocalIssuer.load_or_create(tmp_path / "k.json", issuer=dead)
    config = make_config(tmp_path, free_port(), auth={"issuer": dead, "jwks_min_refresh_s": 0})
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{pipeline.metrics_port}/api/alerts",
                            headers=bearer(local.mint("alice", ["admin"]))) as resp:
            assert resp.status == 503 and (await resp.json())["code"] == "keys_unavailable"


async def test_roles_matrix_and_the_audit_names_the_token_subject(tmp_path, issuer, cabinet):
    config = make_config(tmp_path, cabinet.port, auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}"
        await raise_alert(pipeline)

        async def call(role: str, method: str, path: str, body: dict | None = None) -> int:
            token = issuer.token(f"user-{role}", role)
            async with http.request(method, f"{base}{path}", json=body, headers=bearer(token)) as resp:
                await resp.read()
                return resp.status

        threshold = 50
        routes = {
            "read alerts": ("GET", "/api/alerts", None),
            "roll-up": ("GET", "/api/alerts/rollup", None),
            "thresholds": ("GET", "/api/thresholds", None),
            "actions": ("GET", "/api/actions", None),
            "ack": ("POST", f"/api/alerts/{ALERT}/ack", {"comment": "on it"}),
            "set threshold": ("PUT", "/api/thresholds/over_temperature/1", {"value": None, "reason": "test"}),
            "stop charging": ("POST", f"/api/cabinets/{CAB}/commands",
                              {"command": "stop_charging", "slot": 1, "reason": "matrix"}),
            "fault reset": ("POST", f"/api/cabinets/{CAB}/commands",
                            {"command": "fault_reset", "reason": "matrix", "confirm": True}),
        }
        allowed = {
            "viewer": {"read alerts", "roll-up", "thresholds", "actions"},
            "regulator": {"read alerts", "roll-up", "thresholds", "actions"},
            "operator": {"read alerts", "roll-up", "thresholds", "actions", "ack", "stop charging"},
            "engineer": set(routes),
            "admin": set(routes),
        }
        for role, permitted in allowed.items():
            for name, (method, path, body) in routes.items():
                if name == "set threshold":
                    threshold += 1
                    body = {**body, "value": threshold}
                expected = 200 if name in permitted else 403
                assert await call(role, method, path, body) == expected, (role, name)

        # Every write recorded the token's subject, whatever the body claimed.
        token = issuer.token("alice", "operator")
        async with http.post(f"{base}/api/alerts/{ALERT}/ack", headers=bearer(token),
                             json={"who": "mallory", "comment": "it was me"}) as resp:
            assert resp.status == 200 and (await resp.json())["ack"]["who"] == "alice"
        assert pipeline.alerts.store.get(ALERT).ack.who == "alice"
        audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert {entry["who"] for entry in audit} == {"user-engineer", "user-admin"}
        control = [json.loads(line) for line in (tmp_path / "control-audit.jsonl").read_text().splitlines()]
        assert [(c["actor"], c["action"], c["result"], c["readback"]) for c in control] == [
            ("user:user-operator", "stop_charging", "ok", 0),
            ("user:user-engineer", "stop_charging", "ok", 0), ("user:user-engineer", "fault_reset", "ok", 1),
            ("user:user-admin", "stop_charging", "ok", 0), ("user:user-admin", "fault_reset", "ok", 1)]

        # A regulator reads the same alerts and audit, without who or why.
        async with http.get(f"{base}/api/alerts", headers=bearer(issuer.token("reg", "regulator"))) as resp:
            [alert] = [a for a in (await resp.json())["alerts"] if a["key"] == ALERT]
        assert alert["acknowledged"] and alert["ack"]["at"] and alert["ack"]["who"] is None
        assert alert["ack"]["comment"] is None
        async with http.get(f"{base}/api/thresholds", headers=bearer(issuer.token("reg", "regulator"))) as resp:
            audit = (await resp.json())["audit"]
        assert audit and all(e["who"] is None and e["reason"] is None and e["new"] for e in audit)
        async with http.get(f"{base}/api/actions", headers=bearer(issuer.token("reg", "regulator"))) as resp:
            actions = (await resp.json())["actions"]
        remote = [a for a in actions if a["action"] == "stop_charging" and not a["alert"]]
        assert len(remote) == 3 and all(a["actor"] is None and a["reason"] is None and a["result"] == "ok"
                                        for a in remote)
        assert {a["actor"] for a in actions if a["alert"]} == {"rule:pack_overvoltage@level2"}, "a rule is no person"
        # A viewer (staff) sees who acted.
        async with http.get(f"{base}/api/actions", headers=bearer(issuer.token("v", "viewer"))) as resp:
            assert {a["actor"] for a in (await resp.json())["actions"]} == {
                "user:user-operator", "user:user-engineer", "user:user-admin", "rule:pack_overvoltage@level2"}


async def test_an_engineer_stops_and_restarts_a_slot_on_a_real_cabinet_with_a_full_audit(tmp_path, issuer, cabinet,
                                                                                         influxdb):
    config = make_config(tmp_path, cabinet.port, influxdb.url, auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{pipeline.metrics_port}/api/cabinets/{CAB}/commands"
        eve = bearer(issuer.token("eve", "engineer"))

        async def command(body: dict, headers=eve) -> tuple[int, dict]:
            async with http.post(url, json=body, headers=headers) as resp:
                return resp.status, await resp.json()

        slot = cabinet.state.slots[0]
        assert slot.output_enabled
        code, record = await command({"command": "stop_charging", "slot": 1, "reason": "pack swollen"})
        assert code == 200, record
        assert (record["result"], record["readback"], record["actor"], record["command"], record["value"],
                record["reason"], record["slot"], record["site"]) == (
            "ok", 0, "user:eve", "slot_output", 0, "pack swollen", 1, SITE)
        assert record["at"] <= record["completed_at"]
        assert slot.output_enabled is False, "the simulated relay opened"

        # Re-energising needs an explicit confirmation ...
        code, body = await command({"command": "start_charging", "slot": 1, "reason": "pack replaced"})
        assert code == 400 and "confirm" in body["error"] and slot.output_enabled is False
        code, record = await command({"command": "start_charging", "slot": 1, "reason": "pack replaced",
                                      "confirm": True})
        assert code == 200 and (record["result"], record["readback"]) == ("ok", 1) and slot.output_enabled

        # ... and is refused while the slot has an active level-2/3 alert.
        await raise_alert(pipeline)
        code, body = await command({"command": "start_charging", "slot": SLOT, "reason": "x", "confirm": True})
        assert code == 409 and ALERT in body["error"]

        # A fault reset (engineer) is written and read back like every command.
        code, record = await command({"command": "fault_reset", "reason": "after inspection", "confirm": True})
        assert code == 200 and (record["result"], record["readback"]) == ("ok", 1)
        # Fire suppression is never commandable, and bad requests send nothing.
        before = len(pipeline.alerts.actions.recent)
        for body, expected in (({"command": "fire_suppression", "reason": "x", "confirm": True}, 400),
                               ({"command": "stop_charging", "reason": "x"}, 400),
                               ({"command": "stop_charging", "slot": 99, "reason": "x"}, 400),
                               ({"command": "stop_charging", "slot": 1, "reason": " "}, 400),
                               ({"command": "charge_current_limit", "value": -1, "reason": "x", "confirm": True}, 400)):
            code, answer = await command(body)
            assert code == expected, (body, answer)
        async with http.post(url.replace(CAB, "C9999"), json={"command": "stop_charging", "slot": 1, "reason": "x"},
                             headers=eve) as resp:
            assert resp.status == 404
        assert len(pipeline.alerts.actions.recent) == before, "nothing was sent"
        # An operator may stop charging (P-5.1.2.1) but not reset faults or set parameters.
        code, body = await command({"command": "fault_reset", "reason": "x", "confirm": True},
                                   headers=bearer(issuer.token("otto", "operator")))
        assert code == 403 and body["code"] == "forbidden"

        # Every command is in GET /api/actions and the append-only audit, with who, what, when, result, read-back.
        lines = [json.loads(x) for x in (tmp_path / "control-audit.jsonl").read_text().splitlines()]
        assert [(c["action"], c["result"], c["readback"]) for c in lines] == [
            ("stop_charging", "ok", 0), ("start_charging", "ok", 1), ("fault_reset", "ok", 1)]
        assert all(c["actor"] == "user:eve" and c["at"] > 0 for c in lines)

        # The CLI sends the same commands with the token.
        def cli(*argv: str) -> int:
            return alerts_cli.run(["--url", f"http://127.0.0.1:{pipeline.metrics_port}", "--token",
                                   issuer.token("eve", "engineer"), *argv])
        assert await asyncio.to_thread(cli, "command", CAB, "stop_charging", "--slot", "2", "--reason", "cli") == 0
        assert cabinet.state.slots[1].output_enabled is False
        assert await asyncio.to_thread(cli, "list") == 0
        assert await asyncio.to_thread(alerts_cli.run, ["--url", f"http://127.0.0.1:{pipeline.metrics_port}",
                                                        "list"]) == 1  # no token: refused

    # ... and in InfluxDB, as `command` points (who, what, when, result, read-back) beside the protective ones.
    points = influxdb.query('SELECT * FROM "command" WHERE "cabinet" = \'C0001\'')
    assert [(p["actor"], p["command"], p["slot"], p["value"], p["ok"], p["readback"]) for p in points] == [
        ("user:eve", "slot_output", "1", 0, True, 0), ("user:eve", "slot_output", "1", 1, True, 1),
        ("user:eve", "fault_reset", None, 1, True, 1), ("user:eve", "slot_output", "2", 0, True, 0)]


async def test_the_shared_token_is_a_deprecated_fallback_only_when_the_config_says_so(tmp_path, issuer):
    with pytest.raises(ConfigError, match="accept_api_token"):
        alerting_settings(make_config(tmp_path, free_port(), auth=auth_for(issuer), api_token="s3cret"))
    config = make_config(tmp_path, free_port(), api_token="s3cret",
                         auth=auth_for(issuer, accept_api_token=True, api_token_role="operator"))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}"
        await raise_alert(pipeline)
        async with http.post(f"{base}/api/alerts/{ALERT}/ack", json={"who": "noc-bob"},
                             headers=bearer("s3cret")) as resp:
            assert resp.status == 200 and (await resp.json())["ack"]["who"] == "noc-bob"
        async with http.put(f"{base}/api/thresholds/over_temperature/1", headers=bearer("s3cret"),
                            json={"value": 51, "who": "noc-bob", "reason": "x"}) as resp:
            assert resp.status == 403  # the shared token acts as an operator here
        async with http.post(f"{base}/api/cabinets/{CAB}/commands", headers=bearer("s3cret"),
                             json={"command": "stop_charging", "slot": 1, "reason": "x"}) as resp:
            assert resp.status == 403 and (await resp.json())["code"] in ("forbidden", "needs_person")
        async with http.get(f"{base}/api/alerts", headers=bearer(issuer.token("alice", "viewer"))) as resp:
            assert resp.status == 200  # tokens work beside it
        async with http.get(f"{base}/api/alerts", headers=bearer("wrong")) as resp:
            assert resp.status == 401


async def test_without_any_auth_configured_cabinet_control_is_still_refused(tmp_path, cabinet):
    config = make_config(tmp_path, cabinet.port)
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}"
        async with http.get(f"{base}/api/alerts") as resp:
            assert resp.status == 200  # loopback default: reading and acknowledging stay open
        async with http.post(f"{base}/api/cabinets/{CAB}/commands",
                             json={"command": "stop_charging", "slot": 1, "reason": "x"}) as resp:
            assert resp.status == 401 and (await resp.json())["code"] == "needs_person"
        # A token sent anyway: the answer says what is off (no identity provider), not "send a token".
        async with http.post(f"{base}/api/cabinets/{CAB}/commands", headers={"Authorization": "Bearer abc.def.ghi"},
                             json={"command": "stop_charging", "slot": 1, "reason": "x"}) as resp:
            body = await resp.json()
            assert resp.status == 401 and body["code"] == "needs_person", body
            assert "alerting.auth.issuer" in body["error"] and "docs/security.md" in body["error"], body
        assert cabinet.state.slots[0].output_enabled


def test_the_local_issuer_keeps_its_key_private_and_publishes_only_the_public_half(tmp_path):
    path = tmp_path / "var" / "issuer" / "signing-keys.json"
    local = LocalIssuer.load_or_create(path, issuer="http://127.0.0.1:9140")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    published = local.jwks()["keys"]
    assert len(published) == 1 and "d" not in published[0] and published[0]["kid"] == local.signing_key.kid
    assert local.discovery()["jwks_uri"] == "http://127.0.0.1:9140/jwks.json"
    again = LocalIssuer.load_or_create(path, issuer="http://127.0.0.1:9140")
    assert again.signing_key.kid == local.signing_key.kid, "the key is kept across runs"
    kid = again.rotate()
    assert [k["kid"] for k in again.jwks()["keys"]][-1] == kid and len(again.jwks()["keys"]) == 2
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    claims = jwt.decode(again.mint("alice", ["operator"], ttl_s=60), again.keys).claims
    assert (claims["sub"], claims["roles"], claims["aud"], claims["exp"] - claims["iat"]) == (
        "alice", ["operator"], "cascade-api", 60)


def test_cascade_token_prints_a_token_for_the_requested_role(tmp_path, capsys):
    from cascade.cli import main

    key = tmp_path / "keys.json"
    assert main(["token", "--role", "engineer", "--role", "regulator", "--sub", "carol", "--ttl", "15m",
                 "--key", str(key), "--issuer", "http://127.0.0.1:9140"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, LocalIssuer.load_or_create(key).keys).claims
    assert claims["sub"] == "carol" and claims["roles"] == ["engineer", "regulator"]
    assert claims["exp"] - claims["iat"] == 900 and claims["iss"] == "http://127.0.0.1:9140"
    assert main(["token", "--role", "operator", "--sub", "x", "--ttl", "soon", "--key", str(key)]) == 2
