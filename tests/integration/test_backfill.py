"""`segflow backfill` into a running pipeline (edge, processors, sink as subprocesses): a
generated archive, interrupted and resumed, then sent again, lands exactly once. And an archive
in a local S3-compatible server (moto) reads like a folder."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from runtime.replay import GroupOffsets
from runtime.settings import KafkaSettings
from tests.integration.components import REPO
from tests.integration.pipeline import SOURCE, Pipeline, poll, running_pipeline

pytestmark = pytest.mark.integration

TYPES = {"track": "tracks", "identify": "identifies", "page": "pages"}


def make_archive(root: Path, per_file: int = 40) -> dict[str, int]:
    """Segment's layout: web/<day>/<hour>/file, one day as ISO and one as epoch ms, gzip and
    plain files, a blank line, an event without messageId. Returns events per table."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    counts = {t: 0 for t in TYPES.values()}
    n = 0
    for index, hour in enumerate((now - timedelta(days=1), now, now + timedelta(hours=1))):
        midnight = datetime(hour.year, hour.month, hour.day, tzinfo=UTC)
        day = midnight.date().isoformat() if index == 0 else str(int(midnight.timestamp() * 1000))
        folder = root / SOURCE / day / f"{hour.hour:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(per_file):
            n += 1
            call = ("track", "identify", "page")[n % 3]
            t = (hour + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
            event: dict[str, Any] = {
                "type": call,
                "messageId": f"bf-{uuid.uuid4()}",
                "anonymousId": f"anon-{n % 17}",
                "userId": f"user-{n % 7}",
                "receivedAt": t,
                "timestamp": t,
                "sentAt": t,
                "context": {"library": {"name": "analytics.js"}},
            }
            if call == "track":
                event.update(event="Archive Viewed", properties={"n": n})
            elif call == "identify":
                event["traits"] = {"plan": "pro", "n": n}
            else:
                event.update(name="Home", properties={"path": "/"})
            if n == 5:
                del event["messageId"]  # derived from the line: stable across reruns
            counts[TYPES[call]] += 1
            lines.append(json.dumps(event))
        data = ("\n".join(lines) + "\n\n").encode()
        if index == 1:
            (folder / "1700000000000.abc.gz").write_bytes(gzip.compress(data))
        else:
            (folder / "events.json").write_bytes(data)
    return counts


@pytest.fixture(scope="module")
def pipeline(
    kafka_bootstrap: str, warehouse_conn_params: dict[str, Any], tmp_path_factory: Any
) -> Iterator[Pipeline]:
    tmp: Path = tmp_path_factory.mktemp("backfill")
    with running_pipeline(kafka_bootstrap, warehouse_conn_params, tmp) as pipe:
        yield pipe


def _argv(pipe: Pipeline, archive: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [
        "backfill",
        str(archive),
        "--backfill-checkpoint-path",
        str(checkpoint),
        "--backfill-checkpoint-every",
        "10",
        "--kafka-bootstrap",
        pipe.bootstrap,
        "--kafka-topic-prefix",
        pipe.prefix,
        "--log-format",
        "text",
        *extra,
    ]


def _processed_everything(pipe: Pipeline) -> bool:
    """The processors' group has consumed every raw record (committed == end of log)."""
    kafka = KafkaSettings(bootstrap=pipe.bootstrap)
    offsets = GroupOffsets(kafka, pipe.env["SEGFLOW_PROCESS_APP_ID"])
    keys = offsets.resolve([(t, None) for t in pipe.topics.all_raw()])
    bounds = offsets.bounds(keys)
    committed = offsets.committed(keys)
    return all((committed.get(k) or 0) >= bounds[k][1] for k in keys if bounds[k][1] > 0)


def _table_counts(pipe: Pipeline) -> dict[str, tuple[int, int]]:
    """(rows, distinct ids) per table."""
    out = {}
    for table in TYPES.values():
        if not pipe.count(table):  # 0 also while the sink has not created the table yet
            out[table] = (0, 0)
            continue
        rows = pipe.query(f"SELECT COUNT(*), COUNT(DISTINCT id) FROM {SOURCE}.{table}")
        out[table] = (int(rows[0][0]), int(rows[0][1]))
    return out


def test_interrupted_resumed_and_repeated_backfill_lands_exactly_once(
    pipeline: Pipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "archive"
    expected = make_archive(archive)
    checkpoint = tmp_path / "checkpoint.jsonl"
    total = sum(expected.values())

    assert main([*_argv(pipeline, archive, checkpoint), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would send {total}" in out and "3 files selected" in out
    assert not checkpoint.exists()

    # First run, slowed down and killed once part of it is acknowledged.
    argv = _argv(pipeline, archive, checkpoint, "--backfill-rate-limit-per-s", "40")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", *argv],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        poll(
            lambda: checkpoint.exists() and len(checkpoint.read_text().splitlines()) >= 3,
            30,
            "checkpoint progress",
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    entries = [json.loads(line) for line in checkpoint.read_text().splitlines()]
    assert not all(e["done"] for e in entries)

    # Resumed: starts after the last acknowledged line.
    assert main(argv[:-2]) == 0
    out = capsys.readouterr().out
    resumed_sent = int(out.split(" events: sent ")[1].split()[0])
    assert resumed_sent < total

    poll(
        lambda: _table_counts(pipeline) == {t: (n, n) for t, n in expected.items()},
        90,
        "every archived event in the warehouse once",
    )

    # Finished files are skipped; --restart sends everything again: still exactly once.
    assert main(argv[:-2]) == 0
    assert "3 files (3 already done)" in capsys.readouterr().out
    assert main([*argv[:-2], "--restart"]) == 0
    assert f"sent {total}" in capsys.readouterr().out
    poll(lambda: _processed_everything(pipeline), 60, "processors caught up with the resend")
    assert _table_counts(pipeline) == {t: (n, n) for t, n in expected.items()}
    # Archived times are kept.
    rows = pipeline.query(f"SELECT MIN(received_at) FROM {SOURCE}.tracks")
    assert rows[0][0] < datetime.now(UTC) - timedelta(hours=20)


def test_s3_archive_reads_like_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    import moto.server as moto_server

    archive = tmp_path / "archive"
    expected = make_archive(archive, per_file=7)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        s3.create_bucket(Bucket="segment-archive")
        for path in archive.rglob("*"):
            if path.is_file():
                key = "segment-logs/" + path.relative_to(archive).as_posix()
                s3.upload_file(str(path), "segment-archive", key)
        s3.put_object(Bucket="segment-archive", Key="segment-logs/README", Body=b"not data")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        code = main(
            [
                "backfill",
                "s3://segment-archive/segment-logs",
                "--dry-run",
                "--backfill-s3-endpoint-url",
                endpoint,
                "--backfill-s3-region",
                "us-east-1",
                "--log-format",
                "text",
            ]
        )
    finally:
        server.stop()
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 files selected of 3 (1 other paths ignored)" in out
    assert f"would send {sum(expected.values())}" in out
