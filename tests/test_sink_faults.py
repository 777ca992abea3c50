"""InfluxSink under the faults of months unattended, against a real influxd: the spool's disk full or
read-only, a slow (not down) server, and the wall clock jumping.

The disk faults are real where the machine allows: as root, a 256 KiB tmpfs mounted for the test
(filled with a file until ENOSPC; remounted read-only for EROFS); not root, read-only is
``chmod 0o555`` (EACCES). Where neither works (a full disk without root, or root without
mount rights) the fault is injected at the lowest seam, the spool's file write call
(``exporters.influx.spool._write_all``), and the test says so in its output.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from exporters.influx import spool as spool_module
from exporters.influx.lineprotocol import LineEncoder
from exporters.influx.sink import InfluxConfig, InfluxSink
from exporters.influx.spool import DiskSpool
from tests.fixtures.clock import ManualClock
from tests.fixtures.procs import free_port
from tests.fixtures.slowproxy import SlowProxy
from tests.test_influx_sink import _metric, _seqs, _until

_encoder = LineEncoder("slot", ["cabinet"], ["seq", "v"])
_SEQ = re.compile(rb"seq=(\d+)i")


def _lines(start: int, count: int) -> list[str]:
    return [_encoder.encode({"cabinet": "c1"}, {"seq": n, "v": n / 4}, 1_700_000_000_000_000_000 + n)
            for n in range(start, start + count)]


def _first_seqs_sent() -> tuple[aiohttp.TraceConfig, list[int]]:
    """A trace recording the first ``seq`` of every request body that reached a server (gzip off)."""
    firsts: list[int] = []

    async def on_chunk(session, ctx, params) -> None:
        match = _SEQ.search(params.chunk)
        if match:
            firsts.append(int(match.group(1)))

    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(on_chunk)
    return trace, firsts


# -- the spool's disk -----------------------------------------------------------------------------

class SpoolDisk:
    """The file system under ``path``: full, read-only, or fine again, for real when possible."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.path = root / "spool"
        self._monkeypatch = monkeypatch
        self._mounted = False
        self._fault: int | None = None  # seam mode: errno the spool's writes fail with
        root.mkdir()
        if os.geteuid() == 0:
            result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(root)],
                                    capture_output=True, text=True, timeout=10)
            self._mounted = result.returncode == 0
        self.path.mkdir()
        self.real_full = self._mounted
        self.real_read_only = self._mounted or os.geteuid() != 0

    def how(self, fault: str) -> str:
        real = self.real_full if fault == "full" else self.real_read_only
        if real:
            return "tmpfs" if self._mounted else "chmod"
        return "seam: exporters.influx.spool._write_all"

    def fill(self) -> None:
        """ENOSPC from now on: a filler file takes every free page (bounded: the tmpfs is 256 KiB)."""
        if not self.real_full:
            self._inject(errno.ENOSPC)
            return
        fd = os.open(self.root / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with contextlib.suppress(OSError):
                for _ in range(1024):
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        with pytest.raises(OSError) as err:  # really full
            (self.root / "probe").write_bytes(b"\0" * 4096)
        assert err.value.errno == errno.ENOSPC
        (self.root / "probe").unlink(missing_ok=True)

    def free(self) -> None:
        if self.real_full:
            (self.root / "filler").unlink()
        else:
            self._fault = None

    def make_read_only(self) -> None:
        if self._mounted:
            self._mount("-o", "remount,ro")
        elif self.real_read_only:
            self.path.chmod(0o555)
        else:
            self._inject(errno.EROFS)

    def make_writable(self) -> None:
        if self._mounted:
            self._mount("-o", "remount,rw")
        elif self.real_read_only:
            self.path.chmod(0o755)
        else:
            self._fault = None

    def close(self) -> None:
        if self._mounted:
            # Lazy as a last resort: a mount must never outlive the test, even if a file is still open.
            if subprocess.run(["umount", str(self.root)], capture_output=True, timeout=10).returncode != 0:
                subprocess.run(["umount", "-l", str(self.root)], check=True, timeout=10)
            self._mounted = False
        else:
            with contextlib.suppress(OSError):
                self.path.chmod(0o755)

    def _inject(self, code: int) -> None:
        real_write_all = spool_module._write_all

        def write_all(fd: int, data: bytes) -> None:
            if self._fault is not None:
                raise OSError(self._fault, os.strerror(self._fault))
            real_write_all(fd, data)

        self._fault = code
        self._monkeypatch.setattr(spool_module, "_write_all", write_all)

    def _mount(self, *args: str) -> None:
        subprocess.run(["mount", *args, str(self.root)], check=True, capture_output=True, timeout=10)


@pytest.fixture
def spool_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SpoolDisk]:
    disk = SpoolDisk(tmp_path / "disk", monkeypatch)
    try:
        yield disk
    finally:
        disk.close()


