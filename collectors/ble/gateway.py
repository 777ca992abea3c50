"""The BLE battery gateway: find JBD and Daly packs, poll them over a bounded set of connections,
hand each reading to the uplink.

    cascade gateway --gateway-id G000001 --fleet bj --mqtt-host broker.example --mqtt-ca ca.pem
    cascade gateway --gateway-id V000001 --fleet bj --mqtt-port 1883 --emulate 8     # no radio needed

* **Scan** (:func:`match_pack`): a pack is one whose advertisement carries a known service UUID
  (JBD FF00, Daly FFF0) or name, and whose name starts with an accepted prefix (``--name-prefix``;
  defaults per protocol) — or whose address is on the allow-list (``--allow``), which then is the only
  filter. Re-scanned every ``--rescan`` seconds for packs swapped in.
* **Schedule**: ``--max-connections`` workers (adapters hold 3–10 links; a BMS takes one). With no
  more packs than workers each pack keeps its connection; with more, packs take turns round-robin by
  due time and a worker disconnects after each poll so the next pack gets the slot.
* **Connect** through bleak-retry-connector (``establish_connection``: retries with back-off by
  error kind), after closing a stale BlueZ connection to the pack (a JBD BMS takes one connection
  and stays locked by a forgotten one until power-cycled). After every (re)connect the notify
  subscription is made again. Failures back off per pack (capped, jittered); an unsolicited
  disconnect reconnects at once.
* **Adapter recovery**: ``--adapter-reset-after`` connects failing in a row across all packs means the
  adapter, not the packs, is wedged: it is power-cycled (BlueZ ``Adapter1.Powered`` off/on).
* **Sessions are always closed**: after a failed poll, on rotation, and on exit or cancellation
  (each disconnect shielded from cancellation and bounded in time).
* **Frames** are checked by the protocol (``jbd``, ``daly``); a bad one is counted by reason, logged
  once per pack and reason, and its request retried once; values a pack cannot have measured are
  dropped (``frames.check_plausible``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web
from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakError
from bleak_retry_connector import close_stale_connections, establish_connection

from collectors.runner import backoff_delay
from core.errors import CascadeError
from core.tasks import cancel_and_wait

from . import daly, jbd
from .commands import CommandListener
from .frames import BmsProtocol, FrameError, PackSample, Reassembler, Step, check_plausible
from .uplink import DiskBuffer, Uplink, UplinkSettings
from .wire import PackBattery, PackEntry, PackReport, encode, topic

__all__ = ["PROTOCOLS", "Gateway", "GatewaySettings", "MosfetResult", "PackSession", "SlotMap", "add_arguments", "match_pack",
           "pack_entry", "run"]

log = logging.getLogger("cascade.ble.gateway")

PROTOCOLS: dict[str, BmsProtocol] = {"jbd": jbd.PROTOCOL, "daly": daly.PROTOCOL}
_BY_UUID = {p.service_uuid: p for p in PROTOCOLS.values()}
_TRANSPORT_ERRORS = (BleakError, TimeoutError, EOFError, OSError)
Discover = Callable[[float], Awaitable[dict[str, tuple[BLEDevice, AdvertisementData]]]]
"""A scan of ``seconds``: address → (device, advertisement), as ``BleakScanner.discover(return_adv=True)``."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """What the gateway does; checked at start-up (:meth:`check`)."""

    gateway_id: str
    fleet: str
    interval_s: float = 10.0
    max_connections: int = 3
    allow: frozenset[str] = frozenset()
    name_prefixes: tuple[str, ...] = ()
    scan_timeout_s: float = 8.0
    rescan_s: float = 300.0
    request_timeout_s: float = 3.0
    connect_attempts: int = 3
    batch_s: float = 1.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    adapter_reset_after: int = 6
    state_file: str | None = None
    mosfet_allow: frozenset[str] = frozenset()  # packs whose MOSFETs may be switched off; none by default
    audit_file: str | None = None  # where each MOSFET command and its read-back is recorded (JSON lines)
    # A BMS does not say its chemistry: the site does (the voltage rules are relative to the nominal voltage
    # of chemistry × cells). None: unknown, and those rules say so.
    chemistry: str | None = None

    def check(self) -> GatewaySettings:
        """Raise :class:`CascadeError` naming the flag and the fix for a setting that cannot work."""
        for key, value in (("--gateway-id", self.gateway_id), ("--fleet", self.fleet)):
            if not value or not value.replace("-", "").replace("_", "").replace(".", "").isalnum() or len(value) > 64:
                raise CascadeError(f"{value!r} is not an id", key=key, fix="use 1-64 letters, digits, '.', '_' or '-'")
        if self.interval_s <= 0 or self.batch_s <= 0 or self.request_timeout_s <= 0:
            raise CascadeError("intervals and time-outs must be positive", key="--interval/--batch/--request-timeout",
                               fix="give seconds > 0")
        if not 1 <= self.max_connections <= 32:
            raise CascadeError(f"{self.max_connections} connections", key="--max-connections",
                               fix="use 1-32 (adapters hold 3-10 links at once)")
        return self


def match_pack(device: BLEDevice, adv: AdvertisementData, settings: GatewaySettings) -> BmsProtocol | None:
    """The protocol of an advertised BMS the gateway should poll, or ``None``."""
    name = (adv.local_name or device.name or "").lower()
    protocol = next((_BY_UUID[u.lower()] for u in adv.service_uuids if u.lower() in _BY_UUID), None)
    if protocol is None:
        protocol = next((p for p in PROTOCOLS.values() if name.startswith(p.name_prefixes)), None)
    if protocol is None:
        return None
    if settings.allow:
        return protocol if device.address.upper() in settings.allow else None
    prefixes = settings.name_prefixes or protocol.name_prefixes
    return protocol if name.startswith(tuple(p.lower() for p in prefixes)) else None


class SlotMap:
    """Stable small slot numbers per pack address, kept in the gateway's state file (JSON)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.slots: dict[str, int] = {}
        if self.path is not None and self.path.exists():
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                self.slots = {str(k): int(v) for k, v in raw.get("slots", {}).items()}
            except (OSError, ValueError, AttributeError) as err:
                raise CascadeError(f"is not a gateway state file: {err}", source=self.path,
                                   fix="delete it (packs get new slot numbers) or restore it") from None

    def slot(self, address: str) -> int:
        """The pack's slot; a new pack gets the smallest free number, saved at once."""
        address = address.upper()
        found = self.slots.get(address)
        if found is not None:
            return found
        taken = set(self.slots.values())
        number = next(n for n in itertools.count(1) if n not in taken)
        self.slots[address] = number
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"slots": self.slots}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        return number


