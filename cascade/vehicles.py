"""Vehicle ingest, wired: device provisioning, the broker's files, and one ingest worker.

    cascade devices provision --count 300 --fleet bj --out var/devices   # devices.json, passwd, acl
    cascade ingest --config config/local.yaml --worker 1                 # one worker of the group

A worker holds an MQTT shared subscription, an HTTPS listener, an InfluxDB sink (its own spool
directory) and a Prometheus /metrics endpoint; N workers share the stream (docs/vehicles.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import ssl
import subprocess
from dataclasses import replace
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from collectors.vehicles.commands import DownlinkBridge
from collectors.vehicles.https import Downlink, https_app
from collectors.vehicles.ingest import IngestMetrics, VehicleIngest
from collectors.vehicles.mqtt import MqttIngest
from collectors.vehicles.settings import VehicleSettings
from collectors.vehicles.trust import DeviceRegistry, Gate
from core.errors import CascadeError
from core.tasks import cancel_and_wait
from exporters.influx.sink import InfluxConfig, InfluxSink

__all__ = ["ACL", "IngestWorker", "mosquitto_conf", "provision"]

log = logging.getLogger("cascade.ingest")

INGEST_USER = "ingest"

ACL = """\
# Mosquitto ACL for Cascade (written by `cascade devices provision`; docs/vehicles.md).
# The ingest workers and the command service read every report and answer on reject / cmd. Commands
# and acknowledgements also pass between them: a worker hands commands to the HTTPS devices that poll
# it and publishes the acknowledgements they post (docs/vehicles.md, "Commands").
user ingest
topic read cascade/v1/+/+/telemetry
# Reports a worker accepted over HTTPS, relayed for the vehicle watch of `cascade run` (docs/vehicles.md,
# "Warnings"): no device may publish or read them.
topic readwrite cascade/v1/+/+/https
topic read cascade/v1/+/+/event
topic readwrite cascade/v1/+/+/ack
topic read cascade/v1/+/+/packs
topic write cascade/v1/+/+/reject
topic readwrite cascade/v1/+/+/cmd
topic read cascade/v1/+/+/result

# A device (its broker user is its id: a vehicle, or a BLE gateway publishing `packs` and answering its
# MOSFET commands on `result`) publishes only under its own id and reads only its own downlink.
pattern write cascade/v1/+/%u/telemetry
pattern write cascade/v1/+/%u/event
pattern write cascade/v1/+/%u/ack
pattern write cascade/v1/+/%u/packs
pattern write cascade/v1/+/%u/result
pattern read cascade/v1/+/%u/cmd
pattern read cascade/v1/+/%u/reject
"""


def provision(out: str | Path, *, count: int, fleet: str, prefix: str = "V", ingest_password: str | None = None,
              mosquitto_passwd: str | None = None) -> dict[str, Path]:
    """Write ``devices.json`` (ids, fleet, secrets), Mosquitto's ``passwd`` (hashed) and ``acl`` and the
    ingest user's password (``ingest.password``) into ``out``; keep devices already there (same
    secrets), add the missing ones. Returns the paths by name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    devices_path = out / "devices.json"
    existing: dict[str, dict[str, str]] = {}
    if devices_path.exists():
        existing = {d["id"]: d for d in json.loads(devices_path.read_text(encoding="utf-8"))["devices"]}
    for n in range(1, count + 1):
        device_id = f"{prefix}{n:06d}"
        existing.setdefault(device_id, {"id": device_id, "fleet": fleet, "secret": secrets.token_hex(16)})
    _write_private(devices_path, json.dumps({"devices": list(existing.values())}, indent=1) + "\n")
    password_path = out / "ingest.password"
    if ingest_password is None:
        ingest_password = (password_path.read_text(encoding="utf-8").strip() if password_path.exists()
                           else secrets.token_hex(16))
    _write_private(password_path, ingest_password + "\n")
    passwd = out / "passwd"
    lines = [f"{INGEST_USER}:{ingest_password}"] + [f"{d['id']}:{d['secret']}" for d in existing.values()]
    _write_private(passwd, "\n".join(lines) + "\n")
    tool = mosquitto_passwd or shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    try:
        subprocess.run([tool, "-U", str(passwd)], check=True, capture_output=True, timeout=600)
    except (OSError, subprocess.CalledProcessError) as err:
        passwd.unlink(missing_ok=True)  # never leave plain-text passwords behind
        raise CascadeError(f"could not be hashed with {tool}: {err}", source=passwd,
                           fix="install the Debian package mosquitto (make deps)") from None
    acl = out / "acl"
    _write_private(acl, ACL)
    return {"devices": devices_path, "passwd": passwd, "acl": acl, "ingest_password": password_path}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def mosquitto_conf(*, port: int, passwd: Path, acl: Path, host: str = "127.0.0.1", tls_port: int | None = None,
                   cafile: Path | None = None, certfile: Path | None = None, keyfile: Path | None = None) -> str:
    """A Mosquitto 2 configuration: authenticated listeners only (plain on ``port``, TLS on ``tls_port``)."""
    import getpass

    text = [
        "# Written by Cascade (docs/vehicles.md): devices authenticate; the ACL confines each to its own id.",
        # Started as root, Mosquitto would switch to user `mosquitto`, who cannot read these files.
        f"user {getpass.getuser()}",
        "per_listener_settings false", "allow_anonymous false", f"password_file {passwd}", f"acl_file {acl}",
        # A worker that falls behind must find its messages queued, not dropped: a deep queue per client
        # (bounded in bytes). The worker acknowledges a message once it is handled, so the in-flight
        # window is also the most one worker holds unacknowledged (collectors/vehicles/mqtt.py).
        "persistence false", "max_inflight_messages 100", "max_queued_messages 1000000",
        "max_queued_bytes 1073741824",
        f"listener {port} {host}",
    ]
    if tls_port is not None:
        text += [f"listener {tls_port} {host}", f"cafile {cafile}", f"certfile {certfile}", f"keyfile {keyfile}",
                 "tls_version tlsv1.2"]
    return "\n".join(text) + "\n"


