"""Battery-health analysis data on /api/v1 (issue 14, item 4 "analysis data"): the newest `battery_health` row
of each pack, as `cascade health analyse` stores it, read from a real InfluxDB — paged, filtered by site,
cabinet, battery and grade, one pack by id, in the OpenAPI document, for every reading role (no personal
data: a regulator reads the same), 503 when InfluxDB is down. Points are made by the health package's own
writer (tests/test_health_dashboard.py: three simulated packs, one of each grade)."""

from __future__ import annotations

import time

import aiohttp
import pytest

from alerting.api_v1 import openapi_document
from cascade.app import start_app
from health.report import HealthRecord
from health.runner import health_line
from tests import test_auth_api
from tests.fixtures.ports import free_port
from tests.test_api_v1 import _headers_ok
from tests.test_auth_api import auth_for, bearer, make_config
from tests.test_health_dashboard import health_lines

issuer = test_auth_api.issuer  # the local OpenID Connect issuer on a free port (a fixture)

pytestmark = pytest.mark.timeout(120)

PACKS = "/api/v1/health/packs"


def _older_row(now_ns: int) -> str:
    """An analysis a day before the newest, of a pack that was elsewhere then and graded otherwise."""
    record = HealthRecord(
        battery_id="DASH-KEEP", site="site-09", place="C0099", place_kind="cabinet", slot=7, grade="retire",
        limits_crossed="soh", capacity_ah=1.0, capacity_sigma_ah=0.1, capacity_estimates=1, nominal_capacity_ah=20.0,
        soh_pct=5.0, soh_sigma_pct=1.0, soh_bms_pct=None, soh_disagrees=None, resistance_mohm=None,
        resistance_sigma_mohm=None, resistance_steps=0, fade_pct_per_100_cycles=None, cycles=None,
        equivalent_cycles=1.0, cycles_to_90=None, cycles_to_80=None, cycles_to_70=None,
        self_discharge_pct_per_day=None, retention_pct=None, recovery_pct=None, energy_in_kwh=0.1,
        energy_out_kwh=0.1, efficiency_pct=None, charge_sessions=1, last_seen_ns=now_ns - 86_400 * 10**9)
    return health_line(record, now_ns - 86_400 * 10**9)


async def _store(url: str, lines: list[str]) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{url}/write", params={"db": "cascade", "precision": "ns"},
                                                          data="\n".join(lines)) as resp:
        assert resp.status == 204, await resp.text()


