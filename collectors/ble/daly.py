"""Daly smart BMS over BLE: the 13-byte frame, its checks, and the reads 0x90–0x98.

Frames (Daly UART/485 communication protocol; the BLE module, service FFF0, relays it: requests
written to FFF2, answers notified on FFF1)::

    request   A5 <addr> <cmd> 08 <8 data bytes> <chk>     addr 40 (PC) or 80 (BLE/app); the gateway uses 80
    answer    A5 01 <cmd> 08 <8 data bytes> <chk>         chk = byte sum of the 12 bytes before it, 8 bits

* 0x90 pack voltage (0.1 V), acquired voltage, current (0.1 A, offset 30000, + charging), SOC (0.1 %)
* 0x91 highest / lowest cell voltage (mV) and their cell numbers
* 0x92 highest / lowest temperature (°C + 40) and their sensor numbers
* 0x93 state (0 idle, 1 charging, 2 discharging), charge MOSFET, discharge MOSFET, life, remaining
  capacity (mAh, 32 bits)
* 0x94 cells in series, temperature sensors, charger, load, DI/DO states, cycles
* 0x95 cell voltages: one frame per 3 cells (frame number, 3 × mV)
* 0x96 temperatures: one frame per 7 sensors (frame number, 7 × °C + 40)
* 0x98 alarms: 7 bytes of alarm bits and a fault code

Protection: bytes 0–3 of 0x98 carry each condition at two levels (bit pairs: level 1 alarm, level 2
protection); the level-2 bits and the fault bits of bytes 4–6 map to ``core.model.BmsProtection``
(:data:`PROTECTION_BITS`); level-1 alarms and bits without a Cascade meaning (SOC high/low,
temperature difference, RTC, external communication) are kept apart, at their bit positions
(byte × 8 + bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from core.model import BmsProtection

from .frames import FrameError, PackSample, Step, map_bits

__all__ = ["PROTECTION_BITS", "PROTOCOL", "DalyProtocol", "checksum", "map_protection", "mosfet_request", "request"]

START = 0xA5
HOST_BLE = 0x80
BMS = 0x01
SOC, CELL_RANGE, TEMP_RANGE, MOSFET, STATUS, CELLS, TEMPS, BALANCE, ALARMS = range(0x90, 0x99)
# Writes: data byte 0 is 00 (MOSFET off) or 01 (on); the BMS answers with the same command. 0x93 reads the result.
DISCHARGE_MOS, CHARGE_MOS = 0xD9, 0xDA
_OFFSET_C = 40
_CURRENT_OFFSET = 30000
_MAX_CELL_FRAMES = 22  # 64 cells
_MAX_TEMP_FRAMES = 10

_P = BmsProtection
PROTECTION_BITS: dict[int, BmsProtection] = {
    1: _P.OVER_VOLTAGE, 3: _P.UNDER_VOLTAGE, 5: _P.OVER_VOLTAGE, 7: _P.UNDER_VOLTAGE,  # cell / pack, level 2
    9: _P.HIGH_TEMPERATURE, 11: _P.LOW_TEMPERATURE, 13: _P.HIGH_TEMPERATURE, 15: _P.LOW_TEMPERATURE,
    17: _P.OVER_CURRENT, 19: _P.OVER_CURRENT,  # charge / discharge over-current, level 2
    25: _P.CELL_VOLTAGE_DIFFERENCE,
    32: _P.HIGH_TEMPERATURE, 33: _P.HIGH_TEMPERATURE,  # charge / discharge MOSFET over-temperature
    **dict.fromkeys(range(34, 40), _P.HARDWARE_FAULT),  # MOSFET sensor, stuck (adhesion), breaker faults
    40: _P.HARDWARE_FAULT, 41: _P.HARDWARE_FAULT, 42: _P.HARDWARE_FAULT, 43: _P.HARDWARE_FAULT,  # AFE, cell
    45: _P.HARDWARE_FAULT, 47: _P.HARDWARE_FAULT,  # sense line, temperature sensor, EEPROM; pre-charge; internal link
    48: _P.HARDWARE_FAULT, 49: _P.HARDWARE_FAULT,  # current module, pack voltage sensing
    50: _P.SHORT_CIRCUIT, 51: _P.UNDER_VOLTAGE,  # short-circuit protection; low voltage, charging forbidden
}
"""Daly alarm bit (byte × 8 + bit of the 0x98 answer) → Cascade flag."""


def map_protection(word: int) -> tuple[int, int]:
    """The Daly alarm bits (56) in Cascade's layout, and the bits without a Cascade meaning."""
    return map_bits(word, 56, PROTECTION_BITS)


def checksum(body: bytes | bytearray) -> int:
    """The byte sum of ``body``, 8 bits."""
    return sum(body) & 0xFF


def request(command: int, *, address: int = HOST_BLE, data: bytes = bytes(8)) -> bytes:
    """A request frame: ``request(0x90, address=0x40) == bytes.fromhex("a54090080000000000000000" "7d")``."""
    body = bytes((START, address, command, 8)) + data[:8].ljust(8, b"\x00")
    return body + bytes((checksum(body),))


def mosfet_request(command: int, *, on: bool) -> bytes:
    """The 0xDA (charge) or 0xD9 (discharge) MOSFET write: ``mosfet_request(0xDA, on=False)``
    switches the charge MOSFET off."""
    if command not in (CHARGE_MOS, DISCHARGE_MOS):
        raise ValueError(f"0x{command:02x} is not a Daly MOSFET write (0xDA charge, 0xD9 discharge)")
    return request(command, data=bytes((int(on),)))


