"""Whether a stored binlog position may be resumed from on this server; ``run`` refuses and ``check`` reports the same.

:class:`ServerInfo` is what the server says (settings, binlog files and sizes, GTID state), filled by
``server.fetch_server_info`` (start, reconnect) or the ``check`` command's own queries, plus
:func:`inspect_resume` for the facts that depend on the position. :func:`resume_refusals` compares:

* **server identity**: ``server_id`` (and ``server_uuid`` on MySQL). Another server's file/position means nothing
  here; by GTID, a new server is a failover and goes on (the GTID checks below still apply): a GTID names the
  same transaction on every server of a topology, and a replica with ``log_slave_updates`` (MySQL
  ``log_replica_updates``) writes the transactions it applies to its binlog under their original GTIDs. So the
  checkpoint's GTID position must be contained in the new server's binlog (no transaction the checkpoint claims
  is missing there, else the stream already holds changes the new server lost), and the server then sends every
  transaction after it: MariaDB the ones after each domain's GTID in binlog order, MySQL every one not in the
  set (``COM_BINLOG_DUMP_GTID``).
* **by GTID**: every GTID of the checkpoint must be in the server's binlog (MySQL ``gtid_executed``; MariaDB
  ``gtid_binlog_state``, which unlike ``gtid_binlog_pos`` keeps every server id per domain, so a transaction of
  the same domain and sequence number from another server is not mistaken for one of ours), and none may be
  purged (MariaDB ``BINLOG_GTID_POS`` of the oldest binlog, MySQL ``gtid_purged``).
* **by file/position**: the file must still exist (else purged, or beyond the newest file), the offset within it.
* **MariaDB, either way**, when the file is on the server: ``BINLOG_GTID_POS(file, pos)`` must find an event
  boundary there and a GTID state the checkpoint's does not run ahead of. This is what tells two servers with the
  same ``server_id`` (``1`` by default) and the same binlog names apart, which identity alone cannot.

Not detected: on MySQL, a position inside the binlog of another server that has the same ``server_uuid`` (a
cloned data directory) and resumes by file/position; on MariaDB, the same when the checkpointed file was purged;
and on MariaDB, after a failover, a transaction written on the replica itself before its promotion (its own
server id, in a domain of the checkpoint, before the checkpoint's GTID in its binlog): the old primary never had
it, and the new server resumes after it. ``gtid_strict_mode`` makes such a write stop replication instead (and
``read_only`` refuses it), which is why the failover docs ask for both.
"""

from __future__ import annotations

from typing import Any, cast

from cdcstream.checkpoints.model import Checkpoint, MySQLCheckpoint
from cdcstream.errors import Refusal, SourceError
from cdcstream.sources.mysql.positions import binlog_pos

IDENTITY_CHECK = "server identity"
POSITION_CHECK = "binlog position"
START_OVER = "move the checkpoint file away and re-sync the target with a full load"


class ServerInfo:
    """What start() (or ``check``) learned from the server."""

    def __init__(self, version: str, variables: dict[str, str], binlogs: list[tuple[str, int]]) -> None:
        self.version = version
        self.variables = variables
        self.binlogs = [name for name, _size in binlogs]
        self.sizes = dict(binlogs)
        self.mariadb = "mariadb" in version.lower()
        # The GTID state the oldest binlog starts after (MariaDB: BINLOG_GTID_POS of its start; MySQL:
        # gtid_purged) and the part of a resume GTID position that is gone with the purged binlogs.
        self.purged_gtids = ""
        self.missing_gtids = ""
        # The part of a resume GTID position the server never wrote to its binlog.
        self.unknown_gtids = ""
        # MariaDB: BINLOG_GTID_POS(file, pos) of the resume position ("" when not asked; None when the server
        # finds no event boundary there).
        self.position_gtid: str | None = ""
        self.position_checked = False

    @property
    def server_has_gtids(self) -> bool:
        return self.mariadb or self.variables.get("gtid_mode", "OFF").upper() == "ON"

    @property
    def gtid_state(self) -> str:
        """Every GTID in the binlog, for messages (MariaDB ``gtid_binlog_state``, MySQL ``gtid_executed``)."""
        key = "gtid_binlog_state" if self.mariadb else "gtid_executed"
        return self.variables.get(key, "").replace("\n", "")

    @property
    def identity(self) -> MySQLCheckpoint:
        """Which server this is, stored in every checkpoint (docs/mysql.md, "Positions and resume"): ``server_id``
        (unique per server in any replication topology) and, on MySQL, ``server_uuid`` (MariaDB has none)."""
        ident: MySQLCheckpoint = {"server_id": int(self.variables.get("server_id") or 0)}
        if self.variables.get("server_uuid"):
            ident["server_uuid"] = self.variables["server_uuid"]
        return ident


