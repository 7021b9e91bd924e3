"""Benchmark of the Snowflake sink against the local emulator, beside a naive per-event loader.

    PYTHONPATH=. python bench/sink.py [--events 300000] [--warmup 50000] [--naive-events 300]
                                      [--instances 1]

1. produces N clean records (a realistic mix of call types) to topics with a unique prefix;
2. runs `segflow sink` at default settings as a subprocess and measures, from its readiness to
   the moment every record is committed to the warehouse: records/s, table rows/s, warehouse
   statements (its segflow_sink_statements_total) per million records and its peak RSS;
   rows/s counts table rows: an event makes ~2.7 (a track: tracks, its event table, audit_log);
   beside the whole run it measures the steady state: from the moment the first `--warmup`
   records are committed (by then the empty warehouse has its ~30 tables and most of their
   columns, DDL a running sink does once; at --events 100000 --warmup 30000 some flushes of
   the steady window still added columns, so compare runs of --events 200000 --warmup 50000 or
   more) to the end; the RESULT line gives the steady state;
3. loads a smaller sample the naive way webhook-and-upsert flows do: every row with its own
   INSERT, every users/accounts/identity row with its own DELETE + INSERT upsert, each event
   its own transaction (autocommit), into the same tables;
4. the emulator's own ceiling on the same data (bench/copy_ceiling.py): every Parquet file the
   sink staged in the steady state, kept as it was written, loaded again with a bare PUT + COPY
   + INSERT a file and no segflow logic, into the same tables; table rows/s of that;
5. prints them and their ratios, and ends with `RESULT rows_per_s=<n> naive_rows_per_s=<n>
   statements_per_million=<n> naive_statements_per_million=<n> copy_rows_per_s=<n>
   ratio_to_copy=<r> sink_cpu_us_per_record=<n> peak_rss_mb=<n>` (`ratio_to_copy`: the sink's
   steady table rows/s over the bare load's).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import cpu_seconds, drop_topics, peak_rss_mb, service_pids  # noqa: E402
from bench.copy_ceiling import FileKeeper, load_bare  # noqa: E402
from runtime.services import emulator  # noqa: E402
from sinks.snowflake import ddl  # noqa: E402
from sinks.snowflake.rows import Origin, TableRow, event_rows  # noqa: E402
from sinks.snowflake.staging import to_text  # noqa: E402
from sinks.snowflake.tables import Kind  # noqa: E402
from tests.integration.conftest import free_port  # noqa: E402
from tests.integration.sink_support import (  # noqa: E402
    SinkProcess,
    Warehouse,
    clean_event,
    encode_event,
    make_topics,
    produce,
    scrape_metrics,
    scrape_samples,
    sink_env,
)

MIX = [
    ("track", 0.6),
    ("page", 0.15),
    ("identify", 0.1),
    ("screen", 0.05),
    ("group", 0.05),
    ("alias", 0.05),
]
EVENTS = ["Order Completed", "Product Viewed", "Cart Viewed", "Signed Up", "Checkout Started"]


def make_records(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    calls = [c for c, _ in MIX]
    weights = [w for _, w in MIX]
    out = []
    for i in range(n):
        call = rnd.choices(calls, weights)[0]
        user = f"user-{rnd.randrange(20_000)}"
        props = {
            "order_id": f"o-{i}",
            "revenue": round(rnd.uniform(1, 500), 2),
            "currency": "EUR",
            "quantity": rnd.randrange(1, 9),
            "coupon": rnd.choice([None, "SPRING", "VIP"]),
            "products": [{"sku": f"sku-{rnd.randrange(500)}", "price": 9.99}],
            "url": f"https://shop.example.com/p/{rnd.randrange(1000)}",
        }
        traits = {
            "plan": rnd.choice(["free", "pro", "team"]),
            "company_size": rnd.randrange(500),
            "created_at": "2025-03-04T10:11:12Z",
        }
        out.append(
            clean_event(
                call,
                i,
                user_id=user if rnd.random() < 0.7 else None,
                anonymous_id=f"anon-{rnd.randrange(50_000)}",
                properties=props,
                traits=traits,
                event=rnd.choice(EVENTS),
                group_id=f"acct-{rnd.randrange(2_000)}",
            )
        )
    return out


def wait_metrics(sink: SinkProcess, port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            scrape_metrics(port)
            return
        except OSError:
            if not sink.alive():
                raise SystemExit("sink exited:\n" + sink.log()[-3000:]) from None
            time.sleep(0.1)
    raise SystemExit("sink did not start its metrics server")


def naive_load(database: str, records: list[dict[str, Any]]) -> tuple[float, int, int]:
    """Each event with its own statements: (seconds, statements, table rows written)."""
    import snowflake.connector

    conn = snowflake.connector.connect(
        paramstyle="qmark", database=database, **emulator.conn_params(timeout=30)
    )
    cur = conn.cursor()
    layouts: dict[tuple[str, str], list[str]] = {}
    cur.execute("SELECT table_schema, table_name, column_name FROM information_schema.columns")
    for schema, table, column in cur.fetchall():
        layouts.setdefault((str(schema).lower(), str(table).lower()), []).append(
            str(column).lower()
        )
    statements = rows = 0
    started = time.perf_counter()
    for i, record in enumerate(records):
        for row in event_rows(record, Origin("naive", 0, i), audit=True):
            statements += _naive_row(cur, row, layouts[(row.schema, row.table)])
            rows += 1
    seconds = time.perf_counter() - started
    conn.close()
    return seconds, statements, rows


def _naive_row(cur: Any, row: TableRow, columns: list[str]) -> int:
    target = ddl.qualified(row.schema, row.table)
    names, exprs, binds = [], [], []
    for col in columns:
        if col in ("uuid_ts", "loaded_at"):
            names.append(ddl.quote(col))
            exprs.append("CURRENT_TIMESTAMP()")
            continue
        value = row.values.get(col) if col != "_unmapped" else row.unmapped
        if value is None:
            continue
        names.append(ddl.quote(col))
        exprs.append("PARSE_JSON(?)" if col in ("_unmapped", "payload") else "?")
        binds.append(
            to_text(value)
            if not isinstance(value, dict)
            else __import__("orjson").dumps(value).decode()
        )
    sql = f"INSERT INTO {target} ({', '.join(names)}) SELECT {', '.join(exprs)}"
    n = 0
    if row.kind in (Kind.MERGE, Kind.REPLACE):
        key = "IDENTIFIER" if row.kind is Kind.REPLACE else "ID"
        value = row.values["identifier" if row.kind is Kind.REPLACE else "id"]
        cur.execute(f'DELETE FROM {target} WHERE "{key}" = ?', [value])
        n += 1
    cur.execute(sql, binds)
    return n + 1


def _summed(scrapes: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for scrape in scrapes:
        for name, value in scrape.items():
            out[name] = out.get(name, 0.0) + value
    return out


def print_time_split(samples: dict[str, float], seconds: float) -> None:
    """Where the sink's flushes spent their time: phases, and statements by kind."""
    phases = _by_label(samples, "segflow_sink_flush_phase_seconds_total", "phase")
    kinds = _by_label(samples, "segflow_sink_statement_duration_seconds_sum", "kind")
    counts = _by_label(samples, "segflow_sink_statement_duration_seconds_count", "kind")
    print(f"flush phases over {seconds:.1f} s of loading (flushes overlap consuming):")
    for name, total in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<12} {total:7.1f} s")
    print("statements by kind:")
    for name, total in sorted(kinds.items(), key=lambda kv: -kv[1]):
        n = counts.get(name, 0)
        print(f"  {name:<12} {total:7.1f} s in {n:4.0f} ({total / max(n, 1) * 1000:6.0f} ms each)")


