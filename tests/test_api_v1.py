"""The third-party API /api/v1 (issue 14, P-5.5.3): every route behind tokens and roles, a regulator's
redacted view, pagination with cursors, rate limits, security headers, the readings from a real InfluxDB
and the OpenAPI document. Real HTTP against ``start_app``, tokens from the local issuer on loopback."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from alerting.api_v1 import OPERATIONS, SECURITY_HEADERS, openapi_document
from cascade.app import start_app
from tests import test_auth_api
from tests.fixtures.ports import free_port
from tests.test_auth_api import ALERT, CAB, SITE, auth_for, bearer, make_config, raise_alert

issuer = test_auth_api.issuer  # the local OpenID Connect issuer on a free port (a fixture)

pytestmark = pytest.mark.timeout(120)

V1 = "/api/v1"


def _sample(path: str) -> str:
    return path.replace("{rule}", "pack_overvoltage").replace("{level}", "2").replace("{battery}", "B000123")


def _headers_ok(resp: aiohttp.ClientResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get(name) == value, (resp.url, name)


async def test_every_route_refuses_missing_bad_and_underprivileged_tokens_with_a_reason(tmp_path, issuer):
    config = make_config(tmp_path, free_port(), auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}"
        body = {"value": 1.24, "reason": "summer profile"}
        assert len(OPERATIONS) >= 10
        for op in OPERATIONS:
            url = base + _sample(op.full_path)
            async with http.request(op.method, url, json=body) as resp:
                assert resp.status == 401, op.full_path
                got = await resp.json()
                assert got["code"] == "missing_token" and got["error"] and got["detail"]
                assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
                _headers_ok(resp)
            async with http.request(op.method, url, json=body, headers=bearer("not.a.jwt")) as resp:
                assert resp.status == 401 and (await resp.json())["code"] == "malformed"
            # A valid token without a Cascade role may do nothing.
            async with http.request(op.method, url, json=body, headers=bearer(issuer.token("eve", "janitor"))) as resp:
                assert resp.status == 403, op.full_path
                got = await resp.json()
                assert got["code"] == "forbidden" and op.permission in got["detail"], got
        # Writing thresholds is the engineer's: viewer, regulator and operator are refused, saying why.
        url = f"{base}{V1}/thresholds/pack_overvoltage/2"
        for role in ("viewer", "regulator", "operator"):
            async with http.put(url, json=body, headers=bearer(issuer.token("bob", role),
                                                                **{"Accept-Language": "en"})) as resp:
                assert resp.status == 403
                got = await resp.json()
                assert got["code"] == "forbidden" and "engineer" in got["error"], got
        async with http.put(url, json=body, headers=bearer(issuer.token("carol", "engineer"))) as resp:
            assert resp.status == 200, await resp.text()
            entry = await resp.json()
            assert (entry["who"], entry["rule"], entry["level"], entry["new"]) == ("carol", "pack_overvoltage", 2, 1.24)
            _headers_ok(resp)


async def test_reading_routes_and_the_regulators_redacted_view(tmp_path, issuer):
    config = make_config(tmp_path, free_port(), auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}{V1}"
        await raise_alert(pipeline)
        pipeline.alerts.acknowledge(ALERT, "alice", "on my way, pack swollen")
        engineer = bearer(issuer.token("carol", "engineer"))
        async with http.put(f"{base}/thresholds/pack_overvoltage/3", headers=engineer,
                            json={"value": 1.27, "reason": "site asked for it"}) as resp:
            assert resp.status == 200, await resp.text()

        async def get(path: str, role: str) -> dict:
            async with http.get(base + path, headers=bearer(issuer.token("dora", role))) as resp:
                assert resp.status == 200, (path, await resp.text())
                assert resp.headers["Content-Type"].startswith("application/json")
                _headers_ok(resp)
                return await resp.json()

        full = await get("/alerts", "viewer")
        [alert] = [a for a in full["items"] if a["key"] == ALERT]
        assert (alert["rule"], alert["level"], alert["site"], alert["cabinet"], alert["slot"]) == (
            "pack_overvoltage", 2, SITE, CAB, 3)
        assert alert["category"] == "pack_over_voltage" and alert["acknowledged"] is True
        assert alert["ack"]["who"] == "alice" and alert["ack"]["comment"].startswith("on my way")
        redacted = await get("/alerts", "regulator")
        [alert] = [a for a in redacted["items"] if a["key"] == ALERT]
        assert alert["acknowledged"] is True and alert["ack"]["who"] is None and alert["ack"]["comment"] is None
        assert alert["ack"]["at"] and alert["summary"]

        log = await get("/logs/thresholds", "viewer")
        assert [(e["who"], e["reason"], e["new"]) for e in log["items"]] == [("carol", "site asked for it", 1.27)]
        log = await get("/logs/thresholds", "regulator")
        assert [(e["who"], e["reason"], e["new"]) for e in log["items"]] == [(None, None, 1.27)]

        thresholds = await get("/thresholds", "regulator")
        rule = next(r for r in thresholds["rules"] if r["id"] == "pack_overvoltage")
        assert next(lv for lv in rule["levels"] if lv["level"] == 3)["threshold"] == 1.27
        rules = await get("/rules", "regulator")
        runaway = next(r for r in rules["rules"] if r["id"] == "thermal_runaway")
        assert runaway["input"] is None and len(runaway["fusion"]) >= 3 and runaway["category"] == "thermal_runaway"
        assert [lv["level"] for lv in runaway["levels"]] == [1, 2, 3]
        over = next(r for r in rules["rules"] if r["id"] == "pack_overvoltage")
        assert over["input"] and over["scope"] == "slot"

        # Actions and the control audit: a person's command is personal data, a rule's is not.
        audit = tmp_path / "control-audit.jsonl"
        record = {"at": time.time(), "completed_at": time.time(), "actor": "user:alice", "alert": "",
                  "action": "stop_charging", "command": "slot_output", "site": SITE, "cabinet": CAB, "slot": 3,
                  "value": 0, "result": "ok", "readback": 0, "error": "", "reason": "pack swollen"}
        audit.write_text("".join(json.dumps({**record, "slot": n}) + "\n" for n in (1, 2, 3)), encoding="utf-8")
        control = await get("/logs/control?limit=2", "viewer")
        assert [(e["actor"], e["reason"], e["slot"]) for e in control["items"]] == [
            ("user:alice", "pack swollen", 1), ("user:alice", "pack swollen", 2)]
        more = await get(f"/logs/control?limit=2&cursor={control['next_cursor']}", "viewer")
        assert [e["slot"] for e in more["items"]] == [3] and more["next_cursor"] is None
        control = await get("/logs/control", "regulator")
        assert {(e["actor"], e["reason"], e["result"]) for e in control["items"]} == {(None, None, "ok")}
        # The level-2 alert's protective action, observed only (policy perform: []): a rule is no person.
        [action] = (await get("/logs/actions", "regulator"))["items"]
        assert (action["actor"], action["action"], action["result"], action["slot"]) == (
            "rule:pack_overvoltage@level2", "stop_charging", "skipped", 3)
        assert (await get("/logs/deliveries", "viewer")) == {"items": [], "next_cursor": None}
        doc = await get("/openapi.json", "regulator")
        assert doc == openapi_document()


async def test_alerts_are_paged_with_a_cursor_bound_to_the_query(tmp_path, issuer):
    config = make_config(tmp_path, free_port(), auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}{V1}"
        from core.model import CabinetReading, SlotReading
        reading = CabinetReading(cabinet_id=CAB, site=SITE, model="reference-cabinet", timestamp_ns=time.time_ns(),
                                 slots=[SlotReading(slot=n, voltage_v=59.5, nominal_voltage_v=48.0) for n in (1, 2, 3, 4, 5)])
        await pipeline.alerts.handle_reading(reading)
        headers = bearer(issuer.token("dora", "viewer"))
        seen, cursor, pages = [], None, 0
        while True:
            url = f"{base}/alerts?limit=2&cabinet={CAB}" + (f"&cursor={cursor}" if cursor else "")
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                page = await resp.json()
            pages += 1
            assert len(page["items"]) <= 2
            seen += [a["key"] for a in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3 and len(seen) == len(set(seen)) == 5
        assert sorted(seen) == sorted(f"pack_overvoltage@{SITE}/{CAB}/{n}" for n in (1, 2, 3, 4, 5))
        # The cursor belongs to its query: another filter, a made-up or a tampered one is a 400 with a reason.
        async with http.get(f"{base}/alerts?limit=2&cabinet={CAB}", headers=headers) as resp:
            first = await resp.json()
        for bad in (f"{base}/alerts?limit=2&cabinet=C0002&cursor={first['next_cursor']}",
                    f"{base}/alerts?cursor=bm90LWEtY3Vyc29y", f"{base}/alerts?limit=2&limit=3",
                    f"{base}/alerts?limit=0", f"{base}/alerts?level=7", f"{base}/alerts?colour=red",
                    f"{base}/alerts?site=" + "x" * 65, f"{base}/alerts?site=a'b"):
            async with http.get(bad, headers=headers) as resp:
                assert resp.status == 400, bad
                got = await resp.json()
                assert got["code"] in ("bad_request", "bad_cursor") and got["detail"] and got["error"], got
                _headers_ok(resp)


async def test_write_bodies_are_checked_bounded_and_never_cross_site(tmp_path, issuer):
    config = make_config(tmp_path, free_port(), auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{pipeline.metrics_port}{V1}/thresholds/pack_overvoltage/2"
        headers = bearer(issuer.token("carol", "engineer"), **{"Accept-Language": "en"})
        cases = [
            (415, "unsupported_media_type", dict(data='{"value": 60, "reason": "x"}',
                                                 headers={**headers, "Content-Type": "text/plain"})),
            (403, "cross_site", dict(json={"value": 60, "reason": "x"},
                                     headers={**headers, "Origin": "http://evil.example"})),
            (413, "payload_too_large", dict(json={"value": 60, "reason": "x" * 20_000}, headers=headers)),
            (400, "bad_request", dict(json={"value": 60, "reason": "x" * 501}, headers=headers)),
            (400, "bad_request", dict(json={"value": "60", "reason": "x"}, headers=headers)),
            (400, "bad_request", dict(json={"value": True, "reason": "x"}, headers=headers)),
            (400, "bad_request", dict(json={"value": 60}, headers=headers)),
            (400, "bad_request", dict(json={"value": 60, "reason": "x", "extra": 1}, headers=headers)),
            (400, "bad_request", dict(data="[1, 2", headers={**headers, "Content-Type": "application/json"})),
            (400, "bad_request", dict(json={"value": 1, "reason": "below level 1"}, headers=headers)),  # ordering
        ]
        for status, code, kwargs in cases:
            async with http.put(url, **kwargs) as resp:
                got = await resp.json()
                assert (resp.status, got["code"]) == (status, code), (kwargs.get("json"), got)
                _headers_ok(resp)
        async with http.put(url.replace("pack_overvoltage", "no_such_rule"), headers=headers,
                            json={"value": 60, "reason": "x"}) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == "not_found"
        async with http.put(url.replace("/2", "/9"), headers=headers, json={"value": 60, "reason": "x"}) as resp:
            assert resp.status == 400
        # Unknown paths and methods under /api/v1 answer in the same shape, with the same headers.
        async with http.get(url.rsplit("/thresholds", 1)[0] + "/nothing-here", headers=headers) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == "not_found"
            _headers_ok(resp)
        async with http.delete(url, headers=headers) as resp:
            assert resp.status == 405 and (await resp.json())["code"] == "method_not_allowed"
            assert "PUT" in resp.headers["Allow"]
        assert pipeline.alerts.engine.audit == []  # nothing above changed a threshold


async def test_rate_limit_per_token_subject_answers_429_with_retry_after(tmp_path, issuer):
    config = make_config(tmp_path, free_port(), auth=auth_for(issuer), api_v1={"rate_per_s": 0.5, "burst": 3})
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{pipeline.metrics_port}{V1}/thresholds"
        alice, bob = bearer(issuer.token("alice", "viewer")), bearer(issuer.token("bob", "viewer"))
        statuses = []
        for _ in range(4):
            async with http.get(url, headers=alice) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    got = await resp.json()
                    assert got["code"] == "rate_limited" and 1 <= int(resp.headers["Retry-After"]) <= 2
                    assert "2" in got["error"] or "1" in got["error"]
                    _headers_ok(resp)
        assert statuses == [200, 200, 200, 429]
        async with http.get(url, headers=bob) as resp:  # another client has its own bucket
            assert resp.status == 200
        # Refused callers are limited by address: a flood of bad tokens ends in 429 as well.
        codes = []
        for _ in range(5):
            async with http.get(url, headers=bearer("not.a.jwt")) as resp:
                codes.append(resp.status)
        assert codes[:3] == [401, 401, 401] and codes[-1] == 429
        await asyncio.sleep(2.1)  # one token back for alice
        async with http.get(url, headers=alice) as resp:
            assert resp.status == 200


async def test_readings_by_site_cabinet_battery_and_time_from_influxdb_paged(tmp_path, issuer, influxdb):
    config = make_config(tmp_path, free_port(), influx_url=influxdb.url, auth=auth_for(issuer))
    t0 = 1_765_000_000_000_000_000  # ns; three polls 1 s apart, three slots each (same time per poll)
    lines = []
    for poll in range(3):
        for slot in (1, 2, 3):
            battery = f"B00000{slot}" if poll < 2 else f"B00000{4 - slot}"  # packs 1 and 3 swap slots
            lines.append(f'slot,site={SITE},cabinet={CAB},slot={slot} battery_id="{battery}",soc_pct={50 + poll},'
                         f'voltage_v=52.{slot},temperature_c=25.{poll},battery_state=1i,output_enabled=true '
                         f'{t0 + poll * 1_000_000_000}')
    lines.append(f'slot,site=site-02,cabinet=C0009,slot=1 battery_id="B000009",soc_pct=10 {t0}')
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{influxdb.url}/write", params={"db": "cascade"}, data="\n".join(lines)) as resp:
            assert resp.status == 204, await resp.text()
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}{V1}/readings"
        headers = bearer(issuer.token("dora", "regulator"))
        since, until = "2025-12-06T05:46:00Z", "2025-12-06T05:47:00Z"

        async def pages(query: str) -> list[dict]:
            items, cursor = [], None
            for _ in range(20):
                url = f"{base}?{query}&since={since}&until={until}" + (f"&cursor={cursor}" if cursor else "")
                async with http.get(url, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                    _headers_ok(resp)
                    page = await resp.json()
                items += page["items"]
                cursor = page["next_cursor"]
                if cursor is None:
                    return items
            raise AssertionError("too many pages")

        every = await pages(f"site={SITE}&limit=4")  # pages split polls: the cursor keeps its place inside one
        assert len(every) == 9
        # Oldest first; within one poll (one timestamp) in InfluxDB's order, each row exactly once.
        assert sorted((r["soc_pct"], r["slot"]) for r in every) == [(50 + p, s) for p in range(3) for s in (1, 2, 3)]
        assert [r["soc_pct"] for r in every] == sorted(r["soc_pct"] for r in every)
        first = next(r for r in every if r["slot"] == 1)
        assert every[0]["time"].startswith("2025-12-06T05:46:40") and first["voltage_v"] == 52.1
        assert first["battery_state"] == 1 and first["output_enabled"] is True
        one_pack = await pages("battery=B000001&limit=2")  # wherever it was charged
        assert [(r["slot"], r["soc_pct"]) for r in one_pack] == [(1, 50), (1, 51), (3, 52)]
        slot2 = await pages(f"cabinet={CAB}&slot=2&limit=100")
        assert [r["battery_id"] for r in slot2] == ["B000002"] * 3
        other = await pages("site=site-02")
        assert [(r["cabinet"], r["soc_pct"]) for r in other] == [("C0009", 10)]
        async with http.get(f"{base}?slot=2", headers=headers) as resp:
            assert resp.status == 400 and "cabinet" in (await resp.json())["detail"]
        async with http.get(f"{base}?since=2025-12-07T00:00:00Z&until=2025-12-06T00:00:00Z", headers=headers) as resp:
            assert resp.status == 400
        async with http.get(f"{base}?since=1200-01-01T00:00:00Z", headers=headers) as resp:
            assert resp.status == 400
        influxdb.stop()
        async with http.get(f"{base}?site={SITE}", headers=headers) as resp:
            assert resp.status == 503 and (await resp.json())["code"] == "storage_unavailable"


async def test_alarm_statistics_by_category_and_level(tmp_path, issuer, influxdb):
    config = make_config(tmp_path, free_port(), influx_url=influxdb.url, auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        await raise_alert(pipeline)  # pack_overvoltage level 2: category pack_over_voltage
        base = f"http://127.0.0.1:{pipeline.metrics_port}{V1}/analysis/alarms"
        headers = bearer(issuer.token("dora", "regulator"), **{"Accept-Language": "zh-CN"})
        for _ in range(50):
            async with http.get(base, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                stats = await resp.json()
            if stats["total"]:
                break
            await asyncio.sleep(0.2)  # the sink flushes every 0.2 s
        assert stats["total"] == 1
        assert stats["counts"] == [{"category": "pack_over_voltage", "category_name": "车载储能装置类型过压报警",
                                    "level": 2, "count": 1}]


def test_the_openapi_document_is_valid_and_generated_from_the_models():
    import jsonschema_rs
    import schemathesis

    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {op.full_path for op in OPERATIONS}
    schema = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(OPERATIONS)
    # Every string a client can send has a bounded length; every operation declares its refusals.
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            for param in op["parameters"]:
                if param["schema"].get("type") == "string":
                    assert {"maxLength", "format", "enum"} & set(param["schema"]), (path, param)
            assert {"200", "401", "403", "429"} <= set(op["responses"]), (path, method)
    body = doc["components"]["schemas"]["ThresholdChange"]
    assert body["additionalProperties"] is False
    assert body["properties"]["reason"]["maxLength"] == 500
    # Each schema in components is valid JSON Schema (2020-12, what OpenAPI 3.1 uses).
    for name, sub in doc["components"]["schemas"].items():
        validator = jsonschema_rs.validator_for({**sub, "components": doc["components"]})  # raises when invalid
        assert validator is not None, name
    # ... and what the handlers answer conforms to it (a sample page).
    page = {"items": [], "next_cursor": None}
    jsonschema_rs.validator_for({**doc["components"]["schemas"]["AlertPage"], "components": doc["components"]}
                                ).validate(page)
