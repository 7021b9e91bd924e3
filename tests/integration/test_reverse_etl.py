"""`segflow reverse-etl` against the emulator, sending to our own edge (a subprocess) on the
shared broker; and its retries against an HTTP server that answers 429 and 503 first."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from cli.main import main
from runtime.settings import KafkaSettings
from runtime.suppressions import publish_suppressions
from runtime.topic_admin import create_topics, expected_topics
from schemas.codec import RAW_EVENT
from schemas.markers import reverse_etl_sync
from schemas.topics import HEADER_SOURCE, Topics
from tests.integration.components import Component, decode_all, env_for, read_topic, warehouse
from tests.integration.conftest import free_port, unique_name

pytestmark = pytest.mark.integration

ROWS = [
    ("u1", "free", 1, '{"theme": "dark"}'),
    ("u2", "pro", 5, '{"theme": "light"}'),
    ("u3", "pro", 12, None),
    ("u4", "enterprise", 250, '{"beta": true}'),
    (None, "free", 1, None),  # no user id: skipped, never sent
]


@pytest.fixture
def edge(
    kafka_bootstrap: str, warehouse_conn_params: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """Our edge as a subprocess, on a unique topic prefix. Yields (prefix, url)."""
    prefix = unique_name("t.retl") + "."
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=prefix)
    create_topics(kafka, expected_topics(kafka.topics, partitions=1))
    rules = tmp_path / "rules.yaml"
    rules.write_text("sources:\n  - {name: crm, write_keys: [crm-key]}\n")
    port = free_port()
    env = env_for(kafka_bootstrap, warehouse_conn_params, prefix, "unused")
    env["SEGFLOW_RULES_FILE"] = str(rules)
    component = Component(
        "ingest",
        ["ingest", "--ingest-host", "127.0.0.1", "--ingest-port", str(port)],
        env,
        tmp_path / "ingest.log",
    )
    try:
        component.wait_ready_http(port)
        yield prefix, f"http://127.0.0.1:{port}"
    finally:
        component.stop()


def _argv(params: dict[str, Any], database: str, url: str, kafka: KafkaSettings) -> list[str]:
    return [
        "reverse-etl",
        "--kafka-bootstrap",
        kafka.bootstrap,
        "--kafka-topic-prefix",
        kafka.topic_prefix,
        "--reverse-etl-sync-name",
        "plans",
        "--reverse-etl-query",
        "select user_id, plan, seats, prefs from crm_model.accounts order by user_id",
        "--reverse-etl-write-key",
        "crm-key",
        "--reverse-etl-api-host",
        url,
        "--snowflake-database",
        database,
        "--snowflake-host",
        str(params["host"]),
        "--snowflake-port",
        str(params["port"]),
        "--log-format",
        "text",
    ]


def test_only_new_or_changed_rows_are_sent_and_arrive_marked(
    kafka_bootstrap: str,
    warehouse_conn_params: dict[str, Any],
    edge: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix, url = edge
    database = unique_name("RETL")
    conn = warehouse(warehouse_conn_params, database)
    cur = conn.cursor()
    cur.execute("CREATE SCHEMA crm_model")
    cur.execute(
        "CREATE TABLE crm_model.accounts (user_id VARCHAR, plan VARCHAR, seats NUMBER, "
        "prefs VARIANT)"
    )
    for row in ROWS:
        cur.execute("INSERT INTO crm_model.accounts SELECT ?, ?, ?, PARSE_JSON(?)", list(row))
    topic = Topics(prefix).raw("identify")
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=prefix)
    argv = _argv(warehouse_conn_params, database, url, kafka)

    assert main(argv) == 0
    assert "sent 4 in 1 requests" in capsys.readouterr().out
    first = read_topic(kafka_bootstrap, topic, expected=4)
    events = {e["userId"]: e for e in decode_all(RAW_EVENT, first)}
    assert sorted(events) == ["u1", "u2", "u3", "u4"]
    assert orjson.loads(events["u2"]["traits"]) == {
        "plan": "pro",
        "seats": 5,
        "prefs": {"theme": "light"},
    }
    assert orjson.loads(events["u3"]["traits"])["prefs"] is None
    for event in events.values():
        assert event["source"] == "crm"
        assert reverse_etl_sync(event["context"], event["integrations"]) == "plans"
    assert {dict(m.headers())[HEADER_SOURCE] for m in first} == {b"crm"}

    cur.execute("UPDATE crm_model.accounts SET plan = 'enterprise' WHERE user_id = 'u2'")
    cur.execute("INSERT INTO crm_model.accounts SELECT 'u5', 'free', 1, NULL")
    assert main(argv) == 0
    assert "sent 2 in 1 requests, 3 unchanged" in capsys.readouterr().out
    both = read_topic(kafka_bootstrap, topic, expected=6)
    assert len(both) == 6
    latest = decode_all(RAW_EVENT, both[4:])
    assert sorted(e["userId"] for e in latest) == ["u2", "u5"]
    assert orjson.loads(next(e for e in latest if e["userId"] == "u2")["traits"])["plan"] == (
        "enterprise"
    )

    assert main(argv) == 0
    assert "sent 0 in 0 requests, 5 unchanged" in capsys.readouterr().out
    cur.execute(
        'SELECT count(*) FROM "_SEGFLOW"."_SEGFLOW_REVERSE_ETL_STATE" WHERE sync_name = ?',
        ["plans"],
    )
    assert cur.fetchone()[0] == 5
    assert len(read_topic(kafka_bootstrap, topic, expected=6)) == 6
    conn.close()


class _FlakyApi(BaseHTTPRequestHandler):
    """429 with Retry-After, then 503, then 200; records what it was sent."""

    answers: list[int] = []
    seen: list[tuple[int, str, list[dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        status = self.answers.pop(0) if self.answers else 200
        self.seen.append((status, self.headers["Authorization"], orjson.loads(body)["batch"]))
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        return


def _suppressions_topic(kafka_bootstrap: str) -> KafkaSettings:
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=unique_name("t.retl") + ".")
    create_topics(kafka, [s for s in expected_topics(kafka.topics, 1) if "suppressions" in s.name])
    return kafka


def test_retries_429_and_5xx_within_segment_batch_limits(
    kafka_bootstrap: str, warehouse_conn_params: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    kafka = _suppressions_topic(kafka_bootstrap)
    database = unique_name("RETL")
    conn = warehouse(warehouse_conn_params, database)
    cur = conn.cursor()
    cur.execute("CREATE SCHEMA crm_model")
    cur.execute(
        "CREATE TABLE crm_model.accounts (user_id VARCHAR, plan VARCHAR, seats NUMBER, "
        "prefs VARIANT)"
    )
    cur.execute(
        "INSERT INTO crm_model.accounts SELECT 'u' || seq4(), 'pro', seq4(), NULL "
        "FROM TABLE(GENERATOR(ROWCOUNT => 30))"
    )
    _FlakyApi.answers = [429, 503]
    _FlakyApi.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        argv = [
            *_argv(warehouse_conn_params, database, url, kafka),
            "--reverse-etl-max-batch-events",
            "12",
            "--reverse-etl-retry-initial-s",
            "0.05",
        ]
        assert main(argv) == 0
    finally:
        server.shutdown()
        server.server_close()
        conn.close()
    assert "sent 30 in 3 requests" in capsys.readouterr().out
    statuses = [s for s, _, _ in _FlakyApi.seen]
    assert statuses == [429, 503, 200, 200, 200]
    # Basic auth: base64("crm-key:")
    assert {auth for _, auth, _ in _FlakyApi.seen} == {"Basic Y3JtLWtleTo="}
    accepted = [batch for s, _, batch in _FlakyApi.seen if s == 200]
    assert [len(b) for b in accepted] == [12, 12, 6]
    assert len({e["messageId"] for b in accepted for e in b}) == 30


def test_suppressed_users_are_never_sent(
    kafka_bootstrap: str, warehouse_conn_params: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    kafka = _suppressions_topic(kafka_bootstrap)
    publish_suppressions(kafka, {"u2": ["anon-2"]}, reason="ticket-7")
    database = unique_name("RETL")
    conn = warehouse(warehouse_conn_params, database)
    cur = conn.cursor()
    cur.execute("CREATE SCHEMA crm_model")
    cur.execute(
        "CREATE TABLE crm_model.accounts (user_id VARCHAR, plan VARCHAR, seats NUMBER, "
        "prefs VARIANT)"
    )
    for user in ("u1", "u2", "u3"):
        cur.execute("INSERT INTO crm_model.accounts SELECT ?, 'pro', 1, NULL", [user])
    _FlakyApi.answers = []
    _FlakyApi.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        argv = _argv(warehouse_conn_params, database, url, kafka)
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "sent 2 in 1 requests" in out and "1 of suppressed users" in out
        assert sorted(e["userId"] for _, _, b in _FlakyApi.seen for e in b) == ["u1", "u3"]

        # lifted: the row was never recorded as sent, so the next sync sends it
        publish_suppressions(kafka, {"u2": []}, lift=True)
        _FlakyApi.seen = []
        assert main(argv) == 0
        assert "sent 1 in 1 requests, 2 unchanged" in capsys.readouterr().out
        assert [e["userId"] for _, _, b in _FlakyApi.seen for e in b] == ["u2"]
    finally:
        server.shutdown()
        server.server_close()
        conn.close()
