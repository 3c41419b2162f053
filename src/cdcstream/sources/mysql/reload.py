"""``reload --table`` on MySQL/MariaDB: what the engine-neutral state machine (``sources/reload.py``) asks of it.

The copy's sessions open one snapshot with its exact binlog position P (docs/full-load.md, "Reloading one table
while CDC runs"), taken between batches at a transaction boundary, so everything yielded so far ends at the last
yielded marker Y. Under FLUSH TABLES WITH READ LOCK, P is the binlog's end, so P >= Y. Without the lock (MariaDB:
the snapshot's own Binlog_snapshot_position) a transaction can be in the binlog, and so already streamed, a moment
before it is visible to new snapshots: then P < Y, and the rows would miss changes already sent before them. That
snapshot is thrown away and a new one taken, until P >= Y."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from structlog.typing import FilteringBoundLogger

from cdcstream.changes import ChangeEvent, Item, Marker
from cdcstream.checkpoints.model import MySQLCheckpoint
from cdcstream.config import MySQLSourceConfig
from cdcstream.errors import SourceError
from cdcstream.sources.mysql.grants import copy_problem
from cdcstream.sources.mysql.positions import BinlogPos, binlog_pos, position_of
from cdcstream.sources.mysql.resume import ServerInfo
from cdcstream.sources.mysql.server import open_connection
from cdcstream.sources.mysql.snapshot import MyLoadEngine, SnapshotsDiffer
from cdcstream.sources.reload import Copy, NewCopy

# Snapshots a reload may take before its binlog position is at or after what was already streamed.
REOPEN_ATTEMPTS = 50


def reload_split(items: Sequence[Item], point: BinlogPos, heard: tuple[str, int] | None) -> int | None:
    """Index of the first item after the reload point P, or None while all are before it and the reader may not
    have reached P yet (``heard``: the position a heartbeat said the server has sent everything up to). P is a
    transaction boundary of the binlog, so a transaction either ends at or before P (its marker's position) or
    starts at or after it (its events' stream-position)."""
    for i, item in enumerate(items):
        if isinstance(item, Marker):
            at = position_of(item.checkpoint)
            if at > point:
                return i
            if at == point:
                return i + 1
        elif isinstance(item, ChangeEvent):  # CDC items only here (load rows come after the split)
            file, _, rest = item.stream_position.rpartition(":")
            if binlog_pos(file, int(rest.partition(".")[0])) >= point:
                return i
    if heard is not None and binlog_pos(*heard) >= point:
        return len(items)  # an idle server: everything up to the heartbeat's position is in
    return None


class MySQLReloads:
    """The :class:`~cdcstream.sources.reload.ReloadEngine` of one MySQL/MariaDB source. ``info`` is what the
    server said at start (or the last reconnect); ``load_engine`` makes the source's load engine with the given
    options."""

    def __init__(
        self,
        cfg: MySQLSourceConfig,
        info: Callable[[], ServerInfo | None],
        load_engine: Callable[..., MyLoadEngine],
        log: FilteringBoundLogger,
    ) -> None:
        self._cfg = cfg
        self._info = info
        self._load_engine = load_engine
        self._log = log

    async def unreadable(self, schema: str, table: str) -> str | None:
        return await asyncio.to_thread(self._unreadable, schema, table)

    def _unreadable(self, schema: str, table: str) -> str | None:
        conn = open_connection(self._cfg)
        try:
            with conn.cursor() as cur:
                return copy_problem(cur, schema, table, f"the MySQL/MariaDB server {self._cfg.host}:{self._cfg.port}")
        finally:
            conn.close()

    async def open_copy(
        self, name: str, schema: str, table: str, new_copy: NewCopy, last: MySQLCheckpoint
    ) -> Copy[BinlogPos]:
        info = self._info()
        assert info is not None
        yielded = position_of(last)
        sessions: int | None = None
        for attempt in range(REOPEN_ATTEMPTS):
            engine = self._load_engine(
                mariadb=info.mariadb, want_position=True, selector=lambda s, t: (s, t) == (schema, table), exact=True
            )
            load = new_copy(engine, sessions)
            try:
                await load.open()
            except SnapshotsDiffer as exc:
                self._log.warning("reload: reading with one session (one snapshot)", table=name, reason=str(exc))
                sessions = 1
                continue
            if not load.covers(name):
                await engine.close()
                raise SourceError(f"reload: table {name} disappeared before its snapshot was taken")
            point = position_of(load.start_position)
            if point >= yielded:
                self._taken(name, point, engine, info)
                about = {
                    "table": name,
                    "point": str(point),
                    "path": engine.path,
                    "sessions": load.cfg.max_full_load_subtasks,
                }
                return Copy(load, point, about)
            await engine.close()
            self._log.info(
                "reload: snapshot older than the stream already sent; taking another", table=name, attempt=attempt
            )
            await asyncio.sleep(0.05 * (attempt + 1))
        raise SourceError(
            f"reload of {name}: {REOPEN_ATTEMPTS} snapshots in a row were older than the binlog position already "
            f"streamed ({yielded}); the server's binlog_snapshot_position does not advance"
        )

    def _taken(self, name: str, point: BinlogPos, engine: MyLoadEngine, info: ServerInfo) -> None:
        if engine.path != "lock" and not info.mariadb:
            self._log.warning(
                "reload without FLUSH TABLES WITH READ LOCK on MySQL: the position is read before the "
                "snapshot, so rows changed in between arrive as load rows and again as changes after them "
                "(lossless, not exact); grant RELOAD for an exact reload",
                table=name,
            )
        self._log.info(
            "reload: snapshot taken, streaming up to its binlog position",
            table=name,
            point=str(point),
            path=engine.path,
        )

    def marker_base(self, last: MySQLCheckpoint) -> MySQLCheckpoint:
        return last
