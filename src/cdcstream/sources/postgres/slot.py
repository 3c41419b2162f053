"""The replication slot: whether the one configured fits a run (its checkpoint, its migration type), dropping it,
and how much WAL it holds back. ``cdcstream check`` reports :func:`slot_problem` exactly as ``run`` refuses with
it."""

from __future__ import annotations

from typing import Any

import psycopg

from cdcstream.checkpoints.model import PgCheckpoint, is_loading, load_completed, load_started
from cdcstream.config import PostgresSourceConfig
from cdcstream.errors import SourceConnectionError, SourceError

#: A slot's row as :func:`slot_problem` reads it: plugin, slot_type, database, wal_status, invalidation_reason.
SlotRow = tuple[str, str, str, str | None, str | None]

# Why PostgreSQL invalidated a slot (pg_replication_slots.invalidation_reason, 17+), what caused it, and what
# keeps it from happening again.
_INVALIDATED = {
    "wal_removed": (
        "the server removed WAL it still needed (max_slot_wal_keep_size)",
        "raise max_slot_wal_keep_size, or alert on cdcstream's slot lag before it is reached",
    ),
    "idle_timeout": (
        "it was inactive for longer than idle_replication_slot_timeout (PostgreSQL 18), so the server released "
        "the WAL and rows it held",
        "keep the daemon running, or raise idle_replication_slot_timeout (0 turns it off) beyond the longest "
        "time the daemon may be stopped",
    ),
    "rows_removed": (
        "catalog rows it needed were removed (on a standby: a conflict with the primary's cleanup)",
        "on a standby, set hot_standby_feedback = on and use a physical slot between standby and primary",
    ),
    "wal_level_insufficient": (
        "wal_level was lowered below logical on the primary",
        "keep wal_level = logical",
    ),
}


def slot_sql(server_version: int, extra: str = "") -> str:
    """The query of a slot's :data:`SlotRow` (plus ``extra`` columns) by name: ``invalidation_reason`` exists
    from PostgreSQL 17; before, an invalidated slot shows only as wal_status 'lost'."""
    reason = "invalidation_reason" if server_version >= 170000 else "NULL::text"
    return (
        f"SELECT plugin, slot_type, database, wal_status, {reason}{', ' + extra if extra else ''} "
        "FROM pg_replication_slots WHERE slot_name = %s"
    )


def invalidated(name: str, wal_status: str | None, reason: str | None) -> SourceError | None:
    """The error for an invalidated slot (a ``reason``, or wal_status 'lost' on servers before 17), else None."""
    if reason is None and wal_status != "lost":
        return None
    cause, prevent = _INVALIDATED.get(
        reason or "wal_removed", (f"invalidation_reason {reason!r}", "see the server log for why")
    )
    said = f"invalidation_reason '{reason}'" if reason else "wal_status 'lost'"
    return SourceError(
        f"replication slot {name!r} is invalidated ({said}): {cause}. Changes since the checkpoint are lost. "
        f"Recovery: drop the slot (SELECT pg_drop_replication_slot('{name}');), delete the checkpoint and "
        f"re-sync with a full load. To prevent it: {prevent}."
    )


def slot_problem(
    cfg: PostgresSourceConfig, slot: SlotRow | None, checkpoint: PgCheckpoint | None
) -> SourceError | None:
    """Why ``run`` cannot use the replication slot, or None (it exists and fits, or it will be created).

    ``slot``: its :data:`SlotRow` (:func:`slot_sql`), None when missing. ``cdcstream check`` reports exactly
    this, so the two never disagree."""
    name = cfg.slot_name
    if is_loading(checkpoint) and not load_started(checkpoint):
        checkpoint = None  # a load intent only: nothing was acknowledged from any slot (start() drops it)
    if slot is None:
        if checkpoint is not None:
            return SourceError(
                f"replication slot {name!r} does not exist, but a checkpoint at LSN "
                f"{checkpoint.get('lsn')} does: the slot was dropped, or this is another server (after a "
                "failover: the slot was not synchronised to this standby - a failover slot needs PostgreSQL 17 "
                "and failover = true, and one not yet sync-ready is dropped at promotion), so changes committed "
                "after the checkpoint may be lost. Recovery options: (1) if this is the wrong server or "
                "database, fix the config; (2) re-sync the target: delete the checkpoint file and start with "
                'migration_type = "full-load-and-cdc" (a new slot, then a full load), or start and copy each '
                "table with cdcstream reload --table; (3) accept the gap: delete the checkpoint file and start "
                "again (a new slot is created and capture restarts from now). cdcstream never creates a fresh "
                "slot silently when a checkpoint exists."
            )
        if not cfg.create_slot:
            return SourceError(
                f"replication slot {name!r} does not exist and create_slot is off. Create it with: "
                f"SELECT pg_create_logical_replication_slot('{name}', 'pgoutput');"
            )
        return None
    plugin, slot_type, database, wal_status, reason = slot
    if slot_type != "logical" or plugin != "pgoutput":
        return SourceError(
            f"replication slot {name!r} exists but is a {slot_type} slot with plugin {plugin!r}; "
            "cdcstream needs a logical slot using pgoutput. Use another slot_name or drop it."
        )
    if database != cfg.database:
        return SourceError(
            f"replication slot {name!r} belongs to database {database!r}, not {cfg.database!r}; "
            "slot names are cluster-wide: choose another slot_name."
        )
    return invalidated(name, wal_status, reason)


