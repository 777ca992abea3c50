"""MQTT ingest: one worker's share of the vehicles' stream (MQTT 5 shared subscription, QoS 1).

Topic tree (docs/vehicles.md): ``cascade/v1/<fleet>/<vehicle>/<kind>`` with ``kind`` one of
``telemetry`` (device → platform, QoS 1), ``event`` (device → platform), ``cmd`` (platform → device,
downlink), ``ack`` (device → platform, command acknowledgements) and ``reject`` (platform → device:
why a report was refused, or a time calibration for a stored report whose clock is off; both carry the
platform's clock, V-4.6). The broker's ACL lets a
device publish only under its own id (``%u``); the worker checks the report names the same id.

Workers subscribe to ``$share/<group>/cascade/v1/+/+/telemetry``: the broker gives each message to
one worker of the group.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence

import aiomqtt
import msgspec

from core.model import CabinetReading, VehicleReading

from .functions import CALIBRATE_AFTER_S
from .ingest import VehicleIngest
from .settings import MqttSettings

__all__ = ["TOPIC_ROOT", "MqttIngest", "shared_subscription", "topic"]

log = logging.getLogger("cascade.vehicles.mqtt")

TOPIC_ROOT = "cascade/v1"
KINDS = ("telemetry", "event", "cmd", "ack", "reject")
_REJECT_EVERY_S = 5.0  # at most one rejection event per device this often (no amplification)
_QUIET = frozenset({"rate_limited", "duplicate"})  # refusals not answered (a flood or a redelivery)


def topic(fleet: str, vehicle: str, kind: str = "telemetry") -> str:
    return f"{TOPIC_ROOT}/{fleet}/{vehicle}/{kind}"


def shared_subscription(group: str, kind: str = "telemetry") -> str:
    return f"$share/{group}/{TOPIC_ROOT}/+/+/{kind}"


class MqttIngest:
    """Consumes the shared subscription until cancelled; reconnects with back-off.

    ``subscriptions``: topic filters instead of the group's shared subscription (the warning watch
    takes every report of its fleets); ``answer``: publish rejection events and time calibrations (the
    ingest workers do; a watch stays silent); ``on_accepted``: awaited with every accepted reading;
    ``calibrate_after_s``: a stored report whose time is further than this from ours gets a
    ``clock_skew`` calibration on the ``reject`` topic (at most one per vehicle per 5 s);
    ``on_clock_refused``: awaited with (fleet, vehicle, report time ms) for a report of a known device
    refused as ``stale`` or ``future`` (the watch turns it into a clock-skew reading).
    """

    def __init__(self, settings: MqttSettings, ingest: VehicleIngest, *, client_id: str,
                 clock: Callable[[], float] = time.time, subscriptions: Sequence[str] | None = None,
                 answer: bool = True,
                 on_accepted: Callable[[VehicleReading | CabinetReading], Awaitable[None]] | None = None,
                 calibrate_after_s: float = CALIBRATE_AFTER_S,
                 on_clock_refused: Callable[[str, str, int], Awaitable[None]] | None = None) -> None:
        self.settings = settings
        self.ingest = ingest
        self.client_id = client_id
        self.clock = clock
        self.subscriptions = list(subscriptions) if subscriptions else [
            shared_subscription(settings.group), shared_subscription(settings.group, "packs")]
        self.answer = answer
        self.on_accepted = on_accepted
        self.calibrate_after_ns = int(calibrate_after_s * 1e9)
        self.on_clock_refused = on_clock_refused
        self.connected = asyncio.Event()
        self.received = 0
        self._answered: dict[str, float] = {}
        self._encoder = msgspec.json.Encoder()

    def _tls(self) -> ssl.SSLContext | None:
        if not self.settings.tls_ca:
            return None
        return ssl.create_default_context(cafile=self.settings.tls_ca)

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError as err:
                self.connected.clear()
                log.warning("MQTT %s:%s: %s; reconnecting in %.1f s", self.settings.host, self.settings.port,
                            err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            else:
                delay = 0.5

    async def _session(self) -> None:
        s = self.settings
        async with aiomqtt.Client(
                s.host, s.port, username=s.username or None, password=s.password or None,
                identifier=self.client_id, protocol=aiomqtt.ProtocolVersion.V5, keepalive=s.keepalive_s,
                # Unbounded: the client acknowledges QoS 1 on receipt, so a bounded queue would drop messages
                # already acknowledged under a burst; `accept` is fast (tens of µs) and drains it.
                tls_context=self._tls(), max_queued_incoming_messages=0) as client:
            for subscription in self.subscriptions:
                await client.subscribe(subscription, qos=1)
            self.connected.set()
            log.info("MQTT %s subscribed to %s on %s:%s", self.client_id, ", ".join(self.subscriptions),
                     s.host, s.port)
            async for message in client.messages:
                self.received += 1
                await self._handle(client, message)

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        parts = message.topic.value.split("/")
        payload = message.payload
        data = payload if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
        if len(parts) != 5 or parts[4] not in ("telemetry", "packs"):
            self.ingest.refuse("mqtt", "wrong_topic", f"topic {message.topic.value[:120]!r}")
            return
        fleet, vehicle = parts[2], parts[3]
        if parts[4] == "packs":  # a BLE gateway's report (collectors/ble)
            outcome = self.ingest.accept_packs(bytes(data), transport="mqtt", device=vehicle, fleet=fleet)
        else:
            outcome = self.ingest.accept(bytes(data), transport="mqtt", device=vehicle, fleet=fleet)
        if outcome.ok and self.on_accepted is not None:
            accepted = outcome.reading if outcome.reading is not None else outcome.packs
            if accepted is not None:
                await self.on_accepted(accepted)
        elif outcome.report_ts_ms is not None and self.on_clock_refused is not None:
            await self.on_clock_refused(fleet, vehicle, outcome.report_ts_ms)
        if not self.answer:
            return
        reading = outcome.reading
        if outcome.ok:
            if reading is None or abs(reading.timestamp_ns - reading.received_ns) <= self.calibrate_after_ns:
                return
        elif outcome.reason in _QUIET:
            return
        tick = time.monotonic()  # the throttle is a duration; server_time_ms is the wall clock
        last = self._answered.get(vehicle)
        if last is not None and tick - last < _REJECT_EVERY_S:
            return
        if len(self._answered) > 100_000:
            self._answered.clear()
        self._answered[vehicle] = tick
        if reading is not None:  # stored, but the device's clock is off: tell it ours (V-4.6)
            server_ms, report_ms = reading.received_ns // 1_000_000, reading.timestamp_ns // 1_000_000
            event = {"seq": outcome.seq, "reason": "clock_skew", "stored": True,
                     "detail": f"report time is {(report_ms - server_ms) / 1000:+.1f} s from the platform's clock; "
                               "set yours", "server_time_ms": server_ms, "report_ts": report_ms,
                     "skew_ms": report_ms - server_ms}
        else:
            event = {"seq": outcome.seq, "reason": outcome.reason, "detail": outcome.detail,
                     "server_time_ms": int(self.clock() * 1000)}
        try:
            await client.publish(topic(fleet, vehicle, "reject"), self._encoder.encode(event), qos=0)
        except aiomqtt.MqttError as err:
            log.debug("rejection event for %s not sent: %s", vehicle, err)
