"""Command line: ``run``, ``check``, ``tail``, ``status``, ``reload``, ``print-config``, ``setup``, ``healthcheck``,
``adopt-checkpoint``.

Exit codes (docs/troubleshooting.md): 0 ok / stopped cleanly; 1 a failed check, no answer from the daemon, or an
unexpected error; 2 invalid command line, configuration or mapping; 3 source error; 4 mapping error; 5 Kinesis
error; 6 checkpoint error; 130 second signal (immediate exit, still at-least-once). Every failure reaches the user
as a message with its fix, never as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import orjson
import structlog

from cdcstream import __version__
from cdcstream.config import Config, load_config
from cdcstream.errors import CdcstreamError, ConfigError
from cdcstream.telemetry.logging import configure as configure_logging

log = structlog.get_logger(__name__)


#: Where the documentation is published: README.md and docs/ of the source tree.
DOCS = "https://github.com/cdcstream/cdcstream"


def _sub(sub: Any, name: str, summary: str, description: str, section: str, doc: str) -> argparse.ArgumentParser:
    """One subcommand: ``summary`` in the command list, ``description`` and the docs pointer in its --help.
    ``doc`` is the page of docs/ and the anchor of ``section`` on it (``page.md#anchor``)."""
    page = doc.partition("#")[0]
    return sub.add_parser(  # type: ignore[no-any-return]
        name,
        help=summary,
        description=description,
        epilog=f'Documentation: docs/{page}, "{section}" ({DOCS}/blob/HEAD/docs/{doc}). '
        'Exit codes: docs/troubleshooting.md, "Exit codes".',
    )


def _seconds(text: str) -> float:
    """An argparse type: a duration in seconds, more than 0 and at most an hour."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 3600:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600 seconds, got {text!r}")
    return value


def _config_arg(p: argparse.ArgumentParser, purpose: str = "", *, required: bool = True) -> None:
    p.add_argument(
        "--config",
        "-c",
        required=required,
        default=None,
        metavar="FILE",
        help="the TOML configuration file (config/cdcstream.example.toml lists every key)" + purpose,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cdcstream",
        description="Change data capture from PostgreSQL and MySQL/MariaDB to Amazon Kinesis, in AWS DMS's record "
        "format.",
        epilog=f"`cdcstream COMMAND --help` describes each command. Documentation: README.md and docs/ ({DOCS}).",
    )
    p.add_argument("--version", action="version", version=f"cdcstream {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _config_arg(
        _sub(
            sub,
            "run",
            "stream changes to Kinesis until stopped",
            "Stream committed changes to the Kinesis stream until SIGTERM/SIGINT (drain in-flight records, write "
            "the checkpoint, exit 0). Retriable problems are retried with backoff; others stop it with an exit "
            "code and the fix.",
            "Stopping",
            "operations.md#stopping",
        )
    )
    _config_arg(
        _sub(
            sub,
            "check",
            "validate the config, connect to the source and the stream, and print what to fix",
            "Check every prerequisite one by one (config and mapping, source settings and privileges, slot or "
            "binlog position against the stored checkpoint, tables and rules, stream and permissions): OK, WARN "
            "or FAIL, with the fix. Exit 0 when nothing failed, 1 otherwise.",
            "check says what run will do",
            "troubleshooting.md#check-says-what-run-will-do",
        )
    )
    _config_arg(
        _sub(
            sub,
            "status",
            "print the stored checkpoint and, if the daemon runs, its /status",
            "Print the stored checkpoint and, when the daemon answers on [http] listen, its /status, as JSON.",
            "Endpoints",
            "operations.md#endpoints",
        )
    )
    _config_arg(
        _sub(
            sub,
            "print-config",
            "print the validated configuration with secrets redacted",
            "Validate the configuration (file and CDCSTREAM_<SECTION>__<KEY> environment overrides) and print it "
            "as JSON with every default filled in and secrets redacted.",
            "Configuration",
            "configuration.md#configuration",
        )
    )
    _config_arg(
        _sub(
            sub,
            "adopt-checkpoint",
            "record this config's task as the owner of its checkpoint file",
            "Record this config's task (engine, database, slot, stream) as the owner of its checkpoint file, "
            "keeping the position: after a deliberate change of those, or for a file an older cdcstream wrote. "
            "The daemon must be stopped; the server checks still run at its next start.",
            "Checkpoints",
            "delivery-guarantees.md#checkpoints",
        )
    )
    rp = _sub(
        sub,
        "reload",
        "re-copy one table (as load records) while the running daemon keeps streaming",
        "Ask the running daemon (POST /reload on its [http] listen address) to re-copy one table as load "
        "records while CDC goes on. Exit 0 when queued, 1 when refused or the daemon does not answer.",
        "Reloading one table while CDC runs",
        "full-load.md#reloading-one-table-while-cdc-runs",
    )
    _config_arg(rp, "; its [http] listen is used")
    rp.add_argument("--table", required=True, metavar="SCHEMA.TABLE", help="the table to re-copy, e.g. public.orders")
    hp = _sub(
        sub,
        "healthcheck",
        "exit 0 if the running daemon's /healthz answers (container HEALTHCHECK; no shell or curl needed)",
        "GET the running daemon's /healthz: exit 0 when it answers 200, 1 otherwise (a container HEALTHCHECK "
        "that needs no shell or curl).",
        "Endpoints",
        "operations.md#endpoints",
    )
    _config_arg(hp, "; its [http] listen is used (default address 127.0.0.1:9187)", required=False)
    hp.add_argument("--url", default=None, help="the full URL to GET instead (default http://127.0.0.1:9187/healthz)")
    hp.add_argument(
        "--timeout", type=_seconds, default=3.0, metavar="SECONDS", help="give up after this long (default 3)"
    )
    su = _sub(
        sub,
        "setup",
        "one-time database setup that needs more privileges than the daemon has",
        "One-time setup a database administrator runs: postgres-ddl installs (idempotently) or removes the "
        "event triggers that capture DROP TABLE and ALTER TABLE on PostgreSQL.",
        "PostgreSQL DDL capture",
        "schema-changes.md#postgresql-ddl-capture",
    )
    su.add_argument("what", choices=["postgres-ddl"], help="postgres-ddl: DDL capture (event triggers)")
    _config_arg(su, "; its [source] database and connection settings are used")
    who = su.add_mutually_exclusive_group()
    who.add_argument("--user", help="connect as this superuser instead of [source] user (password: PGPASSWORD)")
    who.add_argument("--dsn", help="libpq connection string of a superuser session (overrides [source])")
    su.add_argument("--uninstall", action="store_true", help="remove the triggers and the cdcstream schema")
    su.add_argument("--print-sql", action="store_true", help="print the SQL script instead of running it")
    tp = _sub(
        sub,
        "tail",
        "print the records of a Kinesis stream (all shards)",
        "Print the records of every shard of a Kinesis stream as JSON lines ({shard, sequence, partition_key, "
        "data}), from the oldest record kept (or with --latest from now on), following new ones until Ctrl-C. "
        "AWS credentials come from the standard chain; a local Kinesis-API server needs dummy ones "
        "(AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test).",
        "Commands",
        "operations.md#commands",
    )
    tp.add_argument("--stream", required=True, metavar="NAME", help="the Kinesis stream to read")
    tp.add_argument("--region", default="us-east-1", help="its AWS region (default us-east-1)")
    tp.add_argument(
        "--endpoint-url", default=None, metavar="URL", help="a Kinesis-API endpoint instead of AWS's (local servers)"
    )
    tp.add_argument("--latest", action="store_true", help="only records written from now on")
    tp.add_argument("--no-follow", action="store_true", help="exit when the shards are read up to now")
    return p


def _redacted(cfg: Config) -> dict[str, Any]:
    return cfg.model_dump(mode="json")  # SecretStr dumps as "**********"


async def _run(cfg: Config) -> int:
    from cdcstream.pipeline import Pipeline
    from cdcstream.runtime.collector import settle
    from cdcstream.wiring import build_parts

    pipeline = Pipeline(cfg, build_parts(cfg))
    pipeline.on_started = settle
    return await pipeline.run()


async def _check(cfg: Config) -> int:
    from cdcstream.checks import run_all

    results = await run_all(cfg)
    width = max((len(r.name) for r in results), default=0)
    for r in results:
        print(f"{'FAIL' if not r.ok else 'WARN' if r.warning else 'OK  '} {r.name.ljust(width)}  {r.detail}")
        if (not r.ok or r.warning) and r.fix:
            print(f"     {' ' * width}  fix: {r.fix}")
    failed = sum(not r.ok for r in results)
    warned = sum(r.ok and r.warning for r in results)
    print(f"\n{len(results) - failed} ok, {failed} failed" + (f" ({warned} with warnings)" if warned else ""))
    return 1 if failed else 0


def _local_url(listen: str, path: str) -> str:
    """URL of the daemon's own HTTP endpoint ``path``; a wildcard listen address is reached on loopback."""
    host, _, port = listen.rpartition(":")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]", "") else host
    return f"http://{host}:{port}{path}"


