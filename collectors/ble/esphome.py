"""ESPHome Bluetooth proxies as the gateway's radio, through ``bleak-esphome``.

An ESP32 running ESPHome's ``bluetooth_proxy`` scans and holds BLE links on the gateway's behalf and talks
to it over ESPHome's native API (TCP, port 6053, Noise-encrypted with the device's API key). bleak-esphome
is a bleak backend for it: its scanner feeds habluetooth's manager, and habluetooth's
``HaBleakClientWrapper`` (a ``BleakClient``) picks a proxy with a free connection slot and connects through
bleak-esphome's ``ESPHomeClient``. The gateway runs unchanged above that seam: its scan reads the packs the
proxies advertised (:meth:`EsphomeRadio.discover`), its sessions use the wrapper as their client class
(bleak-retry-connector's ``establish_connection`` takes it as it takes ``BleakClient``).

    cascade gateway --gateway-id G000001 --fleet bj --esphome 10.0.4.21:6053,10.0.4.22 \\
                    --esphome-key-file /etc/cascade/esphome.key

    async with EsphomeRadio([("10.0.4.21", 6053)], noise_psk=key) as radio:
        gateway = Gateway(settings, uplink, discover=radio.discover, client_class=radio.client_class)

A proxy holds few links (3 on most ESP32 builds): ``--max-connections`` should not exceed the sum over the
proxies. Proxies reconnect on their own (aioesphomeapi's ``ReconnectLogic``); while one is away its packs
fail their polls and back off like packs out of range.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from core.errors import CascadeError

__all__ = ["DEFAULT_PORT", "EsphomeRadio", "parse_proxies", "read_key"]

log = logging.getLogger("cascade.ble.esphome")

DEFAULT_PORT = 6053


def parse_proxies(text: str) -> list[tuple[str, int]]:
    """``HOST[:PORT][,HOST[:PORT]...]`` → ``[(host, port)]`` (port 6053 when left out); an error names the
    flag and the fix."""
    proxies: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        host, sep, port_text = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        port = DEFAULT_PORT
        if sep:
            try:
                port = int(port_text)
            except ValueError:
                port = 0
        if not host or not 1 <= port <= 65535 or any(c.isspace() for c in host):
            raise CascadeError(f"{item!r} is not a proxy address", key="--esphome",
                               fix="give HOST:PORT[,HOST:PORT...], e.g. 10.0.4.21:6053 (port 6053 by default)")
        proxies.append((host, port))
    return proxies


def read_key(path: str | None) -> str | None:
    """The proxies' API encryption key (Noise PSK, base64) from ``path``, else ``$CASCADE_ESPHOME_KEY``;
    None: the proxies run without encryption."""
    if path:
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise CascadeError(f"cannot be read: {err.strerror}", source=path,
                               fix="give the file holding the proxies' API encryption key") from None
        if not key:
            raise CascadeError("is empty", source=path, fix="write the API encryption key (base64) into it")
        return key
    return os.environ.get("CASCADE_ESPHOME_KEY") or None


class EsphomeRadio:
    """habluetooth's manager and one native-API connection per proxy; :meth:`discover` and
    :attr:`client_class` are what the gateway takes in place of its local adapter.

    ``api_factory(host, port, noise_psk)`` builds each proxy's API client (default: aioesphomeapi's
    ``APIClient``); tests hand :meth:`attach` a stand-in of that API, the seam below bleak-esphome.
    """

    def __init__(self, proxies: Sequence[tuple[str, int]], *, noise_psk: str | None = None,
                 api_factory: Callable[[str, int, str | None], Any] | None = None) -> None:
        import habluetooth  # the optional dependency (pip install 'cascade[esphome]'), loaded only when used

        self.proxies = list(proxies)
        self.noise_psk = noise_psk
        self._api_factory = api_factory
        self.manager: Any = None
        self.client_class: type[Any] = habluetooth.HaBleakClientWrapper
        self._logics: list[Any] = []
        self._detach: dict[int, Callable[[], None]] = {}

    async def __aenter__(self) -> EsphomeRadio:
        import habluetooth

        self.manager = habluetooth.BluetoothManager()
        habluetooth.set_manager(self.manager)
        await self.manager.async_setup()
        try:
            for host, port in self.proxies:
                await self._connect(host, port)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for logic in self._logics:
            await logic.stop()
        self._logics.clear()
        for detach in list(self._detach.values()):
            detach()
        self._detach.clear()
        if self.manager is not None:
            self.manager.async_stop()

    async def _connect(self, host: str, port: int) -> None:
        from aioesphomeapi.client import APIClient
        from aioesphomeapi.reconnect_logic import ReconnectLogic

        api = (self._api_factory(host, port, self.noise_psk) if self._api_factory is not None
               else APIClient(host, port, None, noise_psk=self.noise_psk))

        async def connected() -> None:
            self.attach(api, await api.device_info())
            log.info("ESPHome proxy %s:%d connected", host, port)

        async def disconnected(expected: bool) -> None:
            detach = self._detach.pop(id(api), None)
            if detach is not None:
                detach()
            if not expected:
                log.warning("ESPHome proxy %s:%d lost; reconnecting", host, port)

        logic = ReconnectLogic(client=api, on_connect=connected, on_disconnect=disconnected, name=host)
        self._logics.append(logic)
        await logic.start()  # connects in the background: an unreachable proxy does not stop the gateway

    def attach(self, api: Any, device_info: Any) -> None:
        """Register a connected proxy's scanner with the manager (bleak-esphome's documented steps: set it
        up, register it, and on loss mark it unavailable and fire its disconnect callbacks)."""
        import bleak_esphome

        data = bleak_esphome.connect_scanner(api, device_info, True)
        scanner = data.scanner
        assert scanner is not None  # connect_scanner always builds one
        unsetup = scanner.async_setup()
        unregister = self.manager.async_register_scanner(scanner)

        def detach() -> None:
            data.bluetooth_device.async_set_unavailable()
            for callback in list(data.disconnect_callbacks):
                callback()
            data.disconnect_callbacks.clear()
            unsetup()
            unregister()

        self._detach[id(api)] = detach

    async def discover(self, timeout_s: float, **_: Any) -> dict[str, tuple[BLEDevice, AdvertisementData]]:
        """What the proxies heard, as ``BleakScanner.discover(return_adv=True)`` gives it: advertisements
        arrive continuously, so a scan is a wait of ``timeout_s`` and a look at the connectable devices."""
        await asyncio.sleep(timeout_s)
        return {info.address: (info.device, info.advertisement)
                for info in self.manager.async_discovered_service_info(True)}
