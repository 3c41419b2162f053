"""The durable checkpoint: one small JSON file in the state directory, owned by one task and locked while it runs.

Written with write-temp + fsync + rename + fsync(directory), so a crash at any instant leaves either the old or
the new checkpoint, never a torn one. The file carries a SHA-256 of its content: a corrupt or truncated file is
refused with a clear error instead of being guessed at (starting from the wrong place would lose or replay data).

A position means something only for what it was read from and written to, so the file also records its
*owner* (:func:`task_owner`: the engine, the PostgreSQL database and slot, the target stream) and a file owned by
anything else is refused (docs/delivery-guarantees.md). Files written before the owner was recorded ("legacy") load
with :attr:`FileCheckpointStore.owned` False; the source then adopts them only when the server proves they fit.
The server identity (system identifier, MySQL server id) lives in the checkpoint itself and is checked by the
source, which can ask the server.

While a daemon runs it holds an ``flock`` on ``<name>.checkpoint.lock`` (:meth:`FileCheckpointStore.lock`): a
second daemon with the same ``task_id`` and ``state_dir`` (the same config started twice, or a copy with another
slot) stops at once instead of interleaving its positions with the first one's. The kernel drops the lock when
the process dies, however it dies, so a stale lock can never block a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson

from cdcstream.checkpoints.model import Checkpoint, Owner
from cdcstream.errors import CheckpointError

if TYPE_CHECKING:
    from cdcstream.config import Config

FORMAT_VERSION = 1
#: Mode of the state directory (and of directories created above it): checkpoints, dead letters and the lock
#: are nobody else's business, whatever the umask.
DIR_MODE = 0o700


def task_owner(cfg: Config) -> Owner:
    """What a task's checkpoint belongs to, from its config: ``engine``, for PostgreSQL ``database`` and
    ``slot``, and the target ``stream`` and ``region``. (The server's identity is not config: the source records
    and checks it inside the checkpoint. A MySQL binlog position belongs to the server, not to our replica
    ``server_id``, which may change freely.)"""
    owner: Owner = {"engine": cfg.source.engine}
    if cfg.source.engine == "postgres":
        owner |= {"database": cfg.source.database, "slot": cfg.source.slot_name}
    return owner | {"stream": cfg.target.stream_name, "region": cfg.target.region}


def adopt_command(cfg: Config) -> str:
    """The command that makes this task the owner of its checkpoint file (quoted in refusals)."""
    return f"cdcstream adopt-checkpoint --config {cfg.config_path or '<config file>'}"


def describe_owner(owner: Owner) -> str:
    return ", ".join(f"{key} {value!r}" for key, value in owner.items())


def make_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700 (a permissive umask must not make the state
    directory, or a parent we create, writable by others); an existing directory is left as it is."""
    missing: list[Path] = []
    p = path
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile (another process): not ours to change
        os.chmod(directory, DIR_MODE)  # mkdir's mode is masked by the umask; chmod's is not


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
    make_private_dir(path.parent)
    _write_fsync(path, data, os.O_APPEND)


