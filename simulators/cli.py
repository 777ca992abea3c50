"""``cascade simulate`` and ``cascade scenario``: run a simulated fleet, post scenarios to it.

Wire-up (in ``cascade/cli.py``)::

    add_arguments(subparser)                   # cascade simulate [options]
    return asyncio.run(run(args))
    return inject_main(argv)                   # cascade scenario FILE... [options]

Everything is validated before anything listens: a bad profile, scenario or port range stops
start-up with a message naming the file, the key and the fix (exit status 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from collectors.modbus.profile import Profile, ProfileError, find_profile
from core.stackenv import stack_value

from .fleet import build_fleet
from .scenarios import SCENARIO_DIR, Scenario, ScenarioError, check_target, load_scenario
from .server import SimulatorServer

__all__ = ["add_arguments", "inject_main", "run"]

log = logging.getLogger("cascade.simulate")

DEFAULT_PROFILE = "reference-cabinet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cascade simulate``."""
    parser.add_argument("--profile", action="append", metavar="NAME|PATH",
                        help="register profile: a shipped model name or a YAML path; repeat or comma-separate "
                             f"to mix vendors across the fleet (cabinet i uses profile i mod n; default {DEFAULT_PROFILE})")
    parser.add_argument("--cabinets", type=int, default=20, metavar="N", help="cabinets to simulate (default 20)")
    parser.add_argument("--slots", type=int, default=None, metavar="N",
                        help="slots per cabinet (default and maximum: the profile's slot count)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=15020, metavar="BASE",
                        help="first Modbus TCP port; cabinet i is on BASE + i // per-port (default 15020)")
    parser.add_argument("--per-port", type=int, default=1, metavar="N",
                        help="cabinets per port as device ids 1..N (default 1: one port per cabinet, like real ones)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same fleet (default 0)")
    parser.add_argument("--speed", type=float, default=1.0, metavar="FACTOR",
                        help="scenario time acceleration: 10 plays a 30 min scenario in 3 min (default 1)")
    parser.add_argument("--scenario", action="append", default=[], metavar="FILE",
                        help="scenario YAML (or shipped name, e.g. thermal_runaway) to start with; repeatable")
    parser.add_argument("--control-port", type=int, default=15019, metavar="PORT",
                        help="HTTP control endpoint for runtime scenarios (default 15019; 0 = off)")
    parser.add_argument("--state", default="", metavar="FILE",
                        help="keep running scenarios here and resume them after a restart, so a fault nobody "
                             "fixed is still there (make run: var/simulator-scenarios.json; default: off)")
    parser.add_argument("--fleet-file", default="var/fleet.yaml", metavar="PATH",
                        help="where to write the fleet file the collector config includes (default var/fleet.yaml)")
    parser.add_argument("--site-size", type=int, default=10, metavar="N", help="cabinets per site (default 10)")


class _StartupError(Exception):
    pass


def _profiles(refs: Sequence[str] | None) -> list[tuple[str, Profile]]:
    names = [n.strip() for ref in (refs or [DEFAULT_PROFILE]) for n in ref.split(",") if n.strip()]
    if not names:
        raise _StartupError("--profile: no profile given. Fix: e.g. --profile reference-cabinet")
    loaded: dict[str, Profile] = {}
    for name in names:
        if name not in loaded:
            loaded[name] = find_profile(name)
    return [(name, loaded[name]) for name in names]


def _check_options(args: argparse.Namespace) -> None:
    checks = [
        (args.cabinets >= 1, "--cabinets", "use 1 or more"),
        (args.slots is None or 1 <= args.slots <= 256, "--slots", "use 1..256"),
        (1 <= args.per_port <= 247, "--per-port", "Modbus device ids are 1..247"),
        (args.site_size >= 1, "--site-size", "use 1 or more"),
        (args.speed > 0, "--speed", "use a factor above 0, e.g. 10"),
        (0 <= args.control_port <= 65535, "--control-port", "use 0 (off) or a port number"),
    ]
    for ok, option, fix in checks:
        if not ok:
            raise _StartupError(f"{option}: {getattr(args, option[2:].replace('-', '_'))!r} is out of range. Fix: {fix}")
    last_port = args.port + (args.cabinets - 1) // args.per_port
    if not 1 <= args.port or last_port > 65535:
        raise _StartupError(f"--port: {args.cabinets} cabinets at {args.per_port} per port need ports "
                            f"{args.port}..{last_port}. Fix: lower --port or raise --per-port")
    if args.control_port and args.port <= args.control_port <= last_port:
        raise _StartupError(f"--control-port {args.control_port} is inside the Modbus ports {args.port}..{last_port}. "
                            "Fix: move one of them")


