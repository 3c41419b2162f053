"""The pgoutput decoder against messages captured from PostgreSQL 15 (see fixtures/pgoutput/capture.py)."""

from __future__ import annotations

import contextlib
import json
import struct
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcstream.changes import ChangeEvent, Marker, Op
from cdcstream.errors import DecodeError
from cdcstream.sources.postgres.decoder import OPS, Decoder
from cdcstream.sources.postgres.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    Keepalive,
    LogicalMessage,
    Origin,
    Relation,
    Truncate,
    TypeMessage,
    Update,
    XLogData,
    format_lsn,
    parse_frame,
    parse_lsn,
    parse_message,
)
from tests.support.checkpoints import pg

FIXTURES = Path(__file__).parent / "fixtures" / "pgoutput"


@cache
def frames(name: str) -> tuple[bytes, ...]:
    return tuple(bytes.fromhex(h) for h in json.loads((FIXTURES / f"{name}.json").read_text()))


def messages(name: str = "scenario") -> list[object]:
    out: list[object] = []
    for f in frames(name):
        fr = parse_frame(f)
        out.append(parse_message(fr.payload) if isinstance(fr, XLogData) else fr)
    return out


def of_type(kind: type) -> list[object]:
    return [m for m in messages() if isinstance(m, kind)]


# ---- reference decoding of every message type -----------------------------------------------------


def test_framing_xlogdata_and_keepalive() -> None:
    first = parse_frame(frames("scenario")[0])
    assert isinstance(first, Keepalive)  # the server's first message after START_REPLICATION
    assert first.reply_requested is False and first.wal_end > 0
    w = parse_frame(frames("scenario")[1])
    assert isinstance(w, XLogData) and w.payload[:1] == b"B"
    raw = frames("scenario")[1]
    assert struct.unpack_from("!QQq", raw, 1) == (w.data_start, w.wal_end, w.send_time)
    assert w.payload == raw[25:]


def test_begin_commit_pair_up() -> None:
    begins, commits = of_type(Begin), of_type(Commit)
    assert len(begins) == len(commits) >= 10
    for b, c in zip(begins, commits, strict=True):
        assert isinstance(b, Begin) and isinstance(c, Commit)
        assert b.final_lsn == c.commit_lsn and c.end_lsn > c.commit_lsn and b.commit_time == c.commit_time


def test_relation_type_and_origin() -> None:
    rels = [r for r in of_type(Relation) if isinstance(r, Relation)]
    items = next(r for r in rels if r.name == "items")
    assert items.namespace == "public" and items.replica_identity == "d"
    assert [c.name for c in items.columns][:3] == ["id", "name", "qty"]
    assert [c.is_key for c in items.columns][:2] == [True, False]
    assert items.columns[0].type_oid == 20 and items.columns[3].type_modifier == 786438  # numeric(12,2)
    full = [r for r in rels if r.name == "fullrow"]
    assert full[0].replica_identity == "f" and len(full[-1].columns) == 3  # re-sent after ALTER ADD COLUMN
    (typ,) = of_type(TypeMessage)
    assert isinstance(typ, TypeMessage) and (typ.namespace, typ.name) == ("public", "mood")
    (origin,) = of_type(Origin)
    assert isinstance(origin, Origin) and origin.name == "capture_origin" and origin.lsn == 0xAB


def test_insert_update_delete_tuples() -> None:
    ins = [m for m in of_type(Insert) if isinstance(m, Insert)]
    assert ins[1].new[0] == "2" and ins[1].new[1:] == (None,) * 13  # nulls
    upd = [m for m in of_type(Update) if isinstance(m, Update)]
    assert upd[0].old_kind is None and upd[0].old is None
    assert upd[1].old_kind == "K" and upd[1].old is not None and upd[1].old[0] == "2" and upd[1].new[0] == "3"
    assert upd[2].old_kind == "O" and upd[2].old == ("1", "a") and upd[2].new == ("1", "a2")
    assert upd[3].new == ("1", "2", UNCHANGED)  # unchanged TOAST
    dels = [m for m in of_type(Delete) if isinstance(m, Delete)]
    assert dels[0].old_kind == "K" and dels[1].old_kind == "O" and dels[1].old == ("2", "b")


