"""InfluxSink end to end against a real influxd 1.x: delivery, gzip, bad lines, outages, the spool bound."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporters.influx.lineprotocol import LineEncoder
from exporters.influx.sink import InfluxConfig, InfluxConfigError, InfluxSink, _classify
from exporters.influx.spool import DiskSpool
from tests.fixtures.http import start_app

_encoder = LineEncoder("slot", ["cabinet"], ["seq", "v"])


def _lines(start: int, count: int) -> list[str]:
    return [_encoder.encode({"cabinet": "c1"}, {"seq": n, "v": n / 4}, 1_700_000_000_000_000_000 + n)
            for n in range(start, start + count)]


def _config(influxdb, tmp_path, **overrides) -> InfluxConfig:
    values = dict(url=influxdb.url, database=influxdb.database, spool_dir=str(tmp_path / "spool"),
                  batch_size=200, flush_interval_s=0.05, timeout_s=2.0, retry_initial_s=0.05, retry_max_s=0.2)
    return InfluxConfig(**{**values, **overrides})


def _metric(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def _until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _seqs(influxdb) -> list[int]:
    return [row["seq"] for row in influxdb.query("SELECT seq FROM slot")]


@pytest.mark.parametrize("use_gzip", [True, False])
async def test_values_land_with_and_without_gzip(influxdb, tmp_path, use_gzip):
    encodings = []

    async def on_start(session, ctx, params):
        encodings.append(params.headers.get("Content-Encoding"))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    registry = CollectorRegistry()
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        async with InfluxSink(_config(influxdb, tmp_path, gzip=use_gzip), registry=registry, session=session) as sink:
            for start in range(0, 1000, 100):
                sink.submit_lines(_lines(start, 100))
            await _until(lambda: sink.stats.lines_written == 1000)
            stats = sink.stats
    assert _seqs(influxdb) == list(range(1000))
    rows = influxdb.query("SELECT v, cabinet FROM slot WHERE seq = 7")
    assert rows[0]["v"] == 1.75 and rows[0]["cabinet"] == "c1"
    assert set(encodings) == {"gzip" if use_gzip else None}
    assert stats.up and stats.buffered_lines == 0 and stats.write_lag_s is not None
    assert _metric(registry, "cascade_influx_lines_written_total") == 1000
    assert _metric(registry, "cascade_influx_write_batches_total", result="ok") >= 5
    assert _metric(registry, "cascade_influx_write_duration_seconds_count") >= 5
    assert _metric(registry, "cascade_influx_lines_spooled_total") == 0
    assert _metric(registry, "cascade_influx_up") == 1


async def test_final_flush_on_exit_delivers_everything(influxdb, tmp_path):
    async with InfluxSink(_config(influxdb, tmp_path, flush_interval_s=30)) as sink:
        sink.submit_lines(_lines(0, 50))  # below batch_size and long interval: only the exit flush sends it
    assert _seqs(influxdb) == list(range(50))


async def test_bad_lines_are_counted_and_logged_once_good_lines_stored(influxdb, tmp_path, caplog):
    registry = CollectorRegistry()
    caplog.set_level(logging.ERROR, logger="exporters.influx.sink")
    async with InfluxSink(_config(influxdb, tmp_path, batch_size=1000), registry=registry) as sink:
        for start in (0, 10):
            batch = _lines(start, 10)
            batch[3:3] = ["not line protocol", "slot,cabinet=c1 seq= 5"]
            sink.submit_lines(batch)
            await _until(lambda: sink.stats.lines_written == start + 10)
        stats = sink.stats
    assert _seqs(influxdb) == list(range(20))
    assert stats.lines_rejected == 4 and stats.lines_written == 20 and stats.spool_lines == 0
    assert _metric(registry, "cascade_influx_lines_rejected_total") == 4
    assert _metric(registry, "cascade_influx_write_batches_total", result="rejected") == 2
    rejected_logs = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected_logs) == 1 and "unable to parse" in rejected_logs[0].getMessage()


async def test_outage_spools_then_replays_everything_once_in_order(influxdb, tmp_path):
    registry = CollectorRegistry()
    async with InfluxSink(_config(influxdb, tmp_path), registry=registry) as sink:
        sink.submit_lines(_lines(0, 500))
        await _until(lambda: sink.stats.lines_written == 500)
        influxdb.stop()
        for start in range(500, 3000, 250):
            sink.submit_lines(_lines(start, 250))
            await asyncio.sleep(0.03)
        await _until(lambda: sink.stats.spool_lines == 2500 and not sink.stats.up)
        assert _metric(registry, "cascade_influx_up") == 0
        assert _metric(registry, "cascade_influx_spool_lines") == 2500
        influxdb.start()
        sink.submit_lines(_lines(3000, 100))  # newer data must wait for the spool
        await _until(lambda: sink.stats.lines_written == 3100)
        stats = sink.stats
    assert _seqs(influxdb) == list(range(3100))
    assert stats.lines_spooled == stats.lines_replayed >= 2500 and stats.lines_dropped == 0
    assert stats.spool_lines == 0 and stats.up
    assert _metric(registry, "cascade_influx_lines_written_total") == 3100
    assert _metric(registry, "cascade_influx_lines_replayed_total") == stats.lines_replayed
    assert _metric(registry, "cascade_influx_write_batches_total", result="error") >= 1


async def test_spool_survives_a_restart_of_the_sink(influxdb, tmp_path):
    influxdb.stop()
    async with InfluxSink(_config(influxdb, tmp_path)) as sink:
        sink.submit_lines(_lines(0, 700))
    assert sink.stats.spool_lines == 700 and sink.stats.lines_written == 0
    influxdb.start()
    async with InfluxSink(_config(influxdb, tmp_path)) as sink:
        sink.submit_lines(_lines(700, 10))
        await _until(lambda: sink.stats.lines_written == 710)
        assert sink.stats.lines_replayed == 700
    assert _seqs(influxdb) == list(range(710))


async def test_spool_bound_drops_oldest_lines_counted_exactly(influxdb, tmp_path):
    influxdb.stop()
    registry = CollectorRegistry()
    config = _config(influxdb, tmp_path, spool_max_bytes=64 * 1024, batch_size=100, max_buffer_lines=100)
    async with InfluxSink(config, registry=registry) as sink:
        for start in range(0, 3000, 100):
            sink.submit_lines(_lines(start, 100))
        await _until(lambda: sink.stats.buffered_lines == 0)
        influxdb.start()
        await _until(lambda: sink.stats.spool_lines == 0 and sink.stats.up)
        stats = sink.stats
    assert stats.lines_dropped > 0
    assert stats.lines_written + stats.lines_dropped == 3000
    assert stats.lines_spooled == stats.lines_replayed + stats.lines_dropped
    assert _seqs(influxdb) == list(range(stats.lines_dropped, 3000))  # exactly the oldest went
    assert _metric(registry, "cascade_influx_lines_dropped_total") == stats.lines_dropped


async def test_v2_api_against_a_v1_server_spools_instead_of_losing(influxdb, tmp_path):
    """Only influxd 1.6 is available (no /api/v2/write): the v2 path's failure handling is what we can test."""
    config = _config(influxdb, tmp_path, api="v2", token="t", org="o", bucket="b", database="")
    async with InfluxSink(config) as sink:
        sink.submit_lines(_lines(0, 300))
        await _until(lambda: sink.stats.spool_lines == 300)
        assert not sink.stats.up and sink.stats.lines_written == 0


