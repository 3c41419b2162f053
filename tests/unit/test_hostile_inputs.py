"""Inputs that used to be accepted and then fail: each is now refused before anything
connects (exit 2, naming the file and key or rule-id) or stops with a documented exit code and the fix, never
a traceback or endless retries."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcstream.changes import Column, TableInfo
from cdcstream.config import load_config
from cdcstream.errors import ConfigError
from cdcstream.mapping.expressions import ExpressionError, compile_expression
from cdcstream.mapping.preview import unused_rules
from cdcstream.mapping.ruleparse import parse_rules
from cdcstream.mapping.rules import SelectionRule
from cdcstream.mapping.wildcards import compile_pattern
from cdcstream.sources.mysql.reader import classify
from cdcstream.sources.postgres.replication import classify_connect_failure

BASE = """task_id = "t"
[source]
database = "app"
password = "pw"
port = 1
[target]
stream_name = "s"
endpoint_url = "http://127.0.0.1:1"
[http]
listen = ""
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdcstream", *args], capture_output=True, text=True, timeout=60)


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("value", ["inf", "+inf", "nan", "-inf", "1e300", "86401"])
def test_a_duration_that_would_overflow_a_timer_is_refused(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, BASE.replace('endpoint_url = "http://127.0.0.1:1"\n', f"request_timeout = {value}\n"))
    with pytest.raises(ConfigError, match=r"target\.request_timeout: Input should be (a finite number|less than)"):
        load_config(path)


def test_a_nul_character_is_refused_without_echoing_the_secret(tmp_path: Path) -> None:
    # libpq reads the connection string up to the NUL: "pw\0rest" would be tried as "pw" forever.
    path = write(tmp_path, BASE.replace('password = "pw"', 'password = "pw\\u0000rest"'))
    with pytest.raises(ConfigError, match=r"source: password: contains a NUL character") as info:
        load_config(path)
    assert "rest" not in str(info.value)
    secret = tmp_path / "secret"
    secret.write_bytes(b"pw\x00rest\n")
    path.write_text(BASE.replace('password = "pw"', f'password_file = "{secret}"'))
    with pytest.raises(ConfigError, match=r"password_file .*secret' contains a NUL character"):
        load_config(path)
    path.write_text(BASE.replace('database = "app"', 'database = "a\\u0000b"'))
    with pytest.raises(ConfigError, match=r"source: database: contains a NUL"):
        load_config(path)


