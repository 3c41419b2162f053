"""``cdcstream check``: everything the daemon needs, verified one by one with the fix for each failure."""

from __future__ import annotations

import asyncio
from typing import Any

from cdcstream.changes import Column, TableInfo
from cdcstream.checkpoints.store import FileCheckpointStore
from cdcstream.config import Config
from cdcstream.errors import CdcstreamError
from cdcstream.mapping.envelope import check_compatible
from cdcstream.mapping.preview import preview, unused_rules
from cdcstream.mapping.ruleparse import load_rules
from cdcstream.mapping.rules import MappingRules
from cdcstream.sinks import hints
from cdcstream.sources.checks import CheckResult
from cdcstream.sources.postgres.checks import checkpoint_checks
from cdcstream.sources.postgres.checks import run_checks as postgres_checks

#: What to do about a rule that matches nothing (``check`` and the start-up warning say the same).
UNUSED_RULE_FIX = "check the schema and table names in the rule (wildcards: % and _); a table created later is fine"

PERMISSION_CODES = ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "UnrecognizedClientException")


async def _stream_checks(cfg: Config) -> list[CheckResult]:
    """The stream exists and is writable, and each permission the daemon uses is proven with a harmless call:
    DescribeStreamSummary, ListShards, and PutRecords with no records (authorisation is checked before the
    request is validated, so a ValidationException proves the permission without writing anything)."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session
    from botocore.exceptions import BotoCoreError, ClientError

    t = cfg.target
    grant = 'grant it on the stream (docs/configuration.md, "Kinesis permissions")'
    session = get_session()
    results: list[CheckResult] = []
    if await session.get_credentials() is None:
        return [CheckResult("aws credentials", False, *hints.no_credentials(t.endpoint_url))]
    # parameter_validation off: botocore would refuse the empty PutRecords before it reaches Kinesis.
    config = AioConfig(parameter_validation=False, retries={"max_attempts": 2})
    try:
        async with session.create_client(
            "kinesis", region_name=t.region, endpoint_url=t.endpoint_url, config=config
        ) as client:
            try:
                desc = (await client.describe_stream_summary(StreamName=t.stream_name))["StreamDescriptionSummary"]
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "ResourceNotFoundException":
                    return [
                        CheckResult(
                            "kinesis stream", False, *hints.missing_stream(t.stream_name, t.region, t.endpoint_url)
                        )
                    ]
                if code in PERMISSION_CODES:
                    return [CheckResult("kinesis:DescribeStreamSummary", False, f"{t.stream_name}: {code}", grant)]
                return [CheckResult("kinesis stream", False, f"{t.stream_name}: {code}", "see the error code")]
            status = desc.get("StreamStatus")
            results.append(
                CheckResult(
                    "kinesis stream",
                    status in ("ACTIVE", "UPDATING"),
                    f"{t.stream_name}: {status}, {desc.get('OpenShardCount')} open shard(s), max record "
                    f"{desc.get('MaxRecordSizeInKiB', 1024)} KiB, encryption {desc.get('EncryptionType', 'NONE')}",
                    "wait until the stream is ACTIVE",
                )
            )
            for name, call in (
                ("kinesis:ListShards", client.list_shards(StreamName=t.stream_name)),
                ("kinesis:PutRecords", client.put_records(StreamName=t.stream_name, Records=[])),
            ):
                try:
                    await call
                    results.append(CheckResult(name, True, "permitted"))
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", "")
                    ok = code not in PERMISSION_CODES
                    detail = "permitted" if ok else f"{code}: {exc.response.get('Error', {}).get('Message', '')}"
                    results.append(CheckResult(name, ok, detail, grant))
            if desc.get("EncryptionType") == "KMS":
                results.append(
                    CheckResult(
                        "kms:GenerateDataKey",
                        True,
                        f"stream encrypted with {desc.get('KeyId')}: writing needs kms:GenerateDataKey on that key "
                        "(not provable without writing; a missing grant shows as KMSAccessDeniedException on the "
                        "first PutRecords)",
                    )
                )
    except (BotoCoreError, OSError) as exc:
        return [CheckResult("kinesis stream", False, *hints.unreachable(t.region, t.endpoint_url, exc))]
    return results


async def run_all(cfg: Config) -> list[CheckResult]:
    """Config and mapping, then the source, then the stream."""
    results = [CheckResult("config", True, str(cfg.config_path))]
    try:
        rules = load_rules(cfg.resolve(cfg.table_mappings) if cfg.table_mappings else None)
        check_compatible(rules, cfg.target)
        results.append(CheckResult("table mappings", True, rules.source))
    except CdcstreamError as exc:
        results.append(CheckResult("table mappings", False, str(exc), "fix the rule named above"))
        return results
    store = FileCheckpointStore.for_task(cfg)
    try:
        checkpoint = store.load()  # refused, as by run, when written for another task
    except CdcstreamError as exc:
        results.append(CheckResult("checkpoint", False, str(exc)))
        checkpoint = None
    if checkpoint is not None:
        whose = "this task" if store.owned else "an older cdcstream, no owner recorded: the server checks decide"
        results.append(CheckResult("checkpoint", True, f"{store.path} (written for {whose})"))
    if cfg.source.engine == "mysql":
        from cdcstream.sources.mysql import fused as my_fused
        from cdcstream.sources.mysql.checks import run_checks as mysql_checks

        results.append(CheckResult("row path", True, my_fused.path_name()))
        source = await mysql_checks(
            cfg.source,
            rules.selects,
            checkpoint,
            full_load=cfg.migration_type != "cdc",
            cdc=cfg.migration_type != "full-load",
        )
    else:
        from cdcstream.sources.postgres import fused

        results.append(CheckResult("row path", True, fused.path_name()))
        # (a full load alone keeps no slot: its checkpoint says nothing about one)
        slot_checkpoint = checkpoint if cfg.migration_type != "full-load" else None
        source = await postgres_checks(
            cfg.source, rules.selects, slot_checkpoint, full_load=cfg.migration_type != "cdc"
        )
    results += source
    if source and source[0].ok:  # connected: the tables can be listed
        if cfg.source.engine != "mysql":
            results += await checkpoint_checks(cfg.source, checkpoint, owned=store.owned, adopt=store.adopt_command)
        results += await _mapping_checks(cfg, rules)
    results += await _stream_checks(cfg)
    return results


# Columns of every user table, with the key the source will report: the replica identity index with REPLICA
# IDENTITY USING INDEX, else the primary key; with REPLICA IDENTITY FULL and no primary key, every column
# (what the PostgreSQL source reports as key columns).
_COLUMNS_SQL = """
SELECT n.nspname, c.relname, a.attname, t.typname, a.attnotnull,
       CASE WHEN c.relreplident = 'f' AND NOT EXISTS (SELECT 1 FROM pg_index p WHERE p.indrelid = c.oid
                                                       AND p.indisprimary)
            THEN true  -- REPLICA IDENTITY FULL without a primary key: every column is the key
            ELSE EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND a.attnum = ANY(i.indkey::int2[])
                         AND (i.indisreplident OR (i.indisprimary AND c.relreplident IN ('d', 'f')))) END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'cdcstream') AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2, a.attnum
