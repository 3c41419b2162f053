"""What differs between the servers the MySQL source talks to (no server here: MariaDB 10.11 is tested live in
tests/integration, MySQL 8.4 / 9.x only against their documentation): the binlog status statement, the name of
the binlog monitoring privilege, and caching_sha2_password's RSA password exchange without TLS."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr
from pymysql import _auth

from cdcstream.config import MySQLSourceConfig
from cdcstream.errors import SourceConnectionError, SourceError
from cdcstream.sources.mysql.positions import binlog_status
from cdcstream.sources.mysql.server import connect_error, monitor_privilege
from cdcstream.sources.mysql.tls import rsa_failure


class Server:
    """A cursor of a server that knows only some binlog status statements (a syntax error for the others)."""

    def __init__(self, *known: str) -> None:
        self.known = known
        self.ran: list[str] = []

    def execute(self, statement: str) -> None:
        self.ran.append(statement)
        if statement not in self.known:
            raise pymysql.err.ProgrammingError(1064, f"You have an error in your SQL syntax near '{statement[5:]}'")

    def fetchone(self) -> tuple[Any, ...]:
        return ("bin.000007", 1234, "", "")


@pytest.mark.parametrize(
    ("server", "mariadb", "ran"),
    [
        # MySQL 8.4 and 9.x: SHOW MASTER STATUS is gone
        (Server("SHOW BINARY LOG STATUS"), False, ["SHOW BINARY LOG STATUS"]),
        # MySQL 8.0 / 8.1: only the old statement
        (Server("SHOW MASTER STATUS"), False, ["SHOW BINARY LOG STATUS", "SHOW MASTER STATUS"]),
        # MariaDB 10.5.2+: SHOW BINLOG STATUS, the old name an alias
        (Server("SHOW BINLOG STATUS", "SHOW MASTER STATUS"), True, ["SHOW BINLOG STATUS"]),
        # MariaDB before 10.5.2
        (Server("SHOW MASTER STATUS"), True, ["SHOW BINLOG STATUS", "SHOW MASTER STATUS"]),
    ],
)
def test_the_binlog_status_statement_each_server_knows(server: Server, mariadb: bool, ran: list[str]) -> None:
    assert binlog_status(server, mariadb=mariadb) == ("bin.000007", 1234, "", "")
    assert server.ran == ran


def test_binlog_status_errors_other_than_syntax_are_raised() -> None:
    class Denied(Server):
        def execute(self, statement: str) -> None:
            raise pymysql.err.OperationalError(1227, "Access denied; you need the REPLICATION CLIENT privilege")

    with pytest.raises(pymysql.err.OperationalError, match="REPLICATION CLIENT"):
        binlog_status(Denied(), mariadb=False)
    with pytest.raises(pymysql.err.ProgrammingError):
        binlog_status(Server(), mariadb=False)  # neither statement: the last syntax error is the answer


def test_the_monitor_privilege_as_each_server_names_it() -> None:
    assert monitor_privilege(True) == "BINLOG MONITOR"
    assert monitor_privilege(False) == "REPLICATION CLIENT"


def test_caching_sha2_without_tls_encrypts_the_password_with_the_servers_key() -> None:
    """PyMySQL's RSA step of caching_sha2_password (MySQL 8.4's default) works here: cryptography is installed
    (PyMySQL[rsa]), and what it sends is what the server decrypts to the password XOR the scramble."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    salt = bytes(range(1, 21))
    sent = _auth.sha2_rsa_encrypt(b"s3cret", salt, pem)
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    plain = key.decrypt(sent, oaep)
    assert bytes(b ^ salt[i % len(salt)] for i, b in enumerate(plain)) == b"s3cret\0"


CFG = MySQLSourceConfig(engine="mysql", server_id=7, password=SecretStr("pw"), ssl_mode="disabled")


@pytest.mark.parametrize(
    ("exc", "fix"),
    [
        (
            # PyMySQL's words when the package is missing
            RuntimeError("'cryptography' package is required for sha256_password or caching_sha2_password auth"),
            "needs the Python package cryptography",
        ),
        (pymysql.err.OperationalError("caching sha2: Unknown packet for public key: b'\\xff'"), "RSA key pair"),
    ],
)
def test_rsa_exchange_failures_are_fatal_and_name_the_fix(exc: Exception, fix: str) -> None:
    assert rsa_failure(exc) is not None
    err = connect_error(CFG, exc)
    assert type(err) is SourceError and not err.retriable
    assert fix in str(err) and "ssl_mode = 'required'" in str(err)


def test_other_connect_errors_are_not_rsa_failures() -> None:
    refused = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111])")
    assert rsa_failure(refused) is None
    assert isinstance(connect_error(CFG, refused), SourceConnectionError)
    assert rsa_failure(RuntimeError("something else")) is None
