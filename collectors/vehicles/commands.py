"""Remote vehicle commands on the wire (V-5.4, D-5.1.5.1): what the platform sends, what the device answers.

A command is one JSON object, published QoS 1 on ``cascade/v1/<fleet>/<vehicle>/cmd`` (MQTT devices) or
handed out by ``GET /v1/commands`` (HTTPS devices that poll); the device answers with an acknowledgement
on ``cascade/v1/<fleet>/<vehicle>/ack`` or ``POST /v1/acks`` (signed like telemetry), carrying its state
after the command (the read-back)::

    {"v": 1, "id": "c-6f1e…", "vehicle": "V000001", "command": "motor_lock", "issued_ms": 1764990000000,
     "expires_ms": 1764990120000, "attempt": 1}
    {"v": 1, "id": "c-6f1e…", "vehicle": "V000001", "result": "ok", "ts": 1764990000850,
     "state": {"power": true, "locked": true, "armed": false}}

A device carries out a command once per ``id`` (a retry or a second delivery through another worker is
answered with the same acknowledgement) and refuses one past ``expires_ms`` (``result: rejected``).

:class:`DownlinkBridge` runs beside the HTTPS listener of an ingest worker: it fills the worker's
:class:`~.https.Downlink` from the ``cmd`` topics (every worker holds every command, since a device may poll
any of them), drops a command from it once any worker or the device itself acknowledged it, and
publishes the acknowledgements HTTPS devices post, so the command service (``cascade run``) hears every
acknowledgement on one MQTT subscription whatever the device's transport.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, Protocol

import aiomqtt
import msgspec

from core.tasks import cancel_and_wait

from .mqtt import TOPIC_ROOT, topic
from .settings import MqttSettings

__all__ = ["COMMANDS", "EXPECTED_STATE", "exchange", "keep_connected", "publish_outbox", "MAX_ACK_BYTES", "Ack", "Command", "CommandWireError", "DeviceState",
           "DownlinkBridge", "decode_ack", "decode_acks", "decode_command", "encode", "keep_connected",
           "mqtt_client"]

log = logging.getLogger("cascade.vehicles.commands")

COMMANDS = ("power_on", "power_off", "motor_lock", "motor_unlock", "arm", "disarm")
"""Every command a vehicle takes (V-5.4, V-5.5): nothing else is ever sent."""

EXPECTED_STATE: dict[str, tuple[str, bool]] = {
    "power_on": ("power", True), "power_off": ("power", False),
    "motor_lock": ("locked", True), "motor_unlock": ("locked", False),
    "arm": ("armed", True), "disarm": ("armed", False),
}
"""The state key a command sets and the value the device must read back for it to count as done."""

MAX_ACK_BYTES = 4096


class CommandWireError(ValueError):
    """A command or acknowledgement that is not one: ``reason`` is short (a label), the text says where."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class DeviceState(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the device reports of itself after a command (``None``: it does not know or has no such part)."""

    power: bool | None = None
    locked: bool | None = None
    armed: bool | None = None

    def get(self, key: str) -> bool | None:
        value: bool | None = getattr(self, key)
        return value


class Command(msgspec.Struct, frozen=True):
    """Platform → device: one command, its id, when it was issued and when it expires (ms since 1970)."""

    id: str
    vehicle: str
    command: Literal["power_on", "power_off", "motor_lock", "motor_unlock", "arm", "disarm"]
    issued_ms: int
    expires_ms: int
    attempt: int = 1
    v: Literal[1] = 1


class Ack(msgspec.Struct, frozen=True, omit_defaults=True):
    """Device → platform: the outcome of command ``id`` and the device's state after it."""

    id: str
    vehicle: str
    result: Literal["ok", "failed", "rejected"]
    ts: int
    state: DeviceState | None = None
    detail: str = ""
    v: Literal[1] = 1


_encoder = msgspec.json.Encoder()
_command_decoder = msgspec.json.Decoder(Command)
_ack_decoder = msgspec.json.Decoder(Ack)
_acks_decoder = msgspec.json.Decoder(list[Ack])


def encode(message: Command | Ack) -> bytes:
    return _encoder.encode(message)


def decode_command(data: bytes) -> Command:
    """A command as a device reads it; :class:`CommandWireError` when it is not one."""
    try:
        return _command_decoder.decode(data)
    except msgspec.ValidationError as err:
        raise CommandWireError("schema", str(err)) from None
    except msgspec.DecodeError as err:
        raise CommandWireError("not_json", str(err)) from None


def decode_ack(data: bytes) -> Ack:
    """One acknowledgement (at most :data:`MAX_ACK_BYTES`); :class:`CommandWireError` when it is not one."""
    if len(data) > MAX_ACK_BYTES:
        raise CommandWireError("too_large", f"{len(data)} bytes; an acknowledgement is at most {MAX_ACK_BYTES}")
    try:
        return _ack_decoder.decode(data)
    except msgspec.ValidationError as err:
        raise CommandWireError("schema", str(err)) from None
    except msgspec.DecodeError as err:
        raise CommandWireError("not_json", str(err)) from None


def decode_acks(data: bytes, *, limit: int = 100) -> list[Ack]:
    """``POST /v1/acks``: one acknowledgement or a JSON array of at most ``limit``."""
    if data.lstrip()[:1] != b"[":
        return [decode_ack(data)]
    if len(data) > MAX_ACK_BYTES * limit:
        raise CommandWireError("too_large", f"{len(data)} bytes of acknowledgements; at most {limit} in a request")
    try:
        acks = _acks_decoder.decode(data)
    except msgspec.ValidationError as err:
        raise CommandWireError("schema", str(err)) from None
    except msgspec.DecodeError as err:
        raise CommandWireError("not_json", str(err)) from None
    if len(acks) > limit:
        raise CommandWireError("too_large", f"{len(acks)} acknowledgements; at most {limit} in a request")
    return acks


