"""Device identity and trust for vehicle ingest: who may report, proof it is them, fresh and once.

* :class:`DeviceRegistry`: the provisioned devices (id, fleet, HMAC secret, kind: ``vehicle`` or
  ``gateway``), from ``devices.json`` (written by ``cascade devices provision``, which also writes
  Mosquitto's password file and ACL). An unknown device is refused.
* :func:`sign` / :func:`verify`: HMAC-SHA256 over ``timestamp \\n nonce \\n body`` for HTTPS posts.
* :class:`Gate`: per-device freshness, sequence de-duplication (a 64-report window, so a QoS 1
  redelivery or a replayed report is dropped) and a token-bucket rate limit; a few dozen bytes per
  tracked device.
* :class:`NonceCache`: HTTPS nonces seen inside the replay window, bounded.

Every refusal is a short reason (the Prometheus label) and a sentence saying what and where.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.errors import CascadeError
from core.validation import Field, Model, validate

__all__ = ["DEVICE_KINDS", "REPLAY_WINDOW_S", "Device", "DeviceRegistry", "Gate", "NonceCache", "set_kind", "sign",
           "verify"]

REPLAY_WINDOW_S = 300.0
"""A report or request more than five minutes from the platform's clock is refused (±)."""


DEVICE_KINDS = ("vehicle", "gateway")
"""What a provisioned device is: a vehicle (reports telemetry, takes vehicle commands) or a BLE gateway
(reports packs; never a vehicle command). A ``devices.json`` entry without ``kind`` is a vehicle."""


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    fleet: str
    secret: bytes
    kind: str = "vehicle"


class _DeviceEntry(Model):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="device id (the vehicle code)")
    fleet: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="fleet (topic level)")
    secret: str = Field(pattern=r"^[0-9a-f]{32,128}$", description="HMAC key, hex")
    kind: Literal["vehicle", "gateway"] = Field("vehicle", description="vehicle (default) or gateway (a BLE gateway)")


class _DevicesFile(Model):
    devices: list[_DeviceEntry]