class PackSession:
    """One open connection to one pack: notifications reassembled into frames, requests answered.

        session = await PackSession.open(device, jbd.PROTOCOL, client_backend=None)
        try:
            sample = await session.poll()
        finally:
            await session.close()
    """

    def __init__(self, client: BleakClient, protocol: BmsProtocol, request_timeout_s: float) -> None:
        self.client = client
        self.protocol = protocol
        self.request_timeout_s = request_timeout_s
        self.reassembler = Reassembler(protocol)
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.lost = False
        self.closing = False
        self.done_once: set[int] = set()
        self.frame_errors: list[FrameError] = []

    @classmethod
    async def open(cls, device: BLEDevice, protocol: BmsProtocol, *, client_backend: type[BaseBleakClient] | None,
                   request_timeout_s: float = 3.0, attempts: int = 3,
                   on_lost: Callable[[], None] | None = None,
                   client_class: type[BleakClient] = BleakClient) -> PackSession:
        await close_stale_connections(device)  # a forgotten link (another process, a crash) locks a JBD pack
        holder: list[PackSession] = []

        def disconnected(_client: BleakClient) -> None:
            # BlueZ reports our own disconnects too; only an unsolicited one is a lost link
            if holder and not holder[0].closing:
                holder[0]._link_lost()
                if on_lost is not None:
                    on_lost()

        kwargs: dict[str, Any] = {"backend": client_backend} if client_backend is not None else {}
        client = await establish_connection(client_class, device, device.name or device.address,
                                            disconnected_callback=disconnected, max_attempts=attempts, **kwargs)
        session = cls(client, protocol, request_timeout_s)
        holder.append(session)
        try:
            await client.start_notify(protocol.notify_uuid, session._notified)
        except BaseException:
            await session.close()
            raise
        return session

    @property
    def connected(self) -> bool:
        return not self.lost and self.client.is_connected

    def _link_lost(self) -> None:
        self.lost = True
        self.frames.put_nowait(None)  # wake a waiting request now, not at its time-out

    def _notified(self, _char: object, data: bytearray) -> None:
        for frame in self.reassembler.feed(data):
            self.frames.put_nowait(frame)
        self.frame_errors.extend(self.reassembler.take_errors())

    async def poll(self) -> PackSample:
        """Run the protocol's requests; the sample, checked for plausibility. Raises
        :class:`FrameError` (a required answer was bad twice) or a transport error."""
        sample = PackSample()
        for step in self.protocol.steps:
            if step.once and step.command in self.done_once:
                continue
            if await self._step(step, sample) and step.once:
                self.done_once.add(step.command)
        return check_plausible(sample)

    async def _step(self, step: Step, sample: PackSample) -> bool:
        """One request, asked again once after a bad frame; False when an optional one failed."""
        for attempt in (1, 2):
            try:
                await self._exchange(step, sample)
                return True
            except FrameError as err:
                if attempt == 2 and step.required:
                    raise
                self.frame_errors.append(err)
            except TimeoutError:
                if step.required:
                    raise
                return False
        return False

    async def _exchange(self, step: Step, sample: PackSample) -> None:
        if self.lost:
            raise BleakError("link lost")
        self.reassembler.reset()
        while not self.frames.empty():
            if self.frames.get_nowait() is None:
                raise BleakError("link lost")
        await self.client.write_gatt_char(self.protocol.write_uuid, step.request, response=False)
        wanted = max(1, step.frames(sample))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout_s * wanted
        got = 0
        while got < wanted:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no answer to 0x{step.command:02x} in {self.request_timeout_s * wanted:.1f} s")
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # arrives with the frame, and a cancelled worker would poll on with its link open
                async with asyncio.timeout(remaining):
                    frame = await self.frames.get()
            except TimeoutError:
                raise TimeoutError(f"no answer to 0x{step.command:02x} in {self.request_timeout_s * wanted:.1f} s"
                                   ) from None
            if frame is None:
                raise BleakError("link lost")
            if self.protocol.command_of(frame) != step.command:
                self.frame_errors.append(FrameError("command", f"unrequested answer 0x{frame[1]:02x}"))
                continue
            self.protocol.decode(step.command, frame, sample)
            got += 1

    async def switch_mosfets(self, *, charge_off: bool, discharge_off: bool) -> tuple[PackSample, PackSample]:
        """Switch the charge and/or discharge MOSFET off with the BMS's own command — never on: a MOSFET
        already off stays off — and read the state back. Returns the states before and after.

        JBD: 0xE1 with the wanted state, read back in 0x03; when the pack acknowledged but still reads
        back on, once more inside factory mode (some firmware takes 0xE1 only there), always leaving it.
        Daly: 0xDA (charge) / 0xD9 (discharge) off, read back in 0x93."""
        if self.protocol.name == "daly":
            return await self._daly_off(charge_off, discharge_off)
        basic = next(step for step in self.protocol.steps if step.command == jbd.BASIC)
        before = PackSample()
        await self._exchange(basic, before)
        charge_on = bool(before.mosfet_charge) and not charge_off
        discharge_on = bool(before.mosfet_discharge) and not discharge_off
        write = Step(jbd.MOSFET, jbd.mosfet_request(charge_on=charge_on, discharge_on=discharge_on))
        try:
            await self._exchange(write, PackSample())
        except FrameError as err:
            if err.reason != "status":  # refused (0x80): firmware that takes 0xE1 only in factory mode
                raise
        else:
            after = PackSample()
            await self._exchange(basic, after)
            if _switched(after, charge_off, discharge_off):
                return before, after
        enter, leave = jbd.factory_requests()
        await self._exchange(Step(jbd.FACTORY_ENTER, enter), PackSample())
        try:
            await self._exchange(write, PackSample())
        finally:
            await self._exchange(Step(jbd.FACTORY_EXIT, leave), PackSample())
        after = PackSample()
        await self._exchange(basic, after)
        return before, after

    async def _daly_off(self, charge_off: bool, discharge_off: bool) -> tuple[PackSample, PackSample]:
        state = next(step for step in self.protocol.steps if step.command == daly.MOSFET)
        before = PackSample()
        await self._exchange(state, before)
        for wanted, command in ((charge_off, daly.CHARGE_MOS), (discharge_off, daly.DISCHARGE_MOS)):
            if wanted:  # only "off" is ever written; the other MOSFET is left alone
                await self._exchange(Step(command, daly.mosfet_request(command, on=False)), PackSample())
        after = PackSample()
        await self._exchange(state, after)
        return before, after

    async def close(self) -> None:
        """Disconnect; safe to call twice, shielded from cancellation, bounded in time."""
        client = self.client
        self.closing = self.lost = True
        with contextlib.suppress(*_TRANSPORT_ERRORS):
            async with asyncio.timeout(10.0):
                await asyncio.shield(client.disconnect())


