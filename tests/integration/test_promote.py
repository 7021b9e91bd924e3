"""`segflow promote` on the real broker and the emulator, with a sink loading throughout.

A property whose name collides with an earlier one of the same event (``"a b"`` and ``"a-b"``
both name ``a_b``) lands in `_unmapped` as ``properties.a-b``. Promoting it into a column of
its own must move every row's value (the history and what the running sink loads meanwhile),
leave none in `_unmapped`, duplicate no row, and make the sink write later events' values into
the column directly; a second run finds nothing to move, and `segflow schema changes` lists the
promotion."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from cli.main import main
from runtime.rules import parse_rules
from runtime.settings import KafkaSettings, WarehouseSettings
from sinks.snowflake import ddl
from sinks.snowflake.consumer import SinkConsumer
from sinks.snowflake.loader import LoaderOptions, SnowflakeLoader
from sinks.snowflake.metrics import SinkMetrics
from sinks.snowflake.settings import SinkSettings
from sinks.snowflake.tables import fixed_columns
from tests.integration.conftest import unique_name
from tests.integration.sink_support import (
    Warehouse,
    clean_event,
    encode_event,
    make_topics,
    poll_until,
    produce,
)

pytestmark = pytest.mark.integration

RULES = "sources:\n  - name: web\n    write_keys: [k1]\n"
HISTORY = 40


def event(mid: str, n: int) -> tuple[bytes, bytes]:
    props = {"a b": n, "a-b": f"v-{mid}"}  # "a-b" loses the column a_b to "a b"
    return encode_event(
        clean_event("track", n, message_id=mid, event="Plan Chosen", properties=props)
    )


@pytest.fixture
def loading(kafka_bootstrap: str) -> Iterator[dict[str, Any]]:
    """A sink running in this process (layouts read again every second) and a steady stream."""
    run_id = unique_name("promote")  # the session deletes its topics at its end
    prefix = f"{run_id}."
    topics = make_topics(kafka_bootstrap, prefix, partitions=2)
    ctx: dict[str, Any] = {"database": f"PROMOTE_{run_id.upper()}", "sent": []}
    settings = SinkSettings(
        group_id=f"g-{run_id}",
        flush_age_s=0.3,
        retry_max_s=2.0,
        honour_suppressions=False,
        kafka=KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=prefix),
        warehouse=WarehouseSettings(database=ctx["database"], network_timeout_s=20),
    )
    loader = SnowflakeLoader(
        settings.warehouse,
        LoaderOptions(group_id=settings.group_id),
        (metrics := SinkMetrics(CollectorRegistry())),
    )
    loader.schemas.layout_max_age_s = 1.0
    topic = topics.clean("track")
    history = [f"h-{i}" for i in range(HISTORY)]
    produce(kafka_bootstrap, topic, [event(m, i) for i, m in enumerate(history)])
    ctx["sent"] += history
    stop_sink = threading.Event()
    sink = threading.Thread(
        target=SinkConsumer(settings, parse_rules(RULES), loader, metrics).run,
        args=(stop_sink,),
        daemon=True,
    )
    sink.start()
    stop_stream = threading.Event()

    def stream() -> None:
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
        n = 0
        while not stop_stream.is_set():
            mid = f"s-{n}"
            key, value = event(mid, HISTORY + n)
            producer.produce(topic, value=value, key=key)
            producer.flush(10)
            ctx["sent"].append(mid)
            n += 1
            stop_stream.wait(0.05)

    ctx["stop_stream"] = stop_stream
    ctx["stream"] = threading.Thread(target=stream, daemon=True)
    yield ctx
    stop_stream.set()
    stop_sink.set()
    sink.join(60)


def test_promote_moves_history_and_live_rows_while_the_sink_loads(
    loading: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    wh = Warehouse(loading["database"])
    table = '"WEB"."PLAN_CHOSEN"'

    def count() -> int:
        rows = wh.try_query(f"SELECT COUNT(*) FROM {table}")
        return int(rows[0][0]) if rows else 0

    poll_until(lambda: count() == HISTORY, 120, "the history loaded")
    before = wh.query(
        f'SELECT COUNT(*) FROM {table} WHERE "_UNMAPPED":"properties.a-b" IS NOT NULL'
    )
    assert before == [(HISTORY,)]  # the cause: every value is in _unmapped
    loading["stream"].start()
    poll_until(lambda: count() > HISTORY, 60, "the stream loading")

    base = ["promote", "--source", "web", "--table", "plan_chosen", "--key", "properties.a-b"]
    db = ["--snowflake-database", loading["database"]]
    # the default column a_b is the collision winner's: refused, with what to do
    assert main([*base, *db]) == 1
    assert "--column" in capsys.readouterr().err
    assert main([*base, *db, "--column", "a_b_text", "--dry-run"]) == 0
    assert "a_b_text VARCHAR (added)" in capsys.readouterr().out
    assert main([*base, *db, "--column", "a_b_text", "--promote-grace-s", "3"]) == 0
    out = capsys.readouterr().out
    assert "moved" in out and "a_b_text" in out
    # later events: the sink writes the column directly (the stream goes on a little)
    seen = len(loading["sent"])
    poll_until(lambda: len(loading["sent"]) >= seen + 20, 30, "more events sent")
    loading["stop_stream"].set()
    loading["stream"].join(10)
    sent = list(loading["sent"])
    poll_until(lambda: count() == len(sent), 120, "every event loaded")

    rows = wh.query(f'SELECT "ID", "A_B_TEXT", TO_JSON("_UNMAPPED") FROM {table}')
    assert sorted(r[0] for r in rows) == sorted(sent)  # each event once: none lost, none twice
    assert all(value == f"v-{mid}" for mid, value, _ in rows)
    left = [mid for mid, _, doc in rows if doc and "properties.a-b" in orjson.loads(doc)]
    assert left == []

    # a second run has nothing to move
    assert main([*base, *db, "--column", "a_b_text", "--promote-grace-s", "3"]) == 0
    assert "nothing left to move" in capsys.readouterr().out
    assert main(["schema", "changes", "--source", "web", "--output", "json", *db]) == 0
    changes = orjson.loads(capsys.readouterr().out)
    promoted = [c for c in changes if c["change"] == "promoted"]
    assert [(c["table"], c["column"], c["column_type"]) for c in promoted] == [
        ("plan_chosen", "a_b_text", "VARCHAR")
    ]
    # every row moved by promote is counted (the rest the sink wrote directly)
    assert HISTORY <= promoted[0]["occurrences"] < len(sent)
    print(f"promote scenario: {len(sent)} events, {time.monotonic() - started:.1f} s")


def test_promote_pages_through_a_table_larger_than_a_page(
    warehouse_conn_params: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """No sink: a table of the history only, read 4 rows at a time (strict checks on)."""
    database = f"PROMOTE_PAGES_{uuid.uuid4().hex[:10].upper()}"
    wh = Warehouse(database)
    wh.query('CREATE SCHEMA IF NOT EXISTS "WEB"')
    wh.query(ddl.create_table("web", "plan_chosen", fixed_columns("plan_chosen")))
    rows = 11
    docs = [orjson.dumps({"properties.a-b": f"v-{i}", "k": i}).decode() for i in range(rows)]
    wh.query(
        'INSERT INTO "WEB"."PLAN_CHOSEN" ("ID", "_UNMAPPED") SELECT column1, PARSE_JSON(column2) '
        "FROM VALUES " + ", ".join(["(?, ?)"] * rows),
        [b for i, doc in enumerate(docs) for b in (f"h-{i}", doc)],
    )
    args = ["promote", "--source", "web", "--table", "plan_chosen", "--key", "properties.a-b"]
    args += ["--column", "a_b_text", "--promote-grace-s", "0", "--promote-page-rows", "4"]
    assert main([*args, "--snowflake-database", database]) == 0
    assert f"moved {rows} rows' properties.a-b" in capsys.readouterr().out
    found = wh.query('SELECT "ID", "A_B_TEXT", TO_JSON("_UNMAPPED") FROM "WEB"."PLAN_CHOSEN"')
    assert sorted((mid, value, orjson.loads(doc)) for mid, value, doc in found) == sorted(
        (f"h-{i}", f"v-{i}", {"k": i}) for i in range(rows)
    )
    assert wh.query(
        'SELECT "OCCURRENCES" FROM "WEB"."_SEGFLOW_SCHEMA_CHANGES" WHERE "CHANGE" = ?',
        ["promoted"],
    ) == [(rows,)]
    # the staging table is gone
    assert not [
        t
        for (t,) in wh.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '_SEGFLOW'"
        )
        if t.upper().startswith("_SEGFLOW_STAGING_")
    ]