"""


async def postgres_tables(cfg: Config) -> list[TableInfo]:
    """Every user table's columns from the catalog, as the source would describe them."""
    import psycopg

    from cdcstream.sources.postgres.connection import build_conninfo

    if cfg.source.engine != "postgres":
        raise TypeError("postgres_tables() needs a PostgreSQL source")
    async with await psycopg.AsyncConnection.connect(
        build_conninfo(cfg.source, replication=False), autocommit=True
    ) as conn:
        rows: list[Any] = await (await conn.execute(_COLUMNS_SQL)).fetchall()
    tables: dict[tuple[str, str], list[Column]] = {}
    for schema, table, name, typname, notnull, is_key in rows:
        tables.setdefault((schema, table), []).append(Column(name, typname, 0, not notnull, bool(is_key)))
    return [TableInfo(s, t, tuple(cols)) for (s, t), cols in tables.items()]


async def source_tables(cfg: Config) -> list[TableInfo]:
    """Every user table of the source: with its columns on PostgreSQL; names only on MySQL/MariaDB (the
    column-level mapping preview reads PostgreSQL's catalogue; a MySQL one is not written yet)."""
    if cfg.source.engine == "mysql":
        from cdcstream.sources.mysql.checks import table_names

        return [TableInfo(s, t, ()) for s, t in await asyncio.to_thread(table_names, cfg.source)]
    return await postgres_tables(cfg)


def mapping_errors(cfg: Config, rules: MappingRules, tables: list[TableInfo]) -> list[str]:
    """Schema-dependent mapping errors for the tables that exist now (the daemon runs this at start)."""
    if cfg.source.engine != "postgres":
        return []
    return [p.error for p in preview(rules, cfg.target, cfg.task_id, tables) if p.error]


async def _mapping_checks(cfg: Config, rules: MappingRules) -> list[CheckResult]:
    """Per selected table: the rules that apply and one sample record; rules that match nothing."""
    try:
        tables = await source_tables(cfg)
    except Exception as exc:  # the connection checks above already reported why
        return [CheckResult("mapping preview", False, f"cannot read the tables: {exc}")]
    out = []
    for p in preview(rules, cfg.target, cfg.task_id, tables) if cfg.source.engine == "postgres" else ():
        if p.error:
            out.append(CheckResult(f"mapping {p.table}", False, p.error, "fix the rule named above"))
        else:
            detail = "\n".join([*(f"  {r}" for r in p.rules), f"  partition key: {p.partition_key}", f"  {p.record}"])
            out.append(CheckResult(f"mapping {p.table}", True, "\n" + detail))
    for warning in unused_rules(rules, tables):
        # Not fatal (the table may be created later), but almost always a misspelt name.
        out.append(CheckResult("unused rule", True, warning, UNUSED_RULE_FIX, warning=True))
    return out
