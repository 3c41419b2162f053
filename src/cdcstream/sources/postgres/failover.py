"""Failover and standbys: failover slots (PostgreSQL 17+), reading from a hot standby (16+), and the pitfalls that
make a stream wait without an error.

* A **failover slot** is kept in step on standbys with ``sync_replication_slots``; after a promotion the daemon
  resumes from it. :func:`ensure_failover_slot` makes the configured slot one (``failover = true``, a 17+
  primary); before 17, or on a standby, a slot exists on its own server only, and after a switch the daemon
  stops with the missing-slot error (``slot.py``) rather than begin anew.
* ``synchronized_standby_slots`` makes a failover slot's walsender wait until those physical slots' standbys
  have the WAL: nothing reaches the stream that a promoted standby could lack. A name nobody streams through (a
  promoted standby inherits its old primary's setting) makes it wait forever, silently:
  :func:`standby_slot_problems` names it at start, at each reconnect and in ``check``, and :class:`ProgressWatch`
  notices any stream that receives nothing while the server's WAL grows.
* A failover slot a standby holds but not yet **sync-ready** is dropped when that standby is promoted:
  :func:`watch_standby_slots` keeps ``cdcstream_source_standby_slot_ready`` for each standby of a multi-host
  ``host`` (``check`` says the same through :func:`failover_checks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from structlog.typing import FilteringBoundLogger

from cdcstream.config import PostgresSourceConfig
from cdcstream.errors import SourceError
from cdcstream.sources.checks import CheckResult
from cdcstream.sources.postgres.connection import Session, build_conninfo
from cdcstream.sources.postgres.pgoutput import format_lsn, parse_lsn
from cdcstream.sources.postgres.replication import FAILOVER_VERSION, ReplicationConnection, quote_ident
from cdcstream.telemetry import metrics

#: The first server version that decodes on a standby.
STANDBY_DECODING_VERSION = 160000

#: ``synchronized_standby_slots``' physical slots on this server: name, slot_type, active, wal_status.
_STANDBY_SLOTS_SQL = """
SELECT s.name, r.slot_type, r.active, r.wal_status
FROM unnest(string_to_array(replace(current_setting('synchronized_standby_slots'), ' ', ''), ',')) AS s(name)
LEFT JOIN pg_replication_slots r ON r.slot_name = s.name
WHERE s.name <> ''
"""

#: Whether the server is a standby; the WAL end a walsender may send up to (its flushed WAL, on a standby what
#: it replayed); on a primary its timeline (of the WAL file written now: a promoted standby's walsenders follow
#: the switch without a reconnect, so IDENTIFY_SYSTEM is not asked again).
SERVER_STATE_SQL = """
SELECT pg_is_in_recovery(),
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END)::text,
       CASE WHEN NOT pg_is_in_recovery()
            THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END
