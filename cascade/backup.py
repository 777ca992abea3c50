"""Backup and verified restore (P-8.4): one checksummed archive; nothing is switched over unchecked.

    path = backup("config/local.yaml", "var/backups/")            # InfluxDB RPC: URL host, port + 2
    report = restore(path, influx_url="http://127.0.0.1:8086", rpc="127.0.0.1:8088", state_dir="var")
    report.ok, report.database, report.problems

``backup`` takes the InfluxDB database through ``influxd backup -portable`` (the RPC bind-address,
8088 by default; ``scripts/run-stack`` starts influxd on ``INFLUX_RPC_PORT``, its HTTP port + 2), the
alert state, the failed protective actions, the threshold audit log, the notifier delivery log, the
vehicle device registry (secrets: mode 0600 in the archive and on restore) and the configuration
files, into one ``.tar.gz`` with a ``MANIFEST.json``: per-file SHA-256, size and mode, and a census of
the database (values per field of every measurement, counted before and after the backup ran, and
the first and last point of each measurement) to check a restore against. The archive is written
under a temporary name and renamed when complete, so a file named like a backup is a whole one.

``restore`` checks every checksum first and refuses a damaged, truncated or altered archive naming
the file; then restores the database under a NEW name (never over the live one), checks counts and
sample points against the manifest, and only then writes the state files (the old ones kept as
``*.before-restore``) and says how to make the restored database the live one (``switch=True``
does it). docs/backup.md is the operator's guide.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Literal

import yaml

from collectors.modbus.profile import PROFILE_DIR
from core.errors import CascadeError
from core.validation import Field, Int, Model, validate

if TYPE_CHECKING:
    from cascade.config import AppConfig

__all__ = ["FORMAT", "MANIFEST", "BackupError", "Manifest", "RestoreReport", "add_arguments",
           "add_restore_arguments", "backup", "default_rpc", "read_manifest", "restore", "run_backup",
           "run_restore"]

FORMAT: Final = "cascade-backup/1"
MANIFEST = "MANIFEST.json"
#: The failed-actions file beside the alert state (``cascade.app.start_app``: alerts.json ->
#: alerts-failed-actions.json).
FAILED_ACTIONS_SUFFIX = "-failed-actions.json"
#: Files of ``cascade devices provision`` beside devices.json: ids and secrets, the ingest user's
#: password, Mosquitto's hashed passwd and ACL. All of them are kept private (0600).
_DEVICE_FILES = ("devices.json", "ingest.password", "passwd", "acl")
_PRIVATE = 0o600
_DOC = "see docs/backup.md"
#: Errors InfluxDB 1.x answers for a moment after a shard was restored live.
_TRANSIENT = ("engine is closed", "shard not found", "shard is disabled")


class BackupError(CascadeError):
    """Bad input, a damaged archive, or a server that cannot be used: what, where, and the fix."""


# --- the manifest ----------------------------------------------------------------------------------


class ManifestFile(Model):
    """One file of the archive."""

    path: str = Field(description="the path inside the archive, below its top folder")
    role: str = Field(description="what the file is: influxdb, alert-state, devices, config, ...")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the SHA-256 of the content, 64 hex digits")
    size: Int = Field(ge=0, description="the size in bytes")
    mode: Int = Field(ge=0, le=0o7777, description="the permission bits to restore")
    source: str = Field(default="", description="where the file was read from")


class Sample(Model):
    """One point read at backup time; a restore must return it unchanged."""

    retention_policy: str
    measurement: str
    time: Int
    tags: dict[str, str]
    fields: dict[str, Any]


class InfluxSection(Model):
    """The database, as it was when it was backed up."""

    url: str
    version: str
    database: str
    retention_policies: list[str]
    since_ns: Int | None = Field(default=None, description="counts cover points from this time on (None: all)")
    counts: dict[str, dict[str, dict[str, tuple[Int, Int]]]] = Field(
        description="rp -> measurement -> field -> [values before, values after] the backup ran")
    samples: list[Sample]


class Manifest(Model):
    """``MANIFEST.json``: what the archive holds and how to check a restore of it."""

    format: Literal["cascade-backup/1"] = Field(description=f"{FORMAT} (an archive written by cascade backup)")
    created: str
    cascade_version: str
    influxdb: InfluxSection
    files: list[ManifestFile]
    not_included: list[dict[str, Any]] = Field(default=[])
    duration_s: float = 0.0


# --- InfluxDB --------------------------------------------------------------------------------------


def default_rpc(url: str) -> str:
    """The RPC address next to an HTTP URL: the same host, port + 2 (8086 -> 8088, run-stack's rule)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{(parts.port or 8086) + 2}"


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Influx:
    """InfluxQL over HTTP (the v1 ``/query`` API), with errors as :class:`BackupError`."""

    def __init__(self, url: str, database: str, username: str = "", password: str = "",
                 timeout_s: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.timeout_s = timeout_s
        self._headers: dict[str, str] = {}
        if username:
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def version(self) -> str:
        request = urllib.request.Request(f"{self.url}/ping", headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return str(resp.headers.get("X-Influxdb-Version", "unknown"))
        except (OSError, urllib.error.URLError) as err:
            raise BackupError(f"InfluxDB does not answer: {_reason(err)}", source=f"{self.url}/ping",
                              fix="start InfluxDB, or give the configuration that names it (influxdb.url): when make run "
                                  "moved its ports, --config var/run-local.yaml") from None

    def series(self, influxql: str, *, post: bool = False) -> list[dict[str, Any]]:
        """Every series of the answer (``name``, ``tags``, ``columns``, ``values``); times in ns.

        A shard restored live answers "engine is closed" for a moment: such answers are retried
        for up to 15 s; anything else is an error at once.
        """
        deadline = time.monotonic() + 15.0
        while True:
            try:
                return self._series(influxql, post)
            except _QueryError as err:
                if not any(t in err.error for t in _TRANSIENT) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _series(self, influxql: str, post: bool) -> list[dict[str, Any]]:
        params = {"q": influxql, "epoch": "ns", "db": self.database}
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(f"{self.url}/query", data=data if post else None, headers=self._headers)
        if not post:
            request.full_url = f"{self.url}/query?{data.decode()}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace").strip()[:200]
            fix = ("give the user and password (influxdb.username/password, INFLUX_USERNAME/INFLUX_PASSWORD)"
                   if err.code in (401, 403) else "check the URL and the query")
            raise BackupError(f"InfluxDB answered {err.code} to {influxql!r}: {detail}", source=self.url,
                              fix=fix) from None
        except (OSError, urllib.error.URLError, ValueError) as err:
            raise BackupError(f"InfluxDB query {influxql!r} failed: {_reason(err)}", source=self.url,
                              fix="check that InfluxDB runs and the URL is right") from None
        out: list[dict[str, Any]] = []
        for result in body.get("results", []):
            if "error" in result:
                raise _QueryError(str(result["error"]), influxql)
            out.extend(result.get("series", []))
        return out

    def rows(self, influxql: str) -> list[dict[str, Any]]:
        return [{**s.get("tags", {}), **dict(zip(s["columns"], v))} for s in self.series(influxql)
                for v in s.get("values", [])]

    def databases(self) -> set[str]:
        return {str(r["name"]) for r in self.rows("SHOW DATABASES")}


class _QueryError(BackupError):
    def __init__(self, error: str, influxql: str) -> None:
        super().__init__(f"InfluxDB refused {influxql!r}: {error}", fix="check the database name and the server log")
        self.error = error


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None)
    return str(reason if reason is not None else err)


def _check_rpc(address: str) -> None:
    """``influxd backup`` retries an unreachable RPC port for minutes: find out in a second instead."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise BackupError(f"{address!r} is not host:port", key="--influx-rpc", fix="write e.g. 127.0.0.1:8088")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
            pass
    except OSError as err:
        raise BackupError(f"the InfluxDB RPC port does not accept connections: {err.strerror or err}",
                          source=address, key="--influx-rpc",
                          fix="give influxd's bind-address (influxdb.conf; run-stack: INFLUX_RPC_PORT, default "
                              "the HTTP port + 2); influxd must run on that host") from None


def _influxd(influxd: str, args: list[str], timeout_s: float) -> str:
    binary = shutil.which(influxd) or (influxd if os.path.exists(influxd) else None)
    if binary is None:
        raise BackupError(f"{influxd} not found", key="--influxd",
                          fix="install the Debian package influxdb (make deps) or give its path with --influxd")
    try:
        proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BackupError(f"influxd {args[0]} took longer than {timeout_s:.0f} s", source=" ".join(args),
                          fix="check the server log; raise --timeout for a large database") from None
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        tail = " | ".join(output.splitlines()[-3:])
        raise BackupError(f"influxd {args[0]} failed (exit {proc.returncode}): {tail}", source=" ".join(args),
                          fix=_DOC)
    return output


# --- census: counts and samples ---------------------------------------------------------------------

Counts = dict[str, dict[str, dict[str, int]]]


def _retention_policies(influx: _Influx, database: str) -> list[str]:
    return sorted(str(r["name"]) for r in influx.rows(f"SHOW RETENTION POLICIES ON {_quote(database)}"))


def _count(influx: _Influx, rps: list[str], since_ns: int | None) -> Counts:
    """Non-null values per field of every measurement, per retention policy (one query per policy)."""
    where = "" if since_ns is None else f" WHERE time >= {since_ns}"
    counts: Counts = {}
    for rp in rps:
        for series in influx.series(f"SELECT count(*) FROM {_quote(rp)}./.*/{where}"):
            fields = {col.removeprefix("count_"): int(n) for col, n in zip(series["columns"], series["values"][0])
                      if col != "time" and n}
            if fields:
                counts.setdefault(rp, {})[series["name"]] = fields
    return counts


def _samples(influx: _Influx, counts: Counts, since_ns: int | None) -> list[Sample]:
    """The first and the last point of every measurement, split into tags and fields."""
    tag_keys: dict[str, list[str]] = {s["name"]: [v[0] for v in s.get("values", [])]
                                      for s in influx.series("SHOW TAG KEYS")}
    where = "" if since_ns is None else f" WHERE time >= {since_ns}"
    samples: list[Sample] = []
    for rp, measurements in counts.items():
        for name in measurements:
            keys = tag_keys.get(name, [])
            seen: set[int] = set()
            for order in ("ASC", "DESC"):
                for row in influx.rows(f"SELECT * FROM {_quote(rp)}.{_quote(name)}{where} "
                                       f"ORDER BY time {order} LIMIT 1"):
                    if row["time"] in seen:
                        continue
                    seen.add(row["time"])
                    tags = {k: str(row[k]) for k in keys if row.get(k) not in (None, "")}
                    fields = {k: v for k, v in row.items() if k != "time" and k not in keys and v is not None}
                    samples.append(Sample(retention_policy=rp, measurement=name, time=row["time"], tags=tags,
                                          fields=fields))
    return samples


def _lookup(influx: _Influx, sample: Sample, tag_keys: list[str]) -> dict[str, Any] | None:
    """The sample's point in the restored database, found by series and time; None when missing."""
    where = [f"time = {sample.time}"] + [f"{_quote(k)} = {_literal(sample.tags.get(k, ''))}"
                                         for k in sorted(set(tag_keys) | set(sample.tags))]
    rows = influx.rows(f"SELECT * FROM {_quote(sample.retention_policy)}.{_quote(sample.measurement)} "
                       f"WHERE {' AND '.join(where)}")
    if not rows:
        return None
    return {k: v for k, v in rows[0].items() if k != "time" and k not in tag_keys and v is not None}


def _check_database(influx: _Influx, manifest: InfluxSection,
                    settle_s: float = 15.0) -> tuple[list[str], list[str]]:
    """(checks passed, problems): counts within [before, after] the backup, samples unchanged.

    Right after a live restore, influxd may answer a query over a measurement regex without the
    restored shards (no error, just no series) until their index is loaded: while a measurement the
    backup had is missing altogether, the counts are read again, for up to ``settle_s``.
    """
    expected = {(rp, m) for rp, ms in manifest.counts.items() for m, fields in ms.items()
                if any(low for low, _ in fields.values())}
    deadline = time.monotonic() + settle_s
    while True:
        restored = _count(influx, manifest.retention_policies, manifest.since_ns)
        if expected <= {(rp, m) for rp, ms in restored.items() for m in ms} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    passed, problems = _compare_counts(manifest, restored)
    tag_keys = {s["name"]: [v[0] for v in s.get("values", [])] for s in influx.series("SHOW TAG KEYS")}
    for sample in manifest.samples:
        where = f"{sample.retention_policy}.{sample.measurement} at {sample.time} {sample.tags}"
        found = _lookup(influx, sample, tag_keys.get(sample.measurement, []))
        if found is None:
            problems.append(f"sample {where}: missing")
        elif found != sample.fields:
            diff = sorted(k for k in set(found) | set(sample.fields) if found.get(k) != sample.fields.get(k))
            problems.append(f"sample {where}: differs in {', '.join(diff[:5])}")
        else:
            passed.append(f"sample {where}: {len(found)} fields equal")
    return passed, problems


def _compare_counts(manifest: InfluxSection, restored: Counts) -> tuple[list[str], list[str]]:
    passed: list[str] = []
    problems: list[str] = []
    for rp in sorted(set(manifest.counts) | set(restored)):
        for name in sorted(set(manifest.counts.get(rp, {})) | set(restored.get(rp, {}))):
            expected = manifest.counts.get(rp, {}).get(name, {})
            got = restored.get(rp, {}).get(name, {})
            bad = []
            for fname in sorted(set(expected) | set(got)):
                low, high = expected.get(fname, (0, 0))
                n = got.get(fname, 0)
                if not low <= n <= high:
                    want = str(low) if low == high else f"{low}..{high}"
                    bad.append(f"{fname}: {n} values, backup had {want}")
            if bad:
                problems.append(f"{rp}.{name}: " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
            else:
                passed.append(f"{rp}.{name}: {max(got.values(), default=0)} points, {len(got)} fields match")
    return passed, problems


# --- what to back up ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    role: str
    path: Path
    arcname: str  # below the archive's top folder: state/..., config/..., profiles/...
    private: bool = False


def _collect(config_path: Path) -> tuple[AppConfig, list[_Item], list[dict[str, Any]]]:
    """The loaded configuration, the files to back up, and what is deliberately left out (and why)."""
    # Imported here: `cascade --help` builds this module's parsers and should not load the app.
    from cascade.app import alerting_settings
    from cascade.config import load_config

    config = load_config(config_path)
    settings = alerting_settings(config)
    items: list[_Item] = []
    skipped: list[dict[str, Any]] = []

    def state(role: str, path: Path, arcname: str, private: bool = False) -> None:
        path = Path(os.path.normpath(path))  # config/../var/alerts.json -> var/alerts.json
        if path.is_file():
            items.append(_Item(role, path, f"state/{arcname}", private))
        else:
            skipped.append({"what": role, "path": str(path), "why": "not present at backup time"})

    alerts = Path(settings["state_file"])
    state("alert-state", alerts, alerts.name)
    failed = alerts.with_name(alerts.stem + FAILED_ACTIONS_SUFFIX)
    state("failed-actions", failed, failed.name)
    audit = Path(settings["audit_file"])
    state("threshold-audit", audit, audit.name)
    control = settings.get("control_audit_file")
    if control:
        state("control-audit", Path(control), Path(control).name)
    if config.vehicles is not None:  # the vehicle command service keeps its audit beside the threshold audit
        state("vehicle-command-audit", audit.with_name("vehicle-commands.jsonl"), "vehicle-commands.jsonl")
    config_dir = config_path.parent
    for path in sorted(config_dir.glob("*.y*ml")):
        log = _delivery_log(path)
        if log is not None:
            state("delivery-log", log, log.name)
    if config.vehicles is not None:
        devices_dir = Path(config.vehicles.devices).parent
        for name in _DEVICE_FILES:
            if (devices_dir / name).is_file():
                items.append(_Item("devices", devices_dir / name, f"state/devices/{name}", private=True))
    # Configuration: the config folder, files it names elsewhere, the profiles.
    for path in sorted(config_dir.glob("*.y*ml")):
        items.append(_Item("config", path, f"config/{path.name}"))
    rules = config.alerting.get("rules")  # a rule file of its own (the shipped catalogue is code)
    named = [Path(p) for p in _fleet_files(config_path)] + ([Path(rules)] if isinstance(rules, str) else [])
    named += [Path(str(p.source)) for p in config.profiles.values()]
    for path in named:
        if path.is_file() and path.resolve().parent not in (config_dir.resolve(), PROFILE_DIR.resolve()):
            items.append(_Item("config", path, f"config/referenced/{path.name}"))
    for path in sorted(PROFILE_DIR.glob("*.y*ml")):
        items.append(_Item("profile", path, f"profiles/{path.name}"))
    if config.influxdb is not None:
        spool = Path(os.path.normpath(config.influxdb.spool_dir))
        size = sum(p.stat().st_size for p in spool.rglob("*.seg")) if spool.is_dir() else 0
        skipped.append({"what": "influx-spool", "path": str(spool), "bytes_on_disk": size,
                        "why": "readings not yet in InfluxDB, owned by the running collector, which replays them "
                               "itself; a copy would be a torn snapshot and would replay twice after a restore"})
    seen: dict[str, Path] = {}
    unique: list[_Item] = []
    for item in items:
        if item.arcname in seen:
            if seen[item.arcname].resolve() != item.path.resolve():
                raise BackupError(f"{item.path} and {seen[item.arcname]} would both be {item.arcname}",
                                  source=config_path, fix="give the state files different names")
            continue
        seen[item.arcname] = item.path
        unique.append(item)
    return config, unique, skipped


def _delivery_log(path: Path) -> Path | None:
    """The notifier's delivery log, if ``path`` is a notifier configuration naming one that exists."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    notifier = doc.get("notifier") if isinstance(doc, dict) else None
    log = notifier.get("delivery_log") if isinstance(notifier, dict) else None
    if not isinstance(log, str) or not log or "$" in log:
        return None
    resolved = Path(log) if Path(log).is_absolute() else path.parent / log
    return resolved if resolved.is_file() else None


def _fleet_files(config_path: Path) -> list[str]:
    doc = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    names = doc.get("fleet_files") if isinstance(doc, dict) else None
    return [str(p if Path(p).is_absolute() else config_path.parent / p) for p in names or [] if isinstance(p, str)]


# --- backup ------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("cascade")
    except PackageNotFoundError:
        return "unknown"


def _archive_path(out: Path, database: str, stamp: str) -> Path:
    if out.is_dir() or not out.suffix:
        out.mkdir(parents=True, exist_ok=True)
        return out / f"cascade-backup-{database}-{stamp}.tar.gz"
    if not out.name.endswith((".tar.gz", ".tgz")):
        raise BackupError(f"{out} does not end in .tar.gz", key="--out",
                          fix="give a directory or a file name ending in .tar.gz")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def backup(config_path: str | Path, out: str | Path, *, rpc: str | None = None, influxd: str = "influxd",
           since_ns: int | None = None, timeout_s: float = 3600.0,
           clock: Callable[[], float] = time.time) -> Path:
    """Back up what ``config_path`` names into a new archive in ``out`` (a directory or a .tar.gz name).

    ``rpc`` is influxd's RPC address (default :func:`default_rpc` of the configured URL); ``since_ns``
    limits the verification counts (not the backup) to recent points, for databases too large to
    count whole. Returns the archive; raises :class:`BackupError` (nothing is left behind then).
    """
    started = time.monotonic()
    config_path = Path(config_path)
    if not config_path.is_file():
        raise BackupError(f"{config_path} does not exist", key="--config", fix="give the collector's configuration")
    config, items, skipped = _collect(config_path)
    if config.influxdb is None or not config.influxdb.database:
        raise BackupError("no influxdb section with a database", source=config_path, key="influxdb",
                          fix="back up a configuration that writes to InfluxDB 1.x (api v1, database)")
    cfg = config.influxdb
    influx = _Influx(cfg.url, cfg.database, cfg.username, cfg.password, timeout_s)
    rpc = rpc or default_rpc(cfg.url)
    server_version = influx.version()
    if cfg.database not in influx.databases():
        raise BackupError(f"database {cfg.database!r} does not exist on {cfg.url}", source=config_path,
                          key="influxdb.database", fix="check the name, or start the collector once to create it")
    _check_rpc(rpc)
    now = datetime.fromtimestamp(clock(), UTC).replace(microsecond=0)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    target = _archive_path(Path(out), cfg.database, stamp)
    top = target.name.removesuffix(".tar.gz").removesuffix(".tgz")

    with tempfile.TemporaryDirectory(prefix=".cascade-backup-", dir=target.parent) as tmp:
        work = Path(tmp)
        rps = _retention_policies(influx, cfg.database)
        before = _count(influx, rps, since_ns)
        samples = _samples(influx, before, since_ns)
        _influxd(influxd, ["backup", "-portable", "-host", rpc, "-db", cfg.database, str(work / "influxdb")],
                 timeout_s)
        after = _count(influx, rps, since_ns)
        counts = {rp: {m: {f: (before.get(rp, {}).get(m, {}).get(f, 0), n) for f, n in fields.items()}
                       for m, fields in measurements.items()} for rp, measurements in after.items()}
        files: list[tuple[Path, ManifestFile]] = []
        for path in sorted((work / "influxdb").iterdir()):
            files.append((path, ManifestFile(path=f"influxdb/{path.name}", role="influxdb", sha256=_sha256(path),
                                             size=path.stat().st_size, mode=0o600)))
        for item in items:  # a snapshot of each, so the checksum is of exactly what goes in the archive
            copy = work / "files" / item.arcname
            copy.parent.mkdir(parents=True, exist_ok=True)
            try:
                mode = _PRIVATE if item.private else item.path.stat().st_mode & 0o7777
                shutil.copyfile(item.path, copy)
            except OSError as err:
                raise BackupError(f"cannot read it: {err.strerror}", source=item.path,
                                  fix="run the backup as the user that owns the state files") from None
            files.append((copy, ManifestFile(path=item.arcname, role=item.role, sha256=_sha256(copy),
                                             size=copy.stat().st_size, mode=mode, source=str(item.path))))
        manifest = Manifest(
            format=FORMAT, created=now.isoformat().replace("+00:00", "Z"), cascade_version=_version(),
            influxdb=InfluxSection(url=cfg.url, version=server_version, database=cfg.database,
                                   retention_policies=rps, since_ns=since_ns, counts=counts, samples=samples),
            files=[f for _, f in files], not_included=skipped, duration_s=round(time.monotonic() - started, 3))
        _write_archive(target, top, manifest, files)
    return target


def _write_archive(target: Path, top: str, manifest: Manifest, files: list[tuple[Path, ManifestFile]]) -> None:
    """The archive under a temporary name, fsynced, then renamed; the same for its ``.sha256`` file."""
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _PRIVATE)  # it holds device secrets
        with os.fdopen(fd, "wb") as raw:
            # Level 1: the shard files are gzip already; a higher level costs CPU for nothing.
            with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as tar:
                body = (json.dumps(manifest.model_dump(mode="json"), indent=1, sort_keys=True) + "\n").encode()
                info = tarfile.TarInfo(f"{top}/{MANIFEST}")
                info.size, info.mode, info.mtime = len(body), 0o644, int(time.time())
                tar.addfile(info, io.BytesIO(body))
                for path, entry in files:
                    info = tarfile.TarInfo(f"{top}/{entry.path}")
                    info.size, info.mode, info.mtime = entry.size, entry.mode, int(path.stat().st_mtime)
                    with path.open("rb") as f:
                        tar.addfile(info, f)
            raw.flush()
            os.fsync(raw.fileno())
        digest = _sha256(partial)
        os.replace(partial, target)
        sidecar = target.with_name(target.name + ".sha256")
        tmp = sidecar.with_name(f".{sidecar.name}.partial-{os.getpid()}")
        tmp.write_text(f"{digest}  {target.name}\n", encoding="utf-8")
        os.replace(tmp, sidecar)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# --- reading an archive ------------------------------------------------------------------------------


def read_manifest(archive: str | Path) -> Manifest:
    """The manifest of ``archive`` (its first member), unchecked: for listing; :func:`restore` checks."""
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            member = tar.next()
            stream = tar.extractfile(member) if member is not None and member.name.endswith(f"/{MANIFEST}") else None
            if stream is None:
                raise BackupError(f"{MANIFEST} is not its first member", source=archive,
                                  fix="use an archive written by cascade backup")
            doc = json.loads(stream.read())
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError) as err:
        if isinstance(err, CascadeError):
            raise
        raise BackupError(f"cannot read its {MANIFEST}: {err}", source=archive,
                          fix="use an archive written by cascade backup") from None
    return validate(Manifest, doc, f"{archive}: {MANIFEST}")


def _read_archive(archive: Path, dest: Path | None) -> Manifest:
    """Check every member against the manifest (extracting into ``dest`` unless None); raise
    :class:`BackupError` naming the first member that is damaged, altered, missing or unexpected."""
    if not archive.is_file():
        raise BackupError(f"{archive} does not exist", key="ARCHIVE", fix="give a file written by cascade backup")
    damaged = "the archive is damaged or truncated"
    fix = f"use another copy of {archive.name} (check it with sha256sum -c {archive.name}.sha256)"
    actual: dict[str, tuple[str, int]] = {}
    manifest_bytes: bytes | None = None
    top: str | None = None
    current = "(archive header)"
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                current = member.name
                head, _, rest = member.name.partition("/")
                top = top or head
                if (head != top or member.name.startswith("/") or ".." in Path(member.name).parts
                        or not (member.isfile() or member.isdir())):
                    raise BackupError(f"unexpected member {member.name!r}", source=archive,
                                      fix="use an archive written by cascade backup")
                if member.isdir():
                    continue
                stream = tar.extractfile(member)
                assert stream is not None  # a regular file
                if rest == MANIFEST:
                    manifest_bytes = stream.read()
                    continue
                actual[rest] = _copy_hashed(stream, None if dest is None else dest / rest)
    except BackupError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise BackupError(f"{damaged} (reading {current}: {err})", source=archive, fix=fix) from None
    if manifest_bytes is None:
        raise BackupError(f"no {MANIFEST} in it", source=archive, fix="use an archive written by cascade backup")
    try:
        doc = json.loads(manifest_bytes)
    except (ValueError, UnicodeDecodeError) as err:
        raise BackupError(f"{MANIFEST} is not JSON ({err})", source=archive, fix=fix) from None
    manifest = validate(Manifest, doc, f"{archive}: {MANIFEST}")  # an InputError naming the key
    for entry in manifest.files:
        got = actual.pop(entry.path, None)
        if got is None:
            raise BackupError(f"{entry.path} is listed in {MANIFEST} but missing", source=archive, fix=fix)
        if got != (entry.sha256, entry.size):
            raise BackupError(f"{entry.path} does not match its checksum in {MANIFEST} (size {got[1]}, "
                              f"expected {entry.size}): the file was altered or damaged", source=archive, fix=fix)
    if actual:
        raise BackupError(f"{sorted(actual)[0]} is not listed in {MANIFEST}", source=archive, fix=fix)
    return manifest


def _copy_hashed(stream: IO[bytes], dest: Path | None) -> tuple[str, int]:
    """SHA-256 and size of ``stream``, copied to ``dest`` on the way unless None."""
    digest = hashlib.sha256()
    size = 0
    with contextlib.ExitStack() as stack:
        out = None
        if dest is not None:
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                out = stack.enter_context(dest.open("wb"))
            except OSError as err:
                raise BackupError(f"cannot unpack into {dest.parent}: {err.strerror}", key="--work-dir",
                                  fix="give a --work-dir with room for the database backup") from None
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            if out is not None:
                try:
                    out.write(chunk)
                except OSError as err:
                    raise BackupError(f"cannot unpack into {dest}: {err.strerror}", key="--work-dir",
                                      fix="give a --work-dir with room for the database backup") from None
    return digest.hexdigest(), size


# --- restore -----------------------------------------------------------------------------------------


@dataclass
class RestoreReport:
    """What a restore checked, wrote and would do next; ``ok`` is False when a check failed."""

    archive: Path
    manifest: Manifest
    verified_files: int = 0
    database: str | None = None
    passed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    switched: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def restore(archive: str | Path, *, influx_url: str | None = None, rpc: str | None = None,
            database: str | None = None, state_dir: str | Path | None = None,
            config_dir: str | Path | None = None, verify_only: bool = False, switch: bool = False,
            username: str = "", password: str = "", influxd: str = "influxd", work_dir: str | Path | None = None,
            timeout_s: float = 3600.0) -> RestoreReport:
    """Verify ``archive`` and restore it.

    1. every checksum and the manifest (``verify_only``: stop here, nothing is restored);
    2. the database into ``database`` (default ``<db>_restored_<stamp>``), which must not exist;
    3. counts and sample points against the manifest: on a mismatch the report says so and
       nothing else is written;
    4. state files into ``state_dir`` and configuration into ``config_dir`` (each atomically, an
       existing file kept as ``*.before-restore``); with ``switch`` the live database is dropped and
       restored from the archive under its own name, then checked again.

    Raises :class:`BackupError` for bad input, a damaged archive or an unusable server.
    """
    archive = Path(archive)
    started = time.monotonic()
    if not verify_only:
        if influx_url is None:
            raise BackupError("no InfluxDB to restore into", key="--influx-url",
                              fix="give --influx-url (and --influx-rpc), or --verify-only to check the archive only")
        if state_dir is None:
            raise BackupError("no state directory", key="--state-dir",
                              fix="give --state-dir (e.g. var; a new folder for a drill), or --verify-only")
    work_parent = Path(work_dir) if work_dir is not None else archive.resolve().parent
    with contextlib.ExitStack() as stack:
        extracted = None
        if not verify_only:
            extracted = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".cascade-restore-",
                                                                             dir=work_parent)))
        manifest = _read_archive(archive, extracted)
        report = RestoreReport(archive, manifest, verified_files=len(manifest.files))
        report.timings["verify_archive_s"] = round(time.monotonic() - started, 3)
        if verify_only or extracted is None or influx_url is None or state_dir is None:
            return report
        source = manifest.influxdb
        influx = _Influx(influx_url, source.database, username, password, timeout_s)
        rpc = rpc or default_rpc(influx_url)
        stamp = manifest.created.replace("-", "").replace(":", "")  # 20261206T141724Z
        new_db = database or f"{source.database}_restored_{stamp}"
        influx.version()
        if new_db in influx.databases():
            raise BackupError(f"database {new_db!r} already exists on {influx_url}", key="--database",
                              fix=f"give another --database, or DROP DATABASE {_quote(new_db)} if it is a "
                                  "left-over of an earlier restore")
        _check_rpc(rpc)
        t = time.monotonic()
        _restore_database(influxd, rpc, extracted / "influxdb", source.database, new_db, influx, timeout_s)
        report.database = new_db
        report.timings["restore_database_s"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        restored = _Influx(influx_url, new_db, username, password, timeout_s)
        report.passed, report.problems = _check_database(restored, source)
        report.timings["check_database_s"] = round(time.monotonic() - t, 3)
        if report.problems:
            report.next_steps.append(f"nothing was switched over; inspect database {new_db!r}, then drop it: "
                                     f"DROP DATABASE {_quote(new_db)}")
            return report
        for entry in manifest.files:
            if entry.role == "influxdb" or (entry.role in ("config", "profile") and config_dir is None):
                continue
            base = Path(state_dir) if entry.path.startswith("state/") else Path(config_dir or ".")
            target = base / entry.path.removeprefix("state/")
            _install(extracted / entry.path, target, _PRIVATE if entry.role == "devices" else entry.mode)
            report.written.append(target)
        if switch:
            t = time.monotonic()
            _switch(influxd, rpc, extracted / "influxdb", source, influx_url, username, password, timeout_s, report)
            report.timings["switch_s"] = round(time.monotonic() - t, 3)
        else:
            report.next_steps += _switch_steps(source.database, new_db)
    report.timings["total_s"] = round(time.monotonic() - started, 3)
    return report


def _restore_database(influxd: str, rpc: str, backup_dir: Path, database: str, new_db: str, influx: _Influx,
                      timeout_s: float) -> None:
    if not any(p.name.endswith(".tar.gz") for p in backup_dir.iterdir()):
        # An empty database has no shards: influxd restore then refuses ("DB metadata not changed").
        influx.series(f"CREATE DATABASE {_quote(new_db)}", post=True)
        return
    _influxd(influxd, ["restore", "-portable", "-host", rpc, "-db", database, "-newdb", new_db, str(backup_dir)],
             timeout_s)


def _switch(influxd: str, rpc: str, backup_dir: Path, source: InfluxSection, url: str, username: str,
            password: str, timeout_s: float, report: RestoreReport) -> None:
    """Replace the live database by the backup: drop it, restore under its own name, check again."""
    live = _Influx(url, source.database, username, password, timeout_s)
    if source.database in live.databases():
        live.series(f"DROP DATABASE {_quote(source.database)}", post=True)
    _restore_database(influxd, rpc, backup_dir, source.database, source.database, live, timeout_s)
    passed, problems = _check_database(live, source)
    report.passed += [f"{source.database} (switched): {p}" for p in passed]
    report.problems += [f"{source.database} (switched): {p}" for p in problems]
    report.switched = not problems
    report.next_steps.append(f"database {source.database!r} now holds the backup; the checked copy "
                             f"{report.database!r} can be dropped: DROP DATABASE {_quote(report.database or '')}")
    report.next_steps.append("re-grant the users' privileges (dropping a database removes them): GRANT ALL ON "
                             f"{_quote(source.database)} TO <writer>; GRANT READ ON {_quote(source.database)} TO "
                             "<reader>")


def _switch_steps(database: str, new_db: str) -> list[str]:
    return [
        f"make {new_db!r} the live database, either: (a) set influxdb.database: {new_db} in the collector's "
        "configuration (and Grafana's datasource), then restart them; or (b) stop the collector, run this restore "
        f"again with --switch (drops {database!r} and restores the backup under that name; data written since the "
        "backup is lost), start the collector",
    ]


def _install(source: Path, target: Path, mode: int) -> None:
    """``target`` replaced atomically by ``source`` with ``mode``; an existing one kept as ``*.before-restore``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.restore-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fchmod(out.fileno(), mode)  # os.open's mode is filtered by the umask
            os.fsync(out.fileno())
        if target.exists():
            keep = target.with_name(target.name + ".before-restore")
            keep.unlink(missing_ok=True)
            os.link(target, keep)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- command line ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``cascade backup``."""
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="the collector's configuration: its influxdb section, state files and folder")
    parser.add_argument("--out", required=True, metavar="DIR|FILE.tar.gz",
                        help="a directory (the archive gets a dated name) or the archive's file name")
    parser.add_argument("--influx-rpc", metavar="HOST:PORT", default=None,
                        help="influxd's RPC bind-address (default: the URL's host, port + 2, e.g. 8088; "
                             "run-stack: INFLUX_RPC_PORT)")
    parser.add_argument("--verify-days", type=float, default=None, metavar="DAYS",
                        help="count only the last DAYS of points for the restore check (the backup is always "
                             "whole); for databases too large to count")
    parser.add_argument("--influxd", default="influxd", metavar="PATH", help="the influxd binary (default: on PATH)")
    parser.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                        help="for influxd backup and each query (default 3600)")


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``cascade restore``."""
    parser.add_argument("archive", metavar="ARCHIVE", help="a .tar.gz written by cascade backup")
    parser.add_argument("--verify-only", action="store_true",
                        help="check the archive's checksums and manifest only; restore nothing")
    parser.add_argument("--influx-url", metavar="URL", help="the InfluxDB to restore into, e.g. http://127.0.0.1:8086 "
                        "(user and password from INFLUX_USERNAME / INFLUX_PASSWORD)")
    parser.add_argument("--influx-rpc", metavar="HOST:PORT", default=None,
                        help="its RPC bind-address (default: the URL's host, port + 2)")
    parser.add_argument("--database", metavar="NAME", default=None,
                        help="the new database to restore into (default <db>_restored_<time of the backup>); "
                             "must not exist")
    parser.add_argument("--state-dir", metavar="DIR", default=None,
                        help="where the state files go after the checks pass (e.g. var; the old ones are kept "
                             "as *.before-restore)")
    parser.add_argument("--config-dir", metavar="DIR", default=None,
                        help="also write the archived configuration into DIR/config and DIR/profiles")
    parser.add_argument("--switch", action="store_true",
                        help="after the checks pass, drop the live database and restore the backup under its "
                             "name (stop the collector first; data written since the backup is lost)")
    parser.add_argument("--work-dir", metavar="DIR", default=None,
                        help="where the archive is unpacked (default: beside it)")
    parser.add_argument("--influxd", default="influxd", metavar="PATH", help="the influxd binary (default: on PATH)")
    parser.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                        help="for influxd restore and each query (default 3600)")


def run_backup(args: argparse.Namespace) -> int:
    """``cascade backup``: 0 written, 2 bad input or server."""
    since = None if args.verify_days is None else time.time_ns() - int(args.verify_days * 86400e9)
    try:
        path = backup(args.config, args.out, rpc=args.influx_rpc, influxd=args.influxd, since_ns=since,
                      timeout_s=args.timeout)
        manifest = read_manifest(path)
    except CascadeError as err:
        print(f"cascade backup: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"cascade backup: {err.filename or args.out}: {err.strerror or err}. Fix: check the path and its "
              "permissions", file=sys.stderr)
        return 2
    points = sum(max(f[1] for f in fields.values()) for m in manifest.influxdb.counts.values()
                 for fields in m.values())
    print(f"{path}: {len(manifest.files)} files, {path.stat().st_size} bytes, database "
          f"{manifest.influxdb.database} ({len([m for rp in manifest.influxdb.counts.values() for m in rp])} "
          f"measurements, ~{points} points) in {manifest.duration_s:.1f} s; checksum in {path.name}.sha256")
    for item in manifest.not_included:
        size = f", {item['bytes_on_disk']} bytes on disk" if "bytes_on_disk" in item else ""
        print(f"  not included: {item['what']} {item['path']} ({item['why']}{size})")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    """``cascade restore``: 0 restored (or verified), 1 a check failed, 2 bad input, archive or server."""
    try:
        report = restore(args.archive, influx_url=args.influx_url, rpc=args.influx_rpc, database=args.database,
                         state_dir=args.state_dir, config_dir=args.config_dir, verify_only=args.verify_only,
                         switch=args.switch, username=os.environ.get("INFLUX_USERNAME", ""),
                         password=os.environ.get("INFLUX_PASSWORD", ""), influxd=args.influxd,
                         work_dir=args.work_dir, timeout_s=args.timeout)
    except CascadeError as err:
        print(f"cascade restore: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"cascade restore: {err.filename or args.archive}: {err.strerror or err}. Fix: check the path and "
              "its permissions", file=sys.stderr)
        return 2
    for line in _report_lines(report):
        print(line)
    return 0 if report.ok else 1


def _report_lines(report: RestoreReport) -> Iterator[str]:
    m = report.manifest
    yield (f"{report.archive}: {report.verified_files} files match their checksums (backup of "
           f"{m.influxdb.database} from {m.created}, Cascade {m.cascade_version}, InfluxDB {m.influxdb.version})")
    if report.database:
        yield f"restored into database {report.database!r}"
    for line in report.passed:
        yield f"  ok {line}"
    for line in report.problems:
        yield f"  FAILED {line}"
    for path in report.written:
        yield f"  wrote {path}"
    for step in report.next_steps:
        yield f"next: {step}"
