"""ESPHome Bluetooth proxies as the gateway's radio, without a proxy: bleak-esphome, habluetooth and the
gateway run unchanged above a stand-in of the ESPHome native API (``aioesphomeapi.APIClient``, the seam
below bleak-esphome's bleak backend) whose Bluetooth calls reach the emulated JBD and Daly packs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from collectors.ble.emulator import EmulatedPack, make_radio
from collectors.ble.gateway import Gateway, GatewaySettings
from core.errors import CascadeError

pytest.importorskip("bleak_esphome")
from aioesphomeapi import (  # noqa: E402
    APIVersion,
    BluetoothLEAdvertisement,
    BluetoothProxyFeature,
    DeviceInfo,
)

from collectors.ble.esphome import EsphomeRadio, parse_proxies, read_key  # noqa: E402
from tests.test_ble_gateway import Reports  # noqa: E402

pytestmark = pytest.mark.timeout(60)

_NOTIFY, _WRITE = 0x12, 0x0C  # GATT property masks: read|notify, write-without-response|write


class ProxyApi:
    """What bleak-esphome calls on ``aioesphomeapi.APIClient`` for a proxy with active connections,
    answered by emulated packs (a GATT service per pack, notifications in MTU-sized fragments)."""

    api_version = APIVersion(1, 12)

    def __init__(self, packs: list[EmulatedPack], slots: int = 3) -> None:
        self.packs = {int(p.address.replace(":", ""), 16): p for p in packs}
        self.slots = slots
        self.links: dict[int, Callable[..., None]] = {}
        self.notify: dict[int, Callable[[int, bytes], None]] = {}
        self.writes = 0
        self._free: Callable[..., None] | None = None

    async def device_info(self) -> DeviceInfo:
        flags = BluetoothProxyFeature.PASSIVE_SCAN | BluetoothProxyFeature.ACTIVE_CONNECTIONS
        return DeviceInfo(name="proxy-1", mac_address="AA:BB:CC:00:00:01", bluetooth_mac_address="AA:BB:CC:00:00:02",
                          bluetooth_proxy_feature_flags=int(flags))

    def subscribe_bluetooth_connections_free(self, callback: Callable[..., None]) -> Callable[[], None]:
        self._free = callback
        self._slots_changed()
        return lambda: None

    def _slots_changed(self) -> None:
        if self._free is not None:
            self._free(self.slots - len(self.links), self.slots, list(self.links))

    def subscribe_bluetooth_le_advertisements(self, callback: Callable[[BluetoothLEAdvertisement], None]
                                              ) -> Callable[[], None]:
        self.advertise = lambda: [callback(BluetoothLEAdvertisement(
            address=address, rssi=-60, address_type=0, name=pack.name, service_uuids=[pack.spec.service_uuid],
            service_data={}, manufacturer_data={})) for address, pack in self.packs.items()]
        self.advertise()
        return lambda: None

    async def bluetooth_device_connect(self, address: int, on_state: Callable[..., None], **_: Any) -> Callable[[], None]:
        self.links[address] = on_state
        self._slots_changed()
        asyncio.get_running_loop().call_soon(on_state, True, 23, 0)
        return lambda: None

    async def bluetooth_device_disconnect(self, address: int) -> None:
        on_state = self.links.pop(address, None)
        self.notify.pop(address, None)
        self._slots_changed()
        if on_state is not None:
            on_state(False, 0, 0)

    def bluetooth_device_disconnect_no_wait(self, address: int) -> None:
        self.links.pop(address, None)
        self._slots_changed()

    async def bluetooth_gatt_get_services(self, address: int) -> Any:
        spec = self.packs[address].spec
        chars = [SimpleNamespace(uuid=spec.notify_uuid, handle=11, properties=_NOTIFY, descriptors=[]),
                 SimpleNamespace(uuid=spec.write_uuid, handle=14, properties=_WRITE, descriptors=[])]
        return SimpleNamespace(services=[SimpleNamespace(uuid=spec.service_uuid, handle=10, characteristics=chars)])

    async def bluetooth_gatt_start_notify(self, address: int, handle: int, callback: Callable[[int, bytes], None],
                                          timeout: float = 10.0) -> tuple[Any, Callable[[], None]]:
        self.notify[address] = callback

        async def stop() -> None:
            self.notify.pop(address, None)

        return stop, lambda: self.notify.pop(address, None)

    def bluetooth_gatt_stop_notify(self, address: int, handle: int) -> None:
        self.notify.pop(address, None)

    async def bluetooth_gatt_write(self, address: int, handle: int, data: bytes, response: bool) -> None:
        self.writes += 1
        stream = b"".join(self.packs[address].answer(bytes(data)))
        callback = self.notify.get(address)
        for at in range(0, len(stream), 20):
            await asyncio.sleep(0)
            if callback is not None:
                callback(11, stream[at:at + 20])


def test_proxy_addresses_and_key_are_checked_with_the_flag_named(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_proxies("10.0.4.21:6053, proxy-2 ,10.0.4.23:16053") == [
        ("10.0.4.21", 6053), ("proxy-2", 6053), ("10.0.4.23", 16053)]
    for bad in ("", "10.0.4.21:", "host:port", "h:70000", "a b:6053"):
        with pytest.raises(CascadeError, match="--esphome"):
            parse_proxies(bad)
    key = tmp_path / "key"
    key.write_text("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\n")
    assert read_key(str(key)) == "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
    with pytest.raises(CascadeError, match="cannot be read"):
        read_key(str(tmp_path / "missing"))
    monkeypatch.setenv("CASCADE_ESPHOME_KEY", "from-env")
    assert read_key(None) == "from-env"


async def test_packs_heard_and_polled_through_an_esphome_proxy_and_a_mosfet_switched_off() -> None:
    radio = make_radio(2, latency_s=0.0)
    packs = list(radio.packs.values())
    api = ProxyApi(packs)
    reports = Reports()
    async with EsphomeRadio([]) as proxies:
        proxies.attach(api, await api.device_info())
        settings = GatewaySettings(gateway_id="G000001", fleet="bj", interval_s=0.1, max_connections=2,
                                   scan_timeout_s=0.01, request_timeout_s=1.0, batch_s=0.1, rescan_s=3600.0,
                                   connect_attempts=2, mosfet_allow=frozenset({packs[0].address}))
        gateway = Gateway(settings, reports, discover=proxies.discover, client_class=proxies.client_class)
        task = asyncio.create_task(gateway.run())
        try:
            deadline = time.monotonic() + 20
            while len({p.address for p in reports.packs()}) < 2:
                assert time.monotonic() < deadline, f"no readings through the proxy; {gateway.stats}"
                await asyncio.sleep(0.05)
            result = await gateway.switch_off(packs[0].address, charge=True, discharge=False, actor="t", reason="t")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    by_address = {p.address: p for p in reports.packs()}
    assert {a: p.protocol for a, p in by_address.items()} == {packs[0].address: "jbd", packs[1].address: "daly"}
    jbd = by_address[packs[0].address].battery
    assert jbd.voltage_v == pytest.approx(packs[0].state.voltage_mv / 1000, abs=0.01)
    assert result.result == "ok" and packs[0].state.mosfet_charge is False
    assert api.writes > 0 and api.links == {}  # requests went through the proxy; every link closed on the way out