class _Downlink(Protocol):
    """What the bridge needs of :class:`~.https.Downlink`."""

    def put(self, device: str, command: Command) -> None: ...

    def drop(self, device: str, command_id: str) -> None: ...


class DownlinkBridge:
    """One ingest worker's link between the broker and its HTTPS downlink (see the module docstring).

    ``downlink`` is the worker's :class:`~.https.Downlink`; ``publish_ack`` (set by :meth:`run` while
    connected) is what the HTTPS ``POST /v1/acks`` handler calls with each acknowledgement it verified.
    """

    def __init__(self, settings: MqttSettings, downlink: _Downlink, *, client_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.downlink = downlink
        self.client_id = client_id
        self.clock = clock
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(10_000)

    def publish_ack(self, fleet: str, ack: Ack) -> bool:
        """Queue an HTTPS device's acknowledgement for the broker; False when the queue is full."""
        try:
            self._outbox.put_nowait((topic(fleet, ack.vehicle, "ack"), encode(ack)))
        except asyncio.QueueFull:
            log.warning("acknowledgement %s of %s dropped: the broker is not keeping up", ack.id, ack.vehicle)
            return False
        return True

    async def run(self) -> None:
        await keep_connected(self._session, self.connected, self.settings, f"downlink bridge {self.client_id}")

    async def _session(self) -> None:
        async with mqtt_client(self.settings, self.client_id) as client:
            await client.subscribe(f"{TOPIC_ROOT}/+/+/cmd", qos=1)
            await client.subscribe(f"{TOPIC_ROOT}/+/+/ack", qos=1)
            self.connected.set()
            await exchange(client, lambda c: publish_outbox(c, self._outbox), self._handle, name="downlink-acks")

    def _handle(self, where: str, payload: object) -> None:
        parts = where.split("/")
        data = payload if isinstance(payload, bytes) else str(payload or "").encode()
        if len(parts) != 5:
            return
        vehicle, kind = parts[3], parts[4]
        try:
            if kind == "cmd":
                command = decode_command(data)
                if command.vehicle == vehicle and command.expires_ms > self.clock() * 1000:
                    self.downlink.put(vehicle, command)
            elif kind == "ack":
                self.downlink.drop(vehicle, decode_ack(data).id)
        except CommandWireError as err:
            log.debug("downlink bridge: ignored %s on %s: %s", kind, where, err)


def mqtt_client(settings: MqttSettings, identifier: str) -> aiomqtt.Client:
    """The platform's MQTT 5 client for ``settings`` (TLS when it names a CA), not yet connected."""
    tls = ssl.create_default_context(cafile=settings.tls_ca) if settings.tls_ca else None
    return aiomqtt.Client(settings.host, settings.port, username=settings.username or None,
                          password=settings.password or None, identifier=identifier,
                          protocol=aiomqtt.ProtocolVersion.V5, keepalive=settings.keepalive_s, tls_context=tls)


async def publish_outbox(client: aiomqtt.Client, outbox: asyncio.Queue[tuple[str, bytes]]) -> None:
    """Publish what is queued (topic, payload) at QoS 1, in the order queued, for as long as the MQTT session
    lasts. A message whose publish fails or is interrupted (the session ends) goes back in the queue, at
    its end, to be sent after reconnecting (receivers de-duplicate by id); the failure is raised, and
    :func:`exchange` ends the session on it."""
    while True:
        where, payload = await outbox.get()
        try:
            await client.publish(where, payload, qos=1)
        except (aiomqtt.MqttError, asyncio.CancelledError):
            outbox.put_nowait((where, payload))
            raise


async def exchange(client: aiomqtt.Client, send: Callable[[aiomqtt.Client], Coroutine[Any, Any, None]],
                   handle: Callable[[str, bytes], None], *, name: str) -> None:
    """One MQTT session's traffic: ``send(client)`` publishes (an outbox loop, e.g. :func:`publish_outbox`)
    while every message received goes to ``handle(topic, payload)``. Either side's MQTT error ends the
    session (raised, so :func:`keep_connected` or the caller's loop reconnects): a publish that fails on a
    link that still receives must not leave the outbox stalled until the link happens to drop."""
    async def receive() -> None:
        async for message in client.messages:
            payload = message.payload
            handle(message.topic.value, bytes(payload) if isinstance(payload, bytes | bytearray)
                   else str(payload or "").encode())

    sender = asyncio.create_task(send(client), name=f"{name}-publish")
    receiver = asyncio.create_task(receive(), name=f"{name}-receive")
    try:
        done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # the error that ended the session; the receiver may also end quietly (disconnected)
    finally:
        await cancel_and_wait([sender, receiver])


async def keep_connected(session: Callable[[], Awaitable[None]], connected: asyncio.Event, settings: MqttSettings,
                         what: str) -> None:
    """Run ``session`` for ever: after an MQTT failure, again after a capped, doubling delay, which starts
    afresh once a session got connected (``connected`` set), so a long-lived link that drops comes back fast."""
    delay = 0.5
    while True:
        try:
            await session()
        except aiomqtt.MqttError as err:
            if connected.is_set():
                delay = 0.5
            connected.clear()
            log.warning("%s: MQTT %s:%s: %s; reconnecting in %.1f s", what, settings.host, settings.port, err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
