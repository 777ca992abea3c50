"""Emulated JBD and Daly packs behind bleak's own backend seam: tests and ``cascade gateway --emulate N``.

Bleak builds its platform client and scanner from a class it is given (``BleakClient(device,
backend=EmulatedClient)``, ``BleakScanner(backend=EmulatedScanner, radio=radio)``); everything above
that — bleak's public API, bleak-retry-connector, the gateway — runs unchanged. A :class:`Radio` holds
the packs in range and the adapter; a :class:`EmulatedPack` answers requests on its GATT service
the way the real BMS does, and misbehaves on demand:

* answers are notified in fragments of ``mtu - 3`` bytes (20), ``latency_s`` apart;
* a pack takes **one connection at a time**: a second connect is refused, and a session the gateway
  forgets to close keeps the pack locked (``pack.client`` stays set) — the fault real JBD packs have;
* ``drop_link()`` disconnects a pack (out of range, power-cycled); ``garbage`` / ``corrupt`` /
  ``silent`` inject noise, bad checksums and lost answers;
* MOSFET writes (JBD 0xE1, with factory mode 0x00/0x01; Daly 0xDA charge, 0xD9 discharge) switch the
  emulated MOSFETs; ``stuck_mosfet`` acknowledges them and switches nothing (a welded MOSFET, a module
  that ignores the write), ``factory_mode_required`` takes JBD's 0xE1 only inside factory mode;
* ``radio.wedge()`` makes the adapter fail every connect until ``radio.reset_adapter()``.

The radio counts connects, disconnects, the most connections open at once and refusals, so tests
assert "no session left open" and "never more than N at once".
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from bleak.assigned_numbers import CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError

from . import daly, jbd

__all__ = ["EmulatedClient", "EmulatedPack", "EmulatedScanner", "PackState", "Radio", "daly_answer", "jbd_answer",
           "make_radio"]

_KELVIN_DECI = 2731


@dataclass(slots=True)
class PackState:
    """What the emulated BMS measures. ``protection``: the vendor's word (JBD 16 bits, Daly 56)."""

    cells_mv: list[int] = field(default_factory=lambda: [3300] * 16)
    current_ma: int = -2500
    soc_pct: int = 80
    temperatures_c: list[float] = field(default_factory=lambda: [25.0, 26.0])
    cycles: int = 120
    nominal_mah: int = 20000
    remaining_mah: int = 16000
    protection: int = 0
    mosfet_charge: bool = True
    mosfet_discharge: bool = True
    hardware: str = "JBD-SP16S020-L16S-200A"

    @property
    def voltage_mv(self) -> int:
        return sum(self.cells_mv)