def _cell_frames(sample: PackSample) -> int:
    return -(-(sample.cell_count or 0) // 3)


def _temp_frames(sample: PackSample) -> int:
    return -(-(sample.temperature_count or 0) // 7)


class DalyProtocol:
    """The Daly protocol for the gateway (``frames.BmsProtocol``)."""

    name: Literal["jbd", "daly"] = "daly"
    service_uuid: str = "0000fff0-0000-1000-8000-00805f9b34fb"
    notify_uuid: str = "0000fff1-0000-1000-8000-00805f9b34fb"
    write_uuid: str = "0000fff2-0000-1000-8000-00805f9b34fb"
    start_byte: int = START
    name_prefixes: tuple[str, ...] = ("daly", "dl-")
    steps: Sequence[Step] = (
        Step(SOC, request(SOC)),
        Step(STATUS, request(STATUS)),  # before 0x95 / 0x96: how many cells and sensors
        Step(MOSFET, request(MOSFET)),
        Step(CELL_RANGE, request(CELL_RANGE), required=False),
        Step(TEMP_RANGE, request(TEMP_RANGE), required=False),
        Step(CELLS, request(CELLS), frames=_cell_frames),
        Step(TEMPS, request(TEMPS), frames=_temp_frames),
        Step(ALARMS, request(ALARMS)),
    )

    def frame_length(self, head: bytes) -> int | None:
        if len(head) < 4:
            return None
        if head[3] != 8:
            raise FrameError("length", f"Daly frames carry 8 data bytes; length byte is {head[3]}")
        return 13

    def command_of(self, frame: bytes) -> int:
        return frame[2]

    def decode(self, command: int, frame: bytes, sample: PackSample) -> None:
        if len(frame) != 13 or frame[0] != START or frame[3] != 8:
            raise FrameError("start", f"not a Daly answer: {frame[:13].hex(' ')}")
        if checksum(frame[:12]) != frame[12]:
            raise FrameError("checksum", f"checksum 0x{frame[12]:02x}, computed 0x{checksum(frame[:12]):02x}")
        if frame[1] != BMS:
            raise FrameError("start", f"answer from address 0x{frame[1]:02x}, not the BMS (0x01)")
        if frame[2] != command:
            raise FrameError("command", f"answer to 0x{frame[2]:02x}, expected 0x{command:02x}")
        d = frame[4:12]

        def u16(at: int) -> int:
            return int.from_bytes(d[at:at + 2], "big")

        if command == SOC:
            sample.voltage_v = u16(0) / 10
            sample.current_a = (u16(4) - _CURRENT_OFFSET) / 10
            sample.soc_pct = u16(6) / 10
        elif command == CELL_RANGE:
            sample.cell_max_v, sample.cell_min_v = u16(0) / 1000, u16(3) / 1000
        elif command == TEMP_RANGE:
            sample.temperature_max_c, sample.temperature_min_c = float(d[0] - _OFFSET_C), float(d[2] - _OFFSET_C)
        elif command == MOSFET:
            sample.mosfet_charge, sample.mosfet_discharge = bool(d[1]), bool(d[2])
            sample.remaining_ah = int.from_bytes(d[4:8], "big") / 1000
        elif command == STATUS:
            sample.cell_count, sample.temperature_count, sample.cycles = d[0], d[1], u16(5)
            if sample.temperature_count > 7 * _MAX_TEMP_FRAMES:
                raise FrameError("layout", f"{sample.temperature_count} temperature sensors")
        elif command == CELLS:
            values = [u16(1) / 1000, u16(3) / 1000, u16(5) / 1000]
            sample.cell_voltages_v = _place(sample.cell_voltages_v, d[0], values, sample.cell_count, 3,
                                            _MAX_CELL_FRAMES, "cell")
        elif command == TEMPS:
            temps = [float(t - _OFFSET_C) for t in d[1:8]]
            sample.temperatures_c = _place(sample.temperatures_c, d[0], temps, sample.temperature_count, 7,
                                           _MAX_TEMP_FRAMES, "temperature")
        elif command in (CHARGE_MOS, DISCHARGE_MOS):
            pass  # the acknowledgement of a write; the 0x93 read-back tells what happened
        elif command == ALARMS:
            word = int.from_bytes(d[0:7], "little")
            sample.protection_raw = word
            sample.protection, sample.protection_unmapped = map_protection(word)
        else:
            raise FrameError("command", f"command 0x{command:02x} is not read by the gateway")


def _place(current: tuple[float, ...], number: int, values: list[float], count: int | None, per_frame: int,
           max_frames: int, what: str) -> tuple[float, ...]:
    """Put one frame's ``values`` at their place (frame ``number`` counts from 1) in a list of ``count``;
    places not filled yet are NaN (an incomplete list is refused by the plausibility check)."""
    if count is None:
        raise FrameError("layout", f"{what} frame before the cell/sensor count (0x94)")
    if not 1 <= number <= min(max_frames, -(-count // per_frame)):
        raise FrameError("layout", f"{what} frame number {number} for {count} {what}s")
    out = list(current) if len(current) == count else [float("nan")] * count
    at = (number - 1) * per_frame
    for i, value in enumerate(values):
        if at + i < count:
            out[at + i] = value
    return tuple(out)


PROTOCOL = DalyProtocol()
