"""Fuzzing the config and mapping loaders: any input gives a typed ConfigError (or loads), never a crash."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcstream.config import load_config
from cdcstream.errors import ConfigError
from cdcstream.mapping.ruleparse import parse_rules

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
rule_keys = st.sampled_from(
    [
        "rule-type",
        "rule-id",
        "rule-name",
        "rule-action",
        "object-locator",
        "mapping-parameters",
        "filters",
        "rule-target",
        "value",
        "old-value",
        "expression",
        "data-type",
        "target-table-name",
        "schema-name",
        "table-name",
        "partition-key-type",
        "partition-key-name",
        "exclude-columns",
        "attribute-mappings",
    ]
)
rule_values = st.one_of(
    json_values,
    st.sampled_from(
        [
            "selection",
            "transformation",
            "object-mapping",
            "table-settings",
            "include",
            "exclude",
            "explicit",
            "map-record-to-record",
            "map-record-to-document",
            "rename",
            "%",
            "a[b",
            "1",
        ]
    ),
)
rules = st.lists(st.dictionaries(rule_keys, rule_values, max_size=8), max_size=6)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, st.fixed_dictionaries({"rules": rules})))
def test_mapping_loader_only_raises_config_error(doc: Any) -> None:
    try:
        parse_rules(doc, "fuzz.json")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.json")


toml_text = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.tuples(
            st.sampled_from(["", "[source]\n", "[target]\n", "[checkpoint]\n", "[http]\n", "[log]\n"]),
            st.sampled_from(
                [
                    "task_id",
                    "database",
                    "port",
                    "stream_name",
                    "listen",
                    "level",
                    "bogus",
                    "password_file",
                    "engine",
                    "interval",
                ]
            ),
            st.sampled_from(['"x"', "1", "-5", "true", '"127.0.0.1:99999"', "[1, 2]", "{a = 1}", '""']),
        ),
        max_size=12,
    ).map(lambda lines: "".join(f"{section}{key} = {value}\n" for section, key, value in lines)),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(toml_text)
def test_config_loader_only_raises_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(path)
        except ConfigError as exc:
            assert str(path) in str(exc)


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'task_id = "\xff\xfe"\n')
    try:
        load_config(path)
    except ConfigError as exc:
        assert "not UTF-8" in str(exc) and str(path) in str(exc)
    else:
        raise AssertionError("accepted a non-UTF-8 file")
