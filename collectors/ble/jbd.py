"""JBD / Xiaoxiang smart BMS over BLE: the frame, its checks, and the reads 0x03, 0x04, 0x05.

Frames (JBD "software board universal protocol", all 16-bit values big-endian)::

    request   DD A5 <cmd> <len> <data…> <chk hi> <chk lo> 77          read: len 0, e.g. DD A5 03 00 FF FD 77
    answer    DD <cmd> <status> <len> <data…> <chk hi> <chk lo> 77    status 00 = ok, 80 = refused

``chk`` is 0x10000 minus the byte sum of status (request: cmd), length and data. The BLE module
(service FF00) relays the UART: requests are written to FF02, answers arrive as notifications on
FF01, a basic-info answer in two or three fragments.

* 0x03 basic info: pack voltage (10 mV), current (10 mA, signed, + charging), remaining and nominal
  capacity (10 mAh), cycles, production date, balance bits, protection word, software version, SOC
  (%), MOSFET state (bit 0 charge, bit 1 discharge on), cells in series, NTC count, then one NTC
  temperature per sensor (0.1 K). Newer firmware appends fields; they are ignored.
* 0x04 cell voltages: one mV value per cell.
* 0x05 hardware version: ASCII text.

The protection word is mapped bit by bit to ``core.model.BmsProtection`` (:data:`PROTECTION_BITS`);
bit 12 ("MOSFET software lock") and the reserved bits have no Cascade meaning and are kept apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from core.model import BmsProtection

from .frames import FrameError, PackSample, Step, map_bits

__all__ = ["PROTECTION_BITS", "PROTOCOL", "JbdProtocol", "checksum", "factory_requests", "map_protection",
           "mosfet_request", "request"]

START, END = 0xDD, 0x77
READ, WRITE = 0xA5, 0x5A
BASIC, CELLS, VERSION = 0x03, 0x04, 0x05
MOSFET = 0xE1  # write: data 00 XX, bit 0 of XX = charge off, bit 1 = discharge off (0xFB in later revisions)
# Factory mode: some firmware takes 0xE1 only inside it (the register map lists 0xE1 with the EEPROM
# registers). Enter: write 56 78 to 0x00; leave: write 00 00 to 0x01 (28 28 would also save the EEPROM).
FACTORY_ENTER, FACTORY_EXIT = 0x00, 0x01
WRITES = frozenset({MOSFET, FACTORY_ENTER, FACTORY_EXIT})
_KELVIN_DECI = 2731

PROTECTION_BITS: dict[int, BmsProtection] = {
    0: BmsProtection.OVER_VOLTAGE,  # cell over-voltage
    1: BmsProtection.UNDER_VOLTAGE,  # cell under-voltage
    2: BmsProtection.OVER_VOLTAGE,  # pack over-voltage
    3: BmsProtection.UNDER_VOLTAGE,  # pack under-voltage
    4: BmsProtection.HIGH_TEMPERATURE,  # charge over-temperature
    5: BmsProtection.LOW_TEMPERATURE,  # charge under-temperature
    6: BmsProtection.HIGH_TEMPERATURE,  # discharge over-temperature
    7: BmsProtection.LOW_TEMPERATURE,  # discharge under-temperature
    8: BmsProtection.OVER_CURRENT,  # charge over-current
    9: BmsProtection.OVER_CURRENT,  # discharge over-current
    10: BmsProtection.SHORT_CIRCUIT,
    11: BmsProtection.HARDWARE_FAULT,  # front-end (AFE) IC error
}
"""JBD protection bit → Cascade flag. Bit 12 (MOSFET software lock) and 13–15 (reserved) are unmapped."""


def map_protection(word: int) -> tuple[int, int]:
    """The JBD protection word in Cascade's layout, and its bits without a Cascade meaning."""
    return map_bits(word, 16, PROTECTION_BITS)


def checksum(body: bytes | bytearray) -> int:
    """0x10000 minus the byte sum of ``body`` (status or command, length, data), 16 bits."""
    return (0x10000 - sum(body)) & 0xFFFF


def request(command: int, data: bytes = b"", *, mode: int = READ) -> bytes:
    """A request frame: ``request(0x03) == bytes.fromhex("dda50300fffd77")``."""
    body = bytes((command, len(data))) + data
    return bytes((START, mode)) + body + checksum(body).to_bytes(2, "big") + bytes((END,))


def mosfet_request(*, charge_on: bool, discharge_on: bool) -> bytes:
    """The 0xE1 write that leaves the charge / discharge MOSFETs in the given states."""
    return request(MOSFET, bytes((0, (not charge_on) | (not discharge_on) << 1)), mode=WRITE)