def cdc_checkpoint(checkpoint: PgCheckpoint | None) -> bool:
    """Whether ``checkpoint`` was written by a cdc task: neither in a full load nor after one."""
    return checkpoint is not None and not is_loading(checkpoint) and not load_completed(checkpoint)


def no_load_recorded(cfg: PostgresSourceConfig, checkpoint: PgCheckpoint | None) -> SourceError:
    """The refusal of a full-load-and-cdc start from a :func:`cdc_checkpoint`."""
    lsn = None if checkpoint is None else checkpoint.get("lsn")
    return SourceError(
        f"migration_type is full-load-and-cdc but the checkpoint (LSN {lsn}) was written "
        "by a cdc task: no full load is recorded, and loading now would not match the stream's position. "
        'Options: (1) keep streaming with migration_type = "cdc"; (2) re-copy tables while streaming with '
        "cdcstream reload --table schema.table; (3) start over with a full load: move the checkpoint file "
        f"away and drop the slot (SELECT pg_drop_replication_slot('{cfg.slot_name}');)."
    )


def slot_without_load(cfg: PostgresSourceConfig) -> SourceError:
    """The refusal of a fresh full-load-and-cdc start when the slot exists already."""
    return SourceError(
        f"migration_type is full-load-and-cdc and replication slot {cfg.slot_name!r} already exists, "
        "but there is no checkpoint saying a full load happened: loading now would not match the slot's "
        "position. Options: (1) drop the slot (SELECT pg_drop_replication_slot("
        f"'{cfg.slot_name}');) and start again for a full load followed by CDC; (2) set "
        'migration_type = "cdc" to stream from the slot without a load; (3) use another slot_name.'
    )


async def check_slot(
    conn: psycopg.AsyncConnection[Any], cfg: PostgresSourceConfig, checkpoint: PgCheckpoint | None
) -> bool:
    """Whether the slot exists; raises :func:`slot_problem`'s error when it cannot be used."""
    row = await (await conn.execute(slot_sql(conn.info.server_version).encode(), (cfg.slot_name,))).fetchone()
    problem = slot_problem(cfg, row, checkpoint)
    if problem is not None:
        raise problem
    return row is not None


async def drop_slot(conn: psycopg.AsyncConnection[Any], name: str) -> None:
    try:
        await conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
    except psycopg.errors.ObjectInUse:
        raise SourceConnectionError(f"replication slot {name!r} is still in use") from None
    except psycopg.Error as exc:
        raise SourceError(f"cannot drop replication slot {name!r}: {str(exc).strip()}") from None


async def slot_lag(conn: psycopg.AsyncConnection[Any], name: str) -> dict[str, float | None]:
    """Byte lag of the slot: WAL between its confirmed flush position and the server's current LSN
    (``lag_bytes``), WAL it pins (``retained_wal_bytes``, from restart_lsn) and ``safe_wal_bytes`` (PG >= 13
    ``safe_wal_size``; None when max_slot_wal_keep_size is unlimited). Empty when the slot does not exist."""
    # On a hot standby (decoding there, 16+) the WAL end is what it replayed.
    end = "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END"
    row = await (
        await conn.execute(
            f"SELECT ({end} - confirmed_flush_lsn)::float8, ({end} - restart_lsn)::float8, safe_wal_size::float8 "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (name,),
        )
    ).fetchone()
    if row is None:
        return {}
    lag, retained, safe = row
    return {"lag_bytes": lag, "retained_wal_bytes": retained, "safe_wal_bytes": safe}
