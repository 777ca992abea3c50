"""A simulated fleet: cabinets, their profiles and endpoints, and the scenarios playing on them.

Cabinet ``i`` (0-based) is ``C{i+1:04d}``, served at ``base_port + i // per_port`` with device
id ``i % per_port + 1``, and uses ``profiles[i % len(profiles)]`` so one fleet can mix vendors.
Time is the injected ``clock`` (Unix seconds): every read first calls :meth:`Fleet.sync`, which
plays due scenario steps in time order and advances the physics, so nothing ticks in between.

    >>> from collectors.modbus.profile import find_profile
    >>> fleet = build_fleet([("reference-cabinet", find_profile("reference-cabinet"))], cabinets=3,
    ...                     clock=lambda: 1_700_000_000.0)
    >>> [(c.cabinet_id, c.port, c.device_id) for c in fleet.cabinets][:2]
    [('C0001', 15020, 1), ('C0002', 15021, 1)]
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from collectors.modbus.profile import Profile
from collectors.modbus.settings import CabinetConfig

from .cabinet import CabinetState
from .register_bank import RegisterBank
from .scenarios import Scenario, ScenarioRun, check_target

__all__ = ["Fleet", "SimulatedCabinet", "build_fleet", "free_port_block"]


@dataclass(slots=True)
class SimulatedCabinet:
    """One cabinet of the fleet: its state, its register map and where it is served."""

    state: CabinetState
    profile: Profile
    profile_ref: str  # the profile as given (name or path), written to the fleet file
    bank: RegisterBank
    host: str
    port: int
    device_id: int

    @property
    def cabinet_id(self) -> str:
        return self.state.cabinet_id

    @property
    def slot_count(self) -> int:
        return self.bank.slot_count


class Fleet:
    """All simulated cabinets and the scenario runs playing on them."""

    def __init__(self, cabinets: Sequence[SimulatedCabinet], *, clock: Callable[[], float] = time.time,
                 speed: float = 1.0) -> None:
        self.cabinets = list(cabinets)
        self.clock = clock
        self.speed = speed
        self.by_id = {c.cabinet_id: c for c in self.cabinets}
        self.by_endpoint = {(c.port, c.device_id): c for c in self.cabinets}
        self.runs: dict[str, ScenarioRun] = {}

    def ports(self) -> dict[int, list[SimulatedCabinet]]:
        """Port → the cabinets it serves, in device id order."""
        out: dict[int, list[SimulatedCabinet]] = {}
        for cab in self.cabinets:
            out.setdefault(cab.port, []).append(cab)
        return out

    def sync(self, cabinet: SimulatedCabinet, now: float | None = None) -> float:
        """Bring one cabinet up to ``now``: play its due scenario steps in order, then physics."""
        now = self.clock() if now is None else now
        state = cabinet.state
        runs = [r for r in self.runs.values() if r.cabinet is state]
        while runs:
            due = [(t, r) for r in runs if (t := r.next_time()) is not None and t <= now]
            if not due:
                break
            t, run = min(due, key=lambda item: item[0])
            state.advance_to(t)
            run.apply_next()
        state.advance_to(now)
        return now

    def sync_due(self, now: float | None = None) -> float:
        """Play every due scenario step of the fleet (only cabinets with scenarios are touched)."""
        now = self.clock() if now is None else now
        for state_id in {r.scenario.cabinet for r in self.runs.values()}:
            self.sync(self.by_id[state_id], now)
        return now

    def read(self, cabinet: SimulatedCabinet, register_type: str, address: int,
             count: int) -> list[int] | list[bool] | None:
        """Register words as the cabinet serves them now; ``None`` for an illegal address."""
        now = self.sync(cabinet)
        return cabinet.bank.read(cabinet.state, register_type, address, count, now)

    def write(self, cabinet: SimulatedCabinet, register_type: str, address: int,
              values: list[int] | list[bool]) -> str | None:
        """Apply a write now; ``None`` on success, else the Modbus exception name."""
        now = self.sync(cabinet)
        return cabinet.bank.write(cabinet.state, register_type, address, values, now)

    def is_unreachable(self, cabinet: SimulatedCabinet, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        return cabinet.state.unreachable_until > now

    def start_scenario(self, scenario: Scenario, *, speed: float | None = None,
                       now: float | None = None) -> ScenarioRun:
        """Start playing ``scenario`` now; raises ScenarioError when its target is not in the fleet."""
        check_target(scenario, {c.cabinet_id: c.slot_count for c in self.cabinets})
        cabinet = self.by_id[scenario.cabinet]
        now = self.sync(cabinet, now)
        run = ScenarioRun(scenario, cabinet.state, started_s=now, speed=speed or self.speed)
        self.runs[run.id] = run
        self.sync(cabinet, now)  # steps at 0s take effect before the next read
        return run

    def stop_scenario(self, run_id: str) -> bool:
        """Stop a run and undo its effects; False if there is no such run."""
        run = self.runs.pop(run_id, None)
        if run is None:
            return False
        self.sync(self.by_id[run.scenario.cabinet])
        run.stop()
        return True

    def next_event_s(self) -> float | None:
        """Clock time of the next scenario step or outage end, for the server's timer."""
        times = [t for r in self.runs.values() if (t := r.next_time()) is not None]
        now = self.clock()
        times += [c.state.unreachable_until for c in self.cabinets if c.state.unreachable_until > now]
        return min(times, default=None)

    def describe(self) -> list[dict[str, Any]]:
        """One entry per cabinet, as written to the fleet file."""
        return [
            {"id": c.cabinet_id, "site": c.state.site, "host": c.host, "port": c.port,
             "device_id": c.device_id, "profile": c.profile_ref, "slots": c.slot_count}
            for c in self.cabinets
        ]

    def collector_configs(self, **settings: Any) -> list[CabinetConfig]:
        """The collector's view of this fleet (what a fleet file gives ``cascade run``), with
        ``settings`` (interval_s, timeout_s, ...) applied to every cabinet."""
        return [CabinetConfig(**{**entry, **settings}) for entry in self.describe()]

    def write_fleet_file(self, path: str | Path) -> Path:
        """Write the fleet file the collector config includes: ``cabinets:`` with every cabinet."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = ("# Written by `cascade simulate`: one entry per simulated cabinet.\n"
                  "# Regenerated at every start; edit the simulator's options, not this file.\n")
        body = yaml.safe_dump({"cabinets": self.describe()}, sort_keys=False, default_flow_style=None)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(header + body, encoding="utf-8")
        tmp.replace(path)  # a collector reading it never sees half a file
        return path


def build_fleet(profiles: Sequence[tuple[str, Profile]], *, cabinets: int = 20, slots: int | None = None,
                host: str = "127.0.0.1", base_port: int = 15020, per_port: int = 1, seed: int = 0,
                site_size: int = 10, clock: Callable[[], float] = time.time, speed: float = 1.0) -> Fleet:
    """Create ``cabinets`` cabinets; ``profiles`` is [(name or path as given, Profile)], used in turn.

    ``slots`` defaults to each profile's slot count and is capped at it: a register map only
    describes the slots its vendor builds.
    """
    if not profiles:
        raise ValueError("give at least one profile")
    if cabinets < 1 or per_port < 1 or site_size < 1:
        raise ValueError("cabinets, per_port and site_size must be at least 1")
    now = clock()
    out = []
    banks: dict[tuple[int, int], RegisterBank] = {}  # one address map per (profile, slot count)
    for i in range(cabinets):
        ref, profile = profiles[i % len(profiles)]
        slot_count = profile.slot_count if slots is None else min(slots, profile.slot_count)
        cabinet_id = f"C{i + 1:04d}"
        site_index = i // site_size
        state = CabinetState.create(cabinet_id, f"site-{site_index + 1:02d}", index=i, slot_count=slot_count,
                                    seed=seed, now=now, site_index=site_index)
        bank = banks.get((id(profile), slot_count))
        if bank is None:
            bank = banks[(id(profile), slot_count)] = RegisterBank(profile, slot_count, seed=seed)
        out.append(SimulatedCabinet(state, profile, ref, bank, host, base_port + i // per_port, i % per_port + 1))
    return Fleet(out, clock=clock, speed=speed)


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """First of ``count`` consecutive ports free on ``host`` right now (for tests and benchmarks)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((host, 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no block of {count} free ports on {host}")
