"""HTTPS ingest for devices that post batches of reports, and the downlink they poll.

``POST /v1/telemetry`` with a JSON array of reports (or one report) and four headers:
``X-Cascade-Device`` (the vehicle id), ``X-Cascade-Timestamp`` (ms since the epoch, within ±5 min of
ours), ``X-Cascade-Nonce`` (unique per request within the window) and ``X-Cascade-Signature``
(:func:`.trust.sign` with the device's secret). The reply says, per report, whether it was stored or
why not; good reports in a batch are kept when others are refused.

``GET /v1/commands`` (same headers, empty body signed): the commands waiting for this device, each
handed out once (the command service sends it again if no acknowledgement comes). ``POST /v1/acks``
(same headers, signed body): one acknowledgement or a JSON array of them (:mod:`.commands`), each for
the signing device only, handed to ``on_ack`` (the worker's :class:`~.commands.DownlinkBridge`, which
publishes it for the command service). Every reply carries ``server_time_ms`` (V-4.6: the device
calibrates its clock from it).

Each stored report is also handed to ``relay`` (the worker's :meth:`.mqtt.MqttIngest.relay`), which
publishes it for the vehicle watch of ``cascade run``: the battery and vehicle rules see HTTPS vehicles
as they see MQTT ones (docs/vehicles.md, "Warnings").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from .commands import Ack, Command, CommandWireError, decode_acks
from .ingest import VehicleIngest
from .settings import HttpsSettings
from .trust import NonceCache, freshness, verify
from .wire import WireError, decode_batch

__all__ = ["DOWNLINK", "Downlink", "https_app"]

_HEADERS = ("X-Cascade-Device", "X-Cascade-Timestamp", "X-Cascade-Nonce", "X-Cascade-Signature")


class Downlink:
    """Commands waiting for devices that poll: by id (a retry replaces its earlier copy), at most
    ``per_device`` per device (the oldest dropped first); expired ones are never handed out."""

    def __init__(self, per_device: int = 32, clock: Callable[[], float] = time.time) -> None:
        self.per_device = per_device
        self.clock = clock
        self._queues: dict[str, dict[str, Command]] = {}
        self._puts = 0

    def put(self, device: str, command: Command) -> None:
        queue = self._queues.setdefault(device, {})
        queue.pop(command.id, None)
        queue[command.id] = command
        while len(queue) > self.per_device:
            del queue[next(iter(queue))]
        self._puts += 1
        if self._puts % 1000 == 0:  # devices that never poll (MQTT ones): their commands expire here
            self.prune()

    def prune(self) -> None:
        """Forget every expired command."""
        now_ms = self.clock() * 1000
        for device in list(self._queues):
            live = {k: c for k, c in self._queues[device].items() if c.expires_ms > now_ms}
            if live:
                self._queues[device] = live
            else:
                del self._queues[device]

    def drop(self, device: str, command_id: str) -> None:
        """Forget a command that was acknowledged (through any worker)."""
        queue = self._queues.get(device)
        if queue is not None:
            queue.pop(command_id, None)
            if not queue:
                del self._queues[device]

    def take(self, device: str) -> list[Command]:
        """The device's live commands, oldest first, each handed out once."""
        queue = self._queues.pop(device, None)
        now_ms = self.clock() * 1000
        return [c for c in queue.values() if c.expires_ms > now_ms] if queue else []

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())


DOWNLINK: web.AppKey[Downlink] = web.AppKey("downlink", Downlink)


