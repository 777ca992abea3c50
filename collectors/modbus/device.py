"""One Modbus TCP cabinet: one connection, planned reads, commands.

    cabinet = ModbusCabinet(CabinetConfig(id="C0001", host="10.0.0.5", port=502), profile)
    poll = await cabinet.fetch()          # core.events.Report(reading, errors, requests)
    result = await cabinet.command("slot_output", slot=3, value=False, actor="rule:thermal_runaway")

**Safety fast lane.** With ``fast_interval_s`` below ``interval_s`` (the default: 1 s against 5 s) the
runner polls the cabinet every ``fast_interval_s``. A poll is *full* (the whole read plan) when
``interval_s`` has passed since the last full one, else *fast*: only the reads of a second plan,
planned by the same planner restricted to :data:`SAFETY_FIELDS` (gas, smoke, flame, alarm and
protection words, pack temperatures, emergency state). A fast poll is merged into the last full
reading: the safety fields are the fresh values (``None`` included: a sensor that stopped answering
is news), every other field is carried from the full poll, and the timestamp is the fast poll's. So
the warning engine always sees a complete reading and no rule sees a field vanish: nothing clears,
goes stale or reads as a lost sensor because a fast poll does not read it. The merged reading is
delivered ``watch_only`` (evaluated, not stored: InfluxDB and the gauges keep the normal interval;
an alert records the value that raised it). A fast poll happens only within ``interval_s`` of a
successful full poll: after a failed one every poll is full again, so carried values are never
older than one interval. Rates and windows in the rules run on the fields the fast lane refreshes.

**Requests in flight.** One at a time by default: many Modbus TCP devices answer the first of several
queued requests and drop the rest. A cabinet configured with ``max_in_flight`` N > 1 (its documentation
says it queues requests) gets its plan's reads pipelined, N written at once (:meth:`ModbusTcpLink.read_many`):
the same answers, one round trip per N reads instead of per read; each answer has the whole timeout from
the one before. A read answered "busy" is then asked again on its own, that answer counting as its first
attempt (the same retries and backoff as one at a time); a lost or out-of-step connection fails the poll
as before.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from collections.abc import Callable, Sequence

from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from collectors.runner import PollFailed
from core.events import CommandResult, Report
from core.model import BatteryState, CabinetReading

from .decode import FieldError, shared_decoder
from .planner import ReadRequest, shared_plan
from .profile import Profile
from .settings import CabinetConfig
from .tcp import ModbusTcpLink

__all__ = ["KIND", "SAFETY_FIELDS", "CabinetConfig", "ModbusCabinet", "merge_fast"]

KIND = "modbus"  # the source kind: metrics label and config name

SAFETY_FIELDS = frozenset({
    # cabinet: fire and gas detection, alarm words, the ambient baseline of the slot temperature rules
    "emergency_state", "flame_detected", "smoke_detected", "water_detected", "co_ppm", "co2_ppm",
    "cabinet_h2_ppm", "cabinet_voc_ppm", "cabinet_temperature_c", "device_fault_code",
    # slot: every input of the thermal-runaway fusion and of the temperature, gas and protection rules,
    # and the battery state (an empty slot's zeros are not pack values, alerting/engine.py)
    "temperature_c", "cell_temperature_max_c", "cell_temperature_min_c", "surface_temperature_c",
    "h2_ppm", "voc_ppm", "module_pressure_kpa", "valve_acoustic_events", "bms_protection",
    "charger_protection", "battery_state",
})
"""The fields the safety fast lane reads (those a profile maps; its ``bits`` words with their unmapped bits)."""

log = logging.getLogger("cascade.collectors.modbus")

_BUSY = 0x06  # Modbus exception code "server device busy": the only one worth retrying
# Modbus exception codes (Modbus Application Protocol v1.1b3, section 7) and what to check first.
_EXCEPTIONS: dict[int, tuple[str, str]] = {
    1: ("illegal function", "the profile's register type (holding/input/coil/discrete) for this device"),
    2: ("illegal data address", "the profile's addresses and slots.base/stride against the vendor's map"),
    3: ("illegal data value", "the read sizes: lower the profile's max_gap or this device's read limit"),
    4: ("server device failure", "the unit id (device_id): many gateways answer 4 for a unit that does not "
                                 "exist; then the device itself"),
    6: ("server device busy", "the poll interval and other masters polling the same device"),
    10: ("gateway path unavailable", "the gateway's routing and the unit id (device_id)"),
    11: ("gateway target failed to respond", "the unit id (device_id) and the serial line behind the gateway"),
}
_READ = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}
_FUNCTION = {"read_coils": 1, "read_discrete_inputs": 2, "read_holding_registers": 3, "read_input_registers": 4}
_METHOD = {code: method for method, code in _FUNCTION.items()}


class ModbusCabinet:
    """A cabinet polled through its profile's precomputed read plan."""

    def __init__(self, config: CabinetConfig, profile: Profile, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.profile = profile
        self.name = config.id
        self.slot_count = config.slots or profile.slot_count
        # Shared by every cabinet of the same profile, slot count and gap (collectors/modbus/planner.py).
        self.plan: tuple[ReadRequest, ...] = shared_plan(profile, self.slot_count, max_gap=config.max_gap)
        fast = config.fast_interval_s
        self.fast_plan: tuple[ReadRequest, ...] | None = None
        if fast is not None and fast < config.interval_s:
            plan = shared_plan(profile, self.slot_count, max_gap=config.max_gap, only=SAFETY_FIELDS)
            if plan and len(plan) < len(self.plan):  # a lane that reads as much as a full poll is no lane
                self.fast_plan = plan
        # Each plan compiled to one decoding function here, at start-up, not on the first poll (building one
        # takes 0.1-0.2 s); shared by every cabinet with the same plan (decode.shared_decoder).
        self._decode_full = shared_decoder(self.plan, self.slot_count)
        self._decode_fast = None if self.fast_plan is None else shared_decoder(self.fast_plan, self.slot_count)
        # What the runner schedules on: every fast poll when the lane is on, a full poll in between.
        self.interval_s: float = fast if fast is not None and self.fast_plan is not None else config.interval_s
        self._fast_names: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        if self.fast_plan is not None:
            names = [f for r in self.fast_plan for f in r.fields if not f.extra]
            self._fast_names = (tuple(sorted({f.name for f in names if f.slot is None})),
                                tuple(sorted({f.name for f in names if f.slot is not None})))
        self._last_full: CabinetReading | None = None
        self._full_at = 0.0  # monotonic start of the last successful full poll
        # The runner spreads first polls over one fast interval only: shift each cabinet's later full
        # polls by a phase of its own, so a fleet's full polls spread over the whole interval.
        self._phase_s = random.Random(config.id).uniform(0.0, config.interval_s - self.interval_s)
        self._wall_clock = wall_clock
        self._client: ModbusTcpLink | None = None
        # One caller on the connection at a time: a poll's batch and a command's write never interleave.
        self._lock = asyncio.Lock()
        self._codes = tuple(_FUNCTION[_READ[r.register_type]] for r in self.plan)

    async def _connected(self) -> ModbusTcpLink:
        if self._client is not None and self._client.connected:
            return self._client
        if self._client is not None:
            self._client.close()
        # No retries and no automatic reconnect: the shared runner owns retry policy and backoff.
        client = ModbusTcpLink(self.config.host, self.config.port, timeout=self.config.timeout_s)
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as err:
            client.close()
            raise PollFailed("connect", f"cannot connect to {self.config.host}:{self.config.port}: {err}") from err
        if not ok:
            client.close()
            raise PollFailed("connect", f"cannot connect to {self.config.host}:{self.config.port}")
        self._client = client
        return client

    def _failed(self, method: str, err: Exception) -> PollFailed:
        """The link's error as the poll's failure; the connection is dropped (it may be out of step)."""
        self._drop()
        if isinstance(err, ModbusIOException):
            return PollFailed("timeout", f"no answer to {method}: {err}")
        if isinstance(err, (ConnectionException, OSError)):
            return PollFailed("connection", f"connection lost during {method}: {err}")
        return PollFailed("protocol", f"{method} failed: {err}")

    async def _call(self, method: str, *args, busy_already: bool = False, **kwargs):
        """One request with the connection lock held; retry only while the device says busy
        (``busy_already``: it said so to this request in a batch, its first attempt)."""
        async with self._lock:
            client = self._client
            if client is None or not client.connected:
                client = await self._connected()
            for attempt in range(1 if busy_already else 0, self.config.busy_retries + 1):
                if attempt:
                    await asyncio.sleep(self.config.busy_backoff_s * attempt)  # backing off, growing
                try:
                    response = await getattr(client, method)(*args, device_id=self.config.device_id, **kwargs)
                except (ModbusException, OSError) as err:
                    raise self._failed(method, err) from err
                if not response.isError():
                    return response
                code = getattr(response, "exception_code", None)
                if code != _BUSY or attempt == self.config.busy_retries:
                    raise PollFailed("busy" if code == _BUSY else "exception", self._exception_text(method, args, code))
        raise AssertionError("unreachable")

    def _exception_text(self, method: str, args: tuple[object, ...], code: int | None) -> str:
        """What a Modbus exception means for this device and what to check: names the unit id and
        function tried, because a wrong unit id behind a gateway looks like a device fault."""
        name, hint = _EXCEPTIONS.get(code or -1, ("unknown exception", "the device's manual"))
        at = f" at address {args[0]}" if args else ""
        return (f"{method}{at} to unit id {self.config.device_id} on {self.config.host}:{self.config.port} "
                f"answered Modbus exception {code} ({name}); check {hint}")

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def read_plan(self, plan: tuple[ReadRequest, ...] | None = None,
                        ) -> tuple[list[Sequence[int] | Sequence[bool] | None], list[str]]:
        """Run the read plan (default: the full one) once: the raw words (bits) of each planned read,
        ``None`` for a read the device refused with a Modbus exception (described in the second list).
        A lost connection raises :class:`PollFailed`. ``fetch`` decodes these; ``cascade probe`` shows
        them raw."""
        responses: list[Sequence[int] | Sequence[bool] | None] = []
        failed_detail: list[str] = []
        plan = self.plan if plan is None else plan
        batched = await self._read_batched(plan) if self.config.max_in_flight > 1 and len(plan) > 1 else None
        for i, request in enumerate(plan):
            try:
                if batched is not None and batched[i] is not None:
                    response = batched[i]
                    if isinstance(response, PollFailed):
                        raise response
                else:  # one at a time; in a batch: a read the device answered busy, retried on its own
                    response = await self._call(_READ[request.register_type], request.address, count=request.count,
                                                busy_already=batched is not None)
            except PollFailed as err:
                if err.kind != "exception":
                    raise
                failed_detail.append(f"{request.register_type} {request.address}+{request.count}: {err}")
                responses.append(None)
                continue
            values = response.bits if request.register_type in ("coil", "discrete") else response.registers
            if len(values) < request.count:
                raise PollFailed("short", f"{request.register_type} {request.address}: asked for "
                                          f"{request.count} values, got {len(values)}")
            responses.append(values)  # as the link parsed them (a tuple of words, a list of bits): only read
        return responses, failed_detail

    async def _read_batched(self, plan: Sequence[ReadRequest]) -> list:
        """The plan's reads, ``max_in_flight`` in flight at a time: each answer; a :class:`PollFailed` where
        the device refused the read (or said busy with no retries configured); ``None`` where it said busy
        (retried one at a time by the caller, this answer counting as the first attempt)."""
        codes = self._codes if plan is self.plan else [_FUNCTION[_READ[r.register_type]] for r in plan]
        step = self.config.max_in_flight
        out: list = []
        async with self._lock:
            client = self._client
            if client is None or not client.connected:
                client = await self._connected()
            for start in range(0, len(plan), step):
                batch = [(code, r.address, r.count) for code, r in zip(codes[start:start + step],
                                                                       plan[start:start + step])]
                try:
                    answers = await client.read_many(batch, device_id=self.config.device_id)
                except (ModbusException, OSError) as err:
                    raise self._failed(f"{len(batch)} pipelined reads", err) from err
                for (code, address, _count), answer in zip(batch, answers):
                    if not answer.isError():
                        out.append(answer)
                    elif answer.exception_code == _BUSY and self.config.busy_retries:
                        out.append(None)
                    elif answer.exception_code == _BUSY:  # no retries: busy fails the poll, as one at a time
                        out.append(PollFailed("busy", self._exception_text(_METHOD[code], (address,), _BUSY)))
                    else:  # refused: loses only its own fields, as one at a time
                        text = self._exception_text(_METHOD[code], (address,), answer.exception_code)
                        out.append(PollFailed("exception", text))
        return out

    async def fetch(self) -> Report:
        """Run the read plan once and decode it. A read answered with a Modbus exception
        loses only its own fields; a lost connection fails the whole poll.

        With the fast lane on, a poll within ``interval_s`` of the last full one reads only the
        safety fields and returns them merged into that full reading, ``watch_only`` (module docstring).
        A fast poll that finds a pack docked in or taken out of a slot is followed at once by a full
        one, returned instead: the new pack's identity, chemistry and ratings are not safety fields,
        and its temperatures must not be read as the old pack's (or the empty slot's) history."""
        started = time.monotonic()
        if self.fast_plan is not None and self._last_full is not None and \
                started - self._full_at < self.config.interval_s - self.interval_s / 2:
            reading, errors, failed = await self._poll(self.fast_plan)
            if not _occupancy_changed(self._last_full, reading):
                merged = merge_fast(self._last_full, reading, *self._fast_names)
                return Report(merged, errors, len(self.fast_plan), failed, source=KIND, watch_only=True)
            started = time.monotonic()
        reading, errors, failed = await self._poll(self.plan)
        if self.fast_plan is not None:
            self._full_at = started - self._phase_s if self._last_full is None else started
            self._last_full = reading
        return Report(reading, errors, len(self.plan), failed, source=KIND)

    async def _poll(self, plan: tuple[ReadRequest, ...]) -> tuple[CabinetReading, list[FieldError], int]:
        responses, failed_detail = await self.read_plan(plan)
        failed = len(failed_detail)
        if failed == len(plan):
            raise PollFailed("exception", "every read failed: " + "; ".join(failed_detail[:3]))
        # The plan compiled to one function at start-up, shared by every cabinet with this plan.
        decode = self._decode_fast if plan is self.fast_plan and self._decode_fast is not None else \
            self._decode_full if plan is self.plan else shared_decoder(plan, self.slot_count)
        reading, errors = decode(responses, cabinet_id=self.config.id, site=self.config.site,
                                 model=self.profile.model, timestamp_ns=time.time_ns())
        for detail in failed_detail:
            errors.append(FieldError(self.config.id, None, "(read)", detail.split(" ", 1)[0], 0, detail))
        return reading, errors, failed

    async def command(self, name: str, *, slot: int | None, value: int | bool, actor: str) -> CommandResult:
        """Write a command register/coil, read it back, and report; never raises on device errors."""
        result = CommandResult(self.config.id, name, slot, value, actor, self._wall_clock(), ok=False,
                               site=self.config.site)
        try:
            register_type, address = self.profile.command_address(name, slot)
            if register_type == "coil":
                await self._call("write_coil", address, bool(value))
                response = await self._call("read_coils", address, count=1)
                bits = list(getattr(response, "bits", None) or [])
                if not bits:
                    raise PollFailed("short", f"read-back of coil {address} returned no value")
                result.readback = bool(bits[0])
                result.ok = result.readback == bool(value)
            else:
                await self._call("write_register", address, int(value))
                response = await self._call("read_holding_registers", address, count=1)
                registers = list(getattr(response, "registers", None) or [])
                if not registers:
                    raise PollFailed("short", f"read-back of register {address} returned no value")
                result.readback = registers[0]
                result.ok = result.readback == int(value)
            if not result.ok:
                result.error = f"read back {result.readback!r}, expected {value!r}"
        except (PollFailed, KeyError, ValueError) as err:
            # str() of a KeyError is its repr (quoted); the message is its argument
            result.error = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        except Exception as err:  # noqa: BLE001 - a protective command must report, never vanish
            log.exception("command %s cabinet=%s slot=%s: unexpected error", name, self.config.id, slot)
            result.error = f"unexpected {type(err).__name__}: {err}"
        result.completed_at = self._wall_clock()
        log.log(logging.INFO if result.ok else logging.ERROR, "command %s cabinet=%s slot=%s value=%s by %s: %s%s",
                name, self.config.id, slot, value, actor, "ok" if result.ok else "FAILED",
                f" ({result.error})" if result.error else "")
        return result

    async def close(self) -> None:
        # No lock: closing the transport is what unblocks a request stuck in flight.
        self._drop()


def _occupancy_changed(full: CabinetReading, fast: CabinetReading) -> bool:
    """Whether a slot that was empty at the full poll holds a pack now, or the other way round."""
    for old, new in zip(full.slots, fast.slots):
        if old.battery_state is not None and new.battery_state is not None and \
                (old.battery_state == BatteryState.EMPTY) != (new.battery_state == BatteryState.EMPTY):
            return True
    return False


def merge_fast(full: CabinetReading, fast: CabinetReading, cabinet_fields: tuple[str, ...],
               slot_fields: tuple[str, ...]) -> CabinetReading:
    """``full`` with the ``cabinet_fields`` and ``slot_fields`` (and the timestamp) of ``fast``.

    Neither input changes (the full reading may still be in a sink's buffer). A field of the fast
    poll's is taken as it came, ``None`` included; ``over_range`` keeps the full poll's entries for
    the other fields and adds the fast poll's.
    """
    merged = copy.copy(full)
    merged.timestamp_ns = fast.timestamp_ns
    for name in cabinet_fields:
        setattr(merged, name, getattr(fast, name))
    if full.over_range or fast.over_range:
        merged.over_range = (*(n for n in full.over_range if n not in cabinet_fields), *fast.over_range)
    slots = []
    for old, new in zip(full.slots, fast.slots):
        slot = copy.copy(old)
        for name in slot_fields:
            setattr(slot, name, getattr(new, name))
        if old.over_range or new.over_range:
            slot.over_range = (*(n for n in old.over_range if n not in slot_fields), *new.over_range)
        slots.append(slot)
    merged.slots = slots
    return merged
