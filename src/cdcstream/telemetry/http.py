"""HTTP endpoints (aiohttp): ``/metrics`` (Prometheus), ``/healthz`` (the event loop answers; never depends on
the database or Kinesis, so an outage does not become a restart storm), ``/readyz`` (connected and making
progress), ``/status`` (JSON: positions, lag, queues) and the control endpoint ``POST /reload?table=schema.table``
(re-copy one table while CDC runs; ``cdcstream reload`` calls it), which needs the control token and refuses
browsers (:mod:`cdcstream.telemetry.control`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cdcstream.errors import CdcstreamError, ConfigError
from cdcstream.telemetry import metrics
from cdcstream.telemetry.control import refusal

log = structlog.get_logger(__name__)

#: Seconds between "control request refused" lines: a flood of requests must not become a flood of logs (the
#: counter cdcstream_control_requests_total{outcome="denied"} counts every one).
REFUSAL_LOG_INTERVAL = 10.0


class HttpServer:
    """Serves the endpoints on ``listen`` (HOST:PORT) until :meth:`stop`. ``control_token`` authorises
    ``POST /reload`` (None: the endpoint answers 503)."""

    def __init__(
        self,
        listen: str,
        status: Callable[[], dict[str, Any]],
        ready: Callable[[], tuple[bool, str]],
        reload: Callable[[str], Awaitable[str]] | None = None,
        control_token: str | None = None,
    ) -> None:
        self.listen = listen
        host, _, port = listen.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self._status, self._ready, self._reload = status, ready, reload
        self._token = control_token
        self._refusals_unlogged = 0
        self._refusal_logged_at = -REFUSAL_LOG_INTERVAL
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
        try:
            await site.start()
        except OSError as exc:  # a name that does not resolve, an address not on this host, a port in use
            await self._runner.cleanup()
            raise ConfigError(
                f"[http] listen = {self.listen!r}: cannot listen there: {exc.strerror or exc}. Fix: an address of "
                "this host and a free port (another process, or another cdcstream task, may have it), or "
                'listen = "" to turn the endpoints off'
            ) from None
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
        refused = refusal(request.headers, self._token)
        if refused is not None:
            status, reason = refused
            metrics.CONTROL_REQUESTS.labels("denied").inc()
            self._refusals_unlogged += 1
            now = time.monotonic()
            if now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL:
                log.warning(
                    "control request refused",
                    path=request.path,
                    peer=request.remote,
                    status=status,
                    reason=reason,
                    refused_since_last_line=self._refusals_unlogged,
                )
                self._refusals_unlogged, self._refusal_logged_at = 0, now
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return web.Response(text=reason + "\n", status=status, headers=headers)
        table = request.query.get("table", "")
        if self._reload is None:
            return web.Response(text="reload is not available\n", status=404)
        try:
            message = await self._reload(table)
        except CdcstreamError as exc:  # a wrong table name, no SELECT on it, a full load still running, ...
            metrics.CONTROL_REQUESTS.labels("refused").inc()
            return web.Response(text=f"{exc}\n", status=400)
        metrics.CONTROL_REQUESTS.labels("accepted").inc()
        return web.Response(text=message + "\n", status=202)