def https_app(settings: HttpsSettings, ingest: VehicleIngest, *, downlink: Downlink | None = None,
              on_ack: Callable[[str, Ack], bool] | None = None,
              relay: Callable[[str, str, bytes], bool] | None = None,
              clock: Callable[[], float] = time.time) -> web.Application:
    """The aiohttp application (TLS is the site's: ``web.TCPSite(..., ssl_context=...)``).

    ``on_ack(fleet, ack)``: forwards a verified acknowledgement (False: it could not be taken now);
    without it ``POST /v1/acks`` answers 503. ``relay(fleet, vehicle, report)``: called with the bytes of
    every report stored, for the vehicle watch (False: not relayed; the report is stored all the same)."""
    nonces = NonceCache(ingest.window_s)
    downlink = downlink if downlink is not None else Downlink(clock=clock)

    def refuse(status: int, reason: str, detail: str, device: str = "?") -> web.Response:
        ingest.refuse("https", reason, detail, device)
        return web.json_response({"error": reason, "detail": detail, "server_time_ms": int(clock() * 1000)},
                                 status=status)

    async def authenticate(request: web.Request, body: bytes) -> str | web.Response:
        values = [request.headers.get(h, "") for h in _HEADERS]
        missing = [h for h, v in zip(_HEADERS, values) if not v]
        if missing:
            return refuse(400, "bad_request", f"missing header(s): {', '.join(missing)}")
        device, stamp, nonce, signature = values
        known = ingest.devices.get(device)
        if known is None:
            return refuse(401, "unknown_device", f"device {device[:70]!r} is not provisioned", device[:70])
        try:
            ts = int(stamp)
        except ValueError:
            return refuse(400, "bad_request", f"X-Cascade-Timestamp {stamp[:30]!r} is not an integer", device)
        now = clock()
        late = freshness(ts, now, ingest.window_s)
        if late is not None:
            return refuse(401, late, f"request time {ts} ms is {ts / 1000 - now:+.0f} s from ours", device)
        if len(nonce) > 128 or not verify(known.secret, ts, nonce, body, signature):
            return refuse(401, "bad_signature", "X-Cascade-Signature does not match the body", device)
        if nonces.seen(device, nonce, now):
            return refuse(409, "replayed", f"nonce {nonce[:40]!r} was already used", device)
        return device

    async def telemetry(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > settings.max_body_bytes:
            return refuse(413, "too_large", f"body of {request.content_length} bytes; the limit is "
                          f"{settings.max_body_bytes}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return refuse(413, "too_large", f"body larger than {settings.max_body_bytes} bytes")
        who = await authenticate(request, body)
        if isinstance(who, web.Response):
            return who
        if ingest.gate.charge(who, ingest.elapsed()) is not None:  # one token per request, not per report
            return refuse(429, "rate_limited", "the device posts faster than its limit", who)
        items = decode_batch(body) if body.lstrip()[:1] == b"[" else [body]
        if len(items) > settings.max_batch:
            return refuse(413, "too_large", f"{len(items)} reports; a batch holds at most {settings.max_batch}", who)
        results: list[dict[str, Any]] = []
        accepted = 0
        for index, item in enumerate(items):
            if isinstance(item, WireError):
                ingest.refuse("https", item.reason, str(item), who)
                results.append({"index": index, "reason": item.reason, "detail": str(item)})
                continue
            outcome = ingest.accept(item, transport="https", device=who, check_time=False, charge=False)
            if outcome.ok:
                accepted += 1
                if relay is not None and outcome.reading is not None:
                    relay(outcome.reading.fleet, who, item)
                if outcome.fields_rejected:
                    results.append({"index": index, "seq": outcome.seq, "stored": True,
                                    "values_rejected": outcome.fields_rejected})
            else:
                results.append({"index": index, "seq": outcome.seq, "reason": outcome.reason,
                                "detail": outcome.detail})
        status = 200 if accepted or not items else 422
        return web.json_response({"accepted": accepted, "refused": [r for r in results if "reason" in r],
                                  "partial": [r for r in results if "reason" not in r],
                                  "server_time_ms": int(clock() * 1000)}, status=status)

    async def commands(request: web.Request) -> web.Response:
        who = await authenticate(request, b"")
        if isinstance(who, web.Response):
            return who
        return web.json_response({"commands": [msgspec.to_builtins(c) for c in downlink.take(who)],
                                  "server_time_ms": int(clock() * 1000)})

    async def acks(request: web.Request) -> web.Response:
        body = await request.read()
        who = await authenticate(request, body)
        if isinstance(who, web.Response):
            return who
        if on_ack is None:
            return web.json_response({"error": "unavailable", "detail": "this worker has no broker connection to "
                                      "forward acknowledgements; post again later",
                                      "server_time_ms": int(clock() * 1000)}, status=503)
        try:
            items = decode_acks(body)
        except CommandWireError as err:
            return web.json_response({"error": err.reason, "detail": str(err), "server_time_ms": int(clock() * 1000)},
                                     status=413 if err.reason == "too_large" else 400)
        device = ingest.devices.get(who)
        assert device is not None  # authenticated above
        accepted, refused = 0, []
        for index, ack in enumerate(items):
            if ack.vehicle != who:
                refused.append({"index": index, "id": ack.id, "reason": "wrong_device",
                                "detail": f"acknowledgement names vehicle {ack.vehicle!r}, sent by {who!r}"})
            elif not on_ack(device.fleet, ack):
                refused.append({"index": index, "id": ack.id, "reason": "busy", "detail": "post it again later"})
            else:
                downlink.drop(who, ack.id)
                accepted += 1
        status = 200 if accepted or not items else 422
        return web.json_response({"accepted": accepted, "refused": refused, "server_time_ms": int(clock() * 1000)},
                                 status=status)

    app = web.Application(client_max_size=settings.max_body_bytes)
    app.router.add_post("/v1/telemetry", telemetry)
    app.router.add_get("/v1/commands", commands)
    app.router.add_post("/v1/acks", acks)
    app[DOWNLINK] = downlink
    return app