def test_deeply_nested_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)
    path.write_text(BASE + "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)


@pytest.mark.parametrize(
    "text",
    [
        "(" * 5000 + "1" + ")" * 5000,
        "-" * 5000 + "1",
        "NOT " * 5000 + "1",
        "upper(" * 5000 + "'a'" + ")" * 5000,
        "CASE WHEN " * 3000 + "1",
        " || ".join(["$A"] * 5000),  # a flat chain: shallow to parse, 5,000 calls deep to evaluate
        " + ".join(["1"] * 5000),
    ],
)
def test_deep_or_huge_expressions_are_refused_when_parsed(text: str) -> None:
    with pytest.raises(ExpressionError, match=r"nested more than 40 levels|more than 200 operators"):
        compile_expression(text)


def test_expressions_within_the_limits_compile_and_evaluate() -> None:
    assert compile_expression("(" * 39 + "1" + ")" * 39).evaluate({}) == 1
    assert compile_expression(" || ".join(["$A"] * 200)).evaluate({"A": "x"}) == "x" * 200


def add_column_mapping(expression: str) -> dict[str, Any]:
    """Every table selected, and rule-id 2 adds a column computed by ``expression``."""
    everything = {"schema-name": "%", "table-name": "%"}
    return {
        "rules": [
            {"rule-type": "selection", "rule-id": "1", "rule-action": "include", "object-locator": everything},
            {
                "rule-type": "transformation",
                "rule-id": "2",
                "rule-action": "add-column",
                "rule-target": "column",
                "object-locator": everything,
                "value": "c",
                "expression": expression,
                "data-type": {"type": "string", "length": 20},
            },
        ]
    }


def test_a_mapping_with_5000_nested_parentheses_exits_2_naming_the_rule(tmp_path: Path) -> None:
    mapping = add_column_mapping("(" * 5000 + "1" + ")" * 5000)
    (tmp_path / "m.json").write_bytes(orjson.dumps(mapping))
    path = write(tmp_path, 'table_mappings = "m.json"\n' + BASE)
    res = cli("run", "--config", str(path))
    assert res.returncode == 2, res.stderr
    assert "rule-id 2" in res.stderr and "nested more than 40 levels" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_http_listen_that_cannot_be_bound_exits_2_with_the_fix(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for listen, reason in (
            (f"127.0.0.1:{port}", "address already in use"),
            ("no-such-host.invalid:9187", "cannot listen there"),
        ):
            path = write(tmp_path, BASE.replace('listen = ""', f'listen = "{listen}"'))
            res = cli("run", "--config", str(path))
            assert res.returncode == 2, res.stderr
            assert "[http] listen" in res.stderr and reason in res.stderr and "Traceback" not in res.stderr
    path.write_text(BASE.replace('listen = ""', 'listen = "not a host:9187"'))
    with pytest.raises(ConfigError, match=r"http\.listen: 'not a host' is not an IP address or host name"):
        load_config(path)


def test_a_ca_of_the_right_name_and_another_key_is_not_retried() -> None:
    # libpq 18 with OpenSSL 3 (psycopg-binary) says this, not "certificate verify failed" (measured against a
    # private server in tests/e2e/test_hostile.py).
    err = classify_connect_failure(
        'connection to server at "127.0.0.1", port 5432 failed: SSL error: provider signature failure', "connect"
    )
    assert not err.retriable and err.exit_code == 3 and "sslrootcert" in str(err)
    # MySQL: python's ssl raises it as an OSError; from the binlog connection it was taken for a network error.
    exc = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate signature failure (_ssl.c:1006)"
    )
    err = classify(exc, "cdc@db:3306")
    assert not err.retriable and err.exit_code == 3 and "ssl_ca must hold the CA" in str(err)


def _selection_rules(n: int) -> dict[str, object]:
    return {
        "rules": [
            {
                "rule-type": "selection",
                "rule-id": str(i + 1),
                "rule-action": "include",
                "object-locator": {"schema-name": "public", "table-name": f"orders_{i:05d}"},
            }
            for i in range(n)
        ]
    }


def test_start_up_work_is_proportional_to_tables_plus_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """60,000 rules took 3.4 minutes to start: every table was tested against every rule (and each test
    recompiled a regex once the pattern cache overflowed). Now each table looks its rules up."""
    n = 400
    rules = parse_rules(_selection_rules(n), "m.json")
    tables = [TableInfo("public", f"orders_{i:05d}", (Column("id", "int4", 0, False, True),)) for i in range(n + 5)]
    compile_pattern.cache_clear()
    tested = 0
    original = SelectionRule.matches

    def counting(self: SelectionRule, schema: str, table: str) -> bool:
        nonlocal tested
        tested += 1
        return original(self, schema, table)

    monkeypatch.setattr(SelectionRule, "matches", counting)
    assert sum(rules.selects(t.schema, t.table) for t in tables) == n
    assert unused_rules(rules, tables[: n - 1]) == [
        f"m.json: rule-id {n} ($.rules[{n - 1}]): selection rule (include public.orders_{n - 1:05d}) matches no table"
    ]
    assert tested <= 4 * (n + len(tables)), f"{tested} rule tests for {n} rules and {len(tables)} tables"
    assert compile_pattern.cache_info().currsize == 0  # names need no regex


names = st.text(alphabet="ab_%", min_size=0, max_size=5)
patterns = st.lists(st.sampled_from(["a", "b", "_", "%", "[ab]", "[_]"]), min_size=1, max_size=4).map("".join)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(patterns, st.sampled_from(["include", "exclude", "explicit"])), min_size=1, max_size=8),
    st.lists(names, max_size=6),
)
def test_looked_up_selection_equals_testing_every_rule(rules: list[tuple[str, str]], tables: list[str]) -> None:
    # explicit rules name one table (no % or [...]); at least one rule includes
    rules = [(p, "include" if a == "explicit" and ("%" in p or "[" in p) else a) for p, a in rules]
    if all(action == "exclude" for _, action in rules):
        rules[0] = (rules[0][0], "include")
    doc = {
        "rules": [
            {
                "rule-type": "selection",
                "rule-id": str(i + 1),
                "rule-action": action,
                "object-locator": {"schema-name": "s", "table-name": pattern},
            }
            for i, (pattern, action) in enumerate(rules)
        ]
    }
    parsed = parse_rules(doc, "m.json")
    for table in tables:
        hits = [
            r
            for r in parsed.selections
            if (r.table == table if r.action == "explicit" else compile_pattern(r.table).match(table) is not None)
        ]
        expected = bool(hits) and all(r.action != "exclude" for r in hits)
        assert parsed.selects("s", table) is expected, (rules, table)
        assert parsed.matching_selections("s", table) == hits


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('[source]\nhost = "' + "a" * 64 + '.example"', r"source\.host: .* is not a host name"),
        ('[source]\nhost = "a..b"', r"source\.host: 'a\.\.b' is not a host name"),
        ('[target]\nendpoint_url = "notaurl"', r"target\.endpoint_url: 'notaurl' is not an http\(s\)"),
        ('[target]\nendpoint_url = "http://127.0.0.1:99999"', r"target\.endpoint_url: .* is not an http\(s\)"),
        ('[target]\nregion = "bad region"', r"target\.region: 'bad region' is not an AWS region name"),
    ],
)
def test_names_the_drivers_would_choke_on_are_config_errors(tmp_path: Path, line: str, message: str) -> None:
    """A 64-character DNS label made psycopg and PyMySQL raise UnicodeError in getaddrinfo, a malformed
    endpoint_url or region a ValueError in botocore's client factory: internal errors, not config errors."""
    section, _, setting = line.partition("\n")
    text = BASE.replace(section + "\n", f"{section}\n{setting}\n").replace("port = 1\n", "port = 1\n")
    key = setting.split(" =")[0]
    text = "\n".join(x for x in text.splitlines() if not (x.startswith(f"{key} =") and x != setting)) + "\n"
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_a_socket_directory_and_host_lists_stay_valid_for_postgres(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, BASE.replace('database = "app"', 'database = "app"\nhost = "/run/postgresql,db1"'))
    )
    assert cfg.source.host == "/run/postgresql,db1"
