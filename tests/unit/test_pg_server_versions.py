"""What the PostgreSQL source says to each server version (pure functions; the same against real servers of
every version: ``make pg-versions``)."""

from __future__ import annotations

from cdcstream.sources.postgres.publication import generated_columns_problem, publication_sql
from cdcstream.sources.postgres.replication import create_slot_command
from cdcstream.sources.postgres.setup import version_problem
from cdcstream.sources.postgres.slot import invalidated, slot_sql


def test_slot_creation_uses_the_syntax_the_server_reads() -> None:
    # 14 rejects the parenthesised options with a syntax error; 15+ read both forms.
    assert create_slot_command("s", server_version=140023, export=True) == (
        'CREATE_REPLICATION_SLOT "s" LOGICAL pgoutput EXPORT_SNAPSHOT'
    )
    assert (
        create_slot_command("s", server_version=140023)
        == 'CREATE_REPLICATION_SLOT "s" LOGICAL pgoutput NOEXPORT_SNAPSHOT'
    )
    assert create_slot_command("s", server_version=150010, temporary=True, export=True) == (
        "CREATE_REPLICATION_SLOT \"s\" TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"
    )
    assert create_slot_command('a"b', server_version=180004) == (
        'CREATE_REPLICATION_SLOT "a""b" LOGICAL pgoutput (SNAPSHOT \'nothing\')'
    )


def test_an_invalidated_slot_says_why_and_how_to_prevent_it() -> None:
    idle = invalidated("s", "lost", "idle_timeout")
    assert idle is not None
    assert "invalidation_reason 'idle_timeout'" in str(idle) and "idle_replication_slot_timeout" in str(idle)
    assert "pg_drop_replication_slot('s')" in str(idle) and "full load" in str(idle)
    # Before 17 only wal_status tells: WAL removed past max_slot_wal_keep_size.
    old = invalidated("s", "lost", None)
    assert old is not None and "wal_status 'lost'" in str(old) and "max_slot_wal_keep_size" in str(old)
    assert "rows_removed" in str(invalidated("s", None, "rows_removed"))
    assert "'something_new'" in str(invalidated("s", None, "something_new"))
    assert invalidated("s", "reserved", None) is None and invalidated("s", "unreserved", None) is None


def test_slot_query_reads_invalidation_reason_from_17() -> None:
    assert "invalidation_reason" in slot_sql(170000) and "invalidation_reason" not in slot_sql(160010)
    assert slot_sql(150000, "active").count(",") == 5


def test_generated_columns_need_18_and_a_publication_that_sends_them() -> None:
    assert generated_columns_problem("p", False, 140000, "14.23", None) is None
    too_old = generated_columns_problem("p", True, 170010, "17.10", None)
    assert too_old is not None and "PostgreSQL 17.10" in too_old[0] and "false" in too_old[1]
    assert generated_columns_problem("p", True, 180004, "18.4", None) is None  # created with them
    assert generated_columns_problem("p", True, 180004, "18.4", True) is None
    missing = generated_columns_problem("p", True, 180004, "18.4", False)
    assert missing is not None and missing[1].endswith(
        'ALTER PUBLICATION "p" SET (publish_generated_columns = stored);'
    )
    assert publication_sql("p", None, generated=True) == (
        'CREATE PUBLICATION "p" FOR ALL TABLES WITH (publish_via_partition_root = true, '
        "publish_generated_columns = stored);"
    )
    assert "generated" not in publication_sql("p", [("public", "t")])


def test_servers_before_14_are_refused_with_the_reason() -> None:
    assert version_problem(140000, "14.0") is None and version_problem(180004, "18.4") is None
    problem = version_problem(130022, "13.22")
    assert problem is not None and "PostgreSQL 14 or newer" in problem and "13.22" in problem
