"""Batching InfluxDB writer that never blocks the collectors and loses nothing within its spool bound.

Lines go into a bounded in-memory buffer; a background task writes them in batches (by size or every
``flush_interval_s``). A batch that cannot be written (connection error, timeout, 5xx, auth/database
errors) goes to the :class:`~exporters.influx.spool.DiskSpool`; while the server is down the task
retries the oldest spooled batch with exponential backoff and jitter, and when it is back the spool is
replayed in order before any newer data. Bad lines (HTTP 400/422 "partial write") are counted and
logged once per distinct error, never retried. When the spool itself cannot be written (disk full,
read-only), lines stay in memory up to ``max_buffer_lines``; the oldest beyond that are dropped and
counted by reason, and the spool is probed until it takes data again. All durations (backoff, flush
interval, write lag) use the monotonic clock, so a wall-clock jump changes none of them.
See docs/influxdb-sink.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gzip
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from core.errors import CascadeError
from core.events import Point
from exporters.influx.schema import encode_points
from exporters.influx.spool import DiskSpool

__all__ = ["InfluxConfig", "InfluxConfigError", "InfluxSink", "SinkStats"]

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
# Retrying these can succeed once the server or its configuration is fixed; anything else 4xx is about
# the lines themselves and would fail forever.
_RETRYABLE = {401, 403, 404, 408, 429}
_GZIP_IN_THREAD_BYTES = 256 * 1024
_SEEN_ERRORS_LIMIT = 256
# Why lines were lost (label of cascade_influx_lines_dropped_by_reason_total): the configured spool
# bound; the disk under the spool is full; the spool cannot be written for another reason (read-only
# file system, permissions). The last two drop the oldest lines in memory beyond max_buffer_lines.
DropReason = Literal["spool_bound", "spool_full", "spool_unwritable"]
_DROP_REASONS: tuple[DropReason, ...] = ("spool_bound", "spool_full", "spool_unwritable")
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class InfluxConfigError(CascadeError):
    """An InfluxConfig value is missing or out of range; the message names the key."""


@dataclass
class InfluxConfig:
    """Where and how to write. ``api="v1"``: POST /write (InfluxDB 1.x, 2.x via DBRP, 3.x);
    ``api="v2"``: influxdb-client's async write API with token/org/bucket (InfluxDB 2.x)."""

    url: str
    spool_dir: str
    api: Literal["v1", "v2"] = "v1"
    database: str = ""
    retention_policy: str = ""
    username: str = ""
    password: str = ""
    token: str = ""
    org: str = ""
    bucket: str = ""
    batch_size: int = 5000
    flush_interval_s: float = 1.0
    gzip: bool = True
    max_buffer_lines: int = 200_000
    spool_max_bytes: int = 512 * _MIB
    timeout_s: float = 10.0
    precision: Literal["ns"] = "ns"
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0

    def validate(self) -> InfluxConfig:
        """Raise InfluxConfigError naming the first bad key; returns self for chaining."""
        def bad(key: str, why: str) -> InfluxConfigError:
            return InfluxConfigError(f"influx.{key}: {why} (got {getattr(self, key)!r})")

        if not self.url.startswith(("http://", "https://")):
            raise bad("url", "must be an http:// or https:// URL of the InfluxDB server")
        if self.api not in ("v1", "v2"):
            raise bad("api", 'must be "v1" (POST /write: InfluxDB 1.x/2.x/3.x) or "v2" (token/org/bucket)')
        if self.api == "v1" and not self.database:
            raise bad("database", "is required with api v1: name the database to write to")
        if self.api == "v2":
            for key in ("token", "org", "bucket"):
                if not getattr(self, key):
                    raise bad(key, "is required with api v2")
        if bool(self.username) != bool(self.password):
            raise bad("password" if self.username else "username", "username and password go together: set both or neither")
        if not self.spool_dir:
            raise bad("spool_dir", "is required: a writable directory for batches the server could not take")
        for key, low in (("batch_size", 1), ("max_buffer_lines", 1), ("spool_max_bytes", 64 * 1024)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise bad(key, f"must be an integer >= {low}")
        if self.max_buffer_lines < self.batch_size:
            raise bad("max_buffer_lines", f"must be >= batch_size ({self.batch_size})")
        for key in ("flush_interval_s", "timeout_s", "retry_initial_s", "retry_max_s"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise bad(key, "must be a number of seconds > 0")
        if self.retry_max_s < self.retry_initial_s:
            raise bad("retry_max_s", f"must be >= retry_initial_s ({self.retry_initial_s})")
        if self.precision != "ns":
            raise bad("precision", 'only "ns" is supported: the encoder writes nanosecond timestamps')
        return self

    def __repr__(self) -> str:  # keep secrets out of logs
        shown = {f.name: ("***" if f.name in ("password", "token") and getattr(self, f.name) else getattr(self, f.name))
                 for f in fields(self)}
        return f"InfluxConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


@dataclass(frozen=True)
class SinkStats:
    """A snapshot for a status line. ``last_write_time`` is from the sink's ``clock`` (epoch seconds by
    default); ``write_lag_s`` is measured on the monotonic clock, so a wall-clock jump does not move it."""

    up: bool
    buffered_lines: int
    spool_lines: int
    spool_bytes: int
    lines_written: int
    lines_rejected: int
    lines_spooled: int
    lines_replayed: int
    lines_dropped: int
    last_write_time: float | None
    write_lag_s: float | None
    spool_writable: bool = True
    dropped_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class _Outcome:
    result: Literal["ok", "rejected", "error"]
    rejected: int = 0
    status: int | None = None
    message: str = ""


class InfluxSink:
    """``async with InfluxSink(cfg, registry=reg) as sink: sink.submit([reading, alert_event])``."""

    def __init__(self, config: InfluxConfig, *, registry: CollectorRegistry | None = None,
                 session: aiohttp.ClientSession | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.config = config.validate()
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._rng = rng or random.Random()
        self._buffer: list[str] = []
        self._spool: DiskSpool | None = None
        self._task: asyncio.Task[None] | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._client: Any = None
        self._write_api: Any = None
        self._open = False
        self._up = True
        self._failures = 0
        self._retry_at = 0.0  # time.monotonic() of the next server retry while down
        self._last_write_time: float | None = None  # wall clock (self._clock), for display
        self._last_write_mono: float | None = None  # time.monotonic(), for write_lag_s
        self._spool_fault: DropReason | None = None  # why the spool cannot be written; None = writable
        self._spool_failures = 0
        self._spool_retry_at = 0.0  # time.monotonic() of the next spool probe while it is not writable
        self._spool_probe_bytes = 0  # size of the batch that could not be spooled: the probe writes as much
        self._seen_errors: set[str] = set()
        self._split_logged = False
        self._counts = dict.fromkeys(("written", "rejected", "spooled", "replayed", "dropped"), 0)
        self._dropped_by_reason: dict[str, int] = dict.fromkeys(_DROP_REASONS, 0)
        self._metrics = _Metrics(registry if registry is not None else CollectorRegistry(), self)

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> InfluxSink:
        cfg = self.config
        self._spool = DiskSpool(cfg.spool_dir, cfg.spool_max_bytes)
        if cfg.api == "v1":
            if self._session is None:
                self._session = aiohttp.ClientSession()
        else:
            from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
            self._client = InfluxDBClientAsync(url=cfg.url, token=cfg.token, org=cfg.org,
                                               timeout=int(cfg.timeout_s * 1000), enable_gzip=cfg.gzip)
            self._write_api = self._client.write_api()
        self._wake = asyncio.Event()
        self._open = True
        self._task = asyncio.create_task(self._run(), name="influx-sink-flush")
        self._sync_task = asyncio.create_task(self._sync_loop(), name="influx-sink-spool-fsync")
        if self._spool.depth_lines:
            log.info("influx sink: %d lines in the spool from an earlier run will be replayed first",
                     self._spool.depth_lines)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._open = False
        assert self._task is not None and self._sync_task is not None and self._spool is not None
        for task in (self._task, self._sync_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            # Last chance to deliver; whatever the server does not take now is kept on disk.
            if not self._up:
                self._retry_at = 0.0
            async with asyncio.timeout(self.config.timeout_s):
                await self._drain()
        except (TimeoutError, Exception) as err:  # noqa: BLE001 - shutdown must finish
            log.warning("influx sink: final flush incomplete (%s); the rest stays in the spool", err)
        finally:
            self._spill_buffer(force=True)
            if self._buffer:
                reason = self._spool_fault or "spool_unwritable"
                log.error("influx sink: %d lines lost at exit: the server did not take them and the spool in %s "
                          "cannot be written (%s)", len(self._buffer), self.config.spool_dir, reason)
                self._drop(len(self._buffer), reason)
                self._buffer.clear()
            if self._client is not None:
                await self._client.close()
            if self._owns_session and self._session is not None:
                await self._session.close()
            self._spool.close()  # fsyncs what the sync task has not

    # -- API -----------------------------------------------------------------------------------

    def submit(self, points: Iterable[Point]) -> None:
        """Queue domain points (readings, alert events, command records), encoded here.

        A point line protocol cannot carry is counted (``cascade_line_encode_errors_total``), logged
        once per place and reason, and skipped; the rest is written. Never blocks, never raises on I/O.
        """
        lines, skipped = encode_points(points)
        if skipped:
            self._metrics.encode_errors.inc(len(skipped))
            for where, why in skipped:
                key = f"encode {where}: {why}"
                if key not in self._seen_errors:
                    if len(self._seen_errors) >= _SEEN_ERRORS_LIMIT:
                        self._seen_errors.clear()
                    self._seen_errors.add(key)
                    log.warning("influx sink: %s could not be encoded for InfluxDB (%s); the rest is written",
                                where, why)
        self.submit_lines(lines)

    def submit_lines(self, lines: Sequence[str]) -> None:
        """Queue line-protocol lines as they are. Never blocks on the network and never raises on I/O."""
        if isinstance(lines, str):
            raise TypeError("submit_lines() takes a sequence of lines, not one str: wrap it in a list")
        if not self._open:
            raise RuntimeError("InfluxSink is not running: submit inside 'async with InfluxSink(...)'")
        if not lines:
            return
        self._buffer.extend(lines)
        overflow = len(self._buffer) - self.config.max_buffer_lines
        if overflow > 0:
            # Oldest lines go to disk so the spool stays older than the buffer (replay order).
            self._spill(max(overflow, self.config.batch_size))
        if len(self._buffer) >= self.config.batch_size:
            assert self._wake is not None
            self._wake.set()

    @property
    def stats(self) -> SinkStats:
        spool = self._spool
        c = self._counts
        return SinkStats(
            up=self._up, buffered_lines=len(self._buffer),
            spool_lines=spool.depth_lines if spool else 0, spool_bytes=spool.depth_bytes if spool else 0,
            lines_written=c["written"], lines_rejected=c["rejected"], lines_spooled=c["spooled"],
            lines_replayed=c["replayed"], lines_dropped=c["dropped"], last_write_time=self._last_write_time,
            write_lag_s=None if self._last_write_mono is None else time.monotonic() - self._last_write_mono,
            spool_writable=self._spool_fault is None, dropped_by_reason=dict(self._dropped_by_reason))

    # -- background task -----------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None and self._spool is not None
        while self._open:
            if self._spool_fault is not None and time.monotonic() >= self._spool_retry_at:
                self._probe_spool()
            if self._up:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow our cancel at exit.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.flush_interval_s):
                        await self._wake.wait()
                self._wake.clear()
            else:
                # Down: keep memory small and the data durable; retry when the backoff says so.
                self._spill_buffer()
                delay = self._retry_at - time.monotonic()
                if delay > 0 or not (len(self._spool) or self._buffer):
                    # Nothing to retry with: wait, never spin the loop. (With the spool not writable,
                    # the buffer is what the retry sends.)
                    await asyncio.sleep(min(delay, self.config.flush_interval_s) if delay > 0
                                        else self.config.flush_interval_s)
                    continue
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not silently stop delivery; log and keep going
                log.exception("influx sink: unexpected error in the flush loop")
                self._mark_down()

    async def _sync_loop(self) -> None:
        """fsync what was spooled, in a thread: spooling happens inside submit() and must not wait for
        the disk (an fsync can take a second on a busy disk). Spooled lines are durable within
        ``flush_interval_s``, the same window lines in the buffer have."""
        assert self._spool is not None
        while True:
            await asyncio.sleep(self.config.flush_interval_s)
            fd = self._spool.sync_handle()
            if fd is None:
                continue
            try:
                await asyncio.to_thread(_fsync_and_close, fd)
            except OSError as err:
                key = f"fsync {err.errno}"
                if key not in self._seen_errors:
                    self._seen_errors.add(key)
                    log.error("influx sink: fsync of the spool in %s failed (%s); the last spooled batches may not "
                              "survive a crash (they are still replayed while this process runs)",
                              self.config.spool_dir, err)

    async def _drain(self) -> None:
        """Write the spool (oldest first), then the buffer, until empty or the server fails."""
        assert self._spool is not None
        while self._up or time.monotonic() >= self._retry_at:
            token: int | None = None
            claimed = self._spool.claim()
            if claimed is not None:
                # The batch stays in the spool while it is written; submit() may spill into the spool
                # meanwhile and even drop this batch for the bound. The token makes commit/release
                # settle exactly this batch (see DiskSpool for the counting).
                token, batch = claimed
            elif self._buffer:
                batch = self._buffer[:self.config.batch_size]
                del self._buffer[:len(batch)]
            else:
                return
            try:
                outcome = await self._write(batch)
            except asyncio.CancelledError:
                if token is None:
                    self._buffer[:0] = batch  # not known to be written: keep it (a resend is idempotent)
                else:
                    self._drop(self._spool.release(token), "spool_bound")
                raise
            if outcome.result == "error":
                if token is None:
                    if not self._to_spool(batch):
                        self._buffer[:0] = batch  # older than the buffer: it goes first on the retry
                        self._trim_buffer()
                else:
                    self._drop(self._spool.release(token), "spool_bound")
                self._mark_down()
                return
            self._count("written", len(batch) - outcome.rejected)
            self._count("rejected", outcome.rejected)
            if token is not None:
                self._count("replayed", self._spool.commit(token))
            self._mark_up()

    # -- writing -------------------------------------------------------------------------------

    async def _write(self, batch: list[str]) -> _Outcome:
        """Write one batch; a batch the server finds too large (HTTP 413) is written in halves, down
        to single lines, so a server body limit below one batch never costs the good lines."""
        outcome = await self._write_once(batch)
        if outcome.status != 413 or len(batch) < 2:
            return outcome
        if self._split_logged is False:
            self._split_logged = True
            log.warning("influx sink: the server refuses a %d-line batch as too large (HTTP 413); writing it "
                        "in smaller parts (lower influxdb.batch_size to avoid the extra requests)", len(batch))
        self._count_split()
        half = len(batch) // 2
        first, second = await self._write(batch[:half]), await self._write(batch[half:])
        if "error" in (first.result, second.result):
            # Spooled and retried whole; a resent line of the half that was stored overwrites itself.
            return first if first.result == "error" else second
        rejected = first.rejected + second.rejected
        return _Outcome("rejected" if rejected else "ok", rejected=rejected, status=first.status or second.status,
                        message=first.message or second.message)

    def _count_split(self) -> None:
        self._metrics.splits.inc()

    async def _write_once(self, batch: list[str]) -> _Outcome:
        started = time.perf_counter()
        try:
            if self.config.api == "v1":
                outcome = await self._write_v1(batch)
            else:
                outcome = await self._write_v2(batch)
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            outcome = _Outcome("error", message=f"{type(err).__name__}: {err}")
        except Exception as err:  # noqa: BLE001 - e.g. from influxdb-client: keep the batch, spool it
            outcome = _Outcome("error", message=f"unexpected {type(err).__name__}: {err}")
            if f"{outcome.status} {_error_key(outcome.message)}" not in self._seen_errors:  # traceback once
                log.exception("influx sink: unexpected error writing %d lines; they are kept (spooled) and "
                              "retried", len(batch))
        self._metrics.duration.observe(time.perf_counter() - started)
        self._metrics.batches.labels(outcome.result).inc()
        if outcome.result != "ok":
            self._log_once(outcome, len(batch))
        return outcome

    async def _write_v1(self, batch: list[str]) -> _Outcome:
        cfg = self.config
        assert self._session is not None
        body = _body(batch)
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if cfg.gzip:
            body = await _gzip(body)
            headers["Content-Encoding"] = "gzip"
        if cfg.token and not cfg.username:
            headers["Authorization"] = f"Token {cfg.token}"
        params = {"db": cfg.database, "precision": "ns"}
        if cfg.retention_policy:
            params["rp"] = cfg.retention_policy
        auth = aiohttp.BasicAuth(cfg.username, cfg.password) if cfg.username else None
        async with self._session.post(f"{cfg.url.rstrip('/')}/write", params=params, data=body, headers=headers,
                                      auth=auth, timeout=aiohttp.ClientTimeout(total=cfg.timeout_s)) as resp:
            text = await resp.text(errors="replace")
            return _classify(resp.status, text, len(batch))

    async def _write_v2(self, batch: list[str]) -> _Outcome:
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException
        cfg = self.config
        try:
            await self._write_api.write(bucket=cfg.bucket, org=cfg.org, record=_body(batch),
                                        write_precision=WritePrecision.NS)
        except ApiException as err:
            body = err.body.decode(errors="replace") if isinstance(err.body, bytes) else str(err.body or err.reason)
            return _classify(err.status or 0, body, len(batch))
        return _Outcome("ok")

    # -- spool and state -----------------------------------------------------------------------

    def _spill(self, count: int, *, force: bool = False) -> None:
        """Move the oldest ``count`` buffered lines to the spool, batch by batch. What the spool cannot
        take stays in memory, where only the oldest lines beyond ``max_buffer_lines`` are dropped."""
        size = self.config.batch_size
        while count > 0 and self._buffer:
            n = min(size, count)
            if not self._to_spool(self._buffer[:n], force=force):
                break
            del self._buffer[:n]
            count -= n
        self._trim_buffer()

    def _spill_buffer(self, *, force: bool = False) -> None:
        if self._buffer and self._spool is not None:
            self._spill(len(self._buffer), force=force)

    def _to_spool(self, batch: list[str], *, force: bool = False) -> bool:
        """Append ``batch`` to the spool; False when the spool cannot take it (the caller keeps it).
        While the spool is not writable this touches the disk only when a probe is due (or ``force``)."""
        spool = self._spool
        assert spool is not None
        if self._spool_fault is not None and not force and time.monotonic() < self._spool_retry_at:
            return False
        spooled, dropped = spool.spooled_lines, spool.dropped_lines
        try:
            spool.append(batch, sync=False)  # fsync'd by _sync_loop, off the event loop
        except OSError as err:
            self._spool_failed(err, _record_bytes(batch))
            return False
        finally:  # the bound may have dropped old batches before the write failed
            self._drop(spool.dropped_lines - dropped, "spool_bound")
        self._count("spooled", spool.spooled_lines - spooled)
        self._spool_ok()
        return True

    def _trim_buffer(self) -> None:
        """The memory bound, reached only when the spool cannot be written: drop the oldest lines."""
        excess = len(self._buffer) - self.config.max_buffer_lines
        if excess > 0:
            del self._buffer[:excess]
            self._drop(excess, self._spool_fault or "spool_unwritable")

    def _probe_spool(self) -> None:
        """Is the spool writable again? Probed with as many bytes as the batch that failed, so a disk
        with a little space back does not flap between writable and full."""
        assert self._spool is not None
        try:
            self._spool.check_writable(self._spool_probe_bytes)
        except OSError as err:
            self._spool_failed(err, self._spool_probe_bytes)
        else:
            self._spool_ok(probe=True)

    def _spool_failed(self, err: OSError, size: int) -> None:
        reason: DropReason = "spool_full" if err.errno in _DISK_FULL else "spool_unwritable"
        self._spool_failures += 1
        self._spool_probe_bytes = size
        self._spool_retry_at = time.monotonic() + self._backoff(self._spool_failures)
        if self._spool_fault != reason:
            what = "the disk is full" if reason == "spool_full" else "it is not writable"
            log.error("influx sink: cannot write the spool in %s, %s (%s); keeping up to %d lines in memory and "
                      "dropping the oldest beyond that (cascade_influx_lines_dropped_by_reason_total{reason=\"%s\"}) "
                      "until it takes data again — free space or fix permissions/mount of spool_dir",
                      self.config.spool_dir, what, err, self.config.max_buffer_lines, reason)
        self._spool_fault = reason

    def _spool_ok(self, *, probe: bool = False) -> None:
        if self._spool_fault is not None:
            log.warning("influx sink: the spool in %s is writable again (was %s); lines in memory are spooled "
                        "and replayed in order", self.config.spool_dir, self._spool_fault)
        self._spool_fault = None
        if not probe:  # only a real append ends the backoff: a probe cannot prove every batch fits
            self._spool_failures = 0

    def _count(self, name: str, n: int) -> None:
        if n:
            self._counts[name] += n
            getattr(self._metrics, name).inc(n)

    def _drop(self, n: int, reason: DropReason) -> None:
        if n:
            self._count("dropped", n)
            self._dropped_by_reason[reason] += n
            self._metrics.dropped_by_reason.labels(reason).inc(n)

    def _mark_up(self) -> None:
        if not self._up:
            log.info("influx sink: %s is reachable again; replaying the spool", self.config.url)
        self._up = True
        self._failures = 0
        self._last_write_time = self._clock()
        self._last_write_mono = time.monotonic()

    def _mark_down(self) -> None:
        self._up = False
        self._failures += 1
        # Monotonic: a wall-clock jump must neither stall the retries nor fire them all at once.
        self._retry_at = time.monotonic() + self._backoff(self._failures)

    def _backoff(self, failures: int) -> float:
        cfg = self.config
        ceiling = min(cfg.retry_max_s, cfg.retry_initial_s * 2 ** min(failures - 1, 30))
        # "Equal jitter": at least half the backoff, so many cabinets do not retry in lockstep.
        return float(ceiling * (0.5 + 0.5 * self._rng.random()))

    def _log_once(self, outcome: _Outcome, lines: int) -> None:
        key = f"{outcome.status} {_error_key(outcome.message)}"
        if key in self._seen_errors:
            return
        if len(self._seen_errors) >= _SEEN_ERRORS_LIMIT:
            self._seen_errors.clear()
        self._seen_errors.add(key)
        if outcome.result == "rejected":
            log.error("influx sink: server rejected %d of %d lines (HTTP %s): %s — fix the producer of these "
                      "lines; they are not retried", outcome.rejected, lines, outcome.status, outcome.message)
        else:
            log.warning("influx sink: write to %s failed (%s): %s — spooling and retrying with backoff",
                        self.config.url, f"HTTP {outcome.status}" if outcome.status else "no response",
                        outcome.message)


class _Metrics:
    def __init__(self, registry: CollectorRegistry, sink: InfluxSink) -> None:
        self.batches = Counter("cascade_influx_write_batches", "Write attempts by result (ok, error = retried "
                               "later, rejected = server refused some lines)", ["result"], registry=registry)
        for result in ("ok", "error", "rejected"):
            self.batches.labels(result)
        self.duration = Histogram("cascade_influx_write_duration_seconds", "Duration of one write request",
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                  registry=registry)
        self.encode_errors = Counter("cascade_line_encode_errors_total",
                                     "Points (cabinet, slot, alert, command) that could not be encoded as line "
                                     "protocol; skipped, the rest written", registry=registry)
        self.splits = Counter("cascade_influx_batch_splits_total",
                              "Batches the server refused as too large (HTTP 413), written again in halves",
                              registry=registry)
        self.written = Counter("cascade_influx_lines_written", "Lines stored by the server", registry=registry)
        self.rejected = Counter("cascade_influx_lines_rejected", "Lines the server refused (bad line, type "
                                "conflict); not retried", registry=registry)
        self.spooled = Counter("cascade_influx_lines_spooled", "Lines written to the disk spool", registry=registry)
        self.replayed = Counter("cascade_influx_lines_replayed", "Spooled lines delivered from the spool",
                                registry=registry)
        self.dropped = Counter("cascade_influx_lines_dropped", "Lines lost: spool bound exceeded, or memory "
                               "bound exceeded while the spool could not be written", registry=registry)
        self.dropped_by_reason = Counter(
            "cascade_influx_lines_dropped_by_reason", "Lines lost, by reason: spool_bound (spool_max_bytes), "
            "spool_full (disk full), spool_unwritable (read-only, permissions); sums to "
            "cascade_influx_lines_dropped_total", ["reason"], registry=registry)
        for reason in _DROP_REASONS:
            self.dropped_by_reason.labels(reason)
        Gauge("cascade_influx_spool_lines", "Lines waiting in the disk spool", registry=registry) \
            .set_function(lambda: sink._spool.depth_lines if sink._spool else 0)
        Gauge("cascade_influx_spool_bytes", "Bytes of batches waiting in the disk spool", registry=registry) \
            .set_function(lambda: sink._spool.depth_bytes if sink._spool else 0)
        Gauge("cascade_influx_buffer_lines", "Lines waiting in memory", registry=registry) \
            .set_function(lambda: len(sink._buffer))
        Gauge("cascade_influx_up", "1 unless the last write attempt failed", registry=registry) \
            .set_function(lambda: 1 if sink._up else 0)
        Gauge("cascade_influx_spool_writable", "0 while the spool directory cannot be written (disk full, "
              "read-only): lines beyond max_buffer_lines are being dropped", registry=registry) \
            .set_function(lambda: 1 if sink._spool_fault is None else 0)


def _classify(status: int, text: str, lines: int) -> _Outcome:
    """Map an HTTP answer to ok / rejected (with the number of refused lines) / error (retry)."""
    if 200 <= status < 300:
        return _Outcome("ok", status=status)
    message = _server_message(text)
    if status >= 500 or status in _RETRYABLE or status < 200:
        return _Outcome("error", status=status, message=message)
    return _Outcome("rejected", rejected=_rejected_count(text, message, lines), status=status, message=message)


def _server_message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:2000]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)[:2000]
    return text.strip()[:2000]


def _rejected_count(text: str, message: str, lines: int) -> int:
    """How many lines of the batch the server refused; all of them when it does not say.

    InfluxDB 1.x writes the good lines and lists each unparsable one ("unable to parse '...'") or
    reports "dropped=N" (type conflicts, outside retention). 3.x lists them in a JSON "data" array.
    """
    with contextlib.suppress(ValueError):
        body = json.loads(text)
        if isinstance(body, dict) and isinstance(body.get("data"), list) and body["data"]:
            return min(lines, len(body["data"]))
    dropped = re.search(r"dropped=(\d+)", message)
    count = len(re.findall(r"(?:^|\n|partial write: )unable to parse '", message))
    count += int(dropped.group(1)) if dropped else 0
    return lines if count == 0 or count > lines else count


def _error_key(message: str) -> str:
    """The error without the offending line text or counts, so one kind of error logs once."""
    key = re.sub(r"unable to parse '.*?': ", "unable to parse: ", message, flags=re.S)
    return re.sub(r"dropped=\d+|\d+", "#", key)[:300]


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record_bytes(batch: list[str]) -> int:
    """About the spool record size of ``batch`` (ASCII estimate; the probe needs no more)."""
    return 16 + sum(4 + len(line) for line in batch)


def _body(batch: list[str]) -> bytes:
    # surrogatepass: a broken line becomes a bad line the server rejects (counted), not a crash here
    return ("\n".join(batch) + "\n").encode("utf-8", "surrogatepass")


async def _gzip(body: bytes) -> bytes:
    # Level 1: several times faster than the default for ~10% larger bodies; big bodies off the loop.
    if len(body) >= _GZIP_IN_THREAD_BYTES:
        return await asyncio.to_thread(gzip.compress, body, 1)
    return gzip.compress(body, 1)
