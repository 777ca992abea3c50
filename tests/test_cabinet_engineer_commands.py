"""The engineer's cabinet commands on the simulated reference cabinet (fault reset, charging parameters):
written over real Modbus, read back, audited, and honoured by the simulator's physics."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp
import pytest

from alerting import cli as alerts_cli
from cascade.app import start_app
from collectors.modbus.profile import find_profile
from core.model import ChargerProtection
from simulators.cabinet import CabinetState, ChargeLimits, SlotState, make_battery
from simulators.register_bank import RegisterBank
from tests import test_auth_api
from tests.test_auth_api import CAB, auth_for, bearer, make_config

pytestmark = pytest.mark.timeout(120)

# The same fixtures as the roles tests: a local issuer and one simulated reference cabinet.
issuer = test_auth_api.issuer
cabinet = test_auth_api.cabinet

T0 = 1_764_990_000.0  # 2025-12-06 03:00 UTC = 11:00 Beijing time




async def test_an_engineer_resets_a_fault_and_limits_the_charge_current_with_read_back_and_audit(
        tmp_path, issuer, cabinet) -> None:
    state = cabinet.state
    state.device_fault_code = 0x0201
    state.slots[0].charger_protection |= ChargerProtection.FAULT_CUTOFF | ChargerProtection.OPERATOR_CUTOFF
    config = make_config(tmp_path, cabinet.port, auth=auth_for(issuer))
    async with start_app(config) as pipeline, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{pipeline.metrics_port}/api/cabinets/{CAB}/commands"
        eve = bearer(issuer.token("eve", "engineer"))

        async def command(body: dict, headers=eve) -> tuple[int, dict]:
            async with http.post(url, json=body, headers=headers) as resp:
                return resp.status, await resp.json()

        code, reset = await command({"command": "fault_reset", "reason": "after inspection", "confirm": True})
        code_limit, limit = await command({"command": "charge_current_limit", "value": 20, "reason": "cold site",
                                           "confirm": True})
        code_bad, bad = await command({"command": "charge_temperature_limit", "value": 5000, "reason": "typo",
                                       "confirm": True})
        code_operator, refused = await command({"command": "charge_current_limit", "value": 30, "reason": "x",
                                                "confirm": True}, headers=bearer(issuer.token("otto", "operator")))
        # The CLI sends the same command with the engineer's token, and lists it in Beijing time.
        base = f"http://127.0.0.1:{pipeline.metrics_port}"

        def cli(*argv: str) -> int:
            return alerts_cli.run(["--url", base, "--token", issuer.token("eve", "engineer"), *argv])
        by_cli = await asyncio.to_thread(cli, "command", CAB, "charge_temperature_limit", "--value", "450",
                                         "--reason", "summer", "--confirm")

    assert code == 200, reset
    assert (reset["result"], reset["command"], reset["value"], reset["readback"], reset["actor"], reset["slot"]) == (
        "ok", "fault_reset", 1, 1, "user:eve", None)
    assert state.device_fault_code == 0
    assert state.slots[0].charger_protection == ChargerProtection.OPERATOR_CUTOFF, "only the latched fault clears"
    assert code_limit == 200 and (limit["result"], limit["readback"]) == ("ok", 20), limit
    assert state.limits.charge_current_limit == 20
    assert code_bad == 502 and bad["result"] == "failed" and state.limits.charge_temperature_limit == 450
    assert code_operator == 403 and refused["code"] == "forbidden"
    assert by_cli == 0
    audit = [json.loads(x) for x in (tmp_path / "control-audit.jsonl").read_text().splitlines()]
    assert [(a["action"], a["result"], a["value"], a["readback"], a["actor"]) for a in audit] == [
        ("fault_reset", "ok", 1, 1, "user:eve"), ("charge_current_limit", "ok", 20, 20, "user:eve"),
        ("charge_temperature_limit", "failed", 5000, None, "user:eve"),
        ("charge_temperature_limit", "ok", 450, 450, "user:eve")]
    # The limit changes what the simulated chargers deliver: no slot draws more than 2.0 A.
    state.slots[0].set_output(True)
    state.advance_to(state.now + 120)
    assert max(s.current_a for s in state.slots) <= 2.0 + 1e-9
    assert any(s.current_a > 1.0 for s in state.slots), "packs still charge, at the limit"


def test_the_register_bank_reads_back_parameters_and_refuses_values_out_of_range() -> None:
    profile = find_profile("reference-cabinet")
    bank = RegisterBank(profile, slot_count=4)
    cab = CabinetState.create("C0001", "site-01", index=0, slot_count=4, seed=3, now=T0)
    kind, address = profile.command_address("charge_schedule_start", None)
    assert bank.write(cab, kind, address, [1320], T0) is None  # 22:00
    assert bank.write(cab, kind, address + 1, [360], T0) is None  # 06:00, over midnight
    assert bank.read(cab, kind, address, 2, T0) == [1320, 360]
    assert bank.write(cab, kind, address, [1440], T0) == "ILLEGAL_VALUE"
    reset = profile.command_address("fault_reset", None)
    assert bank.write(cab, *reset, [2], T0) == "ILLEGAL_VALUE"
    cab.device_fault_code = 7
    assert bank.write(cab, *reset, [1], T0) is None and cab.device_fault_code == 0
    assert bank.read(cab, *reset, 1, T0) == [1]
    # Outside the window (11:00 Beijing time) nothing charges.
    cab.advance_to(T0 + 600)
    assert all(s.current_a == 0.0 for s in cab.slots)


@pytest.mark.parametrize(("limits", "temperature_c", "beijing_hour", "allowed"), [
    (ChargeLimits(), 60.0, 12, True),
    (ChargeLimits(charge_temperature_limit=450), 45.0, 12, False),
    (ChargeLimits(charge_temperature_limit=450), 44.9, 12, True),
    (ChargeLimits(charge_schedule_start=22 * 60, charge_schedule_end=6 * 60), 20.0, 23, True),
    (ChargeLimits(charge_schedule_start=22 * 60, charge_schedule_end=6 * 60), 20.0, 5, True),
    (ChargeLimits(charge_schedule_start=22 * 60, charge_schedule_end=6 * 60), 20.0, 12, False),
    (ChargeLimits(charge_schedule_start=9 * 60, charge_schedule_end=17 * 60), 20.0, 12, True),
    (ChargeLimits(charge_schedule_start=9 * 60, charge_schedule_end=17 * 60), 20.0, 18, False),
])
def test_charge_limits_pause_charging_outside_the_window_and_above_the_temperature(
        limits: ChargeLimits, temperature_c: float, beijing_hour: int, allowed: bool) -> None:
    midnight_utc = 1_764_979_200.0  # 2025-12-06 00:00 UTC
    now = midnight_utc + ((beijing_hour - 8) % 24) * 3600
    assert limits.allows(temperature_c, now) is allowed


def test_a_current_limit_below_a_tenth_of_c_does_not_make_a_pack_full() -> None:
    rng = random.Random(5)
    slot = SlotState(slot=1, rng=rng, phase=0.0, limits=ChargeLimits(charge_current_limit=5))  # 0.5 A
    slot.dock(make_battery(rng, 20.0, soc=0.3), T0)
    slot.step(10.0, T0 + 10, 20.0)
    assert not slot.full and slot.current_a == pytest.approx(0.5)
