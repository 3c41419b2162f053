"""The durable checkpoint: one small JSON file in the state directory.

Written with write-temp + fsync + rename + fsync(directory), so a crash at any instant leaves either the old or
the new checkpoint, never a torn one. The file carries a SHA-256 of its content: a corrupt or truncated file is
refused with a clear error instead of being guessed at (starting from the wrong place would lose or replay data).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import orjson

from cdcstream.errors import CheckpointError

FORMAT_VERSION = 1


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _write_fsync(path: Path, data: bytes, flags: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def append_durably(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` and fsync it (the dead-letter file: durable before anything after the
    diverted record may be checkpointed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_fsync(path, data, os.O_APPEND)


class FileCheckpointStore:
    """Reads and atomically replaces ``<state_dir>/<name>.checkpoint.json``."""

    def __init__(self, state_dir: str | Path, name: str) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / f"{name}.checkpoint.json"

    def load(self) -> dict[str, Any] | None:
        """The stored checkpoint, or None when there is none yet."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot read checkpoint: {exc.strerror}") from None
        try:
            doc = orjson.loads(raw)
            body, digest = doc["body"], doc["sha256"]
            if not isinstance(body, dict) or body.get("version") != FORMAT_VERSION:
                raise ValueError("unknown format version")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.path}: checkpoint file is corrupt or truncated ({exc}); refusing to guess a position. "
                "Restore it from a backup, or move it away to start from the source's own position "
                "(for PostgreSQL: the slot's confirmed_flush_lsn) and accept that the gap is not verified."
            ) from None
        if _digest(body) != digest:
            raise CheckpointError(
                f"{self.path}: checkpoint checksum mismatch (file was modified or damaged); refusing to guess a "
                "position. Restore it, or move it away to start from the source's own position."
            )
        checkpoint = body.get("checkpoint")
        if not isinstance(checkpoint, dict):
            raise CheckpointError(f"{self.path}: checkpoint file has no checkpoint object")
        return checkpoint

    def save(self, checkpoint: dict[str, Any]) -> None:
        """Atomically replace the stored checkpoint (durable when this returns)."""
        body = {"version": FORMAT_VERSION, "checkpoint": checkpoint, "written_at": time.time()}
        data = orjson.dumps({"body": body, "sha256": _digest(body)}, option=orjson.OPT_INDENT_2)
        tmp = self.path.with_suffix(".tmp")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            _write_fsync(tmp, data, os.O_TRUNC)
            os.replace(tmp, self.path)
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot write checkpoint: {exc.strerror}") from None
