"""The install story, followed as the docs tell it: the wheel and sdist built with ``python -m build`` and checked with
``twine check``, then the documented steps from the wheel to a systemd service (docs/operations.md, "From a wheel to a
running systemd service") run as written, under a scratch root (every ``/opt/`` and ``/etc/`` path moved below it), and
``systemd-analyze verify --root`` on the units as shipped: their ``ExecStart`` must exist where the steps put it.

Only ``systemctl`` is left out (no service manager runs here). The steps install the wheel's dependencies into a
fresh virtualenv, as a user's machine would, from the wheelhouse ``make`` resolved from the package index for the
development environment (``.wheels``; without it, from the index itself, which took up to two minutes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from cdcstream import __version__
from tests.support.tools import tool

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".wheels"
MARKER = "<!-- install-steps: the test runs this block -->"

pytestmark = pytest.mark.timeout(900)


def documented_install_steps() -> list[str]:
    """The shell lines of the block under the install-steps marker in docs/operations.md."""
    text = (ROOT / "docs" / "operations.md").read_text()
    block = text.split(MARKER, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def under(root: Path, line: str) -> str:
    """``line`` with its /opt/ and /etc/ paths moved under ``root`` (the checkout's relative paths stay)."""
    return re.sub(r"(?<![\w./])/(opt|etc)/", f"{root}/\\1/", line)


def test_version_has_one_source() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "cdcstream.__version__"}
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert project["project"]["license"] == "Apache-2.0"
    res = subprocess.run(
        [sys.executable, "-m", "cdcstream", "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert res.stdout.strip() == f"cdcstream {__version__}"


def test_from_a_built_wheel_to_a_verified_systemd_unit(tmp_path: Path) -> None:
    # pip reads these (in build's isolated environment too): the wheels `make` resolved from the index.
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELS)} if WHEELS.is_dir() else None
    # 1. The release artefacts, built and checked as CI's `make test` does here.
    dist = tmp_path / "checkout" / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    # A platform wheel: it carries the compiled extensions (a C compiler is on every machine here).
    wheels = sorted(dist.glob(f"cdcstream-{__version__}-*.whl"))
    sdist = dist / f"cdcstream-{__version__}.tar.gz"
    assert len(wheels) == 1 and sdist.exists(), sorted(p.name for p in dist.iterdir())
    wheel = wheels[0]
    with zipfile.ZipFile(wheel) as zf:
        for module in (
            "sources/postgres/_fused",
            "sources/mysql/_fused",
            "sinks/_putrecords",
            "mapping/_splice",
            "workers/_frames",
        ):
            assert any(n.startswith(f"cdcstream/{module}.") and n.endswith(".so") for n in zf.namelist()), module
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0 and check.stdout.count("PASSED") == 2, check.stdout + check.stderr

    # 2. The documented steps, in a checkout (deploy/, config/, dist/) and a scratch root standing in for /.
    checkout = dist.parent
    for name in ("deploy", "config"):
        (checkout / name).symlink_to(ROOT / name)
    root = tmp_path / "root"
    # systemd-analyze --root needs the distribution's own units (targets, sockets) inside the root.
    shutil.copytree("/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    steps = documented_install_steps()
    assert steps[0] == "python3 -m venv /opt/cdcstream/venv", steps
    verified = []
    for line in steps:
        if line.startswith("systemd-analyze verify "):
            unit = line.split()[-1]
            verified.append(unit)
            continue  # run below, with --root
        res = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", under(root, line)],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        stale = " (after a dependency change, `make .venv/bin/.installed` renews .wheels)" if env else ""
        assert res.returncode == 0, f"{line}\n{res.stdout[-3000:]}{res.stderr[-3000:]}{stale}"
    assert verified == ["/etc/systemd/system/cdcstream.service"]

    # 3. The installed command works, and the unit verifies as shipped: its ExecStart exists now.
    installed = root / "opt" / "cdcstream" / "venv" / "bin" / "cdcstream"
    res = subprocess.run([str(installed), "--version"], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == f"cdcstream {__version__}", res.stdout + res.stderr
    assert (root / "etc" / "cdcstream" / "credentials" / "source_password").read_text() == "the password\n"
    # The template unit, installed the same way (its header shows the steps).
    shutil.copy(ROOT / "deploy" / "systemd" / "cdcstream@.service", root / "etc" / "systemd" / "system")
    for unit in ("cdcstream.service", "cdcstream@orders.service"):
        res = subprocess.run(
            [tool("systemd-analyze"), "verify", "--man=no", f"--root={root}", unit],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), unit + res.stdout + res.stderr
    # ... and would not without the steps: the check is not vacuous.
    installed.unlink()
    res = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", f"--root={root}", "cdcstream.service"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "/opt/cdcstream/venv/bin/cdcstream is not executable" in res.stdout + res.stderr


def test_wheel_without_a_compiler_runs_the_pure_path(tmp_path: Path) -> None:
    """No C compiler (CC names a failing one): the wheel still builds, installs and runs, on the pure path."""
    env = {**os.environ, "CC": "false"}
    if WHEELS.is_dir():
        env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELS))
    # A clean copy of the sources: an editable install leaves the compiled module beside _fused.c.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info"))
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(src)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("cdcstream-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert not any(n.endswith(".so") for n in zf.namelist())
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)]
    subprocess.run(pip, check=True, capture_output=True, timeout=300)
    probe = "from cdcstream.sources.postgres import fused; from cdcstream.sources.mysql import fused as my; "
    probe += "from cdcstream.workers import frames; print(fused.path_name()); print(my.path_name()); "
    probe += "print(frames.available())"
    # Dependencies from this environment; cdcstream itself from the wheel (first on the path).
    res = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:2] == ["pure (the compiled extension is not built)"] * 2, res.stdout
    assert lines[2:] == ["False"], res.stdout  # the mapping workers answer with pickles
