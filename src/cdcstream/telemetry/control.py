"""Who may use the control endpoint (``POST /reload``): the bearer token, where it comes from, and which requests
are refused before it is even compared.

The metrics listener must be reachable by Prometheus (``0.0.0.0:9187`` in a container or pod), and a reload
request is stored in the checkpoint, so an open endpoint would let anyone who reaches the port change what the
daemon does across restarts. Control requests therefore need ``Authorization: Bearer <token>``, where the token
is, in this order:

* ``[http] control_token`` (or the environment variable ``CDCSTREAM_HTTP__CONTROL_TOKEN``), or
  ``[http] control_token_file`` (a Kubernetes/Docker secret mounted as a file);
* otherwise a random token the daemon writes to ``<state_dir>/control-token`` (mode 0600) at start. Whoever may
  read the state directory (the checkpoint's owner: the service's user, root, ``kubectl exec``/``docker exec``
  into the container) may run ``cdcstream reload``, which reads the same file; nobody else can.

Browsers are refused whatever the token: a request carrying ``Origin`` or any ``Sec-Fetch-*`` header (browsers
add them, ``cdcstream reload`` and curl do not; this also defeats DNS rebinding, where the page's origin looks
like ours) or a body that is not JSON (what an HTML form can post across sites without a CORS preflight).
The token is never logged, printed or put in ``/status``.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import structlog

from cdcstream.config import Config, token_problem

log = structlog.get_logger(__name__)

TOKEN_FILE = "control-token"


def token_path(cfg: Config) -> Path:
    """Where the daemon keeps the token it generates when the config names none."""
    return cfg.resolve(cfg.checkpoint.state_dir) / TOKEN_FILE


def configured_token(cfg: Config) -> str | None:
    """The token from the config or the environment (read and checked when the config was loaded), or None."""
    token = cfg.http.control_token
    return None if token is None else token.get_secret_value()


def client_token(cfg: Config) -> str | None:
    """The token ``cdcstream reload`` sends: the configured one, else the one the daemon generated (None when
    there is none yet). Raises OSError when the generated file exists but cannot be read (a permission)."""
    token = configured_token(cfg)
    if token is not None:
        return token
    try:
        token = token_path(cfg).read_text().strip()
    except FileNotFoundError:
        return None
    return token if token_problem(token) is None else None


def daemon_token(cfg: Config) -> str:
    """The token the daemon requires: the configured one, else the state directory's, created on the first start
    and replaced when it is unusable (empty after a crash, edited); it is the daemon's own file, so replacing it
    is safe. Raises OSError when the state directory cannot hold it."""
    token = configured_token(cfg)
    if token is not None:
        return token
    path = token_path(cfg)
    try:
        stored = path.read_text().strip()
    except FileNotFoundError:
        stored = None
    if stored is not None and token_problem(stored) is None:
        return stored
    token = secrets.token_hex(32)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    if stored is None:
        try:
            os.link(tmp, path)  # never over a token another daemon sharing the directory just wrote
        except FileExistsError:
            os.unlink(tmp)
            return daemon_token(cfg)
        os.unlink(tmp)
        log.info("control token generated", file=str(path))
    else:
        os.replace(tmp, path)
        log.warning("control token file was unusable (empty or not a token); replaced it", file=str(path))
    return token


def refusal(headers: Mapping[str, str], token: str | None) -> tuple[int, str] | None:
    """``(HTTP status, reason)`` when a control request must be refused, or None when it may proceed."""
    if "Origin" in headers or any(name.lower().startswith("sec-fetch-") for name in headers):
        return 403, "control requests from web browsers are refused (Origin / Sec-Fetch-* header present)"
    content_type = headers.get("Content-Type")
    if content_type and content_type.partition(";")[0].strip().lower() != "application/json":
        return 415, f"control requests take no form data (Content-Type {content_type.partition(';')[0]!r})"
    if token is None:
        return 503, "the control endpoint is disabled: the daemon has no control token (see its log)"
    scheme, _, given = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return 401, (
            "missing or wrong control token: send 'Authorization: Bearer <token>' (cdcstream reload does; "
            "docs/control-plane.md)"
        )
    return None
