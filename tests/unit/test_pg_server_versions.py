"""What the PostgreSQL source says to each server version (pure functions; the same against real servers of
every version: ``make pg-versions``)."""

from __future__ import annotations

from cdcstream.sources.postgres.replication import create_slot_command


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