def _healthcheck(args: argparse.Namespace) -> int:
    """GET /healthz with the standard library (fast start-up, works in a minimal image)."""
    import urllib.error
    import urllib.request

    url = args.url
    if url is None:
        listen = load_config(args.config).http.listen if args.config else "127.0.0.1:9187"
        if not listen:
            print("cdcstream: healthcheck: [http] listen is off in the config", file=sys.stderr)
            return 1
        url = _local_url(listen, "/healthz")
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            ok = resp.status == 200
    except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: not an http URL
        print(f"cdcstream: healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


async def _status(cfg: Config) -> int:
    from cdcstream.checkpoints.store import FileCheckpointStore

    store = FileCheckpointStore.for_task(cfg)
    checkpoint, owner = store.read() or (None, None)
    out: dict[str, Any] = {"checkpoint_file": str(store.path), "checkpoint": checkpoint, "written_for": owner}
    problem = store.ownership_problem(owner)
    if problem is not None:
        out["checkpoint_problem"] = problem  # what run would refuse with (exit 6)
    if cfg.http.listen:
        import aiohttp

        url = _local_url(cfg.http.listen, "/status")
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s, s.get(url) as resp:
                out["daemon"] = await resp.json()
        except (aiohttp.ClientError, TimeoutError, OSError):
            out["daemon"] = None
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def _adopt_checkpoint(cfg: Config) -> int:
    """Re-write the checkpoint file with this config's task as its owner (the position is kept). The server
    checks still apply at the next start: adopting never lets a position that does not fit the server through."""
    from cdcstream.checkpoints.model import position as checkpoint_position
    from cdcstream.checkpoints.store import FileCheckpointStore, describe_owner

    store = FileCheckpointStore.for_task(cfg)
    store.lock()  # not while a daemon of this task runs (it would overwrite the file at its next checkpoint)
    try:
        checkpoint, former = store.adopt()
    finally:
        store.unlock()
    assert store.owner is not None
    position = checkpoint_position(checkpoint)
    print(
        f"{store.path}: adopted for {describe_owner(store.owner)} (it was written for "
        f"{describe_owner(former) if former else 'a task an older cdcstream did not record'}). The next start "
        f"resumes from {position or 'its stored load state'} if the server confirms the position fits."
    )
    return 0


def _setup(cfg: Config, args: argparse.Namespace) -> int:
    """``setup postgres-ddl``: install (idempotent) or remove the DDL capture event triggers."""
    from cdcstream.config import PostgresSourceConfig
    from cdcstream.sources.postgres import ddl
    from cdcstream.sources.postgres.connection import build_conninfo

    if args.print_sql:
        sys.stdout.write(ddl.script(uninstall=args.uninstall))
        return 0
    source = cfg.source
    if not isinstance(source, PostgresSourceConfig):
        print("cdcstream: setup postgres-ddl: [source] engine is not postgres", file=sys.stderr)
        return 2
    if args.dsn:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        conninfo = args.dsn
        try:
            parsed = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise ConfigError(f"--dsn is not a libpq connection string: {exc}") from None
        if "dbname" not in parsed:
            conninfo = make_conninfo(conninfo, dbname=source.database)
    elif args.user:
        conninfo = build_conninfo(source.model_copy(update={"user": args.user, "password": None}), replication=False)
    else:
        conninfo = build_conninfo(source, replication=False)
    from cdcstream.mapping.ruleparse import load_rules

    selection = load_rules(cfg.resolve(cfg.table_mappings) if cfg.table_mappings else None).selection_regexes()
    outcome = ddl.install(conninfo, uninstall=args.uninstall, register=(source.publication, selection))
    print(
        f"DDL capture {'removed from' if args.uninstall else 'installed in'} database {source.database}"
        + ("" if args.uninstall else f" (event triggers {', '.join(ddl.TRIGGERS)})")
    )
    if not args.uninstall:
        print(
            f"new tables the mapping selects are added to publication {source.publication} ({outcome})"
            if outcome
            else f"publication {source.publication} does not exist yet: the daemon registers the mapping's "
            "selection with DDL capture when it creates it"
        )
    return 0


def _reload(cfg: Config, table: str) -> int:
    """POST /reload to the running daemon: re-copy one table while CDC runs (PostgreSQL, MySQL/MariaDB;
    migration_type cdc or full-load-and-cdc after the initial load). A refusal is printed, exit 1."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from cdcstream.telemetry.control import client_token, token_path

    if not cfg.http.listen:
        print("cdcstream: reload: [http] listen is off; the daemon takes reload requests over HTTP", file=sys.stderr)
        return 1
    try:
        token = client_token(cfg)
    except OSError as exc:
        print(f"cdcstream: reload: cannot read the control token {token_path(cfg)}: {exc.strerror}", file=sys.stderr)
        return 1
    if token is None:
        print(
            f"cdcstream: reload: no control token: the daemon writes one to {token_path(cfg)} when it starts (is it "
            "running with this config?), or set [http] control_token_file in the config of both",
            file=sys.stderr,
        )
        return 1
    url = _local_url(cfg.http.listen, "/reload") + "?" + urllib.parse.urlencode({"table": table})
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            print(resp.read().decode().strip())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"cdcstream: reload: {exc.read().decode().strip()}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"cdcstream: reload: is the daemon running? {url}: {exc}", file=sys.stderr)
        return 1


async def _tail(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

    from cdcstream.errors import SinkError
    from cdcstream.sinks import hints
    from cdcstream.sinks.putrecords import error_hint
    from cdcstream.tail import tail

    try:
        await tail(
            args.stream,
            region=args.region,
            endpoint_url=args.endpoint_url,
            from_start=not args.latest,
            follow=not args.no_follow,
        )
    except NoCredentialsError:
        raise SinkError(str(hints.no_credentials(args.endpoint_url))) from None
    except (ParamValidationError, ValueError) as exc:  # a stream name Kinesis cannot have, a malformed URL or region
        raise ConfigError(f"tail: {exc}".replace("\n", " ")) from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        if code == "ResourceNotFoundException":
            raise SinkError(
                str(hints.missing_stream(args.stream, args.region, args.endpoint_url, "--stream"))
            ) from None
        raise SinkError(f"stream {args.stream}: {code}: {exc} -- {error_hint(code)}") from None
    except BrokenPipeError:
        raise  # our reader went away (main() ends quietly), not Kinesis
    except (BotoCoreError, OSError) as exc:  # an endpoint that does not answer, a bad URL, a region without DNS
        raise SinkError(str(hints.unreachable(args.region, args.endpoint_url, exc))) from None
    return 0


def _command(args: argparse.Namespace) -> int:
    if args.command == "healthcheck":
        return _healthcheck(args)
    if args.command == "tail":
        configure_logging("warning", "auto")
        return asyncio.run(_tail(args))
    cfg = load_config(args.config)
    configure_logging(cfg.log.level, cfg.log.format)
    if args.command == "print-config":
        sys.stdout.write(orjson.dumps(_redacted(cfg), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if args.command == "check":
        return asyncio.run(_check(cfg))
    if args.command == "status":
        return asyncio.run(_status(cfg))
    if args.command == "setup":
        return _setup(cfg, args)
    if args.command == "reload":
        return _reload(cfg, args.table)
    if args.command == "adopt-checkpoint":
        return _adopt_checkpoint(cfg)
    return asyncio.run(_run(cfg))


def _internal_error(exc: BaseException) -> str:
    """One line for an error nobody anticipated: what, and where in the code, for the bug report."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].name})" if frames else ""
    return (
        f"cdcstream: internal error: {type(exc).__name__}: {exc}{where}. This is a bug: please report it with the "
        "command, its log and this line (CDCSTREAM_DEBUG=1 prints the full traceback)."
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cdcstream`` command: every failure is a message and an exit code (docs/troubleshooting.md,
    "Exit codes"), never a traceback (unless CDCSTREAM_DEBUG=1 asks for one)."""
    args = _parser().parse_args(argv)
    try:
        return _command(args)
    except CdcstreamError as exc:
        if args.command in ("run",):
            log.error("fatal", error=str(exc), error_type=type(exc).__name__, stage=exc.stage)
        print(f"cdcstream: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`cdcstream tail | head`): nothing left to say to anyone. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if os.environ.get("CDCSTREAM_DEBUG"):
            raise
        if args.command in ("run",):
            log.error("fatal", error=_internal_error(exc), error_type=type(exc).__name__, stage="runtime")
        print(_internal_error(exc), file=sys.stderr)
        return 1