def test_truncate_and_messages() -> None:
    (tr,) = of_type(Truncate)
    assert isinstance(tr, Truncate) and len(tr.relation_ids) == 2 and tr.cascade and tr.restart_identity
    msgs = [m for m in of_type(LogicalMessage) if isinstance(m, LogicalMessage)]
    hb = next(m for m in msgs if m.prefix == "cdcstream.heartbeat")
    assert hb.transactional and hb.content == b"2026-11-27T12:00:00Z"
    nontx = next(m for m in msgs if m.prefix == "cdcstream.nontx")
    assert not nontx.transactional and nontx.content == b"hello"


def test_lsn_helpers() -> None:
    assert format_lsn(0x16B3748) == "0/16B3748" and parse_lsn("0/16B3748") == 0x16B3748
    assert parse_lsn(format_lsn(0xABCDEF0123456789)) == 0xABCDEF0123456789
    for bad in ("", "0", "x/1", "1/", "123456789/0"):
        with pytest.raises(ValueError):
            parse_lsn(bad)


@pytest.mark.parametrize(
    "bad",
    # Accepted by int(x, 16) before the parser was strict: a checkpoint holding one resumed from a made-up LSN.
    [
        "+1/0",
        "-1/0",
        "0x0/0",
        "0/0x10",
        " 1/0",
        "1/0 ",
        "1_0/0",
        "0/+1",
        "1/a",
        "ab/0",
        "0/16b3748",
        "1//0",
        "1/0/0",
        "\uff11/0",
        "\u0661/0",
    ],  # (the last two: full-width and Arabic-Indic digits, which int() takes too)
)
def test_lsn_parser_rejects_what_postgresql_never_prints(bad: str) -> None:
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn(bad)