async def test_health_of_every_pack_paged_and_filtered_from_influxdb(tmp_path, issuer, influxdb):
    now = time.time()
    await _store(influxdb.url, health_lines(now) + [_older_row(int(now * 1e9))])
    config = make_config(tmp_path, free_port(), influx_url=influxdb.url, auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{pipeline.metrics_port}"

        async def get(path: str, role: str = "viewer") -> dict:
            async with http.get(base + path, headers=bearer(issuer.token(f"dora-{role}", role))) as resp:
                assert resp.status == 200, (path, await resp.text())
                _headers_ok(resp)
                return await resp.json()

        everything = await get(PACKS)
        assert everything["next_cursor"] is None
        packs = {p["battery"]: p for p in everything["items"]}
        assert list(packs) == ["DASH-KEEP", "DASH-RESTRICT", "DASH-RETIRE"]  # by battery id, one row each
        assert {b: p["grade"] for b, p in packs.items()} == {
            "DASH-KEEP": "keep", "DASH-RESTRICT": "restrict", "DASH-RETIRE": "retire"}
        keep = packs["DASH-KEEP"]  # the newest analysis, not the older one elsewhere
        assert (keep["site"], keep["place"], keep["place_kind"], keep["slot"]) == ("site-01", "C0001", "cabinet", 3)
        assert keep["soh_pct"] > 90 and keep["limits_crossed"] == [] and keep["charge_sessions"] >= 1
        assert keep["analysed_at"].endswith("Z") and keep["last_seen"] is not None
        retire = packs["DASH-RETIRE"]
        assert retire["soh_pct"] < 70 and retire["limits_crossed"] and retire["capacity_ah"] < 14
        assert (retire["site"], retire["place"]) == ("site-02", "C0002")
        # A regulator reads the same: nothing personal in a pack's health.
        assert await get(PACKS, "regulator") == everything

        # Filters: where each pack was last seen, its grade, one battery.
        assert [p["battery"] for p in (await get(f"{PACKS}?site=site-01"))["items"]] == ["DASH-KEEP", "DASH-RESTRICT"]
        assert [p["battery"] for p in (await get(f"{PACKS}?cabinet=C0002"))["items"]] == ["DASH-RETIRE"]
        assert [p["battery"] for p in (await get(f"{PACKS}?site=site-09"))["items"]] == []  # it left site-09
        assert [p["battery"] for p in (await get(f"{PACKS}?grade=restrict"))["items"]] == ["DASH-RESTRICT"]
        assert [p["battery"] for p in (await get(f"{PACKS}?battery=DASH-KEEP"))["items"]] == ["DASH-KEEP"]

        # Pages with a cursor bound to the query.
        first = await get(f"{PACKS}?limit=2")
        assert [p["battery"] for p in first["items"]] == ["DASH-KEEP", "DASH-RESTRICT"] and first["next_cursor"]
        second = await get(f"{PACKS}?limit=2&cursor={first['next_cursor']}")
        assert [p["battery"] for p in second["items"]] == ["DASH-RETIRE"] and second["next_cursor"] is None
        viewer = bearer(issuer.token("dora-viewer", "viewer"))
        for bad in (f"{PACKS}?limit=2&site=site-01&cursor={first['next_cursor']}", f"{PACKS}?grade=great",
                    f"{PACKS}?battery=a'b", f"{PACKS}?colour=red", f"{PACKS}/a'b"):
            async with http.get(base + bad, headers=viewer) as resp:
                assert resp.status == 400, bad
                assert (await resp.json())["code"] in ("bad_request", "bad_cursor")

        # One pack.
        one = await get(f"{PACKS}/DASH-RETIRE", "regulator")
        assert one == retire
        async with http.get(f"{base}{PACKS}/NO-SUCH-PACK", headers=viewer) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == "not_found"
            _headers_ok(resp)
        # No token, no role: refused like every route.
        async with http.get(base + PACKS) as resp:
            assert resp.status == 401 and (await resp.json())["code"] == "missing_token"
        async with http.get(base + PACKS, headers=bearer(issuer.token("eve", "janitor"))) as resp:
            assert resp.status == 403

        influxdb.stop()
        for path in (PACKS, f"{PACKS}/DASH-KEEP"):
            async with http.get(base + path, headers=viewer) as resp:
                assert resp.status == 503 and (await resp.json())["code"] == "storage_unavailable"


async def test_without_influxdb_the_health_routes_say_so(tmp_path, issuer):
    config = make_config(tmp_path, free_port(), auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{pipeline.metrics_port}{PACKS}",
                            headers=bearer(issuer.token("dora", "viewer"), **{"Accept-Language": "en"})) as resp:
            got = await resp.json()
        assert resp.status == 503 and got["code"] == "storage_unavailable" and "InfluxDB" in got["error"]


def test_the_health_routes_are_in_the_openapi_document():
    doc = openapi_document()
    listing = doc["paths"][PACKS]["get"]
    assert listing["operationId"] == "listHealthPacks" and listing["tags"] == ["analysis"]
    assert {p["name"] for p in listing["parameters"]} == {"site", "cabinet", "battery", "grade", "limit", "cursor"}
    grade = next(p for p in listing["parameters"] if p["name"] == "grade")
    assert grade["schema"]["enum"] == ["keep", "restrict", "retire", "unknown"]
    one = doc["paths"][PACKS + "/{battery}"]["get"]
    assert one["operationId"] == "getHealthPack" and "404" in one["responses"]
    assert one["parameters"][0]["schema"]["maxLength"] == 64
    pack = doc["components"]["schemas"]["HealthPack"]
    assert {"soh_pct", "capacity_ah", "resistance_mohm", "grade", "limits_crossed"} <= set(pack["properties"])
