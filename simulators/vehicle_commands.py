"""Simulated vehicles answer remote commands (docs/vehicles.md, "Commands") the way a device does.

* :class:`VehicleControls`: the command state of every simulated vehicle (power, motor lock, arming).
  ``handle(vehicle, payload)`` carries out one command and returns the acknowledgement with the
  resulting state (once per command id: a retry or a second delivery gets the same answer; an expired
  command is rejected, not carried out). ``adjust(report)`` makes the vehicle's reports show it: a
  locked or powered-off vehicle stands still (its position frozen where the command found it, speed 0,
  ``parked``), powered off it reports ``power: false``, and ``armed`` when the report format has it.
* MQTT vehicles: :class:`~simulators.vehicles.MqttTransport` subscribes each connection to its own
  ``cmd`` topic when its ``on_command`` is set, and publishes the answer on ``ack`` (QoS 1).
* HTTPS vehicles: :class:`HttpsCommandPoller` polls ``GET /v1/commands`` for each of them (signed like
  telemetry) and posts the acknowledgements to ``POST /v1/acks``.

    controls = VehicleControls()
    mqtt.on_command = controls.handle                 # MQTT vehicles
    poller = HttpsCommandPoller(url, registry, controls, ["V000007"])   # HTTPS vehicles
    report = controls.adjust(report)                  # what a locked / powered-off vehicle reports

Limitation: the ride model does not know about commands; a vehicle locked mid-ride is shown standing
where it was locked, and when unlocked its reports jump to where its rider would have got to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import msgspec

from collectors.vehicles.commands import EXPECTED_STATE, Ack, CommandWireError, DeviceState, decode_command, encode
from collectors.vehicles.trust import DeviceRegistry, sign
from collectors.vehicles.wire import Telemetry

__all__ = ["Controls", "HttpsCommandPoller", "VehicleControls"]

log = logging.getLogger("cascade.simulate_vehicles.commands")

_HAS_ARMED = "armed" in Telemetry.__struct_fields__


@dataclass(slots=True)
class Controls:
    """One vehicle's command state. ``power`` and ``armed`` None: as its ride model (or scenario) says,
    until a command sets them."""

    power: bool | None = None
    locked: bool = False
    armed: bool | None = None
    frozen: Telemetry | None = None  # its last report before it was stopped (position to keep)
    last: Telemetry | None = None

    def state(self) -> DeviceState:
        last = self.last
        power = self.power if self.power is not None else (last.power if last is not None else None)
        armed = self.armed if self.armed is not None else getattr(last, "armed", None)
        return DeviceState(power=True if power is None else power, locked=self.locked,
                           armed=False if armed is None else armed)


class VehicleControls:
    """The command state of the simulated vehicles and the device's side of the command protocol."""

    def __init__(self, clock: Callable[[], float] = time.time, remember: int = 10_000) -> None:
        self.clock = clock
        self.vehicles: dict[str, Controls] = {}
        self.answered: OrderedDict[str, bytes] = OrderedDict()  # command id -> the acknowledgement sent
        self.remember = remember
        self.carried_out = 0

    def of(self, vehicle: str) -> Controls:
        return self.vehicles.setdefault(vehicle, Controls())

    def handle(self, vehicle: str, payload: bytes) -> bytes | None:
        """Carry out one command sent to ``vehicle``; the acknowledgement to send (None: not ours)."""
        try:
            command = decode_command(payload)
        except CommandWireError as err:
            log.warning("vehicle %s: unreadable command: %s", vehicle, err)
            return None
        if command.vehicle != vehicle:
            return None
        done = self.answered.get(command.id)
        if done is not None:
            return done  # a retry or a second delivery: the same answer, nothing done twice
        controls = self.of(vehicle)
        now_ms = int(self.clock() * 1000)
        if command.expires_ms <= now_ms:
            ack = Ack(id=command.id, vehicle=vehicle, result="rejected", ts=now_ms, state=controls.state(),
                      detail=f"expired {now_ms - command.expires_ms} ms ago")
        else:
            key, value = EXPECTED_STATE[command.command]
            if key == "power":
                controls.power = value
            elif key == "locked":
                controls.locked = value
            else:
                controls.armed = value
            stopped = controls.locked or controls.power is False
            controls.frozen = (controls.frozen or controls.last) if stopped else None
            self.carried_out += 1
            log.info("vehicle %s: %s (command %s); now %s", vehicle, command.command, command.id,
                     msgspec.to_builtins(controls.state()))
            ack = Ack(id=command.id, vehicle=vehicle, result="ok", ts=now_ms, state=controls.state())
        answer = encode(ack)
        self.answered[command.id] = answer
        while len(self.answered) > self.remember:
            self.answered.popitem(last=False)
        return answer

    def adjust(self, report: Telemetry) -> Telemetry:
        """The report as the vehicle's command state makes it (see the module docstring)."""
        controls = self.vehicles.get(report.vehicle)
        if controls is None:
            self.of(report.vehicle).last = report
            return report
        changes: dict[str, object] = {}
        if controls.power is not None:
            changes["power"] = controls.power
        if controls.locked or controls.power is False:
            frozen = controls.frozen
            changes.update(speed_kmh=0.0, state="parked")
            if frozen is not None:
                changes.update(pos=frozen.pos, odometer_km=frozen.odometer_km)
        if _HAS_ARMED and controls.armed is not None:
            changes["armed"] = controls.armed
        adjusted = msgspec.structs.replace(report, **changes) if changes else report
        controls.last = adjusted
        return adjusted


