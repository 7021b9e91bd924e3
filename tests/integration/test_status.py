"""`segflow status` and `segflow tail` against the real broker and the emulator; status checked
against Kafka's own tools.

One set of topics, groups and a warehouse database serves the module: records on a clean topic,
offsets committed for two groups at known positions (one partition never committed), DLQ records
with their headers, a suppression, a loaded table and a schema change. The lag and DLQ depth that
`segflow status --output json` reports must equal what kafka-consumer-groups.sh --describe (the
Kafka distribution's tool, run from the local broker's jars) reports. For the DLQ, a reference
group commits offset 0 (the log start of a new topic) on each DLQ partition: the tool's lag of
that group is then the DLQ's depth.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from cli.main import main
from runtime.health import HealthServer, HealthState
from runtime.services import kafka as local_kafka
from runtime.settings import WarehouseSettings
from schemas.codec import RAW_EVENT, SUPPRESSION, AvroCodec
from schemas.dlq import dlq_headers
from schemas.topics import Topics
from sinks.snowflake.session import WarehouseSession
from tests.integration.conftest import create_topic, free_port, unique_name
from tests.integration.sink_support import clean_event, encode_event

pytestmark = pytest.mark.integration

SECRET = b"payload-with-jane@example.com"
# records per partition of the clean topic; the groups' committed offsets
RECORDS = {0: 10, 1: 7, 2: 4}
SINK_COMMITS = {0: 3, 1: 7}  # partition 2: never committed
PROCESSOR_COMMITS = {0: 10, 1: 0, 2: 4}
DLQ_RECORDS = {0: 3, 1: 1}


@dataclass(frozen=True)
class Pipeline:
    bootstrap: str
    topics: Topics
    sink_group: str
    processors_group: str
    dlq_reference_group: str
    database: str
    schema: str
    edge_url: str


def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p, o) for p, o in offsets.items()]
        consumer.commit(offsets=tps, asynchronous=False)
    finally:
        consumer.close()


def _warehouse(database: str, schema: str) -> None:
    """A table the sink would load and one recorded schema change, in a database of its own."""
    settings = WarehouseSettings(database=database)
    now = datetime.now(UTC)
    with WarehouseSession(settings, "test") as s:
        s.run(f'CREATE SCHEMA IF NOT EXISTS "{schema}"', kind="ddl")
        s.run(
            f'CREATE TABLE "{schema}"."TRACKS" ("ID" VARCHAR, "RECEIVED_AT" TIMESTAMP_TZ, '
            '"LOADED_AT" TIMESTAMP_TZ)',
            kind="ddl",
        )
        s.run(
            f'INSERT INTO "{schema}"."TRACKS" VALUES (?, ?, ?), (?, ?, ?)',
            [
                "m1",
                (now - timedelta(minutes=5)).isoformat(),
                (now - timedelta(minutes=4)).isoformat(),
                "m2",
                (now - timedelta(minutes=3)).isoformat(),
                (now - timedelta(minutes=2)).isoformat(),
            ],
            kind="insert",
        )
        s.run(
            f'CREATE TABLE "{schema}"."_SEGFLOW_SCHEMA_CHANGES" ("DETECTED_AT" TIMESTAMP_TZ, '
            '"TABLE_NAME" VARCHAR, "COLUMN_NAME" VARCHAR, "CHANGE" VARCHAR, "OCCURRENCES" NUMBER)',
            kind="ddl",
        )
        s.run(
            f'INSERT INTO "{schema}"."_SEGFLOW_SCHEMA_CHANGES" VALUES (?, ?, ?, ?, ?)',
            [now.isoformat(), "tracks", "plan", "added", 2],
            kind="insert",
        )


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, warehouse_conn_params: dict[str, Any]) -> Iterator[Pipeline]:
    prefix = unique_name("status") + "."
    topics = Topics(prefix)
    clean = topics.clean("track")
    create_topic(kafka_bootstrap, clean, partitions=3)
    create_topic(kafka_bootstrap, topics.dlq, partitions=2)
    create_topic(kafka_bootstrap, topics.suppressions, partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition, count in RECORDS.items():
        for i in range(count):
            producer.produce(clean, value=SECRET, key=f"k{i}", partition=partition)
    for partition, count in DLQ_RECORDS.items():
        for i in range(count):
            headers: list[tuple[str, str | bytes | None]] = list(
                dlq_headers(f"unreadable record {i}", "codec", clean, partition, i)
            )
            producer.produce(topics.dlq, value=SECRET, partition=partition, headers=headers)
    suppression = {
        "userId": "u-forgotten",
        "identifiers": ["anon-1"],
        "reason": None,
        "suppressedAt": datetime.now(UTC),
    }
    producer.produce(
        topics.suppressions, key=b"u-forgotten", value=AvroCodec().encode(SUPPRESSION, suppression)
    )
    assert producer.flush(10) == 0
    sink_group, processors_group = unique_name("status-sink"), unique_name("status-proc")
    _commit(kafka_bootstrap, sink_group, clean, SINK_COMMITS)
    _commit(kafka_bootstrap, processors_group, clean, PROCESSOR_COMMITS)
    reference = unique_name("status-dlq")
    _commit(kafka_bootstrap, reference, topics.dlq, dict.fromkeys(DLQ_RECORDS, 0))
    database, schema = unique_name("STATUS").upper(), "SOURCE_A"
    _warehouse(database, schema)

    state = HealthState()
    state.set_ready(True)
    edge = HealthServer(CollectorRegistry(), state, "127.0.0.1", 0).start()
    try:
        yield Pipeline(
            kafka_bootstrap,
            topics,
            sink_group,
            processors_group,
            reference,
            database,
            schema,
            f"http://127.0.0.1:{edge.port}",
        )
    finally:
        edge.stop()


def _argv(p: Pipeline, *, bootstrap: str | None = None, sink_down: bool = True) -> list[str]:
    argv = [
        "--kafka-bootstrap", bootstrap or p.bootstrap,
        "--kafka-topic-prefix", p.topics.prefix,
        "--status-sink-group", p.sink_group,
        "--status-processors-group", p.processors_group,
        "--snowflake-database", p.database,
        "--component", f"edge={p.edge_url}",
        "--status-max-lag", "5",
        "--status-timeout-s", "10",
    ]  # fmt: skip
    if sink_down:
        argv += ["--component", f"sink=http://127.0.0.1:{free_port()}"]
    return argv


def _kafka_tool(*args: str) -> subprocess.Popen[str]:
    java = shutil.which("java")
    assert java, "java is needed to run Kafka's own tools"
    log4j = local_kafka.__file__.rsplit("/", 1)[0] + "/kafka-log4j2.properties"
    cmd = [java, "-Xmx256m", f"-Dlog4j2.configurationFile={log4j}"]
    cmd += ["-cp", f"{local_kafka.lib_dir()}/*", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _output(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    return out


def _described(text: str) -> dict[tuple[str, str, int], tuple[int | None, int, int | None]]:
    """kafka-consumer-groups --describe rows: (group, topic, partition) -> (current, end, lag)."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) < 6 or cells[0] == "GROUP" or not cells[2].isdigit():
            continue
        current = None if cells[3] == "-" else int(cells[3])
        lag = None if cells[5] == "-" else int(cells[5])
        rows[(cells[0], cells[1], int(cells[2]))] = (current, int(cells[4]), lag)
    return rows


