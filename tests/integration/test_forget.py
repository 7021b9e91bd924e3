"""`segflow forget` on a running pipeline (edge, processors, sink as subprocesses): a forgotten
user has no row anywhere (a schema the rules do not name included), forget waits for the sinks
to pass the suppression (and says which are behind when they do not), and the user stays absent
when the topics are replayed into the sink (which reproduces everyone else's rows with no
duplicate) and when the user's events arrive late."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from cli.main import main
from deletion.sink_progress import SinkBarrierError, data_ends, stored_offsets, wait_for_sinks
from runtime.settings import KafkaSettings, WarehouseSettings
from sinks.snowflake.offsets import OffsetStore
from sinks.snowflake.session import WarehouseSession
from sinks.snowflake.views import VIEWS
from tests.integration.components import warehouse
from tests.integration.conftest import unique_name
from tests.integration.pipeline import SOURCE, Pipeline, poll, post, running_pipeline

pytestmark = pytest.mark.integration

ALICE, BOB = "alice-1", "bob-2"
IDENTITY_COLUMNS = ("user_id", "anonymous_id", "canonical_user_id", "previous_id", "identifier")


def _journey(user: str, anonymous: str, n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "type": "page",
            "anonymousId": anonymous,
            "name": "Pricing",
            "messageId": f"p-{n}",
            "timestamp": now,
        },
        {
            "type": "identify",
            "anonymousId": anonymous,
            "userId": user,
            "messageId": f"i-{n}",
            "traits": {"email": f"{user}@example.com", "plan": "pro"},
            "timestamp": now,
        },
        {
            "type": "track",
            "userId": user,
            "anonymousId": anonymous,
            "event": "Order Completed",
            "properties": {"order_id": f"o-{n}", "revenue": 10.5},
            "messageId": f"t-{n}",
            "timestamp": now,
        },
    ]


@pytest.fixture(scope="module")
def pipeline(
    kafka_bootstrap: str, warehouse_conn_params: dict[str, Any], tmp_path_factory: Any
) -> Iterator[Pipeline]:
    tmp: Path = tmp_path_factory.mktemp("forget")
    with running_pipeline(kafka_bootstrap, warehouse_conn_params, tmp) as pipe:
        yield pipe


def _tables(pipe: Pipeline) -> dict[str, set[str]]:
    rows = pipe.query(
        "SELECT table_name, column_name FROM information_schema.columns "
        f"WHERE table_schema = '{SOURCE.upper()}'"
    )
    out: dict[str, set[str]] = {}
    for table, column in rows:
        out.setdefault(str(table).lower(), set()).add(str(column).lower())
    return out


def _rows_of(pipe: Pipeline, values: tuple[str, ...]) -> dict[str, int]:
    """Rows per table holding one of `values` in an identity column (or users.id)."""
    found = {}
    quoted = ", ".join(f"'{v}'" for v in values)
    for table, cols in _tables(pipe).items():
        if table.startswith("_segflow") or table in VIEWS:  # a view holds no rows of its own
            continue
        checks = [f"{c} IN ({quoted})" for c in IDENTITY_COLUMNS if c in cols]
        if table == "users":
            checks.append(f"id IN ({quoted})")
        if checks:
            count = pipe.query(f"SELECT COUNT(*) FROM {SOURCE}.{table} WHERE {' OR '.join(checks)}")
            if count[0][0]:
                found[table] = int(count[0][0])
    return found


def _data_ends(pipe: Pipeline, topics: list[str]) -> dict[tuple[str, int], int]:
    """Offset after the last record of each partition (transaction markers excluded)."""
    consumer = Consumer(
        {
            "bootstrap.servers": pipe.bootstrap,
            "group.id": f"forget-ends-{time.monotonic_ns()}",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    parts = []
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts += [TopicPartition(topic, p, 0) for p in meta.partitions]
    consumer.assign(parts)
    ends: dict[tuple[str, int], int] = {}
    pending = {(tp.topic, tp.partition) for tp in parts}
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        key = (str(msg.topic()), int(msg.partition() or 0))
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                pending.discard(key)
            continue
        ends[key] = int(msg.offset() or 0) + 1
    consumer.close()
    assert not pending
    return ends


def _sink_caught_up(pipe: Pipeline) -> bool:
    """The sink's warehouse offsets passed the last record of every clean and identity
    partition."""
    group = pipe.env["SEGFLOW_SINK_GROUP_ID"]
    stored = {
        (str(t), int(p)): int(o)
        for t, p, o in pipe.query(
            'SELECT "TOPIC", "PARTITION", "NEXT_OFFSET" FROM "_SEGFLOW"."_SEGFLOW_OFFSETS" '
            f"WHERE \"CONSUMER_GROUP\" = '{group}'"
        )
    }
    ends = _data_ends(pipe, [*pipe.topics.all_clean(), pipe.topics.identity])
    return all(stored.get(k, -1) >= end for k, end in ends.items())


def _events_loaded(pipe: Pipeline) -> bool:
    return (
        pipe.count("tracks") == 2
        and pipe.count("identifies") == 2
        and pipe.count("pages") == 2
        and pipe.count("users") == 2
    )


def _warehouse_args(pipe: Pipeline) -> list[str]:
    return [
        "--kafka-bootstrap", pipe.bootstrap, "--kafka-topic-prefix", pipe.prefix,
        "--snowflake-database", pipe.database, "--snowflake-host", str(pipe.conn_params["host"]),
        "--snowflake-port", str(pipe.conn_params["port"]), "--log-format", "text",
    ]  # fmt: skip


def test_forgotten_user_is_gone_and_stays_gone_after_replay(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {"batch": _journey(ALICE, "anon-alice", 1) + _journey(BOB, "anon-bob", 2)}
    assert post(f"{pipeline.edge}/v1/batch", json.dumps(body).encode())[0] == 200
    poll(lambda: _events_loaded(pipeline), 60, "both journeys in the warehouse")
    poll(
        lambda: _rows_of(pipeline, (ALICE, "anon-alice")).get("identity_map"),
        30,
        "alice's identity links",
    )
    before = _rows_of(pipeline, (ALICE, "anon-alice"))
    assert {"tracks", "identifies", "pages", "users", "identity_map"} <= set(before)
    bob_before = _rows_of(pipeline, (BOB, "anon-bob"))
    # a source schema the rules file does not name (an old source, say)
    pipeline.query("CREATE SCHEMA IF NOT EXISTS legacy_app")
    pipeline.query("CREATE TABLE legacy_app.tracks (id VARCHAR, user_id VARCHAR, event VARCHAR)")
    pipeline.query(
        f"INSERT INTO legacy_app.tracks VALUES ('x1', '{ALICE}', 'Old'), ('x2', '{BOB}', 'Old')"
    )

    wh = _warehouse_args(pipeline)
    assert main(["forget", "--user-id", ALICE, "--dry-run", *wh]) == 0
    assert "would delete" in capsys.readouterr().out
    assert _rows_of(pipeline, (ALICE, "anon-alice")) == before

    group = pipeline.env["SEGFLOW_SINK_GROUP_ID"]
    assert main(["forget", "--user-id", ALICE, "--reason", "ticket-42", *wh]) == 0
    out = capsys.readouterr().out
    assert f"{SOURCE}: user {ALICE}: deleted {sum(before.values())} rows" in out
    assert f"legacy_app: user {ALICE}: deleted 1 rows" in out
    assert f"sinks past the suppression: {group}" in out
    assert _rows_of(pipeline, (ALICE, "anon-alice")) == {}
    assert _rows_of(pipeline, (BOB, "anon-bob")) == bob_before
    assert pipeline.query("SELECT user_id FROM legacy_app.tracks") == [(BOB,)]
    receipt = pipeline.query(
        f"SELECT action, rows_deleted, reason, linked_identifiers FROM {SOURCE}._segflow_deletions "
        f"WHERE user_id = '{ALICE}'"
    )
    assert receipt == [("forget", sum(before.values()), "ticket-42", 1)]

    # A sink group that stopped loading (a row behind a partition holding data): forget waits
    # for it, then gives up naming it, non-zero; told which groups to wait for, it finishes.
    offsets = '"_SEGFLOW"."_SEGFLOW_OFFSETS"'
    topic, partition = pipeline.query(
        f'SELECT "TOPIC", "PARTITION" FROM {offsets} WHERE "CONSUMER_GROUP" = \'{group}\' '
        'AND "NEXT_OFFSET" > 0 ORDER BY 1, 2 LIMIT 1'
    )[0]
    pipeline.query(
        f'INSERT INTO {offsets} ("CONSUMER_GROUP", "TOPIC", "PARTITION", "NEXT_OFFSET") '
        f"VALUES ('retired-sink', '{topic}', {partition}, 0)"
    )
    carol = ["forget", "--user-id", "carol-3", *wh, "--forget-progress-s", "1"]
    assert main([*carol, "--forget-sink-wait-s", "3"]) == 1
    captured = capsys.readouterr()
    assert f"group retired-sink: {topic}[{partition}] at 0, needs" in captured.err
    assert "waiting for the sinks: " in captured.out
    assert main([*carol, "--forget-sink-groups", group]) == 0
    assert f"sinks past the suppression: {group}" in capsys.readouterr().out
    pipeline.query(f"DELETE FROM {offsets} WHERE \"CONSUMER_GROUP\" = 'retired-sink'")

    # Replay: the sink group back to the start of every clean topic (Kafka and warehouse
    # offsets), after losing bob's track row; and the raw topics copied into themselves.
    pipeline.components["sink"].stop()
    pipeline.query(f"DELETE FROM {SOURCE}.tracks")
    topics = [*pipeline.topics.all_clean(), pipeline.topics.identity]
    reset = ["replay", "reset", "--group", group, "--to-earliest", "--warehouse-offsets"]
    for topic in topics:
        reset += ["--topic", topic]
    assert main([*reset, *wh]) == 0
    assert "(Kafka and warehouse)" in capsys.readouterr().out
    for raw in (pipeline.topics.raw("track"), pipeline.topics.raw("identify")):
        copy = ["replay", "copy", "--from-topic", raw, "--to-topic", raw, "--start=-1h"]
        assert main([*copy, "--kafka-bootstrap", pipeline.bootstrap]) == 0
    # A late event of alice's arrives at the edge: accepted, never loaded.
    late = {"batch": [{"type": "track", "userId": ALICE, "event": "Late", "messageId": "late-1"}]}
    assert post(f"{pipeline.edge}/v1/batch", json.dumps(late).encode())[0] == 200
    pipeline.start("sink")

    poll(lambda: pipeline.count("tracks") == 1, 60, "bob's track row reproduced")
    poll(lambda: _sink_caught_up(pipeline), 60, "the sink at the end of every topic")
    assert _rows_of(pipeline, (ALICE, "anon-alice")) == {}
    assert _rows_of(pipeline, (BOB, "anon-bob")) == bob_before
    for table in ("tracks", "identifies", "pages"):
        rows = pipeline.query(f"SELECT COUNT(*), COUNT(DISTINCT id) FROM {SOURCE}.{table}")
        assert rows == [(1, 1)], table

    assert main(["forget", "--user-id", ALICE, "--unsuppress", *wh]) == 0
    actions = pipeline.query(
        f"SELECT action FROM {SOURCE}._segflow_deletions WHERE user_id = '{ALICE}' ORDER BY 1"
    )
    assert actions == [("forget",), ("unsuppress",)]


def test_sink_barrier_on_transactional_topics(
    kafka_bootstrap: str, new_topic: Any, warehouse_conn_params: dict[str, Any]
) -> None:
    """The data ends skip commit markers and aborted records (the sink's stored offset never
    counts them); the wait ends when the sink's row reaches them, or names it when it does not."""
    busy, empty = new_topic(1), new_topic(1)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"forget-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for n in range(3):
        producer.produce(busy, value=b"kept-%d" % n)
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(busy, value=b"aborted")
    producer.abort_transaction(30)
    kafka = KafkaSettings(bootstrap=kafka_bootstrap)
    ends = data_ends(kafka, [busy, empty])
    assert ends == {(busy, 0): 3, (empty, 0): 0}  # the high watermark of busy is past 3

    database = unique_name("FORGET")
    conn = warehouse(warehouse_conn_params, database)
    store = OffsetStore("_segflow", "sink")
    conn.cursor().execute('CREATE SCHEMA IF NOT EXISTS "_SEGFLOW"')
    conn.cursor().execute(store.create_sql())
    conn.cursor().execute(
        f'INSERT INTO {store.table} ("CONSUMER_GROUP", "TOPIC", "PARTITION", "NEXT_OFFSET")'
        f" VALUES ('sink', '{busy}', 0, 2)"
    )
    settings = WarehouseSettings(
        host=str(warehouse_conn_params["host"]),
        port=int(warehouse_conn_params["port"]),
        database=database,
    )
    said: list[str] = []
    with WarehouseSession(settings, "forget", create_database=False) as session:
        read = lambda: stored_offsets(session, "_segflow")  # noqa: E731
        with pytest.raises(SinkBarrierError, match=rf"group sink: {busy}\[0\] at 2, needs 3"):
            wait_for_sinks(read, ends, [], timeout_s=1, poll_s=0.2, say=said.append)
        conn.cursor().execute(f'UPDATE {store.table} SET "NEXT_OFFSET" = 3')
        assert wait_for_sinks(read, ends, [], timeout_s=10, say=said.append) == ["sink"]
    conn.close()


