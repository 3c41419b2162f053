"""``reload --table`` on PostgreSQL: what the engine-neutral state machine (``sources/reload.py``) asks of it.

The copy's snapshot is exported by a TEMPORARY slot created on a replication connection of its own: its
consistent point P is an LSN, and the copy sees exactly the transactions committed before P. A logical message
written right after makes WAL pass P even on an idle server, so the reader reaches the split point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from psycopg import sql
from structlog.typing import FilteringBoundLogger

from cdcstream.changes import ChangeEvent, FusedRows, Item, Marker
from cdcstream.checkpoints.model import Checkpoint, PgCheckpoint
from cdcstream.config import PostgresSourceConfig
from cdcstream.errors import SourceError
from cdcstream.sources.postgres.connection import Session
from cdcstream.sources.postgres.decoder import Decoder
from cdcstream.sources.postgres.grants import copy_problem
from cdcstream.sources.postgres.heartbeat import HEARTBEAT_PREFIX
from cdcstream.sources.postgres.pgoutput import format_lsn, parse_lsn
from cdcstream.sources.postgres.snapshot import PgLoadEngine
from cdcstream.sources.reload import Copy, NewCopy


def lsn_of(checkpoint: Checkpoint) -> int:
    """The LSN of a PostgreSQL checkpoint (or a load's start position); KeyError or ValueError when it has none."""
    return parse_lsn(str(cast(PgCheckpoint, checkpoint)["lsn"]))


def reload_split(items: Sequence[Item], point: int, decoder: Decoder) -> int | None:
    """Index of the first item at or after the reload's consistent point P, or None while all are before it (and
    the reader has not passed P between transactions)."""
    for i, item in enumerate(items):
        if isinstance(item, Marker):
            if lsn_of(item.checkpoint) > point:
                return i
        elif isinstance(item, ChangeEvent | FusedRows):
            position = item.stream_position if isinstance(item, ChangeEvent) else item.position_prefix
            if parse_lsn(position[:17]) >= point:  # commit LSN
                return i
    if decoder.received_lsn >= point and not decoder.in_transaction:
        return len(items)
    return None


class PgReloads:
    """The :class:`~cdcstream.sources.reload.ReloadEngine` of one PostgreSQL source. ``load_engine`` makes the
    source's load engine with the given slot and selector."""

    def __init__(
        self,
        cfg: PostgresSourceConfig,
        session: Session,
        decoder: Decoder,
        load_engine: Callable[..., PgLoadEngine],
        log: FilteringBoundLogger,
    ) -> None:
        self._cfg = cfg
        self._session = session
        self._decoder = decoder
        self._load_engine = load_engine
        self._log = log

    async def unreadable(self, schema: str, table: str) -> str | None:
        conn = await self._session.get()
        return await copy_problem(conn, self._cfg.user, self._cfg.database, schema, table)

    async def open_copy(self, name: str, schema: str, table: str, new_copy: NewCopy, last: PgCheckpoint) -> Copy[int]:
        engine = self._load_engine(
            slot_name=f"{self._cfg.slot_name}_reload"[:63],
            temporary=True,
            selector=lambda s, t: (s, t) == (schema, table),
        )
        load = new_copy(engine, None)
        try:
            await load.open()
            if not load.covers(name):
                raise SourceError(f"reload: table {name} disappeared before its snapshot was taken")
            point = lsn_of(load.start_position)
            conn = await self._session.get()
            await conn.execute(
                sql.SQL("SELECT pg_logical_emit_message(false, {}, {})").format(
                    sql.Literal(HEARTBEAT_PREFIX + ".reload"), sql.Literal(name)
                )
            )
        except BaseException:
            await engine.close()
            raise
        self._log.info("reload: snapshot taken, streaming up to its point", table=name, point=format_lsn(point))
        return Copy(load, point)

    def marker_base(self, last: PgCheckpoint) -> PgCheckpoint:
        return last | self._decoder.checkpoint_extra