@given(st.integers(0, 2**64 - 1))
def test_lsn_roundtrip_and_postgresql_18_zero_padding(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn
    assert parse_lsn(f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:08X}") == lsn  # PostgreSQL 18 prints %X/%08X


@given(st.text(max_size=20))
def test_lsn_parser_takes_only_upper_case_hex_halves(text: str) -> None:
    try:
        lsn = parse_lsn(text)
    except ValueError:
        return
    hi, lo = text.split("/")
    assert all(c in "0123456789ABCDEF" for c in hi + lo) and 1 <= len(hi) <= 8 and 1 <= len(lo) <= 8
    assert lsn == int(hi, 16) << 32 | int(lo, 16)


# ---- hot path: Decoder ----------------------------------------------------------------------------


def decode_all(name: str = "scenario", **kw: object) -> tuple[Decoder, list[object]]:
    dec = Decoder(**kw)  # type: ignore[arg-type]
    return dec, list(dec.feed(frames(name)))


def test_decoder_events() -> None:
    _dec, items = decode_all()
    events = [i for i in items if isinstance(i, ChangeEvent)]
    ops = [(e.table.table, e.op) for e in events]
    assert ops[:5] == [
        ("items", Op.INSERT),
        ("items", Op.INSERT),
        ("items", Op.UPDATE),
        ("items", Op.UPDATE),
        ("items", Op.DELETE),
    ]
    first = events[0]
    assert first.after == {
        "id": 1,
        "name": "one",
        "qty": 10,
        "price": "12.50",
        "created": "2026-11-27T12:00:00.123456Z",
        "flag": True,
        "payload": '{"a": [1, 2]}',
        "c8": None,
        "c9": 1.5,
        "c10": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "m": "happy",
        "raw": "0x0aff",
        "ts": "2026-11-27T12:00:00.5",
        "d": "2026-11-27",
    }
    assert first.table.columns[10].type_name == "public.mood"
    assert first.table.columns[0].type_name == "int8" and first.table.key_columns == ("id",)
    assert first.transaction_record_id == 1 and first.commit_time.endswith("Z")
    assert events[2].after is not None and events[2].after["c9"] == "NaN"
    # key change: 'K' tuple reduced to the key columns
    assert events[3].before == {"id": 2} and events[3].after is not None and events[3].after["id"] == 3
    assert events[4].op is Op.DELETE and events[4].before == {"id": 3} and events[4].after is None
    upd_full = next(e for e in events if e.table.table == "fullrow" and e.op is Op.UPDATE)
    assert upd_full.before == {"id": 1, "v": "a"}
    toast = next(e for e in events if e.table.table == "toasty" and e.op is Op.UPDATE)
    assert toast.after == {"id": 1, "small": 2} and toast.unchanged_columns == ("big",)
    truncs = [e for e in events if e.op is Op.TRUNCATE]
    assert [e.table.table for e in truncs] == ["parent", "child"]
    assert all(e.after is None and e.before is None for e in truncs)
    assert [e.transaction_record_id for e in truncs] == [1, 2]
    # after ALTER TABLE the re-sent Relation replaces the plan
    last_full = [e for e in events if e.table.table == "fullrow"][-1]
    assert last_full.after == {"id": 6, "v": "from origin", "extra": None}
    positions = [e.stream_position for e in events]
    assert positions == sorted(positions)
    assert len(positions[0]) == len("00000000/00000000.0000000001")


def test_decoder_markers() -> None:
    dec, items = decode_all()
    commits = [i for i in items if isinstance(i, Marker) and i.transaction]
    idle = [i for i in items if isinstance(i, Marker) and not i.transaction]
    assert len(commits) == len(of_type(Commit))
    lsns = [parse_lsn(pg(m.checkpoint)["lsn"]) for m in commits]
    assert lsns == sorted(lsns)
    assert all(m.commit_epoch is not None for m in commits)
    # the first keepalive arrives before any data (outside a transaction) -> idle marker
    assert isinstance(items[0], Marker) and not items[0].transaction and items[0].commit_epoch is None
    assert idle and all(m.commit_epoch is None for m in idle)
    all_lsns = [parse_lsn(pg(i.checkpoint)["lsn"]) for i in items if isinstance(i, Marker)]
    assert all_lsns == sorted(all_lsns)
    assert dec.last_position == max(all_lsns) and not dec.in_transaction
    assert dec.transactions == len(commits)


def test_relation_dataStart_zero_is_not_a_position() -> None:
    _dec, items = decode_all()
    markers = [i for i in items if isinstance(i, Marker)]
    assert all(pg(m.checkpoint)["lsn"] != "0/0" for m in markers)


def test_selector_drops_events_but_keeps_commits() -> None:
    _, items = decode_all(selector=lambda s, t: t == "fullrow")
    events = [i for i in items if isinstance(i, ChangeEvent)]
    assert events and {e.table.table for e in events} == {"fullrow"}
    _, all_items = decode_all()
    assert len([i for i in items if isinstance(i, Marker)]) == len([i for i in all_items if isinstance(i, Marker)])


def test_replica_identity_full_uses_primary_key_when_known() -> None:
    dec = Decoder()
    dec.primary_keys = {("public", "fullrow"): ("id",)}
    events = [i for i in dec.feed(frames("scenario")) if isinstance(i, ChangeEvent)]
    full = next(e for e in events if e.table.table == "fullrow")
    assert full.table.key_columns == ("id",)
    assert Decoder().plans == {}


def test_no_hex_prefix() -> None:
    _, items = decode_all(no_hex_prefix=True)
    first = next(i for i in items if isinstance(i, ChangeEvent))
    assert first.after is not None and first.after["raw"] == "0aff"


def test_metric_counts_per_plan() -> None:
    dec, _items = decode_all()
    counts = {(p.table.table, op): n for p in dec.touched for op, n in zip(OPS, p.counts, strict=True)}
    assert counts[("items", Op.INSERT)] == 2 and counts[("parent", Op.TRUNCATE)] == 1


def test_reply_requested_flag() -> None:
    dec = Decoder()
    dec.feed([b"k" + struct.pack("!QqB", 100, 0, 1)])
    assert dec.reply_requested


def test_reset_transaction_after_cut() -> None:
    all_frames = frames("scenario")
    dec = Decoder()
    dec.feed(all_frames[:3])  # keepalive, Begin, Type — cut inside the transaction
    assert dec.in_transaction
    dec.reset_transaction()
    items = dec.feed(all_frames[1:])  # the server re-sends from the Begin
    assert isinstance(items[-1], Marker)


# ---- garbage --------------------------------------------------------------------------------------


def _w(payload: bytes, lsn: int = 0x1234) -> bytes:
    return b"w" + struct.pack("!QQq", lsn, lsn, 0) + payload


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"x",
        b"k\x00",
        b"w" + b"\x00" * 10,
        _w(b"Z"),
        _w(b"B\x00"),
        _w(b"I\x00\x00\x00\x01N\x00\x01t"),  # unknown relation
        _w(b"C" + b"\x00" * 25),  # commit without begin
    ],
)
def test_garbage_raises_decode_error_with_lsn(frame: bytes) -> None:
    with pytest.raises(DecodeError, match="LSN"):
        Decoder().feed([frame])


