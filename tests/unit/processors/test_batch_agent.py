"""The agent's batch: what each record becomes (clean event, DLQ copy), counted in the metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from typing import Any

import pytest
from faust.types import Message
from prometheus_client import CollectorRegistry

from processors.batch_agent import GC_FULL_THRESHOLD
from schemas.codec import RAW_EVENT, SCHEMA_CHANGE
from schemas.dlq import PROCESSING_FAILED, DlqEntry, parse_dlq_headers
from schemas.topics import HEADER_SOURCE
from tests.unit.processors.fakes import (
    CODEC,
    FakeTransactionalProducer,
    Listed,
    clean_ids,
    dedupe_keys,
    install,
    messages,
    processor,
)


def test_suppressed_users_events_are_counted_and_nothing_of_them_is_sent(tmp_path: Path) -> None:
    async def run() -> None:
        registry = CollectorRegistry()
        proc = processor(tmp_path, registry, Listed({"a3", "a7"}))
        fake = FakeTransactionalProducer()
        install(proc, fake)
        await proc.agent.process_batch(messages(proc, 10))
        assert clean_ids(fake) == {f"m{i}" for i in range(10)} - {"m3", "m7"}
        assert dedupe_keys(proc, fake) == {f"m{i}".encode() for i in range(10)} - {b"m3", b"m7"}
        assert not any(k in (b"a3", b"a7") for _, _, k, _ in fake.sent)
        events = "segflow_process_events_total"
        labels = {"call_type": "track"}
        assert registry.get_sample_value(events, {**labels, "outcome": "suppressed"}) == 2
        assert registry.get_sample_value(events, {**labels, "outcome": "clean"}) == 8

    asyncio.run(run())


def dead_letters(proc: Any, fake: FakeTransactionalProducer) -> list[DlqEntry]:
    out = []
    for (topic, _, _, _), headers in zip(fake.sent, fake.headers, strict=True):
        if topic == proc.topics.dlq:
            entry = parse_dlq_headers(headers)
            assert entry is not None, headers
            out.append(entry)
    return out


def test_an_undecodable_record_goes_to_the_dlq_with_its_origin_and_own_headers(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        registry = CollectorRegistry()
        proc = processor(tmp_path, registry)
        fake = FakeTransactionalProducer()
        install(proc, fake)
        topic = proc.topics.raw("track")
        own = [(HEADER_SOURCE, b"web")]
        garbage = Message(topic, 1, 7, 0.0, 0, own, b"k", b"not avro", None)
        await proc.agent.process_batch([*messages(proc, 4), garbage])
        assert clean_ids(fake) == {f"m{i}" for i in range(4)}
        [entry] = dead_letters(proc, fake)
        assert (entry.code, entry.topic, entry.partition, entry.offset) == (
            "undecodable",
            topic,
            1,
            7,
        )
        assert "single-object marker" in entry.reason
        assert entry.origin == own
        dlq = "segflow_process_dlq_total"
        assert registry.get_sample_value(dlq, {"code": "undecodable"}) == 1

    asyncio.run(run())


def test_a_processing_failure_reaches_neither_dlq_nor_log_with_the_exceptions_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception whose text quotes the record (an email here) names only its type in the
    DLQ reason and the log; the partition moves on."""

    async def run() -> None:
        registry = CollectorRegistry()
        proc = processor(tmp_path, registry)
        fake = FakeTransactionalProducer()
        install(proc, fake)
        process = proc.agent.pipeline.process
        email = "".join(reversed("moc.elpmaxe@eod.enaj"))  # not in this source, as in a record

        def failing(raw: Any, key: Any, partition: int, now: Any, writes: Any) -> Any:
            if raw["messageId"] == "m2":
                raise ValueError(f"cannot mask {email}")
            return process(raw, key, partition, now, writes)

        monkeypatch.setattr(proc.agent.pipeline, "process", failing)
        with caplog.at_level(logging.DEBUG):
            await proc.agent.process_batch(messages(proc, 4))
        assert clean_ids(fake) == {"m0", "m1", "m3"}
        [entry] = dead_letters(proc, fake)
        assert entry.code == PROCESSING_FAILED
        assert entry.reason.startswith("processing failed: ValueError")
        assert email not in entry.reason
        assert "processing failed at" in caplog.text and "ValueError" in caplog.text
        assert email not in caplog.text
        dlq = "segflow_process_dlq_total"
        assert registry.get_sample_value(dlq, {"code": PROCESSING_FAILED}) == 1

    asyncio.run(run())


