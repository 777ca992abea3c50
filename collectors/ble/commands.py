"""Protective action over BLE: the platform's MOSFET-off command to a gateway, and the gateway's answer.

A warning level that asks for a cut-off (``slot_cutoff``, ``stop_charging``, ``cabinet_cutoff``) on a pack
read through a gateway reaches it here: the engine sees the gateway as a cabinet and the pack as a slot,
the alert service's action runner writes ``slot_output = 0`` through its commander, and
:class:`GatewayCommander` (one of the commanders of ``cascade run``) turns that into a command on the
gateway's own downlink topic. The gateway (:class:`CommandListener`) switches the pack's charge MOSFET off
(and its discharge MOSFET when the command says so) with the BMS's own command, reads the state back and
answers with the read-back. Only what the read-back shows counts: an acknowledgement whose MOSFET still
reads on is a failed action, alerted and retried like a cabinet whose relay did not open.

On the wire (QoS 1; per-gateway credentials: a gateway reads only its own ``cmd`` and writes only its own
``result``, docs/ble-gateway.md)::

    cascade/v1/<fleet>/<gateway>/cmd       platform → gateway
    {"v": 1, "id": "m-3f2a…", "gateway": "G000001", "slot": 2, "pack": "C0D63C000002", "charge_off": true,
     "discharge_off": false, "actor": "rule:battery_temperature@level3", "reason": "…",
     "issued_ms": 1764990000000, "expires_ms": 1764990060000, "attempt": 1}
    cascade/v1/<fleet>/<gateway>/result    gateway → platform
    {"v": 1, "id": "m-3f2a…", "gateway": "G000001", "slot": 2, "address": "C0:D6:3C:00:00:02",
     "result": "ok", "ts": 1764990000850, "before": {"charge": true, "discharge": true},
     "after": {"charge": false, "discharge": true}, "detail": "read back as commanded"}

``result`` is ``ok`` (read back as commanded), ``failed`` (the pack did not answer, or acknowledged and
still reads on), ``refused`` (not on the gateway's MOSFET allow-list, no pack at that slot, or another pack
than the platform saw there) or ``rejected`` (expired, or not a command). A gateway carries a command out
once per ``id``: a retry of the same id gets the same answer. Nothing here can switch a MOSFET on, and
nothing commands fire suppression (``alerting.actions.check_command`` refuses it before it gets here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiomqtt
import msgspec

from collectors.vehicles.commands import exchange, publish_outbox
from core.events import CommandResult
from core.model import BLE_GATEWAY_MODEL, CabinetReading
from core.ports import UnknownDevice

__all__ = ["CommandListener", "GatewayCommander", "MosfetAck", "MosfetCommand", "MosfetState", "cmd_topic",
           "decode_ack", "decode_command", "encode", "result_topic"]

log = logging.getLogger("cascade.ble.commands")

MAX_MESSAGE_BYTES = 4096
_ROOT = "cascade/v1"


def cmd_topic(fleet: str, gateway: str) -> str:
    """``cascade/v1/<fleet>/<gateway>/cmd``: the gateway's downlink (it may read only its own)."""
    return f"{_ROOT}/{fleet}/{gateway}/cmd"


def result_topic(fleet: str, gateway: str) -> str:
    """``cascade/v1/<fleet>/<gateway>/result``: the gateway's answers with the MOSFET read-back."""
    return f"{_ROOT}/{fleet}/{gateway}/result"


class MosfetState(msgspec.Struct, frozen=True, omit_defaults=True):
    """The MOSFETs as the BMS reports them (``True``: conducting; ``None``: not reported)."""

    charge: bool | None = None
    discharge: bool | None = None


class MosfetCommand(msgspec.Struct, frozen=True):
    """Platform → gateway: switch the MOSFET(s) of the pack at ``slot`` off. ``pack``: the battery id the
    platform last saw there (the gateway refuses when another pack now sits in the slot; "" = no check)."""

    id: str
    gateway: str
    slot: int
    actor: str
    issued_ms: int
    expires_ms: int
    pack: str = ""
    charge_off: bool = True
    discharge_off: bool = False
    reason: str = ""
    attempt: int = 1
    v: Literal[1] = 1


class MosfetAck(msgspec.Struct, frozen=True, omit_defaults=True):
    """Gateway → platform: what became of command ``id``, with the MOSFET states before and after."""

    id: str
    gateway: str
    slot: int
    result: Literal["ok", "failed", "refused", "rejected"]
    ts: int
    address: str = ""
    before: MosfetState | None = None
    after: MosfetState | None = None
    detail: str = ""
    v: Literal[1] = 1


