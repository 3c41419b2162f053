"""Whether a stored LSN may position this server's replication slot; ``run`` refuses and ``check`` reports the same.

``START_REPLICATION ... <lsn>`` with an LSN past the slot's ``confirmed_flush_lsn`` makes the server skip every
transaction committed before it and then move the slot there: irreversible. So the file alone never moves a slot
forward unless it provably belongs to it. What the server tells us (:class:`ServerState`) against what the
checkpoint says, in :func:`resume_refusals`:

* **system identifier** (``IDENTIFY_SYSTEM``): another cluster's LSNs mean nothing here.
* **timeline**: a server on a newer timeline (promotion, point-in-time restore) is fine if the checkpoint lies at
  or before the point where the server's history left the checkpoint's timeline (``TIMELINE_HISTORY``); past it,
  the server never had the WAL the checkpoint counted (and its own changes after the fork would be skipped).
  An older timeline, or one that is not in the server's history, is another branch of the cluster.
* **WAL end**: an LSN past the server's flushed WAL (``IDENTIFY_SYSTEM``'s xlogpos; a walsender never sends
  beyond it) was written for another server, or the server was restored to before it.
* **the slot's confirmed_flush_lsn** F: our daemon confirms an LSN only after writing it to the checkpoint, so
  a checkpoint of this slot is at or after F. Behind F, something else moved the slot: dropped and re-created
  under the same name (a new slot starts at the WAL end, past anything written before), advanced by hand, or
  used by another task. Ahead of F is normal after a crash (confirmed later than written), but only for a file
  that records this task and slot as its owner (``checkpoints/store.py``); a legacy file without an owner is
  adopted only when it equals F.

Not detected: a clone of the cluster (file-system copy, a replica promoted without a timeline switch) keeps the
system identifier and timeline; if its WAL has passed the checkpoint and its slot is at or behind it, nothing here
tells the clone from the original.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from structlog.typing import FilteringBoundLogger

from cdcstream.checkpoints.model import PgCheckpoint
from cdcstream.config import PostgresSourceConfig
from cdcstream.errors import Refusal, SourceConnectionError
from cdcstream.sources.postgres.pgoutput import format_lsn, parse_lsn
from cdcstream.sources.postgres.replication import ReplicationConnection

#: `cdcstream check` line of every refusal here.
CHECK = "checkpoint position"


@dataclass(frozen=True)
class ServerState:
    """What the server says about itself and our slot."""

    system_id: str
    timeline: int
    wal_end: int
    slot_confirmed: int | None  # the slot's confirmed_flush_lsn; None when it has none (or does not exist)
    history: str = ""  # TIMELINE_HISTORY of ``timeline``, read when a checkpoint's timeline is older


async def read_server_state(
    repl: ReplicationConnection, conn: psycopg.AsyncConnection[Any], slot: str, known_timeline: int | None
) -> ServerState:
    """``IDENTIFY_SYSTEM`` (and ``TIMELINE_HISTORY`` when the server's timeline is not ``known_timeline``) on the
    replication connection, the slot's ``confirmed_flush_lsn`` on the normal one."""
    system_id, timeline, xlogpos, _db = await repl.identify_system()
    history = ""
    if known_timeline is not None and timeline > 1 and timeline != known_timeline:
        rows = await repl.command(f"TIMELINE_HISTORY {timeline}")
        history = (rows[0][1] or "") if rows else ""
    try:
        row = await (
            await conn.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            )
        ).fetchone()
    except psycopg.OperationalError as exc:
        raise SourceConnectionError(f"reading replication slot {slot!r}: {str(exc).strip()}") from None
    confirmed = parse_lsn(row[0]) if row is not None and row[0] else None
    return ServerState(str(system_id), timeline, parse_lsn(xlogpos), confirmed, history)


def timeline_fork(history: str, timeline: int) -> int | None:
    """Where the history in ``history`` (a timeline history file: ``parent-tli <tab> switchpoint <tab> reason``
    per line) left ``timeline``; None when ``timeline`` is not one of its ancestors."""
    for line in history.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and int(fields[0]) == timeline:
            return parse_lsn(fields[1])
    return None


