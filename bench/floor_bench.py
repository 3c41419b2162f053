"""The least CPU per row a Python producer of this record format spends, to compare with the source's read rate.

A full load must, for every row, at least: split the source's text into fields, serialise the row as JSON,
base64 it into a PutRecords entry, hash the request body it is part of (SigV4 signs the payload's SHA-256) and
write that body to a socket. This measures those five steps alone, each over whole chunks with the cheapest
Python there is (C-level calls: ``str.split``, ``dict(zip())``, ``orjson``, the sink's own entry and signing
code, ``socket.sendall``): no type rendering, no mapping rules, no event loop, batching or acknowledgements.
Whatever cdcstream does, its per-row CPU cannot fall below this sum while the row path is Python.

The rows are the 10-column table of ``fullload_bench.py`` as PostgreSQL's COPY text prints it, the records
their load envelopes with primary-key partition keys (~450 bytes, like the load's). Sending goes over loopback
TCP to a child process that discards what it reads (its CPU is not counted: CPU time of this process only).

    python bench/floor_bench.py [--rows 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import orjson
from aiobotocore.credentials import AioCredentials

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import best_of, machine_line  # noqa: E402
from cdcstream.records import put_records_entry  # noqa: E402
from cdcstream.sinks.putrecords import PutRecordsClient  # noqa: E402

NAMES = ("id", "name", "grp", "price", "created", "active", "attrs", "hash", "ratio", "uid")
PER_REQUEST = 500
DRAIN = (
    "import socket,sys\n"
    "s=socket.create_connection(('127.0.0.1',int(sys.argv[1])))\n"
    "b=bytearray(1<<20)\n"
    "while s.recv_into(b):pass\n"
)


def copy_text(rows: int) -> str:
    """The table's rows as ``COPY bench TO STDOUT`` prints them (text format, no escapes)."""
    return "".join(
        f"{g}\tname {g}\t{g % 100}\t{(g % 1000) / 7.0:.20f}\t2026-11-28 04:10:00.123456+00\t"
        f'{"t" if g % 2 == 0 else "f"}\t{{"k": {g}}}\t{g:032x}\t{g / 3.0:.20f}\t'
        f"0b6a0e4c-4b5e-4f0e-9d3a-{g:012x}\n"
        for g in range(rows)
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.rows
    text = copy_text(n)
    meta = b',"metadata":{"timestamp":"2026-11-28T04:10:00.123456Z","record-type":"data","operation":"load",' \
        b'"partition-key-type":"primary-key","schema-name":"public","table-name":"bench"}}'  # fmt: skip
    lines = text.split("\n")[:-1]
    rows = [dict(zip(NAMES, line.split("\t"), strict=True)) for line in lines]
    datas = [b'{"data":' + orjson.dumps(r) + meta for r in rows]
    keys = [r["id"] for r in rows]
    entries = [put_records_entry(d, k) for d, k in zip(datas, keys, strict=True)]
    client = PutRecordsClient(
        stream_name="bench",
        region="us-east-1",
        endpoint_url="http://127.0.0.1:1",
        credentials=AioCredentials("AKIDBENCH", "secret"),
        request_timeout=5,
    )
    head = client._head  # the sink's own request prefix
    bodies = [head + b",".join(entries[i : i + PER_REQUEST]) + b"]}" for i in range(0, n, PER_REQUEST)]

    async def sign_all() -> None:
        for i in range(0, n, PER_REQUEST):
            await client._sign(head + b",".join(entries[i : i + PER_REQUEST]) + b"]}")

    loop = asyncio.new_event_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    drain = subprocess.Popen([sys.executable, "-c", DRAIN, str(listener.getsockname()[1])])
    conn, _ = listener.accept()

    def send_all() -> None:
        for body in bodies:
            conn.sendall(body)

    stages = [
        ("split COPY text into row dicts", lambda: [dict(zip(NAMES, ln.split("\t"), strict=True)) for ln in lines]),
        ("row dict -> JSON record (orjson + envelope)", lambda: [b'{"data":' + orjson.dumps(r) + meta for r in rows]),
        ("record -> PutRecords entry (base64)", lambda: list(map(put_records_entry, datas, keys))),
        ("request body join + SigV4 (SHA-256)", lambda: loop.run_until_complete(sign_all())),
        ("request body -> loopback TCP socket", send_all),
    ]
    try:
        print(machine_line())
        record, request = sum(map(len, datas)) / n, sum(map(len, bodies)) / n
        print(f"{n:,} rows, {record:.0f}-byte records, {request:.0f} request bytes/row")
        total = 0.0
        for name, fn in stages:
            us = best_of(args.repeat, fn, n)
            total += us
            print(f"  {name:45s} {us:6.2f} µs/row")
        print(f"floor: {total:.2f} µs/row = {1e6 / total:,.0f} rows/s on one core, before rendering and mapping")
    finally:
        conn.close()
        drain.wait(timeout=10)
        listener.close()
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
