"""What the third-party API reads from InfluxDB 1.x (InfluxQL over ``/query``): slot readings, a page at a
time, counts of alarms by category and level, and the newest ``battery_health`` row of each pack (written
by ``cascade health analyse``; the health package sits above this layer, so its results are read where it
stores them).

    store = InfluxReader(session_factory, "http://127.0.0.1:8086", "cascade")
    rows = await store.readings(filters, since_ns, until_ns, limit=101, offset=0)

Every value put into a query is an id already checked against ``^[A-Za-z0-9][A-Za-z0-9._-]*$`` (the
request models) or a number: nothing a caller sends is quoted into InfluxQL otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from alerting.apiv1.models import READING_FIELDS
from core.errors import CascadeError

__all__ = ["InfluxReader", "StoreUnavailable"]


class StoreUnavailable(CascadeError):
    """InfluxDB cannot answer now (down, refusing, timed out)."""


class InfluxReader:
    """Reads from one InfluxDB 1.x database (``url``, ``database``, optional basic auth)."""

    def __init__(self, url: str, database: str, *, username: str = "", password: str = "",
                 timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self._auth = aiohttp.BasicAuth(username, password) if username else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _query(self, influxql: str) -> list[dict[str, Any]]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, auth=self._auth)
        try:
            async with self._session.get(f"{self.url}/query", params={"db": self.database, "q": influxql,
                                                                        "epoch": "ns"}) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise StoreUnavailable(f"InfluxDB at {self.url} cannot be read: {err}",
                                   fix="check that InfluxDB runs and influxdb.url") from None
        results = body.get("results") if isinstance(body, dict) else None
        error = (body.get("error") if isinstance(body, dict) else None) or next(
            (r.get("error") for r in results or [] if isinstance(r, dict) and r.get("error")), None)
        if status >= 300 or error or not isinstance(results, list):
            raise StoreUnavailable(f"InfluxDB refused the query: {error or status}",
                                   fix="check influxdb.database and the user's read permission")
        return results

    async def readings(self, filters: Mapping[str, str | int], since_ns: int, until_ns: int, *, limit: int,
                       offset: int) -> list[dict[str, Any]]:
        """Slot readings matching ``filters`` (site, cabinet, slot, battery_id), oldest first."""
        where = [f"time >= {since_ns}", f"time <= {until_ns}"]
        for key, value in filters.items():
            where.append(f"\"{key}\" = '{value}'")
        columns = ", ".join(f'"{f}"' for f in (*READING_FIELDS, "site", "cabinet", "slot"))
        results = await self._query(f'SELECT {columns} FROM "slot" WHERE {" AND ".join(where)} '
                                    f"ORDER BY time ASC LIMIT {int(limit)} OFFSET {int(offset)}")
        rows: list[dict[str, Any]] = []
        for series in results[0].get("series", []) if results else []:
            names = series.get("columns", [])
            rows.extend(dict(zip(names, values)) for values in series.get("values", []))
        return rows

    async def alarm_counts(self, since_ns: int, until_ns: int) -> dict[tuple[str, int], int]:
        """Alarms raised or escalated to each level, by category: ``{(category, level): count}``."""
        statements = [f'SELECT count("level") FROM "alert" WHERE time >= {since_ns} AND time <= {until_ns} AND '
                      f"(\"kind\" = 'raise' OR \"kind\" = 'escalate') AND \"level\" = {level} GROUP BY \"category\""
                      for level in (1, 2, 3)]
        results = await self._query("; ".join(statements))
        counts: dict[tuple[str, int], int] = {}
        for level, result in zip((1, 2, 3), results):
            for series in result.get("series", []):
                category = (series.get("tags") or {}).get("category") or "device_fault"
                total = sum(int(v[1] or 0) for v in series.get("values", []))
                if total:
                    counts[(category, level)] = counts.get((category, level), 0) + total
        return counts

    async def health_packs(self, battery: str | None = None) -> list[dict[str, Any]]:
        """The newest ``battery_health`` point of each pack (of ``battery`` only, when given): its fields and
        its ``site`` and ``kind`` tags, ``battery`` and ``time`` (ns)."""
        where = f" WHERE \"battery\" = '{battery}'" if battery is not None else ""
        results = await self._query(f'SELECT * FROM "battery_health"{where} GROUP BY "battery" ORDER BY time DESC '
                                    "LIMIT 1")
        rows: list[dict[str, Any]] = []
        for series in results[0].get("series", []) if results else []:
            tags = series.get("tags") or {}
            names = series.get("columns", [])
            rows.extend({**dict(zip(names, values)), **tags} for values in series.get("values", [])[:1])
        return rows