async def run(args: argparse.Namespace) -> int:
    """Serve the fleet until cancelled (or SIGTERM); 0 on clean shutdown, 2 on bad options."""
    try:
        _check_options(args)
        profiles = _profiles(args.profile)
        fleet = build_fleet(profiles, cabinets=args.cabinets, slots=args.slots, host=args.host,
                            base_port=args.port, per_port=args.per_port, seed=args.seed,
                            site_size=args.site_size, speed=args.speed)
        scenarios: list[Scenario] = []
        for path in args.scenario:
            scenario = load_scenario(path)
            check_target(scenario, {c.cabinet_id: c.slot_count for c in fleet.cabinets})
            scenarios.append(scenario)
        # Writable before anything is bound; written (below) only once every port listens, so whoever
        # waits for the file (a collector, the benches) finds the fleet serving.
        # the last run's file goes now: whoever waits for the file must not find it before the ports listen
        Path(args.fleet_file).unlink(missing_ok=True)
        probe = Path(args.fleet_file).with_name(Path(args.fleet_file).name + ".tmp")
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except (_StartupError, ProfileError, ScenarioError) as err:
        log.error("%s", err)
        return 2
    except OSError as err:
        log.error("--fleet-file %s: cannot write: %s. Fix: choose a writable path", args.fleet_file, err.strerror)
        return 2

    pymodbus_log = logging.getLogger("pymodbus")
    if pymodbus_log.level == logging.NOTSET:
        pymodbus_log.setLevel(logging.WARNING)  # one "Server listening." per port drowns the log at 1,000 ports
    server = SimulatorServer(fleet, control_host=args.host, control_port=args.control_port,
                             state_path=getattr(args, "state", "") or None)
    try:
        await server.start()
    except RuntimeError as err:
        log.error("%s", err)
        return 2
    try:
        fleet_file = fleet.write_fleet_file(args.fleet_file)
    except OSError as err:
        await server.stop()
        log.error("--fleet-file %s: cannot write: %s. Fix: choose a writable path", args.fleet_file, err.strerror)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        for scenario in scenarios:
            started = fleet.start_scenario(scenario)
            log.info("scenario %s started: %s on %s slot %s", started.id, scenario.name, scenario.cabinet,
                     scenario.slot)
        await server.reconcile()
        ports = sorted(fleet.ports())
        models = sorted({c.profile.model for c in fleet.cabinets})
        log.info("simulating %d cabinets (%s, %s slots) on modbus-tcp://%s:%d-%d, %d per port; control %s; "
                 "fleet file %s; seed %d, speed %g", len(fleet.cabinets), ",".join(models),
                 "/".join(str(n) for n in sorted({c.slot_count for c in fleet.cabinets})), args.host, ports[0],
                 ports[-1], args.per_port, server.control_url or "off", fleet_file, args.seed, args.speed)
        await stop.wait()
        return 0
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGTERM)
        await server.stop()
        log.info("simulator stopped")


def _default_control_port() -> int:
    value = stack_value("CASCADE_SIM_CONTROL_PORT")
    return int(value) if value and value.isdigit() else 15019


def _inject_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cascade scenario",
                                     description="Post scenario files to a running simulator's control endpoint.")
    parser.add_argument("files", nargs="*", metavar="FILE", help="scenario YAML files (or shipped names)")
    parser.add_argument("--host", default="127.0.0.1", help="simulator host (default 127.0.0.1)")
    parser.add_argument("--control-port", type=int, default=_default_control_port(),
                        help="control endpoint port (default: the running stack's, from $CASCADE_SIM_CONTROL_PORT "
                             "or var/stack.env, else 15019)")
    parser.add_argument("--speed", type=float, default=None, help="time acceleration for these scenarios")
    parser.add_argument("--list", action="store_true", help="list the shipped scenarios and the running ones")
    parser.add_argument("--delete", action="append", default=[], metavar="ID", help="stop a running scenario")
    return parser


def _request(url: str, method: str = "GET", body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def inject_main(argv: Sequence[str] | None = None) -> int:
    """``cascade scenario``: 0 when every request succeeded, 1 if one was refused, 2 on usage errors."""
    args = _inject_parser().parse_args(argv)
    if not (args.files or args.list or args.delete):
        print("nothing to do: give scenario FILEs, --list or --delete ID", file=sys.stderr)
        return 2
    base = f"http://{args.host}:{args.control_port}"
    status = 0
    try:
        for path in args.files:
            try:
                load_scenario(path)  # fail fast, with file and key, before touching the network
            except ScenarioError as err:
                print(err, file=sys.stderr)
                return 2
            candidate = Path(path)
            if not candidate.exists():
                candidate = Path(load_scenario(path).source)
            query = f"?speed={args.speed}" if args.speed else ""
            code, body = _request(f"{base}/scenarios{query}", "POST", candidate.read_bytes(),
                                  {"Content-Type": "application/yaml", "X-Scenario-File": str(candidate)})
            if code == 201:
                print(f"{body['id']}\t{body['name']}\t{body['target']['cabinet']} slot {body['target']['slot']}")
            else:
                print(f"{candidate}: refused ({code}): {body.get('error', body)}", file=sys.stderr)
                status = 1
        for run_id in args.delete:
            code, body = _request(f"{base}/scenarios/{run_id}", "DELETE")
            if code != 200:
                print(f"delete {run_id}: {body.get('error', code)}", file=sys.stderr)
                status = 1
        if args.list:
            print("shipped scenarios (cascade scenario NAME [--speed N]):")
            for path in sorted(SCENARIO_DIR.glob("*.yaml")):
                shipped = load_scenario(path)
                print(f"  {shipped.name:<22} {' '.join(shipped.description.split())[:90]}")
            try:
                _code, body = _request(f"{base}/scenarios")
            except (urllib.error.URLError, OSError) as err:
                print(f"running: (no simulator at {base}: {getattr(err, 'reason', err)})")
                return status
            print("running:" + ("" if body.get("scenarios") else " none"))
            for entry in body.get("scenarios", []):
                state = "finished" if entry["finished"] else f"step {entry['steps_applied']}/{entry['steps']}"
                print(f"  {entry['id']}\t{entry['name']}\t{entry['target']['cabinet']} slot "
                      f"{entry['target']['slot']}\t{state}")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        print(f"{base}: cannot reach the simulator's control endpoint ({reason}). Fix: start `cascade simulate` "
              f"with --control-port {args.control_port}, or pass the port it uses", file=sys.stderr)
        return 2
    return status
