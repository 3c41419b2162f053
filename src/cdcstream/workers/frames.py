"""Compact answers of the mapping worker processes: a chunk's records as one frame, Records built in C.

Why: with load rows rendered in compiled code (sources/postgres/fused.py) the daemon's event loop is the full
load's limit, and unpickling a worker's answer (three lists) and building a :class:`~cdcstream.records.Record`
per row through the dataclass's ``__init__`` cost it ~0.4 µs per row.

Design: the worker answers a chunk with :func:`encode` (``b"F"``, the table's label, then ``_frames.pack``: each
record's partition key, data and PutRecords entry with their lengths) instead of a pickle; the daemon turns it into
Records with :func:`decode` (``_frames.records``: each a copy of a prototype Record with the frame's key, data and
entry, so any other field has the value ``Record(key, data, label=label)`` gives it). Errors, stale chunks (None)
and every answer of a process without the extension, or with ``CDCSTREAM_PURE=1``, stay pickles (the pure
path). Both processes of one daemon decide alike (same installation, same environment), and the daemon reads both
kinds. tests/unit/test_frames.py holds the Records to those the pure path builds, field by field.
"""

from __future__ import annotations

from cdcstream import compiled
from cdcstream.records import Record

try:
    from cdcstream.workers import _frames
except ImportError:  # built without a compiler: pickled answers
    _frames = None  # type: ignore[assignment]

TAG = b"F"
"""The first byte of a frame answer (a pickle starts with its protocol's ``0x80``)."""


def available() -> bool:
    """Whether answers are frames: the extension is built and ``CDCSTREAM_PURE`` is not set."""
    return _frames is not None and not compiled.pure_requested()


def encode(keys: list[str], datas: list[bytes], entries: list[bytes], label: str) -> bytes:
    """A chunk's records as one answer frame (call only where :func:`available`)."""
    name = label.encode()
    return b"".join((TAG, len(name).to_bytes(2, "little"), name, _frames.pack(keys, datas, entries)))


def decode(frame: bytes) -> list[Record]:
    """The Records of an answer frame (raises ValueError for a malformed one)."""
    if _frames is None:
        raise ValueError("a compiled answer frame, but this process has no compiled extension")
    n = int.from_bytes(frame[1:3], "little")
    prototype = Record("", b"", label=frame[3 : 3 + n].decode())
    return _frames.records(memoryview(frame)[3 + n :], prototype)
