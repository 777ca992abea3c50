"""What the Modbus source is configured with: one cabinet's connection and the source as a whole.

Public: the config loader builds these, and the simulators describe their fleet with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .profile import Profile

__all__ = ["CabinetConfig", "ModbusSettings"]


@dataclass(frozen=True, slots=True)
class CabinetConfig:
    """Where a cabinet is and how to poll it."""

    id: str
    host: str
    port: int = 502
    device_id: int = 1
    site: str = "default"
    profile: str = "reference-cabinet"
    slots: int | None = None  # default: the profile's slot count
    interval_s: float = 5.0
    # Safety fast lane (collectors/modbus/device.py): the safety fields every this many seconds, the
    # rest every interval_s. None (or >= interval_s): off. On by default: fault to page p95 < 2 s at
    # the 5 s poll (docs/scaling.md, "The safety fast lane").
    fast_interval_s: float | None = 1.0
    timeout_s: float = 2.0
    busy_retries: int = 3
    busy_backoff_s: float = 0.05
    max_gap: int | None = None  # default: the profile's
    # Requests written before the first answer (Modbus TCP pipelining, collectors/modbus/tcp.py): 1 waits
    # for each answer, what every device takes; more only for a device documented to queue requests.
    max_in_flight: int = 1


@dataclass(frozen=True, slots=True)
class ModbusSettings:
    """What a Modbus source needs, validated by the config loader before it is built."""

    cabinets: Sequence[CabinetConfig]
    profiles: Mapping[str, Profile]
    jitter: float = 0.1
    backoff_cap_s: float = 60.0
