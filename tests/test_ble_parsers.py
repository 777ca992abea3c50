"""BMS frame parsers: the frame corpus (tests/ble_frames/, published examples and frames built from the
documented layouts, with what each must become) and fuzzing: any bytes in, a sample or a FrameError out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.ble import daly, jbd
from collectors.ble.frames import FrameError, PackSample, Reassembler, check_plausible
from collectors.ble.gateway import pack_entry
from collectors.ble.wire import PackReport, decode, encode, to_reading
from core.model import BmsProtection

CORPUS = Path(__file__).parent / "ble_frames"
PROTOCOLS = {"jbd": jbd.PROTOCOL, "daly": daly.PROTOCOL}
CASES = sorted(CORPUS.glob("*/*.json"))


def _run(protocol_name: str, case: dict) -> tuple[PackSample, list[str], int]:
    protocol = PROTOCOLS[protocol_name]
    sample = PackSample(**case.get("before", {}))
    reassembler = Reassembler(protocol)
    frames = []
    for fragment in case["stream"]:
        frames += reassembler.feed(bytes.fromhex(fragment))
    for frame in frames:
        protocol.decode(case["command"], frame, sample)
    return sample, [e.reason for e in reassembler.take_errors()], len(frames)


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_frame_corpus(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    assert case["source"], "every case names where its frames come from"
    if "error" in case:
        with pytest.raises(FrameError) as caught:
            _run(path.parent.name, case)
        assert caught.value.reason == case["error"], str(caught.value)
        return
    sample, errors, count = _run(path.parent.name, case)
    assert errors == case.get("reassembly_errors", [])
    if "expect" not in case:
        assert count == 0
        return
    assert count == case.get("frames", 1)
    for field, want in case["expect"].items():
        got = getattr(sample, field)
        got = list(got) if isinstance(got, tuple) else got
        assert got == (pytest.approx(want) if isinstance(want, (float, list)) else want), field


def test_requests_are_the_published_frames() -> None:
    # JBD V13 section 3: "Host sends: DD A5 03 00 FF FD 77", 04 → FF FC, 05 → FF FB; Daly V1.2: A5 40 90 08 … 7D
    assert jbd.request(0x03) == bytes.fromhex("DD A5 03 00 FF FD 77")
    assert jbd.request(0x04) == bytes.fromhex("DD A5 04 00 FF FC 77")
    assert jbd.request(0x05) == bytes.fromhex("DD A5 05 00 FF FB 77")
    assert jbd.request(0xAA) == bytes.fromhex("DD A5 AA 00 FF 56 77")
    assert daly.request(0x90, address=0x40) == bytes.fromhex("A5 40 90 08 00 00 00 00 00 00 00 00 7D")
    assert [daly.request(c, address=0x40)[-1] for c in range(0x90, 0x95)] == [0x7D, 0x7E, 0x7F, 0x80, 0x81]
    assert daly.request(0x90) == bytes.fromhex("A5 80 90 08 00 00 00 00 00 00 00 00 BD")  # the BLE module's address
    # MOSFET control (documented layout: write 0xE1, data 00 XX; bit 0 charge off, bit 1 discharge off)
    assert jbd.mosfet_request(charge_on=False, discharge_on=True) == bytes.fromhex("DD 5A E1 02 00 01 FF 1C 77")
    assert jbd.mosfet_request(charge_on=False, discharge_on=False) == bytes.fromhex("DD 5A E1 02 00 03 FF 1A 77")


def test_every_jbd_protection_bit_maps_or_stays_unmapped() -> None:
    for bit in range(16):
        mapped, unmapped = jbd.map_protection(1 << bit)
        assert (mapped != 0) != (unmapped != 0), bit
    assert jbd.map_protection(1 << 10) == (BmsProtection.SHORT_CIRCUIT, 0)
    assert jbd.map_protection(1 << 4 | 1 << 7) == (BmsProtection.HIGH_TEMPERATURE | BmsProtection.LOW_TEMPERATURE, 0)
    assert jbd.map_protection(1 << 12) == (0, 1 << 12)  # MOSFET software lock: state, not a fault


def test_daly_level_one_alarms_stay_apart_level_two_protections_map() -> None:
    assert daly.map_protection(1 << 0) == (0, 1)  # cell over-voltage, level 1 (alarm)
    assert daly.map_protection(1 << 1) == (BmsProtection.OVER_VOLTAGE, 0)  # level 2 (protection)
    assert daly.map_protection(1 << 25) == (BmsProtection.CELL_VOLTAGE_DIFFERENCE, 0)
    assert daly.map_protection(1 << 50) == (BmsProtection.SHORT_CIRCUIT, 0)
    assert daly.map_protection(1 << 40)[0] == BmsProtection.HARDWARE_FAULT


def test_plausibility_drops_what_a_pack_cannot_measure_and_keeps_a_hot_sensor_at_its_limit() -> None:
    sample = check_plausible(PackSample(voltage_v=52.0, current_a=900.0, soc_pct=180.0, cell_count=3,
                                        cell_voltages_v=(3.7, 3.7, 3.7), temperatures_c=(25.0, 260.0)))
    assert sample.current_a is None and sample.soc_pct is None and sample.voltage_v == 52.0
    assert sample.temperatures_c == (25.0, 200.0) and sample.temperature_max_c == 200.0
    assert "temperatures_c" in sample.over_range
    assert len(sample.problems) == 2
    missing = check_plausible(PackSample(cell_count=3, cell_voltages_v=(3.7, float("nan"), 3.7)))
    assert missing.cell_voltages_v == () and missing.cell_max_v is None and "incomplete" in missing.problems[0]


def test_a_corpus_reading_reaches_the_engine_with_cascade_flags() -> None:
    case = json.loads((CORPUS / "jbd" / "basic_info_protection_and_mosfets_off.json").read_text())
    sample, _, _ = _run("jbd", case)
    entry = pack_entry("C0:D6:3C:00:00:01", "xiaoxiang", "jbd", 3, check_plausible(sample))
    report = decode(encode(PackReport(gateway="V000001", seq=7, ts=1_764_990_000_000, packs=[entry])))
    reading = to_reading(report, fleet="bj")
    assert (reading.site, reading.cabinet_id, reading.model, reading.timestamp_ns) == \
        ("bj", "V000001", "ble-gateway", 1_764_990_000_000_000_000)
    assert reading.extra == {"packs": 1}  # stored as a cabinet point of model ble-gateway: the health report's kind
    slot = reading.slots[0]
    assert slot.slot == 3 and slot.voltage_v == 58.88 and slot.soc_pct == 72.0
    assert slot.bms_protection == BmsProtection.OVER_VOLTAGE | BmsProtection.OVER_CURRENT | BmsProtection.SHORT_CIRCUIT
    assert slot.bms_protection_unmapped == 0x1000
    assert slot.extra == {"mosfet_charge": False, "mosfet_discharge": False}


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(PROTOCOLS)), st.lists(st.binary(max_size=40), max_size=12),
       st.sampled_from([0x03, 0x04, 0x05, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x98]))
def test_any_bytes_give_frames_or_frame_errors_never_other_exceptions(name: str, fragments: list[bytes],
                                                                      command: int) -> None:
    protocol = PROTOCOLS[name]
    reassembler = Reassembler(protocol)
    sample = PackSample()
    for fragment in fragments:
        for frame in reassembler.feed(fragment):
            try:
                protocol.decode(command, frame, sample)
            except FrameError as err:
                assert err.reason in {"checksum", "length", "start", "end", "status", "command", "layout"}
    check_plausible(sample)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=255), st.integers(0, 255), st.integers(1, 30), st.binary(max_size=9))
def test_jbd_valid_frames_survive_any_fragmentation_and_any_noise_before_them(
        data: bytes, status: int, mtu: int, noise: bytes) -> None:
    from collectors.ble.emulator import jbd_answer

    frame = jbd_answer(0x04, data, status=status)
    noise = noise.replace(b"\xdd", b"")
    stream = noise + frame
    reassembler = Reassembler(jbd.PROTOCOL)
    frames = []
    for at in range(0, len(stream), mtu):
        frames += reassembler.feed(stream[at:at + mtu])
    assert frames == [frame]
    sample = PackSample()
    if status:
        with pytest.raises(FrameError, match="refused"):
            jbd.PROTOCOL.decode(0x04, frame, sample)
    elif len(data) % 2:
        with pytest.raises(FrameError):
            jbd.PROTOCOL.decode(0x04, frame, sample)
    else:
        jbd.PROTOCOL.decode(0x04, frame, sample)
        assert len(sample.cell_voltages_v) == len(data) // 2


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=13, max_size=13))
def test_daly_checksum_rejects_any_single_byte_change(frame: bytes) -> None:
    from collectors.ble.emulator import daly_answer

    good = daly_answer(0x90, frame[4:12])
    for at in range(13):
        bad = bytearray(good)
        bad[at] = (bad[at] + frame[at] % 255 + 1) % 256
        with pytest.raises(FrameError):
            daly.PROTOCOL.decode(0x90, bytes(bad), PackSample())


def test_reassembler_is_bounded() -> None:
    reassembler = Reassembler(jbd.PROTOCOL)
    assert reassembler.feed(b"\xdd\x04\x00\xff" + bytes(200)) == []  # the longest JBD frame: 262 bytes
    assert len(reassembler.feed(bytes(2000))[0]) == 262
    assert reassembler.garbage_bytes == 204 + 2000 - 262  # the rest is skipped, not kept
    assert [e.reason for e in reassembler.take_errors()] == ["garbage"]