def other_server(known: MySQLCheckpoint, identity: MySQLCheckpoint) -> bool:
    """Whether a checkpoint's server identity names another server. Checkpoints written before the identity
    was stored have none: accepted (and the identity recorded from now on)."""
    if known.get("server_uuid") and identity.get("server_uuid"):
        return bool(known["server_uuid"] != identity["server_uuid"])
    return known.get("server_id") not in (None, identity.get("server_id"))


def describe_server(identity: MySQLCheckpoint) -> str:
    text = f"server_id {identity.get('server_id')}"
    return f"{text} (server_uuid {identity['server_uuid']})" if identity.get("server_uuid") else text


def _mariadb_gtids(text: str) -> list[tuple[str, str, int]]:
    out = []
    for part in text.split(","):
        fields = part.strip().split("-")
        if len(fields) == 3 and fields[2].isdigit():
            out.append((fields[0], fields[1], int(fields[2])))
    return out


def mariadb_missing_gtids(purged: str, resume: str) -> str:
    """The MariaDB GTIDs (``domain-server-seq``) purged with the binlogs but not yet read at ``resume``: for each
    domain, the purged state when the resume position is behind it. Empty when nothing is missing."""
    have = {domain: seq for domain, _server, seq in _mariadb_gtids(resume)}
    missing = [f"{d}-{s}-{n}" for d, s, n in _mariadb_gtids(purged) if have.get(d, 0) < n]
    return ",".join(missing)


def mariadb_unknown_gtids(state: str, resume: str) -> str:
    """The GTIDs of ``resume`` this server never wrote: ``state`` (``gtid_binlog_state``) holds the last
    sequence number of every domain and server id in the binlog, so ``d-s-n`` is there when ``d-s-m``, m >= n."""
    last = {(d, s): n for d, s, n in _mariadb_gtids(state)}
    return ",".join(f"{d}-{s}-{n}" for d, s, n in _mariadb_gtids(resume) if last.get((d, s), -1) < n)


def mariadb_ahead(resume: str, at_position: str) -> str:
    """The GTIDs of ``resume`` the binlog had not reached at the checkpointed position (``at_position``:
    ``BINLOG_GTID_POS`` there, one GTID per domain). A lower sequence number is tolerated (the state is seeded a
    moment before the position on a first start); a higher one, another server id at the same sequence number,
    or a domain the binlog did not have there means the checkpoint was not written at this position."""
    there = {d: (s, n) for d, s, n in _mariadb_gtids(at_position)}
    ahead = []
    for d, s, n in _mariadb_gtids(resume):
        have = there.get(d)
        if have is None or n > have[1] or (n == have[1] and s != have[0]):
            ahead.append(f"{d}-{s}-{n}")
    return ",".join(ahead)