def _config(url: str, spool_dir: Path, **overrides) -> InfluxConfig:
    values = dict(url=url, database="cascade", spool_dir=str(spool_dir), batch_size=100, max_buffer_lines=500,
                  spool_max_bytes=128 * 1024, flush_interval_s=0.05, timeout_s=5.0, retry_initial_s=0.05,
                  retry_max_s=0.2, gzip=False)
    return InfluxConfig(**{**values, **overrides})


def _spool_logs(caplog) -> tuple[int, int]:
    """(state changes to not writable, state changes back to writable) logged by the sink."""
    messages = [r.getMessage() for r in caplog.records if r.name == "exporters.influx.sink"]
    return (sum("cannot write the spool" in m for m in messages),
            sum("is writable again" in m for m in messages))


@pytest.mark.parametrize("fault", ["full", "read_only"])
async def test_unwritable_spool_keeps_running_bounded_counts_drops_and_recovers_in_order(
        influxdb, spool_disk, caplog, fault):
    """Server down and the spool's disk full (ENOSPC) or read-only (EROFS/EACCES): the sink keeps
    max_buffer_lines in memory, drops only the oldest beyond that, counted by reason, shows
    cascade_influx_spool_writable 0, logs each state change once, and when the disk is fine again
    spools what it kept and replays everything in order once the server is back."""
    print(f"spool {fault} via {spool_disk.how(fault)}")
    caplog.set_level(logging.INFO, logger="exporters.influx.sink")
    reason = "spool_full" if fault == "full" else "spool_unwritable"
    registry = CollectorRegistry()
    trace, firsts = _first_seqs_sent()
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        async with InfluxSink(_config(influxdb.url, spool_disk.path), registry=registry, session=session) as sink:
            sink.submit_lines(_lines(0, 200))
            await _until(lambda: sink.stats.lines_written == 200)
            influxdb.stop()
            if fault == "full":
                # Some of the outage fits on disk before it fills up.
                for start in range(200, 1000, 100):
                    sink.submit_lines(_lines(start, 100))
                await _until(lambda: sink.stats.spool_lines == 800 and sink.stats.buffered_lines == 0)
                spool_disk.fill()
                kept_on_disk = list(range(200, 1000))
            else:
                spool_disk.make_read_only()  # nothing spooled yet: no segment is open for writing
                kept_on_disk = []
            first = kept_on_disk[-1] + 1 if kept_on_disk else 200
            slowest = 0.0
            for start in range(first, first + 2000, 100):
                began = time.perf_counter()
                sink.submit_lines(_lines(start, 100))  # never raises, never blocks
                slowest = max(slowest, time.perf_counter() - began)
                assert sink.stats.buffered_lines <= 500
                await asyncio.sleep(0.01)
            await _until(lambda: not sink.stats.spool_writable and sink.stats.lines_dropped == 1500)
            await asyncio.sleep(0.3)  # several retries and probes later: still exactly the same
            stats = sink.stats
            assert (stats.buffered_lines, stats.lines_dropped, stats.spool_lines) == (500, 1500, len(kept_on_disk))
            assert stats.dropped_by_reason == {"spool_bound": 0, "spool_full": 0, "spool_unwritable": 0,
                                               reason: 1500}
            assert _metric(registry, "cascade_influx_spool_writable") == 0
            assert _metric(registry, "cascade_influx_lines_dropped_total") == 1500
            assert _metric(registry, "cascade_influx_lines_dropped_by_reason_total", reason=reason) == 1500
            assert _metric(registry, "cascade_influx_buffer_lines") == 500
            assert slowest < 0.05
            assert _spool_logs(caplog) == (1, 0)

            if fault == "full":
                spool_disk.free()
            else:
                spool_disk.make_writable()
            # Still down: what memory kept goes to the spool, behind what was there.
            await _until(lambda: sink.stats.spool_writable and sink.stats.buffered_lines == 0
                         and sink.stats.spool_lines == len(kept_on_disk) + 500)
            assert _metric(registry, "cascade_influx_spool_writable") == 1
            assert _spool_logs(caplog) == (1, 1)
            influxdb.start()
            await _until(lambda: sink.stats.up and sink.stats.spool_lines == 0
                         and sink.stats.lines_written == 200 + len(kept_on_disk) + 500)
            stats = sink.stats
    kept_in_memory = list(range(first + 1500, first + 2000))  # the newest 500 of what came while unwritable
    assert _seqs(influxdb) == list(range(200)) + kept_on_disk + kept_in_memory
    assert influxdb.count("slot", "seq") == 200 + len(kept_on_disk) + 500  # nothing twice
    assert len(firsts) >= (200 + len(kept_on_disk) + 500) // 100  # the trace saw every batch
    assert firsts == sorted(firsts), "replayed out of order"
    assert stats.lines_dropped == 1500 and stats.lines_spooled == stats.lines_replayed == len(kept_on_disk) + 500


