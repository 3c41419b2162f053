"""A fault-injecting reverse proxy in front of a real Kinesis-API server (moto, kinesalite).

Neither moto nor kinesalite produces throttling or partial failures, so tests put this between the sink
and the server. It runs an aiohttp server on its own event loop in a background thread, so it works the same
from sync and async tests. Only PutRecords is tampered with; every other call passes through untouched.

Faults (all fractions drawn from one seeded RNG, settable at any time):

* ``entry_failure_rate`` with ``entry_mode``:
  ``"rewrite"`` forwards the request, then turns that fraction of the *successful* entries of the answer into
  ``ProvisionedThroughputExceededException`` (those records **were written**: the stream holds them, the
  client must resend them: the duplicate case); ``"strip"`` removes the chosen entries from the forwarded
  request so they are really not written, and answers them as throttled.
* ``request_error_rate``: the whole request answers HTTP 500 ``InternalFailure``; with
  ``request_error_after_forward`` (default) the request was forwarded first, so it was written anyway.
* ``reset_rate``: the connection is aborted after forwarding (the client sees a disconnect).
* ``outage(seconds, kind="503"|"reset", every_call=False)``: every PutRecords (with ``every_call``, every
  request: DescribeStreamSummary and ListShards too, as when the endpoint is unreachable) fails for a while,
  without being forwarded.
* ``latency``: seconds added before answering.
* ``bandwidth``: bytes per second for request bodies, shared by all connections like one slow link (None:
  unlimited). A body is read at that rate before it is forwarded, so a client that gives up (its timeout)
  before the last byte has written nothing; ``counters["disconnected"]`` counts those.

``counters`` counts what was injected.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson
from aiohttp import web

PUT_RECORDS = "Kinesis_20131202.PutRecords"
THROTTLED = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded (injected)"}
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class FaultProxy:
    """Reverse proxy to ``upstream`` with injected PutRecords faults; ``url`` is where clients connect."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 1,
        entry_failure_rate: float = 0.0,
        entry_mode: str = "rewrite",
        request_error_rate: float = 0.0,
        request_error_after_forward: bool = True,
        reset_rate: float = 0.0,
        latency: float = 0.0,
        bandwidth: float | None = None,
    ) -> None:
        if entry_mode not in ("rewrite", "strip"):
            raise ValueError(f"entry_mode must be 'rewrite' or 'strip', not {entry_mode!r}")
        self.upstream = upstream.rstrip("/")
        self.rng = random.Random(seed)
        self.entry_failure_rate = entry_failure_rate
        self.entry_mode = entry_mode
        self.request_error_rate = request_error_rate
        self.request_error_after_forward = request_error_after_forward
        self.reset_rate = reset_rate
        self.latency = latency
        self.bandwidth = bandwidth
        self.counters: Counter[str] = Counter()
        self._outage_until = 0.0
        self._outage_kind = "503"
        self._outage_every_call = False
        self._link_free_at = 0.0  # when the shared link has sent every byte given to it so far
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self.url = ""

    # --- control -----------------------------------------------------------------------------------------
    def outage(self, seconds: float, kind: str = "503", *, every_call: bool = False) -> None:
        """Fail every PutRecords (``every_call``: every request) for ``seconds`` (HTTP 503 or connection reset),
        without forwarding."""
        self._outage_kind = kind
        self._outage_every_call = every_call
        self._outage_until = time.monotonic() + seconds

    def start(self) -> FaultProxy:
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=main, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- server ------------------------------------------------------------------------------------------
    async def _start(self) -> None:
        self._client = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def _rand(self) -> float:
        with self._lock:
            return self.rng.random()

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._client.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as resp:
            out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS}
            return resp.status, out_headers, await resp.read()

    @staticmethod
    def _reset(request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.abort()
        return web.Response(status=500)

    @staticmethod
    def _error(status: int, code: str) -> web.Response:
        body = orjson.dumps({"__type": code, "message": f"{code} (injected)"})
        return web.Response(status=status, body=body, content_type="application/x-amz-json-1.1")

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The request body, at ``bandwidth`` bytes/s over the shared link; None if the client went away."""
        if self.bandwidth is None:
            return await request.read()
        parts: list[bytes] = []
        try:
            async for chunk in request.content.iter_chunked(4096):
                now = time.monotonic()
                self._link_free_at = max(now, self._link_free_at) + len(chunk) / self.bandwidth
                await asyncio.sleep(self._link_free_at - now)
                parts.append(chunk)
        except (aiohttp.ClientError, ConnectionError):
            self.counters["disconnected"] += 1
            return None
        if request.transport is None or request.transport.is_closing():
            self.counters["disconnected"] += 1
            return None
        return b"".join(parts)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_body(request)
        if body is None:
            return web.Response(status=499)
        if self._outage_every_call and time.monotonic() < self._outage_until:
            return self._outage(request)
        if request.headers.get("X-Amz-Target") != PUT_RECORDS:
            status, headers, raw = await self._forward(request, body)
            return web.Response(status=status, body=raw, headers=headers)
        return await self._put_records(request, body)

    def _outage(self, request: web.Request) -> web.Response:
        self.counters["outage"] += 1
        if self._outage_kind == "reset":
            return self._reset(request)
        return self._error(503, "ServiceUnavailable")

    async def _put_records(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """A PutRecords with its faults, drawn in one order (request error, stripped entries, reset, rewritten
        entries) so that a seed replays the same faults."""
        self.counters["put_records"] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if time.monotonic() < self._outage_until:
            return self._outage(request)
        req_error = self.request_error_rate and self._rand() < self.request_error_rate
        if req_error and not self.request_error_after_forward:
            self.counters["request_500"] += 1
            return self._error(500, "InternalFailure")
        fail_idx: list[int] = []
        total = 0
        if self.entry_failure_rate and self.entry_mode == "strip":
            body, fail_idx, total = self._strip(body)
            if fail_idx and len(fail_idx) == total:  # nothing left to forward
                self.counters["entries_failed"] += len(fail_idx)
                return self._put_answer(total, fail_idx, [])
        status, headers, raw = await self._forward(request, body)
        if req_error:
            self.counters["request_500"] += 1
            return self._error(500, "InternalFailure")
        if self.reset_rate and self._rand() < self.reset_rate:
            self.counters["reset"] += 1
            return self._reset(request)
        if status != 200:
            return web.Response(status=status, body=raw, headers=headers)
        if fail_idx:
            answer = orjson.loads(raw)
            self.counters["entries_failed"] += len(fail_idx)
            return self._put_answer(total, fail_idx, answer["Records"])
        if self.entry_failure_rate:
            raw = self._rewrite(raw)
        return web.Response(status=200, body=raw, content_type="application/x-amz-json-1.1")

    def _strip(self, body: bytes) -> tuple[bytes, list[int], int]:
        """The request without the entries chosen to fail: (body to forward, their indexes, the entries before)."""
        doc = orjson.loads(body)
        records = doc["Records"]
        fail_idx = [i for i in range(len(records)) if self._rand() < self.entry_failure_rate]
        if not fail_idx:
            return body, [], 0
        drop = set(fail_idx)
        doc["Records"] = [r for i, r in enumerate(records) if i not in drop]
        return orjson.dumps(doc), fail_idx, len(records)

    def _rewrite(self, raw: bytes) -> bytes:
        """The answer with the chosen accepted entries turned into throttled ones (they were written)."""
        answer = orjson.loads(raw)
        failed = 0
        entries: list[dict[str, Any]] = answer["Records"]
        for i, e in enumerate(entries):
            if "ErrorCode" not in e and self._rand() < self.entry_failure_rate:
                entries[i] = dict(THROTTLED)
                self.counters["entries_failed"] += 1
                self.counters["entries_failed_written"] += 1
            if "ErrorCode" in entries[i]:
                failed += 1
        answer["FailedRecordCount"] = failed
        return orjson.dumps(answer)

    @staticmethod
    def _put_answer(total: int, fail_idx: list[int], upstream_entries: list[dict[str, Any]]) -> web.Response:
        entries: list[dict[str, Any]] = []
        it = iter(upstream_entries)
        drop = set(fail_idx)
        failed = 0
        for i in range(total):
            e = dict(THROTTLED) if i in drop else next(it)
            if "ErrorCode" in e:
                failed += 1
            entries.append(e)
        body = orjson.dumps({"FailedRecordCount": failed, "Records": entries})
        return web.Response(status=200, body=body, content_type="application/x-amz-json-1.1")
