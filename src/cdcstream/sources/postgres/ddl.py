"""DDL capture for PostgreSQL: an event trigger that writes schema changes into the WAL as logical messages.

Logical decoding carries no DDL. ``cdcstream setup postgres-ddl`` (a superuser, once per database) installs, in
the schema ``cdcstream``:

* ``cdcstream.ddl_tables``: the last known shape of every user table (schema, name, columns by attnum with
  their types, primary key), filled at install time and kept current by the trigger;
* ``ddl_command_end`` trigger: for every table a command touched (and its partitions) whose shape differs from
  the stored one, ``pg_logical_emit_message(true, 'cdcstream.ddl', {"kind": "alter", "old": …, "new": …})``;
* ``sql_drop`` trigger: ``{"kind": "drop", …}`` for every dropped table (multi-table DROP, DROP SCHEMA CASCADE);
* new tables into publications: ``cdcstream.publications`` holds, per publication, the selection of the daemon that
  streams it (DMS wildcards as regexes, registered at every start through ``cdcstream.register_publication``,
  which only the publication's owner with ``REPLICATION`` may call). When ``CREATE TABLE`` (or an ``ALTER TABLE``
  that renames a table into the selection or gives it a replica identity) leaves a selected table outside such a
  publication, the trigger adds it, in the same transaction, so its changes are captured from the first row.
  Tables without a replica identity are left out until they get one: in a publication PostgreSQL would refuse
  their UPDATEs and DELETEs, which must never be DDL capture's doing (the daemon names them instead).

The messages are transactional, so pgoutput delivers them at their transaction's commit, in order with its row
changes: that is the stream order. Each message carries the shape before *and* after, so decoding needs no
state and replays give the same records. The trigger functions catch every error and RAISE WARNING instead:
capture must never make a user's DDL fail.

:func:`schema_changes` (pure) turns one message into control events: attnums make the diff exact (same attnum,
other name: a rename; other type: a type change; new attnum: an add; missing: a drop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from cdcstream.changes import Column, Op, SchemaChange, TableInfo
from cdcstream.errors import SourceError

PREFIX = "cdcstream.ddl"
SCHEMA = "cdcstream"
TRIGGERS = ("cdcstream_ddl_command_end", "cdcstream_sql_drop")
VERSION = 1

_SNAPSHOT_FUNCTION = r"""
CREATE OR REPLACE FUNCTION cdcstream.table_snapshot(rel oid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
SELECT jsonb_build_object(
  'schema', n.nspname, 'table', c.relname,
  'columns', COALESCE((
      SELECT jsonb_agg(jsonb_build_object('num', a.attnum, 'name', a.attname,
                                          'type', format_type(a.atttypid, a.atttypmod), 'oid', a.atttypid,
                                          'notnull', a.attnotnull) ORDER BY a.attnum)
      FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]'::jsonb),
  'key', COALESCE((
      SELECT jsonb_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))
      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
      WHERE i.indrelid = c.oid AND i.indisprimary), '[]'::jsonb))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = rel AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p'  -- not temporary, not unlogged
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'cdcstream') AND n.nspname NOT LIKE 'pg\_toast%'
$fn$
"""


def _event_function(name: str, variables: str, body: str) -> str:
    """An event trigger function: SECURITY DEFINER (it writes cdcstream.ddl_tables and emits messages for any
    user's DDL) with a pinned search_path (as every SECURITY DEFINER function must), and a last-resort handler:
    capture must never make a user's DDL fail."""
    return (
        f"CREATE OR REPLACE FUNCTION cdcstream.{name}() RETURNS event_trigger\n"
        "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$\n"
        f"DECLARE\n{variables}BEGIN\n{body}"
        "EXCEPTION WHEN OTHERS THEN\n"
        "  RAISE WARNING 'cdcstream DDL capture failed: % (SQLSTATE %); this change is not in the stream', "
        "SQLERRM, SQLSTATE;\n"
        "END\n$fn$"
    )


# DMS selection semantics over the registered regexes: an include rule matches and no exclude rule does.
_SELECTS_FUNCTION = r"""
CREATE OR REPLACE FUNCTION cdcstream.selects(selection jsonb, nsp text, rel text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
SELECT COALESCE(bool_or((r->>'include')::boolean) AND NOT bool_or(NOT (r->>'include')::boolean), false)
FROM jsonb_array_elements(selection) r WHERE nsp ~ (r->>'schema') AND rel ~ (r->>'table')
$fn$
"""

# Called by the daemon at start (as the publication's owner): which tables DDL capture adds to its publication.
_REGISTER_FUNCTION = r"""
CREATE OR REPLACE FUNCTION cdcstream.register_publication(pub name, selection jsonb) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  owner oid;
  prev jsonb;
BEGIN
  SELECT p.pubowner INTO owner FROM pg_publication p WHERE p.pubname = pub;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'publication % does not exist', pub USING ERRCODE = 'undefined_object';
  END IF;
  SELECT r.selection INTO prev FROM cdcstream.publications r WHERE r.pubname = pub;
  IF prev IS NOT DISTINCT FROM selection THEN
    RETURN 'unchanged';
  END IF;
  -- The trigger adds tables as a superuser: only who could read their changes anyway (REPLICATION) and owns
  -- the publication may say which.
  IF NOT (pg_has_role(session_user, owner, 'USAGE')
          AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = session_user AND (rolsuper OR rolreplication))) THEN
    RAISE EXCEPTION 'only the owner of publication % (%), with REPLICATION, may register it for DDL capture',
      pub, owner::regrole USING ERRCODE = 'insufficient_privilege';
  END IF;
  INSERT INTO cdcstream.publications VALUES (pub, selection, session_user, now())
    ON CONFLICT (pubname) DO UPDATE SET selection = EXCLUDED.selection, registered_by = EXCLUDED.registered_by,
                                        registered_at = EXCLUDED.registered_at;
  RETURN 'registered';
END
$fn$
"""

# A selected table with a replica identity that a registered publication does not cover joins it. Runs inside the
# event trigger (as its owner, a superuser); not callable by anyone else.
_PUBLISH_FUNCTION = r"""
CREATE OR REPLACE FUNCTION cdcstream.publish_table(rel oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  nsp name;
  tbl name;
  ident boolean;
  reg record;
BEGIN
  SELECT n.nspname, c.relname,
         c.relreplident = 'f'
         OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
         OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))
    INTO nsp, tbl, ident
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = rel AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p';
  IF NOT FOUND OR NOT ident THEN
    RETURN;
  END IF;
  FOR reg IN SELECT r.pubname FROM cdcstream.publications r JOIN pg_publication p ON p.pubname = r.pubname
             WHERE NOT p.puballtables
               AND NOT EXISTS (SELECT 1 FROM pg_publication_rel pr WHERE pr.prpubid = p.oid AND pr.prrelid = rel)
               AND NOT EXISTS (SELECT 1 FROM pg_publication_tables pt
                               WHERE pt.pubname = p.pubname AND pt.schemaname = nsp AND pt.tablename = tbl)
               AND cdcstream.selects(r.selection, nsp, tbl) LOOP
    EXECUTE format('ALTER PUBLICATION %I ADD TABLE %I.%I', reg.pubname, nsp, tbl);
  END LOOP;
END
$fn$
"""

_COMMAND_END_FUNCTION = _event_function(
    "on_ddl_command_end",
    "  cmd record;\n  rel oid;\n  cur jsonb;\n  prev jsonb;\n",
    r"""
  FOR cmd IN SELECT DISTINCT objid, command_tag FROM pg_event_trigger_ddl_commands()
             WHERE classid = 'pg_class'::regclass AND objid IS NOT NULL LOOP
    -- ALTER on a partitioned table changes its partitions too, and only the parent is reported.
    FOR rel IN SELECT cmd.objid UNION SELECT relid FROM pg_partition_tree(cmd.objid::regclass) LOOP
      BEGIN
        cur := cdcstream.table_snapshot(rel);
        CONTINUE WHEN cur IS NULL;
        IF rel = cmd.objid AND cmd.command_tag IN ('CREATE TABLE', 'ALTER TABLE') THEN
          PERFORM cdcstream.publish_table(rel);
        END IF;
        SELECT snapshot INTO prev FROM cdcstream.ddl_tables WHERE relid = rel;
        CONTINUE WHEN prev IS NOT NULL AND prev = cur;
        IF prev IS NOT NULL OR cmd.command_tag NOT IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') THEN
          PERFORM pg_logical_emit_message(true, 'cdcstream.ddl', jsonb_build_object(
            'v', 1, 'kind', 'alter', 'tag', cmd.command_tag, 'oid', rel, 'old', prev, 'new', cur)::text);
        END IF;
        INSERT INTO cdcstream.ddl_tables AS t VALUES (rel, cur)
          ON CONFLICT (relid) DO UPDATE SET snapshot = EXCLUDED.snapshot;
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'cdcstream DDL capture failed for relation %: % (SQLSTATE %); this change is not in the stream',
          rel, SQLERRM, SQLSTATE;
      END;
    END LOOP;
  END LOOP;
""",
)

_SQL_DROP_FUNCTION = _event_function(
    "on_sql_drop",
    "  obj record;\n  prev jsonb;\n",
    r"""
  FOR obj IN SELECT objid, schema_name, object_name FROM pg_event_trigger_dropped_objects()
             WHERE object_type = 'table' AND NOT is_temporary
               AND schema_name NOT IN ('pg_catalog', 'information_schema', 'cdcstream') LOOP
    BEGIN
      prev := NULL;
      DELETE FROM cdcstream.ddl_tables WHERE relid = obj.objid RETURNING snapshot INTO prev;
      PERFORM pg_logical_emit_message(true, 'cdcstream.ddl', jsonb_build_object(
        'v', 1, 'kind', 'drop', 'tag', tg_tag, 'oid', obj.objid, 'schema', obj.schema_name,
        'table', obj.object_name, 'old', prev)::text);
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'cdcstream DDL capture failed for dropped table %.%: % (SQLSTATE %)',
        obj.schema_name, obj.object_name, SQLERRM, SQLSTATE;
    END;
  END LOOP;
""",
)

INSTALL_SQL: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS cdcstream",
    # USAGE only, for cdcstream.register_publication: the tables stay unreadable to everyone but their owner.
    "REVOKE ALL ON SCHEMA cdcstream FROM PUBLIC",
    "GRANT USAGE ON SCHEMA cdcstream TO PUBLIC",
    "CREATE TABLE IF NOT EXISTS cdcstream.ddl_tables (relid oid PRIMARY KEY, snapshot jsonb NOT NULL)",
    "CREATE TABLE IF NOT EXISTS cdcstream.publications (pubname name PRIMARY KEY, selection jsonb NOT NULL, "
    "registered_by name NOT NULL, registered_at timestamptz NOT NULL)",
    _SNAPSHOT_FUNCTION,
    _SELECTS_FUNCTION,
    _REGISTER_FUNCTION,
    "REVOKE ALL ON FUNCTION cdcstream.register_publication(name, jsonb) FROM PUBLIC",
    "GRANT EXECUTE ON FUNCTION cdcstream.register_publication(name, jsonb) TO PUBLIC",
    _PUBLISH_FUNCTION,
    "REVOKE ALL ON FUNCTION cdcstream.publish_table(oid) FROM PUBLIC",
    _COMMAND_END_FUNCTION,
    _SQL_DROP_FUNCTION,
    "DROP EVENT TRIGGER IF EXISTS cdcstream_ddl_command_end",
    "CREATE EVENT TRIGGER cdcstream_ddl_command_end ON ddl_command_end EXECUTE FUNCTION cdcstream.on_ddl_command_end()",
    "DROP EVENT TRIGGER IF EXISTS cdcstream_sql_drop",
    "CREATE EVENT TRIGGER cdcstream_sql_drop ON sql_drop EXECUTE FUNCTION cdcstream.on_sql_drop()",
    # The baseline: every table's current shape, so the first ALTER after setup has a "before".
    "INSERT INTO cdcstream.ddl_tables SELECT c.oid, s FROM pg_class c, cdcstream.table_snapshot(c.oid) s "
    "WHERE c.relkind IN ('r', 'p') AND s IS NOT NULL "
    "ON CONFLICT (relid) DO UPDATE SET snapshot = EXCLUDED.snapshot",
)