class DeviceRegistry:
    """The devices allowed to report. ``get`` is a dict lookup (hot path)."""

    def __init__(self, devices: list[Device]) -> None:
        self._by_id: dict[str, Device] = {}
        for device in devices:
            if device.id in self._by_id:
                raise CascadeError("is listed twice", key=f"devices[{device.id}]", fix="keep one entry per device")
            self._by_id[device.id] = device

    @classmethod
    def load(cls, path: str | Path) -> DeviceRegistry:
        """Read ``devices.json``; a clear error (file, key, fix) for a malformed file."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise CascadeError(f"cannot be read: {err.strerror}", source=path,
                               fix="run `cascade devices provision`, or set `vehicles.devices` to the file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CascadeError(f"is not JSON: {err}", source=path,
                               fix="regenerate it with `cascade devices provision`") from None
        parsed = validate(_DevicesFile, raw, path)
        return cls([Device(e.id, e.fleet, bytes.fromhex(e.secret), e.kind) for e in parsed.devices])

    def get(self, device_id: str) -> Device | None:
        return self._by_id.get(device_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Device]:
        return iter(self._by_id.values())


def set_kind(path: str | Path, device_ids: Iterable[str], kind: str) -> int:
    """Mark ``device_ids`` in ``devices.json`` as ``kind`` (``vehicle`` drops the key: the default); the
    rest of the file is kept as it is, and so is its mode (it holds secrets). Returns how many changed."""
    if kind not in DEVICE_KINDS:
        raise CascadeError(f"unknown device kind {kind!r}", fix=f"use one of {', '.join(DEVICE_KINDS)}")
    path = Path(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    wanted, changed = set(device_ids), 0
    for entry in doc.get("devices", []):
        if entry.get("id") in wanted and entry.get("kind", "vehicle") != kind:
            if kind == "vehicle":
                entry.pop("kind", None)
            else:
                entry["kind"] = kind
            changed += 1
    if changed:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # the file exists: its mode (0600) stays
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=1) + "\n")
    return changed


def sign(secret: bytes, timestamp_ms: int, nonce: str, body: bytes) -> str:
    """The ``X-Cascade-Signature`` of an HTTPS post: hex HMAC-SHA256 of ``ts \\n nonce \\n body``."""
    mac = hmac.new(secret, f"{timestamp_ms}\n{nonce}\n".encode(), hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


def verify(secret: bytes, timestamp_ms: int, nonce: str, body: bytes, signature: str) -> bool:
    """Constant-time check of :func:`sign`."""
    return hmac.compare_digest(sign(secret, timestamp_ms, nonce, body), signature.lower())


def freshness(timestamp_ms: int, now_s: float, window_s: float = REPLAY_WINDOW_S) -> str | None:
    """``None`` when ``timestamp_ms`` is within ±window of ``now_s``; else ``stale`` or ``future``."""
    skew = timestamp_ms / 1000.0 - now_s
    if skew < -window_s:
        return "stale"
    if skew > window_s:
        return "future"
    return None


class NonceCache:
    """Nonces seen within the replay window (an HTTPS request is refused if its nonce repeats).

    Bounded: at most ``capacity`` nonces; the oldest go first (they are outside the window soonest).
    """

    def __init__(self, window_s: float = REPLAY_WINDOW_S, capacity: int = 200_000) -> None:
        self.window_s = window_s
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def seen(self, device: str, nonce: str, now: float) -> bool:
        """True if ``nonce`` was already used by ``device`` in the window; records it otherwise."""
        seen = self._seen
        while seen:
            key, at = next(iter(seen.items()))
            if now - at <= 2 * self.window_s and len(seen) < self.capacity:
                break
            seen.popitem(last=False)
        key = (device, nonce)
        if key in seen:
            return True
        seen[key] = now
        return False


_WINDOW = 64
_MASK = (1 << _WINDOW) - 1


class Gate:
    """Per-device de-duplication and rate limit: ``admit(device, seq, ts_ms, now)`` → refusal or None.

    State per device: ``[highest seq, bitmap of the 64 below it, its device time, tokens, refill time]``.
    A report whose ``seq`` was seen is a ``duplicate`` (a QoS 1 redelivery or a replay); one more than
    64 below the highest is ``replayed`` unless its device time is newer than the highest's (the device
    restarted and counts from 0 again: the window starts over). ``rate_per_s`` tokens refill a bucket
    of ``burst``; an empty bucket refuses ``rate_limited``. ``max_devices`` bounds the table (least
    recently seen dropped first).
    """

    def __init__(self, *, rate_per_s: float = 0.5, burst: float = 30.0, max_devices: int = 2_000_000) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_devices = max_devices
        self._state: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._state)

    def admit(self, device: str, seq: int, ts_ms: int, now: float, *, charge: bool = True) -> str | None:
        """``charge``: take a token for this report (MQTT); an HTTPS batch is charged once per request
        (:meth:`charge`) and its reports, buffered while the device was offline, only de-duplicated."""
        state = self._state.get(device)
        if state is None:
            if len(self._state) >= self.max_devices:
                del self._state[next(iter(self._state))]
            self._state[device] = [seq, 1, ts_ms, self.burst - (1.0 if charge else 0.0), now]
            return None
        if charge and self._take(state, now):
            return "rate_limited"
        return self._dedupe(state, seq, ts_ms)

    def charge(self, device: str, now: float) -> str | None:
        """Take one token for a request of ``device``: ``rate_limited`` when its bucket is empty."""
        state = self._state.get(device)
        if state is None:
            return None  # its first report creates its state (with a full bucket less this request)
        return "rate_limited" if self._take(state, now) else None

    def _take(self, state: list[float], now: float) -> bool:
        """Refill, then take a token; True when there was none."""
        tokens = min(self.burst, state[3] + max(0.0, now - state[4]) * self.rate_per_s)
        state[4] = now
        if tokens < 1.0:
            state[3] = tokens
            return True
        state[3] = tokens - 1.0
        return False

    @staticmethod
    def _dedupe(state: list[float], seq: int, ts_ms: int) -> str | None:
        high = int(state[0])
        bitmap = int(state[1])
        if seq > high:
            shift = seq - high
            state[0], state[1], state[2] = seq, ((bitmap << shift) | 1) & _MASK if shift < _WINDOW else 1, ts_ms
            return None
        back = high - seq
        if back >= _WINDOW:
            if ts_ms > state[2]:  # the device restarted its count
                state[0], state[1], state[2] = seq, 1, ts_ms
                return None
            return "replayed"
        if bitmap >> back & 1:
            return "duplicate"
        state[1] = bitmap | 1 << back
        return None


