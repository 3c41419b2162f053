"""Which stored LSNs may position a PostgreSQL slot (sources/postgres/resume.py), as pure functions of what the
server says. The same cases against real servers are in tests/e2e/test_checkpoint_identity.py."""

from __future__ import annotations

from typing import Any

from cdcstream.sources.postgres.pgoutput import parse_lsn
from cdcstream.sources.postgres.resume import ServerState, resume_refusals, timeline_fork

SYSTEM = "7400000000000000001"
KNOWN = {"system_id": SYSTEM, "timeline": 1}
# What PostgreSQL 15 wrote into 00000003.history after two promotions (parent TLI, switch point, reason).
HISTORY_3 = '1\t0/3000158\tno recovery target specified\n\n2\t0/5000060\tat restore point "before"\n'


def refusals(lsn: str, known: dict[str, Any] = KNOWN, *, owned: bool = True, **server: Any) -> list[str]:
    state: dict[str, Any] = {
        "system_id": SYSTEM,
        "timeline": 1,
        "wal_end": parse_lsn("0/9000000"),
        "slot_confirmed": None,
    }
    found = resume_refusals(
        parse_lsn(lsn),
        known,
        ServerState(**(state | server)),
        owned=owned,
        slot="s",
        where="db:5432",
        adopt="cdcstream adopt-checkpoint --config c.toml",
    )
    return [f"{r.problem}. Fix: {r.fix}" for r in found]


def test_a_position_the_server_and_slot_confirm_is_accepted() -> None:
    assert refusals("0/5000000", slot_confirmed=parse_lsn("0/5000000")) == []
    assert refusals("0/5000000", slot_confirmed=parse_lsn("0/4000000")) == []  # crash before the confirm
    assert refusals("0/5000000", {}, slot_confirmed=None) == []  # no identity stored, no slot row: nothing to hold


def test_another_cluster_is_refused_and_nothing_else_is_compared() -> None:
    (text,) = refusals("0/F000000", {"system_id": "1", "timeline": 1}, slot_confirmed=parse_lsn("0/1"))
    assert f"database system {SYSTEM}" in text and "written for system 1" in text and "different cluster" in text


def test_an_lsn_ahead_of_the_servers_wal_is_refused() -> None:
    (text,) = refusals("1/0", slot_confirmed=parse_lsn("0/5000000"))
    assert "1/0 is ahead of the WAL" in text and "ends at 0/9000000" in text and "restored" in text


def test_a_slot_moved_past_the_checkpoint_is_refused() -> None:
    """Dropped and re-created under the same name (a new slot starts at the WAL end), advanced, or shared."""
    (text,) = refusals("0/5000000", slot_confirmed=parse_lsn("0/6000000"))
    assert "slot 's' has confirmed LSN 0/6000000, past the checkpoint's 0/5000000" in text
    assert "re-created" in text and "move the checkpoint file away" in text


def test_a_legacy_file_moves_the_slot_only_when_it_equals_the_confirmed_lsn() -> None:
    assert refusals("0/5000000", owned=False, slot_confirmed=parse_lsn("0/5000000")) == []
    (text,) = refusals("0/5000000", owned=False, slot_confirmed=parse_lsn("0/4000000"))
    assert "does not record which task and slot" in text and "cdcstream adopt-checkpoint" in text
    assert "move the checkpoint file away" in text


def test_timeline_history_gives_the_branch_points() -> None:
    assert timeline_fork(HISTORY_3, 1) == parse_lsn("0/3000158")
    assert timeline_fork(HISTORY_3, 2) == parse_lsn("0/5000060")
    assert timeline_fork(HISTORY_3, 4) is None and timeline_fork("", 1) is None


def test_a_new_timeline_is_accepted_up_to_its_branch_point_and_refused_past_it() -> None:
    """Failover or point-in-time restore: positions up to where the server's history left the checkpoint's
    timeline are in both histories; past it, the stream holds changes this server never had."""
    on_3: dict[str, Any] = {"timeline": 3, "history": HISTORY_3, "slot_confirmed": parse_lsn("0/2000000")}
    assert refusals("0/3000158", **on_3) == []
    assert refusals("0/5000060", {"system_id": SYSTEM, "timeline": 2}, **on_3) == []
    (text,) = refusals("0/3000200", **on_3)
    assert "past 0/3000158, where timeline 3" in text and "left timeline 1" in text and "did not survive" in text


def test_a_timeline_not_in_the_servers_history_is_refused() -> None:
    """The old primary after a failover (an older timeline), or another branch restored from a backup."""
    (older,) = refusals("0/3000000", {"system_id": SYSTEM, "timeline": 3}, timeline=2, history="1\t0/1\tx\n")
    assert "timeline 3 of the checkpoint" in older and "not in its history" in older
    (branch,) = refusals("0/3000000", {"system_id": SYSTEM, "timeline": 2}, timeline=3, history="1\t0/1\tx\n")
    assert "timeline 2 of the checkpoint" in branch
