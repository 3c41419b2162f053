"""Primary/standby pairs of private PostgreSQL servers, for the failover and decoding-on-a-standby tests.

The npm builds have no ``pg_basebackup``, and none is needed: :func:`start_standby` stops the primary cleanly,
copies its data directory (without replication slots, as ``pg_basebackup`` would) and starts the primary again;
the copy starts as a hot standby streaming from the primary over its unix socket, through a physical slot on the
primary. With ``sync_slots`` (PostgreSQL 17+) it also synchronises the primary's failover slots
(``sync_replication_slots``, which needs ``hot_standby_feedback``, ``primary_slot_name`` and a ``dbname`` in
``primary_conninfo``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from tests.support import free_port
from tests.support.postgres import SUPERUSER, PgServer, ServerStartError, _as_postgres

STANDBY_SLOT = "standby1"


def start_standby(primary: PgServer, *, sync_slots: bool = False, extra_conf: str = "") -> PgServer:
    """A streaming hot standby of ``primary`` (same binaries), its physical slot ``standby1`` made on the
    primary first; returns once the primary sees it streaming."""
    primary.execute(
        "postgres",
        f"SELECT pg_create_physical_replication_slot('{STANDBY_SLOT}') "
        f"WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{STANDBY_SLOT}')",
        superuser=True,
    )
    root = Path(tempfile.mkdtemp(prefix="cdcstream-pg-standby-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, SUPERUSER, SUPERUSER)
    res = primary.pg_ctl("stop", "-m", "fast", "-w")
    if res.returncode != 0:
        raise ServerStartError(f"stopping the primary to copy it failed: {res.stderr or res.stdout}")
    try:
        copy = _as_postgres(["cp", "-a", str(primary.datadir), str(root / "data")], timeout=120)
    finally:
        res = primary.pg_ctl("start", "-w", "-t", "30")
    if res.returncode != 0:
        raise ServerStartError(f"the primary did not start again: {res.stderr} {primary.log_tail()}")
    if copy.returncode != 0:
        raise ServerStartError(f"copying the primary's data directory failed: {copy.stderr}")
    standby = PgServer(root=root, port=free_port(), bin_dir=primary.bin_dir, version=primary.version)
    _as_postgres(["sh", "-c", f"rm -rf {standby.datadir}/pg_replslot/*"])
    conninfo = f"host={primary.sockdir} port={primary.port} user={SUPERUSER} dbname=postgres application_name=standby1"
    conf = f"""
port = {standby.port}
unix_socket_directories = '{standby.sockdir}'
hot_standby = on
hot_standby_feedback = on
primary_conninfo = '{conninfo}'
primary_slot_name = '{STANDBY_SLOT}'
{"sync_replication_slots = on" if sync_slots else ""}
{extra_conf}
"""
    _as_postgres(["sh", "-c", f"cat >> {standby.datadir}/postgresql.conf <<'EOF'\n{conf}\nEOF"])
    _as_postgres(["touch", str(standby.datadir / "standby.signal")])
    res = standby.pg_ctl("start", "-w", "-t", "30")
    if res.returncode != 0:
        raise ServerStartError(f"the standby did not start: {res.stderr} {standby.log_tail()}")
    wait_until(
        lambda: primary.execute(
            "postgres",
            "SELECT 1 FROM pg_stat_replication WHERE application_name = 'standby1' AND state = 'streaming'",
            superuser=True,
        ),
        "the standby to stream",
    )
    return standby


def wait_until(pred: object, what: str, timeout: float = 60) -> None:
    """Poll ``pred`` (a callable) until it returns something true."""
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def promote(standby: PgServer) -> None:
    """``pg_ctl promote``: the standby becomes a primary on a new timeline."""
    res = standby.pg_ctl("promote", "-w", "-t", "60")
    if res.returncode != 0:
        raise AssertionError(f"promote failed: {res.stderr} {standby.log_tail()}")


def crash(server: PgServer) -> None:
    """Stop ``server`` at once, as a crash would (``-m immediate``), keeping its directory."""
    server.pg_ctl("stop", "-m", "immediate", "-w", timeout=30)