def test_status_json_matches_kafkas_own_tools(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    groups = [pipeline.sink_group, pipeline.processors_group, pipeline.dlq_reference_group]
    described = _kafka_tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        *("--bootstrap-server", pipeline.bootstrap, "--describe"),
        *(arg for g in groups for arg in ("--group", g)),
    )

    code = main(["status", "--output", "json", *_argv(pipeline)])
    out = capsys.readouterr().out
    status = json.loads(out)

    tool = _described(_output(described))
    ours = {
        (g["group"], t["topic"], p["partition"]): (p["committed"], p["end"], p["lag"])
        for g in status["groups"]
        for t in g["topics"]
        for p in t["partitions"]
    }
    dlq_by_tool = {k: v for k, v in tool.items() if k[0] == pipeline.dlq_reference_group}
    assert ours == {k: v for k, v in tool.items() if k not in dlq_by_tool}
    clean = pipeline.topics.clean("track")
    assert ours[(pipeline.sink_group, clean, 0)] == (3, 10, 7)
    assert (pipeline.sink_group, clean, 2) not in ours  # never committed, no member: not listed
    by_group = {g["group"]: g for g in status["groups"]}
    assert by_group[pipeline.processors_group]["lag"] == 7
    assert by_group[pipeline.sink_group]["lag"] == 7

    depth = {str(k[2]): lag for k, (_, _, lag) in dlq_by_tool.items()}
    assert status["dlq"]["partitions"] == depth == {"0": 3, "1": 1}
    assert status["dlq"]["depth"] == sum(DLQ_RECORDS.values())
    newest = status["dlq"]["newest"]
    assert len(newest) == 4 and {r["code"] for r in newest} == {"codec"}
    assert newest[0]["origin"].startswith(clean + "[")

    tables = {(t["schema"], t["table"]): t for t in status["tables"]}
    tracks = tables[(pipeline.schema.lower(), "tracks")]
    assert 100 <= tracks["freshness_s"] <= 300
    assert status["schema_changes"]["count"] == 1
    assert status["schema_changes"]["newest"][0]["column"] == "plan"
    assert status["suppressed_users"] == 1

    components = {c["name"]: c["state"] for c in status["components"]}
    assert components == {"edge": "ready", "sink": "down"}
    assert code == 1 and status["exit_code"] == 1 and status["unchecked"] == []
    problems = "\n".join(status["problems"])
    assert "sink is down" in problems
    assert f"consumer group {pipeline.sink_group} lags 7 records on {clean}" in problems
    assert "DLQ" in problems
    assert "jane" not in out and "payload" not in out  # never a payload


