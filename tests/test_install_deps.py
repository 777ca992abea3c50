"""Fresh-machine install: every binary Cascade needs comes from a package ``make deps`` installs.

A developer or CI machine may already have a binary from some earlier install; checking only that
the binary exists would then hide a package missing from the install list. So each binary is traced
back to its owning Debian package with ``dpkg -S`` and compared with scripts/deb-packages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.procs import DEB_PACKAGES_FILE, deb_packages, find_binary

ROOT = Path(__file__).resolve().parents[1]


def _binaries_named_in_scripts() -> set[str]:
    """Binaries the shell scripts look up or call: run-stack's find_bin, check-configs' tools."""
    names: set[str] = set()
    run_stack = (ROOT / "scripts" / "run-stack").read_text(encoding="utf-8")
    for m in re.finditer(r'find_bin "\$\{\w+:-\}" ([\w -]+)\)', run_stack):
        names.add(m.group(1).split()[0])  # the first name is the Debian one; later ones are fallbacks
    checks = (ROOT / "scripts" / "check-configs").read_text(encoding="utf-8")
    names.update(re.findall(r"^\s+(promtool|amtool) ", checks, flags=re.M))
    return names


def _owning_package(path: str) -> str:
    real = os.path.realpath(path)
    out = subprocess.run(["dpkg", "-S", real], capture_output=True, text=True, check=False)
    if out.returncode != 0:  # usrmerge: dpkg may know the file under /bin or /sbin only
        alt = re.sub(r"^/usr/", "/", real)
        out = subprocess.run(["dpkg", "-S", alt], capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"no Debian package owns {path}: {out.stderr.strip()}"
    return out.stdout.split(":", 1)[0].strip()


def test_list_names_each_binary_once_with_a_package() -> None:
    owner = deb_packages()
    assert {"influxd", "influx", "prometheus", "promtool", "prometheus-alertmanager", "amtool",
            "mosquitto"} <= set(owner)
    lines = [ln.split() for ln in DEB_PACKAGES_FILE.read_text().splitlines() if ln.split()[:1] != ["#"] and ln.strip()]
    assert all(len(words) >= 2 for words in lines), "every package line names at least one binary"
    binaries = [b for words in lines for b in words[1:]]
    assert len(binaries) == len(set(binaries)), "a binary listed under two packages"


def test_scripts_only_need_listed_binaries() -> None:
    needed = _binaries_named_in_scripts()
    assert {"influxd", "prometheus", "prometheus-alertmanager", "promtool", "amtool"} <= needed
    missing = needed - set(deb_packages())
    assert not missing, f"scripts call {sorted(missing)}, which {DEB_PACKAGES_FILE.name} does not install"


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg: only Debian/Ubuntu hosts can be traced")
@pytest.mark.parametrize("binary", sorted(deb_packages()))
def test_binary_comes_from_the_listed_package(binary: str) -> None:
    path = find_binary(binary)
    assert path is not None, f"{binary} not installed: make deps should have installed {deb_packages()[binary]}"
    assert _owning_package(path) == deb_packages()[binary]


def test_install_deps_installs_when_one_binary_is_missing(tmp_path: Path) -> None:
    """A list whose binary is absent makes install-deps try to install (here: refused, not root-less)."""
    lst = tmp_path / "list"
    lst.write_text("# comment\nno-such-package-cascade  no-such-binary-cascade\n")
    env = {**os.environ, "PATH": "/nonexistent"}  # no apt-get, no sudo: the script must say so
    out = subprocess.run(["/bin/bash", str(ROOT / "scripts" / "install-deps"), str(lst)],
                         capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 1
    assert "missing no-such-binary-cascade" in out.stdout
    assert "no-such-package-cascade" in out.stderr


def test_install_deps_refuses_a_package_without_binaries(tmp_path: Path) -> None:
    lst = tmp_path / "list"
    lst.write_text("influxdb\n")
    out = subprocess.run(["/bin/bash", str(ROOT / "scripts" / "install-deps"), str(lst)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert "line 1" in out.stderr and "influxdb" in out.stderr