def factory_requests() -> tuple[bytes, bytes]:
    """The writes that enter and leave factory mode (leaving without saving the EEPROM):
    ``DD 5A 00 02 56 78 FF 30 77`` and ``DD 5A 01 02 00 00 FF FD 77``."""
    return (request(FACTORY_ENTER, b"\x56\x78", mode=WRITE), request(FACTORY_EXIT, b"\x00\x00", mode=WRITE))


class JbdProtocol:
    """The JBD protocol for the gateway (``frames.BmsProtocol``)."""

    name: Literal["jbd", "daly"] = "jbd"
    service_uuid: str = "0000ff00-0000-1000-8000-00805f9b34fb"
    notify_uuid: str = "0000ff01-0000-1000-8000-00805f9b34fb"
    write_uuid: str = "0000ff02-0000-1000-8000-00805f9b34fb"
    start_byte: int = START
    # Advertised names seen on JBD packs and their BLE modules (xiaoxiang app); case-insensitive.
    name_prefixes: tuple[str, ...] = ("xiaoxiang", "jbd", "sp0", "sp1", "sp2", "sp4", "gj-", "dp04s")
    steps: Sequence[Step] = (
        Step(BASIC, request(BASIC)),
        Step(CELLS, request(CELLS)),
        Step(VERSION, request(VERSION), once=True, required=False),
    )

    def frame_length(self, head: bytes) -> int | None:
        if len(head) < 4:
            return None
        return 4 + head[3] + 3

    def command_of(self, frame: bytes) -> int:
        return frame[1]

    def decode(self, command: int, frame: bytes, sample: PackSample) -> None:
        data = self._check(command, frame)
        if command == BASIC:
            _basic(data, sample)
        elif command == CELLS:
            if len(data) % 2:
                raise FrameError("layout", f"cell voltages: {len(data)} bytes, not a whole number of cells")
            sample.cell_voltages_v = tuple(int.from_bytes(data[i:i + 2], "big") / 1000 for i in range(0, len(data), 2))
        elif command in WRITES:
            pass  # an acknowledgement carries no data; the 0x03 read-back tells what happened
        elif command == VERSION:
            sample.hardware = data.decode("ascii", "replace").strip("\x00 ")[:64]
        else:
            raise FrameError("command", f"command 0x{command:02x} is not read by the gateway")

    @staticmethod
    def _check(command: int, frame: bytes) -> bytes:
        if len(frame) < 7 or frame[0] != START:
            raise FrameError("start", f"not a JBD frame: {frame[:8].hex(' ')}")
        length = frame[3]
        if len(frame) != 7 + length:
            raise FrameError("length", f"length byte says {length} data bytes, frame has {len(frame) - 7}")
        if frame[-1] != END:
            raise FrameError("end", f"frame ends in 0x{frame[-1]:02x}, not 0x77")
        expected = checksum(frame[2:4 + length])
        got = int.from_bytes(frame[4 + length:6 + length], "big")
        if got != expected:
            raise FrameError("checksum", f"checksum 0x{got:04x}, computed 0x{expected:04x}")
        if frame[1] != command:
            raise FrameError("command", f"answer to 0x{frame[1]:02x}, expected 0x{command:02x}")
        if frame[2] != 0:
            raise FrameError("status", f"the BMS refused command 0x{command:02x} (status 0x{frame[2]:02x})")
        return frame[4:4 + length]


def _basic(data: bytes, sample: PackSample) -> None:
    if len(data) < 23:
        raise FrameError("layout", f"basic info of {len(data)} bytes; at least 23 expected")
    ntc = data[22]
    if len(data) < 23 + 2 * ntc:
        raise FrameError("layout", f"basic info of {len(data)} bytes cannot hold {ntc} temperatures")

    def u16(at: int) -> int:
        return int.from_bytes(data[at:at + 2], "big")

    sample.voltage_v = u16(0) / 100
    sample.current_a = int.from_bytes(data[2:4], "big", signed=True) / 100
    sample.remaining_ah = u16(4) / 100
    sample.nominal_ah = u16(6) / 100
    sample.cycles = u16(8)
    word = u16(16)
    sample.protection_raw = word
    sample.protection, sample.protection_unmapped = map_protection(word)
    sample.soc_pct = float(data[19])
    sample.mosfet_charge = bool(data[20] & 1)
    sample.mosfet_discharge = bool(data[20] & 2)
    sample.cell_count = data[21]
    sample.temperature_count = ntc
    sample.temperatures_c = tuple(round((u16(23 + 2 * i) - _KELVIN_DECI) / 10, 1) for i in range(ntc))


PROTOCOL = JbdProtocol()