async def test_unwritable_spool_at_exit_counts_the_lines_it_loses(spool_disk, caplog):
    """Shutdown with the server down and the spool unwritable: what memory holds is lost, and counted."""
    print(f"spool read_only via {spool_disk.how('read_only')}")
    registry = CollectorRegistry()
    spool_disk.make_read_only()
    config = _config(f"http://127.0.0.1:{free_port()}", spool_disk.path, timeout_s=0.5)
    async with InfluxSink(config, registry=registry) as sink:
        sink.submit_lines(_lines(0, 300))
        await _until(lambda: not sink.stats.spool_writable and not sink.stats.up)
    stats = sink.stats
    assert (stats.lines_dropped, stats.buffered_lines, stats.lines_spooled) == (300, 0, 0)
    assert stats.dropped_by_reason["spool_unwritable"] == 300
    assert _metric(registry, "cascade_influx_lines_dropped_by_reason_total", reason="spool_unwritable") == 300
    assert any("300 lines lost at exit" in r.getMessage() for r in caplog.records)


def test_a_write_on_a_full_disk_leaves_no_torn_record_and_commits_still_work(spool_disk):
    """DiskSpool on a really full disk: the failed append raises and leaves nothing behind (no torn
    tail, no empty segment), the batches already there stay readable, and commit() works even when
    the cursor file cannot be rewritten."""
    print(f"spool full via {spool_disk.how('full')}")
    batch = [f"m,b=x v={i}i {i}" for i in range(200)]
    with DiskSpool(spool_disk.path, 128 * 1024, fsync=False) as spool:
        for _ in range(3):
            spool.append(batch)
        segments = sorted(p.name for p in spool_disk.path.glob("*.seg"))
        spool_disk.fill()
        with pytest.raises(OSError) as err:
            spool.append(batch)
        assert err.value.errno == errno.ENOSPC
        with pytest.raises(OSError):
            spool.check_writable()
        assert sorted(p.name for p in spool_disk.path.glob("*.seg")) == segments
        assert (spool.depth_lines, spool.spooled_lines, spool.dropped_lines) == (600, 600, 0)
        assert spool.peek() == batch
        assert spool.commit() == 200  # the cursor rewrite may fail on the full disk: logged, not raised
        spool_disk.free()
        spool.check_writable()
        spool.append(batch)
    with DiskSpool(spool_disk.path, 128 * 1024) as spool:
        # At-least-once: a cursor the full disk kept stale may replay the committed batch, never lose one.
        assert spool.torn_batches == 0 and spool.depth_lines in (600, 800)


# -- a slow server --------------------------------------------------------------------------------