class EmulatedPack:
    """One BMS with its BLE module: a GATT service and the protocol's answers."""

    def __init__(self, address: str, name: str, protocol: str, state: PackState | None = None, *,
                 latency_s: float = 0.0, mtu: int = 23, rssi: int = -60) -> None:
        if protocol not in ("jbd", "daly"):
            raise ValueError(f"protocol {protocol!r}: emulated packs speak 'jbd' or 'daly'")
        self.address, self.name, self.protocol = address, name, protocol
        self.spec = jbd.PROTOCOL if protocol == "jbd" else daly.PROTOCOL
        self.state = state or PackState()
        self.latency_s = latency_s
        self.mtu = mtu
        self.rssi = rssi
        self.radio: Radio | None = None
        self.client: EmulatedClient | None = None  # the one connection this pack takes
        self.in_range = True
        self.requests = 0
        # fault injection
        self.garbage = 0  # next N answers are preceded by noise bytes
        self.corrupt = 0  # next N answers have a wrong checksum
        self.silent = 0  # next N requests get no answer
        self.drop_after: int | None = None  # drop the link after this many more requests
        # A stuck MOSFET: writes are acknowledged, the MOSFETs stay as they are (the read-back tells).
        self.stuck_mosfet = False
        # JBD firmware that acknowledges 0xE1 outside factory mode without acting on it.
        self.factory_mode_required = False
        self.factory_mode = False
        # MOSFET writes received: JBD the 0xE1 data byte (bit 0 charge off, bit 1 discharge off), Daly
        # (command, value) with 0xDA charge / 0xD9 discharge and 0 off / 1 on.
        self.mosfet_writes: list[int | tuple[int, int]] = []

    # -- answers ----------------------------------------------------------------------------
    def answer(self, request: bytes) -> list[bytes]:
        """The frames the BMS sends for ``request`` (empty for an unknown or malformed request)."""
        if self.protocol == "jbd":
            return self._jbd(request)
        return self._daly(request)

    def _jbd(self, req: bytes) -> list[bytes]:
        if len(req) < 7 or req[0] != jbd.START or req[1] not in (jbd.READ, jbd.WRITE) or req[-1] != jbd.END:
            return []
        length = req[3]
        if len(req) != 7 + length or int.from_bytes(req[4 + length:6 + length], "big") != jbd.checksum(req[2:4 + length]):
            return []
        s = self.state
        cmd = req[2]
        if req[1] == jbd.WRITE:
            if cmd not in jbd.WRITES or length != 2:
                return [jbd_answer(cmd, b"", status=0x80)]
            if cmd == jbd.FACTORY_ENTER:
                if req[4:6] != b"\x56\x78":
                    return [jbd_answer(cmd, b"", status=0x80)]
                self.factory_mode = True
            elif cmd == jbd.FACTORY_EXIT:
                self.factory_mode = False
            else:
                self.mosfet_writes.append(req[5])
                if not self.stuck_mosfet and (self.factory_mode or not self.factory_mode_required):
                    s.mosfet_charge, s.mosfet_discharge = not req[5] & 1, not req[5] & 2
            return [jbd_answer(cmd, b"")]
        if cmd == jbd.BASIC:
            temps = b"".join(int(round(t * 10 + _KELVIN_DECI)).to_bytes(2, "big") for t in s.temperatures_c)
            data = (
                (s.voltage_mv // 10).to_bytes(2, "big") + (s.current_ma // 10).to_bytes(2, "big", signed=True)
                + (s.remaining_mah // 10).to_bytes(2, "big") + (s.nominal_mah // 10).to_bytes(2, "big")
                + s.cycles.to_bytes(2, "big") + (0x2A6F).to_bytes(2, "big") + bytes(4)
                + s.protection.to_bytes(2, "big") + bytes((0x10, s.soc_pct, s.mosfet_charge | s.mosfet_discharge << 1,
                                                           len(s.cells_mv), len(s.temperatures_c))) + temps
            )
        elif cmd == jbd.CELLS:
            data = b"".join(mv.to_bytes(2, "big") for mv in s.cells_mv)
        elif cmd == jbd.VERSION:
            data = s.hardware.encode()
        else:
            return [jbd_answer(cmd, b"", status=0x80)]
        return [jbd_answer(cmd, data)]

    def _daly(self, req: bytes) -> list[bytes]:
        if len(req) != 13 or req[0] != daly.START or req[3] != 8 or daly.checksum(req[:12]) != req[12]:
            return []
        s = self.state
        cmd = req[2]
        cells, temps = s.cells_mv, s.temperatures_c
        if cmd == daly.SOC:
            frames = [(s.voltage_mv // 100).to_bytes(2, "big") + (s.voltage_mv // 100).to_bytes(2, "big")
                      + (30000 + s.current_ma // 100).to_bytes(2, "big") + (s.soc_pct * 10).to_bytes(2, "big")]
        elif cmd == daly.CELL_RANGE:
            hi, lo = max(cells), min(cells)
            frames = [hi.to_bytes(2, "big") + bytes((cells.index(hi) + 1,)) + lo.to_bytes(2, "big")
                      + bytes((cells.index(lo) + 1, 0, 0))]
        elif cmd == daly.TEMP_RANGE:
            frames = [bytes((int(max(temps)) + 40, 1, int(min(temps)) + 40, 2, 0, 0, 0, 0))]
        elif cmd == daly.MOSFET:
            state = 1 if s.current_ma > 0 else 2 if s.current_ma < 0 else 0
            frames = [bytes((state, s.mosfet_charge, s.mosfet_discharge, s.cycles & 0xFF))
                      + s.remaining_mah.to_bytes(4, "big")]
        elif cmd == daly.STATUS:
            frames = [bytes((len(cells), len(temps), 0, 0, 0)) + s.cycles.to_bytes(2, "big") + b"\x00"]
        elif cmd == daly.CELLS:
            frames = []
            for n, at in enumerate(range(0, len(cells), 3), start=1):
                chunk = cells[at:at + 3] + [0] * (3 - len(cells[at:at + 3]))
                frames.append(bytes((n,)) + b"".join(mv.to_bytes(2, "big") for mv in chunk) + b"\x00")
        elif cmd == daly.TEMPS:
            frames = []
            for n, at in enumerate(range(0, len(temps), 7), start=1):
                chunk = [int(t) + 40 for t in temps[at:at + 7]]
                frames.append(bytes((n, *chunk, *[0] * (7 - len(chunk)))))
        elif cmd == daly.ALARMS:
            frames = [s.protection.to_bytes(7, "little") + b"\x00"]
        elif cmd in (daly.CHARGE_MOS, daly.DISCHARGE_MOS):
            self.mosfet_writes.append((cmd, req[4]))
            if not self.stuck_mosfet:
                if cmd == daly.CHARGE_MOS:
                    s.mosfet_charge = bool(req[4])
                else:
                    s.mosfet_discharge = bool(req[4])
            frames = [bytes((req[4],))]
        else:
            return []
        return [daly_answer(cmd, data) for data in frames]

    # -- fault injection ---------------------------------------------------------------------
    def drop_link(self, *, notice_after_s: float = 0.0) -> None:
        """The pack goes away mid-session (out of range, power-cycled): an unsolicited disconnect. The
        adapter's notice of it (bleak's disconnected callback) comes ``notice_after_s`` later: BlueZ
        signals it over D-Bus, so a poll can find the link down before the notice."""
        client = self.client
        if client is not None:
            client.lose_link(notice_after_s)


def jbd_answer(command: int, data: bytes, *, status: int = 0) -> bytes:
    """A JBD answer frame carrying ``data`` (what a BMS sends)."""
    body = bytes((status, len(data))) + data
    return bytes((jbd.START, command)) + body + jbd.checksum(body).to_bytes(2, "big") + bytes((jbd.END,))


def daly_answer(command: int, data: bytes) -> bytes:
    """A Daly answer frame carrying 8 bytes of ``data``."""
    body = bytes((daly.START, daly.BMS, command, 8)) + data[:8].ljust(8, b"\x00")
    return body + bytes((daly.checksum(body),))


class Radio:
    """The emulated air and adapter: packs in range, connection bookkeeping, adapter faults."""

    def __init__(self, packs: list[EmulatedPack] | None = None, *, max_connections: int | None = None,
                 connect_latency_s: float = 0.0, seed: int = 0) -> None:
        self.packs: dict[str, EmulatedPack] = {}
        self.max_connections = max_connections
        self.connect_latency_s = connect_latency_s
        self.rng = random.Random(seed)
        self.wedged = False
        self.resets = 0
        self.connects = 0
        self.disconnects = 0
        self.refused = 0
        self.open = 0
        self.peak_open = 0
        for pack in packs or []:
            self.add(pack)

    def add(self, pack: EmulatedPack) -> EmulatedPack:
        pack.radio = self
        self.packs[pack.address] = pack
        return pack

    def wedge(self) -> None:
        """The adapter stops making connections (a known BlueZ/firmware fault) until reset."""
        self.wedged = True

    def reset_adapter(self) -> None:
        """Power-cycle the adapter: drops every link, clears a wedge."""
        self.resets += 1
        self.wedged = False
        for pack in self.packs.values():
            pack.drop_link()

    def sessions_open(self) -> list[str]:
        """Addresses of packs that still hold a connection."""
        return [a for a, p in self.packs.items() if p.client is not None]


def make_radio(count: int, *, seed: int = 0, latency_s: float = 0.002, max_connections: int | None = None) -> Radio:
    """``count`` packs, JBD and Daly alternating, 13–16 cells, varied values (``--emulate N``)."""
    rng = random.Random(seed)
    radio = Radio(max_connections=max_connections, seed=seed)
    for n in range(1, count + 1):
        protocol = "jbd" if n % 2 else "daly"
        cells = 13 + n % 4
        # A healthy pack: cells within ~30 mV of each other, its sensors within ~2 °C (the warning rules
        # read spreads; a fault is injected on purpose, not drawn at random).
        # One room: every pack within a few °C of the others; a nearly full pack no longer charges.
        cell_mv, temp_c, soc = rng.randint(3550, 3700), 24 + rng.randint(-2, 2), rng.randint(20, 100)
        current = rng.choice([-1, 1]) * rng.randint(0, 8000)
        if soc >= 90:
            current = -abs(current)
        state = PackState(cells_mv=[cell_mv + rng.randint(-15, 15) for _ in range(cells)],
                          current_ma=current, soc_pct=soc,
                          temperatures_c=[float(temp_c + rng.randint(-1, 1)) for _ in range(rng.choice([2, 3, 4]))],
                          cycles=rng.randint(0, 900))
        name = f"xiaoxiang-{n:03d}" if protocol == "jbd" else f"DL-{n:03d}"
        radio.add(EmulatedPack(f"C0:D6:3C:00:{n >> 8:02X}:{n & 0xFF:02X}", name, protocol, state, latency_s=latency_s))
    return radio


class EmulatedScanner(BaseBleakScanner):
    """Bleak scanner backend: advertises every pack of ``radio`` in range (name and service UUID)."""

    def __init__(self, detection_callback: Any, service_uuids: list[str] | None, scanning_mode: str = "active", *,
                 radio: Radio, **kwargs: Any) -> None:
        super().__init__(detection_callback, service_uuids)
        self.radio = radio

    async def start(self) -> None:
        self.seen_devices = {}
        for pack in self.radio.packs.values():
            if not pack.in_range:
                continue
            adv = AdvertisementData(local_name=pack.name, manufacturer_data={}, service_data={},
                                    service_uuids=[pack.spec.service_uuid], tx_power=None, rssi=pack.rssi,
                                    platform_data=())
            if not self.is_allowed_uuid(adv.service_uuids):
                continue
            device = self.create_or_update_device(pack.address, pack.address, pack.name, pack, adv)
            self.call_detection_callbacks(device, adv)

    async def stop(self) -> None:
        return None


class EmulatedClient(BaseBleakClient):
    """Bleak client backend connected to an :class:`EmulatedPack` (the ``details`` of its BLEDevice)."""

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=kwargs.get("disconnected_callback"),
                         timeout=kwargs.get("timeout", 10.0))
        if not isinstance(address_or_ble_device, BLEDevice) or not isinstance(address_or_ble_device.details,
                                                                                EmulatedPack):
            raise BleakError("the emulated backend connects to devices found by EmulatedScanner")
        self.pack: EmulatedPack = address_or_ble_device.details
        self._connected = False
        self._notify: NotifyCallback | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return self.pack.name

    @property
    def mtu_size(self) -> int:
        return self.pack.mtu

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        pack, radio = self.pack, self.pack.radio
        assert radio is not None
        if radio.connect_latency_s:
            await asyncio.sleep(radio.connect_latency_s)
        if radio.wedged:
            radio.refused += 1
            raise BleakError("[org.bluez.Error.InProgress] Operation already in progress (adapter wedged)")
        if not pack.in_range:
            raise BleakDeviceNotFoundError(pack.address, f"Device with address {pack.address} was not found.")
        if pack.client is not None:
            radio.refused += 1
            raise BleakError(f"{pack.address}: the BMS already has a connection (it takes one at a time)")
        if radio.max_connections is not None and radio.open >= radio.max_connections:
            radio.refused += 1
            raise BleakError("[org.bluez.Error.Failed] no connection slot available (out of connection slots)")
        self.services = self._services()  # discovery first: a real backend drops the link if it fails
        pack.client = self
        self._connected = True
        radio.connects += 1
        radio.open += 1
        radio.peak_open = max(radio.peak_open, radio.open)

    def _services(self) -> BleakGATTServiceCollection:
        spec = self.pack.spec
        services = BleakGATTServiceCollection()
        service = BleakGATTService(None, 10, spec.service_uuid)
        services.add_service(service)
        chars: tuple[tuple[int, str, list[CharacteristicPropertyName]], ...] = (
            (11, spec.notify_uuid, ["read", "notify"]), (14, spec.write_uuid, ["read", "write-without-response", "write"]))
        for handle, uuid, props in chars:
            char = BleakGATTCharacteristic(None, handle, uuid, props, lambda: self.pack.mtu - 3, service)
            services.add_characteristic(char)
        return services

    def _release(self) -> None:
        if not self._connected:
            return
        self._connected = False
        self._notify = None
        for task in self._tasks:
            task.cancel()
        radio = self.pack.radio
        assert radio is not None
        radio.open -= 1
        radio.disconnects += 1
        if self.pack.client is self:
            self.pack.client = None

    def lose_link(self, notice_after_s: float = 0.0) -> None:
        """The link dropped without our asking: release, then tell bleak's user (disconnected callback)."""
        if not self._connected:
            return
        self._release()
        if self._disconnected_callback is not None:
            asyncio.get_running_loop().call_later(notice_after_s, self._disconnected_callback)

    async def disconnect(self) -> None:
        self._release()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def unpair(self) -> None:
        return None

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False,
                             **kwargs: Any) -> bytearray:
        self._require()
        return bytearray()

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False,
                                   **kwargs: Any) -> bytearray:
        self._require()
        return bytearray()

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        self._require()

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback,
                           **kwargs: Any) -> None:
        self._require()
        if characteristic.uuid != self.pack.spec.notify_uuid:
            raise BleakError(f"characteristic {characteristic.uuid} does not notify")
        self._notify = callback

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        self._require()
        self._notify = None

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: Any, response: bool) -> None:
        self._require()
        if characteristic.uuid != self.pack.spec.write_uuid:
            raise BleakError(f"characteristic {characteristic.uuid} is not writable")
        pack = self.pack
        pack.requests += 1
        if pack.drop_after is not None:
            if pack.drop_after <= 0:
                pack.drop_after = None
                self.lose_link()
                return
            pack.drop_after -= 1
        if pack.silent:
            pack.silent -= 1
            return
        frames = pack.answer(bytes(data))
        if frames and pack.corrupt:
            pack.corrupt -= 1
            last = bytearray(frames[-1])
            last[-2 if pack.protocol == "jbd" else -1] ^= 0x5A
            frames[-1] = bytes(last)
        stream = b"".join(frames)
        if pack.garbage and stream and pack.radio is not None:
            pack.garbage -= 1
            stream = bytes(pack.radio.rng.randrange(256) for _ in range(7)).replace(
                bytes((pack.spec.start_byte,)), b"\x00") + stream
        if stream:
            task = asyncio.get_running_loop().create_task(self._send(stream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, stream: bytes) -> None:
        chunk = self.pack.mtu - 3
        for at in range(0, len(stream), chunk):
            if self.pack.latency_s:
                await asyncio.sleep(self.pack.latency_s)
            else:
                await asyncio.sleep(0)
            callback = self._notify
            if not self._connected or callback is None:
                return
            callback(bytearray(stream[at:at + chunk]))

    def _require(self) -> None:
        if not self._connected:
            raise BleakError("Not connected")

