"""segflow demo: realistic traffic into a running edge, then what landed and how fast."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime

from cli.commands.query import format_table
from cli.options import add_settings_options, settings_from_args
from cli.output import add_output_option, to_json, wants_json
from cli.progress import Progress
from ingest.demo import Call, DemoSettings, journeys, malformed_requests, send
from runtime.settings import WarehouseSettings
from schemas.errors import FatalError, SegflowError
from sinks.snowflake.ddl import quote
from sinks.snowflake.session import WarehouseSession

DESCRIPTION = """Send realistic Segment traffic through the real Segment Python SDK to a running
edge (`segflow up` runs one): users moving through a product, with anonymous page views and UTM
parameters, signups, identify with email and phone, groups, feature usage, checkouts with
Order Completed and revenue, some aliases, late events, duplicates and a few malformed requests.
At the end it prints the rows per table and the freshness: time from send until queryable."""

TABLES = ("tracks", "identifies", "users", "pages", "screens", "groups", "accounts", "aliases")


def configure(parser: argparse.ArgumentParser) -> None:
    add_output_option(parser)
    add_settings_options(parser, DemoSettings)
    add_settings_options(parser, WarehouseSettings)


def run(args: argparse.Namespace) -> int:
    demo = settings_from_args(DemoSettings, args)
    warehouse = settings_from_args(WarehouseSettings, args)
    calls = list(
        journeys(
            demo.users,
            seed=demo.seed,
            late_fraction=demo.late_fraction,
            duplicate_fraction=demo.duplicate_fraction,
        )
    )
    _check_edge(demo.edge_url)
    progress = Progress("demo: sending", total=len(calls), unit="calls")
    report = send(calls, demo.edge_url, demo.write_key, on_progress=progress.advance)
    progress.finish()
    say = (lambda line: print(line, file=sys.stderr)) if wants_json(args) else print
    if report.errors:
        say(f"{len(report.errors)} batches failed: {report.errors[0]}")
    refused = 0
    for path, body, reason in malformed_requests(demo.write_key):
        status = _post(demo.edge_url + path, body, demo.write_key)
        refused += status == 400
        say(f"malformed ({reason}): HTTP {status}")
    unique = sum(len(ids) for ids in report.message_ids.values())
    say(
        f"sent {report.sent} calls ({unique} unique messageIds, {report.duplicates} duplicates), "
        f"{refused} malformed requests refused"
    )

    with WarehouseSession(warehouse, "demo") as session:
        freshness = _freshness(demo, session)
        counts = [(t, _count(session, demo.source, t)) for t in TABLES]
    if wants_json(args):
        print(
            to_json(
                {
                    "sent": report.sent,
                    "unique_message_ids": unique,
                    "duplicates": report.duplicates,
                    "failed_batches": len(report.errors),
                    "malformed_refused": refused,
                    "rows": dict(counts),
                    "freshness_s": None if freshness is None else round(freshness, 3),
                }
            )
        )
        return 1 if freshness is None else 0
    print(format_table(["table", "rows"], counts))
    if freshness is None:
        print(f"freshness: the marker event was not queryable within {demo.wait_s:.0f}s")
        return 1
    print(f"freshness: {freshness:.2f}s from send until queryable")
    return 0


def _check_edge(url: str) -> None:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=5):
            return
    except (urllib.error.URLError, OSError) as exc:
        raise FatalError(f"no edge answers at {url}: start one with `segflow up`") from exc


def _post(url: str, body: bytes, write_key: str) -> int:
    import base64

    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{write_key}:".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _count(session: WarehouseSession, schema: str, table: str) -> int | str:
    try:
        rows = session.fetch_all(f"SELECT COUNT(*) FROM {quote(schema)}.{quote(table)}")
    except SegflowError:
        return "(not created yet)"
    return int(rows[0][0])


def _freshness(demo: DemoSettings, session: WarehouseSession) -> float | None:
    """Send one marker track and time it until a query finds it."""
    marker = str(uuid.uuid4())
    call = Call(
        "track",
        {
            "user_id": "segflow-demo",
            "event": "Demo Freshness Marker",
            "message_id": marker,
            "timestamp": datetime.now(UTC),
        },
    )
    sent = time.monotonic()
    send([call], demo.edge_url, demo.write_key)
    deadline = sent + demo.wait_s
    sql = f"SELECT COUNT(*) FROM {quote(demo.source)}.{quote('tracks')} WHERE id = ?"
    while time.monotonic() < deadline:
        try:
            if session.fetch_all(sql, [marker])[0][0]:
                return time.monotonic() - sent
        except SegflowError:
            pass  # the table may not exist yet
        time.sleep(0.1)
    return None
