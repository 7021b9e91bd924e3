"""ddl.py, dml.py and offsets.py: the SQL text a flush runs."""

from __future__ import annotations

from typing import Any

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


def test_insert_new_checks_ids_within_the_lookback_and_casts_staged_text() -> None:
    cols = {**fixed_columns("t"), "qty": "NUMBER", "props": "VARIANT"}
    staged = {
        "id": "VARCHAR",
        "received_at": "TIMESTAMP_TZ",
        "qty": "VARCHAR",
        "props": "VARCHAR",
        "_unmapped": "VARIANT",
    }
    sql, binds = dml.insert_new("stg", "web", "t", cols, staged, lookback=True)
    assert sql.startswith('INSERT INTO "WEB"."T" (')
    assert 's."QTY"::NUMBER(38,0)' in sql
    assert 'PARSE_JSON(s."PROPS")' in sql
    assert 'LEFT JOIN "WEB"."T" t ON t."ID" = s."ID" AND t."RECEIVED_AT" >= CAST(?' in sql
    assert sql.endswith('AND t."ID" IS NULL')
    assert binds == 2  # uuid_ts and loaded_at
    assert "MERGE" not in sql
    no_window, _ = dml.insert_new("stg", "web", "t", cols, staged, lookback=False)
    assert 'RECEIVED_AT" >=' not in no_window
    changes, _ = dml.insert_new("stg", "web", "c", cols, staged, True, "detected_at")
    assert 't."ID" = s."ID" AND t."DETECTED_AT" >=' in changes
    assert "NOT EXISTS" not in sql and "QUALIFY" not in sql


def test_tracks_and_audit_log_load_from_flagged_staged_rows_and_renamed_columns() -> None:
    cols = fixed_columns("audit_log")
    staged = {
        "id": "VARCHAR",
        "_segflow_audit_type": "VARCHAR",
        "_segflow_audit_payload": "VARCHAR",
    }
    sql, binds = dml.insert_new(
        "stg",
        "web",
        "audit_log",
        cols,
        staged,
        lookback=True,
        flag="_segflow_audit",
        renames={"type": "_segflow_audit_type", "payload": "_segflow_audit_payload"},
    )
    assert 'WHERE s."_SEGFLOW_SCHEMA" = ? AND s."_SEGFLOW_AUDIT" AND t."ID" IS NULL' in sql
    assert '"_SEGFLOW_TABLE"' not in sql
    assert 's."ID", s."_SEGFLOW_AUDIT_TYPE", ' in sql
    assert 'PARSE_JSON(s."_SEGFLOW_AUDIT_PAYLOAD")' in sql
    assert 's."TYPE"' not in sql and 's."PAYLOAD"' not in sql
    assert binds == 1  # loaded_at


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
