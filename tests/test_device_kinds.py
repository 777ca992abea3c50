"""A provisioned device says what it is (``kind`` in devices.json): a BLE gateway is refused vehicle
commands from the registry alone, before it has ever reported; files written before ``kind`` read as
vehicles."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from cascade.cli import main as cascade_main
from cascade.commands import CommandRefused, VehicleCommandService
from collectors.vehicles.settings import MqttSettings
from collectors.vehicles.trust import DeviceRegistry, set_kind
from core.errors import CascadeError
from tests.fixtures.clock import ManualClock

T0 = 1_764_990_000.0


def test_cascade_devices_provision_marks_gateways_and_the_command_service_refuses_them(tmp_path: Path) -> None:
    out = tmp_path / "devices"
    assert cascade_main(["devices", "provision", "--count", "2", "--fleet", "bj", "--out", str(out)]) == 0
    assert cascade_main(["devices", "provision", "--count", "1", "--kind", "gateway", "--fleet", "bj",
                         "--out", str(out)]) == 0
    path = out / "devices.json"
    entries = {d["id"]: d for d in json.loads(path.read_text(encoding="utf-8"))["devices"]}
    assert set(entries) == {"V000001", "V000002", "G000001"}  # --kind gateway: prefix G unless told otherwise
    assert entries["G000001"]["kind"] == "gateway" and "kind" not in entries["V000001"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, "the file holds secrets"
    registry = DeviceRegistry.load(path)
    assert {d.id: d.kind for d in registry} == {"V000001": "vehicle", "V000002": "vehicle", "G000001": "gateway"}
    # Provisioning vehicles again keeps the gateway a gateway.
    assert cascade_main(["devices", "provision", "--count", "3", "--fleet", "bj", "--out", str(out)]) == 0
    assert DeviceRegistry.load(path).get("G000001").kind == "gateway"

    service = VehicleCommandService(MqttSettings(host="127.0.0.1", port=1), DeviceRegistry.load(path),
                                    clock=ManualClock(T0), registry=CollectorRegistry())
    with pytest.raises(CommandRefused, match="'G000001' is a BLE gateway, not a vehicle") as err:
        service.issue("G000001", "power_off", who="user:eng")  # it has not reported since the start
    assert err.value.reason == "not_a_vehicle" and service.records == {}
    assert service.issue("V000001", "power_off", who="user:eng").status == "pending"


def test_a_devices_file_without_kind_reads_as_vehicles_and_a_bad_kind_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "devices.json"
    old.write_text(json.dumps({"devices": [{"id": "V000001", "fleet": "bj", "secret": "00" * 16}]}))
    assert [d.kind for d in DeviceRegistry.load(old)] == ["vehicle"]
    assert set_kind(old, ["V000001"], "gateway") == 1 and DeviceRegistry.load(old).get("V000001").kind == "gateway"
    assert set_kind(old, ["V000001"], "vehicle") == 1 and "kind" not in old.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"devices": [{"id": "V1", "fleet": "bj", "secret": "00" * 16, "kind": "scooter"}]}))
    with pytest.raises(CascadeError, match="kind"):
        DeviceRegistry.load(bad)
    with pytest.raises(CascadeError, match="vehicle, gateway"):
        set_kind(old, ["V000001"], "scooter")