class CommandWireError(ValueError):
    """A message on a command topic that is not one."""


_encoder = msgspec.json.Encoder()
_command_decoder = msgspec.json.Decoder(MosfetCommand)
_ack_decoder = msgspec.json.Decoder(MosfetAck)


def encode(message: MosfetCommand | MosfetAck) -> bytes:
    return _encoder.encode(message)


def _decode(decoder: msgspec.json.Decoder[Any], data: bytes) -> Any:
    if len(data) > MAX_MESSAGE_BYTES:
        raise CommandWireError(f"{len(data)} bytes; at most {MAX_MESSAGE_BYTES}")
    try:
        return decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as err:
        raise CommandWireError(str(err)[:200]) from None


def decode_command(data: bytes) -> MosfetCommand:
    """A command as the gateway reads it; :class:`CommandWireError` when it is not one."""
    result: MosfetCommand = _decode(_command_decoder, data)
    return result


def decode_ack(data: bytes) -> MosfetAck:
    """An answer as the platform reads it; :class:`CommandWireError` when it is not one."""
    result: MosfetAck = _decode(_ack_decoder, data)
    return result


def _client(host: str, port: int, username: str | None, password: str | None, tls_ca: str | None,
            identifier: str, keepalive_s: int) -> aiomqtt.Client:
    tls = ssl.create_default_context(cafile=tls_ca) if tls_ca else None
    return aiomqtt.Client(host, port, username=username or None, password=password or None, identifier=identifier,
                          protocol=aiomqtt.ProtocolVersion.V5, keepalive=keepalive_s, tls_context=tls)


# -- the gateway's side -------------------------------------------------------------------------------


