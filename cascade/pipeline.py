"""Wiring: collectors → typed readings → InfluxDB sink, Prometheus exporter and reading hooks.

    async with Pipeline(load_config("config/local.yaml")) as pipeline:
        await pipeline.wait()

Data flows one way: the poll runner hands each :class:`PollResult` to :meth:`Pipeline.handle`,
which encodes it for InfluxDB, updates the fleet gauges and calls every reading hook (the warning
engine registers one). Nothing here blocks on I/O: the sink buffers and writes in its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cascade.config import AppConfig
from core.model import CabinetReading
from collectors.modbus.device import ModbusCabinet, PollResult
from collectors.runner import PollRunner
from exporters.influx.schema import reading_to_lines
from exporters.influx.sink import InfluxSink
from exporters.prometheus import PipelineMetrics

__all__ = ["Pipeline", "ReadingHook"]

log = logging.getLogger("cascade.pipeline")

ReadingHook = Callable[[CabinetReading], Any]


class Pipeline:
    """The running collector: owns the poll runner, the sink, the HTTP endpoint and the status task."""

    def __init__(self, config: AppConfig, *, registry: CollectorRegistry | None = None,
                 hooks: list[ReadingHook] | None = None, seed: int | None = None) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.metrics = PipelineMetrics(self.registry)
        self.hooks: list[ReadingHook] = list(hooks or [])
        self.devices = [ModbusCabinet(c, config.profiles[c.profile]) for c in config.cabinets]
        self.by_id = {d.name: d for d in self.devices}
        for cabinet in config.cabinets:
            self.metrics.register_device(cabinet.id, cabinet.site)
        self.sink: InfluxSink | None = None
        self.runner = PollRunner(self.devices, on_result=self.handle, metrics=self.metrics, jitter=config.jitter,
                                 backoff_cap_s=config.backoff_cap_s, seed=seed)
        self.app = web.Application()
        self.app.router.add_get("/metrics", self._metrics_handler)
        self.app.router.add_get("/health", self._health_handler)
        self._web: web.AppRunner | None = None
        self.metrics_port: int | None = None
        self._stack = contextlib.AsyncExitStack()
        self._status_task: asyncio.Task | None = None
        self.readings_total = 0
        self.field_errors_total = 0
        self._logged_errors: set[tuple[str, str]] = set()

    async def __aenter__(self) -> "Pipeline":
        try:
            if self.config.influxdb is not None:
                self.sink = await self._stack.enter_async_context(
                    InfluxSink(self.config.influxdb, registry=self.registry))
            self._web = web.AppRunner(self.app, access_log=None)
            await self._web.setup()
            site = web.TCPSite(self._web, self.config.metrics_host, self.config.metrics_port)
            await site.start()
            self.metrics_port = self._web.addresses[0][1]
            self._stack.push_async_callback(self._web.cleanup)
            await self._stack.enter_async_context(self.runner)
            if self.config.status_interval_s > 0:
                self._status_task = asyncio.create_task(self._status_loop(), name="status")
        except BaseException:
            await self._stack.aclose()
            raise
        log.info("collecting from %d cabinets; metrics on http://%s:%s/metrics", len(self.devices),
                 self.config.metrics_host, self.metrics_port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._status_task:
            self._status_task.cancel()
            await asyncio.gather(self._status_task, return_exceptions=True)
        # Order: stop polling first, then flush the sink (exit stack unwinds in reverse).
        await self._stack.aclose()

    async def wait(self) -> None:
        """Run until cancelled."""
        await asyncio.Event().wait()

    async def handle(self, device: ModbusCabinet, result: PollResult) -> None:
        """Fan one poll out to the sink, the exporter and the hooks."""
        reading = result.reading
        self.readings_total += len(reading.slots)
        if result.errors:
            self.field_errors_total += len(result.errors)
            for err in result.errors:
                # Log each (cabinet, field) problem once; the counter keeps the rate.
                key = (err.cabinet_id, err.field)
                if key not in self._logged_errors:
                    self._logged_errors.add(key)
                    log.warning("rejected value: %s", err)
        if self.sink is not None:
            lines = reading_to_lines(reading)
            skipped = len(reading.slots) + 1 - len(lines)
            if skipped:
                # A value line protocol cannot carry (e.g. a line break in a vendor string): the
                # point is dropped, the rest of the poll is written; counted and logged once.
                self.metrics.lines_encode_errors.inc(skipped)
                if (reading.cabinet_id, "(line protocol)") not in self._logged_errors:
                    self._logged_errors.add((reading.cabinet_id, "(line protocol)"))
                    log.warning("cabinet %s: %d point(s) of a poll could not be encoded for InfluxDB",
                                reading.cabinet_id, skipped)
            self.sink.submit(lines)
        self.metrics.observe(reading, result.requests, [e.field for e in result.errors])
        for hook in self.hooks:
            try:
                outcome = hook(reading)
                if asyncio.iscoroutine(outcome):
                    await outcome
            except Exception:
                log.exception("reading hook %r failed for cabinet %s", hook, reading.cabinet_id)

    def status_line(self, readings_per_s: float) -> str:
        online = sum(1 for v in self.runner.online.values() if v)
        parts = [f"devices online {online}/{len(self.devices)}", f"readings/s {readings_per_s:.0f}",
                 f"rejected values {self.field_errors_total}"]
        if self.sink is not None:
            stats = self.sink.stats
            lag = "n/a" if not stats.last_write_time else f"{max(0.0, time.time() - stats.last_write_time):.1f}s"
            parts += [f"write lag {lag}", f"buffered {stats.buffered_lines}", f"spool {stats.spool_lines} lines"]
        return " | ".join(parts)

    async def _status_loop(self) -> None:
        last_total, last_t = self.readings_total, time.monotonic()
        while True:
            await asyncio.sleep(self.config.status_interval_s)
            now = time.monotonic()
            rate = (self.readings_total - last_total) / max(now - last_t, 1e-9)
            last_total, last_t = self.readings_total, now
            log.info("status: %s", self.status_line(rate))

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health_handler(self, request: web.Request) -> web.Response:
        online = sum(1 for v in self.runner.online.values() if v)
        return web.json_response({"devices": len(self.devices), "online": online})
