"""Vehicle tracks (P-5.1.1.1): the positions a vehicle reported over any time range, as GeoJSON.

    points = await fetch_track(session, influx, "V000001", since=t0, until=t1)
    doc = to_geojson("V000001", points)          # a FeatureCollection with one LineString

The positions are the ``vehicle`` points the ingest workers store (docs/schema.md): one per report
with a valid fix, at the device's report time. The track is a GeoJSON ``FeatureCollection`` holding one
``LineString`` feature (``[longitude, latitude, altitude]`` per report, WGS-84) whose properties carry a
time per coordinate (``coordTimes``, ISO 8601 UTC: the convention of togeojson and most track tools),
the speed and odometer per coordinate, and a summary (first and last time, points, distance along the
line, odometer difference, top speed). With ``points=True`` every report is also a ``Point`` feature
with its time, speed, odometer, state and power, for tools that play a track back point by point.

``cascade vehicle track V000001 --since 2h --out track.geojson`` and ``GET
/api/vehicles/{vehicle}/track?since=...&until=...`` (on ``cascade run``) both use this module.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from core.errors import CascadeError

__all__ = ["TrackError", "TrackPoint", "add_track_routes", "fetch_track", "parse_time", "to_geojson"]

PAGE = 10_000
"""Rows per InfluxDB query (1.x answers at most ``max-row-limit``, 10,000 by default): a long track is
read in pages by time."""
MAX_POINTS = 500_000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_FIELDS = ("latitude_deg", "longitude_deg", "altitude_m", "speed_kmh", "odometer_km", "state", "powered_on")
_STATES = {0: "parked", 1: "ready", 2: "riding", 3: "charging"}


class TrackError(CascadeError):
    """A track that cannot be read: a bad vehicle id or time, or InfluxDB refused or is unreachable."""


@dataclass(frozen=True, slots=True)
class TrackPoint:
    time_ms: int
    lat: float
    lon: float
    alt: float | None = None
    speed_kmh: float | None = None
    odometer_km: float | None = None
    state: int | None = None
    power: bool | None = None


def parse_time(text: str, *, now: float | None = None) -> float:
    """Seconds since the epoch from ``now``, a relative age (``90m``, ``2h``, ``7d``: that long ago), ISO
    8601 (``2026-12-06T08:00:00Z``; a time without a zone is UTC) or epoch milliseconds."""
    now = time.time() if now is None else now
    value = text.strip()
    if value == "now":
        return now
    match = _RELATIVE.match(value)
    if match:
        return now - float(match.group(1)) * _UNIT_S[match.group(2)]
    if value.isdigit():
        return int(value) / 1000.0
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise TrackError(f"time {value[:40]!r} is not understood",
                         fix="write 2026-12-06T08:00:00Z, an age such as 2h or 7d, epoch milliseconds or now") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _query(vehicle: str, since_s: float, until_s: float, after_ms: int | None) -> str:
    start = f"time > {after_ms}ms" if after_ms is not None else f"time >= {int(since_s * 1000)}ms"
    fields = ", ".join(f'"{f}"' for f in _FIELDS)
    return (f'SELECT {fields} FROM "vehicle" WHERE "vehicle" = \'{vehicle}\' AND {start} AND '
            f'time <= {int(until_s * 1000)}ms ORDER BY time ASC LIMIT {PAGE}')


async def fetch_track(session: aiohttp.ClientSession, url: str, database: str, vehicle: str, *, since: float,
                      until: float, username: str = "", password: str = "") -> list[TrackPoint]:
    """The reported positions of ``vehicle`` from ``since`` to ``until`` (seconds), oldest first; reports
    without a valid fix carry no position and are left out."""
    if not _ID.match(vehicle):
        raise TrackError(f"vehicle id {vehicle[:70]!r} is not one", fix="use the vehicle code, e.g. V000001")
    if until < since:
        raise TrackError("--until is before --since", fix="give the start first")
    params = {"db": database, "epoch": "ms"}
    if username:
        params.update(u=username, p=password)
    points: list[TrackPoint] = []
    after: int | None = None
    while True:
        params["q"] = _query(vehicle, since, until, after)
        try:
            async with session.get(url.rstrip("/") + "/query", params=params) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise TrackError(f"InfluxDB at {url} cannot be read: {err}",
                             fix="check that it runs (make run) and the URL (--influx)") from None
        error = body.get("error") or next((r.get("error") for r in body.get("results", []) if r.get("error")), None)
        if status >= 300 or error:
            raise TrackError(f"InfluxDB refused the track query: {error or status}", fix="check --db and the URL")
        rows: list[list[Any]] = []
        for series in (body.get("results") or [{}])[0].get("series", []):
            rows.extend(series.get("values", []))
        for row in rows:
            t, lat, lon, alt, speed, odometer, state, power = row[:8]
            if lat is None or lon is None:
                continue
            points.append(TrackPoint(int(t), float(lat), float(lon), None if alt is None else float(alt),
                                     None if speed is None else float(speed),
                                     None if odometer is None else float(odometer),
                                     None if state is None else int(state), None if power is None else bool(power)))
        if len(rows) < PAGE or len(points) >= MAX_POINTS:
            return points[:MAX_POINTS]
        after = int(rows[-1][0])


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _distance_km(points: list[TrackPoint]) -> float:
    """Along the line, haversine on the WGS-84 mean radius."""
    total = 0.0
    for a, b in zip(points, points[1:]):
        p1, p2 = math.radians(a.lat), math.radians(b.lat)
        dp, dl = p2 - p1, math.radians(b.lon - a.lon)
        h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
        total += 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))
    return total


def to_geojson(vehicle: str, points: list[TrackPoint], *, since: float | None = None, until: float | None = None,
               with_points: bool = False) -> dict[str, Any]:
    """The track as a GeoJSON FeatureCollection (module docstring). An empty range gives a collection
    with no features and ``points: 0`` in its properties."""
    def coordinate(p: TrackPoint) -> list[float]:
        return [p.lon, p.lat] if p.alt is None else [p.lon, p.lat, p.alt]

    odometers = [p.odometer_km for p in points if p.odometer_km is not None]
    speeds = [p.speed_kmh for p in points if p.speed_kmh is not None]
    summary: dict[str, Any] = {
        "vehicle": vehicle, "points": len(points),
        "since": None if since is None else _iso(int(since * 1000)),
        "until": None if until is None else _iso(int(until * 1000)),
        "start": _iso(points[0].time_ms) if points else None, "end": _iso(points[-1].time_ms) if points else None,
        "distance_km": round(_distance_km(points), 3),
        "odometer_km": round(odometers[-1] - odometers[0], 3) if len(odometers) > 1 else 0.0,
        "max_speed_kmh": max(speeds) if speeds else None,
    }
    features: list[dict[str, Any]] = []
    if points:
        line = points if len(points) > 1 else points * 2  # a LineString needs two positions
        features.append({"type": "Feature", "geometry": {"type": "LineString", "coordinates": [coordinate(p) for p in line]},
                         "properties": {**summary, "coordTimes": [_iso(p.time_ms) for p in line],
                                        "speeds_kmh": [p.speed_kmh for p in line],
                                        "odometers_km": [p.odometer_km for p in line]}})
    if with_points:
        features += [{"type": "Feature", "geometry": {"type": "Point", "coordinates": coordinate(p)},
                      "properties": {"vehicle": vehicle, "time": _iso(p.time_ms), "speed_kmh": p.speed_kmh,
                                     "odometer_km": p.odometer_km, "state": None if p.state is None else _STATES.get(p.state),
                                     "power": p.power}} for p in points]
    return {"type": "FeatureCollection", "properties": summary, "features": features}


def add_track_routes(app: web.Application, url: str, database: str, *, username: str = "", password: str = "",
                     auth: Any = None) -> None:
    """``GET /api/vehicles/{vehicle}/track?since=2h&until=now[&points=1]`` → the GeoJSON track
    (``application/geo+json``); 400 for a bad id or time, 502 when InfluxDB cannot be read. ``auth``:
    the alert API's (``read`` permission: a track is where a person rode)."""

    async def track(request: web.Request) -> web.Response:
        if auth is not None:
            await auth.require(request, "read")
        vehicle = request.match_info["vehicle"]
        try:
            now = time.time()
            since = parse_time(request.query.get("since", "24h"), now=now)
            until = parse_time(request.query.get("until", "now"), now=now)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                points = await fetch_track(session, url, database, vehicle, since=since, until=until,
                                           username=username, password=password)
        except TrackError as err:
            status = 502 if "InfluxDB" in err.problem else 400
            return web.json_response({"error": str(err)}, status=status)
        doc = to_geojson(vehicle, points, since=since, until=until,
                         with_points=request.query.get("points") in ("1", "true"))
        return web.json_response(doc, content_type="application/geo+json")

    app.router.add_get("/api/vehicles/{vehicle}/track", track)