def inspect_resume(cur: Any, info: ServerInfo, file: str, pos: int, gtid: str | None, *, at_position: bool) -> None:
    """Fill the position-dependent facts of ``info`` (needs no privilege beyond the source's). ``at_position``:
    also ask MariaDB what its binlog holds at ``file``:``pos`` (it reads the file up to there: done for stored
    positions at start and in ``check``, not for positions this run read itself)."""
    if gtid:
        if info.mariadb:
            if info.binlogs:
                cur.execute("SELECT BINLOG_GTID_POS(%s, 4)", (info.binlogs[0],))
                info.purged_gtids = str(cur.fetchone()[0] or "")
                info.missing_gtids = mariadb_missing_gtids(info.purged_gtids, gtid)
            info.unknown_gtids = mariadb_unknown_gtids(info.gtid_state, gtid)
        elif info.server_has_gtids:
            cur.execute(
                "SELECT @@GLOBAL.gtid_purged, GTID_SUBTRACT(@@GLOBAL.gtid_purged, %s), "
                "GTID_SUBTRACT(%s, @@GLOBAL.gtid_executed)",
                (gtid, gtid),
            )
            purged, missing, unknown = cur.fetchone()
            info.purged_gtids = str(purged or "").replace("\n", "")
            info.missing_gtids = str(missing or "").replace("\n", "")
            info.unknown_gtids = str(unknown or "").replace("\n", "")
    if at_position and info.mariadb and file in info.binlogs:
        cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
        value = cur.fetchone()[0]
        info.position_gtid = None if value is None else str(value)
        info.position_checked = True


def stored_position(stored: Checkpoint) -> tuple[str, int, str | None]:
    """(file, pos, GTID) of a checkpoint; SourceError when it holds no binlog position."""
    checkpoint = cast(MySQLCheckpoint, stored)  # another engine's has no file and pos
    try:
        return str(checkpoint["file"]), int(checkpoint["pos"]), checkpoint.get("gtid") or None
    except (KeyError, TypeError, ValueError):
        raise SourceError(f"checkpoint {checkpoint!r} is not a MySQL position (expected file, pos and gtid)") from None


def resumes_by_gtid(mode: str, checkpoint: MySQLCheckpoint | None, gtid: str | None, info: ServerInfo) -> bool:
    """Whether a resume uses the GTID (``gtid_mode`` ``on``/``auto``) or the file/position."""
    if mode == "off" or checkpoint is None:
        return False  # a first start begins at the server's current file/position
    if mode == "on":
        if not gtid or not info.server_has_gtids:
            raise SourceError(
                "gtid_mode = 'on' but "
                + ("the checkpoint has no GTID" if not gtid else "the server does not use GTIDs (gtid_mode OFF)")
                + "; use gtid_mode = 'auto' or 'off' to resume from the binlog file and position"
            )
        return True
    return bool(gtid) and info.server_has_gtids


