"""ddl.py, dml.py and offsets.py: the SQL text a flush runs."""

from __future__ import annotations

from typing import Any

from schemas.snowflake_limits import MAX_STATEMENT_BYTES
from sinks.snowflake import ddl, dml
from sinks.snowflake.offsets import OffsetStore
from sinks.snowflake.tables import fixed_columns


def test_identifiers_are_upper_case_and_quoted() -> None:
    assert ddl.quote("context_ip") == '"CONTEXT_IP"'
    assert ddl.qualified("web", "tracks") == '"WEB"."TRACKS"'
    sql = ddl.create_table("web", "t", {"id": "VARCHAR", "n": "NUMBER", "u": "VARIANT"})
    assert sql == (
        'CREATE TABLE IF NOT EXISTS "WEB"."T" ("ID" VARCHAR, "N" NUMBER(38,0), "U" VARIANT)'
    )


def test_widening_is_add_copy_set_aside_rename_catch_up_drop() -> None:
    steps = ddl.widen_steps("web", "t", "qty")
    assert [s.split()[0] for s in steps] == ["ALTER", "UPDATE", "ALTER", "ALTER", "UPDATE", "ALTER"]
    assert 'ADD COLUMN IF NOT EXISTS "QTY__SEGFLOW_WIDENED" FLOAT' in steps[0]
    assert steps[ddl.SWAP].endswith('RENAME COLUMN "QTY__SEGFLOW_WIDENED" TO "QTY"')
    assert steps[-1].endswith('DROP COLUMN IF EXISTS "QTY__SEGFLOW_RETIRED"')


def _into(sql: str, table: str) -> str:
    """The INTO clause of `table` in a multi-table insert (its WHEN ... VALUES (...))."""
    start = sql.index(f'INTO "WEB"."{table.upper()}" (')
    return sql[sql.rindex("WHEN", 0, start) : sql.index(")", sql.index("VALUES (", start)) + 1]


def test_one_insert_loads_every_append_table_with_ids_new_to_each_within_the_lookback() -> None:
    cols = {**fixed_columns("t"), "qty": "NUMBER", "props": "VARIANT"}
    staged = {
        "id": "VARCHAR",
        "received_at": "TIMESTAMP_TZ",
        "qty": "VARCHAR",
        "props": "VARCHAR",
        "_unmapped": "VARIANT",
    }
    targets = [
        dml.AppendTarget("t", cols),
        dml.AppendTarget("u", {**fixed_columns("u"), "qty": "NUMBER"}),
        dml.AppendTarget("c", cols, "detected_at"),
    ]
    sql, load_ts, load_id = dml.insert_all_new("stg", "web", targets, staged, lookback=True)
    assert sql.startswith("INSERT ALL WHEN ")
    assert (load_ts, load_id) == (True, False)  # uuid_ts and loaded_at share one bind
    # each table: its staged rows whose id it does not hold
    t = _into(sql, "t")
    assert t.startswith('WHEN "_SEGFLOW_TABLE" = \'t\' AND "#N1" IS NULL THEN INTO "WEB"."T" (')
    assert '"#N2" IS NULL THEN INTO "WEB"."U"' in sql and '"#N3" IS NULL THEN INTO "WEB"."C"' in sql
    # VALUES name source columns only (Snowflake's rule): staged ones, or the typed ones the
    # subquery computes, each distinct expression once
    values = t[t.index("VALUES (") + 8 : -1].split(", ")
    assert all(v.startswith('"') or v == "NULL" for v in values)
    assert '"#LOAD_TS"' in values and '"ID"' in values and '"QTY"' not in values
    assert sql.count('s."QTY"::NUMBER(38,0) AS "#E') == 1  # shared by t, u and c
    assert 'PARSE_JSON(s."PROPS") AS "#E' in sql
    assert 'CAST(? AS TIMESTAMP_TZ) AS "#LOAD_TS"' in sql
    # the ids each table holds among the staged ones, within the window, each at most once
    assert (
        'LEFT JOIN (SELECT DISTINCT t."ID" FROM "WEB"."T" t WHERE t."ID" IN '
        '(SELECT "ID" FROM "STG") AND t."RECEIVED_AT" >= CAST(? AS TIMESTAMP_TZ)) n1 '
        'ON n1."ID" = s."ID"'
    ) in sql
    assert 't."DETECTED_AT" >= CAST(? AS TIMESTAMP_TZ)) n3' in sql
    assert sql.endswith('WHERE s."_SEGFLOW_SCHEMA" = ?')
    assert sql.count("?") == 1 + 3 + 1  # load time, a bound per table, the schema
    no_window, _, _ = dml.insert_all_new("stg", "web", targets, staged, lookback=False)
    assert ">=" not in no_window and no_window.count("?") == 2
    with_id = [*targets, dml.AppendTarget("v", {"id": "VARCHAR", "_segflow_load_id": "VARCHAR"})]
    sql, load_ts, load_id = dml.insert_all_new("stg", "web", with_id, staged, lookback=False)
    assert (load_ts, load_id) == (True, True)
    assert 'SELECT s.*, CAST(? AS TIMESTAMP_TZ) AS "#LOAD_TS", ? AS "#LOAD_ID", ' in sql
    assert _into(sql, "v").endswith('VALUES ("ID", "#LOAD_ID")')
    assert "NOT EXISTS" not in sql and "MERGE" not in sql