async def test_submit_is_non_blocking_and_bounded_while_down(influxdb, tmp_path):
    influxdb.stop()
    async with InfluxSink(_config(influxdb, tmp_path, batch_size=100, max_buffer_lines=300)) as sink:
        started = time.perf_counter()
        for start in range(0, 2000, 100):
            sink.submit_lines(_lines(start, 100))
            assert sink.stats.buffered_lines <= 300
        assert time.perf_counter() - started < 1.0
    assert sink.stats.spool_lines == 2000 and sink.stats.lines_dropped == 0


@pytest.mark.parametrize("overrides, key", [
    ({"url": "localhost:8086"}, "url"),
    ({"api": "v3"}, "api"),
    ({"database": ""}, "database"),
    ({"api": "v2", "org": "o", "bucket": "b"}, "token"),
    ({"username": "u"}, "password"),
    ({"spool_dir": ""}, "spool_dir"),
    ({"batch_size": 0}, "batch_size"),
    ({"max_buffer_lines": 10, "batch_size": 100}, "max_buffer_lines"),
    ({"flush_interval_s": 0}, "flush_interval_s"),
    ({"spool_max_bytes": 1000}, "spool_max_bytes"),
    ({"precision": "ms"}, "precision"),
])
def test_config_errors_name_the_key(overrides, key):
    values = {"url": "http://127.0.0.1:8086", "database": "cascade", "spool_dir": "/tmp/x", **overrides}
    with pytest.raises(InfluxConfigError, match=rf"influx\.{key}:"):
        InfluxConfig(**values).validate()


def test_config_repr_hides_secrets():
    text = repr(InfluxConfig(url="http://h", spool_dir="/s", database="d", username="u", password="pw", token="tk"))
    assert "pw" not in text and "tk" not in text


