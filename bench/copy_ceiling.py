"""The emulator's own ceiling for the sink's files: a bare PUT + COPY + INSERT, no segflow logic.

`FileKeeper` hard-links every flush's Parquet file as the sink writes it into its stage
directory (the sink deletes its copy once loaded; the link keeps the data). `load_bare` then
loads the same files the plainest way the warehouse allows, one transaction a file: PUT to a
stage, COPY INTO a staging table, one multi-table INSERT ALL into every target table (the rows
flagged for tracks and audit_log included; the sink loads with one too), empty the staging
table, COMMIT. No dedupe join, no upserts, no offsets, no row building: what the warehouse side
of a flush costs by itself. `bench/sink.py`
prints the sink's steady state against it (`ratio_to_copy`).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from runtime.services import emulator
from sinks.snowflake.ddl import qualified, quote
from sinks.snowflake.dml import name_literal
from sinks.snowflake.staging import (
    AUDIT_FLAG,
    AUDIT_RENAMES,
    SCHEMA_COLUMN,
    TABLE_COLUMN,
    TRACKS,
    TRACKS_FLAG,
    TRACKS_RENAMES,
)
from sinks.snowflake.tables import AUDIT_LOG, LOAD_ID_COLUMN, LOAD_TIME_COLUMNS

SCHEMA = "bench_ceiling"
STAGE = "files"


class FileKeeper:
    """Hard-links each `segflow-flush-*.parquet` appearing in `watch` into `keep`, with the
    time it was seen."""

    def __init__(self, watch: Path, keep: Path) -> None:
        self.watch, self.keep = watch, keep
        self.files: list[tuple[float, Path]] = []
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> FileKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with os.scandir(self.watch) as entries:
                for entry in entries:
                    name = entry.name
                    if name in self._seen or not name.startswith("segflow-flush-"):
                        continue
                    self._seen.add(name)
                    try:
                        os.link(entry.path, self.keep / name)
                    except FileNotFoundError:
                        continue  # loaded and deleted between two looks: missed
                    self.files.append((time.perf_counter(), self.keep / name))
            time.sleep(0.002)


_ARROW_TYPES = (
    (pa.types.is_boolean, "BOOLEAN"),
    (pa.types.is_integer, "NUMBER(38,0)"),
    (pa.types.is_floating, "FLOAT"),
    (pa.types.is_timestamp, "TIMESTAMP_TZ"),
)


def _sql_type(arrow_type: pa.DataType) -> str:
    return next((t for test, t in _ARROW_TYPES if test(arrow_type)), "VARCHAR")


@dataclass
class _File:
    """One kept file, read before the clock starts: its columns and where its rows go."""

    path: Path
    columns: dict[str, str]  # staged column -> SQL type
    tables: list[tuple[str, str]]  # (schema, table) of its rows
    tracks: list[str]  # schemas with rows flagged for tracks
    audit: list[str]  # schemas with rows flagged for audit_log
    rows: int


def _read(path: Path) -> _File:
    table = pq.read_table(path)  # its columns are named upper-case (staging.write_units)
    columns = {f.name.lower(): _sql_type(f.type) for f in table.schema}
    schemas = table[SCHEMA_COLUMN.upper()].to_pylist()
    names = table[TABLE_COLUMN.upper()].to_pylist()
    pairs = sorted({(s, t) for s, t in zip(schemas, names, strict=True) if t is not None})

    def flagged(flag: str) -> list[str]:
        if flag not in columns:
            return []
        flags = table[flag.upper()].to_pylist()
        return sorted({s for s, f in zip(schemas, flags, strict=True) if f})

    return _File(path, columns, pairs, flagged(TRACKS_FLAG), flagged(AUDIT_FLAG), table.num_rows)


def _into(
    target: tuple[str, str],
    layout: dict[str, str],
    staged: dict[str, str],
    when: str,
    renames: dict[str, str],
    exprs: dict[str, str],
) -> str:
    """The WHEN ... INTO clause of `target` in a multi-table insert: the staged columns it has
    (renamed, cast where the types differ); a cast is a column of the subquery, named in
    `exprs` (expression -> alias), since VALUES may only name source columns."""
    names, values = [], []
    for col, dtype in layout.items():
        source = renames.get(col, col)
        if col in LOAD_TIME_COLUMNS:
            expr = "CURRENT_TIMESTAMP()"
        elif col == LOAD_ID_COLUMN:
            expr = "'bench'"
        elif source not in staged:
            continue
        elif dtype in ("VARIANT", "OBJECT", "ARRAY"):
            expr = f"PARSE_JSON(s.{quote(source)})"
        elif staged[source] == "VARCHAR" and dtype not in ("TEXT", "VARCHAR"):
            expr = f"s.{quote(source)}::{dtype}"
        else:
            expr = ""
        names.append(quote(col))
        values.append(quote(source) if not expr else exprs.setdefault(expr, f'"#E{len(exprs)}"'))
    return (
        f"WHEN {when} THEN INTO {qualified(*target)} ({', '.join(names)}) "
        f"VALUES ({', '.join(values)})"
    )


@dataclass
class BareLoad:
    """What `load_bare` measured."""

    seconds: float = 0.0
    rows: int = 0
    statements: int = 0
    by_kind: dict[str, float] = field(default_factory=dict)  # seconds per statement kind


def load_bare(database: str, paths: list[Path]) -> BareLoad:
    """Load `paths` the bare way (module doc)."""
    import snowflake.connector

    files = [_read(p) for p in paths]
    conn = snowflake.connector.connect(
        paramstyle="qmark", database=database, **emulator.conn_params(timeout=60)
    )
    cur = conn.cursor()
    layouts: dict[tuple[str, str], dict[str, str]] = {}
    cur.execute(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        "ORDER BY table_schema, table_name, ordinal_position"
    )
    for schema, table, column, dtype in cur.fetchall():
        key = (str(schema).lower(), str(table).lower())
        layouts.setdefault(key, {})[str(column).lower()] = str(dtype).upper()
    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(SCHEMA)}")
    cur.execute(f"CREATE STAGE IF NOT EXISTS {qualified(SCHEMA, STAGE)}")
    staging = qualified(SCHEMA, "staging")
    out = BareLoad()

    def run(kind: str, sql: str, binds: list[Any] | None = None) -> None:
        started = time.perf_counter()
        cur.execute(sql, binds)
        took = time.perf_counter() - started
        out.seconds += took
        out.by_kind[kind] = out.by_kind.get(kind, 0.0) + took
        out.statements += 1

    current: dict[str, str] | None = None
    for i, f in enumerate(files):
        if f.columns != current:  # as the sink: re-created only when the columns change
            cols = ", ".join(f"{quote(n)} {t}" for n, t in f.columns.items())
            cur.execute(f"CREATE OR REPLACE TRANSIENT TABLE {staging} ({cols})")
            current = f.columns
        intos: list[str] = []
        exprs: dict[str, str] = {}
        in_schema = quote(SCHEMA_COLUMN)
        for target in f.tables:
            if target in layouts:
                when = f"{in_schema} = {name_literal(target[0])} AND {quote(TABLE_COLUMN)} = "
                when += name_literal(target[1])
                intos.append(_into(target, layouts[target], f.columns, when, {}, exprs))
        for schemas, table, flag, renames in (
            (f.tracks, TRACKS, TRACKS_FLAG, TRACKS_RENAMES),
            (f.audit, AUDIT_LOG, AUDIT_FLAG, AUDIT_RENAMES),
        ):
            for schema in schemas:
                if (schema, table) in layouts:
                    when = f"{in_schema} = {name_literal(schema)} AND {quote(flag)}"
                    layout = layouts[(schema, table)]
                    intos.append(
                        _into((schema, table), layout, f.columns, when, dict(renames), exprs)
                    )
        select = ", ".join(["s.*", *(f"{e} AS {a}" for e, a in exprs.items())])
        insert = f"INSERT ALL {' '.join(intos)} SELECT {select} FROM {staging} s" if intos else ""
        folder = f"f{i}"
        run(
            "put",
            f"PUT 'file://{f.path}' @{qualified(SCHEMA, STAGE)}/{folder}/ "
            "AUTO_COMPRESS=FALSE OVERWRITE=TRUE",
        )
        run("begin", "BEGIN")
        run(
            "copy",
            f"COPY INTO {staging} FROM @{qualified(SCHEMA, STAGE)}/{folder}/ "
            "FILE_FORMAT=(TYPE=PARQUET) MATCH_BY_COLUMN_NAME=CASE_SENSITIVE PURGE=TRUE",
        )
        if insert:
            run("insert", insert)
            out.rows += int(cur.rowcount or 0)
        run("delete", f"DELETE FROM {staging}")
        run("commit", "COMMIT")
    cur.execute(f"DROP SCHEMA IF EXISTS {quote(SCHEMA)} CASCADE")
    conn.close()
    return out
