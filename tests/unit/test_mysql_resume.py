"""Which checkpoints may be resumed from after a failover (sources/mysql/resume.py), as functions of what the
server says. MariaDB's side runs against real servers in tests/e2e/test_mysql_failover.py; MySQL 8's (the GTID
containment the server computes with ``GTID_SUBTRACT``) cannot run here: the server's answers are given."""

from __future__ import annotations

from typing import Any

from cdcstream.checkpoints.model import MySQLCheckpoint
from cdcstream.sources.mysql.resume import IDENTITY_CHECK, POSITION_CHECK, ServerInfo, inspect_resume, resume_refusals

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "6f1c2a80-0d3e-11ef-8c61-0242ac120002"


class Answers:
    """A cursor that gives the server's answers to ``inspect_resume``'s queries, in order."""

    def __init__(self, *rows: tuple[Any, ...]) -> None:
        self.rows = list(rows)
        self.queries: list[str] = []

    def execute(self, query: str, params: Any = None) -> None:
        self.queries.append(query)

    def fetchone(self) -> tuple[Any, ...]:
        return self.rows.pop(0)


def mariadb(server_id: int, state: str) -> ServerInfo:
    variables = {"server_id": str(server_id), "gtid_binlog_state": state, "gtid_domain_id": "0"}
    return ServerInfo("10.11.6-MariaDB", variables, [("mariadb-bin.000001", 5000)])


def mysql8(uuid: str, executed: str) -> ServerInfo:
    variables = {"server_id": "2", "server_uuid": uuid, "gtid_mode": "ON", "gtid_executed": executed}
    return ServerInfo("8.4.3", variables, [("binlog.000001", 5000)])


def refused(info: ServerInfo, known: MySQLCheckpoint, *, use_gtid: bool) -> list[tuple[str, str]]:
    found = resume_refusals(
        info, str(known["file"]), int(known["pos"]), known.get("gtid"), known, use_gtid=use_gtid, where="new:3306"
    )
    return [(r.check, f"{r.problem}. Fix: {r.fix}") for r in found]


OLD_PRIMARY: MySQLCheckpoint = {"file": "mariadb-bin.000007", "pos": 1187, "gtid": "0-1-42", "server_id": 1}


def test_mariadb_promoted_replica_with_the_checkpoints_transactions_resumes_by_gtid() -> None:
    # The replica applied 0-1-1..0-1-45 (log_slave_updates) and wrote 0-2-46.. since its promotion.
    info = mariadb(2, "0-1-45,0-2-60")
    inspect_resume(Answers(("",)), info, "mariadb-bin.000007", 1187, "0-1-42", at_position=True)
    assert refused(info, OLD_PRIMARY, use_gtid=True) == []


def test_mariadb_promoted_replica_that_lacks_a_checkpointed_transaction_is_refused() -> None:
    info = mariadb(2, "0-1-41,0-2-50")  # 0-1-42 never reached it: gone with the old primary, but streamed
    inspect_resume(Answers(("",)), info, "mariadb-bin.000007", 1187, "0-1-42", at_position=True)
    [(check, text)] = refused(info, OLD_PRIMARY, use_gtid=True)
    assert check == POSITION_CHECK
    assert "written for server_id 1" in text and "it is server_id 2" in text and "binlog: 0-1-42 (" in text
    assert "the stream holds changes this database does not have" in text and "log_slave_updates" in text
    assert "full load" in text


def test_mariadb_replica_without_log_slave_updates_is_refused() -> None:
    info = mariadb(2, "0-2-3")  # its binlog holds only its own writes, not the replicated 0-1-*
    inspect_resume(Answers(("",)), info, "mariadb-bin.000007", 1187, "0-1-42", at_position=True)
    assert [check for check, _ in refused(info, OLD_PRIMARY, use_gtid=True)] == [POSITION_CHECK]


def test_mariadb_purged_after_the_checkpoint_on_the_new_server_is_refused() -> None:
    info = mariadb(2, "0-1-45,0-2-60")
    # Its oldest binlog starts after 0-1-44: 0-1-43 and 0-1-44 are gone.
    inspect_resume(Answers(("0-1-44",)), info, "mariadb-bin.000007", 1187, "0-1-42", at_position=True)
    [(check, text)] = refused(info, OLD_PRIMARY, use_gtid=True)
    assert check == POSITION_CHECK and "purged" in text


def test_a_file_position_of_another_server_is_refused_naming_both_and_the_ways_on() -> None:
    info = mariadb(2, "0-1-45")
    [(check, text)] = refused(info, OLD_PRIMARY, use_gtid=False)
    assert check == IDENTITY_CHECK
    assert "is server_id 2, but the checkpoint was written for server_id 1" in text
    assert "mariadb-bin.000007:1187" in text and "resume by GTID (gtid_mode = 'auto'" in text and "0-1-42" in text
    assert "full load" in text


def test_mysql8_failover_by_gtid_executed() -> None:
    known: MySQLCheckpoint = {
        "file": "binlog.000003",
        "pos": 900,
        "gtid": f"{UUID_A}:1-42",
        "server_id": 1,
        "server_uuid": UUID_A,
    }
    # Contained: GTID_SUBTRACT(checkpoint, gtid_executed) is empty, nothing purged unread.
    info = mysql8(UUID_B, f"{UUID_A}:1-45,{UUID_B}:1-3")
    cur = Answers(("", "", ""))
    inspect_resume(cur, info, "binlog.000003", 900, known["gtid"], at_position=True)
    assert "GTID_SUBTRACT(%s, @@GLOBAL.gtid_executed)" in cur.queries[0]
    assert refused(info, known, use_gtid=True) == []
    # The new server lacks 42: what the server computes is refused, naming it.
    info = mysql8(UUID_B, f"{UUID_A}:1-41,{UUID_B}:1-3")
    inspect_resume(Answers(("", "", f"{UUID_A}:42")), info, "binlog.000003", 900, known["gtid"], at_position=True)
    [(check, text)] = refused(info, known, use_gtid=True)
    assert check == POSITION_CHECK and f"{UUID_A}:42" in text and f"server_uuid {UUID_B}" in text
    # By file/position: refused by identity, the uuids telling the servers apart.
    [(check, text)] = refused(mysql8(UUID_B, ""), known, use_gtid=False)
    assert check == IDENTITY_CHECK and UUID_A in text and UUID_B in text
