"""The PostgreSQL failover decisions that need no server: the slot creation's FAILOVER option per version, the
multi-host config passed to libpq, decoding on a standby per version, the stall watch, and what ``check`` says of
the slot on each other server of a host list."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from prometheus_client import REGISTRY
from psycopg.conninfo import conninfo_to_dict

from cdcstream.config import PostgresSourceConfig
from cdcstream.sources.postgres import failover
from cdcstream.sources.postgres.connection import build_conninfo
from cdcstream.sources.postgres.failover import (
    ProgressWatch,
    standby_problem,
    standby_slot_ready,
    wants_failover_slot,
    watch_standby_slots,
)
from cdcstream.sources.postgres.replication import create_slot_command


def test_a_failover_slot_is_asked_for_on_17_and_newer_only() -> None:
    assert create_slot_command("s", server_version=170010, failover=True) == (
        "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER true)"
    )
    assert create_slot_command("s", server_version=180004, export=True, failover=True).endswith(
        "(SNAPSHOT 'export', FAILOVER true)"
    )
    # Before 17 there is no such option; a temporary slot (reload --table) cannot be one.
    assert "FAILOVER" not in create_slot_command("s", server_version=160014, failover=True)
    assert "FAILOVER" not in create_slot_command("s", server_version=140023, failover=True)
    assert "FAILOVER" not in create_slot_command("s", server_version=170010, temporary=True, failover=True)


def _cfg(**values: object) -> PostgresSourceConfig:
    return PostgresSourceConfig(database="app", **values)  # type: ignore[arg-type]


def test_failover_slots_only_on_a_17_primary_when_configured() -> None:
    assert wants_failover_slot(_cfg(), 170010, False)
    assert not wants_failover_slot(_cfg(), 170010, True)  # a standby refuses FAILOVER
    assert not wants_failover_slot(_cfg(), 160014, False)
    assert not wants_failover_slot(_cfg(failover=False), 180004, False)


def test_multi_host_and_target_session_attrs_reach_libpq() -> None:
    cfg = _cfg(host="a.internal,b.internal", port="5432,5433", target_session_attrs="read-write")
    params = conninfo_to_dict(build_conninfo(cfg, replication=True))
    assert params["host"] == "a.internal,b.internal" and params["port"] == "5432,5433"
    assert params["target_session_attrs"] == "read-write" and params["replication"] == "database"
    assert "target_session_attrs" not in conninfo_to_dict(build_conninfo(_cfg(), replication=False))
    assert _cfg(host="a,b", port=5432).port == 5432  # one port for every host


@pytest.mark.parametrize("port", ["5432,x", "5432,5433,5434", "0", "70000"])
def test_a_port_list_must_fit_the_hosts(port: str) -> None:
    with pytest.raises(ValueError, match="port"):
        _cfg(host="a,b", port=port)


def test_decoding_on_a_standby_needs_16() -> None:
    assert standby_problem(150010, True) is not None and "PostgreSQL 16" in str(standby_problem(150010, True))
    assert standby_problem(160014, True) is None
    assert standby_problem(150010, False) is None


def test_a_stall_is_nothing_received_while_the_server_moves_on() -> None:
    watch = ProgressWatch()
    assert watch.observe(100, 200, True, 0.0) == 0  # first look
    assert watch.observe(100, 300, True, 5.0) == 5.0  # nothing received, the WAL grew
    assert watch.observe(100, 300, True, 9.0) == 9.0
    assert watch.observe(150, 300, True, 10.0) == 0  # received something: moving
    assert watch.observe(150, 300, True, 12.0) == 2.0
    assert watch.observe(150, 300, False, 13.0) == 0  # not connected: the reconnect logic's business
    assert watch.observe(300, 300, True, 20.0) == 0
    assert watch.observe(300, 300, True, 60.0) == 0  # idle: caught up with the server


@pytest.mark.parametrize(
    ("found", "ok_line", "words", "fix"),
    [
        # (synced, temporary, failover) as the standby's pg_replication_slots answers
        ((True, (True, False, True)), True, "synced and sync-ready", ""),
        ((True, (True, True, True)), False, "not sync-ready yet (temporary): it is dropped if this standby is", "wait"),
        ((True, (False, False, True)), False, "not synced", "wait"),
        ((True, None), False, "standby without slot s1: a promotion of it ends capture (exit 3)", "sync_replication"),
        ((True, "before 17"), False, "before PostgreSQL 17: no slot synchronisation", ""),
        ((False, None), True, "primary", ""),
        ("connection refused", False, "not reachable: connection refused", ""),
    ],
)
def test_check_names_the_slot_state_on_each_other_server(
    monkeypatch: pytest.MonkeyPatch, found: Any, ok_line: bool, words: str, fix: str
) -> None:
    """A slot that is not yet sync-ready on a standby is dropped when that standby is promoted: ``check`` must
    say so (a warning with the fix), as it says when the slot is safe there (docs/postgresql.md, "Failover")."""

    async def other_server(_cfg: PostgresSourceConfig, _host: str, _port: str) -> Any:
        return found

    monkeypatch.setattr(failover, "_other_server", other_server)
    result = asyncio.run(failover._standby_check(_cfg(host="a,b", slot_name="s1"), "b", "5433"))
    assert result.name == "server b:5433" and result.ok  # never a failure: capture works until a promotion
    assert words in result.detail, result.detail
    assert result.warning is not ok_line
    assert fix in result.fix


def test_a_standby_is_ready_only_with_the_slot_synced_and_not_temporary() -> None:
    assert standby_slot_ready((True, (True, False, True))) is True
    assert standby_slot_ready((True, (True, True, True))) is False  # dropped at a promotion now
    assert standby_slot_ready((True, (False, False, True))) is False
    assert standby_slot_ready((True, None)) is False  # no slot there
    assert standby_slot_ready((True, "before 17")) is False
    assert standby_slot_ready((False, None)) is None  # the primary
    assert standby_slot_ready("connection refused") is None  # not reached: nothing known


def test_the_standby_slot_gauge_follows_each_standby_and_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cdcstream_source_standby_slot_ready`` per standby of the host list: 0 with one warning while a
    promotion of it would end capture, 1 once it holds the slot sync-ready; no series for the primary, and
    none left when the watch ends."""
    # b's answers, one per round; the last one stays (the primary "a" answers as a primary every round)
    rounds = [(True, (True, True, True)), (True, (True, True, True)), (True, (True, False, True))]
    asked: list[str] = []

    async def other_server(_cfg: PostgresSourceConfig, host: str, _port: str) -> Any:
        asked.append(host)
        return (False, None) if host == "a" else rounds[min(asked.count("b"), len(rounds)) - 1]

    def value(server: str) -> float | None:
        labels = {"source": "postgres:app", "server": server}
        return REGISTRY.get_sample_value("cdcstream_source_standby_slot_ready", labels)

    seen: dict[int, tuple[float | None, float | None]] = {}

    async def run() -> None:
        cfg = _cfg(host="a,b", slot_name="s1")
        task = asyncio.create_task(watch_standby_slots(cfg, interval=0.01, label="postgres:app", log=log))
        while asked.count("b") < len(rounds) + 2:
            await asyncio.sleep(0.002)
            seen[asked.count("b")] = (value("a:5432"), value("b:5432"))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    monkeypatch.setattr(failover, "_other_server", other_server)
    with structlog.testing.capture_logs() as logs:
        log = structlog.get_logger()
        asyncio.run(run())
    assert {a for a, _ in seen.values()} == {None}  # never a series for the primary
    assert seen[1][1] == 0.0 and seen[2][1] == 0.0 and seen[len(rounds) + 1][1] == 1.0
    events = [e["event"] for e in logs]
    assert events.count("standby does not hold the failover slot sync-ready: a promotion of it now ends capture") == 1
    assert events.count("standby holds the failover slot sync-ready") == 1
    assert value("b:5432") is None  # removed when the watch ends