def resume_refusals(
    info: ServerInfo,
    file: str,
    pos: int,
    gtid: str | None,
    known: MySQLCheckpoint | None,
    *,
    use_gtid: bool,
    where: str,
) -> list[Refusal]:
    """Why resuming at ``file``:``pos`` (``gtid``) on the server ``info`` describes would read the wrong changes;
    empty when it is safe. ``known``: the checkpoint (or this run's own identity after a reconnect); None for a
    position the server gave us just now. Each failure says what is lost and what to do; none of them ever turns
    into a silent fresh start."""
    if not known:
        return []
    identity = info.identity
    moved = other_server(known, identity)
    if moved and not use_gtid:
        by_gtid = (
            f"if this server is a promoted replica of the old one, resume by GTID (gtid_mode = 'auto'; the "
            f"checkpoint has GTID position {gtid}); "
            if gtid
            else ""
        )
        return [
            Refusal(
                IDENTITY_CHECK,
                f"the MySQL/MariaDB server at {where} is {describe_server(identity)}, but the checkpoint was written "
                f"for {describe_server(known)}: a failover, a restored backup, or another server behind the same "
                f"address. A binlog file/position ({file}:{pos}) means nothing on another server, so cdcstream stops "
                "rather than guess",
                f"point host/port at the original server; {by_gtid}or start over deliberately: {START_OVER}",
            )
        ]
    other = f"point the config at the server the checkpoint was written for; or start over deliberately: {START_OVER}"
    out: list[Refusal] = []
    if use_gtid and info.unknown_gtids and moved:
        out.append(
            Refusal(
                POSITION_CHECK,
                f"the checkpointed GTID position {gtid}, written for {describe_server(known)}, includes "
                f"transactions the server at {where} never wrote to its binlog: {info.unknown_gtids} (it is "
                f"{describe_server(identity)}; its binlog has {info.gtid_state or 'no GTIDs'}). If it is a replica "
                "promoted after a failover, it never applied them: they were lost with the old primary, but "
                "cdcstream had already streamed them, so the stream holds changes this database does not have (or "
                "the replica ran without log_slave_updates / log_replica_updates, and its binlog lacks what it "
                "replicated). Resuming would skip this server's own transactions of the same sequence numbers",
                "re-sync the target with a full load from this server and start over deliberately (move the "
                "checkpoint file away; cdcstream never does that by itself); or point the config at a server "
                "that has these transactions",
            )
        )
    elif use_gtid and info.unknown_gtids:
        out.append(
            Refusal(
                POSITION_CHECK,
                f"the checkpointed GTID position {gtid} includes transactions the server at {where} never wrote to "
                f"its binlog: {info.unknown_gtids} (its binlog has {info.gtid_state or 'no GTIDs'}). The checkpoint "
                "belongs to another server, the binlog was reset (RESET MASTER), or this is a replica promoted "
                "before it received them; resuming would skip this server's own transactions",
                other,
            )
        )
    elif use_gtid and info.missing_gtids:
        out.append(
            Refusal(
                POSITION_CHECK,
                f"the checkpointed GTID position {gtid} is no longer on the server {where}: its oldest binlog "
                f"({info.binlogs[0] if info.binlogs else 'none'}) starts after GTID state {info.purged_gtids}, so "
                f"transactions after the checkpoint up to {info.missing_gtids} were purged and are lost to cdcstream",
                "re-sync the target with a full load and start over deliberately (move the checkpoint file away; "
                "cdcstream never does that by itself); raise binlog retention (expire_logs_days / "
                "binlog_expire_logs_seconds) so this does not recur",
            )
        )
    newest = info.binlogs[-1] if info.binlogs else None
    end = f"{newest}:{info.sizes.get(newest, 0)}" if newest else "no binlogs"
    if not use_gtid and file not in info.binlogs:
        if newest is None or binlog_pos(file, pos).number > binlog_pos(newest, 0).number:
            out.append(
                Refusal(
                    POSITION_CHECK,
                    f"the checkpointed binlog position {file}:{pos} lies beyond the end of the binlog of the server "
                    f"at {where} (it ends at {end}): the checkpoint was written for another server, or the binlog "
                    "was reset (RESET MASTER) or restored from an older backup; resuming would skip every change "
                    "until the binlog got there",
                    other,
                )
            )
        else:
            out.append(
                Refusal(
                    POSITION_CHECK,
                    f"the checkpointed binlog file {file} was purged from the server at {where} (the checkpoint is "
                    f"at position {pos}; the oldest binlog there is {info.binlogs[0]}): the changes after the "
                    "checkpoint are lost",
                    "raise binlog retention (expire_logs_days / binlog_expire_logs_seconds) so this does not recur, "
                    "move the checkpoint file away and re-sync the target with a full load",
                )
            )
    elif file in info.binlogs and not moved:
        if pos > info.sizes.get(file, pos):
            out.append(
                Refusal(
                    POSITION_CHECK,
                    f"the checkpointed binlog position {file}:{pos} lies beyond the end of that file on the server "
                    f"at {where} ({info.sizes[file]} bytes; the binlog ends at {end}): the checkpoint was written "
                    "for another server, or the binlog was restored from an older backup",
                    other,
                )
            )
        elif info.position_checked and info.position_gtid is None:
            out.append(
                Refusal(
                    POSITION_CHECK,
                    f"the checkpointed binlog position {file}:{pos} is not an event boundary in the binlog of the "
                    f"server at {where} (BINLOG_GTID_POS finds none there): the checkpoint was written for another "
                    "server with the same server_id and binlog file names",
                    other,
                )
            )
        elif info.position_checked and gtid and (ahead := mariadb_ahead(gtid, info.position_gtid or "")):
            out.append(
                Refusal(
                    POSITION_CHECK,
                    f"at the checkpointed position {file}:{pos} the binlog of the server at {where} has GTID state "
                    f"{info.position_gtid or '(empty)'}, but the checkpoint says {gtid} ({ahead} not there): it was "
                    "written for another server with the same server_id and binlog file names",
                    other,
                )
            )
    return out
