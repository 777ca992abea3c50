"""Apply access.yaml to a running Grafana: organisations, folder permissions, the regulator organisation's
data sources and dashboard (docs/deployment.md, "Grafana: who sees what").

    python access.py --config access.yaml --dashboards /dashboards --datasources datasources.yml \
        --url https://grafana:3000         # admin user and password from GF_SECURITY_ADMIN_USER / _PASSWORD

Run by the one-shot compose service ``grafana-access`` after Grafana is healthy. Standard library only
(it runs in the Cascade image, with PyYAML, or anywhere with Python and PyYAML). ``plan()`` turns the
files into a list of API calls without any network, which is what tests check; ``apply()`` sends them.
Every call is idempotent: creating what exists is skipped, permissions and dashboards are overwritten.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PERMISSIONS = {"View": 1, "Edit": 2, "Admin": 4}


@dataclass
class Call:
    """One Grafana API call: ``org`` is an org id or, for one not created yet, its name."""

    method: str
    path: str
    body: Any = None
    org: int | str = 1
    why: str = ""
    ok_statuses: tuple[int, ...] = (200,)
    extra: dict[str, Any] = field(default_factory=dict)


def _expand(value: Any, env: dict[str, str]) -> Any:
    """``$NAME`` / ``${NAME}`` in strings, as Grafana's provisioning does (``$__file{...}``: see :func:`_read_files`)."""
    if isinstance(value, str):
        return re.sub(r"\$(?!__)\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), value)
    if isinstance(value, list):
        return [_expand(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, env) for k, v in value.items()}
    return value


def plan(config: dict[str, Any], dashboards: Path, datasources: dict[str, Any], env: dict[str, str]) -> list[Call]:
    """The API calls that make Grafana match ``config`` (access.yaml)."""
    by_uid = {d["uid"]: d for d in datasources.get("datasources", [])}
    calls: list[Call] = []
    for org in config["orgs"]:
        ref: int | str = org.get("id", org["name"])
        if "id" in org:
            calls.append(Call("PUT", f"/api/orgs/{org['id']}", {"name": org["name"]}, org=1,
                              why=f"name org {org['id']} {org['name']!r}"))
        else:
            calls.append(Call("POST", "/api/orgs", {"name": org["name"]}, org=1, why=f"create org {org['name']!r}",
                              ok_statuses=(200, 409)))
        for uid in org.get("datasources", []):
            source = {k: v for k, v in _expand(by_uid[uid], env).items() if k not in ("orgId", "editable")}
            calls.append(Call("POST", "/api/datasources", source, org=ref, why=f"data source {uid}",
                              ok_statuses=(200, 409), extra={"update": f"/api/datasources/uid/{uid}"}))
        for folder in org.get("folders", []):
            calls.append(Call("POST", "/api/folders", {"uid": folder["uid"], "title": folder["title"]}, org=ref,
                              why=f"folder {folder['uid']}", ok_statuses=(200, 409, 412)))
            items = [{"role": p["role"], "permission": PERMISSIONS[p["permission"]]} for p in folder["permissions"]]
            calls.append(Call("POST", f"/api/folders/{folder['uid']}/permissions", {"items": items}, org=ref,
                              why=f"permissions of folder {folder['uid']}: {folder['permissions']}"))
            for name in folder.get("dashboards", []):
                dashboard = json.loads((dashboards / name).read_text(encoding="utf-8"))
                dashboard.pop("id", None)
                calls.append(Call("POST", "/api/dashboards/db", {"dashboard": dashboard, "folderUid": folder["uid"],
                                                                 "overwrite": True, "message": "grafana-access"},
                                  org=ref, why=f"dashboard {name} in {folder['uid']}"))
    return calls


def _read_files(value: Any) -> Any:
    """``$__file{PATH}`` in strings replaced by the file's text, as Grafana's provisioning does (the CA certificate
    of the data sources). Read when sending, so ``plan()`` needs no files; a missing file raises ``OSError``."""
    if isinstance(value, str):
        return re.sub(r"\$__file\{([^}]*)\}", lambda m: Path(m.group(1)).read_text(encoding="utf-8"), value)
    if isinstance(value, list):
        return [_read_files(v) for v in value]
    if isinstance(value, dict):
        return {k: _read_files(v) for k, v in value.items()}
    return value


def apply(calls: list[Call], url: str, user: str, password: str) -> None:
    """Send ``calls`` with basic auth as the Grafana admin; raises on an unexpected answer."""
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    org_ids: dict[str, int] = {}

    def send(method: str, path: str, body: Any, org: int) -> tuple[int, Any]:
        data = None if body is None else json.dumps(_read_files(body)).encode()
        request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers={
            "Authorization": auth, "Content-Type": "application/json", "X-Grafana-Org-Id": str(org)})
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    for call in calls:
        org = call.org
        if isinstance(org, str):
            if org not in org_ids:
                status, found = send("GET", f"/api/orgs/name/{urllib.request.quote(org)}", None, 1)
                if status != 200:
                    raise RuntimeError(f"organisation {org!r} not found (HTTP {status}): {found}")
                org_ids[org] = int(found["id"])
            org = org_ids[org]
        status, answer = send(call.method, call.path, call.body, org)
        if status == 409 and "update" in call.extra:  # exists: bring it in line with the file
            status, answer = send("PUT", call.extra["update"], call.body, org)
        if status not in call.ok_statuses and status != 200:
            raise RuntimeError(f"{call.why}: {call.method} {call.path} -> HTTP {status}: {answer}")
        print(f"grafana-access: {call.why}: ok", flush=True)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=here / "access.yaml")
    parser.add_argument("--datasources", type=Path, default=here.parent / "datasources" / "datasources.yml")
    parser.add_argument("--dashboards", type=Path, default=Path("/dashboards"))
    parser.add_argument("--url", default=os.environ.get("GRAFANA_URL", "https://grafana:3000"))
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for Grafana to answer")
    parser.add_argument("--every", type=float, default=0.0,
                        help="apply again every this many seconds (undoes changes made in the UI); 0: once")
    parser.add_argument("--ok-file", type=Path, default=None,
                        help="touched after every successful apply (the compose healthcheck reads its age)")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    datasources = yaml.safe_load(args.datasources.read_text(encoding="utf-8"))
    calls = plan(config, args.dashboards, datasources, dict(os.environ))
    user = os.environ.get("GF_SECURITY_ADMIN_USER", "admin")
    password = os.environ.get("GF_SECURITY_ADMIN_PASSWORD", "")
    while True:
        status = _apply_once(calls, args.url, user, password, args.wait)
        if status == 0 and args.ok_file is not None:
            args.ok_file.touch()
        if not args.every:
            return status
        time.sleep(args.every)


def _apply_once(calls: list[Call], url: str, user: str, password: str, wait_s: float) -> int:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/api/health", timeout=5):
                break
        except OSError:
            if time.monotonic() > deadline:
                print(f"grafana-access: {url} does not answer", file=sys.stderr)
                return 1
            time.sleep(2)
    try:
        apply(calls, url, user, password)
    except (RuntimeError, OSError) as err:
        print(f"grafana-access: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
