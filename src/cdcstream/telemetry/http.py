"""HTTP endpoints (aiohttp): ``/metrics`` (Prometheus), ``/healthz`` (the event loop answers; never depends on
the database or Kinesis, so an outage does not become a restart storm), ``/readyz`` (connected and making
progress), ``/status`` (JSON: positions, lag, queues) and ``POST /reload?table=schema.table`` (re-copy one table
while CDC runs; ``cdcstream reload`` calls it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cdcstream.errors import CdcstreamError


class HttpServer:
    """Serves the endpoints on ``listen`` (HOST:PORT) until :meth:`stop`."""

    def __init__(
        self,
        listen: str,
        status: Callable[[], dict[str, Any]],
        ready: Callable[[], tuple[bool, str]],
        reload: Callable[[str], Awaitable[str]] | None = None,
    ) -> None:
        host, _, port = listen.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self._status, self._ready, self._reload = status, ready, reload
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status_handler)
        app.router.add_post("/reload", self._reload_handler)
        # A stop waits at most this long for requests being answered (all of them short), not aiohttp's 60 s.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0 and site._server is not None:  # ephemeral port (tests): report the real one
            sockets = getattr(site._server, "sockets", None) or []
            if sockets:
                self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, reason = self._ready()
        return web.Response(text=reason + "\n", status=200 if ok else 503)

    async def _status_handler(self, request: web.Request) -> web.Response:
        body = orjson.dumps(self._status(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        return web.Response(body=body, content_type="application/json")

    async def _reload_handler(self, request: web.Request) -> web.Response:
        table = request.query.get("table", "")
        if self._reload is None:
            return web.Response(text="reload is not available\n", status=404)
        try:
            message = await self._reload(table)
        except CdcstreamError as exc:  # a wrong table name, a full load still running, ...
            return web.Response(text=f"{exc}\n", status=400)
        return web.Response(text=message + "\n", status=202)