class HttpsCommandPoller:
    """Polls ``GET /v1/commands`` for each HTTPS vehicle every ``every_s`` and posts the answers to
    ``POST /v1/acks``; both requests signed with the vehicle's secret, like its telemetry."""

    def __init__(self, url: str, devices: DeviceRegistry, controls: VehicleControls, vehicles: Sequence[str], *,
                 tls: ssl.SSLContext | None = None, every_s: float = 10.0, concurrency: int = 8) -> None:
        self.base = url.rstrip("/")
        self.devices, self.controls, self.vehicles = devices, controls, list(vehicles)
        self.tls, self.every_s, self.concurrency = tls, every_s, concurrency
        self.polls = 0
        self.acks_sent = 0

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency, ssl=self.tls if self.tls is not None else None)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15), connector=connector) as session:
            while True:
                started = time.monotonic()
                for start in range(0, len(self.vehicles), self.concurrency):
                    batch = self.vehicles[start:start + self.concurrency]
                    await asyncio.gather(*(self.poll(session, vid) for vid in batch))
                await asyncio.sleep(max(0.0, self.every_s - (time.monotonic() - started)))

    async def poll(self, session: aiohttp.ClientSession, vehicle: str) -> int:
        """One poll of ``vehicle``: the commands it received and answered (0 on any network error)."""
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError, ValueError):
            async with session.get(f"{self.base}/v1/commands", headers=self._headers(vehicle, b"")) as resp:
                if resp.status != 200:
                    return 0
                answer = await resp.json(content_type=None)
            self.polls += 1
            acks = [a for a in (self.controls.handle(vehicle, msgspec.json.encode(c))
                                for c in answer.get("commands", [])) if a is not None]
            if not acks:
                return 0
            body = b"[" + b",".join(acks) + b"]"
            headers = {**self._headers(vehicle, body), "Content-Type": "application/json"}
            async with session.post(f"{self.base}/v1/acks", data=body, headers=headers) as resp:
                if resp.status == 200:
                    self.acks_sent += len(acks)
            return len(acks)
        return 0

    def _headers(self, vehicle: str, body: bytes) -> dict[str, str]:
        device = self.devices.get(vehicle)
        assert device is not None, vehicle
        stamp, nonce = int(time.time() * 1000), secrets.token_hex(12)
        return {"X-Cascade-Device": vehicle, "X-Cascade-Timestamp": str(stamp), "X-Cascade-Nonce": nonce,
                "X-Cascade-Signature": sign(device.secret, stamp, nonce, body)}