@dataclass(eq=False, slots=True)
class _Pack:
    device: BLEDevice
    protocol: BmsProtocol
    slot: int
    name: str
    session: PackSession | None = None
    failures: int = 0
    due: float = 0.0
    state: str | None = None  # last logged state ("ok", "unreachable", "frame:checksum", ...)
    hardware: str | None = None
    done_once: set[int] = field(default_factory=set)
    problems: frozenset[str] = frozenset()
    seen_frame_errors: set[str] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one exchange at a time per pack


@dataclass(frozen=True, slots=True)
class MosfetResult:
    """What became of a MOSFET command: ``result`` is ``ok`` (read back as commanded), ``failed`` (not
    read back as commanded, or the pack did not answer) or ``refused`` (not allowed; nothing sent)."""

    address: str
    charge_off: bool
    discharge_off: bool
    actor: str
    reason: str
    result: str
    detail: str
    ts_ms: int
    before: dict[str, bool | None] = field(default_factory=dict)
    after: dict[str, bool | None] = field(default_factory=dict)


@dataclass(slots=True)
class GatewayStats:
    """Counters (exact): polls that produced a reading, failed polls by kind, bad frames by reason."""

    readings: int = 0
    reports: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    frame_errors: Counter[str] = field(default_factory=Counter)
    connects: int = 0
    disconnects: int = 0
    adapter_resets: int = 0
    reconnect_s: list[float] = field(default_factory=list)  # link lost → next reading of that pack


