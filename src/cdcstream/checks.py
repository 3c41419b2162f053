"""``cdcstream check``: everything the daemon needs, verified one by one with the fix for each failure."""

from __future__ import annotations

from typing import Any

from cdcstream.changes import Column, TableInfo
from cdcstream.config import Config
from cdcstream.errors import CdcstreamError
from cdcstream.mapping.envelope import check_compatible
from cdcstream.mapping.preview import preview, unused_rules
from cdcstream.mapping.rules import MappingRules, load_rules
from cdcstream.sources.postgres.checks import CheckResult
from cdcstream.sources.postgres.checks import run_checks as postgres_checks


async def _stream_check(cfg: Config) -> CheckResult:
    from aiobotocore.session import get_session
    from botocore.exceptions import BotoCoreError, ClientError

    t = cfg.target
    session = get_session()
    try:
        async with session.create_client("kinesis", region_name=t.region, endpoint_url=t.endpoint_url) as client:
            desc = (await client.describe_stream_summary(StreamName=t.stream_name))["StreamDescriptionSummary"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        fix = (
            f"aws kinesis create-stream --stream-name {t.stream_name} --region {t.region}"
            if code == "ResourceNotFoundException"
            else "grant kinesis:DescribeStreamSummary, kinesis:ListShards and kinesis:PutRecords on the stream"
        )
        return CheckResult("kinesis stream", False, f"{t.stream_name}: {code}", fix)
    except (BotoCoreError, OSError) as exc:
        return CheckResult("kinesis stream", False, f"{t.stream_name}: {exc}", "check endpoint_url/region/network")
    detail = (
        f"{t.stream_name}: {desc.get('StreamStatus')}, {desc.get('OpenShardCount')} open shard(s), "
        f"max record {desc.get('MaxRecordSizeInKiB', 1024)} KiB"
    )
    return CheckResult("kinesis stream", desc.get("StreamStatus") in ("ACTIVE", "UPDATING"), detail)


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
    source = await postgres_checks(cfg.source, rules.selects)
    results += source
    if source and source[0].ok:  # connected: the tables' columns can be read
        results += await _mapping_checks(cfg, rules)
    results.append(await _stream_check(cfg))
    return results


# Columns of every user table, with the key the source will report: the replica identity index with REPLICA
# IDENTITY USING INDEX, else the primary key (what the source reports as key columns).
_COLUMNS_SQL = """
SELECT n.nspname, c.relname, a.attname, t.typname, a.attnotnull,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND a.attnum = ANY(i.indkey::int2[])
               AND (i.indisreplident OR (i.indisprimary AND c.relreplident IN ('d', 'f'))))
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2, a.attnum
"""


async def postgres_tables(cfg: Config) -> list[TableInfo]:
    """Every user table's columns from the catalog, as the source would describe them."""
    import psycopg

    from cdcstream.sources.postgres.source import build_conninfo

    async with await psycopg.AsyncConnection.connect(
        build_conninfo(cfg.source, replication=False), autocommit=True
    ) as conn:
        rows: list[Any] = await (await conn.execute(_COLUMNS_SQL)).fetchall()
    tables: dict[tuple[str, str], list[Column]] = {}
    for schema, table, name, typname, notnull, is_key in rows:
        tables.setdefault((schema, table), []).append(Column(name, typname, 0, not notnull, bool(is_key)))
    return [TableInfo(s, t, tuple(cols)) for (s, t), cols in tables.items()]


async def mapping_errors(cfg: Config, rules: MappingRules) -> list[str]:
    """Schema-dependent mapping errors for the tables that exist now (the daemon runs this at start)."""
    return [p.error for p in preview(rules, cfg.target, cfg.task_id, await postgres_tables(cfg)) if p.error]


async def _mapping_checks(cfg: Config, rules: MappingRules) -> list[CheckResult]:
    """Per selected table: the rules that apply and one sample record; rules that match nothing."""
    try:
        tables = await postgres_tables(cfg)
    except Exception as exc:  # the connection checks above already reported why
        return [CheckResult("mapping preview", False, f"cannot read the tables' columns: {exc}")]
    out = []
    for p in preview(rules, cfg.target, cfg.task_id, tables):
        if p.error:
            out.append(CheckResult(f"mapping {p.table}", False, p.error, "fix the rule named above"))
        else:
            detail = "\n".join([*(f"  {r}" for r in p.rules), f"  partition key: {p.partition_key}", f"  {p.record}"])
            out.append(CheckResult(f"mapping {p.table}", True, "\n" + detail))
    for warning in unused_rules(rules, tables):
        # Not fatal (the table may be created later), but almost always a misspelt name.
        out.append(CheckResult("unused rule", True, f"warning: {warning}"))
    return out
