"""The ``cascade`` command line.

    cascade run --config config/local.yaml     collect, store, export (the main job)
    cascade simulate --cabinets 20              a simulated fleet of Modbus cabinets
    cascade scenario simulators/scenarios/thermal_runaway.yaml   inject a fault into it
    cascade check-config --config FILE          validate a configuration and its profiles
    cascade probe --host H --profile NAME       read one device once: every field raw, decoded, judged
    cascade alerts list                         active warnings on a running collector
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable

__all__ = ["main"]

_DESCRIPTION = """\
Cascade watches lithium battery packs in swap and charging cabinets: it polls cabinets over
Modbus TCP, stores every reading in InfluxDB, exports fleet health to Prometheus and raises
tiered safety warnings before thermal runaway.

Start here:  make run   (sets everything up and runs a simulated fleet; see README.md)
"""


def _run_async(coro) -> int:
    """Run ``coro`` until it finishes or Ctrl-C / SIGTERM, then shut down cleanly."""
    async def runner() -> int:
        task = asyncio.create_task(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, task.cancel)
        try:
            return await task or 0
        except asyncio.CancelledError:
            return 0
    return asyncio.run(runner())


def _cmd_run(args: argparse.Namespace) -> int:
    from cascade.app import alerting_settings
    from cascade.config import load_config
    from core.errors import CascadeError

    try:
        config = load_config(args.config)
        alerting_settings(config)  # refused here, as one line, not as a traceback from start-up
        if config.vehicles is not None and config.vehicles.watch and config.vehicles.mqtt is not None:
            from collectors.vehicles.trust import DeviceRegistry
            DeviceRegistry.load(config.vehicles.devices)  # the vehicle watch checks reports against it
    except CascadeError as err:
        print(f"cascade: configuration error: {err}", file=sys.stderr)
        return 2

    async def main() -> int:
        from cascade.app import start_app
        async with start_app(config) as app:
            await app.wait()
        return 0
    return _run_async(main())


def _cmd_check_config(args: argparse.Namespace) -> int:
    import json

    from cascade.app import alerting_settings
    from cascade.config import ConfigError, load_config, read_plans
    from core.errors import CascadeError

    try:
        config = load_config(args.config)
        settings = alerting_settings(config)  # everything `cascade run` refuses at start-up
        plans = read_plans(config)
    except (ConfigError, CascadeError) as err:
        print(f"cascade: configuration error: {err}", file=sys.stderr)
        return 2
    if args.json:
        doc = {"config": str(args.config), "cabinets": len(config.cabinets), "profiles": sorted(config.profiles),
               "read_plans": plans, "alerting": {"enabled": settings["enabled"], "rules": settings["rules"],
                                                  "perform": sorted(settings["policy"].perform)
                                                  if settings["enabled"] else []},
               "influxdb": None if config.influxdb is None else {"url": config.influxdb.url,
                                                                  "api": config.influxdb.api},
               "metrics": f"http://{config.metrics_host}:{config.metrics_port}/metrics"}
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    print(f"{args.config}: OK — {len(config.cabinets)} cabinets, {len(config.profiles)} profiles")
    for plan in plans:
        cabinets = plan["cabinets"]
        shown = ", ".join(cabinets[:3]) + (f" and {len(cabinets) - 3} more" if len(cabinets) > 3 else "")
        flight = "/".join(map(str, plan["max_in_flight"]))
        past = " (more than a poll's reads: no gain)" if max(plan["max_in_flight"]) > plan["requests"] else ""
        print(f"  profile {plan['profile']} ({plan['source']}), {plan['slots']} slots, max_gap {plan['max_gap']}: "
              f"{plan['requests']} reads per poll (minimum {plan['minimum_requests']}), max_in_flight {flight}{past} "
              f"for {shown}")
        for read in plan["reads"]:
            fields = read["fields"]
            places = sorted({f.split(":", 1)[0] for f in fields}, key=lambda p: (p != "cabinet", len(p), p))
            names = sorted({f.split(":", 1)[1] for f in fields})
            print(f"    {read['register']:<8} {read['address']:>6} +{read['count']:<3} "
                  f"{', '.join(places[:2])}{' ...' if len(places) > 2 else ''}: {', '.join(names)}")
        print(f"    commands: {', '.join(plan['commands']) or '(none)'}")
    perform = sorted(settings["policy"].perform)
    if settings["enabled"]:
        print(f"  alerting: on; protective actions performed: {', '.join(perform) or 'none (observe only)'}")
    else:
        print("  alerting: off (no warnings, no protective actions)")
    if config.influxdb:
        print(f"  influxdb: {config.influxdb.url} api {config.influxdb.api}")
    print(f"  metrics: http://{config.metrics_host}:{config.metrics_port}/metrics")
    return 0


def in_flight(low: int) -> Callable[[str], int]:
    """An argparse type: a number of requests in flight from ``low`` to 32, the cabinet setting
    ``max_in_flight``'s range (``cascade probe --pipelining``, ``bench collector --max-in-flight``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ({low}-32)") from None
        if not low <= value <= 32:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}-32 (max_in_flight of a cabinet)")
        return value
    return parse


