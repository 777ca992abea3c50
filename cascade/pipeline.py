"""The running collector: sources → typed reports → sink, Prometheus exporter and reading subscribers.

    async with Pipeline(load_config("config/local.yaml")) as pipeline:
        await pipeline.wait()

Data flows one way. Sources are built by kind from config (``collectors.SOURCE_KINDS``); each
delivers :class:`~core.events.Report` reports to :meth:`Pipeline.handle`, which gives the reading to
the sink (which encodes it), updates the fleet gauges and calls every subscriber (the warning
engine subscribes through :class:`~core.ports.ReadingFeed`). The pipeline names no protocol.
Nothing here blocks on I/O: the sink buffers and writes in its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from cascade.config import AppConfig, server_tls_context
from collectors import build_source
from core.events import CommandResult, Point, Report
from core.model import CabinetReading
from core.ports import Commander, ReadingHook, Source, UnknownDevice
from exporters.influx.sink import InfluxSink
from exporters.prometheus import PipelineMetrics
from exporters.scrape import ScrapeSnapshot

if TYPE_CHECKING:
    from alerting.service import AlertService

__all__ = ["Commanders", "Pipeline"]

log = logging.getLogger("cascade.pipeline")


class Commanders:
    """One :class:`~core.ports.Commander` over every source whose devices take commands."""

    def __init__(self, commanders: Sequence[Commander]) -> None:
        self._commanders = list(commanders)

    def add(self, commander: Commander) -> None:
        """One more commander whose devices are not a source's (a BLE gateway's packs, over MQTT)."""
        self._commanders.append(commander)

    def _owner(self, device: str) -> Commander | None:
        return next((c for c in self._commanders if c.slot_count(device) is not None), None)

    def slot_count(self, device: str) -> int | None:
        owner = self._owner(device)
        return None if owner is None else owner.slot_count(device)

    async def command(self, device: str, name: str, *, slot: int | None, value: int | bool,
                      actor: str) -> CommandResult:
        owner = self._owner(device)
        if owner is None:
            raise UnknownDevice(f"no source of this collector serves {device!r}")
        return await owner.command(device, name, slot=slot, value=value, actor=actor)


class Pipeline:
    """The running collector: owns the poll runner, the sink, the HTTP endpoint and the status task."""

    def __init__(self, config: AppConfig, *, registry: CollectorRegistry | None = None,
                 hooks: list[ReadingHook] | None = None, seed: int | None = None) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.metrics = PipelineMetrics(self.registry)
        self.scrape = ScrapeSnapshot(self.registry)
        self.hooks: list[ReadingHook] = list(hooks or [])
        self.sources: list[Source] = [
            build_source(kind, settings, emit=self._emit, metrics=self.metrics, seed=seed)
            for kind, settings in config.source_settings().items()]
        for source in self.sources:
            for device, site in source.devices().items():
                self.metrics.register_device(device, site, source.kind)
        self.commander = Commanders([s for s in self.sources if isinstance(s, Commander)])
        self.sink: InfluxSink | None = None
        self.app = web.Application()
        self.app.router.add_get("/metrics", self._metrics_handler)
        self.app.router.add_get("/health", self._health_handler)
        self._web: web.AppRunner | None = None
        self.metrics_port: int | None = None
        self._stack = contextlib.AsyncExitStack()
        self._status_task: asyncio.Task[None] | None = None
        self.readings_total = 0
        self.field_errors_total = 0
        self._logged_errors: set[tuple[str, str]] = set()
        self.alerts: AlertService | None = None  # set by cascade.app.start_app when alerting is on

    async def __aenter__(self) -> Pipeline:
        try:
            if self.config.influxdb is not None:
                self.sink = await self._stack.enter_async_context(
                    InfluxSink(self.config.influxdb, registry=self.registry))
            self._web = web.AppRunner(self.app, access_log=None)
            await self._web.setup()
            tls = self.config.metrics_tls
            context = None if tls is None else server_tls_context(tls.cert_file, tls.key_file,
                                                                  source=self.config.source, key="metrics.tls")
            site = web.TCPSite(self._web, self.config.metrics_host, self.config.metrics_port, ssl_context=context)
            await site.start()
            self.metrics_port = self._web.addresses[0][1]
            self._stack.push_async_callback(self._web.cleanup)
            for source in self.sources:
                await self._stack.enter_async_context(source)
            if self.config.status_interval_s > 0:
                self._status_task = asyncio.create_task(self._status_loop(), name="status")
        except BaseException:
            await self._stack.aclose()
            raise
        log.info("collecting from %d devices (%s); metrics on %s://%s:%s/metrics", len(self.online()),
                 ", ".join(sorted({s.kind for s in self.sources})),
                 "https" if self.config.metrics_tls else "http", self.config.metrics_host, self.metrics_port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._status_task:
            self._status_task.cancel()
            await asyncio.gather(self._status_task, return_exceptions=True)
        # Order: stop the sources first, then flush the sink (exit stack unwinds in reverse).
        await self._stack.aclose()

    async def wait(self) -> None:
        """Run until cancelled."""
        await asyncio.Event().wait()

    # -- ReadingFeed ----------------------------------------------------------------------------

    def subscribe(self, hook: ReadingHook) -> None:
        self.hooks.append(hook)

    def unsubscribe(self, hook: ReadingHook) -> None:
        with contextlib.suppress(ValueError):
            self.hooks.remove(hook)

    # -- PointSink: events from alerting (alert changes, command records) --------------------------

    def submit(self, points: Iterable[Point]) -> None:
        """Store points (alert events, command records) with the readings; dropped without a sink."""
        if self.sink is None:
            return
        try:
            self.sink.submit(points)
        except RuntimeError as err:  # sink already closed during shutdown
            log.debug("points not written: %s", err)

    # -- the hot path ---------------------------------------------------------------------------

    async def _emit(self, report: Report) -> None:
        # Looked up on each call so a test (or a wrapper) can replace ``handle`` on the instance.
        await self.handle(report)

    async def handle(self, report: Report) -> None:
        """Fan one report out to the sink, the exporter and the subscribers."""
        reading = report.reading
        if report.watch_only:
            # Evaluated only: a vehicle report (stored by the ingest workers) or a safety fast-lane poll
            # (the next full poll is stored, collectors/modbus/device.py); the reads it cost still count.
            if report.requests:
                self.metrics.count_requests(report.requests, report.source)
            await self._call_hooks(reading)
            return
        self.readings_total += len(reading.slots)
        if report.errors:
            self.field_errors_total += len(report.errors)
            for err in report.errors:
                # Log each (cabinet, field) problem once; the counter keeps the rate.
                key = (err.cabinet_id, err.field)
                if key not in self._logged_errors:
                    self._logged_errors.add(key)
                    log.warning("rejected value: %s", err)
        if reading.over_range or any(slot.over_range for slot in reading.slots):
            self._log_over_range(reading)
        if self.sink is not None:
            self.sink.submit((reading,))
        self.metrics.observe(reading, report.requests, [e.field for e in report.errors], report.source)
        await self._call_hooks(reading)

    async def _call_hooks(self, reading: CabinetReading) -> None:
        for hook in self.hooks:
            try:
                outcome = hook(reading)
                if outcome is not None:
                    await outcome
            except Exception:
                log.exception("reading hook %r failed for cabinet %s", hook, reading.cabinet_id)

    def _log_over_range(self, reading: CabinetReading) -> None:
        """Say once per (cabinet, slot, field) that a sensor is at its limit; the counter keeps the rate."""
        places: list[tuple[str, int | None, str]] = [(reading.cabinet_id, None, name) for name in reading.over_range]
        places += [(reading.cabinet_id, slot.slot, name) for slot in reading.slots for name in slot.over_range]
        for cabinet, slot, name in places:
            key = (cabinet, f"{slot}:{name}:over")
            if key not in self._logged_errors:
                self._logged_errors.add(key)
                where = cabinet if slot is None else f"{cabinet} slot {slot}"
                log.warning("%s: %s is at or past the sensor's valid range; kept as the limit (a live "
                            "sensor at its limit is the worst case, not missing data)", where, name)

    def online(self) -> Mapping[str, bool | None]:
        """Device id → reachable now, over every source."""
        return {device: up for source in self.sources for device, up in source.online().items()}

    def status_line(self, readings_per_s: float) -> str:
        states = self.online()
        online = sum(1 for v in states.values() if v)
        parts = [f"devices online {online}/{len(states)}", f"readings/s {readings_per_s:.0f}",
                 f"rejected values since start {self.field_errors_total}"]
        if self.sink is not None:
            stats = self.sink.stats
            # The sink measures the lag on the monotonic clock: a wall-clock jump must not show an hour of lag.
            lag = "n/a" if stats.write_lag_s is None else f"{stats.write_lag_s:.1f}s"
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
        return web.Response(body=await self.scrape.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health_handler(self, request: web.Request) -> web.Response:
        states = self.online()
        return web.json_response({"devices": len(states), "online": sum(1 for v in states.values() if v)})
