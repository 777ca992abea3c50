"""One Modbus TCP cabinet: one connection, one request in flight, planned reads, commands.

    cabinet = ModbusCabinet(CabinetConfig(id="C0001", host="10.0.0.5", port=502), profile)
    poll = await cabinet.fetch()          # core.events.Report(reading, errors, requests)
    result = await cabinet.command("slot_output", slot=3, value=False, actor="rule:thermal_runaway")
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from collectors.runner import PollFailed
from core.events import CommandResult, Report

from .decode import FieldError, decode_poll
from .planner import ReadRequest, plan_reads
from .profile import Profile
from .settings import CabinetConfig
from .tcp import ModbusTcpLink

__all__ = ["KIND", "CabinetConfig", "ModbusCabinet"]

KIND = "modbus"  # the source kind: metrics label and config name

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


class ModbusCabinet:
    """A cabinet polled through its profile's precomputed read plan."""

    def __init__(self, config: CabinetConfig, profile: Profile, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.profile = profile
        self.name = config.id
        self.interval_s = config.interval_s
        self.slot_count = config.slots or profile.slot_count
        self.plan: list[ReadRequest] = plan_reads(profile, self.slot_count, max_gap=config.max_gap)
        self._wall_clock = wall_clock
        self._client: ModbusTcpLink | None = None
        # One request in flight per connection: Modbus TCP devices often mishandle pipelining.
        self._lock = asyncio.Lock()

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

    async def _call(self, method: str, *args, **kwargs):
        """One request with the connection lock held; retry only while the device says busy."""
        async with self._lock:
            client = await self._connected()
            for attempt in range(self.config.busy_retries + 1):
                try:
                    response = await getattr(client, method)(*args, device_id=self.config.device_id, **kwargs)
                except ModbusIOException as err:
                    self._drop()
                    raise PollFailed("timeout", f"no answer to {method}: {err}") from err
                except (ConnectionException, OSError) as err:
                    self._drop()
                    raise PollFailed("connection", f"connection lost during {method}: {err}") from err
                except ModbusException as err:
                    self._drop()
                    raise PollFailed("protocol", f"{method} failed: {err}") from err
                if not response.isError():
                    return response
                code = getattr(response, "exception_code", None)
                if code != _BUSY or attempt == self.config.busy_retries:
                    raise PollFailed("busy" if code == _BUSY else "exception", self._exception_text(method, args, code))
                await asyncio.sleep(self.config.busy_backoff_s * (attempt + 1))
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

    async def read_plan(self) -> tuple[list[list[int] | list[bool] | None], list[str]]:
        """Run the read plan once: the raw words (bits) of each planned read, ``None`` for a read the
        device refused with a Modbus exception (described in the second list). A lost connection
        raises :class:`PollFailed`. ``fetch`` decodes these; ``cascade probe`` shows them raw."""
        responses: list[list[int] | list[bool] | None] = []
        failed_detail: list[str] = []
        for request in self.plan:
            try:
                response = await self._call(_READ[request.register_type], request.address, count=request.count)
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
            responses.append(list(values))
        return responses, failed_detail

    async def fetch(self) -> Report:
        """Run the read plan once and decode it. A read answered with a Modbus exception
        loses only its own fields; a lost connection fails the whole poll."""
        responses, failed_detail = await self.read_plan()
        failed = len(failed_detail)
        if failed == len(self.plan):
            raise PollFailed("exception", "every read failed: " + "; ".join(failed_detail[:3]))
        reading, errors = decode_poll(self.plan, responses, cabinet_id=self.config.id, site=self.config.site,
                                      model=self.profile.model, slot_count=self.slot_count,
                                      timestamp_ns=time.time_ns())
        for detail in failed_detail:
            errors.append(FieldError(self.config.id, None, "(read)", detail.split(" ", 1)[0], 0, detail))
        return Report(reading, errors, len(self.plan), failed, source=KIND)

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
            result.error = str(err)
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