def _cmd_probe(args: argparse.Namespace) -> int:
    import json

    from collectors.modbus.device import ModbusCabinet
    from collectors.modbus.probe import format_pipelining, format_probe, probe, probe_pipelining
    from collectors.modbus.profile import find_profile
    from collectors.modbus.settings import CabinetConfig
    from collectors.runner import PollFailed
    from core.errors import CascadeError

    try:
        profile = find_profile(args.profile)
        config = CabinetConfig(id=f"{args.host}:{args.port}/{args.unit}", host=args.host, port=args.port,
                               device_id=args.unit, profile=args.profile, slots=args.slots, timeout_s=args.timeout)
        cabinet = ModbusCabinet(config, profile)
    except (CascadeError, ValueError) as err:
        print(f"cascade probe: {err}", file=sys.stderr)
        return 2

    async def main() -> int:
        try:
            result = await probe(cabinet)
        except PollFailed as err:
            print(f"cascade probe: {args.host}:{args.port} unit id {args.unit}: {err}", file=sys.stderr)
            if args.pipelining:
                print("cascade probe: pipelining not tried: the device could not be read", file=sys.stderr)
            return 1
        pipelining = None
        rejected, refused = result.counts().get("rejected", 0), len(result.failed_reads)
        if args.pipelining and (rejected or refused):  # advice from the reads that happened to work would mislead
            print(f"cascade probe: pipelining not tried: the profile does not fit this device yet ({rejected} "
                  f"fields rejected, {refused} reads refused); fix the profile first", file=sys.stderr)
        elif args.pipelining:
            try:
                pipelining = await probe_pipelining(cabinet, args.pipelining)
            except PollFailed as err:
                print(f"cascade probe: {args.host}:{args.port} unit id {args.unit}: {err}", file=sys.stderr)
                return 1
        if args.json:
            doc = {"device": result.device, "profile": result.profile, "counts": result.counts(),
                   "fields": [f.as_dict() for f in result.fields], "failed_reads": result.failed_reads}
            if pipelining is not None:
                doc["pipelining"] = pipelining.as_dict()
            print(json.dumps(doc, indent=2, default=str))
        else:
            print(format_probe(result))
            if pipelining is not None:
                print(format_pipelining(pipelining))
        bad = result.counts().get("rejected", 0) + len(result.failed_reads)
        return 3 if bad else 0
    return _run_async(main())


def _cmd_simulate(args: argparse.Namespace) -> int:
    from simulators.cli import run
    return _run_async(run(args))


def _cmd_simulate_vehicles(args: argparse.Namespace) -> int:
    from simulators.vehicles import run
    return asyncio.run(run(args))


def _cmd_scenario(args: argparse.Namespace) -> int:
    from simulators.cli import inject_main
    return inject_main(args.argv)


def _cmd_replay(args: argparse.Namespace) -> int:
    from alerting.replay import main as replay_main
    return replay_main(args.argv)


def _cmd_notify(args: argparse.Namespace) -> int:
    from notifier import ConfigError, load_config, serve
    try:
        load_config(args.config)
    except ConfigError as err:
        print(f"cascade: notifier configuration error: {err}", file=sys.stderr)
        return 2
    tls = None
    if args.tls_cert or args.tls_key:
        from cascade.config import ConfigError as TlsError
        from cascade.config import server_tls_context
        if not (args.tls_cert and args.tls_key):
            print("cascade: notify: give both --tls-cert and --tls-key (the certificate and its private key)",
                  file=sys.stderr)
            return 2
        try:
            tls = server_tls_context(args.tls_cert, args.tls_key, source="cascade notify", key="--tls-cert/--tls-key")
        except TlsError as err:
            print(f"cascade: notifier TLS error: {err}", file=sys.stderr)
            return 2
    return _run_async(serve(args.config, args.host, args.port, ssl_context=tls))


