"""PostgreSQL's :class:`~cdcstream.sources.loadengine.LoadEngine`: consistent snapshot sessions and keyset reads.

Consistency: for ``full-load-and-cdc`` the slot is created with ``CREATE_REPLICATION_SLOT`` exporting its snapshot
on a replication connection, and every session runs ``BEGIN ISOLATION LEVEL REPEATABLE READ READ
ONLY`` + ``SET TRANSACTION SNAPSHOT`` before that connection is closed (the exported snapshot lives until then);
the load therefore sees exactly the rows committed before the slot's consistent point, and CDC streams from that
point. ``full-load`` alone exports a snapshot from a normal REPEATABLE READ transaction (``pg_export_snapshot``)
and needs no slot. A resumed load (after a crash) cannot get the old snapshot back: each session reads in a
fresh REPEATABLE READ snapshot, and CDC from the stored consistent point replays every later change after the
load rows, so an in-order consumer still converges (docs/full-load.md, "Resuming").

Rows are read with ``COPY (SELECT ... WHERE <segment> AND (key) > (after) ORDER BY key LIMIT n) TO STDOUT`` in
text format: the server's text output under the session GUCs the replication connection uses (UTC, ISO dates,
ISO 8601 intervals, hex bytea, shortest-exact floats), rendered by the same per-type converters as pgoutput's
text values (``values.TypeRegistry``). Load rows and CDC rows of the same values are therefore identical.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import structlog
from psycopg import pq, sql

from cdcstream.changes import Column, Described, LoadLayout, RawRows, TableInfo
from cdcstream.checkpoints.model import PgCheckpoint
from cdcstream.errors import SourceConnectionError, SourceError
from cdcstream.sources.loadengine import GROUP_ROWS, Chunk, Key, Segment, TableSpec, new_spec_key, per_spec
from cdcstream.sources.postgres import fused
from cdcstream.sources.postgres.catalog import LOAD_TABLES_SQL
from cdcstream.sources.postgres.replication import ReplicationConnection, create_slot_command
from cdcstream.sources.postgres.values import (
    FIRST_NORMAL_OID,
    Converter,
    JsonAs,
    NeedTypes,
    PgType,
    TypeRegistry,
)

if TYPE_CHECKING:
    from cdcstream.sources.postgres._fused import RowPlan

log = structlog.get_logger(__name__)

# Below this many (estimated) rows split points come from the whole table, above it from a sample.
_SAMPLE_ABOVE = 1_000_000
_SAMPLE_ROWS = 200_000

_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_ESCAPE_RE = re.compile(r"\\(.)")


def _unescape(field: str) -> str | None:
    """One field of COPY text format (COPY TO emits only these escapes, never octal/hex)."""
    if field == "\\N":
        return None
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), field)


def parse_copy_line(line: str) -> list[str | None]:
    """A COPY text-format row (without its newline) as per-column text, None for NULL."""
    if "\\" not in line:
        return line.split("\t")  # type: ignore[return-value]
    return [_unescape(f) for f in line.split("\t")]


def split_copy_text(text: str) -> list[list[str | None]]:
    """COPY text-format lines (each ending in a newline) as per-column text."""
    if "\\" in text:
        return [parse_copy_line(line) for line in text.split("\n")[:-1]]
    # No escapes in the whole block (the common case): split without a call per line.
    return [line.split("\t") for line in text.split("\n")[:-1]]  # type: ignore[misc]


def render_lines(
    names: Sequence[str], convs: Sequence[Converter | None], lines: list[list[str | None]]
) -> list[dict[str, Any]]:
    """Rows from per-column text with the CDC path's converters (raises NeedTypes for a stale composite)."""
    if not names:
        # A table without columns (CREATE TABLE t ()) still has rows: COPY writes each as an empty line, which
        # splits into one empty field.
        return [{} for _ in lines]
    # Only the columns with a converter are touched per row; the dict comes from zip (C speed).
    todo = [(i, conv) for i, conv in enumerate(convs) if conv is not None]
    if not todo:
        return [dict(zip(names, fields, strict=True)) for fields in lines]
    out = []
    for fields in lines:
        values = list(fields)  # a copy: a retry after NeedTypes starts from the text again
        for i, conv in todo:
            v = values[i]
            if v is not None:
                values[i] = conv(v)
        out.append(dict(zip(names, values, strict=True)))
    return out


