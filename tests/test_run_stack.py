"""`make run` (scripts/run-stack) as a process: started in the background without job control, where
the shell ignores SIGINT, an interrupt still stops the whole stack and leaves no child behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.procs import free_port, require_binary, wait_http

ROOT = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@pytest.mark.slow
def test_a_backgrounded_stack_stops_on_sigint(tmp_path: Path) -> None:
    for binary in ("influxd", "prometheus", "prometheus-alertmanager"):
        require_binary(binary)
    ports = {name: free_port() for name in ("INFLUX_PORT", "INFLUX_RPC_PORT", "PROM_PORT", "AM_PORT")}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "VAR_DIR": str(tmp_path / "var")}
    env.pop("CASCADE_RUN_STACK_SIGNALS", None)
    # `bash -c 'cmd & wait'` runs cmd as a background job without job control: SIGINT is ignored on entry.
    outer = subprocess.Popen(["bash", "-c", f"bash {ROOT / 'scripts' / 'run-stack'} --services-only & "
                                            "echo $! > stack.pid; wait"],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    services: set[int] = set()
    try:
        wait_http(f"http://127.0.0.1:{ports['PROM_PORT']}/-/ready", timeout_s=90)
        pid = int((tmp_path / "stack.pid").read_text())
        services = _descendants(pid)  # the services run in their own sessions: found by parentage
        assert len(services) >= 3, "influxd, alertmanager and prometheus run under the stack"
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (_alive(pid) or any(_alive(p) for p in services)):
            time.sleep(0.2)
        assert not _alive(pid), "run-stack ignored SIGINT"
        assert not [p for p in services if _alive(p)], "a service outlived the stack"
        assert outer.wait(timeout=10) == 0
    finally:
        if outer.poll() is None:
            os.killpg(outer.pid, signal.SIGKILL)
            outer.wait(timeout=10)
        for p in services | _descendants(outer.pid):  # never leave a service behind, pass or fail
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def _run_stack(tmp_path: Path, timeout_s: float, **env: str) -> subprocess.CompletedProcess[str]:
    ports = {name: str(free_port()) for name in ("INFLUX_PORT", "INFLUX_RPC_PORT", "PROM_PORT", "AM_PORT")}
    full = {**os.environ, **ports, "VAR_DIR": str(tmp_path / "var"), "READY_TIMEOUT": "60", **env}
    full.pop("CASCADE_RUN_STACK_SIGNALS", None)
    return subprocess.run(["bash", str(ROOT / "scripts" / "run-stack"), "--services-only"], cwd=tmp_path, env=full,
                          capture_output=True, text=True, timeout=timeout_s, start_new_session=True)


def test_a_port_held_by_an_outgoing_connection_is_taken(tmp_path: Path) -> None:
    """No listener on it, but the local end of a connection: a service could not bind it, so the
    start-up check (which binds, as the services do) refuses it and names the variable."""
    for binary in ("influxd", "prometheus", "prometheus-alertmanager"):
        require_binary(binary)
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server, socket.socket() as client:
        client.bind(("127.0.0.1", 0))
        held = client.getsockname()[1]
        client.connect(server.getsockname())
        done = _run_stack(tmp_path, 60, PROM_PORT=str(held))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {held} (Prometheus) is already in use" in done.stderr and "set PROM_PORT" in done.stderr
    assert "started" not in done.stdout, "nothing was started"


@pytest.mark.slow
def test_prometheus_failing_to_start_names_prom_port(tmp_path: Path) -> None:
    for binary in ("influxd", "prometheus-alertmanager"):
        require_binary(binary)
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\necho 'err=\"listen tcp 127.0.0.1:9090: bind: address already in use\"' >&2\nexit 1\n")
    fake.chmod(0o755)
    done = _run_stack(tmp_path, 180, PROMETHEUS=str(fake))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "prometheus exited during startup" in done.stderr and "PROM_PORT" in done.stderr, done.stderr