UNINSTALL_SQL: tuple[str, ...] = (
    "DROP EVENT TRIGGER IF EXISTS cdcstream_ddl_command_end",
    "DROP EVENT TRIGGER IF EXISTS cdcstream_sql_drop",
    "DROP SCHEMA IF EXISTS cdcstream CASCADE",
)

INSTALLED_SQL = "SELECT evtname FROM pg_event_trigger WHERE evtname = ANY(%s) AND evtenabled <> 'D'"

REGISTER_SQL = "SELECT cdcstream.register_publication(%s, %s::jsonb)"
"""Registers a publication's selection (``cdcstream.register_publication``): 'registered' or 'unchanged'."""


def script(uninstall: bool = False) -> str:
    """The statements as one SQL script, for a DBA to review or run with psql."""
    body = ";\n".join(s.strip() for s in (UNINSTALL_SQL if uninstall else INSTALL_SQL))
    return f"BEGIN;\n{body};\nCOMMIT;\n"


def install(
    conninfo: str, *, uninstall: bool = False, register: tuple[str, list[dict[str, Any]]] | None = None
) -> str | None:
    """Install (idempotent: functions replaced, triggers re-created, shapes refreshed) or remove DDL capture in
    one transaction. Event triggers need a superuser. ``register``: a publication and the selection (regexes)
    whose new tables to add to it, registered when the publication exists (the daemon registers it at every
    start too, when it owns it); returns the registration's outcome, or None when the publication is missing."""
    import psycopg  # here: the decoder below is pure, and pgoutput imports this module for it

    outcome: str | None = None
    try:
        with psycopg.connect(conninfo) as conn:
            row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
            if not (row and row[0]):
                raise SourceError(
                    "installing DDL capture needs a superuser (CREATE EVENT TRIGGER is superuser-only): run "
                    "`cdcstream setup postgres-ddl` with --user or --dsn naming a superuser, or have a DBA run "
                    "the script from `cdcstream setup postgres-ddl --print-sql`"
                )
            for stmt in UNINSTALL_SQL if uninstall else INSTALL_SQL:
                conn.execute(stmt.encode())
            if register is not None and not uninstall:
                publication, selection = register
                if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone():
                    row = conn.execute(REGISTER_SQL, (publication, orjson.dumps(selection).decode())).fetchone()
                    outcome = str(row[0]) if row else None
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"DDL capture setup failed: {first}") from None
    return outcome