@dataclass(slots=True, frozen=True)
class RowSpec(Described):
    """What rendering a table's COPY lines needs, in a form another process can rebuild converters from.

    ``key`` is unique per spec (the worker caches the converters under it); the types are a copy of the
    source's catalog descriptions at the time it was made."""

    key: str
    names: tuple[str, ...]
    oids: tuple[int, ...]
    types: tuple[PgType, ...]
    no_hex_prefix: bool
    json_as: JsonAs
    hstore_as: JsonAs


@per_spec
def _spec_types(spec: RowSpec) -> tuple[TypeRegistry, list[Converter | None]]:
    """A type registry of the spec's own copy of the descriptions, and the spec's column converters from it."""
    registry = TypeRegistry(no_hex_prefix=spec.no_hex_prefix, json_as=spec.json_as, hstore_as=spec.hstore_as)
    registry.add(spec.types)
    return registry, [registry.converter(oid) for oid in spec.oids]


_LoadShape = tuple[tuple[str | None, ...], bool, fused.FusedKey | None]

#: spec key -> (the layout's shape, the compiled renderer or None) in the process that renders (a mapping worker).
_load_plans: dict[str, tuple[_LoadShape, RowPlan | None]] = {}


def _load_plan(spec: RowSpec, layout: LoadLayout) -> RowPlan | None:
    """The compiled renderer of a spec's rows in this layout (fused.py decides, as for CDC), or None."""
    shape: _LoadShape = (layout.names, layout.include_nulls, layout.key)
    cached = _load_plans.get(spec.key)
    if cached is not None and cached[0] == shape:
        return cached[1]
    registry, converters = _spec_types(spec)
    plan = fused.row_plan(converters, [False] * len(converters), shape, registry)
    if len(_load_plans) >= 256:  # bounded like per_spec: a spec per segment read
        _load_plans.clear()
    _load_plans[spec.key] = (shape, plan)
    return plan


@dataclass(slots=True)
class CopyBlock:
    """PostgreSQL's :class:`~cdcstream.changes.RawRows`: COPY text-format lines as read, and their spec;
    ``sizes``: the rows of each part of a chunk of parts (loadengine.Chunk.parts), mapped part by part."""

    text: bytes
    count: int
    spec: RowSpec
    sizes: tuple[int, ...] = ()

    def __len__(self) -> int:
        return self.count

    def rows(self) -> list[dict[str, Any]] | None:
        try:
            return render_lines(self.spec.names, _spec_types(self.spec)[1], split_copy_text(self.text.decode()))
        except NeedTypes:
            return None  # a composite changed since the spec was made: the source re-describes and decodes

    def split(self) -> list[CopyBlock]:
        """The parts (``sizes``) as blocks of their own: the compiled renderer leaves a whole block to the
        reference path for one value it does not take, so a worker retries a chunk of parts part by part."""
        lines = self.text.split(b"\n")  # COPY escapes newlines inside values: one line per row
        out, start = [], 0
        for n in self.sizes or (self.count,):
            out.append(CopyBlock(b"".join(line + b"\n" for line in lines[start : start + n]), n, self.spec))
            start += n
        return out

    def render_records(self, layout: LoadLayout) -> tuple[list[str], list[bytes], list[bytes | None]] | None:
        """The block's load records straight from the COPY text by the compiled renderer (fused.py,
        ``render_copy`` in _fused.c), byte for byte what rows() + the mapping write; None where they must (a
        type or value the renderer leaves to the reference path, the extension not built, CDCSTREAM_PURE)."""
        if not fused.available():
            return None
        plan = _load_plan(self.spec, layout)
        if plan is None:
            return None
        return plan.render_copy(self.text, layout.tail, layout.static_key, layout.empty_key)