@pytest.mark.parametrize("status, body, lines, result, rejected", [
    (204, "", 5, "ok", 0),
    # the exact bodies influxd 1.6 sends:
    (400, '{"error":"partial write: unable to parse \'bad\': missing fields\\nunable to parse \'b2\': '
          'invalid number dropped=0"}', 5, "rejected", 2),
    (400, '{"error":"partial write: field type conflict: input field \\"f\\" on measurement \\"m\\" is type '
          'float, already exists as type string dropped=1"}', 5, "rejected", 1),
    (400, '{"error":"field type conflict"}', 5, "rejected", 5),
    (400, '{"error":"unable to parse \'bad\': missing fields\\nunable to parse \'bad2\': missing fields"}',
     2, "rejected", 2),
    (400, '{"error":"partial write of line protocol occurred","data":[{"line_number":2}]}', 5, "rejected", 1),
    (404, '{"error":"database not found: \\"x\\""}', 5, "error", 0),
    (401, "", 5, "error", 0),
    (503, "", 5, "error", 0),
])
def test_response_classification(status, body, lines, result, rejected):
    outcome = _classify(status, body, lines)
    assert (outcome.result, outcome.rejected) == (result, rejected)


class _GatedInflux:
    """Stands in for POST /write: the first request waits for ``release`` and then answers
    ``first_status``; later ones answer 204. Keeps the lines of every 2xx request."""

    def __init__(self, first_status: int = 204) -> None:
        self.first_status = first_status
        self.first_arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.stored: list[str] = []
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _write(self, request: web.Request) -> web.Response:
        lines = (await request.read()).decode().splitlines()
        self.requests += 1
        status = 204
        if self.requests == 1:
            self.first_arrived.set()
            await self.release.wait()
            status = self.first_status
        if status < 300:
            self.stored.extend(lines)
        return web.Response(status=status)

    async def __aenter__(self) -> _GatedInflux:
        app = web.Application()
        app.router.add_post("/write", self._write)
        self._runner, self.url = await start_app(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()


def _tagged(tag: str, count: int = 100) -> list[str]:
    return [f"m,b={tag} v={i}i {i}" for i in range(count)]


def _fill_spool(path, max_bytes: int) -> list[str]:
    """Fill a spool with same-size batches until one more would not fit; their tags, oldest first."""
    tags = []
    with DiskSpool(path, max_bytes, fsync=False) as spool:
        for n in range(1000):
            batch = _tagged(f"{n:03d}")
            if spool.depth_bytes + (spool.depth_bytes // max(1, len(spool)) or 1) > max_bytes and len(spool):
                break
            spool.append(batch)
            tags.append(f"{n:03d}")
        assert spool.dropped_lines == 0 and len(spool) == len(tags) >= 3
    return tags


@pytest.mark.parametrize("first_status", [204, 503])
async def test_spool_full_while_its_oldest_batch_is_in_flight_loses_and_miscounts_nothing(tmp_path, first_status):
    """Regression: submit() spilling into a full spool during a replay write dropped the batch in
    flight; its commit then removed the next, never-sent batch and counted it replayed."""
    max_bytes = 64 * 1024
    tags = _fill_spool(tmp_path / "spool", max_bytes)
    spooled_before = 100 * len(tags)
    if first_status < 300:
        # "000" was delivered: written and replayed once, not dropped; "001" was not lost.
        lost, spilled = set(), 1
    else:
        # "000" is gone (evicted, then its write failed): dropped now. Down, the sink spills "nxt"
        # to the full spool too, which drops the oldest batch, "001", for the bound.
        lost, spilled = {tags[0], tags[1]}, 2
    expected = (set(tags) | {"new", "nxt"}) - lost
    async with _GatedInflux(first_status) as server:
        config = InfluxConfig(url=server.url, database="x", spool_dir=str(tmp_path / "spool"), gzip=False,
                              batch_size=100, max_buffer_lines=100, spool_max_bytes=max_bytes,
                              flush_interval_s=0.02, retry_initial_s=0.02, retry_max_s=0.05, timeout_s=5)
        async with InfluxSink(config) as sink:
            await asyncio.wait_for(server.first_arrived.wait(), 10)  # batch "000" is being written
            sink.submit_lines(_tagged("new") + _tagged("nxt"))  # buffer overflows: one same-size batch spills
            assert sink.stats.lines_dropped == 0  # the spool had to drop "000", but it is in flight
            server.release.set()
            # Wait for the last write to complete, not just to leave the buffer: closing the sink with
            # a write in flight re-sends it (at-least-once, idempotent in InfluxDB) and would count twice.
            await _until(lambda: sink.stats.spool_lines == 0 and sink.stats.buffered_lines == 0
                         and sink.stats.up and sink.stats.lines_written >= 100 * len(expected))
            stats = sink.stats
    stored = {line.split()[0].removeprefix("m,b=") for line in server.stored}
    assert stored == expected
    assert len(server.stored) == 100 * len(expected)  # and nothing was sent twice
    assert stats.lines_written == len(server.stored)
    assert stats.lines_dropped == 100 * len(lost)
    assert stats.lines_spooled == 100 * spilled
    assert stats.lines_replayed == spooled_before + stats.lines_spooled - stats.lines_dropped
    assert stats.lines_spooled + spooled_before == stats.lines_replayed + stats.lines_dropped + stats.spool_lines


async def test_unexpected_write_error_spools_the_batch_instead_of_losing_it(tmp_path, caplog, monkeypatch):
    """An exception other than a network/timeout error (e.g. from influxdb-client) must not lose the
    batch that was taken out of the buffer: it is spooled, logged, and delivered on a retry."""
    calls = 0
    async with _GatedInflux() as server:
        server.release.set()
        config = InfluxConfig(url=server.url, database="x", spool_dir=str(tmp_path / "spool"), gzip=False,
                              batch_size=100, flush_interval_s=0.02, retry_initial_s=0.02, retry_max_s=0.05)
        sink = InfluxSink(config)
        real_write_v1 = sink._write_v1

        async def flaky_write_v1(batch):
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ValueError("surprise from the client library")
            return await real_write_v1(batch)

        monkeypatch.setattr(sink, "_write_v1", flaky_write_v1)
        caplog.set_level(logging.ERROR, logger="exporters.influx.sink")
        async with sink:
            sink.submit_lines(_tagged("a"))
            await _until(lambda: sink.stats.lines_written == 100)
            stats = sink.stats
    assert sorted(server.stored) == sorted(_tagged("a"))
    assert stats.lines_spooled == stats.lines_replayed == 100 and stats.lines_dropped == 0
    assert any("unexpected error" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_down_with_nothing_to_retry_does_not_spin_the_event_loop(tmp_path, monkeypatch):
    """Down, with the spool write failing (disk full): the batch stays in memory (not dropped) and is
    what the retries send. The flush loop must retry on its backoff, not call _drain in a loop that
    never yields."""
    from tests.fixtures.procs import free_port

    config = InfluxConfig(url=f"http://127.0.0.1:{free_port()}", database="x", spool_dir=str(tmp_path / "spool"),
                          batch_size=100, flush_interval_s=0.05, retry_initial_s=0.05, retry_max_s=0.1)
    sink = InfluxSink(config)
    drains = 0
    real_drain = sink._drain

    async def counting_drain():
        nonlocal drains
        drains += 1
        if drains > 500:
            await asyncio.sleep(0.01)  # spinning: yield so the test can report it instead of hanging
        await real_drain()

    monkeypatch.setattr(sink, "_drain", counting_drain)
    async with sink:
        def disk_full(batch, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(sink._spool, "append", disk_full)
        sink.submit_lines(_tagged("a"))
        await _until(lambda: not sink.stats.up and not sink.stats.spool_writable)
        assert sink.stats.buffered_lines == 100 and sink.stats.lines_dropped == 0
        before = drains
        await asyncio.sleep(0.5)
        assert drains - before < 50


async def test_a_batch_too_large_for_the_server_is_written_in_halves_and_loses_nothing(tmp_path):
    """An InfluxDB-2-style server with a body limit below one batch answers 413 Request Entity Too
    Large: the sink writes the batch again in halves (down to single lines) instead of dropping all
    of it as rejected. Only a single line the server still refuses is lost, and counted."""
    stored: list[str] = []
    requests: list[int] = []

    async def write(request: web.Request) -> web.Response:
        lines = (await request.read()).decode().splitlines()
        requests.append(len(lines))
        if len(lines) > 120 or any("huge" in line for line in lines):  # one line is over the limit alone
            return web.Response(status=413, text='{"code":"request too large","message":"request too large"}')
        stored.extend(lines)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/write", write)
    runner, url = await start_app(app)
    try:
        registry = CollectorRegistry()
        config = InfluxConfig(url=url, database="x", spool_dir=str(tmp_path / "spool"), gzip=False, batch_size=1000,
                              flush_interval_s=0.05, retry_initial_s=0.05, retry_max_s=0.1, timeout_s=5)
        batch = _tagged("ok", 999) + ["m,b=huge v=1i 5"]
        async with InfluxSink(config, registry=registry) as sink:
            sink.submit_lines(batch)
            await _until(lambda: sink.stats.lines_written + sink.stats.lines_rejected == len(batch))
            stats = sink.stats
    finally:
        await runner.cleanup()
    assert sorted(stored) == sorted(batch[:-1])  # every good line, once
    assert (stats.lines_written, stats.lines_rejected, stats.lines_dropped) == (999, 1, 0)
    assert stats.spool_lines == 0 and max(requests) == 1000 and min(requests) == 1
    assert registry.get_sample_value("cascade_influx_batch_splits_total") >= 3
