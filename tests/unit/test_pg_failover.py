"""The PostgreSQL failover decisions that need no server: the slot creation's FAILOVER option per version, the
multi-host config passed to libpq, decoding on a standby per version, the stall watch, and what ``check`` says of
the slot on each other server of a host list."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from cdcstream.config import PostgresSourceConfig
from cdcstream.sources.postgres import failover
from cdcstream.sources.postgres.connection import build_conninfo
from cdcstream.sources.postgres.failover import ProgressWatch, standby_problem, wants_failover_slot
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
