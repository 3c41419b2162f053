"""Builds, from the configuration, the parts a :class:`~cdcstream.pipeline.Pipeline` runs: the mapper, the source
engine, the Kinesis sink, the checkpoint store, the mapping worker pool and the stop deadline.

The only module that picks engines by name; the pipeline knows its parts by their protocols alone, so tests
run it in process with fakes (tests/unit/test_pipeline.py).
"""

from __future__ import annotations

from typing import Any

import structlog

from cdcstream.changes import TableInfo
from cdcstream.checkpoints.store import FileCheckpointStore, adopt_command
from cdcstream.config import Config
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import load_rules
from cdcstream.mapping.rules import MappingRules
from cdcstream.pipeline import Parts
from cdcstream.runtime.signals import EXIT_INTERRUPTED
from cdcstream.runtime.stopping import Deadline
from cdcstream.sinks import AckCallback, Sink
from cdcstream.sources import Source
from cdcstream.sources.fullload import KeyRanges, KeyRangesOf
from cdcstream.telemetry import metrics
from cdcstream.workers.cdc import CdcWorkers
from cdcstream.workers.pool import MappingPool, default_processes

log = structlog.get_logger(__name__)

#: Seconds a stop may take beyond ``[target] drain_timeout`` (cancelling the stages, the last checkpoint,
#: closing connections and worker processes) before the stop deadline ends the process (runtime/stopping.py).
STOP_GRACE = 10.0


def build_parts(cfg: Config) -> Parts:
    """Every part of the task ``cfg`` describes (nothing connects yet: the pipeline starts them)."""
    metrics.configure(table_label=cfg.http.metrics_table_label)  # before the source is built
    rules = load_rules(cfg.resolve(cfg.table_mappings) if cfg.table_mappings else None)
    mapper = Mapper(rules, cfg.target, cfg.task_id)
    processes = cfg.full_load.processes
    if processes == "auto":
        processes = default_processes()
    # Its workers start at the first load chunk (a full load, or reload --table while CDC runs).
    pool = MappingPool(cfg, mapper, processes) if processes else None
    cdc = cdc_workers(cfg, mapper)

    def sink(on_ack: AckCallback) -> Sink:
        from cdcstream.sinks.kinesis import KinesisSink

        return KinesisSink(cfg.target, on_ack)

    async def tables() -> list[TableInfo]:
        from cdcstream.checks import source_tables

        return await source_tables(cfg)

    return Parts(
        mapper=mapper,
        source=build_source(cfg, mapper, pool, runs=cdc is None),
        sink=sink,
        store=FileCheckpointStore.for_task(cfg),
        label=source_label(cfg),
        # The bound on every stop (docs/operations.md, "Stopping"): drain_timeout to deliver, STOP_GRACE to close.
        deadline=Deadline(cfg.target.drain_timeout + STOP_GRACE, EXIT_INTERRUPTED),
        tables=tables,
        pool=pool,
        cdc=cdc,
    )


def cdc_workers(cfg: Config, mapper: Mapper) -> CdcWorkers | None:
    """The CDC mapping worker processes ``[cdc] processes`` asks for (None: changes are mapped in the event loop).
    Their workers start at the first change to map."""
    # "auto" maps in process for now, on every host: handing a change to a worker costs the event loop about as
    # much as mapping it with the default mapping (bench/README.md, "CDC mapping in worker processes").
    processes = 0 if cfg.cdc.processes == "auto" else cfg.cdc.processes
    if processes and cfg.target.include_transaction_details:
        # prev-transaction-id chains each record to the previous one, which a worker seeing some batches lacks.
        log.info(
            "CDC is mapped in the daemon's process: include_transaction_details chains every record to the one before",
            cdc_processes=cfg.cdc.processes,
        )
        return None
    return CdcWorkers(cfg, mapper, processes) if processes else None


def build_source(cfg: Config, mapper: Mapper, pool: MappingPool | None = None, runs: bool = False) -> Source:
    """The configured source engine (handing full-load chunks to ``pool``, if any). ``runs``: the changes are
    mapped in process, so a PostgreSQL source may hand compiled rows over as runs (changes.FusedRows)."""
    common: dict[str, Any] = {
        "selector": mapper.selects,
        "no_hex_prefix": cfg.target.no_hex_prefix,
        "migration_type": cfg.migration_type,
        "full_load": cfg.full_load,
        "key_ranges": key_ranges(mapper.rules),
        "offload": pool.map if pool is not None else None,
        "fuse": mapper.fused_columns,
    }
    if cfg.source.engine == "mysql":
        from cdcstream.sources.mysql import MySQLSource

        return MySQLSource(cfg.source, **common)
    from cdcstream.sources.postgres import PostgresSource

    return PostgresSource(
        cfg.source,
        selection=mapper.rules.selection_regexes(),
        adopt_command=adopt_command(cfg),
        runs=runs,
        **common,
    )


def key_ranges(rules: MappingRules) -> KeyRangesOf:
    """The mapping's table-settings ``parallel-load`` ``ranges`` as the sources take them (other types: none)."""

    def of(schema: str, table: str) -> KeyRanges | None:
        rule = rules.parallel_load(schema, table)
        if rule is None or rule.type != "ranges":
            return None
        origin = str(rule.origin.at(".parallel-load.columns")) if rule.origin else "table-settings"
        return KeyRanges(rule.columns, rule.boundaries, origin)

    return of


def source_label(cfg: Config) -> str:
    """The source's label in metrics and logs."""
    if cfg.source.engine == "mysql":
        return f"mysql:{cfg.source.host}:{cfg.source.port}"
    return f"{cfg.source.engine}:{cfg.source.database}"