def resume_refusals(
    lsn: int,
    known: Mapping[str, Any],
    server: ServerState,
    *,
    owned: bool,
    slot: str,
    where: str,
    adopt: str,
) -> list[Refusal]:
    """Why streaming slot ``slot`` from ``lsn`` (a checkpoint's, whose ``system_id`` and ``timeline`` are in
    ``known``) would lose or misplace changes on the server ``server`` describes; empty when it is safe.
    ``owned``: the checkpoint file records this task and slot as its owner. ``where``: host:port, ``adopt``: the
    ``adopt-checkpoint`` command line, for messages."""
    at = format_lsn(lsn)
    away = "move the checkpoint file away: the daemon then resumes from the slot's confirmed_flush_lsn"
    if known.get("system_id") not in (None, server.system_id):
        return [
            Refusal(
                CHECK,
                f"PostgreSQL at {where} is database system {server.system_id}, but the checkpoint was written for "
                f"system {known['system_id']}: this is a different cluster (restored from a backup, or another "
                "server behind the same address), and its positions are unrelated",
                "point the config at the right server, or start over deliberately: move the checkpoint file away "
                "and re-sync the target with a full load",
            )
        ]
    out: list[Refusal] = []
    timeline = known.get("timeline")
    if isinstance(timeline, int) and timeline != server.timeline:
        fork = timeline_fork(server.history, timeline) if timeline < server.timeline else None
        if fork is None:
            out.append(
                Refusal(
                    CHECK,
                    f"PostgreSQL at {where} is on timeline {server.timeline}, and timeline {timeline} of the "
                    f"checkpoint (LSN {at}) is not in its history: it is another branch of the cluster (an old "
                    "primary after a failover, or a copy restored from a backup), whose WAL after the branch point "
                    "is not the history the checkpoint was written in",
                    "point the config at the current primary; or start over deliberately: move the checkpoint file "
                    "away and re-sync the target with a full load",
                )
            )
        elif lsn > fork:
            out.append(
                Refusal(
                    CHECK,
                    f"the checkpoint (LSN {at}, timeline {timeline}) is past {format_lsn(fork)}, where timeline "
                    f"{server.timeline} of PostgreSQL at {where} left timeline {timeline} (failover or point-in-time "
                    "restore): the stream holds changes of the old timeline this server never had, and resuming "
                    "would skip this server's own changes between the two points",
                    f"{away} (on a new timeline it is at or before the branch point unless it was carried over "
                    "wrongly); tell the stream's consumers that changes after the branch point up to the checkpoint "
                    "did not survive the failover; re-sync with a full load if the target must match exactly",
                )
            )
    if lsn > server.wal_end:
        out.append(
            Refusal(
                CHECK,
                f"the checkpoint's LSN {at} is ahead of the WAL of PostgreSQL at {where}, which ends at "
                f"{format_lsn(server.wal_end)}: the checkpoint was written for another server, or this one was "
                "restored to an earlier point; resuming would skip every change until the WAL reaches the "
                "checkpoint",
                "point the config at the server the checkpoint was written for; if this server is the right one, "
                f"{away} (and re-sync with a full load if the target must match the restored database)",
            )
        )
    confirmed = server.slot_confirmed
    if confirmed is not None and lsn < confirmed:
        out.append(
            Refusal(
                CHECK,
                f"replication slot {slot!r} has confirmed LSN {format_lsn(confirmed)}, past the checkpoint's "
                f"{at}: something else moved the slot (dropped and re-created under the same name, advanced with "
                "pg_replication_slot_advance, or used by another task), so changes between the two may never have "
                "reached this stream",
                f"if that was deliberate (the slot was advanced to skip changes, or this checkpoint file restored "
                f"from a backup), {away}; otherwise re-sync the target with a full load, and give every task a "
                "slot_name of its own",
            )
        )
    elif confirmed is not None and lsn > confirmed and not owned:
        out.append(
            Refusal(
                CHECK,
                f"the checkpoint file does not record which task and slot it was written for (an older cdcstream "
                f"wrote it), and its LSN {at} is ahead of replication slot {slot!r} (confirmed "
                f"{format_lsn(confirmed)}): resuming from it would move the slot forward on the strength of the "
                "file alone, skipping the changes between the two unless this task delivered them",
                f"if this task wrote the file (its daemon stopped before the server confirmed the position), run: "
                f"{adopt}; otherwise {away} (changes in between may arrive twice)",
            )
        )
    return out


async def check_position(
    repl: ReplicationConnection,
    conn: psycopg.AsyncConnection[Any],
    cfg: PostgresSourceConfig,
    known: PgCheckpoint,
    lsn: int | None,
    *,
    owned: bool,
    adopt: str,
    log: FilteringBoundLogger,
) -> PgCheckpoint:
    """Before streaming from ``lsn`` (a checkpoint's at start, ``known`` its identity; after a reconnect the last
    position yielded, ``known`` this run's own identity; None: no position to check): is this the server,
    timeline and slot the position belongs to? The first refusal is raised. A new timeline the position survived
    (a promotion after it) is logged and streaming goes on, which is correct only if the slot was carried over:
    if it was not, the missing-slot error applies. Returns the server's identity (system id and timeline)."""
    timeline = known.get("timeline")
    server = await read_server_state(repl, conn, cfg.slot_name, timeline if isinstance(timeline, int) else None)
    if lsn is not None:
        where = repl.where
        refusals = resume_refusals(lsn, known, server, owned=owned, slot=cfg.slot_name, where=where, adopt=adopt)
        if refusals:
            raise refusals[0].error()
    if timeline not in (None, server.timeline):
        log.warning(
            "timeline changed: the server was promoted (failover) after the resume position; continuing on "
            "the new timeline, which is safe only if the replication slot was carried over",
            old_timeline=timeline,
            timeline=server.timeline,
            resume_lsn=None if lsn is None else format_lsn(lsn),
        )
    return {"system_id": server.system_id, "timeline": server.timeline}