def _row_predicate(columns: tuple[str, ...], types: dict[str, str], values: Key, op: str) -> sql.Composable:
    """``(c1, c2) <op> ('v1'::t1, 'v2'::t2)`` (a row comparison; casts make the text values typed)."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    vals = sql.SQL(", ").join(
        sql.SQL("{}::{}").format(sql.Literal(None if v is None else str(v)), sql.SQL(types[c]))
        for c, v in zip(columns, values, strict=True)
    )
    return sql.SQL("({}) {} ({})").format(cols, sql.SQL(op), vals)


class PgLoadEngine:
    """:class:`~cdcstream.sources.loadengine.LoadEngine` for one PostgreSQL database."""

    #: Raw reads hand over chunks of parts (loadengine.Chunk.parts); the load's queue is sized for them.
    reads_parts = True

    def __init__(
        self,
        conninfo: str,
        repl_conninfo: str,
        *,
        slot_name: str | None,
        temporary: bool = False,
        failover: bool = False,
        types: TypeRegistry,
        describe_types: Callable[[set[int]], Awaitable[None]],
        selector: Callable[[str, str], bool] | None,
        chunk_rows: int,
        buffer_size: int,
        connect_timeout: float,
    ) -> None:
        self._conninfo = conninfo
        self._repl_conninfo = repl_conninfo
        self._slot = slot_name  # None: full-load only, no slot
        self._temporary = temporary  # reload --table: a TEMPORARY slot, gone when its connection closes
        self._failover = failover  # a failover slot (PostgreSQL 17+ primary, failover = true)
        self._types = types
        self._describe = describe_types
        self._selector = selector
        self._chunk_rows = chunk_rows
        self._buffer_size = buffer_size
        self._connect_timeout = connect_timeout
        self._sessions: list[psycopg.AsyncConnection[Any]] = []
        self._sql_types: dict[str, dict[str, str]] = {}  # table -> column -> format_type(), for casts
        self.consistent_point: str | None = None

    # -- sessions ----------------------------------------------------------------------------------------
    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            raise SourceConnectionError(f"full load: cannot connect: {str(exc).strip()}") from None

    async def open(self, sessions: int, *, fresh: bool) -> PgCheckpoint:
        position: PgCheckpoint = {}
        exporter: psycopg.AsyncConnection[Any] | ReplicationConnection | None = None
        snapshot: str | None = None
        try:
            if fresh and self._slot is not None:
                repl = ReplicationConnection(self._repl_conninfo, connect_timeout=self._connect_timeout)
                exporter = repl
                await repl.connect()
                rows = await repl.command(
                    create_slot_command(
                        self._slot,
                        server_version=repl.server_version,
                        temporary=self._temporary,
                        export=True,
                        failover=self._failover,
                    )
                )
                _name, point, snapshot, _plugin = rows[0]
                self.consistent_point = str(point)
                position = {"lsn": self.consistent_point}
                log.info("replication slot created for the full load", slot=self._slot, consistent_point=point)
            elif fresh:
                conn = await self._connect()
                exporter = conn
                await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                row = await (await conn.execute("SELECT pg_export_snapshot()")).fetchone()
                snapshot = str(row[0]) if row else None
            for _ in range(sessions):
                conn = await self._connect()
                self._sessions.append(conn)
                await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                if snapshot is not None:
                    await conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        except psycopg.Error as exc:
            await self.close()
            raise SourceError(f"full load: cannot open snapshot sessions: {str(exc).strip()}") from None
        finally:
            # Every session holds the snapshot now (or failed): the exporter is no longer needed.
            if isinstance(exporter, ReplicationConnection):
                exporter.close()
            elif exporter is not None:
                await exporter.close()
        return position

    async def close(self) -> None:
        for conn in self._sessions:
            if not conn.closed:
                await conn.close()
        self._sessions.clear()

    # -- catalog -----------------------------------------------------------------------------------------
    async def tables(self) -> list[TableSpec]:
        conn = self._sessions[0]
        rows = await (await conn.execute(LOAD_TABLES_SQL)).fetchall()
        sel = self._selector
        rows = [r for r in rows if sel is None or sel(r[0], r[1])]
        oids = {int(o) for r in rows for o in r[4]}
        refresh = {o for o in oids if o >= FIRST_NORMAL_OID} | self._types.missing(oids)
        if refresh:
            await self._describe(refresh)
        specs: list[TableSpec] = []
        for schema, table, reltuples, names, type_oids, sql_types, ident, keyset in rows:
            ident_cols = set(ident or ())
            columns = tuple(
                Column(
                    name=n,
                    type_name=self._types.name(int(oid)) or str(oid),
                    type_id=int(oid),
                    nullable=True,
                    is_key=n in ident_cols,
                )
                for n, oid in zip(names, type_oids, strict=True)
            )
            info = TableInfo(schema, table, columns)
            estimate = None if reltuples is None or reltuples < 0 else int(reltuples)
            specs.append(TableSpec(info, tuple(keyset or ()), estimate))
            self._sql_types[f"{schema}.{table}"] = dict(zip(names, sql_types, strict=True))
        return specs

    async def split_points(self, spec: TableSpec, parts: int) -> list[tuple[str, ...]]:
        column = spec.key_columns[0]
        fractions = [i / parts for i in range(1, parts)]
        est = spec.estimated_rows or 0
        sample: sql.Composable = sql.SQL("")
        if est > _SAMPLE_ABOVE:
            pct = max(0.01, min(100.0, 100.0 * _SAMPLE_ROWS / est))
            sample = sql.SQL(" TABLESAMPLE SYSTEM ({})").format(sql.Literal(pct))
        query = sql.SQL("SELECT (percentile_disc({}::float8[]) WITHIN GROUP (ORDER BY {}))::text[] FROM {}{}").format(
            sql.Literal(fractions),
            sql.Identifier(column),
            sql.Identifier(spec.info.schema, spec.info.table),
            sample,
        )
        row = await (await self._sessions[0].execute(query)).fetchone()
        points = row[0] if row and row[0] else []
        return [(str(p),) for p in points if p is not None]

    # -- reading -----------------------------------------------------------------------------------------
    def _query(self, spec: TableSpec, seg: Segment, after: Key | None) -> sql.Composed:
        types = self._sql_types[spec.name]
        where: list[sql.Composable] = []
        if seg.lo is not None:
            where.append(sql.SQL("({}) IS NOT TRUE").format(_row_predicate(seg.columns, types, list(seg.lo), "<=")))
        if seg.hi is not None:
            where.append(sql.SQL("({}) IS TRUE").format(_row_predicate(seg.columns, types, list(seg.hi), "<=")))
        keys = spec.key_columns
        if keys and after is not None:
            where.append(_row_predicate(keys, types, after, ">"))
        query: sql.Composable = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in spec.info.columns),
            sql.Identifier(spec.info.schema, spec.info.table),
        )
        if where:
            query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(where))
        if keys:
            query = sql.SQL("{} ORDER BY {} LIMIT {}").format(
                query, sql.SQL(", ").join(sql.Identifier(k) for k in keys), sql.Literal(self._chunk_rows)
            )
        return sql.SQL("COPY ({}) TO STDOUT").format(query)

    async def _render(self, spec: TableSpec, lines: list[list[str | None]]) -> list[dict[str, Any]]:
        """Rows from per-column text, with the CDC path's converters (re-describing stale composites)."""
        names = [c.name for c in spec.info.columns]
        for _ in range(3):
            try:
                return render_lines(names, [self._types.converter(c.type_id) for c in spec.info.columns], lines)
            except NeedTypes as need:
                await self._describe(need.oids)
        raise SourceError(f"full load of {spec.name}: type descriptions keep changing")

    async def decode(self, spec: TableSpec, raw: RawRows) -> list[dict[str, Any]]:
        assert isinstance(raw, CopyBlock)
        return await self._render(spec, split_copy_text(raw.text.decode()))

    def _row_spec(self, spec: TableSpec) -> RowSpec:
        types = self._types
        oids = tuple(c.type_id for c in spec.info.columns)
        return RowSpec(
            new_spec_key(),
            tuple(c.name for c in spec.info.columns),
            oids,
            tuple(types.types[o] for o in sorted(self._referenced(oids))),
            types.no_hex_prefix,
            types.json_as,
            types.hstore_as,
        )

    def _referenced(self, oids: Sequence[int]) -> set[int]:
        """The described types these columns' rendering depends on (transitively)."""
        known = self._types.types
        out: set[int] = set()
        todo = list(oids)
        while todo:
            oid = todo.pop()
            if oid in out or oid not in known:
                continue
            out.add(oid)
            todo.extend(known[oid].references())
        return out

    async def read(
        self, session: int, spec: TableSpec, segment: Segment, after: Key | None, *, raw: bool = False
    ) -> AsyncIterator[Chunk]:
        conn = self._sessions[session]
        keys = spec.key_columns
        names = [c.name for c in spec.info.columns]
        key_idx = [names.index(k) for k in keys]
        row_spec: RowSpec | None = None
        generation = -1
        size = self._buffer_size
        # Raw reads hand over GROUP_ROWS rows at a time (the rest at the end) as one chunk of parts of ``size``
        # rows: one hand-off for all of them, and a marker still after every ``size`` rows.
        group = max(1, GROUP_ROWS // size) if raw else 1
        while True:
            n = 0
            query = self._query(spec, segment, after).as_bytes(conn)
            async for block in copy_out(conn.pgconn, query, size * group, spec.name, fill=raw):
                n += len(block)
                if raw:
                    if generation != self._types.generation:  # types re-described: a fresh copy for the workers
                        row_spec, generation = self._row_spec(spec), self._types.generation
                    assert row_spec is not None
                    parts: list[tuple[int, Key | None]] = []
                    for start in range(0, len(block), size):
                        end = min(start + size, len(block))
                        last = None
                        if keys:
                            last_line = parse_copy_line(str(block[end - 1], "utf-8")[:-1])
                            last = [last_line[i] for i in key_idx]
                        parts.append((end - start, last))
                    sizes = tuple(n for n, _ in parts) if len(parts) > 1 else ()
                    yield Chunk([], last, CopyBlock(b"".join(block), len(block), row_spec, sizes), parts)
                else:
                    lines = split_copy_text(b"".join(block).decode())
                    last = [lines[-1][i] for i in key_idx] if keys else None
                    yield Chunk(await self._render(spec, lines), last)
                after = last
            if not keys or n < self._chunk_rows:
                return


async def _wait_fd(fd: int, *, writable: bool = False) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    if writable:
        loop.add_writer(fd, ready)
    else:
        loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def copy_out(
    pg: pq.abc.PGconn, query: bytes, rows: int, what: str, *, fill: bool = False
) -> AsyncIterator[list[memoryview]]:
    """``COPY ... TO STDOUT`` on an idle connection through libpq directly: blocks of up to ``rows`` rows (raw
    text lines with their newline), as many per wake-up as libpq has buffered; ``fill``: ``rows`` rows (the last
    block: the rest), however many wake-ups that takes (a wake-up brings ~100 rows). psycopg's own COPY costs one
    await per row, which was a sixth of the load's CPU. The connection is idle again when this returns or raises."""
    try:
        pg.send_query(query)
        while pg.flush() == 1:
            await _wait_fd(pg.socket, writable=True)
        while pg.is_busy():
            await _wait_fd(pg.socket)
            pg.consume_input()
        res = pg.get_result()
        if res is None or res.status != pq.ExecStatus.COPY_OUT:
            _drain_results(pg)
            raise _query_error(res, pg, what)
        block: list[memoryview] = []
        while True:
            size, data = pg.get_copy_data(1)
            if size > 0:
                block.append(data)  # a view of libpq's buffer (freed with it): joined once per chunk, not copied
                if len(block) >= rows:
                    yield block
                    block = []
                continue
            if size == 0:
                if block and not fill:
                    yield block
                    block = []
                await _wait_fd(pg.socket)
                pg.consume_input()
                continue
            break  # -1: the copy is complete (or -2: failed; the result says why)
        if block:
            yield block
        res = pg.get_result()
        _drain_results(pg)
        if res is None or res.status != pq.ExecStatus.COMMAND_OK:
            raise _query_error(res, pg, what)
    except psycopg.OperationalError as exc:
        raise SourceConnectionError(f"full load of {what}: connection lost: {str(exc).strip()}") from None


def _drain_results(pg: pq.abc.PGconn) -> None:
    while pg.get_result() is not None:
        pass


def _query_error(res: pq.abc.PGresult | None, pg: pq.abc.PGconn, what: str) -> SourceError:
    raw = res.error_message if res is not None else pg.error_message
    msg = raw.decode(errors="replace").strip() or "no result"
    if pg.status != pq.ConnStatus.OK:
        return SourceConnectionError(f"full load of {what}: connection lost: {msg}")
    return SourceError(f"full load of {what}: {msg}")
