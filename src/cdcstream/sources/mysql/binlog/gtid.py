"""MySQL GTID sets: parsed from text, grown one transaction at a time, printed and encoded for the dump request.

A MySQL GTID set is ``uuid:interval[:interval...][,uuid:...]`` (``3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7``),
the form of ``@@gtid_executed``. cdcstream keeps the set after every transaction it has streamed and resumes with
it (COM_BINLOG_DUMP_GTID, :func:`encode`). MariaDB's GTID state is simpler (one ``domain-server-seq`` per
replication domain); :class:`GtidState` keeps either.

Tagged GTIDs (``uuid:tag:n``, MySQL 8.3+) are parsed and printed, but the dump request can only carry untagged
ones (the binary form of a tagged set is another format): :func:`encode` refuses them with a clear error, as the
reader refuses GTID_TAGGED_LOG_EVENT itself.
"""

from __future__ import annotations

import re
import struct
import uuid as uuidlib

from cdcstream.errors import SourceError

_TAG = re.compile(r"[a-z_][a-z0-9_]{0,31}", re.IGNORECASE)


class GtidSet:
    """A set of MySQL GTIDs: for each (source uuid, tag), sorted disjoint closed intervals of numbers."""

    __slots__ = ("_sets",)

    def __init__(self, text: str | None = None) -> None:
        self._sets: dict[tuple[str, str], list[list[int]]] = {}
        for part in (text or "").replace("\n", "").split(","):
            part = part.strip()
            if part:
                self._parse_part(part)

    def _parse_part(self, part: str) -> None:
        fields = part.split(":")
        try:
            sid = str(uuidlib.UUID(fields[0].strip()))
        except ValueError:
            raise ValueError(f"not a GTID set: {part!r} (no server uuid)") from None
        tag = ""
        for field in fields[1:]:
            field = field.strip()
            if _TAG.fullmatch(field) and not field.isdigit():
                tag = field.lower()
                continue
            lo, _, hi = field.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise ValueError(f"not a GTID set: {part!r} (interval {field!r})")
            start, end = int(lo), int(hi or lo)
            if start < 1 or end < start:
                raise ValueError(f"not a GTID set: {part!r} (interval {field!r})")
            self._add_interval((sid, tag), start, end)

    def _add_interval(self, key: tuple[str, str], start: int, end: int) -> None:
        intervals = self._sets.setdefault(key, [])
        if intervals and intervals[-1][0] <= start and intervals[-1][1] + 1 >= start:
            intervals[-1][1] = max(intervals[-1][1], end)  # the common case: the next transaction of a source
            return
        intervals.append([start, end])
        intervals.sort()
        merged: list[list[int]] = []
        for lo, hi in intervals:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._sets[key] = merged

    def add(self, gtid: str) -> None:
        """Add one GTID (``uuid:n`` or ``uuid:tag:n``)."""
        fields = gtid.strip().split(":")
        if len(fields) not in (2, 3) or not fields[-1].isdigit():
            raise ValueError(f"not a GTID: {gtid!r}")
        try:
            sid = str(uuidlib.UUID(fields[0]))
        except ValueError:
            raise ValueError(f"not a GTID: {gtid!r}") from None
        tag = fields[1].lower() if len(fields) == 3 else ""
        n = int(fields[-1])
        if n < 1:
            raise ValueError(f"not a GTID: {gtid!r}")
        self._add_interval((sid, tag), n, n)

    def __contains__(self, gtid: str) -> bool:
        fields = gtid.strip().split(":")
        key = (str(uuidlib.UUID(fields[0])), fields[1].lower() if len(fields) == 3 else "")
        n = int(fields[-1])
        return any(lo <= n <= hi for lo, hi in self._sets.get(key, ()))

    def __str__(self) -> str:
        parts = []
        for sid in sorted({sid for sid, _ in self._sets}):
            fields = [sid]
            for (s, tag), intervals in sorted(self._sets.items()):
                if s != sid:
                    continue
                if tag:
                    fields.append(tag)
                fields.extend(f"{lo}-{hi}" if hi > lo else str(lo) for lo, hi in intervals)
            parts.append(":".join(fields))
        return ",".join(parts)

    def __repr__(self) -> str:
        return f"GtidSet({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GtidSet) and self._sets == other._sets

    def __hash__(self) -> int:
        return hash(str(self))

    def encode(self) -> bytes:
        """The set as COM_BINLOG_DUMP_GTID carries it: sid count (8), then per sid its uuid (16), interval count
        (8) and each interval as start and *exclusive* end (8 + 8), all little-endian."""
        if any(tag for _sid, tag in self._sets):
            raise SourceError(
                f"the resume GTID set {self} has tagged GTIDs (MySQL 8.3+), which cdcstream cannot send to the "
                "server yet; resume by file/position (gtid_mode = 'off') instead"
            )
        out = [struct.pack("<Q", len(self._sets))]
        for (sid, _tag), intervals in sorted(self._sets.items()):
            out.append(uuidlib.UUID(sid).bytes)
            out.append(struct.pack("<Q", len(intervals)))
            for lo, hi in intervals:
                out.append(struct.pack("<QQ", lo, hi + 1))
        return b"".join(out)


class GtidState:
    """The server's GTID state after the last transaction streamed, as a checkpoint records it: MariaDB's
    ``domain-server-seq`` per replication domain, or a MySQL :class:`GtidSet`."""

    __slots__ = ("_domains", "_mariadb", "_set")

    def __init__(self, *, mariadb: bool, text: str | None = None) -> None:
        self._mariadb = mariadb
        self._domains: dict[str, str] = {}
        self._set: GtidSet | None = None
        if not text:
            return
        if mariadb:
            for part in text.split(","):
                part = part.strip()
                if part:
                    self._domains[part.split("-", 1)[0]] = part
        else:
            self._set = GtidSet(text)

    def add(self, gtid: str) -> None:
        """A transaction with this GTID was streamed."""
        if self._mariadb:
            self._domains[gtid.split("-", 1)[0]] = gtid
        elif self._set is None:
            self._set = GtidSet(gtid)
        else:
            self._set.add(gtid)

    def text(self) -> str | None:
        """The state as the server writes it (None: no GTID seen)."""
        if self._mariadb:
            return ",".join(self._domains[d] for d in sorted(self._domains, key=int)) or None
        return str(self._set) if self._set is not None else None
