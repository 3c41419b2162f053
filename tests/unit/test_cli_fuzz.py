"""Fuzzing the command line as a person (or a script) uses it: every subcommand's arguments, and config and
mapping files, hostile or merely wrong. Whatever the input, ``cdcstream`` ends with an exit code from the documented
table and a message, never a traceback and never an "internal error" (which would be a bug).

The commands run in this process (``main(argv)``) against nothing that answers: sources on closed ports, a Kinesis
endpoint on a closed port, no AWS credentials, and no HTTP address that anything listens on (so no example can
reach a daemon of another test). Each example takes milliseconds; the whole file stays within ~20 s.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcstream.cli import main
from tests.unit.test_fuzz_loaders import json_values, rules
from tests.unit.test_hostile_inputs import add_column_mapping

pytestmark = pytest.mark.timeout(300)

#: docs/troubleshooting.md, "Exit codes" (argparse's usage errors are 2 as well).
EXIT_CODES = {0, 1, 2, 3, 4, 5, 6, 130}

# A config that validates, aimed at closed ports, with its state in the example's own directory.
BASE: dict[str, dict[str, str]] = {
    "": {"task_id": '"fuzz"', "table_mappings": '"m.json"'},
    "source": {
        "engine": '"postgres"',
        "host": '"127.0.0.1"',
        "port": "1",
        "database": '"app"',
        "password": '"pw"',
        "connect_timeout": "1",
        "server_id": "7",
    },
    "target": {"stream_name": '"s"', "endpoint_url": '"http://127.0.0.1:1"', "request_timeout": "5"},
    "checkpoint": {"state_dir": '"state"'},
    "http": {"listen": '""'},
}

KEYS = {
    "": ["task_id", "migration_type", "table_mappings", "colour"],
    "source": [
        "engine",
        "host",
        "port",
        "user",
        "password",
        "password_file",
        "database",
        "slot_name",
        "publication",
        "sslmode",
        "sslrootcert",
        "connect_timeout",
        "heartbeat_interval",
        "status_interval",
        "reconnect_max_delay",
        "server_id",
        "databases",
        "gtid_mode",
        "ssl_mode",
        "ssl_ca",
        "ssl_verify_identity",
        "json_as",
        "bogus",
    ],
    "target": [
        "stream_name",
        "region",
        "endpoint_url",
        "message_format",
        "linger_ms",
        "max_in_flight_requests",
        "max_buffered_records",
        "request_timeout",
        "retry_base_delay",
        "retry_max_delay",
        "shard_map_refresh",
        "shard_records_per_second",
        "ordering",
        "oversize_policy",
        "before_image",
    ],
    "checkpoint": ["interval", "state_dir"],
    "http": ["ready_window", "lag_probe_interval", "metrics_table_label", "listen"],
    "full_load": ["max_full_load_subtasks", "parallel_load_threads", "chunk_rows", "processes"],
    "log": ["level", "format"],
}

VALUES = [
    '"x"',
    '""',
    '"\\u0000"',
    '"pw\\u0000rest"',
    '"é ü 中"',
    '"' + "a" * 300 + '"',
    "0",
    "-1",
    "1",
    "7",
    "65536",
    "99999999999999999999999",
    "1e308",
    "inf",
    "-inf",
    "nan",
    "0.5",
    "true",
    "[]",
    '["app", ""]',
    "{a = 1}",
    "[[1, 2], {b = 3}]",
    '"/nonexistent/file"',
    '"%"',
    '"mysql"',
    '"full-load"',
    '"full-load-and-cdc"',
    '"auto"',
    '"json-unformatted"',
    '"verify_identity"',
    '"verify-full"',
    '"' + "a" * 64 + '.example"',
    '"a..b"',
    '"bad region"',
    '"eu-west-1"',
    '"http://127.0.0.1:99999"',
    '"ftp://127.0.0.1:1"',
    '"http://[::1]:1"',
    '"/run/postgresql"',
]
# Addresses nothing listens on (port 0: `run` binds an ephemeral port; `status` and `reload` reach nothing), so
# no example binds a port another test may use as "closed", or reaches a daemon of another test.
LISTEN = ['""', '"127.0.0.1:0"', '"bad host:1"', '"127.0.0.1:99999"', '"[::1]:0"', '":0"', '"0.0.0.0:0"']
STATE_DIR = ['"state"', '""', '"."', '"a/b/c"', '"m.json"', '"\\u0000"']


@st.composite
def configs(draw: Any) -> str:
    """TOML text: the base with some keys set to hostile values (and sometimes no [source] or [target])."""
    doc = {section: dict(keys) for section, keys in BASE.items()}
    for _ in range(draw(st.integers(0, 5))):
        section = draw(st.sampled_from(sorted(KEYS)))
        key = draw(st.sampled_from(KEYS[section]))
        pool = LISTEN if key == "listen" else STATE_DIR if key == "state_dir" else VALUES
        doc.setdefault(section, {})[key] = draw(st.sampled_from(pool))
    for section in draw(st.lists(st.sampled_from(["source", "target"]), max_size=1)):
        doc.pop(section)
    tail: str = draw(st.sampled_from(["", "", "", DEEP_ARRAY, DEEP_TABLE, "[source]\n", "x = \n"]))
    return render(doc) + tail


# TOML nesting deep enough to exhaust a recursive parser's stack.
DEEP_ARRAY = "deep = " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_TABLE = "deep = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n"


def render(doc: dict[str, dict[str, str]]) -> str:
    lines = [f"{k} = {v}" for k, v in doc.get("", {}).items()]
    for section, keys in doc.items():
        if section:
            lines += [f"[{section}]", *(f"{k} = {v}" for k, v in keys.items())]
    return "\n".join(lines) + "\n"


expressions = st.sampled_from(
    ["$id || 'x'", "(" * 5000 + "1" + ")" * 5000, " || ".join(["$a"] * 3000), "upper(", "''", "$AR_H_OPERATION"]
)
mappings = st.one_of(
    st.builds(add_column_mapping, expressions),
    st.fixed_dictionaries({"rules": rules}),
    json_values,
)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No AWS credentials anywhere in the chain, no instance metadata lookups, logging left alone."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "CDCSTREAM_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # Logging stays as the test session has it: configuring it here would bind (and cache) loggers to this
    # test's captured stderr, closed once it ends, and break every later test that logs.
    monkeypatch.setattr("cdcstream.cli.configure_logging", lambda *args: None)
    yield


def _invoke(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capfd.readouterr()
    text = out + err
    assert "Traceback" not in text, f"{argv}:\n{text[-3000:]}"
    assert "internal error" not in text, f"{argv}:\n{text[-3000:]}"
    assert code in EXIT_CODES, f"{argv} exited {code}:\n{text[-3000:]}"
    return code, text


#: What each command may end with on these inputs (nothing answers, so nothing can fully succeed).
EXPECTED = {
    "print-config": {0, 2},
    "status": {0, 2, 6},
    "check": {1, 2},
    "run": {2, 5, 6},
}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(configs(), mappings, st.sampled_from(sorted(EXPECTED)))
def test_any_config_and_mapping_ends_with_a_documented_exit_code(
    offline: None, capfd: pytest.CaptureFixture[str], config: str, mapping: Any, command: str
) -> None:
    work = Path(tempfile.mkdtemp(prefix="cdcstream-fuzz-"))
    try:
        (work / "c.toml").write_text(config)
        (work / "m.json").write_text(json.dumps(mapping))
        # `check` gets dummy credentials, so hostile region/endpoint/host values reach botocore and the drivers
        # (nothing answers, so it still ends in a second); `run` would retry an unreachable stream for a minute.
        if command == "check":
            os.environ.update(AWS_ACCESS_KEY_ID="fuzz", AWS_SECRET_ACCESS_KEY="fuzz")
        try:
            code, text = _invoke([command, "--config", str(work / "c.toml")], capfd)
        finally:
            os.environ.pop("AWS_ACCESS_KEY_ID", None)
            os.environ.pop("AWS_SECRET_ACCESS_KEY", None)
        assert code in EXPECTED[command], f"{command} exited {code} on\n{config}\n{text[-3000:]}"
        if code == 2:
            assert "c.toml" in text or "m.json" in text or "[http] listen" in text, text
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def files() -> Iterator[dict[str, str]]:
    """Arguments that name files: a valid config (closed ports), a missing one, a directory, binary junk."""
    work = Path(tempfile.mkdtemp(prefix="cdcstream-fuzz-args-"))
    good = work / "good.toml"
    good.write_text(render({**BASE, "": {"task_id": '"fuzz"'}}))
    (work / "junk.toml").write_bytes(b"\xff\xfe\x00junk")
    yield {"good": str(good), "missing": str(work / "nope.toml"), "dir": str(work), "junk": str(work / "junk.toml")}
    shutil.rmtree(work, ignore_errors=True)


# Per command, the options it takes: "file" values name one of the files above, "safe" values are from
# SAFE_VALUES (nothing that can reach a real host), "any" from ARG_VALUES, None for a flag.
COMMANDS: dict[str, list[tuple[str, str | None]]] = {
    "run": [("--config", "file")],
    "check": [("--config", "file")],
    "status": [("--config", "file")],
    "print-config": [("-c", "file")],
    "reload": [("--config", "file"), ("--table", "any")],
    "healthcheck": [("--config", "file"), ("--url", "safe"), ("--timeout", "any")],
    "setup": [
        ("postgres-ddl", None),
        ("--config", "file"),
        ("--user", "any"),
        ("--dsn", "safe"),
        ("--uninstall", None),
        ("--print-sql", None),
    ],
    "tail": [
        ("--stream", "any"),
        ("--region", "any"),
        ("--endpoint-url", "any"),
        ("--latest", None),
        ("--no-follow", None),
    ],
    "bogus": [],
}
JUNK = ["--help", "--version", "-x", "--", "--config", "--stream", "postgres-ddl", "extra"]
# Only these are given to --url and --dsn: nothing that could reach a real host.
SAFE_VALUES = st.sampled_from(
    [
        "",
        " ",
        "-1",
        "0",
        "nan",
        "inf",
        "1e999",
        "public.orders",
        "a.b.c",
        "s",
        "x" * 200,
        "us-east-1",
        "bad region",
        "http://127.0.0.1:1",
        "http://127.0.0.1:1/healthz",
        "notaurl",
        "ftp://127.0.0.1:1/x",
        "host=127.0.0.1 port=1 connect_timeout=1",
        "a b c",
        "port=notanumber",
        "postgres",
        "é中",
    ]
)
ARG_VALUES = st.one_of(
    SAFE_VALUES,
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12),
)


@st.composite
def argvs(draw: Any, files: dict[str, str]) -> list[str]:
    """A command with each of its options more often than not (values right or wrong), and now and then junk."""
    command = draw(st.sampled_from(sorted(COMMANDS)))
    argv = [command]
    for option, kind in COMMANDS[command]:
        if draw(st.integers(0, 9)) < 7:
            argv.append(option)
            if kind == "file":
                argv.append(draw(st.sampled_from(sorted(files.values()))))
            elif kind is not None:
                argv.append(draw(SAFE_VALUES if kind == "safe" else ARG_VALUES))
    for _ in range(draw(st.integers(0, 2)) if draw(st.integers(0, 4)) == 0 else 0):
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(JUNK) | ARG_VALUES))
    if command == "healthcheck":
        argv += ["--url", "http://127.0.0.1:1/healthz"]  # never the default :9187, where a test daemon may run
    return argv


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.data())
def test_any_arguments_end_with_a_documented_exit_code(
    offline: None, capfd: pytest.CaptureFixture[str], files: dict[str, str], data: Any
) -> None:
    _invoke(data.draw(argvs(files)), capfd)
