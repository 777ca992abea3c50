"""Vehicle tracks: positions stored as the ingest workers store them (real InfluxDB), read back for any
time range and exported as GeoJSON by the library, the CLI and the HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import cascade.tracks as tracks
from cascade.tracks import TrackError, add_track_routes, fetch_track, parse_time, to_geojson
from cascade.vehicle_cli import main as vehicle_cli
from collectors.vehicles.wire import Position, Telemetry, encode, to_reading
from collectors.vehicles.wire import decode as decode_report
from exporters.influx.schema import encode_points
from tests.fixtures.influxdb import InfluxDB

T0 = 1_764_990_000.0  # 2025-12-06T03:00:00Z
# A ride east along a street, one report a minute; the 4th report has no fix (not a track point).
RIDE = [(0, 39.924100, 116.500000, 18.0, 1000.00), (60, 39.924100, 116.503500, 21.0, 1000.30),
        (120, 39.924100, 116.507000, 20.5, 1000.60), (180, None, None, 0.0, 1000.60),
        (240, 39.927000, 116.507000, 15.0, 1000.92)]


def _store(influx: InfluxDB, vehicle: str, ride: list[tuple], *, start: float = T0) -> None:
    readings = []
    for seq, (offset, lat, lon, speed, odometer) in enumerate(ride, 1):
        pos = Position(valid=False) if lat is None else Position(lat=lat, lon=lon, alt=41.5)
        msg = Telemetry(vehicle=vehicle, ts=int((start + offset) * 1000), seq=seq, state="riding", power=True,
                        pos=pos, speed_kmh=speed, odometer_km=odometer)
        readings.append(to_reading(decode_report(encode(msg)), fleet="bj", received_ns=0)[0])
    lines, skipped = encode_points(readings)
    assert not skipped
    req = urllib.request.Request(f"{influx.url}/write?db={influx.database}&precision=ns", data="\n".join(lines).encode())
    urllib.request.urlopen(req, timeout=10).close()


async def test_track_of_a_time_range_is_a_timed_linestring_without_the_reports_lacking_a_fix(influxdb: InfluxDB) -> None:
    _store(influxdb, "V000001", RIDE)
    _store(influxdb, "V000002", [(30, 39.95, 116.45, 10.0, 5.0)])  # another vehicle: not in V000001's track
    async with aiohttp.ClientSession() as session:
        points = await fetch_track(session, influxdb.url, influxdb.database, "V000001", since=T0 + 30, until=T0 + 300)
        whole = await fetch_track(session, influxdb.url, influxdb.database, "V000001", since=T0 - 60, until=T0 + 300)
    assert [p.time_ms for p in points] == [int((T0 + s) * 1000) for s in (60, 120, 240)]
    doc = to_geojson("V000001", whole, since=T0 - 60, until=T0 + 300, with_points=True)
    line, *dots = doc["features"]
    assert doc["type"] == "FeatureCollection" and line["geometry"]["type"] == "LineString"
    assert line["geometry"]["coordinates"][0] == [116.5, 39.9241, 41.5]  # GeoJSON order: lon, lat, alt
    assert line["properties"]["coordTimes"] == ["2025-12-06T03:00:00.000Z", "2025-12-06T03:01:00.000Z",
                                                "2025-12-06T03:02:00.000Z", "2025-12-06T03:04:00.000Z"]
    assert line["properties"]["speeds_kmh"] == [18.0, 21.0, 20.5, 15.0]
    props = doc["properties"]
    assert (props["points"], props["start"], props["end"], props["max_speed_kmh"]) == (
        4, "2025-12-06T03:00:00.000Z", "2025-12-06T03:04:00.000Z", 21.0)
    east_km = 0.007 * 111.32 * math.cos(math.radians(39.9241))  # 7/1000 degree of longitude, then 0.0029° north
    assert props["distance_km"] == pytest.approx(east_km + 0.0029 * 111.19, rel=0.01)
    assert props["odometer_km"] == pytest.approx(0.92)
    assert [d["properties"]["time"] for d in dots] == line["properties"]["coordTimes"]
    assert {d["properties"]["state"] for d in dots} == {"riding"} and dots[0]["geometry"]["type"] == "Point"
    json.dumps(doc)  # serialisable as it is


async def test_long_tracks_are_read_in_pages_and_nothing_is_lost(influxdb: InfluxDB,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ride = [(i * 60, 39.92 + i * 1e-4, 116.5, 15.0, 100 + i * 0.25) for i in range(10)]
    _store(influxdb, "V000003", ride)
    monkeypatch.setattr(tracks, "PAGE", 3)
    async with aiohttp.ClientSession() as session:
        points = await fetch_track(session, influxdb.url, influxdb.database, "V000003", since=T0, until=T0 + 3600)
    assert [p.lat for p in points] == [pytest.approx(r[1]) for r in ride]


async def test_bad_ids_times_and_an_unreachable_database_are_refused_clearly(influxdb: InfluxDB) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TrackError, match="vehicle id .* is not one"):
            await fetch_track(session, influxdb.url, influxdb.database, "V1' OR 1=1 --", since=T0, until=T0 + 1)
        with pytest.raises(TrackError, match="--until is before --since"):
            await fetch_track(session, influxdb.url, influxdb.database, "V1", since=T0, until=T0 - 1)
        with pytest.raises(TrackError, match="cannot be read"):
            await fetch_track(session, "http://127.0.0.1:9", influxdb.database, "V1", since=T0, until=T0 + 1)
        with pytest.raises(TrackError, match="refused the track query"):
            await fetch_track(session, influxdb.url, "no_such_db", "V1", since=T0, until=T0 + 1)
    with pytest.raises(TrackError, match="not understood.*2026-12-06T08:00:00Z"):
        parse_time("yesterday-ish")
    assert parse_time("2h", now=10_000.0) == 2800.0 and parse_time("now", now=5.0) == 5.0
    assert parse_time("2025-12-06T03:00:00Z") == T0 == parse_time("2025-12-06T03:00:00")
    assert to_geojson("V9", [])["features"] == [] and to_geojson("V9", [])["properties"]["points"] == 0


async def test_cli_and_http_api_export_the_same_track(influxdb: InfluxDB, tmp_path: Path) -> None:
    _store(influxdb, "V000001", RIDE)
    out = tmp_path / "track.geojson"
    said = io.StringIO()
    args = argparse.Namespace(vehicle_command="track", vehicle="V000001", since="2025-12-06T02:59:00Z",
                              until="2025-12-06T03:10:00Z", out=str(out), points=False, influx=influxdb.url,
                              db=influxdb.database, language="en")
    assert await asyncio.to_thread(vehicle_cli, args, out=said) == 0
    written = json.loads(out.read_text())
    assert written["properties"]["points"] == 4 and "4 points from 2025-12-06T03:00:00.000Z" in said.getvalue()
    app = web.Application()
    add_track_routes(app, influxdb.url, influxdb.database)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/api/vehicles"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/V000001/track", params={"since": args.since, "until": args.until}) as resp:
                assert resp.status == 200 and resp.content_type == "application/geo+json"
                served = await resp.json(content_type=None)
            async with session.get(f"{base}/V000001/track", params={"since": "last tuesday"}) as resp:
                assert resp.status == 400 and "not understood" in (await resp.json())["error"]
    finally:
        await runner.cleanup()
    assert served["features"] == written["features"]