"""


def standby_problem(server_version: int, in_recovery: bool) -> str | None:
    """Why the source cannot decode on this server when it is a standby, or None."""
    if not in_recovery or server_version >= STANDBY_DECODING_VERSION:
        return None
    return (
        "the server is a standby (in recovery), and logical decoding on a standby needs PostgreSQL 16 or newer: "
        'point host at the primary (with several hosts, target_session_attrs = "read-write")'
    )


def wants_failover_slot(cfg: PostgresSourceConfig, server_version: int, in_recovery: bool) -> bool:
    """Whether the slot is (made) a failover slot: ``failover = true`` on a 17+ primary (a standby refuses it)."""
    return cfg.failover and server_version >= FAILOVER_VERSION and not in_recovery


async def in_recovery(conn: psycopg.AsyncConnection[Any]) -> bool:
    row = await (await conn.execute("SELECT pg_is_in_recovery()")).fetchone()
    return bool(row and row[0])


async def ensure_failover_slot(
    repl: ReplicationConnection,
    conn: psycopg.AsyncConnection[Any],
    cfg: PostgresSourceConfig,
    *,
    standby: bool,
    log: FilteringBoundLogger,
) -> None:
    """The existing slot as ``failover`` asks: made a failover slot on a 17+ primary when it is not one (made by
    hand, or by an older cdcstream); otherwise say once why it is not one and what a switch then means."""
    version = conn.info.server_version
    if not cfg.failover:
        return
    if version < FAILOVER_VERSION or standby:
        where = "a standby (its slot is its own)" if standby else "PostgreSQL before 17"
        log.info(
            f"replication slot is not a failover slot: {where}. After a switch to another server the slot is "
            "missing there, and the daemon stops (exit 3) rather than skip changes",
            docs="docs/postgresql.md#failover",
        )
        return
    row = await (
        await conn.execute("SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (cfg.slot_name,))
    ).fetchone()
    if row is None or row[0]:
        return
    try:
        await repl.command(f"ALTER_REPLICATION_SLOT {quote_ident(cfg.slot_name)} (FAILOVER true)")
    except SourceError as exc:
        log.warning("could not make the replication slot a failover slot; it stays on this server only", error=str(exc))
        return
    log.warning(
        "replication slot made a failover slot (it was not one): standbys with sync_replication_slots keep it from "
        "now on",
        slot=cfg.slot_name,
    )


async def standby_slot_problems(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """Each physical slot of ``synchronized_standby_slots`` a failover slot's walsender would wait for in vain:
    missing on this server, not physical, not streamed through, or invalidated. Empty before 17."""
    if conn.info.server_version < FAILOVER_VERSION:
        return []
    out = []
    for name, slot_type, active, wal_status in await (await conn.execute(_STANDBY_SLOTS_SQL)).fetchall():
        if slot_type is None:
            out.append(f"{name} does not exist on this server")
        elif slot_type != "physical":
            out.append(f"{name} is a {slot_type} slot, not a standby's physical slot")
        elif wal_status == "lost":
            out.append(f"{name} is invalidated")
        elif not active:
            out.append(f"{name} is not in use (no standby streams through it)")
    return out


def standby_slots_message(problems: list[str]) -> tuple[str, str]:
    """(problem, fix) of :func:`standby_slot_problems`' findings."""
    return (
        "synchronized_standby_slots names slots no standby confirms WAL through: "
        + "; ".join(problems)
        + ". The walsender of a failover slot sends nothing until they do, so the stream waits with no error (a "
        "promoted standby inherits the setting of its old primary)",
        "start the standby that uses the slot, or take the slot out of the setting: ALTER SYSTEM SET "
        "synchronized_standby_slots = '<the standbys streaming now>'; SELECT pg_reload_conf();",
    )


