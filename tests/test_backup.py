"""Backup and verified restore (P-8.4) against real influxd servers: back up a source, restore into a
fresh server, compare counts and sample values; damaged archives are refused before anything is
restored; the state files come back byte for byte with their modes."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import tarfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from cascade.backup import (
    BackupError,
    add_arguments,
    add_restore_arguments,
    backup,
    read_manifest,
    restore,
    run_backup,
    run_restore,
)
from core.model import CabinetReading, SlotReading, VehicleReading
from exporters.influx.schema import encode_points
from tests.fixtures.influxdb import InfluxDB

T0 = 1_760_000_000_000_000_000  # 2025-10-09, ns
CABINETS, SLOTS, POLLS, VEHICLES = 4, 6, 30, 5

# path below the state dir -> (content, mode)
STATE = {
    "alerts.json": (b'{"alerts": [{"rule": "over_temperature", "level": 2, "site": "s1", "cabinet": "C0001"}]}\n',
                    0o644),
    "alerts-failed-actions.json": (b'{"failed": []}\n', 0o640),
    "threshold-audit.jsonl": (b'{"at": 1, "who": "noc-alice", "rule": "over_temperature", "new": 52}\n', 0o644),
    "notify-deliveries.jsonl": (b'{"receiver": "sms", "ok": true}\n{"receiver": "voice", "ok": true}\n', 0o644),
    "control-audit.jsonl": (b'{"action": "stop_charging", "actor": "user:eve", "result": "ok", "readback": 0}\n',
                            0o644),
    "vehicle-commands.jsonl": (b'{"id": "c1", "vehicle": "V000001", "command": "motor_lock", "event": "acked"}\n',
                               0o644),
    "devices/devices.json": (b'{"devices": [{"id": "V000001", "fleet": "bj", "secret": "00ff"}]}\n', 0o600),
    "devices/ingest.password": (b"not-a-real-password\n", 0o600),
}


def _readings() -> list[CabinetReading | VehicleReading]:
    points: list[CabinetReading | VehicleReading] = []
    for poll in range(POLLS):
        ts = T0 + poll * 5_000_000_000
        for c in range(CABINETS):
            slots = [SlotReading(slot=s + 1, battery_id=f"B{c}{s}", soc_pct=50.0 + poll % 50,
                                 temperature_c=25.0 + 0.1 * poll + s, voltage_v=52.1, h2_ppm=0.0,
                                 output_enabled=True) for s in range(SLOTS)]
            points.append(CabinetReading(cabinet_id=f"C{c:04d}", site="s1", model="reference-cabinet",
                                         timestamp_ns=ts, cabinet_temperature_c=30.5, smoke_detected=False,
                                         slots=slots))
        for v in range(VEHICLES):
            points.append(VehicleReading(vehicle_id=f"V{v:06d}", fleet="bj", timestamp_ns=ts + v, speed_kmh=17.5,
                                         latitude_deg=39.9, longitude_deg=116.4,
                                         battery=SlotReading(slot=1, battery_id=f"E{v}", soc_pct=80.0)))
    return points


ALERT_LINE = (f'alert,cabinet=C0001,rule=over_temperature,severity=warning,site=s1,slot=3 from_level=1i,'
              f'kind="escalate",level=2i,summary="Slot 3 at 61 °C" {T0 + 7}')


def _write(server: InfluxDB, lines: list[str]) -> None:
    body = ("\n".join(lines) + "\n").encode()
    url = f"{server.url}/write?db={server.database}&precision=ns"
    with urllib.request.urlopen(url, data=body, timeout=10) as resp:
        assert resp.status == 204


def _counts(server: InfluxDB, database: str) -> list[dict]:
    saved, server.database = server.database, database
    try:
        return sorted(server.query("SELECT count(*) FROM /.*/"), key=json.dumps)
    finally:
        server.database = saved


def _databases(server: InfluxDB) -> set[str]:
    return {row["name"] for row in server.query("SHOW DATABASES")}


@pytest.fixture
def site(tmp_path: Path, influxdb_factory: Callable[[], InfluxDB]) -> dict:
    """A source InfluxDB with known points, a configuration folder and a var folder of state files."""
    source = influxdb_factory()
    lines, skipped = encode_points(_readings())
    assert not skipped
    _write(source, [*lines, ALERT_LINE])
    config_dir, var = tmp_path / "config", tmp_path / "var"
    config_dir.mkdir()
    for name, (content, mode) in STATE.items():
        path = var / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    (var / "spool").mkdir()
    (var / "spool" / "00000001.seg").write_bytes(b"CSB1" + bytes(60))  # pending readings: not backed up
    config = config_dir / "local.yaml"
    config.write_text(f"""\