def test_status_screen_and_an_unreachable_broker(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", *_argv(pipeline)]) == 1
    screen = capsys.readouterr().out
    assert f"  {pipeline.topics.clean('track')}" in screen
    assert "source_a.tracks" in screen and "suppressed users  1" in screen
    assert "jane" not in screen

    dead = _argv(pipeline, bootstrap=f"127.0.0.1:{free_port()}", sink_down=False)
    dead += ["--status-timeout-s", "2", "--no-status-warehouse-check"]
    code = main(["status", "--output", "json", *dead])
    status = json.loads(capsys.readouterr().out)
    # the edge is ready and nothing else could be checked: health unknown
    assert status["unchecked"][0].startswith("kafka: no answer from 127.0.0.1:")
    assert code == 2 and status["problems"] == []


@pytest.mark.timeout(60)
def test_tail_shows_the_filtered_clean_events_and_raw_only_when_asked(
    pipeline: Pipeline, capfd: pytest.CaptureFixture[str]
) -> None:
    topics = pipeline.topics
    create_topic(pipeline.bootstrap, topics.raw("track"), partitions=1)
    producer = Producer({"bootstrap.servers": pipeline.bootstrap})
    wanted = {"Order Completed": "web", "Order Refunded": "web", "Order Shipped": "ios"}
    for n, (event, source) in enumerate(wanted.items()):
        key, value = encode_event(clean_event("track", n, event=event, source=source))
        producer.produce(topics.clean("track"), key=key, value=value, partition=1)
    raw = clean_event("track", 9, event="Order Completed", properties={"email": "jane@example.com"})
    raw_fields = {f["name"] for f in AvroCodec().versions[RAW_EVENT][-1].schema["fields"]}
    raw_value = AvroCodec().encode(RAW_EVENT, {k: v for k, v in raw.items() if k in raw_fields})
    producer.produce(topics.raw("track"), value=raw_value)
    assert producer.flush(10) == 0

    kafka = ["--kafka-bootstrap", pipeline.bootstrap, "--kafka-topic-prefix", topics.prefix]
    filters = ["--source", "web", "--event", "order", "--type", "track", "--from-beginning"]
    assert main(["tail", *kafka, *filters, "--limit", "2", "--output", "json"]) == 0
    out, err = capfd.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(ln["record"]["event"], ln["record"]["source"]) for ln in lines] == [
        ("Order Completed", "web"),
        ("Order Refunded", "web"),
    ]
    assert all(ln["topic"] == topics.clean("track") for ln in lines)
    assert "jane" not in out and "PII" not in err  # clean: no warning

    assert main(["tail", *kafka, "--raw", "--from-beginning", "--limit", "1"]) == 0
    out, err = capfd.readouterr()
    assert "before PII masking" in err
    assert "Order Completed" in out and "email=jane@example.com" in out  # raw is raw
