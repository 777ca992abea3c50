"""MQTT ingest: one worker's share of the vehicles' stream (shared subscription, QoS 1).

Topic tree (docs/vehicles.md): ``cascade/v1/<fleet>/<vehicle>/<kind>`` with ``kind`` one of
``telemetry`` (device → platform, QoS 1), ``event`` (device → platform), ``cmd`` (platform → device,
downlink), ``ack`` (device → platform, command acknowledgements) and ``reject`` (platform → device:
why a report was refused, or a time calibration for a stored report whose clock is off; both carry the
platform's clock, V-4.6). The broker's ACL lets a
device publish only under its own id (``%u``); the worker checks the report names the same id.

Workers subscribe to ``$share/<group>/cascade/v1/+/+/telemetry``: the broker gives each message to
one worker of the group.

A report a worker accepted over HTTPS is relayed on ``cascade/v1/<fleet>/<vehicle>/https`` (QoS 1,
:meth:`MqttIngest.relay`) for the vehicle watch of ``cascade run`` (docs/vehicles.md, "Warnings"): only the
broker user of the workers may publish there (the ACL), so the watch takes those reports as authenticated
already and, as the HTTPS listener did, without the replay window on their time (a device posts what it
buffered offline); its sequence de-duplication drops a report relayed twice (a retried post that reached
two workers), so the engine sees each report once.

The consumer is lean on purpose (docs/scaling.md): paho-mqtt's own network thread reads the socket and
appends each message to an inbox; the event loop is woken once per batch (``call_soon_threadsafe``), not
once per message, and handles the batch in one go. Acknowledgements are manual: a message is
acknowledged (PUBACK) only after it was handled (stored: handed to the sink; or refused), so a worker
that dies holding messages has acknowledged none of them, and the broker hands them out again when the
worker's session resumes (``session=True``: a persistent session under a fixed client id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from core.model import CabinetReading, VehicleReading

from .functions import CALIBRATE_AFTER_S
from .ingest import Outcome, VehicleIngest
from .settings import MqttSettings

__all__ = ["RELAYED", "TOPIC_ROOT", "MqttIngest", "shared_subscription", "topic"]

log = logging.getLogger("cascade.vehicles.mqtt")

TOPIC_ROOT = "cascade/v1"
KINDS = ("telemetry", "event", "cmd", "ack", "reject", "https")
RELAYED = "https"  # the kind of topic a worker relays the reports it accepted over HTTPS on
_RELAY_QUEUE = 100_000  # relayed reports paho holds while the broker is away (then they are dropped)
_REJECT_EVERY_S = 5.0  # at most one rejection event per device this often (no amplification)
_QUIET = frozenset({"rate_limited", "duplicate"})  # refusals not answered (a flood or a redelivery)
_DRAIN_QUIET_S = 0.1  # at a graceful stop: messages still arriving after the unsubscription are handled
_DRAIN_MAX_S = 5.0
_CHUNK = 500  # messages handled between two turns of the event loop (~25 ms of work)
# MQTT 3.1.1 for the worker's own connection: Mosquitto and EMQX give `$share/` subscriptions to 3.1.1
# clients too, the worker uses no MQTT 5 feature, and paho parses a 3.1.1 PUBLISH without properties
# (measured: ~30 % less client CPU per report). Devices keep MQTT 5.
_PROTOCOL = paho.MQTTv311


def topic(fleet: str, vehicle: str, kind: str = "telemetry") -> str:
    return f"{TOPIC_ROOT}/{fleet}/{vehicle}/{kind}"


def shared_subscription(group: str, kind: str = "telemetry") -> str:
    return f"$share/{group}/{TOPIC_ROOT}/+/+/{kind}"


class MqttIngest:
    """Consumes the shared subscription until cancelled; paho reconnects with back-off.

    ``subscriptions``: topic filters instead of the group's shared subscription (the warning watch
    takes every report of its fleets); ``answer``: publish rejection events and time calibrations (the
    ingest workers do; a watch stays silent); ``on_accepted``: awaited with every accepted reading;
    ``calibrate_after_s``: a stored report whose time is further than this from ours gets a
    ``clock_skew`` calibration on the ``reject`` topic (at most one per vehicle per 5 s);
    ``on_clock_refused``: awaited with (fleet, vehicle, report time ms) for a report of a known device
    refused as ``stale`` or ``future`` (the watch turns it into a clock-skew reading);
    ``session``: a persistent broker session under ``client_id`` (the workers: messages the worker
    held unacknowledged when it died are redelivered when it comes back); False for a client whose id
    changes each run (the watch), whose session must end with it.

        mqtt = MqttIngest(settings, ingest, client_id="cascade-ingest-1")
        task = asyncio.create_task(mqtt.run())   # cancel it to stop: the batch in hand is finished first
    """

    def __init__(self, settings: MqttSettings, ingest: VehicleIngest, *, client_id: str,
                 clock: Callable[[], float] = time.time, subscriptions: Sequence[str] | None = None,
                 answer: bool = True,
                 on_accepted: Callable[[VehicleReading | CabinetReading], Awaitable[None]] | None = None,
                 calibrate_after_s: float = CALIBRATE_AFTER_S,
                 on_clock_refused: Callable[[str, str, int], Awaitable[None]] | None = None,
                 session: bool = True) -> None:
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
        self.session = session
        self.connected = asyncio.Event()
        self.received = 0  # messages handled (and acknowledged)
        self.batches = 0  # event-loop wake-ups that handled them
        self._answered: dict[str, float] = {}
        self._encoder = msgspec.json.Encoder()
        # Filled by paho's network thread, emptied by the event loop: one lock, one wake-up per batch.
        self._inbox: list[paho.MQTTMessage] = []
        self._lock = threading.Lock()
        self._scheduled = False
        self._ready = asyncio.Event()
        self._unsubscribed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._subscribed = False
        self._last_rc = ""

    # -- lifecycle (event loop) ------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = self._client = self._build()
        s = self.settings
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        client.loop_start()
        try:
            while True:
                await self._ready.wait()
                await self._handle_batch(client)
        finally:
            await self._stop(client)

    def _build(self) -> paho.Client:
        s = self.settings
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=not self.session, protocol=_PROTOCOL, manual_ack=True)
        if s.username:
            client.username_pw_set(s.username, s.password or None)
        if s.tls_ca:
            client.tls_set_context(ssl.create_default_context(cafile=s.tls_ca))
        client.reconnect_delay_set(1, 30)
        client.max_queued_messages_set(_RELAY_QUEUE)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        return client

    async def _stop(self, client: paho.Client) -> None:
        """Stop taking messages, finish and acknowledge what arrived, end the connection.

        A persistent session that kept its subscription would go on taking its share of the stream
        while nobody reads it: unsubscribe first, so a worker stopped on purpose leaves no backlog."""
        try:
            if self._subscribed and client.is_connected():
                self._unsubscribed.clear()
                client.unsubscribe(self.subscriptions)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_DRAIN_MAX_S):
                        await self._unsubscribed.wait()
                        quiet_since = time.monotonic()
                        while time.monotonic() - quiet_since < _DRAIN_QUIET_S:
                            await asyncio.sleep(_DRAIN_QUIET_S / 4)
                            if self._inbox:
                                await self._handle_batch(client)
                                quiet_since = time.monotonic()
            if self._inbox:
                await self._handle_batch(client)
        finally:
            self._client = None  # a disconnection from here on is ours: not logged as lost
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
            self.connected.clear()

    # -- paho's network thread ------------------------------------------------------------------
    # These run in paho's thread: they touch the inbox under its lock and reach the loop only through
    # call_soon_threadsafe.

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._log_change(f"MQTT {self.client_id}: {self.settings.host}:{self.settings.port} refused the "
                             f"connection ({reason}); retrying")
            return
        client.subscribe([(subscription, 1) for subscription in self.subscriptions])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("MQTT %s: the broker refused the subscription to %s (%s): check the ingest user's ACL",
                      self.client_id, ", ".join(self.subscriptions), ", ".join(failed))
            return
        self._subscribed = True
        self._last_rc = ""
        log.info("MQTT %s subscribed to %s on %s:%s", self.client_id, ", ".join(self.subscriptions),
                 self.settings.host, self.settings.port)
        self._call(self.connected.set)

    def _on_unsubscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        self._subscribed = False
        self._call(self._unsubscribed.set)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._subscribed = False
        self._call(self.connected.clear)
        if self._client is not None:
            self._log_change(f"MQTT {self.client_id}: connection to {self.settings.host}:{self.settings.port} "
                             f"lost ({reason}); reconnecting")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self._inbox.append(message)
            if self._scheduled:
                return
            self._scheduled = True
        self._call(self._ready.set)

    def _call(self, callback: Callable[[], object]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is shutting down
                loop.call_soon_threadsafe(callback)

    def _log_change(self, text: str) -> None:
        """Log a connection problem once until it changes (paho retries every few seconds)."""
        if text != self._last_rc:
            self._last_rc = text
            log.warning("%s", text)

    # -- the event loop's side ------------------------------------------------------------------

    async def _handle_batch(self, client: paho.Client) -> None:
        with self._lock:
            batch, self._inbox = self._inbox, []
            self._scheduled = False
            self._ready.clear()
        for start in range(0, len(batch), _CHUNK):
            if start:
                await asyncio.sleep(0)  # a long backlog: let the HTTPS listener and /metrics in between
            await self._handle_chunk(client, batch[start:start + _CHUNK])
        self.batches += 1

    async def _handle_chunk(self, client: paho.Client, chunk: list[paho.MQTTMessage]) -> None:
        handle, callbacks = self._handle, self.on_accepted is not None or self.on_clock_refused is not None
        done = 0
        try:
            for message in chunk:
                outcome, fleet, vehicle = handle(client, message)
                if callbacks and outcome is not None:
                    await self._callbacks(outcome, fleet, vehicle)
                done += 1
        finally:
            # Only now: each of these messages is stored (handed to the sink) or refused for good. Were
            # the loop cancelled mid-batch, the rest stay unacknowledged and the broker sends them again.
            _acknowledge(client, [message.mid for message in chunk[:done] if message.qos == 1])
            self.received += done

    def _handle(self, client: paho.Client, message: paho.MQTTMessage) -> tuple[Outcome | None, str, str]:
        parts = message.topic.split("/")
        if len(parts) != 5 or parts[4] not in ("telemetry", "packs", RELAYED):
            self.ingest.refuse("mqtt", "wrong_topic", f"topic {message.topic[:120]!r}")
            return None, "", ""
        fleet, vehicle = parts[2], parts[3]
        payload = bytes(message.payload)  # paho hands bytes: the same object, no copy
        if parts[4] == "packs":  # a BLE gateway's report (collectors/ble)
            outcome = self.ingest.accept_packs(payload, transport="mqtt", device=vehicle, fleet=fleet)
        elif parts[4] == RELAYED:  # accepted over HTTPS by a worker (whose request was signed and fresh)
            return (self.ingest.accept(payload, transport="https", device=vehicle, fleet=fleet, check_time=False,
                                       charge=False), fleet, vehicle)
        else:
            outcome = self.ingest.accept(payload, transport="mqtt", device=vehicle, fleet=fleet)
        if self.answer:
            reading = outcome.reading
            if outcome.ok:
                if reading is not None and abs(reading.timestamp_ns - reading.received_ns) > self.calibrate_after_ns:
                    self._reply(client, fleet, vehicle, outcome)
            elif outcome.reason not in _QUIET:
                self._reply(client, fleet, vehicle, outcome)
        return outcome, fleet, vehicle

    async def _callbacks(self, outcome: Outcome, fleet: str, vehicle: str) -> None:
        if outcome.ok:
            if self.on_accepted is not None:
                accepted = outcome.reading if outcome.reading is not None else outcome.packs
                if accepted is not None:
                    await self.on_accepted(accepted)
        elif outcome.report_ts_ms is not None and self.on_clock_refused is not None:
            await self.on_clock_refused(fleet, vehicle, outcome.report_ts_ms)

    def relay(self, fleet: str, vehicle: str, report: bytes) -> bool:
        """Publish a report accepted over HTTPS for the vehicle watch (QoS 1, :data:`RELAYED` topic).

        Safe from the event loop (paho queues it for its thread). While the broker is away paho holds up
        to 100,000 of them and sends them when it is back; False when the report could not be queued
        (no client yet, or that queue is full)."""
        client = self._client
        if client is None:
            return False
        info = client.publish(topic(fleet, vehicle, RELAYED), report, qos=1)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):  # NO_CONN: queued for the reconnect
            self._log_change(f"MQTT {self.client_id}: HTTPS reports not relayed to the vehicle watch "
                             f"({paho.error_string(info.rc)})")
            return False
        return True

    def _reply(self, client: paho.Client, fleet: str, vehicle: str, outcome: Outcome) -> None:
        """A rejection event, or the time calibration of a stored report (V-4.6); throttled per vehicle."""
        tick = time.monotonic()  # the throttle is a duration; server_time_ms is the wall clock
        last = self._answered.get(vehicle)
        if last is not None and tick - last < _REJECT_EVERY_S:
            return
        if len(self._answered) > 100_000:
            self._answered.clear()
        self._answered[vehicle] = tick
        reading = outcome.reading
        if reading is not None:  # stored, but the device's clock is off: tell it ours (V-4.6)
            server_ms, report_ms = reading.received_ns // 1_000_000, reading.timestamp_ns // 1_000_000
            event = {"seq": outcome.seq, "reason": "clock_skew", "stored": True,
                     "detail": f"report time is {(report_ms - server_ms) / 1000:+.1f} s from the platform's clock; "
                               "set yours", "server_time_ms": server_ms, "report_ts": report_ms,
                     "skew_ms": report_ms - server_ms}
        else:
            event = {"seq": outcome.seq, "reason": outcome.reason, "detail": outcome.detail,
                     "server_time_ms": int(self.clock() * 1000)}
        info = client.publish(topic(fleet, vehicle, "reject"), self._encoder.encode(event), qos=0)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            log.debug("rejection event for %s not sent: %s", vehicle, paho.error_string(info.rc))


_PUBACK = 0x40


def _acknowledge(client: paho.Client, mids: list[int]) -> None:
    """PUBACK each of ``mids`` (QoS 1), all in one write.

    ``client.ack`` queues one packet per message, and each wakes paho's thread and costs it a ``send``;
    a batch's PUBACKs (4 bytes each: type, length 2, packet id) go as one buffer through the same
    queue instead (measured: ~5 µs less CPU per report). paho-mqtt is pinned (constraints.txt); were
    the queue to change, ``ack`` is used."""
    if not mids:
        return
    queue = getattr(client, "_packet_queue", None)
    if queue is None:
        for mid in mids:
            client.ack(mid, 1)
        return
    queue(_PUBACK, b"".join([b"\x40\x02" + mid.to_bytes(2, "big") for mid in mids]), 0, 0)