async def test_slow_influxdb_keeps_memory_bounded_spills_to_the_spool_and_loses_nothing(influxdb, tmp_path):
    """InfluxDB behind a proxy adding 2 s per request and a 256 KB/s cap: submit() stays fast, memory
    stays within max_buffer_lines, the excess goes to the spool (backpressure visible in the
    metrics), and once the proxy is fast again every submitted line is in InfluxDB."""
    registry = CollectorRegistry()
    config = _config("http://unused", tmp_path / "spool", batch_size=500, max_buffer_lines=2000,
                     spool_max_bytes=16 * 1024 * 1024, timeout_s=10.0, gzip=True)
    total = 0
    peak_buffer = peak_spool_bytes = 0
    slowest = 0.0
    async with SlowProxy("127.0.0.1", influxdb.http_port, latency_s=2.0, bytes_per_s=256_000) as proxy:
        config.url = proxy.url
        async with InfluxSink(config, registry=registry) as sink:
            loop_ends = time.monotonic() + 4.0
            while time.monotonic() < loop_ends:  # a busy fleet: 250 lines every 20 ms for 4 s
                began = time.perf_counter()
                sink.submit_lines(_lines(total, 250))
                slowest = max(slowest, time.perf_counter() - began)
                total += 250
                peak_buffer = max(peak_buffer, int(_metric(registry, "cascade_influx_buffer_lines")))
                peak_spool_bytes = max(peak_spool_bytes, int(_metric(registry, "cascade_influx_spool_bytes")))
                await asyncio.sleep(0.02)
            slow = sink.stats
            slow_requests = _metric(registry, "cascade_influx_write_duration_seconds_count")
            slow_over_1s = slow_requests - _metric(registry, "cascade_influx_write_duration_seconds_bucket", le="1.0")
            proxy.latency_s, proxy.bytes_per_s = 0.0, None
            await _until(lambda: sink.stats.lines_written == total and sink.stats.spool_lines == 0
                         and sink.stats.buffered_lines == 0, timeout_s=15)
            stats = sink.stats
    print(f"slow proxy: {total} lines submitted, slowest submit {slowest * 1000:.1f} ms, peak buffer "
          f"{peak_buffer} lines, peak spool {peak_spool_bytes} bytes, {slow.spool_lines} lines spooled at the "
          f"end of the slow phase, {int(slow_requests)} requests of which {int(slow_over_1s)} took > 1 s")
    assert slowest < 0.05, "submit() must never wait for the server"
    assert peak_buffer <= 2000
    assert slow.spool_lines > 0 and peak_spool_bytes > 0 and slow.up  # slow, not down: spooled, not failed
    assert slow_over_1s >= 1
    assert influxdb.count("slot", "seq") == total
    assert _seqs(influxdb) == list(range(total))
    assert stats.lines_dropped == 0 and stats.lines_rejected == 0
    assert stats.lines_spooled == stats.lines_replayed > 0
    assert _metric(registry, "cascade_influx_write_batches_total", result="error") == 0


# -- the wall clock jumps -------------------------------------------------------------------------

async def test_wall_clock_jumps_change_no_duration_of_the_sink(influxdb, tmp_path, monkeypatch):
    """The wall clock (the sink's clock= and time.time itself) jumps +1 h and -1 h: write_lag_s stays
    small and never negative, flushes keep their interval, and retries while down keep their backoff
    (no flood after a jump back, no stall after a jump forward)."""
    wall = ManualClock(time.time())
    monkeypatch.setattr(time, "time", wall)  # also what aiohttp and anything else read as "now"
    registry = CollectorRegistry()
    config = _config(influxdb.url, tmp_path / "spool", flush_interval_s=0.1, retry_initial_s=0.2, retry_max_s=0.2)
    async with InfluxSink(config, registry=registry, clock=wall) as sink:
        sink.submit_lines(_lines(0, 10))  # below batch_size: only the flush interval sends it
        await _until(lambda: sink.stats.lines_written == 10, timeout_s=2)
        written_at = sink.stats.last_write_time
        for jump, seq in ((3600.0, 10), (-7200.0, 20)):
            wall.advance(jump)
            await asyncio.sleep(0.05)
            lag = sink.stats.write_lag_s
            assert lag is not None and 0.0 <= lag < 5.0, f"write lag {lag} after a {jump:+.0f} s jump"
            began = time.monotonic()
            sink.submit_lines(_lines(seq, 10))
            await _until(lambda: sink.stats.lines_written == seq + 10, timeout_s=2)
            assert time.monotonic() - began < 1.0  # flushed on its interval, not an hour later
        assert sink.stats.last_write_time is not None and written_at is not None
        assert sink.stats.last_write_time < written_at  # the stored timestamp does follow the wall clock

        influxdb.stop()
        sink.submit_lines(_lines(30, 10))
        await _until(lambda: not sink.stats.up, timeout_s=2)
        for jump in (-3600.0, 3600.0):
            before = _metric(registry, "cascade_influx_write_batches_total", result="error")
            wall.advance(jump)
            await asyncio.sleep(1.0)
            retries = _metric(registry, "cascade_influx_write_batches_total", result="error") - before
            # Backoff 0.1-0.2 s (equal jitter of 0.2 s): 5-10 retries a second, never a flood, never none.
            assert 3 <= retries <= 12, f"{retries} retries in 1 s after a {jump:+.0f} s jump"
        influxdb.start()
        await _until(lambda: sink.stats.up and sink.stats.lines_written == 40, timeout_s=5)
    assert _seqs(influxdb) == list(range(40))
