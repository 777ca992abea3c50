"""The test servers die with the test process, even when it is killed before its fixtures stop them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_server_outlives_no_killed_test_process(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from pathlib import Path
        from tests.fixtures.procs import ServerProcess
        server = ServerProcess(["sleep", "60"], Path({str(tmp_path)!r})).start()
        print(server.proc.pid, flush=True)
        os._exit(0)  # as a test run killed from outside: no fixture teardown runs
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    child = int(out.stdout.split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        try:  # a zombie of an exited child counts as gone (reaped by init)
            if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
                return
        except OSError:
            return
        time.sleep(0.05)
    os.kill(child, 9)
    pytest.fail(f"server process {child} outlived the test process that started it")
