"""Hardening of the collector's older HTTP routes (issue 14, item 5): every answer of the app — the alert API
(`/api/alerts`, `/api/alerts/rollup`, `/api/alerts/{key}/ack`, `/api/thresholds`, `/api/actions`,
`/api/cabinets/{cabinet}/commands`), the vehicle command and track routes, `/metrics`, `/health`, the control
page and a 404 — carries the security headers of `/api/v1`, and each client has a rate limit on the
`/api/...` routes (token subject, else address) answered like v1's: 429 `rate_limited` with `Retry-After`,
in Chinese by default and English on request. `/metrics` stays unlimited for Prometheus.
Real HTTP against `start_app`, tokens from the local issuer on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from alerting.api_v1 import SECURITY_HEADERS
from cascade.app import start_app
from collectors.vehicles.settings import MqttSettings, VehicleSettings
from exporters.influx.sink import InfluxConfig
from tests import test_auth_api
from tests.fixtures.influxdb import InfluxDB
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.ports import free_port
from tests.test_auth_api import ALERT, CAB, auth_for, bearer, make_config, raise_alert

issuer = test_auth_api.issuer  # the local OpenID Connect issuer on a free port (a fixture)
cabinet = test_auth_api.cabinet  # one simulated cabinet on a real pymodbus server (a fixture)

pytestmark = pytest.mark.timeout(120)

# Every older route of the alert API: (method, path, body).
LEGACY = [
    ("GET", "/api/alerts", None),
    ("GET", "/api/alerts/rollup", None),
    ("POST", f"/api/alerts/{ALERT}/ack", {"comment": "on it"}),
    ("GET", "/api/thresholds", None),
    ("PUT", "/api/thresholds/over_temperature/1", {"value": 50, "reason": "hardening test"}),
    ("GET", "/api/actions", None),
    ("GET", f"/api/cabinets/{CAB}/commands", None),
    ("POST", f"/api/cabinets/{CAB}/commands", {"command": "stop_charging", "slot": 1, "reason": "hardening test"}),
]


def headers_ok(resp: aiohttp.ClientResponse, *, policy: str | None = None) -> None:
    for name, value in SECURITY_HEADERS.items():
        expected = policy if policy is not None and name == "Content-Security-Policy" else value
        assert resp.headers.get(name) == expected, (resp.method, resp.url, name, resp.headers.get(name))


async def test_every_answer_of_the_collector_carries_the_security_headers(tmp_path, issuer, cabinet):
    config = make_config(tmp_path, cabinet.port, auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}"
        await raise_alert(pipeline)
        engineer = bearer(issuer.token("eve", "engineer"))
        for method, path, body in LEGACY:
            # Refused (no token, no role) and answered: the headers are on both.
            async with http.request(method, base + path, json=body) as resp:
                assert resp.status == 401, path
                headers_ok(resp)
            async with http.request(method, base + path, json=body,
                                    headers=bearer(issuer.token("jan", "janitor"))) as resp:
                assert resp.status == 403, path
                headers_ok(resp)
            async with http.request(method, base + path, json=body, headers=engineer) as resp:
                assert resp.status == 200, (path, await resp.text())
                headers_ok(resp)
        # A bad body, an unknown route, a wrong method, /metrics and /health: the same headers.
        async with http.post(base + f"/api/alerts/{ALERT}/ack", data="x", headers=engineer) as resp:
            assert resp.status == 415
            headers_ok(resp)
        for path in ("/api/nothing-here", "/nothing", "/metrics", "/health"):
            async with http.get(base + path) as resp:
                assert resp.status == (404 if "nothing" in path else 200), path
                headers_ok(resp)
        async with http.delete(base + "/api/alerts") as resp:
            assert resp.status == 405
            headers_ok(resp)


async def test_older_routes_are_rate_limited_per_client_and_metrics_is_not(tmp_path, issuer, cabinet):
    config = make_config(tmp_path, cabinet.port, auth=auth_for(issuer), api_v1={"rate_per_s": 0.5, "burst": 3})
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}"
        await raise_alert(pipeline)
        for n, (method, path, body) in enumerate(LEGACY):
            alice = bearer(issuer.token(f"alice-{n}", "engineer"))  # a fresh client per route
            statuses = []
            for _ in range(4):
                async with http.request(method, base + path, json=body, headers=alice) as resp:
                    statuses.append(resp.status)
                    headers_ok(resp)
                    if resp.status == 429:
                        got = await resp.json()
                        assert got["code"] == "rate_limited" and got["detail"].startswith("rate limit of 0.5"), got
                        assert "请求过于频繁" in got["error"], got  # Chinese by default
                        assert 1 <= int(resp.headers["Retry-After"]) <= 2
            assert statuses[-1] == 429 and 429 not in statuses[:3], (path, statuses)
        # Another client has its own budget; English on request.
        bob = bearer(issuer.token("bob", "viewer"), **{"Accept-Language": "en"})
        async with http.get(base + "/api/alerts", headers=bob) as resp:
            assert resp.status == 200
        # The budget is the client's, over the whole API: /api/v1 too.
        async with http.get(base + "/api/v1/thresholds", headers=bearer(issuer.token("alice-0", "engineer"))) as resp:
            assert resp.status == 429 and (await resp.json())["code"] == "rate_limited"
        answers = []
        for _ in range(3):
            async with http.get(base + "/api/actions", headers=bob) as resp:
                answers.append((resp.status, await resp.json()))
        assert answers[-1][0] == 429 and answers[-1][1]["error"].startswith("Too many requests"), answers
        # Callers without a valid token are limited by address (and still told why they were refused).
        codes = []
        for _ in range(5):
            async with http.get(base + "/api/alerts", headers=bearer("not.a.jwt")) as resp:
                codes.append(resp.status)
        assert codes[:3] == [401, 401, 401] and codes[-1] == 429
        # Prometheus scrapes /metrics as often as it likes; /health and the control page are not counted either.
        for path in ("/metrics", "/health", "/control"):
            for _ in range(10):
                async with http.get(base + path) as resp:
                    assert resp.status == 200, path
        await asyncio.sleep(2.1)  # a token back for the address
        async with http.get(base + "/api/alerts", headers=bearer("not.a.jwt")) as resp:
            assert resp.status == 401


async def test_vehicle_command_and_track_routes_carry_the_headers_and_the_rate_limit(
        issuer, mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path) -> None:
    mqtt = MqttSettings(host="127.0.0.1", port=mosquitto.port, username="ingest", password=mosquitto.ingest_password)
    config = make_config(tmp_path, free_port(), auth=auth_for(issuer), api_v1={"rate_per_s": 0.5, "burst": 3})
    config.cabinets, config.profiles = [], {}
    config.vehicles = VehicleSettings(devices=str(mosquitto.paths["devices"]), mqtt=mqtt)
    config.influxdb = InfluxConfig(url=influxdb.url, database=influxdb.database, spool_dir=str(tmp_path / "spool"))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}/api/vehicles"
        routes = [("GET", "/commands", None), ("GET", "/commands/no-such-id", None),
                  ("GET", "/V000001/track?since=1h", None),
                  ("POST", "/V000001/commands", {"command": "no-such-command", "wait_s": 1})]
        anonymous = []
        for method, path, body in routes:  # one address, one budget: the fourth is one too many
            async with http.request(method, base + path, json=body) as resp:
                anonymous.append(resp.status)
                headers_ok(resp)
        assert anonymous == [401, 401, 401, 429]
        for n, (method, path, body) in enumerate(routes):
            reader = bearer(issuer.token(f"carol-{n}", "engineer"))
            statuses = []
            for _ in range(4):
                async with http.request(method, base + path, json=body, headers=reader) as resp:
                    statuses.append(resp.status)
                    headers_ok(resp)
                    if resp.status == 429:
                        assert (await resp.json())["code"] == "rate_limited" and resp.headers["Retry-After"]
            assert statuses[-1] == 429 and 429 not in statuses[:3], (path, statuses)


async def test_without_the_alert_service_metrics_and_health_still_carry_the_headers(tmp_path):
    config = make_config(tmp_path, free_port(), enabled=False)
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        for path in ("/metrics", "/health", "/api/alerts"):
            async with http.get(f"http://127.0.0.1:{pipeline.metrics_port}{path}") as resp:
                assert resp.status == (404 if path.startswith("/api") else 200), path
                headers_ok(resp)