def _by_label(samples: dict[str, float], family: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for sample, value in samples.items():
        match = re.match(rf'{family}{{.*{label}="([^"]*)"', sample)
        if match:
            out[match.group(1)] = out.get(match.group(1), 0.0) + value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument(
        "--warmup", type=int, default=50_000, help="records loaded before the steady state counts"
    )
    parser.add_argument("--naive-events", type=int, default=300)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--log-level", default="WARNING", help="the sink's log level")
    parser.add_argument(
        "--instances", type=int, default=1, help="sink instances in the group (scaling out)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a sink setting other than its default (e.g. SEGFLOW_SINK_MAX_BUFFERED_BYTES=...)",
    )
    args = parser.parse_args()
    for item in args.set:
        if "=" not in item or not item.startswith("SEGFLOW_"):
            parser.error(f"--set takes SEGFLOW_NAME=VALUE, got {item!r}")

    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench{run_id}."
    database = f"BENCH_SINK_{run_id.upper()}"
    topics = make_topics(args.bootstrap, prefix, partitions=args.partitions)
    print(f"generating {args.events} clean records ...", flush=True)
    records = make_records(args.events)
    by_call: dict[str, list[tuple[bytes, bytes | None]]] = {}
    for r in records:
        key, value = encode_event(r)
        by_call.setdefault(r["type"], []).append((key, value))
    started = time.perf_counter()
    for call, messages in by_call.items():
        produce(args.bootstrap, topics.clean(call), messages)
    print(f"produced in {time.perf_counter() - started:.1f} s to prefix {prefix}", flush=True)
    del records, by_call

    ports = [free_port() for _ in range(args.instances)]
    work = Path(f"/tmp/segflow-bench-sink-{run_id}")
    (work / "stage").mkdir(parents=True)
    (work / "kept").mkdir()
    keeper = FileKeeper(work / "stage", work / "kept").start()
    sinks: list[SinkProcess] = []
    for i, port in enumerate(ports):
        env = sink_env(
            args.bootstrap,
            prefix,
            database,
            f"bench-{run_id}",
            SEGFLOW_SINK_METRICS_PORT=str(port),
            SEGFLOW_LOG_LEVEL=args.log_level,
            SEGFLOW_SINK_STAGE_DIR=str(work / "stage"),
        )
        for name in (
            "SEGFLOW_SINK_FLUSH_AGE_S",
            "SEGFLOW_SINK_RETRY_MAX_S",
            "SEGFLOW_SNOWFLAKE_NETWORK_TIMEOUT_S",
            "SEGFLOW_SNOWFLAKE_LOGIN_TIMEOUT_S",
        ):
            env.pop(name, None)  # defaults, as shipped
        # the emulator's Snowflake-rules check is a test aid, not part of what production runs
        env["SEGFLOW_SNOWFLAKE_STRICT"] = "false"
        env.update(dict(item.split("=", 1) for item in args.set))
        log = Path(f"/tmp/segflow-bench-sink-{run_id}-{i}.log")
        print(f"sink log: {log}", flush=True)
        sinks.append(SinkProcess(env, log).start())
    try:
        for sink, port in zip(sinks, ports, strict=True):
            wait_metrics(sink, port)
        services = service_pids()

        def cpu_now() -> dict[str, float]:
            """CPU seconds so far of each sink instance, the broker and the emulator."""
            out = {f"sink {i}": cpu_seconds(s.pid) for i, s in enumerate(sinks)}
            out.update({n: cpu_seconds(pid) for n, pid in services.items()})
            return out

        t0 = time.perf_counter()
        deadline = t0 + 900
        steady: tuple[float, float, float, dict[str, float]] | None = None
        while True:
            m = _summed([scrape_metrics(port) for port in ports])
            committed = m.get("segflow_sink_flush_size_records_sum", 0)
            if steady is None and committed >= min(args.warmup, args.events // 2):
                steady = (
                    time.perf_counter(),
                    committed,
                    m.get("segflow_sink_rows_loaded_total", 0),
                    cpu_now(),
                )
            if committed >= args.events:
                break
            dead = [s for s in sinks if not s.alive()]
            if time.perf_counter() > deadline or dead:
                raise SystemExit("sink did not finish:\n" + (dead or sinks)[0].log()[-3000:])
            time.sleep(0.5)  # a scrape costs the sink CPU: not too often
        seconds = time.perf_counter() - t0
        cpu = cpu_now()
        rss = sum(peak_rss_mb(s.pid) for s in sinks)
        samples = _summed([scrape_samples(port) for port in ports])
    finally:
        for sink in sinks:
            sink.stop()
        keeper.stop()
        drop_topics(args.bootstrap, [prefix])
    statements = m.get("segflow_sink_statements_total", 0)
    rows = m.get("segflow_sink_rows_loaded_total", 0)
    flushes = m.get("segflow_sink_flushes_total", 0)
    records_per_s = args.events / seconds
    rows_per_s = rows / seconds
    per_million = statements / args.events * 1e6
    assert steady is not None
    steady_s = t0 + seconds - steady[0]
    steady_records = args.events - steady[1]
    steady_rows_per_s = (rows - steady[2]) / steady_s

    print_time_split(samples, seconds)
    print("CPU in the steady state (2 cores = 2.0 cores busy):")
    for name in cpu:
        used = cpu[name] - steady[3][name]
        print(
            f"  {name:<10} {used:6.1f} s = {used / steady_s:4.2f} cores, "
            f"{used / steady_records * 1e6:5.0f} us per record"
        )
    sink_us = sum(cpu[n] - steady[3][n] for n in cpu if n.startswith("sink")) / steady_records
    sink_us *= 1e6
    print(f"naive loader on {args.naive_events} records ...", flush=True)
    sample = make_records(args.naive_events, seed=11)
    naive_s, naive_statements, naive_rows = naive_load(database, sample)
    naive_rows_per_s = naive_rows / naive_s
    naive_per_million = naive_statements / args.naive_events * 1e6

    wh = Warehouse(database)
    loaded = wh.query('SELECT COUNT(*) FROM "WEB"."AUDIT_LOG"')[0][0]
    kept = [path for at, path in keeper.files if at >= steady[0]]
    print(f"bare PUT + COPY + INSERT of the {len(kept)} files staged in the steady state ...")
    emulator_cpu = {n: cpu_seconds(pid) for n, pid in services.items() if n == "emulator"}
    try:
        bare = load_bare(database, kept)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    copy_rows_per_s = bare.rows / max(bare.seconds, 1e-9)
    copy_emulator_us = {
        n: (cpu_seconds(services[n]) - c0) / max(bare.rows, 1) * 1e6
        for n, c0 in emulator_cpu.items()
    }
    sink_emulator_us = {
        n: (cpu[n] - steady[3][n]) / max(rows - steady[2], 1) * 1e6 for n in copy_emulator_us
    }
    print(
        f"bare load: {bare.rows:,} table rows in {bare.seconds:.1f} s = "
        f"{copy_rows_per_s:,.0f} rows/s, {bare.statements} statements "
        f"({len(keeper.files)} of {flushes:.0f} flush files kept); by kind: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in bare.by_kind.items())
    )
    for n, us in copy_emulator_us.items():
        print(
            f"{n} CPU per table row: {us:.0f} us in the bare load, "
            f"{sink_emulator_us[n]:.0f} us in the sink's steady state"
        )
    print()
    print(
        f"sink:  {args.events} records in {seconds:.1f} s = {records_per_s:,.0f} records/s = "
        f"{rows_per_s:,.0f} table rows/s ({rows:,.0f} rows), {flushes:.0f} flushes, "
        f"{statements:.0f} statements = {per_million:,.0f} per million records, "
        f"peak RSS {rss:.0f} MB"
        + (f" (sum of {args.instances} instances)" if args.instances > 1 else "")
    )
    print(
        f"steady state (after the first {steady[1]:,.0f} records): {steady_records:,.0f} records "
        f"in {steady_s:.1f} s = {steady_records / steady_s:,.0f} records/s = "
        f"{steady_rows_per_s:,.0f} table rows/s"
    )
    print(
        f"naive: {args.naive_events} records in {naive_s:.1f} s = "
        f"{args.naive_events / naive_s:,.0f} records/s = {naive_rows_per_s:,.0f} table rows/s "
        f"({naive_rows} rows), {naive_statements} statements = {naive_per_million:,.0f} per million"
    )
    print(
        f"ratios: sink (steady) / naive rows/s x{steady_rows_per_s / naive_rows_per_s:,.0f}; "
        f"naive/sink statements per record x{naive_per_million / max(per_million, 1e-9):,.0f}"
    )
    print(
        f"audit_log rows in the warehouse: {loaded} (sink {args.events} + naive "
        f"{args.naive_events})"
    )
    print(
        f"RESULT rows_per_s={steady_rows_per_s:.0f} naive_rows_per_s={naive_rows_per_s:.0f} "
        f"statements_per_million={per_million:.0f} "
        f"naive_statements_per_million={naive_per_million:.0f} "
        f"copy_rows_per_s={copy_rows_per_s:.0f} "
        f"ratio_to_copy={steady_rows_per_s / max(copy_rows_per_s, 1e-9):.2f} "
        + "".join(
            f"{n}_cpu_ratio_to_copy={copy_emulator_us[n] / max(sink_emulator_us[n], 1e-9):.2f} "
            for n in copy_emulator_us
        )
        + f"sink_cpu_us_per_record={sink_us:.0f} peak_rss_mb={rss:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