cabinets: [{{id: C0000, host: 127.0.0.1, port: 1502}}]
influxdb: {{url: {source.url}, database: cascade, spool_dir: ../var/spool}}
alerting:
  state_file: ../var/alerts.json
  audit_file: ../var/threshold-audit.jsonl
  control_audit_file: ../var/control-audit.jsonl
  alertmanager_url: null
vehicles: {{devices: ../var/devices/devices.json}}
""", encoding="utf-8")
    (config_dir / "notifier.local.yaml").write_text("notifier:\n  delivery_log: ../var/notify-deliveries.jsonl\n",
                                                    encoding="utf-8")
    return {"source": source, "config": config, "var": var, "out": tmp_path / "backups"}


def _backup(site: dict) -> Path:
    return backup(site["config"], site["out"], rpc=site["source"].rpc_address, timeout_s=60)


def test_backup_then_restore_into_a_fresh_influxdb(site: dict, tmp_path: Path,
                                                   influxdb_factory: Callable[[], InfluxDB]) -> None:
    source: InfluxDB = site["source"]
    t = time.monotonic()
    archive = _backup(site)
    backup_s = time.monotonic() - t

    assert archive.parent == site["out"] and archive.name.startswith("cascade-backup-cascade-")
    assert archive.stat().st_mode & 0o777 == 0o600  # it holds device secrets
    assert [p.name for p in site["out"].iterdir() if p.name.startswith(".")] == []  # no partial left
    digest, name = (archive.parent / (archive.name + ".sha256")).read_text().split()
    assert (digest, name) == (hashlib.sha256(archive.read_bytes()).hexdigest(), archive.name)

    manifest = read_manifest(archive)
    counts = manifest.influxdb.counts["autogen"]
    assert set(counts) == {"cabinet", "slot", "vehicle", "vehicle_battery", "alert"}
    assert counts["slot"]["temperature_c"] == (POLLS * CABINETS * SLOTS,) * 2  # quiet server: before == after
    assert counts["cabinet"]["cabinet_temperature_c"] == (POLLS * CABINETS,) * 2
    assert counts["vehicle"]["speed_kmh"] == (POLLS * VEHICLES,) * 2
    assert counts["alert"]["level"] == (1, 1)
    first_slot = next(s for s in manifest.influxdb.samples if s.measurement == "slot")
    assert first_slot.time == T0 and first_slot.fields["temperature_c"] in (25, 26, 27, 28, 29, 30)
    roles = {f.path: f.role for f in manifest.files}
    for name in STATE:
        assert roles[f"state/{name}"] in ("alert-state", "failed-actions", "threshold-audit", "delivery-log",
                                          "devices", "control-audit", "vehicle-command-audit")
    assert {"config/local.yaml", "config/notifier.local.yaml", "profiles/reference-cabinet.yaml"} <= set(roles)
    assert any(p.startswith("influxdb/") and p.endswith(".tar.gz") for p in roles)
    assert {f.path: f.mode for f in manifest.files}["state/devices/devices.json"] == 0o600
    spool = next(n for n in manifest.not_included if n["what"] == "influx-spool")
    assert spool["bytes_on_disk"] == 64 and not any(p.startswith("state/spool") for p in roles)

    fresh = influxdb_factory()
    restored_var = tmp_path / "restored-var"
    (restored_var).mkdir()
    (restored_var / "alerts.json").write_bytes(b'{"alerts": []}\n')  # what was there before the restore
    t = time.monotonic()
    report = restore(archive, influx_url=fresh.url, rpc=fresh.rpc_address, state_dir=restored_var, timeout_s=60)
    restore_s = time.monotonic() - t
    print(f"\nbackup {backup_s:.2f} s, restore {restore_s:.2f} s, archive {archive.stat().st_size} bytes, "
          f"timings {report.timings}")

    assert report.ok, report.problems
    assert report.database == f"cascade_restored_{manifest.created.replace('-', '').replace(':', '')}"
    assert _counts(fresh, report.database) == _counts(source, "cascade")
    assert len([p for p in report.passed if p.startswith("sample")]) == len(manifest.influxdb.samples) == 9  # first + last, one alert
    query = (f"SELECT * FROM slot WHERE cabinet = 'C0002' AND slot = '4' AND time >= {T0} "
             f"AND time < {T0 + 20_000_000_000}")
    source_rows = source.query(query)
    fresh.database = report.database
    assert len(source_rows) == 4 and fresh.query(query) == source_rows
    assert "cascade" in _databases(fresh) and fresh.count("slot", "temperature_c") == POLLS * CABINETS * SLOTS

    for name, (content, mode) in STATE.items():
        path = restored_var / name
        assert path.read_bytes() == content, name
        assert path.stat().st_mode & 0o777 == mode, name
    assert (restored_var / "alerts.json.before-restore").read_bytes() == b'{"alerts": []}\n'
    assert not (restored_var / "spool").exists()
    assert not list(restored_var.rglob(".*"))  # no temporary files left
    assert any("influxdb.database" in step for step in report.next_steps)


def test_a_backup_taken_while_points_arrive_restores_within_its_counts(
        site: dict, tmp_path: Path, influxdb_factory: Callable[[], InfluxDB]) -> None:
    """The collector keeps writing during a backup: the manifest holds the counts before and after
    ``influxd backup`` ran, and the restored database must lie between them."""
    source: InfluxDB = site["source"]
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            _write(source, [f"slot,site=s1,cabinet=C0009,slot=1 temperature_c={20 + n % 10} {T0 + 10**12 + n}"])
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        archive = _backup(site)
    finally:
        stop.set()
        thread.join(10)
    low, high = read_manifest(archive).influxdb.counts["autogen"]["slot"]["temperature_c"]
    assert low < high  # points arrived while it ran
    fresh = influxdb_factory()
    report = restore(archive, influx_url=fresh.url, rpc=fresh.rpc_address, state_dir=tmp_path / "v", timeout_s=60)
    assert report.ok, report.problems
    fresh.database = report.database
    assert low <= fresh.count("slot", "temperature_c") <= high


def _repack(archive: Path, out: Path, change: Callable[[str, bytes], bytes | None],
            add: tuple[str, bytes] | None = None) -> Path:
    """A copy of ``archive`` (a valid gzip and tar) whose members went through ``change`` (None: left
    out), plus ``add`` (name below the top folder, content)."""
    buffer = io.BytesIO()
    with tarfile.open(archive, "r:gz") as src, tarfile.open(fileobj=buffer, mode="w:gz") as dst:
        top = ""
        for member in src:
            top = member.name.split("/")[0]
            data = change(member.name, src.extractfile(member).read() if member.isfile() else b"")
            if data is not None:
                member.size = len(data)
                dst.addfile(member, io.BytesIO(data))
        if add is not None:
            info = tarfile.TarInfo(f"{top}/{add[0]}")
            info.size = len(add[1])
            dst.addfile(info, io.BytesIO(add[1]))
    out.write_bytes(buffer.getvalue())
    return out


def _assert_nothing_restored(server: InfluxDB, state_dir: Path) -> None:
    assert _databases(server) == {"cascade"}
    assert not state_dir.exists() or not any(state_dir.iterdir())


def test_a_tampered_archive_is_refused_before_anything_is_restored(
        site: dict, tmp_path: Path, influxdb_factory: Callable[[], InfluxDB]) -> None:
    archive = _backup(site)
    fresh = influxdb_factory()
    state_dir = tmp_path / "restored-var"

    def flip_one_byte(name: str, data: bytes) -> bytes:
        if name.endswith("/state/alerts.json"):
            return data[:10] + bytes([data[10] ^ 0x01]) + data[11:]
        return data

    tampered = _repack(archive, tmp_path / "tampered.tar.gz", flip_one_byte)
    with pytest.raises(BackupError, match=r"state/alerts\.json does not match its checksum"):
        restore(tampered, influx_url=fresh.url, rpc=fresh.rpc_address, state_dir=state_dir, timeout_s=30)
    _assert_nothing_restored(fresh, state_dir)

    # One byte changed in the compressed file itself: gzip's CRC or our checksum catches it.
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match=r"damaged|does not match its checksum") as err:
        restore(damaged, influx_url=fresh.url, rpc=fresh.rpc_address, state_dir=state_dir, timeout_s=30)
    assert "damaged.tar.gz" in str(err.value)
    _assert_nothing_restored(fresh, state_dir)

    # A listed file taken out; a file the manifest does not list; a member escaping the folder.
    missing = _repack(archive, tmp_path / "missing.tar.gz",
                      lambda name, data: None if name.endswith("/state/threshold-audit.jsonl") else data)
    with pytest.raises(BackupError, match=r"state/threshold-audit\.jsonl is listed in MANIFEST.json but missing"):
        restore(missing, verify_only=True)
    extra = _repack(archive, tmp_path / "extra.tar.gz", lambda name, data: data, add=("state/cron.d", b"x"))
    with pytest.raises(BackupError, match=r"state/cron\.d is not listed in MANIFEST.json"):
        restore(extra, verify_only=True)
    escape = _repack(archive, tmp_path / "escape.tar.gz", lambda name, data: data, add=("../../etc/passwd", b"x"))
    with pytest.raises(BackupError, match=r"unexpected member .*etc/passwd"):
        restore(escape, verify_only=True)


def test_a_truncated_archive_is_refused(site: dict, tmp_path: Path,
                                        influxdb_factory: Callable[[], InfluxDB]) -> None:
    archive = _backup(site)
    fresh = influxdb_factory()
    state_dir = tmp_path / "restored-var"
    for keep in (len(archive.read_bytes()) * 2 // 3, 100, 0):
        truncated = tmp_path / f"truncated-{keep}.tar.gz"
        truncated.write_bytes(archive.read_bytes()[:keep])
        with pytest.raises(BackupError, match="damaged or truncated") as err:
            restore(truncated, influx_url=fresh.url, rpc=fresh.rpc_address, state_dir=state_dir, timeout_s=30)
        assert str(truncated) in str(err.value) and "Fix:" in str(err.value)
    _assert_nothing_restored(fresh, state_dir)
    # A gzip stream that ends cleanly but holds half a tar: still refused.
    half = gzip.decompress(archive.read_bytes())[: 3 * 512]
    cut = tmp_path / "half-tar.tar.gz"
    cut.write_bytes(gzip.compress(half))
    with pytest.raises(BackupError, match="damaged or truncated|MANIFEST.json"):
        restore(cut, verify_only=True)


def _parse(add: Callable[[argparse.ArgumentParser], None], argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


def test_cli_verify_only_restores_nothing(site: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          influxdb_factory: Callable[[], InfluxDB]) -> None:
    args = _parse(add_arguments, ["--config", str(site["config"]), "--out", str(site["out"]),
                                  "--influx-rpc", site["source"].rpc_address, "--timeout", "60"])
    assert run_backup(args) == 0
    out = capsys.readouterr().out
    archive = next(site["out"].glob("*.tar.gz"))
    assert str(archive) in out and "not included: influx-spool" in out

    fresh = influxdb_factory()
    state_dir = tmp_path / "restored-var"
    args = _parse(add_restore_arguments, [str(archive), "--verify-only", "--influx-url", fresh.url,
                                          "--influx-rpc", fresh.rpc_address, "--state-dir", str(state_dir)])
    assert run_restore(args) == 0
    assert "files match their checksums" in capsys.readouterr().out
    _assert_nothing_restored(fresh, state_dir)


def test_a_failed_check_switches_nothing_over(site: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              influxdb_factory: Callable[[], InfluxDB]) -> None:
    archive = _backup(site)

    def claim_more_points(name: str, data: bytes) -> bytes:
        if not name.endswith("/MANIFEST.json"):
            return data
        doc = json.loads(data)
        doc["influxdb"]["counts"]["autogen"]["alert"]["level"] = [2, 2]
        return json.dumps(doc).encode()

    wrong = _repack(archive, tmp_path / "wrong-counts.tar.gz", claim_more_points)
    fresh = influxdb_factory()
    state_dir = tmp_path / "restored-var"
    args = _parse(add_restore_arguments, [str(wrong), "--influx-url", fresh.url, "--influx-rpc", fresh.rpc_address,
                                          "--state-dir", str(state_dir), "--switch"])
    assert run_restore(args) == 1
    out = capsys.readouterr().out
    assert "FAILED autogen.alert: level: 1 values, backup had 2" in out and "nothing was switched over" in out
    assert not state_dir.exists()
    assert fresh.count("slot", "temperature_c") == 0  # the live database was not touched


def test_switch_replaces_the_live_database(site: dict, tmp_path: Path,
                                           influxdb_factory: Callable[[], InfluxDB]) -> None:
    archive = _backup(site)
    fresh = influxdb_factory()  # its live database "cascade" exists, empty: a rebuilt server
    checkout = tmp_path / "checkout"
    report = restore(archive, influx_url=fresh.url, rpc=fresh.rpc_address, database="cascade_check",
                     state_dir=tmp_path / "var", config_dir=checkout, switch=True, timeout_s=60)
    assert report.ok and report.switched, report.problems
    assert (checkout / "config" / "local.yaml").read_bytes() == site["config"].read_bytes()
    assert (checkout / "profiles" / "reference-cabinet.yaml").is_file()
    assert _counts(fresh, "cascade") == _counts(site["source"], "cascade")
    assert _databases(fresh) == {"cascade", "cascade_check"}
    assert any("GRANT" in step for step in report.next_steps)


def test_bad_input_is_a_clear_error(site: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    influxdb_factory: Callable[[], InfluxDB]) -> None:
    t = time.monotonic()
    with pytest.raises(BackupError, match=r"127\.0\.0\.1:9: --influx-rpc: the InfluxDB RPC port does not accept"):
        backup(site["config"], site["out"], rpc="127.0.0.1:9")
    assert time.monotonic() - t < 10  # influxd backup itself would retry for minutes
    assert not site["out"].exists() or not list(site["out"].iterdir())

    args = _parse(add_restore_arguments, [str(tmp_path / "nope.tar.gz"), "--verify-only"])
    assert run_restore(args) == 2
    assert "nope.tar.gz does not exist" in capsys.readouterr().err

    archive = _backup(site)
    args = _parse(add_restore_arguments, [str(archive), "--influx-url", site["source"].url, "--influx-rpc",
                                          site["source"].rpc_address, "--database", "cascade",
                                          "--state-dir", str(tmp_path / "v")])
    assert run_restore(args) == 2
    err = capsys.readouterr().err
    assert "database 'cascade' already exists" in err and "Fix:" in err and "Traceback" not in err

    args = _parse(add_restore_arguments, [str(archive)])
    assert run_restore(args) == 2
    assert "--influx-url" in capsys.readouterr().err


def test_an_empty_database_round_trips(tmp_path: Path, influxdb_factory: Callable[[], InfluxDB]) -> None:
    source, fresh = influxdb_factory(), influxdb_factory()
    config = tmp_path / "config" / "local.yaml"
    config.parent.mkdir()
    config.write_text(f"cabinets: [{{id: C0000, host: 127.0.0.1}}]\n"
                      f"influxdb: {{url: {source.url}, database: cascade, spool_dir: ../var/spool}}\n", encoding="utf-8")
    archive = backup(config, tmp_path / "out", rpc=source.rpc_address, timeout_s=60)
    manifest = read_manifest(archive)
    assert manifest.influxdb.counts == {} and manifest.influxdb.samples == []
    print(f"\n{len(manifest.files)} files: {[f.path for f in manifest.files]}")
    report = restore(archive, influx_url=fresh.url, rpc=fresh.rpc_address, state_dir=tmp_path / "v", timeout_s=60)
    assert report.ok and report.database in _databases(fresh)