def _cmd_inbox(args: argparse.Namespace) -> int:
    from simulators.inbox import serve
    return _run_async(serve(args.host, args.port, args.log or None))


def _cmd_alerts(args: argparse.Namespace) -> int:
    from alerting.cli import main as alerts_main
    return alerts_main(args)


def _cmd_ingest(args: argparse.Namespace) -> int:
    from cascade.config import load_config
    from cascade.vehicles import IngestWorker
    from core.errors import CascadeError

    try:
        config = load_config(args.config)
        if config.vehicles is None:
            print(f"cascade: configuration error: {args.config}: no `vehicles` section. Fix: add one "
                  "(docs/vehicles.md)", file=sys.stderr)
            return 2
        worker = IngestWorker(config.vehicles, config.influxdb, worker=args.worker)
    except CascadeError as err:
        print(f"cascade: configuration error: {err}", file=sys.stderr)
        return 2

    async def main() -> int:
        async with worker:
            await asyncio.Event().wait()
        return 0
    return _run_async(main())


def _cmd_vehicle(args: argparse.Namespace) -> int:
    from cascade.vehicle_cli import main as vehicle_main
    return vehicle_main(args)


def _cmd_gateway(args: argparse.Namespace) -> int:
    from collectors.ble.gateway import run
    return asyncio.run(run(args))