# ---------------------------------------------------------------------------------------------------------
# Decoding (pure)
# ---------------------------------------------------------------------------------------------------------


class BadMessage(ValueError):
    """A ``cdcstream.ddl`` message this version cannot read (another version of the trigger, or damaged)."""


@dataclass(frozen=True, slots=True)
class DdlEvent:
    """One control event described by a DDL message: the table after the change and what changed."""

    op: Op
    table: TableInfo
    change: SchemaChange


TypeName = Callable[[int, str], str]
"""(type oid, format_type text) -> the type name the decoder uses for that type in ``TableInfo``."""


def _table(snapshot: dict[str, Any], type_name: TypeName, schema: str = "", table: str = "") -> TableInfo:
    keys = set(snapshot.get("key") or ())
    return TableInfo(
        schema or str(snapshot["schema"]),
        table or str(snapshot["table"]),
        tuple(
            Column(
                name=str(c["name"]),
                type_name=type_name(int(c["oid"]), str(c["type"])),
                type_id=int(c["oid"]),
                nullable=not c.get("notnull", False),
                is_key=c["name"] in keys,
            )
            for c in snapshot["columns"]
        ),
    )


def schema_changes(content: bytes, type_name: TypeName) -> list[DdlEvent]:
    """The control events of one ``cdcstream.ddl`` message, in the order a consumer should apply them: a table
    rename first, then column drops, renames and type changes, then adds. Raises :class:`BadMessage`."""
    try:
        msg = orjson.loads(content)
        if not isinstance(msg, dict) or msg.get("v") != VERSION:
            raise BadMessage(f"unknown message version {msg.get('v') if isinstance(msg, dict) else msg!r}")
        return _events(msg, type_name)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BadMessage):
            raise
        raise BadMessage(f"malformed DDL message: {exc!r}") from None


