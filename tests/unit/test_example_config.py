"""config/cdcstream.example.toml claims to list every key: it is checked against the config models, both ways
(a key the models accept is missing from it, or it shows a key they reject), and it validates as shipped."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from cdcstream.config import (
    BeforeImageConfig,
    CdcConfig,
    CheckpointConfig,
    Config,
    FullLoadConfig,
    HttpConfig,
    LogConfig,
    MySQLSourceConfig,
    PostgresSourceConfig,
    TargetConfig,
    load_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "cdcstream.example.toml"
SECTIONS: dict[str, tuple[type[BaseModel], ...]] = {
    "": (Config,),
    "source": (PostgresSourceConfig,),
    "source#": (MySQLSourceConfig,),  # the commented-out MySQL [source]
    "target": (TargetConfig,),
    "target.before_image": (BeforeImageConfig,),
    "checkpoint": (CheckpointConfig,),
    "http": (HttpConfig,),
    "full_load": (FullLoadConfig,),
    "cdc": (CdcConfig,),
    "log": (LogConfig,),
}
# `key = value`, shown or commented out ("# key = value"); prose comments do not start with a bare key.
_KEY = re.compile(r"^#?\s*([a-z_]+)\s*=")
_SECTION = re.compile(r"^#?\s*\[([a-z_.]+)\]")


def _example_keys() -> dict[str, set[str]]:
    """Keys per section; a commented-out section header (the MySQL [source]) counts as section "name#"."""
    keys: dict[str, set[str]] = {"": set()}
    section = ""
    for line in EXAMPLE.read_text().splitlines():
        if m := _SECTION.match(line):
            section = m.group(1) + ("#" if line.startswith("#") else "")
            keys.setdefault(section, set())
        elif m := _KEY.match(line):
            keys[section].add(m.group(1))
    return keys


def _model_keys(models: tuple[type[BaseModel], ...]) -> set[str]:
    out: set[str] = set()
    for model in models:
        for name, info in model.model_fields.items():
            if info.exclude or name in SECTIONS or f"target.{name}" in SECTIONS:
                continue  # config_path (not a key), and sub-sections ([source], [target.before_image], ...)
            out.add(name)
    return out


def test_the_example_lists_exactly_the_keys_the_models_accept() -> None:
    shown = _example_keys()
    assert set(shown) == set(SECTIONS), f"sections: {sorted(shown)}"
    for section, models in SECTIONS.items():
        expected = _model_keys(models)
        missing, unknown = expected - shown[section], shown[section] - expected
        assert not missing and not unknown, (
            f"[{section}] missing from the example: {sorted(missing)}; not keys: {sorted(unknown)}"
        )


def test_the_example_validates_for_postgres_and_for_mysql(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("pw\n")
    text = EXAMPLE.read_text().replace("/run/secrets/pg", str(secret))
    (tmp_path / "pg.toml").write_text(text)
    cfg = load_config(tmp_path / "pg.toml")
    assert cfg.source.engine == "postgres"
    # The MySQL [source] as the example shows it (commented out), in place of the PostgreSQL one.
    head, _, rest = text.partition("[source]\n")
    commented = rest[rest.index("# [source]\n") :].split("\n\n", 1)[0].splitlines()[1:]
    body = "\n".join(line[2:] for line in commented if _KEY.match(line) and not line.startswith("# password ="))
    body = re.sub(r'^(password_file|ssl_ca|ssl_cert|ssl_key) = "[^"]*"', rf'\1 = "{secret}"', body, flags=re.M)
    (tmp_path / "my.toml").write_text(head + "[source]\n" + body + "\n" + rest[rest.index("[target]") :])
    cfg = load_config(tmp_path / "my.toml")
    assert cfg.source.engine == "mysql"