def _cmd_devices(args: argparse.Namespace) -> int:
    from cascade.vehicles import provision
    from collectors.vehicles.trust import set_kind
    from core.errors import CascadeError

    prefix = args.prefix or ("G" if args.kind == "gateway" else "V")
    try:
        paths = provision(args.out, count=args.count, fleet=args.fleet, prefix=prefix)
        # The kind is what keeps vehicle commands from a BLE gateway before it has ever reported.
        set_kind(paths["devices"], (f"{prefix}{n:06d}" for n in range(1, args.count + 1)), args.kind)
    except CascadeError as err:
        print(f"cascade: {err}", file=sys.stderr)
        return 2
    print(f"{args.count} {args.kind} devices of fleet {args.fleet} in {paths['devices']}; broker files "
          f"{paths['passwd']}, {paths['acl']}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from bench.__main__ import main as bench_main
    return bench_main(args.argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cascade", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="poll cabinets, write InfluxDB, serve /metrics (the main job)",
                         description="Poll every configured cabinet, write readings to InfluxDB, serve "
                                     "Prometheus metrics and evaluate warnings. Prints a status line "
                                     "periodically. Stops cleanly on Ctrl-C.")
    run.add_argument("--config", required=True, metavar="FILE", help="YAML configuration (see config/local.yaml)")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration and the profiles it uses",
                           description="Load the configuration, every fleet file and register profile it "
                                       "names, and print the read plan. Exits 2 on the first error, naming "
                                       "the file, the key and the fix.")
    check.add_argument("--config", required=True, metavar="FILE")
    check.add_argument("--json", action="store_true", help="print the checked configuration and the read plans as JSON")
    check.set_defaults(func=_cmd_check_config)

    pr = sub.add_parser("probe", help="read one device once with a profile; show every field raw and decoded",
                        description="Connect to one Modbus TCP device, run the profile's read plan once and print "
                                    "every field: its registers as sent, the decoded value and a verdict (ok, "
                                    "missing, at the sensor's limit, rejected), and which other word/byte order "
                                    "(ABCD, CDAB, BADC, DCBA) would give a plausible value. Exit 0 when every field "
                                    "decodes, 3 when some are rejected or refused, 1 when the device cannot be read.")
    pr.add_argument("--host", required=True)
    pr.add_argument("--port", type=int, default=502)
    pr.add_argument("--unit", type=int, default=1, help="Modbus unit id (device_id), default 1")
    pr.add_argument("--profile", required=True, metavar="NAME|PATH", help="a profile in profiles/ or a YAML path")
    pr.add_argument("--slots", type=int, default=None, help="slots to read (default: the profile's)")
    pr.add_argument("--timeout", type=float, default=3.0, help="seconds per request")
    pr.add_argument("--json", action="store_true")
    pr.add_argument("--pipelining", type=in_flight(2), nargs="?", const=32, default=0, metavar="N",
                    help="also find how many requests the device answers in flight (the cabinet setting "
                         "max_in_flight): the plan's reads written 2, 4, 8 ... up to N (2-32, default 32) at once, a "
                         "fresh connection each. A device that does not queue requests may drop the connection or "
                         "stop answering for a while: use it where that is harmless (docs/profiles.md)")
    pr.set_defaults(func=_cmd_probe)

    sim = sub.add_parser("simulate", help="serve a simulated fleet of Modbus cabinets",
                         description="Serve simulated cabinets over real Modbus TCP, driven by any register "
                                     "profile, with fault scenarios from YAML timelines.")
    try:
        from simulators.cli import add_arguments
        add_arguments(sim)
    except ImportError:  # simulator not installed in this build
        pass
    sim.set_defaults(func=_cmd_simulate)

    vsim = sub.add_parser("simulate-vehicles", help="simulated vehicles riding a city grid, reporting over MQTT/HTTPS",
                          description="Simulated delivery e-bikes riding a real street grid, swapping batteries at "
                                      "the simulated cabinets and reporting at the standard's rates over MQTT and "
                                      "HTTPS (docs/vehicle-simulator.md).")
    try:
        from simulators.vehicles import add_arguments as add_vehicle_arguments
        add_vehicle_arguments(vsim)
    except ImportError:  # simulator not installed in this build
        pass
    vsim.set_defaults(func=_cmd_simulate_vehicles)

    for name, func, help_text in (
        ("scenario", _cmd_scenario, "inject a fault scenario file into a running simulator"),
        ("replay", _cmd_replay, "replay a recorded trace through the warning engine"),
        ("bench", _cmd_bench, "run benchmarks (as python -m bench: collector, decode, memory, scrape, latency, ...)"),
    ):
        p = sub.add_parser(name, help=help_text, add_help=False, description=help_text)
        p.add_argument("argv", nargs=argparse.REMAINDER)
        p.set_defaults(func=func)

    alerts = sub.add_parser("alerts", help="list, acknowledge and tune warnings on a running collector",
                            description="Talk to a running `cascade run` over its HTTP API: list active "
                                        "alerts, acknowledge one, show the roll-up, change a threshold "
                                        "(audited), list protective actions.")
    from alerting.cli import add_arguments as add_alert_arguments
    add_alert_arguments(alerts)
    alerts.set_defaults(func=_cmd_alerts)
    from cascade.issuer import add_arguments as add_issuer_arguments
    add_issuer_arguments(sub)  # `cascade token`, `cascade issuer`: the local OIDC issuer (docs/security.md)

    notify = sub.add_parser("notify", help="run the notifier (Alertmanager webhook → app, SMS, call, e-mail)")
    notify.add_argument("--config", required=True, metavar="FILE")
    notify.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 in containers so Alertmanager can reach it)")
    notify.add_argument("--port", type=int, default=9120)
    notify.add_argument("--tls-cert", metavar="PEM", default="",
                        help="server certificate: serve HTTPS only (production compose; docs/security.md)")
    notify.add_argument("--tls-key", metavar="PEM", default="", help="the certificate's private key")
    notify.set_defaults(func=_cmd_notify)

    from cascade.backup import add_arguments as add_backup_arguments
    from cascade.backup import add_restore_arguments, run_backup, run_restore
    bk = sub.add_parser("backup", help="back up InfluxDB, alert state, audit logs, device registry and configs "
                                       "into one checksummed archive",
                        description="Back up the InfluxDB database (influxd backup -portable over its RPC port), the "
                                    "alert state, failed actions, threshold audit, notifier delivery log, vehicle "
                                    "device registry and the configuration into a .tar.gz with a MANIFEST.json "
                                    "(docs/backup.md). Exit 2 on bad input.")
    add_backup_arguments(bk)
    bk.set_defaults(func=run_backup)
    rs = sub.add_parser("restore", help="verify a backup, restore it into a new InfluxDB database, check it, then "
                                        "switch over",
                        description="Check every checksum, restore the database under a new name, compare counts and "
                                    "sample points with the manifest, then write the state files (docs/backup.md). "
                                    "Exit 0 ok, 1 a check failed, 2 bad input or damaged archive.")
    add_restore_arguments(rs)
    rs.set_defaults(func=run_restore)

    gw = sub.add_parser("gateway", help="run a BLE battery gateway: JBD/Daly packs over Bluetooth, uplink over MQTT",
                        description="Scan for JBD and Daly BMS packs over Bluetooth, poll them over a bounded "
                                    "number of links, and publish their readings over MQTT with a disk buffer "
                                    "through uplink outages (docs/ble-gateway.md); switch an allow-listed pack's "
                                    "MOSFETs off when the platform commands it. --emulate N runs without a radio, "
                                    "on emulated packs; --esphome uses ESPHome Bluetooth proxies as the radio.")
    try:
        from collectors.ble.gateway import add_arguments as add_gateway_arguments
        add_gateway_arguments(gw)
    except ImportError:  # BLE extras not installed in this build
        pass
    gw.set_defaults(func=_cmd_gateway)

    ingest = sub.add_parser("ingest", help="run one vehicle ingest worker (MQTT shared subscription + HTTPS)",
                            description="Receive vehicle reports over MQTT (one share of the group's shared "
                                        "subscription) and HTTPS batches, check who sent them, store them in "
                                        "InfluxDB and count every refusal by reason (docs/vehicles.md).")
    ingest.add_argument("--config", required=True, metavar="FILE", help="YAML configuration with a `vehicles` section")
    ingest.add_argument("--worker", type=int, default=1, metavar="N",
                        help="this worker's number, 1..N: ports and spool directory are offset by it")
    ingest.set_defaults(func=_cmd_ingest)

    vehicle = sub.add_parser("vehicle", help="command a vehicle (lock, power, arming); export its track as GeoJSON",
                             description="Remote commands through a running `cascade run`, and track export from "
                                         "InfluxDB (docs/vehicles.md, Commands and Tracks).")
    from cascade.vehicle_cli import add_arguments as add_vehicle_cli_arguments
    add_vehicle_cli_arguments(vehicle)
    vehicle.set_defaults(func=_cmd_vehicle)

    devices = sub.add_parser("devices", help="provision vehicle and BLE gateway devices: ids, secrets, kinds, the "
                                             "broker's passwd and ACL")
    devices_sub = devices.add_subparsers(dest="action", metavar="ACTION", required=True)
    prov = devices_sub.add_parser("provision", help="write devices.json, passwd (hashed) and acl for N devices",
                                  description="Add N devices (ids PREFIX000001..) with random secrets to "
                                              "OUT/devices.json, keeping devices already there, and write "
                                              "Mosquitto's password file and ACL next to it.")
    prov.add_argument("--count", type=int, required=True)
    prov.add_argument("--fleet", default="bj", help="the fleet (topic level) of the new devices, default bj")
    prov.add_argument("--prefix", default=None, help="device id prefix (default V, G with --kind gateway)")
    prov.add_argument("--kind", choices=("vehicle", "gateway"), default="vehicle",
                      help="what the devices are: vehicle (default) or gateway (a BLE gateway: never sent a "
                           "vehicle command)")
    prov.add_argument("--out", default="var/devices", metavar="DIR")
    prov.set_defaults(func=_cmd_devices)

    from health.cli import add_arguments as add_health_arguments
    from health.cli import run as run_health
    hl = sub.add_parser("health", help="battery health: charge sessions, capacity, resistance, SOH, second-life "
                                       "grades and their alerts; the grading report",
                        description="Analyse the stored pack readings (docs/battery-health.md): `analyse` computes "
                                    "and stores charge sessions and health, and pushes the grading alerts; `report` "
                                    "exports the grades as CSV or JSON.")
    add_health_arguments(hl)
    hl.set_defaults(func=run_health)

    inbox = sub.add_parser("inbox", help="local stand-in for the SMS / voice / app providers (prints what arrives)",
                           description="Accept the notifier's provider requests (POST /app, /sms, /voice or any "
                                       "path; JSON or form bodies), print one line per message, append them to "
                                       "a JSON-lines log and list them at GET /messages. See docs/demo.md.")
    inbox.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    inbox.add_argument("--port", type=int, default=9130, help="port (default 9130)")
    inbox.add_argument("--log", default="var/inbox.jsonl", metavar="FILE",
                       help="JSON-lines file messages are appended to (default var/inbox.jsonl; '' = none)")
    inbox.set_defaults(func=_cmd_inbox)
    return parser


_PASSTHROUGH = {"scenario": _cmd_scenario, "replay": _cmd_replay, "bench": _cmd_bench}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = bool(argv) and argv[0] in ("-v", "--verbose")
    rest = argv[1:] if verbose else argv
    if rest and rest[0] in _PASSTHROUGH:
        # These hand every argument on to their own parser (argparse.REMAINDER would refuse an
        # option such as --list in first place).
        # A benchmark sets up its own logging, as under `python -m bench` (the collector's per-device lines
        # would bury its figures); -v still shows everything.
        if verbose or rest[0] != "bench":
            logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                                format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return _PASSTHROUGH[rest[0]](argparse.Namespace(argv=rest[1:]))
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