def _events(msg: dict[str, Any], type_name: TypeName) -> list[DdlEvent]:
    old_snap = msg.get("old")
    if msg["kind"] == "drop":
        schema, name = str(msg["schema"]), str(msg["table"])
        old = _table(old_snap, type_name, schema, name) if old_snap else TableInfo(schema, name, ())
        return [DdlEvent(Op.DROP_TABLE, old, SchemaChange(old))]
    if msg["kind"] != "alter":
        raise BadMessage(f"unknown message kind {msg['kind']!r}")
    new = _table(msg["new"], type_name)
    if not old_snap:
        # The table's shape before is unknown (created while capture was off): say *that* it changed.
        return [DdlEvent(Op.CHANGE_COLUMNS, new, SchemaChange(TableInfo(new.schema, new.table, ())))]
    old = _table(old_snap, type_name)
    out: list[DdlEvent] = []
    if (old.schema, old.table) != (new.schema, new.table):
        out.append(DdlEvent(Op.RENAME_TABLE, new, SchemaChange(old)))
    # Column changes are relative to the table under its new name (the rename, if any, came first).
    before = TableInfo(new.schema, new.table, old.columns)
    old_cols = {int(c["num"]): c for c in old_snap["columns"]}
    new_cols = {int(c["num"]): c for c in msg["new"]["columns"]}
    for num, c in old_cols.items():
        if num not in new_cols:
            out.append(DdlEvent(Op.DROP_COLUMN, new, SchemaChange(before, old_column=str(c["name"]))))
    for num, c in new_cols.items():
        prev = old_cols.get(num)
        if prev is None:
            continue
        name, old_name = str(c["name"]), str(prev["name"])
        if name != old_name:
            out.append(DdlEvent(Op.RENAME_COLUMN, new, SchemaChange(before, column=name, old_column=old_name)))
        if (c["type"], c["oid"]) != (prev["type"], prev["oid"]):
            out.append(DdlEvent(Op.COLUMN_TYPE_CHANGE, new, SchemaChange(before, column=name, old_column=old_name)))
    for num, c in new_cols.items():
        if num not in old_cols:
            out.append(DdlEvent(Op.ADD_COLUMN, new, SchemaChange(before, column=str(c["name"]))))
    return out
