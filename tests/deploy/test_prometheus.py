"""The alert rules and the Grafana dashboard against real Prometheus tools.

* ``promtool check rules`` and ``promtool test rules deploy/prometheus/alerts_test.yml``;
* a real Prometheus (private config and data directory, free port) scrapes a running daemon with traffic,
  throttling (fault proxy) and a dropped replication connection; then every PromQL expression of the
  dashboard must parse and return series, and every alert expression must parse and evaluate without error.

Grafana-only syntax is replaced the way Grafana would: ``$instance``/``$source``/``$stream`` with the "All"
value ``.*`` and ``$__rate_interval`` with a window that spans several 1 s scrapes.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.support import free_port
from tests.support.daemon import create_stream, start_daemon
from tests.support.faultproxy import FaultProxy
from tests.support.postgres import PgDb
from tests.support.tools import tool

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "cdcstream.json"
RATE_INTERVAL = "20s"

#: Dashboard expressions that may legitimately return nothing in a short test run, and why. Every other
#: expression must return at least one series. (Empty today: the traffic below exercises every panel,
#: throttling included, and the test server gets a max_slot_wal_keep_size so safe_wal_size exists.)
# Dashboard queries a PostgreSQL daemon leaves without data, and why.
MAY_BE_EMPTY: dict[str, str] = {
    'max by (source, server_id, server_uuid, gtid_domain) (cdcstream_source_server_info{instance=~"$instance", '
    'source=~"$source"})': "MySQL/MariaDB only; the daemon here reads PostgreSQL",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=120)


def test_alert_rules_check_and_unit_tests_pass() -> None:
    res = _promtool("check", "rules", str(ALERTS))
    assert res.returncode == 0, res.stdout + res.stderr
    res = _promtool("test", "rules", str(ALERTS_TEST))
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_every_alert_has_a_unit_test() -> None:
    rules = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested = {
        t["alertname"]
        for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    assert rules, "no alert rules found"
    assert rules == tested, f"alerts without a firing test: {rules - tested}"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    doc = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                out.append((p["title"], t["expr"]))
            walk(p.get("panels", []))

    walk(doc["panels"])
    return out


def grafana_to_promql(expr: str) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    expr = re.sub(r"\$\{?(instance|source|stream)\}?", ".*", expr)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def test_dashboard_structure() -> None:
    doc = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == ["Lag", "Throughput", "Kinesis", "Health", "Full load"]
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert {"instance", "source", "stream", "datasource"} <= variables
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    assert len(dashboard_queries()) >= 30


class Prometheus:
    """A private Prometheus server scraping one target every second."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(ALERTS)],
                    "scrape_configs": [{"job_name": "cdcstream", "static_configs": [{"targets": [target]}]}],
                }
            )
        )
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=log,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log.read_text()[-3000:]}"
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready:\n{self.log.read_text()[-3000:]}")

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with the parser's message
            doc = json.loads(exc.read())
        return doc

    def query(self, expr: str) -> list[dict[str, Any]]:
        doc = self.api("query", query=expr)
        assert doc["status"] == "success", f"{expr}: {doc.get('errorType')}: {doc.get('error')}"
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def wal_keep_limit(pg_db: PgDb) -> Iterator[None]:
    """A max_slot_wal_keep_size on the test server, so safe_wal_size (and its panel and alert) has data."""
    pg_db.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'", superuser=True)
    pg_db.execute("SELECT pg_reload_conf()", superuser=True)
    try:
        yield
    finally:
        pg_db.execute("ALTER SYSTEM RESET max_slot_wal_keep_size", superuser=True)
        pg_db.execute("SELECT pg_reload_conf()", superuser=True)


def test_real_prometheus_evaluates_every_dashboard_and_alert_query(
    pg_db: PgDb, moto_server: str, tmp_path: Path, wal_keep_limit: None
) -> None:
    pg_db.execute("CREATE TABLE p (id int PRIMARY KEY, v text)")
    stream = create_stream(moto_server, f"p-{uuid.uuid4().hex[:8]}")
    stop_traffic = threading.Event()

    def traffic() -> None:
        with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
            i = 0
            while not stop_traffic.is_set():
                i += 1
                conn.execute("INSERT INTO p VALUES (%s, 'x') ON CONFLICT (id) DO UPDATE SET v = 'y'", (i % 50,))
                if i % 7 == 0:
                    conn.execute("DELETE FROM p WHERE id = %s", (i % 50,))
                time.sleep(0.05)

    with FaultProxy(moto_server, seed=5, entry_failure_rate=0.1) as proxy:
        daemon = start_daemon(pg_db, proxy.url, stream, tmp_path, extra_http="lag_probe_interval = 0.5")
        prom = Prometheus(tmp_path / "prometheus", daemon.http.removeprefix("http://"))
        thread = threading.Thread(target=traffic, daemon=True)
        try:
            daemon.wait_ready()
            prom.wait_ready()
            thread.start()
            time.sleep(3)
            assert pg_db.terminate_walsender()  # a dropped connection, for the reconnect and error panels
            deadline = time.monotonic() + 120
            while True:  # enough samples for every rate() window, and data in the interesting series
                have = prom.query(
                    f"count_over_time(cdcstream_build_info[{RATE_INTERVAL}]) >= 15"
                    " and on (instance) sum by (instance) (cdcstream_sink_throttled_records_total) > 0"
                    " and on (instance) sum by (instance) (cdcstream_source_reconnects_total) > 0"
                )
                if have:
                    break
                assert time.monotonic() < deadline, f"prometheus never got the data:\n{daemon.log_tail()}"
                time.sleep(1)

            empty: list[str] = []
            for title, expr in dashboard_queries():
                result = prom.query(grafana_to_promql(expr))
                if not result and expr not in MAY_BE_EMPTY:
                    empty.append(f"{title}: {expr}")
            assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

            doc = json.loads(DASHBOARD.read_text())
            for var in doc["templating"]["list"]:
                if var["type"] != "query":
                    continue
                m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
                assert m, var
                series = prom.api("series", **{"match[]": grafana_to_promql(m.group(1))})
                assert series["status"] == "success", series
                assert any(m.group(2) in s for s in series["data"]), f"variable {var['name']} has no values"

            for group in yaml.safe_load(ALERTS.read_text())["groups"]:
                for rule in group["rules"]:
                    prom.query(rule["expr"])  # parses and evaluates (firing or not)
            rules = prom.api("rules")["data"]["groups"]
            loaded = [r for g in rules for r in g["rules"]]
            assert len(loaded) == sum(len(g["rules"]) for g in yaml.safe_load(ALERTS.read_text())["groups"])
            bad = [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
            assert not bad, bad
            # The healthy run fires nothing but, possibly, the sustained-throttling/error alerts' pending state.
            firing = [a for a in prom.api("alerts")["data"]["alerts"] if a["state"] == "firing"]
            assert not firing, firing
        finally:
            stop_traffic.set()
            thread.join(5)
            prom.stop()
            assert daemon.stop() == 0, daemon.log_tail()
            daemon.kill()
        assert proxy.counters["entries_failed"] > 0
