"""Kinesis-API servers for tests: moto (in-process ``ThreadedMotoServer``) and kinesalite (node process).

Fixtures:

* ``moto_server`` / ``kinesalite_server`` (session): the server's endpoint URL. kinesalite needs node and
  ``npm ci --prefix tests/support/kinesalite`` (run here if ``node_modules`` is missing); without them the
  tests that need it are skipped locally and fail in CI (:func:`tests.support.server_missing`).
  kinesalite can die when a client is killed in the middle of a request, so the fixture restarts it when
  its process is gone.
* ``kinesis_endpoint`` (parametrised over ``moto`` and ``kinesalite``): a :class:`KinesisEndpoint` with
  ``create_stream`` and ``read_all``. moto slows down as a shard fills (O(n) per put), so each test should
  create its own small stream.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cdcstream.tail import read_all
from tests.support import free_port, server_missing

KINESALITE_DIR = Path(__file__).parent / "kinesalite"
REGION = "us-east-1"
_names = itertools.count()


def _set_dummy_aws_env(mp: pytest.MonkeyPatch) -> None:
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", REGION)
    mp.delenv("AWS_PROFILE", raising=False)
    mp.delenv("AWS_SESSION_TOKEN", raising=False)
    # No IMDS lookups from tests.
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def aws_env() -> Iterator[None]:
    """Dummy AWS credentials and region for the whole session (never real ones)."""
    mp = pytest.MonkeyPatch()
    _set_dummy_aws_env(mp)
    yield
    mp.undo()


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=0.5).read()
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False
    return True


def _serialized_moto_server() -> Any:
    """A ThreadedMotoServer whose requests run one at a time.

    moto's ``Shard.put_record`` is not thread-safe ("not safe for concurrency": the next sequence number is
    read, incremented and stored without a lock), and its server handles requests in threads, so two
    concurrent PutRecords on one shard silently overwrite each other's records. The sink legitimately keeps
    several requests in flight, so the requests are serialised here.
    """
    import threading

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    lock = threading.Lock()

    class SerializedMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)

            def locked_app(environ: Any, start_response: Any) -> Any:
                with lock:
                    return list(app(environ, start_response))

            self._server = make_server(
                self._ip_address, self._port, locked_app, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    return SerializedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)


@pytest.fixture(scope="session")
def moto_server(aws_env: None) -> Iterator[str]:
    """moto's server in a thread on 127.0.0.1, random port, requests serialised; yields its URL."""
    try:
        server = _serialized_moto_server()
    except ImportError as exc:
        server_missing(f"moto[server] not installed: {exc}")
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class KinesaliteProcess:
    """A kinesalite node process, restartable (it can die when a client is killed mid-request)."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None:
            server_missing("node is not installed (needed for kinesalite)")
        self.node = node
        if not (KINESALITE_DIR / "node_modules" / "kinesalite").is_dir():
            npm = shutil.which("npm")
            if npm is None:
                server_missing("npm is not installed (needed to install kinesalite)")
            proc = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(KINESALITE_DIR)],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if proc.returncode != 0:
                server_missing(f"npm ci for kinesalite failed: {proc.stderr[-500:]}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.url = ""

    def start(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [self.node, str(KINESALITE_DIR / "kinesalite-local.js"), str(self.port)],
            cwd=KINESALITE_DIR,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not _answers(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                server_missing("kinesalite did not start")
            time.sleep(0.05)

    def ensure_running(self) -> str:
        """The URL; restarts the server (new port, empty state) if its process died."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        return self.url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def kinesalite_process(aws_env: None) -> Iterator[KinesaliteProcess]:
    kp = KinesaliteProcess()
    kp.start()
    yield kp
    kp.stop()


@pytest.fixture
def kinesalite_server(kinesalite_process: KinesaliteProcess) -> str:
    """kinesalite's URL (restarted first if its process died)."""
    return kinesalite_process.ensure_running()


class KinesisEndpoint:
    """A Kinesis-API server under test: its URL plus helpers to create and read streams."""

    def __init__(self, kind: str, endpoint_url: str) -> None:
        self.kind = kind
        self.endpoint_url = endpoint_url
        self.region = REGION

    def client(self) -> Any:
        from aiobotocore.session import get_session

        return get_session().create_client("kinesis", region_name=REGION, endpoint_url=self.endpoint_url)

    async def create_stream(self, shards: int = 1, *, prefix: str = "t") -> str:
        """Create a uniquely named stream and wait until it is ACTIVE; returns its name."""
        name = f"{prefix}-{os.getpid()}-{next(_names)}-{int(time.time() * 1000) % 100000}"
        async with self.client() as kc:
            await kc.create_stream(StreamName=name, ShardCount=shards)
            for _ in range(200):
                d = await kc.describe_stream_summary(StreamName=name)
                if d["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"stream {name} did not become ACTIVE")
        return name

    async def delete_stream(self, name: str) -> None:
        async with self.client() as kc:
            await kc.delete_stream(StreamName=name)

    async def read_all(self, name: str) -> list[dict[str, Any]]:
        """Every record in the stream, shard by shard, in order (see :func:`cdcstream.tail.read_all`)."""
        return await read_all(name, region=REGION, endpoint_url=self.endpoint_url)


@pytest.fixture(params=["moto", "kinesalite"])
def kinesis_endpoint(request: pytest.FixtureRequest) -> KinesisEndpoint:
    """Each test using this runs against moto and against kinesalite."""
    kind: str = request.param
    url: str = request.getfixturevalue(f"{kind}_server")
    return KinesisEndpoint(kind, url)
