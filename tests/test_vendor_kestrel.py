"""A third vendor end to end: the kestrel-k10 profile (input registers, CDAB floats and counters,
holes between blocks, its own protection bit numbers, a shared status word, extras) served by the
simulator over real Modbus TCP and polled by the real collector (ModbusCabinet).

Every field, extra and bit translation must arrive exactly as the simulator encoded it, with no
value rejected; and the vendor's own fault bits, which sit at Cascade bit positions, must never
show up as Cascade flags.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus.codec import decode_value, encode_value
from collectors.modbus.device import ModbusCabinet
from collectors.modbus.profile import FieldSpec, Profile, find_profile
from core.events import Report
from core.model import BmsProtection, ChargerProtection, EmergencyState, describe_flags
from simulators.fleet import Fleet, SimulatedCabinet, build_fleet
from simulators.register_bank import reported_value
from simulators.server import SimulatorServer
from tests.fixtures.clock import ManualClock
from tests.fixtures.ports import free_port_block

PROFILE = "kestrel-k10"


@dataclass
class Served:
    fleet: Fleet
    clock: ManualClock
    profile: Profile

    @property
    def cab(self) -> SimulatedCabinet:
        return self.fleet.cabinets[0]

    async def poll(self) -> Report:
        config = self.fleet.collector_configs(timeout_s=2.0)[0]
        collector = ModbusCabinet(config, self.profile)
        try:
            return await collector.fetch()
        finally:
            await collector.close()

    async def raw(self, register_type: str, address: int, count: int = 1) -> list[int]:
        client = AsyncModbusTcpClient("127.0.0.1", port=self.cab.port, timeout=2.0, retries=0)
        assert await client.connect()
        try:
            read = client.read_input_registers if register_type == "input" else client.read_holding_registers
            response = await read(address, count=count, device_id=self.cab.device_id)
            assert not response.isError(), response
            return list(response.registers)
        finally:
            client.close()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    clock = ManualClock()
    profile = find_profile(PROFILE)
    fleet = build_fleet([(PROFILE, profile)], cabinets=2, base_port=free_port_block(2), clock=clock, seed=11)
    server = SimulatorServer(fleet, control_port=0)
    await server.start()
    clock.now += 1800  # let the physics move: charging, heating, swaps
    try:
        yield Served(fleet, clock, profile)
    finally:
        await server.stop()


def _wire(spec: FieldSpec, value: Any) -> Any:
    """What the decoder must give for the simulator's ``value``: the value as the vendor's registers can
    carry it (f32 precision, the scale's resolution, a string's length), or None for no value."""
    if value is None or value == "":
        return None
    return decode_value(spec, encode_value(spec, value))


def _assert_field(spec: FieldSpec, decoded: Any, simulated: Any, where: str) -> None:
    expected = _wire(spec, simulated)
    assert decoded == expected, f"{where}: decoded {decoded!r}, simulator {simulated!r} -> {expected!r}"
    if isinstance(simulated, float) and expected is not None:  # and the wire value is the simulator's value
        tolerance = abs(spec.scale) / 2 + 1e-9 if spec.data_type not in ("f32", "f64") else 1e-6 * max(
            1.0, abs(simulated))
        assert math.isclose(float(decoded), simulated, abs_tol=tolerance), where


def _assert_reading_matches_simulator(served: Served, report: Report) -> None:
    cab, profile, now = served.cab, served.profile, served.fleet.clock()
    reading = report.reading
    assert report.errors == [], [str(e) for e in report.errors]
    assert report.failed_reads == 0 and report.requests == 16
    assert reading.over_range == () and all(s.over_range == () for s in reading.slots)
    state = cab.state.report()
    for spec in profile.cabinet_fields:
        _assert_field(spec, getattr(reading, spec.field), reported_value(cab.state, None, spec.field, now),
                      f"cabinet {spec.field}")
    assert reading.emergency_state_unmapped == state["emergency_state_unmapped"]
    assert reading.device_fault_code_unmapped is None  # Cascade layout: nothing to keep apart
    assert set(reading.extra) == {s.field for s in profile.cabinet_extras}
    for spec in profile.cabinet_extras:
        _assert_field(spec, reading.extra[spec.field], state["extra"][spec.field], f"cabinet extra {spec.field}")
    assert type(reading.extra["swap_count"]) is int and type(reading.extra["humidity_pct"]) is float
    for slot in reading.slots:
        values = cab.state.slot_report(slot.slot)
        for spec in profile.slot_fields:
            _assert_field(spec, getattr(slot, spec.field), reported_value(cab.state, slot.slot, spec.field, now),
                          f"slot {slot.slot} {spec.field}")
        assert slot.bms_protection_unmapped == values["bms_protection_unmapped"]
        assert slot.charger_protection_unmapped == values["charger_protection_unmapped"]
        assert set(slot.extra) == {"charger_module_temp_c"}
        _assert_field(profile.slot_extras[0], slot.extra["charger_module_temp_c"],
                      values["extra"]["charger_module_temp_c"], f"slot {slot.slot} extra")


async def test_every_field_extra_and_flag_arrives_exactly(served: Served) -> None:
    report = await served.poll()
    _assert_reading_matches_simulator(served, report)
    reading = report.reading
    assert reading.door_open is False and reading.cabinet_h2_ppm is not None and reading.cabinet_voc_ppm is not None
    assert sum(1 for s in reading.slots if s.battery_id) >= 5  # a plausible fleet, not all zeros


async def test_cascade_flags_travel_at_the_vendors_bit_positions(served: Served) -> None:
    state = served.cab.state
    slot = next(s for s in state.slots if s.battery is not None)
    slot.bms_protection = BmsProtection.OVER_CURRENT | BmsProtection.SHORT_CIRCUIT  # Cascade bits 1 and 3
    state.door_open = True
    state.smoke_detected = True
    state.emergency_state = EmergencyState.SUPPRESSION_MANUAL  # Cascade bit 2
    cut = next(s for s in state.slots if s.battery is not None and s is not slot)
    cut.set_output(False)  # OPERATOR_CUTOFF (Cascade bit 6)

    base = served.profile.slot_address("input", 13, slot.slot)
    assert await served.raw("input", base) == [1 << 2 | 1 << 7]  # the vendor's charge OC and short circuit
    assert await served.raw("input", 9) == [0b0011]  # one status word: door (bit 0) and smoke (bit 1)
    assert await served.raw("input", 10) == [1 << 3]  # the vendor's manual release
    cut_word = await served.raw("input", served.profile.slot_address("input", 14, cut.slot))
    assert cut_word == [1 << 5]  # the vendor's "output disabled by operator"

    report = await served.poll()
    _assert_reading_matches_simulator(served, report)
    reading = report.reading
    decoded = reading.slots[slot.slot - 1]
    assert decoded.bms_protection == BmsProtection.OVER_CURRENT | BmsProtection.SHORT_CIRCUIT
    assert decoded.bms_protection_unmapped == 0
    assert reading.door_open is True and reading.smoke_detected is True and reading.water_detected is False
    assert reading.emergency_state == EmergencyState.SUPPRESSION_MANUAL
    assert reading.slots[cut.slot - 1].charger_protection == ChargerProtection.OPERATOR_CUTOFF
    assert reading.slots[cut.slot - 1].output_enabled is False


async def test_the_vendors_own_fault_bits_raise_no_cascade_flag(served: Served) -> None:
    """Kestrel's bit 5 'cell balancing active' and bit 9 'BMS comm timeout' sit where Cascade keeps
    HIGH_TEMPERATURE and INSULATION; its charger bit 3 'fan fault' where Cascade keeps
    OVER_VOLTAGE_CUTOFF; its fire-system bit 2 'agent pressure low' where Cascade keeps
    SUPPRESSION_MANUAL. Read in Cascade layout they would be four false alarms."""
    state = served.cab.state
    slot = next(s for s in state.slots if s.battery is not None)
    slot.bms_protection_unmapped = 1 << 5 | 1 << 9
    slot.charger_protection_unmapped = 1 << 3
    state.emergency_state_unmapped = 1 << 2

    wire = await served.raw("input", served.profile.slot_address("input", 13, slot.slot), 2)
    assert wire == [1 << 5 | 1 << 9, 1 << 3]  # on the wire at exactly Cascade's positions of those flags

    report = await served.poll()
    _assert_reading_matches_simulator(served, report)
    reading = report.reading
    decoded = reading.slots[slot.slot - 1]
    assert decoded.bms_protection == 0 and describe_flags(BmsProtection, decoded.bms_protection) == ""
    assert decoded.charger_protection == 0
    assert reading.emergency_state == 0
    # Kept, visible, at the vendor's own positions.
    assert decoded.bms_protection_unmapped == 1 << 5 | 1 << 9
    assert decoded.charger_protection_unmapped == 1 << 3
    assert reading.emergency_state_unmapped == 1 << 2
    # And a real Cascade flag next to a vendor-only bit is still exactly itself.
    slot.bms_protection = BmsProtection.HIGH_TEMPERATURE  # the vendor's bit 4, beside its bit 5
    reading = (await served.poll()).reading
    assert reading.slots[slot.slot - 1].bms_protection == BmsProtection.HIGH_TEMPERATURE
    assert reading.slots[slot.slot - 1].bms_protection_unmapped == 1 << 5 | 1 << 9
