"""Config validation: unknown keys rejected, errors name the file and key, secrets never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdcstream.config import Config, MySQLSourceConfig, PostgresSourceConfig, load_config
from cdcstream.errors import ConfigError

GOOD = """
task_id = "orders"
[source]
engine = "postgres"
database = "app"
password = "s3cret-pw"
[target]
stream_name = "cdc"
endpoint_url = "http://127.0.0.1:4567"
[checkpoint]
state_dir = "state"
"""


def pg(cfg: Config) -> PostgresSourceConfig:
    assert isinstance(cfg.source, PostgresSourceConfig)
    return cfg.source


def mysql(cfg: Config) -> MySQLSourceConfig:
    assert isinstance(cfg.source, MySQLSourceConfig)
    return cfg.source


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_good_config_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.task_id == "orders"
    assert cfg.resolve(cfg.checkpoint.state_dir) == tmp_path / "state"
    assert "s3cret-pw" not in repr(cfg) and "s3cret-pw" not in str(cfg.model_dump(mode="json"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + "bogus = 1\n", r"checkpoint\.bogus: unknown key"),
        (GOOD.replace('stream_name = "cdc"', ""), r"target\.stream_name: required key is missing"),
        (GOOD.replace("[source]", "[source]\nport = 99999"), r"source\.port: "),
        (GOOD + "[http]\nlisten = 'nope'\n", r"http\.listen: expected HOST:PORT"),
        (GOOD.replace('"postgres"', '"oracle"'), r"source\.engine"),
        ("task_id = [", r"not valid TOML"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_password_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    cfg = load_config(write(tmp_path, GOOD.replace('password = "s3cret-pw"', f'password_file = "{secret}"')))
    assert cfg.source.password is not None and cfg.source.password.get_secret_value() == "from-file"
    monkeypatch.setenv("CDCSTREAM_SOURCE_PASSWORD", "from-env")
    cfg = load_config(write(tmp_path, GOOD.replace('password = "s3cret-pw"', "")))
    assert cfg.source.password is not None and cfg.source.password.get_secret_value() == "from-env"
    with pytest.raises(ConfigError, match="password_file"):
        load_config(write(tmp_path, GOOD.replace('password = "s3cret-pw"', 'password_file = "/nonexistent"')))


def test_type_rendering_options(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert (pg(cfg).json_as, pg(cfg).hstore_as) == ("string", "string")  # DMS's rendering by default
    text = GOOD.replace('database = "app"', 'database = "app"\njson_as = "object"\nhstore_as = "object"')
    cfg = load_config(write(tmp_path, text))
    assert (pg(cfg).json_as, pg(cfg).hstore_as) == ("object", "object")
    with pytest.raises(ConfigError, match=r"source\.json_as"):
        load_config(write(tmp_path, GOOD.replace('database = "app"', 'database = "app"\njson_as = "yaml"')))


MYSQL = """
[source]
engine = "mysql"
host = "db"
server_id = 77
databases = ["app"]
gtid_mode = "on"
[target]
stream_name = "cdc"
"""


def test_mysql_source_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCSTREAM_SOURCE_PASSWORD", "from-env")
    cfg = load_config(write(tmp_path, MYSQL))
    assert cfg.source.engine == "mysql"
    assert (cfg.source.port, cfg.source.server_id, cfg.source.databases) == (3306, 77, ["app"])
    assert cfg.source.password is not None and cfg.source.password.get_secret_value() == "from-env"
    with pytest.raises(ConfigError, match=r"source\.server_id: required key is missing"):
        load_config(write(tmp_path, MYSQL.replace("server_id = 77", "")))
    with pytest.raises(ConfigError, match=r"source\.slot_name: unknown key"):
        load_config(write(tmp_path, MYSQL.replace("[target]", 'slot_name = "x"\n[target]')))
    with pytest.raises(ConfigError, match=r"source\.gtid_mode"):
        load_config(write(tmp_path, MYSQL.replace('"on"', '"maybe"')))


def _mysql_tls(tmp_path: Path, lines: str) -> Path:
    return write(tmp_path, MYSQL.replace("[target]", lines + "\n[target]"))


def test_mysql_tls_settings(tmp_path: Path) -> None:
    from cdcstream.sources.mysql.tls import ssl_settings

    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    cfg = load_config(_mysql_tls(tmp_path, f'ssl_mode = "verify_identity"\nssl_ca = "{ca}"'))
    assert cfg.source.engine == "mysql" and mysql(cfg).ssl_mode == "verify_identity"
    assert ssl_settings(mysql(load_config(_mysql_tls(tmp_path, 'ssl_mode = "disabled"')))) == {"ssl_disabled": True}
    assert ssl_settings(mysql(load_config(write(tmp_path, MYSQL)))) == {}  # preferred: PyMySQL's own default
    required = ssl_settings(mysql(load_config(_mysql_tls(tmp_path, 'ssl_mode = "required"'))))["ssl"]
    assert not required.check_hostname and required.verify_mode.name == "CERT_NONE"
    verify = ssl_settings(mysql(load_config(_mysql_tls(tmp_path, 'ssl_mode = "verify_identity"'))))["ssl"]
    assert verify.check_hostname and verify.verify_mode.name == "CERT_REQUIRED"  # system CAs without ssl_ca


def test_mysql_ssl_verify_identity_is_another_spelling_of_ssl_mode(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    assert mysql(load_config(_mysql_tls(tmp_path, "ssl_verify_identity = true"))).ssl_mode == "verify_identity"
    no_host_check = load_config(_mysql_tls(tmp_path, f'ssl_verify_identity = false\nssl_ca = "{ca}"'))
    assert mysql(no_host_check).ssl_mode == "verify_ca"
    assert mysql(load_config(_mysql_tls(tmp_path, "ssl_verify_identity = false"))).ssl_mode == "preferred"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            'ssl_mode = "verify_ca"\nssl_ca = "/nonexistent/ca.pem"',
            r"source: ssl_ca '/nonexistent/ca.pem': No such file",
        ),
        ('ssl_mode = "required"\nssl_cert = "/nonexistent/c.pem"', r"ssl_cert '/nonexistent/c.pem': No such file"),
        ('ssl_mode = "preferred"\nssl_ca = "/etc/hostname"', r"ssl_ca is set but ssl_mode = 'preferred'"),
        ('ssl_mode = "disabled"\nssl_ca = "/etc/hostname"', r"ssl_ca is set but ssl_mode = 'disabled'"),
        ('ssl_mode = "required"\nssl_key = "/etc/hostname"', r"ssl_key is set without ssl_cert"),
        ('ssl_mode = "verify-full"', r"source\.ssl_mode"),
        ('ssl_mode = "required"\nssl_verify_identity = true', r"ssl_verify_identity = true contradicts ssl_mode"),
        ('ssl_mode = "verify_identity"\nssl_verify_identity = false', r"ssl_verify_identity = false contradicts"),
        ("ssl_verify_identity = 3", r"source\.ssl_verify_identity"),
    ],
)
def test_mysql_tls_errors_name_the_key(tmp_path: Path, lines: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_mysql_tls(tmp_path, lines))


def test_mysql_invalid_dates(tmp_path: Path) -> None:
    mysql = GOOD.replace('engine = "postgres"\ndatabase = "app"', 'engine = "mysql"\nserver_id = 7')
    assert load_config(write(tmp_path, mysql)).source.invalid_dates == "text"  # type: ignore[union-attr]
    cfg = load_config(write(tmp_path, mysql.replace("server_id = 7", 'server_id = 7\ninvalid_dates = "null"')))
    assert cfg.source.invalid_dates == "null"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"source\.invalid_dates"):
        load_config(write(tmp_path, mysql.replace("server_id = 7", 'server_id = 7\ninvalid_dates = "zero"')))
