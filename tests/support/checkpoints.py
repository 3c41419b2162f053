"""A checkpoint as the test that reads it knows it: the store and the pipeline pass either engine's
(:data:`cdcstream.checkpoints.model.Checkpoint`), while a test knows which engine wrote the one it holds."""

from __future__ import annotations

from typing import cast

from cdcstream.checkpoints.model import Checkpoint, MySQLCheckpoint, PgCheckpoint


def pg(checkpoint: Checkpoint | None) -> PgCheckpoint:
    """``checkpoint``, which a PostgreSQL source wrote (and which exists)."""
    assert checkpoint is not None, "no checkpoint"
    return cast(PgCheckpoint, checkpoint)


def mysql(checkpoint: Checkpoint | None) -> MySQLCheckpoint:
    """``checkpoint``, which a MySQL/MariaDB source wrote (and which exists)."""
    assert checkpoint is not None, "no checkpoint"
    return cast(MySQLCheckpoint, checkpoint)
