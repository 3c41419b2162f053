"""``cdcstream check``: everything the daemon needs, verified one by one with the fix for each failure."""

from __future__ import annotations

from cdcstream.config import Config
from cdcstream.errors import CdcstreamError
from cdcstream.mapping.rules import load_rules
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
        results.append(CheckResult("table mappings", True, rules.source))
    except CdcstreamError as exc:
        results.append(CheckResult("table mappings", False, str(exc), "fix the rule named above"))
        return results
    if cfg.source.engine == "mysql":
        from cdcstream.checkpoints.store import FileCheckpointStore
        from cdcstream.sources.mysql.checks import run_checks as mysql_checks

        try:
            checkpoint = FileCheckpointStore(cfg.resolve(cfg.checkpoint.state_dir), cfg.task_id).load()
        except CdcstreamError as exc:
            results.append(CheckResult("checkpoint", False, str(exc), "restore or delete the checkpoint file"))
            checkpoint = None
        results += await mysql_checks(cfg.source, rules.selects, checkpoint)
    else:
        results += await postgres_checks(cfg.source, rules.selects)
    results.append(await _stream_check(cfg))
    return results