class Gateway:
    """Scan, schedule, poll, hand readings to the uplink; runs until cancelled and then closes every
    session. Dependencies are passed in: the uplink (anything with ``submit``), bleak backends
    (``None``: the platform's), scanner keyword arguments, the adapter reset, the clock."""

    def __init__(self, settings: GatewaySettings, uplink: Any, *,
                 scanner_backend: type[BaseBleakScanner] | None = None,
                 client_backend: type[BaseBleakClient] | None = None,
                 scanner_kwargs: dict[str, Any] | None = None,
                 reset_adapter: Callable[[], Awaitable[None]] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 seed: int | None = None, discover: Discover | None = None,
                 client_class: type[BleakClient] = BleakClient) -> None:
        self.settings = settings.check()
        self.discover = discover  # another radio's scan (ESPHome proxies: collectors/ble/esphome.py); None: bleak's
        self.client_class = client_class
        self.uplink = uplink
        self.scanner_backend = scanner_backend
        self.client_backend = client_backend
        self.scanner_kwargs = scanner_kwargs or {}
        self.reset_adapter = reset_adapter
        self.clock, self.wall = clock, wall
        self.rng = random.Random(seed)
        self.slots = SlotMap(settings.state_file)
        self.packs: dict[str, _Pack] = {}
        self.stats = GatewayStats()
        self._queue: asyncio.PriorityQueue[tuple[float, int, _Pack]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._batch: list[PackEntry] = []
        self._batch_ts = 0
        self._connect_failures = 0
        self._lost_at: dict[str, float] = {}
        self._links = asyncio.Semaphore(settings.max_connections)  # open BLE links, polls and commands alike
        self.scanned = asyncio.Event()
        self.radio: Any = None  # an async context the CLI enters around the gateway (ESPHome proxies)

    # -- discovery -------------------------------------------------------------------------------
    async def scan(self) -> int:
        """One scan; adds new packs to the schedule; returns how many were added."""
        kwargs: dict[str, Any] = dict(self.scanner_kwargs)
        if self.scanner_backend is not None:
            kwargs["backend"] = self.scanner_backend
        if self.discover is not None:
            found = await self.discover(self.settings.scan_timeout_s)
        else:
            found = await BleakScanner.discover(self.settings.scan_timeout_s, return_adv=True, **kwargs)
        added = 0
        for device, adv in found.values():
            address = device.address.upper()
            protocol = match_pack(device, adv, self.settings)
            if protocol is None:
                continue
            known = self.packs.get(address)
            if known is not None:
                known.device = device  # fresher handle (BlueZ path, RSSI)
                continue
            pack = _Pack(device, protocol, self.slots.slot(address), adv.local_name or device.name or address)
            self.packs[address] = pack
            self._queue.put_nowait((self.clock(), next(self._order), pack))
            added += 1
            log.info("pack %s (%s, %s) found: slot %d", address, pack.name, protocol.name, pack.slot)
        self.scanned.set()
        return added

    # -- running ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled. Every session is closed on the way out."""
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._first_scan()
            tasks = [asyncio.create_task(self._worker(), name=f"ble-worker-{n}")
                     for n in range(self.settings.max_connections)]
            tasks.append(asyncio.create_task(self._flusher(), name="ble-flush"))
            tasks.append(asyncio.create_task(self._rescanner(), name="ble-rescan"))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.shield(self.close())

    async def close(self) -> None:
        """Close every session and hand the last readings to the uplink."""
        await asyncio.gather(*(self._disconnect(p) for p in self.packs.values()), return_exceptions=True)
        self.flush()

    async def _first_scan(self) -> None:
        failures = 0
        while True:
            try:
                if await self.scan():
                    return
                log.warning("no BMS found; scanning again")
            except _TRANSPORT_ERRORS as err:
                log.warning("scan failed: %s", err)
            failures += 1
            await asyncio.sleep(backoff_delay(failures, 1.0, 60.0, self.rng))

    async def _rescanner(self) -> None:
        while True:
            await asyncio.sleep(self.settings.rescan_s)
            with contextlib.suppress(*_TRANSPORT_ERRORS):
                await self.scan()

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.settings.batch_s)
            self.flush()

    async def _worker(self) -> None:
        while True:
            due, _, pack = await self._queue.get()
            wait = due - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self._service(pack)
            finally:
                self._queue.put_nowait((pack.due, next(self._order), pack))

    async def _session(self, pack: _Pack) -> PackSession:
        """The pack's open session, connecting (within the link bound) when it has none."""
        if pack.session is not None and pack.session.connected:
            return pack.session
        if pack.session is not None and not pack.session.closing:
            # The link dropped and the radio's notice of it has not come yet (it is queued: BlueZ sends it
            # as a signal). The same event: counted and logged as a lost link now; the notice, arriving while
            # this session is closed below, is then taken for our own disconnect and ignored.
            self._link_lost(pack)
        await self._disconnect(pack)
        await self._links.acquire()
        try:
            session = await PackSession.open(
                pack.device, pack.protocol, client_backend=self.client_backend,
                request_timeout_s=self.settings.request_timeout_s, attempts=self.settings.connect_attempts,
                on_lost=lambda: self._link_lost(pack), client_class=self.client_class)
        except BaseException:
            self._links.release()
            raise
        session.done_once = pack.done_once  # identity reads (JBD 0x05) once per pack, not per connection
        pack.session = session
        self.stats.connects += 1
        self._connect_failures = 0
        return session

    async def _service(self, pack: _Pack) -> None:
        async with pack.lock:
            await self._poll(pack)

    async def _poll(self, pack: _Pack) -> None:
        started = self.clock()
        try:
            session = await self._session(pack)
        except _TRANSPORT_ERRORS as err:
            await self._connect_failed(pack, err)
            return
        try:
            sample = await session.poll()
        except FrameError as err:
            session.frame_errors.append(err)
            self._count_frame_errors(pack)
            self._failed(pack, f"frame:{err.reason}", str(err))
            await self._disconnect(pack)  # a fresh session: some modules garble after a half answer
            return
        except _TRANSPORT_ERRORS as err:
            self._count_frame_errors(pack)
            kind = "link_lost" if session.lost else "timeout" if isinstance(err, TimeoutError) else "ble"
            self._failed(pack, kind, str(err) or type(err).__name__, retry_now=kind == "link_lost")
            await self._disconnect(pack)
            return
        self._count_frame_errors(pack)
        self._succeeded(pack, sample, started)
        if len(self.packs) > self.settings.max_connections:
            await self._disconnect(pack)  # round-robin: free the link for the next pack

    def _link_lost(self, pack: _Pack) -> None:
        self._lost_at.setdefault(pack.device.address.upper(), self.clock())
        if pack.state != "link_lost":
            log.warning("pack %s (%s) lost its link; reconnecting", pack.device.address, pack.name)
            pack.state = "link_lost"

    async def _connect_failed(self, pack: _Pack, err: BaseException) -> None:
        self._connect_failures += 1
        self._failed(pack, "connect", str(err) or type(err).__name__)
        if self._connect_failures >= self.settings.adapter_reset_after and self.reset_adapter is not None:
            log.error("adapter: %d connects failed in a row across all packs; resetting the adapter",
                      self._connect_failures)
            self._connect_failures = 0
            self.stats.adapter_resets += 1
            try:
                await self.reset_adapter()
            except Exception as reset_err:  # a failed reset must not stop the gateway; the next try may work
                log.error("adapter reset failed: %s", reset_err)

    def _failed(self, pack: _Pack, kind: str, detail: str, *, retry_now: bool = False) -> None:
        self.stats.failures[kind] += 1
        pack.failures += 1
        delay = 0.0 if retry_now and pack.failures == 1 else backoff_delay(
            pack.failures - 1, self.settings.backoff_base_s, self.settings.backoff_cap_s, self.rng)
        pack.due = self.clock() + delay
        state = "unreachable" if kind in ("connect", "ble") else kind
        if pack.state != state:
            log.warning("pack %s (%s) %s: %s; retrying in %.2f s", pack.device.address, pack.name,
                        {"unreachable": "unreachable", "link_lost": "lost its link", "timeout": "not answering"}.get(
                            state, "sent a bad frame"), detail, delay)
            pack.state = state

    def _succeeded(self, pack: _Pack, sample: PackSample, started: float) -> None:
        address = pack.device.address.upper()
        if pack.state not in (None, "ok"):
            log.info("pack %s (%s) recovered", address, pack.name)
        lost = self._lost_at.pop(address, None)
        if lost is not None:
            self.stats.reconnect_s.append(self.clock() - lost)
        pack.state = "ok"
        pack.failures = 0
        pack.due = started + self.settings.interval_s
        if sample.hardware:
            pack.hardware = sample.hardware
        problems = frozenset(sample.problems)
        if problems != pack.problems:
            if problems:
                log.warning("pack %s (%s): implausible values dropped: %s", address, pack.name, "; ".join(problems))
            pack.problems = problems
        if any(e.address == address for e in self._batch):
            self.flush()  # one entry per pack and report
        if not self._batch:
            self._batch_ts = int(self.wall() * 1000)
        self._batch.append(pack_entry(address, pack.name, pack.protocol.name, pack.slot, sample, pack.hardware,
                                      chemistry=self.settings.chemistry))
        self.stats.readings += 1

    def _count_frame_errors(self, pack: _Pack) -> None:
        session = pack.session
        if session is None or not session.frame_errors:
            return
        for err in session.frame_errors:
            self.stats.frame_errors[err.reason] += 1
            if err.reason not in pack.seen_frame_errors:
                pack.seen_frame_errors.add(err.reason)
                log.warning("pack %s (%s): bad frame (%s): %s", pack.device.address, pack.name, err.reason, err)
        session.frame_errors.clear()

    async def _disconnect(self, pack: _Pack) -> None:
        session, pack.session = pack.session, None
        if session is not None:
            try:
                await session.close()
            finally:
                self._links.release()
                self.stats.disconnects += 1

    async def switch_off(self, address: str, *, charge: bool, discharge: bool, actor: str,
                         reason: str) -> MosfetResult:
        """Protective action: switch a pack's charge and/or discharge MOSFET off, read it back, and
        record who, what, when and the result in the audit file. Only packs on ``mosfet_allow`` (none by
        default); never switches a MOSFET on (re-enabling is done on site). Waits for the pack's turn if a
        poll is running and for a free link."""
        address = address.upper()
        pack = self.packs.get(address)
        refusal = None
        if address not in self.settings.mosfet_allow and "ALL" not in self.settings.mosfet_allow:
            refusal = "not on the MOSFET allow-list (--mosfet-allow)"
        elif pack is None:
            refusal = "no such pack at this gateway"
        elif not (charge or discharge):
            refusal = "nothing to switch off"
        if refusal is not None or pack is None:
            return self._audit(MosfetResult(address, charge, discharge, actor, reason, "refused", refusal or "",
                                            int(self.wall() * 1000)))
        async with pack.lock:
            try:
                before, after = await (await self._session(pack)).switch_mosfets(charge_off=charge,
                                                                                  discharge_off=discharge)
            except (*_TRANSPORT_ERRORS, FrameError) as err:
                await self._disconnect(pack)
                return self._audit(MosfetResult(address, charge, discharge, actor, reason, "failed",
                                                f"{type(err).__name__}: {err}", int(self.wall() * 1000)))
            finally:
                if len(self.packs) > self.settings.max_connections:
                    await self._disconnect(pack)
        read_back = _switched(after, charge, discharge)
        return self._audit(MosfetResult(
            address, charge, discharge, actor, reason, "ok" if read_back else "failed",
            "read back as commanded" if read_back else "the pack acknowledged but the read-back shows the MOSFET on",
            int(self.wall() * 1000), _fets(before), _fets(after)))

    def pack_at(self, slot: int) -> str | None:
        """The address of the pack this gateway polls at ``slot``, or None."""
        return next((address for address, pack in self.packs.items() if pack.slot == slot), None)

    def _audit(self, result: MosfetResult) -> MosfetResult:
        level = logging.INFO if result.result == "ok" else logging.ERROR
        log.log(level, "MOSFET command to %s by %s (%s): charge %s, discharge %s: %s, %s", result.address,
                result.actor, result.reason, "off" if result.charge_off else "unchanged",
                "off" if result.discharge_off else "unchanged", result.result, result.detail)
        if self.settings.audit_file:
            path = Path(self.settings.audit_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            record = {"gateway": self.settings.gateway_id, **{f: getattr(result, f) for f in MosfetResult.__slots__}}
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
        return result

    def flush(self) -> None:
        """Hand the readings collected so far to the uplink as one report."""
        if not self._batch:
            return
        packs, self._batch = self._batch, []
        ts, gateway = self._batch_ts, self.settings.gateway_id
        self.uplink.submit(lambda seq: encode(PackReport(gateway=gateway, seq=seq, ts=ts, packs=packs)))
        self.stats.reports += 1


def _switched(after: PackSample, charge_off: bool, discharge_off: bool) -> bool:
    """The read-back shows every MOSFET asked off as off."""
    return (not charge_off or after.mosfet_charge is False) and (not discharge_off or after.mosfet_discharge is False)


def _fets(sample: PackSample) -> dict[str, bool | None]:
    return {"charge": sample.mosfet_charge, "discharge": sample.mosfet_discharge}


def pack_entry(address: str, name: str, protocol: str, slot: int, s: PackSample,
               hardware: str | None = None, *, chemistry: str | None = None) -> PackEntry:
    """A checked sample as the uplink's pack entry (``battery`` in the vehicle report's terms).

    ``temperature_c`` is the hottest sensor (the pack's temperature for the rules: the worst case),
    ``cell_max_c`` / ``cell_min_c`` the hottest and coldest; the battery id is the BMS's BLE address
    (it is part of the pack and follows it across cabinets and vehicles)."""
    current = s.current_a
    state = None
    if current is not None:
        state = "charging" if current > 0.05 else "discharging" if current < -0.05 else \
            "full" if (s.soc_pct or 0) >= 100 else "idle"
    return PackEntry(
        address=address, name=name[:64], protocol=protocol, slot=slot,  # type: ignore[arg-type]
        protection_unmapped=s.protection_unmapped, hardware=hardware,
        battery=PackBattery(
            id=address.replace(":", ""), chemistry=chemistry, nominal_ah=s.nominal_ah,  # type: ignore[arg-type]
            cells=s.cell_count, soc_pct=s.soc_pct,
            temperature_c=s.temperature_max_c, voltage_v=s.voltage_v, current_a=current,
            cell_max_v=s.cell_max_v, cell_min_v=s.cell_min_v, cell_max_c=s.temperature_max_c,
            cell_min_c=s.temperature_min_c, state=state, cycles=s.cycles, protection=s.protection,  # type: ignore[arg-type]
            cell_v=list(s.cell_voltages_v) or None, mosfet_charge=s.mosfet_charge,
            mosfet_discharge=s.mosfet_discharge))


# -- adapter recovery -----------------------------------------------------------------------------
def bluez_adapter_reset(adapter: str = "hci0") -> Callable[[], Awaitable[None]]:
    """Power-cycle a BlueZ adapter over D-Bus (``org.bluez.Adapter1.Powered`` off, on), as
    ``bluetoothctl power off/on`` does. Needs the gateway's user in the ``bluetooth`` group (or polkit)."""

    async def reset() -> None:
        from dbus_fast import BusType, Variant
        from dbus_fast.aio import MessageBus

        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        try:
            path = f"/org/bluez/{adapter}"
            obj = bus.get_proxy_object("org.bluez", path, await bus.introspect("org.bluez", path))
            props = obj.get_interface("org.freedesktop.DBus.Properties")
            await props.call_set("org.bluez.Adapter1", "Powered", Variant("b", False))  # type: ignore[attr-defined]
            await asyncio.sleep(1.0)
            await props.call_set("org.bluez.Adapter1", "Powered", Variant("b", True))  # type: ignore[attr-defined]
        finally:
            bus.disconnect()

    return reset


# -- CLI -------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``cascade gateway``."""
    g = parser.add_argument_group("identity")
    g.add_argument("--gateway-id", required=True, help="this gateway's id = its MQTT user (e.g. G000001)")
    g.add_argument("--fleet", required=True, help="fleet (topic level): cascade/v1/<fleet>/<gateway>/packs")
    m = parser.add_argument_group("uplink (MQTT 5)")
    m.add_argument("--mqtt-host", default="127.0.0.1")
    m.add_argument("--mqtt-port", type=int, default=8883)
    m.add_argument("--mqtt-user", help="MQTT user (default: the gateway id)")
    m.add_argument("--mqtt-password-file", help="file holding the gateway's secret (default: $CASCADE_MQTT_PASSWORD)")
    m.add_argument("--mqtt-ca", help="CA certificate (PEM) to verify the broker; TLS when given")
    m.add_argument("--buffer-dir", default="var/ble-gateway", help="disk buffer and state file (default %(default)s)")
    m.add_argument("--buffer-bytes", type=int, default=64 << 20,
                   help="disk buffer bound; when full the oldest reports go (default %(default)s)")
    b = parser.add_argument_group("Bluetooth")
    b.add_argument("--allow", action="append", default=[], metavar="MAC",
                   help="poll only these pack addresses (repeatable); default: every pack the scan filter matches")
    b.add_argument("--name-prefix", action="append", default=[],
                   help="accept advertised names starting so (repeatable; default per protocol: xiaoxiang, jbd, sp…, daly, dl-)")
    b.add_argument("--max-connections", type=int, default=3, help="BLE links open at once (default %(default)s)")
    b.add_argument("--interval", type=float, default=10.0, help="seconds between polls of one pack (default %(default)s)")
    b.add_argument("--request-timeout", type=float, default=3.0, help="seconds to wait for an answer")
    b.add_argument("--scan-timeout", type=float, default=8.0)
    b.add_argument("--rescan", type=float, default=300.0, help="seconds between scans for new packs")
    b.add_argument("--batch", type=float, default=1.0, help="seconds of readings per report")
    b.add_argument("--adapter", default="hci0", help="BlueZ adapter (default %(default)s)")
    b.add_argument("--adapter-reset-after", type=int, default=6,
                   help="connect failures in a row (all packs) after which the adapter is power-cycled")
    b.add_argument("--mosfet-allow", action="append", default=[], metavar="MAC",
                   help="packs whose charge/discharge MOSFETs a protective action may switch off (repeatable; "
                        "'all' for every pack; default none); commands arrive on the gateway's own cmd topic, each "
                        "is read back, answered with the read-back and recorded in <buffer-dir>/mosfet-audit.jsonl")
    b.add_argument("--emulate", type=int, metavar="N", help="no radio: poll N emulated JBD/Daly packs")
    b.add_argument("--esphome", metavar="HOST:PORT[,...]",
                   help="use ESPHome Bluetooth proxies as the radio instead of the local adapter (bleak-esphome; "
                        "port 6053 by default; needs pip install 'cascade[esphome]')")
    b.add_argument("--esphome-key-file", metavar="FILE",
                   help="the proxies' API encryption key (Noise PSK, base64; default: $CASCADE_ESPHOME_KEY, "
                        "else unencrypted)")
    parser.add_argument("--chemistry", choices=("LFP", "NMC", "LMO", "NA_ION", "LTO"), default=None,
                        help="the packs' chemistry (a BMS does not report it): with the cell count it gives the "
                             "nominal voltage the voltage rules need (default: unknown, and they say so)")
    parser.add_argument("--metrics-port", type=int, default=0, metavar="PORT",
                        help="serve Prometheus /metrics on 127.0.0.1:PORT (default 0: off)")


def _password(args: argparse.Namespace) -> str:
    if args.mqtt_password_file:
        try:
            return Path(args.mqtt_password_file).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise CascadeError(f"cannot be read: {err.strerror}", source=args.mqtt_password_file,
                               fix="give the file holding the gateway's secret") from None
    password = os.environ.get("CASCADE_MQTT_PASSWORD", "")
    if not password:
        raise CascadeError("no MQTT password", key="--mqtt-password-file",
                           fix="give --mqtt-password-file or set CASCADE_MQTT_PASSWORD")
    return password


def build_listener(args: argparse.Namespace, gateway: Gateway, uplink: Uplink) -> CommandListener:
    """The gateway's downlink (protective MOSFET commands), as the uplink's broker user."""
    s = uplink.settings
    return CommandListener(gateway, host=s.host, port=s.port, username=s.username, password=s.password,
                           tls_ca=s.tls_ca, keepalive_s=s.keepalive_s)


def build(args: argparse.Namespace) -> tuple[Gateway, Uplink]:
    """The gateway and its uplink from the flags (errors name the flag and the fix)."""
    buffer_dir = Path(args.buffer_dir)
    settings = GatewaySettings(
        gateway_id=args.gateway_id, fleet=args.fleet, interval_s=args.interval, max_connections=args.max_connections,
        allow=frozenset(a.upper() for a in args.allow), name_prefixes=tuple(args.name_prefix),
        scan_timeout_s=args.scan_timeout, rescan_s=args.rescan, request_timeout_s=args.request_timeout,
        batch_s=args.batch, adapter_reset_after=args.adapter_reset_after,
        state_file=str(buffer_dir / "state.json"), mosfet_allow=frozenset(a.upper() for a in args.mosfet_allow),
        audit_file=str(buffer_dir / "mosfet-audit.jsonl"), chemistry=args.chemistry).check()
    uplink = Uplink(UplinkSettings(host=args.mqtt_host, port=args.mqtt_port, username=args.mqtt_user or args.gateway_id,
                                   password=_password(args), topic=topic(args.fleet, args.gateway_id),
                                   tls_ca=args.mqtt_ca, client_id=f"gateway-{args.gateway_id}"),
                    DiskBuffer(buffer_dir / "buffer", max_bytes=args.buffer_bytes))
    if args.emulate:
        from .emulator import EmulatedClient, EmulatedScanner, make_radio

        radio = make_radio(args.emulate)

        async def reset() -> None:
            radio.reset_adapter()

        settings = replace(settings, scan_timeout_s=min(settings.scan_timeout_s, 0.2))  # emulated packs answer at once
        return Gateway(settings, uplink, scanner_backend=EmulatedScanner, client_backend=EmulatedClient,
                       scanner_kwargs={"radio": radio}, reset_adapter=reset), uplink
    if getattr(args, "esphome", None):
        radio = esphome_radio(args)
        gateway = Gateway(settings, uplink, discover=radio.discover, client_class=radio.client_class)
        gateway.radio = radio  # entered by run(): the proxies' API connections
        return gateway, uplink
    return Gateway(settings, uplink, scanner_kwargs={"bluez": {"adapter": args.adapter}},
                   reset_adapter=bluez_adapter_reset(args.adapter)), uplink


def esphome_radio(args: argparse.Namespace) -> Any:
    """The ESPHome proxies of ``--esphome`` (collectors/ble/esphome.py); an error names the flag and the fix."""
    from .esphome import parse_proxies, read_key

    proxies, key = parse_proxies(args.esphome), read_key(getattr(args, "esphome_key_file", None))
    try:
        from .esphome import EsphomeRadio

        return EsphomeRadio(proxies, noise_psk=key)
    except ImportError as err:
        raise CascadeError(f"ESPHome proxies need bleak-esphome ({err.name} is missing)", key="--esphome",
                           fix="pip install -c constraints.txt 'cascade[esphome]'") from None


_STOP_TIMEOUT_S = 5.0  # how long run() waits for its tasks after cancelling them


async def run(args: argparse.Namespace) -> int:
    """``cascade gateway``: run until SIGINT/SIGTERM; every session closed and the buffer on disk."""
    try:
        gateway, uplink = build(args)
    except CascadeError as err:
        log.error("%s", err)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    radio = getattr(gateway, "radio", None)
    if radio is not None:
        await radio.__aenter__()
    tasks = [asyncio.create_task(gateway.run(), name="ble-gateway"), asyncio.create_task(uplink.run(), name="uplink"),
             asyncio.create_task(build_listener(args, gateway, uplink).run(), name="gateway-commands")]
    metrics: web.AppRunner | None = None
    try:
        if getattr(args, "metrics_port", 0):
            metrics = await _serve_metrics(gateway, uplink, args.metrics_port)
        await _until(stop, tasks)
    finally:
        if metrics is not None:
            await metrics.cleanup()
        # Bounded: a task that ignores its cancellation (a client library stuck in a connect) must not keep
        # the gateway from stopping; it is named in the log and left behind. Errors were raised (and
        # logged) by _until already.
        await cancel_and_wait(tasks, timeout_s=_STOP_TIMEOUT_S, what="gateway task", log=log)
        if radio is not None:
            await radio.__aexit__(None, None, None)
        log.info("gateway stopped: %d readings in %d reports; uplink %s", gateway.stats.readings,
                 gateway.stats.reports, uplink.counters())
    return 0


async def _serve_metrics(gateway: Gateway, uplink: Any, port: int) -> web.AppRunner:
    """``/metrics`` on 127.0.0.1:``port`` from the gateway's counters (collectors/ble/metrics.py)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from .metrics import registry_for

    registry = registry_for(gateway, uplink)

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _until(stop: asyncio.Event, tasks: Sequence[asyncio.Task[None]]) -> None:
    waiter = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        waiter.cancel()
