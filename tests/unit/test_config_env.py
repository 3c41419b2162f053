"""``CDCSTREAM_<SECTION>__<KEY>`` environment overrides of the config file (containers, Kubernetes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdcstream.config import load_config
from cdcstream.errors import ConfigError

BASE = """
[source]
database = "app"
[target]
stream_name = "cdc"
"""


def _cfg(tmp_path: Path) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(BASE)
    return path


def test_env_overrides_keys_with_the_file_types(tmp_path: Path) -> None:
    cfg = load_config(
        _cfg(tmp_path),
        {
            "CDCSTREAM_SOURCE__HOST": "db.internal",
            "CDCSTREAM_SOURCE__PORT": "6432",
            "CDCSTREAM_HTTP__LISTEN": "0.0.0.0:9187",
            "CDCSTREAM_HTTP__METRICS_TABLE_LABEL": "false",
            "CDCSTREAM_CHECKPOINT__STATE_DIR": "/var/lib/cdcstream",
            # single underscore: not an override (it is the password variable config.py reads itself)
            "CDCSTREAM_SOURCE_PASSWORD": "pw",
            "OTHER__THING": "ignored",
        },
    )
    assert cfg.source.host == "db.internal" and cfg.source.port == 6432
    assert cfg.http.listen == "0.0.0.0:9187" and cfg.http.metrics_table_label is False
    assert cfg.checkpoint.state_dir == "/var/lib/cdcstream"


def test_env_override_errors_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_cfg(tmp_path), {"CDCSTREAM_SOURCE__HOSTT": "x"})
    assert "source.hostt: unknown key" in str(err.value)
    assert "CDCSTREAM_SOURCE__HOSTT" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(_cfg(tmp_path), {"CDCSTREAM_SOURCE__PORT": "many"})
    assert "source.port" in str(err.value)