def test_tracks_and_audit_log_load_from_flagged_staged_rows_and_renamed_columns() -> None:
    staged = {
        "id": "VARCHAR",
        "_segflow_audit_type": "VARCHAR",
        "_segflow_audit_payload": "VARCHAR",
    }
    audit = dml.AppendTarget(
        "audit_log",
        fixed_columns("audit_log"),
        flag="_segflow_audit",
        renames={"type": "_segflow_audit_type", "payload": "_segflow_audit_payload"},
    )
    sql, load_ts, _ = dml.insert_all_new("stg", "web", [audit], staged, lookback=True)
    into = _into(sql, "audit_log")
    assert into.startswith('WHEN "_SEGFLOW_AUDIT" AND "#N1" IS NULL THEN INTO')
    assert '"_SEGFLOW_TABLE"' not in into
    assert '"ID", "_SEGFLOW_AUDIT_TYPE", ' in into
    assert 'PARSE_JSON(s."_SEGFLOW_AUDIT_PAYLOAD") AS "#E1"' in sql and '"#E1"' in into
    assert '"TYPE"' not in into.split("VALUES")[1] and 'PAYLOAD"' not in into.split("VALUES")[1]
    assert load_ts  # loaded_at


def test_a_multi_table_insert_reports_each_tables_rows_by_name_or_position() -> None:
    targets = [dml.AppendTarget("tracks", {}), dml.AppendTarget("order_completed", {})]
    names = ["number of rows inserted into ORDER_COMPLETED", "number of rows inserted into TRACKS"]
    assert dml.inserted_per_table(targets, names, (3, 5)) == [5, 3]
    qualified = ['number of rows inserted into "WEB"."TRACKS"', "number of rows inserted into Y"]
    assert dml.inserted_per_table(targets, qualified, (5, 3)) == [5, 3]  # not all named: order
    assert dml.inserted_per_table(targets, ["n"], (8,)) is None  # another shape: no guess
    assert dml.inserted_per_table(targets, [], None) is None


def test_a_schemas_append_tables_split_into_statements_under_snowflakes_size_limit() -> None:
    """However many and however wide a flush's tables, each statement's text fits 1 MB."""
    from sinks.snowflake.rows import TableRow
    from sinks.snowflake.transaction import _chunks

    long = "x" * 240
    cases = ((500, 30, 20), (8, 1000, 250), (60, 400, 60), (501, 2, 255))
    for count, width, name_length in cases:
        columns = {
            ("web", f"t{i}_{long[:name_length]}"[:255]): {
                f"c{j}_{long[:name_length]}"[:255]: "VARCHAR" for j in range(width)
            }
            for i in range(count)
        }
        tables: list[tuple[str, list[TableRow]]] = [(t, []) for (_, t) in columns]
        chunks = _chunks(tables, columns, "web")
        assert [t for c in chunks for t, _ in c] == [t for t, _ in tables]
        staged = {c: "VARCHAR" for cols in columns.values() for c in cols}
        for chunk in chunks:
            targets = [dml.AppendTarget(t, columns[("web", t)]) for t, _ in chunk]
            sql, _, _ = dml.insert_all_new(
                "_segflow._segflow_staging_x", "web", targets, staged, True
            )
            assert len(sql.encode()) < MAX_STATEMENT_BYTES
            assert len(chunk) <= 64
        assert len(chunks) > 1


def test_merge_keeps_newer_values_and_fills_gaps() -> None:
    cols = {**fixed_columns("users"), "plan": "VARCHAR"}
    sql, binds = dml.merge_insert("stg", "web", "users", cols, {"plan": "VARCHAR", "id": "VARCHAR"})
    assert 'LEFT JOIN "WEB"."USERS" u ON u."ID" = s."ID"' in sql
    assert 'COALESCE(s."PLAN", u."PLAN")' in sql and 'COALESCE(u."PLAN", s."PLAN")' in sql
    assert binds == 3  # uuid_ts, loaded_at, load id
    delete = dml.delete_replaced("stg", "web", "identity_map")
    assert 't."IDENTIFIER" = k."IDENTIFIER" AND t."IDENTIFIER_TYPE" = k."IDENTIFIER_TYPE"' in delete
    assert delete.endswith('"_SEGFLOW_LOAD_ID" IS DISTINCT FROM ?')


class FakeCursor:
    def __init__(self, rowcount: int = 0, rows: list[tuple[Any, ...]] | None = None) -> None:
        self.rowcount = rowcount
        self._rows = rows or []

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


def test_compare_and_set_is_one_update_and_reports_fencing() -> None:
    store = OffsetStore("_segflow", "g1")
    calls: list[tuple[str, list[Any]]] = []

    def execute(rowcount: int) -> Any:
        def run(sql: str, binds: Any) -> FakeCursor:
            calls.append((sql, list(binds)))
            return FakeCursor(rowcount)

        return run

    moves = [("t", 0, 10, 20), ("t", 1, -1, 5)]
    assert store.compare_and_set(execute(2), moves)
    sql, binds = calls[0]
    assert sql.startswith('UPDATE "_SEGFLOW"."_SEGFLOW_OFFSETS" o SET')
    assert 'o."NEXT_OFFSET" = v.column3' in sql
    assert binds == ["t", 0, 10, 20, "t", 1, -1, 5, "g1"]
    assert not store.compare_and_set(execute(1), moves)  # one partition moved elsewhere


def test_offsets_read_fills_unknown_partitions() -> None:
    store = OffsetStore("_segflow", "g1")

    def run(sql: str, binds: Any) -> FakeCursor:
        return FakeCursor(rows=[("t", 0, 1, 42, 42)])

    assert store.read(run, [("t", 0), ("t", 1)]) == {("t", 0): 42, ("t", 1): -1}