class IngestWorker:
    """One ingest worker: MQTT shared subscription, HTTPS listener, sink, /metrics. ``worker`` counts
    from 1; worker N listens on the configured ports + N - 1 and spools under ``<spool_dir>/ingest-N``."""

    def __init__(self, settings: VehicleSettings, influx: InfluxConfig | None, *, worker: int = 1,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.worker = worker
        self.registry = registry or CollectorRegistry()
        self.devices = DeviceRegistry.load(settings.devices)
        self.influx = None if influx is None else replace(
            influx, spool_dir=str(Path(influx.spool_dir) / f"ingest-{worker}"))
        self.sink: InfluxSink | None = None
        self.ingest = VehicleIngest(self.devices, sink=None, metrics=IngestMetrics(self.registry),
                                    gate=Gate(rate_per_s=settings.rate_per_s, burst=settings.burst),
                                    window_s=settings.replay_window_s)
        self.mqtt: MqttIngest | None = None
        self.downlink = Downlink()
        self.bridge: DownlinkBridge | None = None  # commands for HTTPS devices, their acknowledgements
        self.https_port: int | None = None
        self.metrics_port: int | None = None
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> IngestWorker:
        try:
            if self.influx is not None:
                self.sink = await self._stack.enter_async_context(InfluxSink(self.influx, registry=self.registry))
                self.ingest.sink = self.sink
            offset = self.worker - 1
            if self.settings.mqtt is not None:  # built first: the HTTPS listener relays through its client
                self.mqtt = MqttIngest(self.settings.mqtt, self.ingest, client_id=f"cascade-ingest-{self.worker}",
                                       calibrate_after_s=self.settings.functions.calibrate_after_s)
            metrics = web.Application()
            metrics.router.add_get("/metrics", self._metrics)
            self.metrics_port = await self._serve(metrics, "127.0.0.1", _port(self.settings.metrics_port, offset))
            https = self.settings.https
            if https is not None:
                tls = None
                if https.cert:
                    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                    tls.load_cert_chain(https.cert, https.key or None)
                if self.settings.mqtt is not None:
                    self.bridge = DownlinkBridge(self.settings.mqtt, self.downlink,
                                                 client_id=f"cascade-ingest-{self.worker}-downlink")
                    self._tasks.append(asyncio.create_task(self.bridge.run(), name="downlink-bridge"))
                app = https_app(https, self.ingest, downlink=self.downlink,
                                on_ack=None if self.bridge is None else self.bridge.publish_ack,
                                relay=None if self.mqtt is None else self.mqtt.relay)
                self.https_port = await self._serve(app, https.host, _port(https.port, offset), tls)
            if self.mqtt is not None:
                self._tasks.append(asyncio.create_task(self.mqtt.run(), name="mqtt-ingest"))
            self._tasks.append(asyncio.create_task(self._gauges(), name="ingest-gauges"))
        except BaseException:
            await self.__aexit__()
            raise
        log.info("ingest worker %d: %d devices; MQTT %s; HTTPS %s; metrics on :%s", self.worker, len(self.devices),
                 "on" if self.mqtt else "off", self.https_port or "off", self.metrics_port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._tasks)
        await self._stack.aclose()  # listeners first, then the sink flushes

    async def _serve(self, app: web.Application, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        await site.start()
        return int(runner.addresses[-1][1])

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _gauges(self) -> None:
        while True:
            self.ingest.update_gauges()
            await asyncio.sleep(5)


def _port(base: int, offset: int) -> int:
    return 0 if base == 0 else base + offset