class FileCheckpointStore:
    """Reads and atomically replaces ``<state_dir>/<name>.checkpoint.json``, written for ``owner``.

    ``owner`` None writes no owner and checks none (the format of versions before it was recorded; tools and
    tests use it to write such files)."""

    def __init__(self, state_dir: str | Path, name: str, owner: Owner | None = None) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / f"{name}.checkpoint.json"
        self.lock_path = self.dir / f"{name}.checkpoint.lock"
        self.owner = owner
        #: The command that adopts a checkpoint written for another owner (with the config file, if known).
        self.adopt_command = "cdcstream adopt-checkpoint --config <config file>"
        #: After :meth:`load`: whether the file recorded this store's owner (False: no file, or a legacy file).
        self.owned = False
        self._lock_fd: int | None = None

    @classmethod
    def for_task(cls, cfg: Config) -> FileCheckpointStore:
        """The store of the task ``cfg`` describes (every command reading the checkpoint uses this)."""
        store = cls(cfg.resolve(cfg.checkpoint.state_dir), cfg.task_id, task_owner(cfg))
        store.adopt_command = adopt_command(cfg)
        return store

    def read(self) -> tuple[Checkpoint, Owner | None] | None:
        """The stored checkpoint and the owner it was written for (None: a legacy file), or None when there is
        no file. Integrity is checked, ownership is not (see :meth:`load`)."""
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
        checkpoint, owner = body.get("checkpoint"), body.get("owner")
        if not isinstance(checkpoint, dict) or not isinstance(owner, dict | None):
            raise CheckpointError(f"{self.path}: checkpoint file has no checkpoint object")
        # Its fields are the source's to check (checkpoints/model.py): the position may be of any version.
        return cast(Checkpoint, checkpoint), cast(Owner | None, owner)

    def ownership_problem(self, stored: Owner | None) -> str | None:
        """Why a file written for ``stored`` is not this store's (with the fix), or None when it is (or when
        either side records no owner: a legacy file is the source's to judge)."""
        if self.owner is None or stored is None:
            return None
        differ = [
            f"{key} {stored.get(key, '(not recorded)')!r} (this config: {value!r})"
            for key, value in self.owner.items()
            if stored.get(key) != value
        ]
        if not differ:
            return None
        return (
            f"{self.path} was written for another task: {'; '.join(differ)}. Resuming from another task's position "
            "would skip or repeat its changes, so cdcstream refuses. If two tasks share this file (a copied config "
            "with the same task_id and state_dir), give each its own task_id or state_dir: a PostgreSQL task "
            "without a checkpoint resumes from its slot's confirmed_flush_lsn. If you changed these settings on "
            f"purpose and this position is right for the new ones, run: {self.adopt_command}"
        )

    def load(self) -> Checkpoint | None:
        """The stored checkpoint, or None when there is none yet; refused when written for another owner."""
        stored = self.read()
        self.owned = False
        if stored is None:
            return None
        checkpoint, owner = stored
        problem = self.ownership_problem(owner)
        if problem is not None:
            raise CheckpointError(problem)
        self.owned = owner is not None and self.owner is not None
        return checkpoint

    def save(self, checkpoint: Checkpoint) -> None:
        """Atomically replace the stored checkpoint (durable when this returns)."""
        body: dict[str, Any] = {"version": FORMAT_VERSION, "checkpoint": checkpoint, "written_at": time.time()}
        if self.owner is not None:
            body["owner"] = self.owner
        data = orjson.dumps({"body": body, "sha256": _digest(body)}, option=orjson.OPT_INDENT_2)
        tmp = self.path.with_suffix(".tmp")
        try:
            make_private_dir(self.dir)
            _write_fsync(tmp, data, os.O_TRUNC)
            os.replace(tmp, self.path)
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot write checkpoint: {exc.strerror}") from None

    # --- one process at a time ---------------------------------------------------------------------------

    def lock(self) -> None:
        """Hold the task's lock until :meth:`unlock` or the process ends; refuse when another process has it."""
        try:
            make_private_dir(self.dir)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise CheckpointError(f"{self.lock_path}: cannot create the lock file: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CheckpointError(
                f"{self.lock_path}: another cdcstream process (pid {holder}) is running with the checkpoint "
                f"{self.path}; two daemons must never share a checkpoint. If this is a second task (a copied "
                "config), give it its own task_id or state_dir; if it is the same task, stop the other process "
                "first."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def adopt(self) -> tuple[Checkpoint, Owner | None]:
        """Re-write the stored checkpoint as this store's (``cdcstream adopt-checkpoint``): the position and
        everything else in it are kept, only the owner changes. Returns the checkpoint and its former owner.
        The caller holds the lock. Refused across engines (the position would not even parse)."""
        stored = self.read()
        if stored is None:
            raise CheckpointError(f"{self.path}: no checkpoint file to adopt")
        checkpoint, owner = stored
        assert self.owner is not None
        if owner is not None and owner.get("engine") != self.owner["engine"]:
            raise CheckpointError(
                f"{self.path} holds a {owner.get('engine')} position; this config's source is "
                f"{self.owner['engine']}: it cannot be adopted. Give this task its own task_id or state_dir."
            )
        self.save(checkpoint)
        return checkpoint, owner