def test_forget_covers_the_older_user_id_an_alias_linked(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user first known by another user id (an alias linked them): forgetting the user by
    the newer id deletes the rows loaded under the older one too."""
    old, new, anon = "dave-old", "dave-new", "anon-dave"
    now = datetime.now(UTC).isoformat()
    body = {
        "batch": [
            *_journey(old, anon, 7),
            {"type": "alias", "previousId": old, "userId": new, "messageId": "a-7"},
            {
                "type": "track",
                "userId": new,
                "event": "Renewed",
                "messageId": "t-8",
                "timestamp": now,
            },
        ]
    }
    assert post(f"{pipeline.edge}/v1/batch", json.dumps(body).encode())[0] == 200

    def linked() -> bool:
        if not {"identity_map", "aliases"} <= set(_tables(pipeline)):
            return False
        rows = pipeline.query(
            f"SELECT canonical_user_id FROM {SOURCE}.identity_map "
            f"WHERE identifier = '{old}' AND identifier_type = 'user_id'"
        )
        return rows == [(new,)] and "aliases" in _rows_of(pipeline, (new,))

    poll(linked, 60, "the alias in identity_map and aliases")
    poll(lambda: "tracks" in _rows_of(pipeline, (new,)), 60, "the newer id's track")
    before = _rows_of(pipeline, (old, new, anon))
    assert {"tracks", "identifies", "pages", "aliases", "identity_map"} <= set(before)
    assert main(["forget", "--user-id", new, *_warehouse_args(pipeline)]) == 0
    capsys.readouterr()
    assert _rows_of(pipeline, (old, new, anon)) == {}