async def warn_standby_slots(conn: psycopg.AsyncConnection[Any], slot: str, log: FilteringBoundLogger) -> None:
    """Log :func:`standby_slot_problems` when ``slot`` is a failover slot (only their walsenders wait)."""
    if conn.info.server_version < FAILOVER_VERSION:
        return
    row = await (
        await conn.execute("SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    ).fetchone()
    if row is None or not row[0]:
        return
    problems = await standby_slot_problems(conn)
    if problems:
        problem, fix = standby_slots_message(problems)
        log.warning(problem, fix=fix)


class ProgressWatch:
    """ "Connected, but nothing received while the server's WAL grows": how long that has lasted."""

    def __init__(self) -> None:
        self._received = -1
        self._since = 0.0

    def observe(self, received: int, server_lsn: int, connected: bool, now: float) -> float:
        """Seconds the stream has been stalled at ``now`` (0: it is not): ``received`` (the highest LSN the
        replication connection brought, data or keepalive) has not moved while the server is past it."""
        if not connected or received != self._received or server_lsn <= received:
            self._received = received
            self._since = now
            return 0.0
        return now - self._since


async def watch_server(
    session: Session,
    received: Callable[[], int],
    connected: Callable[[], bool],
    server: Callable[[bool, int | None], None],
    *,
    timeout: float,
    label: str,
    log: FilteringBoundLogger,
) -> None:
    """Until cancelled, every few seconds: ``server(standby, timeline)`` with the server's state (the source
    notices a promotion of the standby it reads), and with ``timeout`` > 0 ``cdcstream_source_stalled_seconds``
    from a :class:`ProgressWatch`, a warning with the likely cause when it passes ``timeout`` and a line when
    the stream moves again."""
    watch = ProgressWatch()
    gauge = metrics.SOURCE_STALLED_SECONDS.labels(label)
    warned = False
    interval = min(5.0, max(0.5, timeout / 4)) if timeout > 0 else 5.0
    while True:
        await asyncio.sleep(interval)
        try:
            conn = await session.get()
            row = await (await conn.execute(SERVER_STATE_SQL)).fetchone()
        except (psycopg.Error, SourceError):
            continue  # the reader reconnects; the heartbeat and table check reset the session
        if row is None:
            continue
        server(bool(row[0]), row[2])
        if timeout <= 0:
            continue
        server_lsn = parse_lsn(row[1]) if row[1] else 0
        got = received()
        stalled = watch.observe(got, server_lsn, connected(), time.monotonic())
        gauge.set(stalled)
        if stalled >= timeout and not warned:
            warned = True
            cause = "decoding a large transaction, or the server holds the stream back"
            fix = "see the server's log for the walsender"
            with contextlib.suppress(psycopg.Error):
                problems = await standby_slot_problems(conn)
                if problems:
                    cause, fix = standby_slots_message(problems)
            log.warning(
                "replication stream stalled: connected, but nothing received while the server's WAL grows",
                seconds=round(stalled),
                received_lsn=format_lsn(got),
                server_lsn=format_lsn(server_lsn),
                cause=cause,
                fix=fix,
            )
        elif stalled == 0 and warned:
            warned = False
            log.info("replication stream moving again", received_lsn=format_lsn(got))


def _hosts(cfg: PostgresSourceConfig) -> list[tuple[str, str]]:
    """(host, port) of each server of a multi-host ``host`` (empty for a single host)."""
    hosts = cfg.host.split(",")
    if len(hosts) < 2:
        return []
    ports = str(cfg.port).split(",")
    return [(h.strip(), (ports[i] if len(ports) > 1 else ports[0]).strip()) for i, h in enumerate(hosts)]


async def _other_server(cfg: PostgresSourceConfig, host: str, port: str) -> tuple[bool, Any] | str:
    """(in recovery, the slot's synced/temporary/failover state or None) on one server, or why not read."""
    params = conninfo_to_dict(build_conninfo(cfg, replication=False))
    params.update(host=host, port=port, target_session_attrs="any")
    try:
        async with await psycopg.AsyncConnection.connect(make_conninfo("", **params), autocommit=True) as conn:
            standby = await in_recovery(conn)
            if conn.info.server_version < FAILOVER_VERSION:
                return standby, "before 17"
            row = await (
                await conn.execute(
                    "SELECT synced, temporary, failover FROM pg_replication_slots WHERE slot_name = %s",
                    (cfg.slot_name,),
                )
            ).fetchone()
            return standby, row
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def standby_slot_ready(found: tuple[bool, Any] | str) -> bool | None:
    """From :func:`_other_server`'s answer: True for a standby holding the slot synced and sync-ready (it keeps
    the slot when promoted), False for a standby that would not (no slot, not synced, still temporary, before
    17), None for a primary or a server not reached."""
    if isinstance(found, str) or not found[0]:
        return None
    row = found[1]
    if row is None or row == "before 17":
        return False
    synced, temporary, _failover = row
    return bool(synced and not temporary)


async def watch_standby_slots(
    cfg: PostgresSourceConfig, *, interval: float, label: str, log: FilteringBoundLogger
) -> None:
    """Until cancelled, every ``interval`` seconds: ``cdcstream_source_standby_slot_ready`` for each other server
    of a multi-host ``host`` that is a standby, and a warning when one does not hold the slot sync-ready (a
    promotion of it then ends capture), a line when it does again. Returns at once without a host list."""
    ready: dict[str, bool] = {}
    try:
        while hosts := _hosts(cfg):
            for host, port in hosts:
                server = f"{host}:{port}"
                now = standby_slot_ready(await _other_server(cfg, host, port))
                if now is None:
                    if ready.pop(server, None) is not None:
                        metrics.SOURCE_STANDBY_SLOT_READY.remove(label, server)
                    continue
                metrics.SOURCE_STANDBY_SLOT_READY.labels(label, server).set(1 if now else 0)
                if not now and ready.get(server, True):
                    log.warning(
                        "standby does not hold the failover slot sync-ready: a promotion of it now ends capture",
                        server=server,
                        slot=cfg.slot_name,
                        fix="cdcstream check names what the standby lacks; a slot becomes sync-ready once the daemon "
                        "has confirmed a position the standby has",
                    )
                elif now and ready.get(server) is False:
                    log.info("standby holds the failover slot sync-ready", server=server, slot=cfg.slot_name)
                ready[server] = now
            await asyncio.sleep(interval)
    finally:
        for server in ready:
            metrics.SOURCE_STANDBY_SLOT_READY.remove(label, server)


async def failover_checks(
    conn: psycopg.AsyncConnection[Any], cfg: PostgresSourceConfig, slot: tuple[Any, ...] | None
) -> list[CheckResult]:
    """``check``'s failover lines: this server's role, the slot's failover state, ``synchronized_standby_slots``,
    and the slot on every other server of a multi-host ``host``. ``slot``: (failover, synced) here, or None."""
    version = conn.info.server_version
    standby = await in_recovery(conn)
    name = "failover"
    if standby:
        problem = standby_problem(version, standby)
        if problem is not None:
            return [CheckResult("standby", False, problem, "point host at the primary")]
        row = await (await conn.execute("SHOW hot_standby_feedback")).fetchone()
        feedback = bool(row and row[0] == "on")
        return [
            CheckResult(
                "standby",
                True,
                "reading from a standby (logical decoding on a standby): its slot is its own, kept when this standby "
                "is promoted; it is not a failover slot"
                + (
                    ""
                    if feedback
                    else "; hot_standby_feedback is off, so the primary's cleanup can invalidate the slot"
                ),
                ""
                if feedback
                else "ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf();  -- on this "
                "standby, with a physical slot (primary_slot_name) on the primary",
                warning=not feedback,
            )
        ]
    out: list[CheckResult] = []
    if version < FAILOVER_VERSION:
        out.append(
            CheckResult(
                name,
                True,
                "no failover slots before PostgreSQL 17: the slot lives on this server only. After a switch to a "
                "standby the daemon stops (exit 3, the slot is missing) and a full load re-syncs the target",
            )
        )
        return out
    failover, _synced = slot if slot is not None else (None, None)
    if failover:
        out.append(CheckResult(name, True, f"slot {cfg.slot_name} is a failover slot"))
    elif cfg.failover:
        out.append(
            CheckResult(
                name,
                True,
                f"slot {cfg.slot_name} "
                + ("will be created as a failover slot" if slot is None else "will be made a failover slot at start"),
            )
        )
    else:
        out.append(
            CheckResult(
                name,
                True,
                f"failover = false: slot {cfg.slot_name} is not synchronised to standbys; after a switch the daemon "
                "stops (exit 3, the slot is missing)",
                "failover = true in [source]",
                warning=True,
            )
        )
    if failover or (slot is None and cfg.failover):
        problems = await standby_slot_problems(conn)
        setting = (await (await conn.execute("SHOW synchronized_standby_slots")).fetchone() or ("",))[0]
        if problems:
            out.append(CheckResult("synchronized_standby_slots", False, *standby_slots_message(problems)))
        elif not setting:
            out.append(
                CheckResult(
                    "synchronized_standby_slots",
                    True,
                    "empty: the stream may get ahead of the standbys; after a failover to one that lacks changes "
                    "already sent, the daemon refuses to resume (exit 3: the checkpoint is past the new timeline's "
                    "branch point)",
                    "ALTER SYSTEM SET synchronized_standby_slots = '<each failover standby's physical slot>'; "
                    "SELECT pg_reload_conf();",
                    warning=True,
                )
            )
        else:
            out.append(CheckResult("synchronized_standby_slots", True, f"{setting}: each is streamed through"))
    for host, port in _hosts(cfg):
        out.append(await _standby_check(cfg, host, port))
    return out


async def _standby_check(cfg: PostgresSourceConfig, host: str, port: str) -> CheckResult:
    """The slot's state on one server of the host list: a standby must hold it synced and sync-ready (not
    temporary), or it is dropped at promotion."""
    line = f"server {host}:{port}"
    found = await _other_server(cfg, host, port)
    if isinstance(found, str):
        return CheckResult(line, True, f"not reachable: {found}", "", warning=True)
    standby, row = found
    if not standby:
        return CheckResult(line, True, "primary")
    if row == "before 17":
        return CheckResult(line, True, "standby (before PostgreSQL 17: no slot synchronisation)", warning=True)
    if row is None:
        return CheckResult(
            line,
            True,
            f"standby without slot {cfg.slot_name}: a promotion of it ends capture (exit 3)",
            "on the standby: sync_replication_slots = on, hot_standby_feedback = on, primary_slot_name, and a dbname "
            "in primary_conninfo; the slot must be a failover slot",
            warning=True,
        )
    synced, temporary, _failover = row
    if synced and not temporary:
        return CheckResult(line, True, f"standby: slot {cfg.slot_name} synced and sync-ready")
    return CheckResult(
        line,
        True,
        f"standby: slot {cfg.slot_name} "
        + ("not sync-ready yet (temporary): it is dropped if this standby is promoted now" if synced else "not synced"),
        "wait: it becomes sync-ready once the daemon has confirmed a position the standby has (a slot nobody "
        "consumes never does)",
        warning=True,
    )