class CommandListener:
    """The gateway's downlink: takes commands on its own ``cmd`` topic, carries each out once through
    ``gateway.switch_off`` (allow-list, off only, read-back, audit) and publishes the answer on ``result``.

        listener = CommandListener(gateway, host=..., port=..., username="G000001", password=...)
        task = asyncio.create_task(listener.run())
    """

    def __init__(self, gateway: Any, *, host: str, port: int, username: str, password: str,
                 tls_ca: str | None = None, keepalive_s: int = 30, wall: Callable[[], float] = time.time,
                 history: int = 200) -> None:
        self.gateway = gateway
        self.fleet, self.gateway_id = gateway.settings.fleet, gateway.settings.gateway_id
        self._connect = (host, port, username, password, tls_ca, f"gateway-{self.gateway_id}-cmd", keepalive_s)
        self.wall = wall
        self.history = history
        self.answers: OrderedDict[str, MosfetAck | None] = OrderedDict()  # id -> answer (None: in progress)
        self.connected = asyncio.Event()
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()  # results, sent after reconnecting
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        delay = 0.2
        try:
            while True:
                try:
                    async with _client(*self._connect) as client:
                        await client.subscribe(cmd_topic(self.fleet, self.gateway_id), qos=1)
                        self.connected.set()
                        delay = 0.2
                        await exchange(client, lambda c: publish_outbox(c, self._outbox),
                                       lambda _topic, payload: self.handle(payload), name="gateway-results")
                except aiomqtt.MqttError as err:
                    self.connected.clear()
                    log.warning("gateway %s: command link down (%s); reconnecting in %.1f s", self.gateway_id, err,
                                delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def handle(self, data: bytes) -> None:
        """One message from the ``cmd`` topic: answered at once (rejected, repeated) or carried out."""
        try:
            command = decode_command(data)
        except CommandWireError as err:
            log.warning("gateway %s: not a command on its cmd topic: %s", self.gateway_id, err)
            return
        if command.gateway != self.gateway_id:
            self._answer(MosfetAck(id=command.id[:64], gateway=self.gateway_id, slot=command.slot, result="rejected",
                                   ts=self._now_ms(), detail=f"addressed to {command.gateway[:64]!r}"))
            return
        if command.id in self.answers:
            answer = self.answers[command.id]
            if answer is not None:
                self._answer(answer)  # a retry of a command already carried out: the same answer
            return
        if command.expires_ms <= self._now_ms():
            self._answer(MosfetAck(id=command.id, gateway=self.gateway_id, slot=command.slot, result="rejected",
                                   ts=self._now_ms(), detail="expired before it arrived"))
            return
        self.answers[command.id] = None
        while len(self.answers) > self.history:
            self.answers.popitem(last=False)
        task = asyncio.get_running_loop().create_task(self._carry_out(command), name="mosfet-command")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _carry_out(self, command: MosfetCommand) -> None:
        address = self.gateway.pack_at(command.slot)
        if address is None or (command.pack and address.replace(":", "").upper() != command.pack.upper()):
            detail = (f"no pack at slot {command.slot}" if address is None else
                      f"slot {command.slot} now holds {address}, not {command.pack}")
            ack = MosfetAck(id=command.id, gateway=self.gateway_id, slot=command.slot, result="refused",
                            ts=self._now_ms(), address=address or "", detail=detail)
            log.error("gateway %s: MOSFET command %s by %s refused: %s", self.gateway_id, command.id, command.actor,
                      detail)
        else:
            outcome = await self.gateway.switch_off(address, charge=command.charge_off,
                                                    discharge=command.discharge_off, actor=command.actor,
                                                    reason=": ".join(filter(None, (command.id, command.reason)))[:300])
            ack = MosfetAck(id=command.id, gateway=self.gateway_id, slot=command.slot, result=outcome.result,
                            ts=outcome.ts_ms, address=address, before=_state(outcome.before),
                            after=_state(outcome.after), detail=outcome.detail[:300])
        self.answers[command.id] = ack
        self._answer(ack)

    def _answer(self, ack: MosfetAck) -> None:
        self._outbox.put_nowait((result_topic(self.fleet, self.gateway_id), encode(ack)))

    def _now_ms(self) -> int:
        return int(self.wall() * 1000)


def _state(fets: dict[str, bool | None]) -> MosfetState | None:
    return MosfetState(charge=fets.get("charge"), discharge=fets.get("discharge")) if fets else None


# -- the platform's side ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Gateway:
    fleet: str
    packs: dict[int, str | None] = field(default_factory=dict)  # slot -> battery id last seen there


@dataclass(slots=True)
class _Pending:
    command: MosfetCommand
    answered: asyncio.Future[MosfetAck]


class GatewayCommander:
    """A :class:`core.ports.Commander` for the packs of BLE gateways (``cascade run``).

    It learns the gateways and their slots from the readings it is given (:meth:`observe`, a reading
    hook); ``command(gateway, "slot_output", slot=N, value=0)`` publishes a MOSFET-off command, sends it
    again every ``resend_s`` until answered, and returns the answer as a :class:`CommandResult`: ``ok`` only
    when the gateway read the MOSFET back off; no answer within ``timeout_s`` is a failed command (the
    alert service then raises ``protective_action_failed`` and retries). Only ``slot_output = 0`` is
    carried: a gateway never switches a MOSFET on remotely.

        commander = GatewayCommander(host="127.0.0.1", port=1883, username="ingest", password=...)
        pipeline.subscribe(commander.observe); pipeline.commander.add(commander)
        async with commander: ...
    """

    def __init__(self, *, host: str, port: int, username: str = "ingest", password: str = "",
                 tls_ca: str | None = None, keepalive_s: int = 30, discharge_off: bool = False,
                 timeout_s: float = 15.0, resend_s: float = 5.0, expiry_s: float = 60.0,
                 client_id: str = "cascade-gateway-commands", clock: Callable[[], float] = time.time) -> None:
        if not (timeout_s > 0 and resend_s > 0 and expiry_s >= timeout_s):
            raise ValueError("timeout_s and resend_s must be > 0 and expiry_s >= timeout_s")
        self._connect = (host, port, username, password, tls_ca, client_id, keepalive_s)
        self.discharge_off = discharge_off
        self.timeout_s, self.resend_s, self.expiry_s = timeout_s, resend_s, expiry_s
        self.clock = clock
        self.gateways: dict[str, _Gateway] = {}
        self.connected = asyncio.Event()
        self._pending: dict[str, _Pending] = {}
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    # -- what the engine's readings tell ---------------------------------------------------------

    def observe(self, reading: CabinetReading) -> None:
        """Reading hook: remember each gateway's fleet and which pack sits in which slot."""
        if reading.model != BLE_GATEWAY_MODEL:
            return
        gateway = self.gateways.setdefault(reading.cabinet_id, _Gateway(reading.site))
        gateway.fleet = reading.site
        for slot in reading.slots:
            gateway.packs[slot.slot] = slot.battery_id

    # -- core.ports.Commander ------------------------------------------------------------------------

    def slot_count(self, device: str) -> int | None:
        gateway = self.gateways.get(device)
        return None if gateway is None or not gateway.packs else max(gateway.packs)

    async def command(self, device: str, name: str, *, slot: int | None, value: int | bool,
                      actor: str) -> CommandResult:
        gateway = self.gateways.get(device)
        if gateway is None:
            raise UnknownDevice(f"{device!r} is not a BLE gateway this collector has heard from")
        started = self.clock()

        def result(ok: bool, error: str = "", readback: int | None = None) -> CommandResult:
            return CommandResult(cabinet_id=device, command=name, slot=slot, value=value, actor=actor,
                                 requested_at=started, ok=ok, readback=readback, error=error,
                                 completed_at=self.clock(), site=gateway.fleet)

        if name != "slot_output" or int(value) != 0:
            return result(False, f"a BLE gateway takes only slot_output=0 (MOSFET off), not {name}={value}; "
                                 "switching a pack back on is done on site")
        if slot is None or slot not in gateway.packs:
            return result(False, f"gateway {device} has no pack at slot {slot}")
        now_ms = int(started * 1000)
        command = MosfetCommand(id=f"m-{secrets.token_hex(8)}", gateway=device, slot=slot, actor=actor,
                                issued_ms=now_ms, expires_ms=now_ms + int(self.expiry_s * 1000),
                                pack=gateway.packs.get(slot) or "", charge_off=True,
                                discharge_off=self.discharge_off)
        pending = _Pending(command, asyncio.get_running_loop().create_future())
        self._pending[command.id] = pending
        attempts = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    attempts += 1
                    sent = msgspec.structs.replace(command, attempt=attempts)
                    self._outbox.put_nowait((cmd_topic(gateway.fleet, device), encode(sent)))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.resend_s):
                            ack = await asyncio.shield(pending.answered)
                            break
        except TimeoutError:
            return result(False, f"no answer from gateway {device} in {self.timeout_s:g} s "
                                 f"({attempts} publish(es) of {command.id}): it may be offline")
        finally:
            self._pending.pop(command.id, None)
        return self._judge(ack, command, result)

    @staticmethod
    def _judge(ack: MosfetAck, command: MosfetCommand,
               result: Callable[[bool, str, int | None], CommandResult]) -> CommandResult:
        """``ok`` only when the read-back shows every MOSFET asked off as off (as a relay's read-back)."""
        after = ack.after or MosfetState()
        asked = [("charge", after.charge)] + ([("discharge", after.discharge)] if command.discharge_off else [])
        still_on = [name for name, state in asked if state is not False]
        readback = None if any(state is None for _, state in asked) else int(bool(still_on))
        where = f"pack {ack.address or command.pack} at slot {command.slot}"
        if ack.result != "ok":
            return result(False, f"gateway answered {ack.result} for {where}: {ack.detail}", readback)
        if readback is None:
            return result(False, f"gateway acknowledged {where} without a read-back", None)
        if still_on:
            return result(False, f"gateway acknowledged, but {where} reads back {' and '.join(still_on)} "
                                 "MOSFET on", readback)
        return result(True, "", readback)

    # -- the MQTT session ----------------------------------------------------------------------------

    async def __aenter__(self) -> GatewayCommander:
        self._task = asyncio.create_task(self._run(), name="gateway-commands")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                async with _client(*self._connect) as client:
                    await client.subscribe(f"{_ROOT}/+/+/result", qos=1)
                    self.connected.set()
                    delay = 0.2
                    await exchange(client, lambda c: publish_outbox(c, self._outbox), self._received,
                                   name="gateway-commands")
            except aiomqtt.MqttError as err:
                self.connected.clear()
                log.warning("gateway commands: MQTT %s:%s: %s; reconnecting in %.1f s", self._connect[0],
                            self._connect[1], err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _received(self, where: str, data: bytes) -> None:
        parts = where.split("/")
        if len(parts) != 5 or parts[4] != "result":
            return
        try:
            ack = decode_ack(data)
        except CommandWireError as err:
            log.warning("unreadable gateway answer on %s: %s", where[:120], err)
            return
        pending = self._pending.get(ack.id)
        # The broker vouches for the topic (a gateway writes only its own): the answer must come from there.
        if pending is None or ack.gateway != parts[3] or pending.command.gateway != parts[3]:
            log.info("gateway answer %s on %s matches no command waiting for it; ignored", ack.id[:40], where[:120])
            return
        if not pending.answered.done():
            pending.answered.set_result(ack)
