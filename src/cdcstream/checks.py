"""``cdcstream check``: everything the daemon needs, verified one by one with the fix for each failure."""

from __future__ import annotations

from cdcstream.config import Config
from cdcstream.errors import CdcstreamError
from cdcstream.mapping.rules import load_rules
from cdcstream.sources.postgres.checks import CheckResult
from cdcstream.sources.postgres.checks import run_checks as postgres_checks

PERMISSION_CODES = ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "UnrecognizedClientException")


async def _stream_checks(cfg: Config) -> list[CheckResult]:
    """The stream exists and is writable, and each permission the daemon uses is proven with a harmless call:
    DescribeStreamSummary, ListShards, and PutRecords with no records (authorisation is checked before the
    request is validated, so a ValidationException proves the permission without writing anything)."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session
    from botocore.exceptions import BotoCoreError, ClientError

    t = cfg.target
    grant = 'grant it on the stream (README, "Kinesis permissions")'
    session = get_session()
    results: list[CheckResult] = []
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
                    fix = f"aws kinesis create-stream --stream-name {t.stream_name} --region {t.region}"
                    return [CheckResult("kinesis stream", False, f"{t.stream_name}: does not exist", fix)]
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
        return [CheckResult("kinesis stream", False, f"{t.stream_name}: {exc}", "check endpoint_url/region/network")]
    return results


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
    results += await _stream_checks(cfg)
    return results