def test_truncated_and_padded_row_messages() -> None:
    all_frames = list(frames("scenario"))
    idx = next(i for i, f in enumerate(all_frames) if len(f) > 25 and f[25:26] == b"I")
    for bad in (all_frames[idx][:-3], all_frames[idx] + b"\x00", all_frames[idx][:-1] + b"\xff"):
        dec = Decoder()
        dec.feed(all_frames[:idx])
        with pytest.raises(DecodeError, match="LSN"):
            dec.feed([bad])


def test_reference_parser_garbage() -> None:
    for bad in (
        b"",
        b"R\x00",
        b"U\x00\x00\x00\x01X",
        b"T\xff\xff\xff\xff\x00",
        b"M\x01" + b"\x00" * 8 + b"p",
    ):
        with pytest.raises(DecodeError):
            parse_message(bad)
    with pytest.raises(DecodeError):
        parse_frame(b"q123")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    dec = Decoder()
    dec.feed(frames("scenario")[:4])  # some plans and an open transaction make more paths reachable
    for frame in (data, _w(data), b"k" + data):
        with contextlib.suppress(DecodeError):
            dec.feed([frame])
        with contextlib.suppress(DecodeError):
            parse_message(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_real_messages_only_raise_decode_error(data: st.DataObject) -> None:
    all_frames = frames("scenario")
    i = data.draw(st.integers(1, len(all_frames) - 1))
    frame = bytearray(all_frames[i])
    pos = data.draw(st.integers(0, len(frame) - 1))
    frame[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    dec = Decoder()
    try:
        dec.feed(all_frames[:i])
        dec.feed([bytes(frame[:cut])])
    except DecodeError:
        pass


# ---- synthetic messages: unchanged TOAST fill, type plans ------------------------------------------


def _relation(relid: int, cols: list[tuple[str, int, bool]], ident: bytes = b"f") -> bytes:
    body = b"R" + struct.pack("!I", relid) + b"public\x00t\x00" + ident + struct.pack("!h", len(cols))
    for name, oid, key in cols:
        body += bytes([1 if key else 0]) + name.encode() + b"\x00" + struct.pack("!Ii", oid, -1)
    return body


def _tuple(values: list[str | object | None]) -> bytes:
    out = struct.pack("!h", len(values))
    for val in values:
        if val is None:
            out += b"n"
        elif val is UNCHANGED:
            out += b"u"
        else:
            assert isinstance(val, str)
            out += b"t" + struct.pack("!i", len(val.encode())) + val.encode()
    return out


BEGIN = b"B" + struct.pack("!QqI", 0x2000, 0, 7)
COMMIT = b"C" + struct.pack("!BQQq", 0, 0x2000, 0x2010, 0)


def test_an_unchanged_relation_resent_keeps_its_table_info() -> None:
    """pgoutput re-sends a Relation after any invalidation of the table's cache entry (an ANALYZE, say): the rows
    on either side share one TableInfo (per-table plans downstream stay valid); a changed one gets a new one."""
    rel = _relation(1, [("id", 23, True), ("n", 23, False)])
    ins = b"I" + struct.pack("!I", 1) + b"N" + _tuple(["1", "2"])
    items = Decoder().feed([_w(BEGIN), _w(rel), _w(ins), _w(rel), _w(ins), _w(COMMIT)])
    first, second = [i for i in items if isinstance(i, ChangeEvent)]
    assert first.table is second.table
    altered = _relation(1, [("id", 23, True), ("n", 20, False)])
    items = Decoder().feed([_w(BEGIN), _w(rel), _w(ins), _w(altered), _w(ins), _w(COMMIT)])
    first, second = [i for i in items if isinstance(i, ChangeEvent)]
    assert first.table is not second.table and second.table.columns[1].type_id == 20


def test_unchanged_toast_filled_from_old_tuple_with_replica_identity_full() -> None:
    rel = _relation(1, [("id", 23, True), ("big", 25, True), ("doc", 3802, True), ("n", 23, True)])
    upd = b"U" + struct.pack("!I", 1) + b"O" + _tuple(["1", "x" * 10, '{"a": 1}', "1"])
    upd += b"N" + _tuple(["1", UNCHANGED, UNCHANGED, "2"])
    items = Decoder().feed([_w(BEGIN), _w(rel), _w(upd), _w(COMMIT)])
    (ev,) = [i for i in items if isinstance(i, ChangeEvent)]
    assert ev.after == {"id": 1, "big": "x" * 10, "doc": '{"a": 1}', "n": 2}
    assert list(ev.after) == ["id", "big", "doc", "n"] and ev.unchanged_columns == ()
    # an old tuple that lacks the value too: still listed, never invented
    upd2 = b"U" + struct.pack("!I", 1) + b"O" + _tuple(["1", UNCHANGED, "{}", "1"])
    upd2 += b"N" + _tuple(["1", UNCHANGED, UNCHANGED, "2"])
    items = Decoder().feed([_w(BEGIN), _w(rel), _w(upd2), _w(COMMIT)])
    (ev,) = [i for i in items if isinstance(i, ChangeEvent)]
    assert ev.after == {"id": 1, "doc": "{}", "n": 2} and ev.unchanged_columns == ("big",)


def test_unchanged_toast_with_key_tuple_is_not_filled() -> None:
    rel = _relation(1, [("id", 23, True), ("big", 25, False)], ident=b"d")
    upd = b"U" + struct.pack("!I", 1) + b"K" + _tuple(["1", None]) + b"N" + _tuple(["2", UNCHANGED])
    items = Decoder().feed([_w(BEGIN), _w(rel), _w(upd), _w(COMMIT)])
    (ev,) = [i for i in items if isinstance(i, ChangeEvent)]
    assert ev.before == {"id": 1} and ev.after == {"id": 2} and ev.unchanged_columns == ("big",)


def test_pending_type_oids_and_plans_from_the_registry() -> None:
    from cdcstream.sources.postgres.values import PgType, TypeRegistry

    rel = _relation(1, [("id", 23, True), ("tags", 1009, False), ("p", 30000, False)], ident=b"d")
    dec = Decoder(types=TypeRegistry())
    frames_ = [_w(BEGIN), _w(rel)]
    assert dec.pending_type_oids(frames_) == {1009, 30000}  # _text (not in the static table) and a user type
    assert dec.pending_type_oids([_w(BEGIN), _w(COMMIT)]) == set()  # no Relation: nothing to look up
    dec.types.add(
        [
            PgType(1009, "pg_catalog", "_text", "b", True, elem=25),
            PgType(30000, "public", "pt", "c", False, fields=(("x", 23), ("d", 30001))),
        ]
    )
    assert dec.pending_type_oids(frames_) == {30000, 30001}  # user types are refreshed; 30001 still unknown
    dec.types.add([PgType(30001, "public", "posint", "d", False, base=23)])
    assert dec.pending_type_oids(frames_) == {30000, 30001}  # refreshed on every Relation, never stale
    ins = b"I" + struct.pack("!I", 1) + b"N" + _tuple(["1", '{a,NULL,"b c"}', "(1,2)"])
    items = dec.feed([*frames_, _w(ins), _w(COMMIT)])
    (ev,) = [i for i in items if isinstance(i, ChangeEvent)]
    assert ev.after == {"id": 1, "tags": ["a", None, "b c"], "p": {"x": 1, "d": 2}}
    assert [c.type_name for c in ev.table.columns] == ["int4", "_text", "public.pt"]


def test_stale_composite_stops_the_batch_and_resumes_after_refresh() -> None:
    from cdcstream.sources.postgres.values import PgType, TypeRegistry

    reg = TypeRegistry()
    reg.add([PgType(30000, "public", "pt", "c", False, fields=(("x", 23), ("y", 23)))])
    dec = Decoder(types=reg)
    rel = _relation(1, [("id", 23, True), ("p", 30000, False)], ident=b"d")
    ins1 = b"I" + struct.pack("!I", 1) + b"N" + _tuple(["1", "(1,2)"])
    ins2 = b"I" + struct.pack("!I", 1) + b"N" + _tuple(["2", "(1,2,3)"])  # after ALTER TYPE ... ADD ATTRIBUTE
    batch = [_w(BEGIN), _w(rel), _w(ins1), _w(ins2), _w(COMMIT)]
    items = dec.feed(batch)
    assert [i.after for i in items if isinstance(i, ChangeEvent)] == [{"id": 1, "p": {"x": 1, "y": 2}}]
    assert dec.stalled is not None
    oids, rest = dec.stalled
    assert oids == {30000} and rest == batch[3:]
    dec.stalled = None
    reg.add([PgType(30000, "public", "pt", "c", False, fields=(("x", 23), ("y", 23), ("z", 23)))])
    dec.refresh_plans()
    items = dec.feed(rest)
    events = [i for i in items if isinstance(i, ChangeEvent)]
    assert events[0].after == {"id": 2, "p": {"x": 1, "y": 2, "z": 3}}
    assert events[0].transaction_record_id == 2  # the stalled message consumed no record id
    assert isinstance(items[-1], Marker) and dec.stalled is None


def _message(prefix: str, content: bytes, transactional: bool = True) -> bytes:
    return (
        b"M"
        + bytes([1 if transactional else 0])
        + struct.pack("!Q", 0x2000)
        + prefix.encode()
        + b"\x00"
        + (struct.pack("!i", len(content)) + content)
    )


def test_ddl_messages_become_control_events_in_place_and_bad_ones_are_skipped() -> None:
    snap = {
        "schema": "public",
        "table": "t",
        "key": ["id"],
        "columns": [{"num": 1, "name": "id", "type": "integer", "oid": 23}],
    }
    new = {**snap, "columns": [*snap["columns"], {"num": 2, "name": "x", "type": "text", "oid": 25}]}
    alter = json.dumps({"v": 1, "kind": "alter", "oid": 5, "old": snap, "new": new}).encode()
    rel = _relation(1, [("id", 23, True)])
    ins = b"I" + struct.pack("!I", 1) + b"N" + _tuple(["1"])
    d = Decoder()
    items = d.feed(
        [
            _w(BEGIN),
            _w(rel),
            _w(ins),
            _w(_message("cdcstream.ddl", b"{not json")),  # noted for the source to log and count: never fatal
            _w(_message("cdcstream.ddl", alter)),
            _w(_message("cdcstream.heartbeat", b"2026")),
            _w(_message("cdcstream.ddl", alter, transactional=False)),  # ours are always transactional
            _w(COMMIT),
        ]
    )
    events = [i for i in items if isinstance(i, ChangeEvent)]
    assert [(e.op, e.transaction_record_id) for e in events] == [(Op.INSERT, 1), (Op.ADD_COLUMN, 2)]
    assert events[1].change is not None and events[1].change.column == "x"
    assert [skipped["lsn"] for skipped in d.ddl_skipped] == ["0/2000"]  # the message's own LSN
    # unselected tables and the capture's own schema give nothing
    d = Decoder(selector=lambda s, t: t != "t")
    assert not [
        i for i in d.feed([_w(BEGIN), _w(_message("cdcstream.ddl", alter)), _w(COMMIT)]) if isinstance(i, ChangeEvent)
    ]