def test_a_record_that_cannot_be_encoded_goes_to_the_dlq_and_its_state_changes_are_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Encoding a processed record's output fails (a bug): the record goes to the DLQ, the
    others of the batch go on, nothing of its output is sent, and the dedupe and identity
    entries it made are undone, so the same record read again (a DLQ replay after the fix) is
    processed, not dropped as a duplicate."""

    async def run() -> None:
        registry = CollectorRegistry()
        proc = processor(tmp_path, registry)
        fake = FakeTransactionalProducer()
        install(proc, fake)
        batch = messages(proc, 4, "identify")
        encode = proc.agent.codec.encode

        def failing(schema: Any, record: Any) -> bytes:
            if record.get("messageId") == "identify-m2" or record.get("identifier") == "a2":
                raise TypeError("cannot encode")
            return encode(schema, record)

        monkeypatch.setattr(proc.agent.codec, "encode", failing)
        await proc.agent.process_batch(batch)
        assert clean_ids(fake) == {"identify-m0", "identify-m1", "identify-m3"}
        [entry] = dead_letters(proc, fake)
        assert (entry.code, entry.offset) == (PROCESSING_FAILED, 2)
        assert dedupe_keys(proc, fake) == {b"identify-m0", b"identify-m1", b"identify-m3"}
        identity = proc.topics.identity
        linked = {k for t, _, k, _ in fake.sent if t == identity}
        assert linked and not any(k is None or b"2" in k for k in linked)
        assert (
            registry.get_sample_value("segflow_process_dlq_total", {"code": PROCESSING_FAILED}) == 1
        )

        monkeypatch.setattr(proc.agent.codec, "encode", encode)
        fake.sent.clear()
        fake.headers.clear()
        await proc.agent.process_batch([batch[2]])
        assert clean_ids(fake) == {"identify-m2"}
        assert dedupe_keys(proc, fake) == {b"identify-m2"}
        assert any(t == identity for t, _, _, _ in fake.sent)

    asyncio.run(run())


def test_records_fetched_before_a_rebalance_are_dropped_and_counted(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    proc = processor(tmp_path, registry)
    batch = messages(proc, 4)
    for i, m in enumerate(batch):
        m.generation_id = proc.app.consumer_generation_id - (i % 2)
    assert proc.agent.current(batch) == batch[0::2]
    proc.app.flow_control.suspend()  # a rebalance going on: nothing is current
    assert proc.agent.current(batch) == []
    assert registry.get_sample_value("segflow_process_stale_records_total") == 2 + 4


def test_full_collections_are_rare_while_the_agent_runs_and_restored_after(
    tmp_path: Path,
) -> None:
    """While the agent runs, the collector's full collections wait GC_FULL_THRESHOLD young
    collections (each walks every object of the worker); the young generations keep their
    thresholds, and the process's own come back when the agent stops."""
    before = gc.get_threshold()

    async def run() -> None:
        proc = processor(tmp_path, CollectorRegistry())
        task = asyncio.ensure_future(proc.agent.run(None))
        for _ in range(5):
            await asyncio.sleep(0)
        young, middle, full = gc.get_threshold()
        assert (young, middle) == before[:2]
        assert full == max(before[2], GC_FULL_THRESHOLD) > 10
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(run())
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)


def test_a_failed_records_new_fields_are_still_new_for_the_next_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drift detection remembers a new property while the record is processed; when the record
    then fails (its clean record cannot be encoded), its drift changelog writes are not sent, so
    what it remembered is forgotten too: the same record read again still reports the property
    as new (a schema change and its changelog entry), as it would after a restart."""

    async def run() -> None:
        proc = processor(tmp_path, CollectorRegistry())
        fake = FakeTransactionalProducer()
        install(proc, fake)
        [planned] = messages(proc, 1, "track")
        raw = CODEC.decode(RAW_EVENT, planned.value)
        raw["properties"] = '{"gift_wrap": true}'  # a property no tracking plan names
        value = CODEC.encode(RAW_EVENT, raw)
        msg = Message(planned.topic, 0, 0, 0.0, 0, [], planned.key, value, None)
        encode = proc.agent.codec.encode

        def failing(schema: Any, record: Any) -> bytes:
            if record.get("messageId") == "m0" and "processedAt" in record:
                raise TypeError("cannot encode")
            return encode(schema, record)

        monkeypatch.setattr(proc.agent.codec, "encode", failing)
        await proc.agent.process_batch([msg])
        assert clean_ids(fake) == set() and len(dead_letters(proc, fake)) == 1
        changes, drift = proc.topics.schema_changes, proc.changelog_topic["drift"]
        assert not any(t in (changes, drift) for t, _, _, _ in fake.sent)
        assert len(proc.known) == 0  # what it remembered went with it

        monkeypatch.setattr(proc.agent.codec, "encode", encode)
        fake.sent.clear()
        fake.headers.clear()
        await proc.agent.process_batch([msg])
        assert clean_ids(fake) == {"m0"}
        sent_changes = [v for t, _, _, v in fake.sent if t == changes]
        assert [CODEC.decode(SCHEMA_CHANGE, v)["field"] for v in sent_changes] == [
            "properties.gift_wrap"
        ]
        assert any(t == drift for t, _, _, _ in fake.sent)

    asyncio.run(run())
