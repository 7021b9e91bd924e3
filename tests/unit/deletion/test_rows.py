"""rows.py: which rows and schemas belong to a user, as WHERE clauses."""

from __future__ import annotations

from deletion.rows import deletable_tables, row_condition, source_schemas

EVENT_COLUMNS = {"id", "user_id", "anonymous_id", "canonical_user_id", "event", "received_at"}


def test_event_tables_match_user_stitched_and_anonymous_only_rows() -> None:
    where, binds = row_condition("tracks", EVENT_COLUMNS, "u1", ["a1", "a2"]) or ("", [])
    assert where == (
        '"USER_ID" = ? OR "CANONICAL_USER_ID" = ? OR ("ANONYMOUS_ID" IN (?, ?) '
        'AND "USER_ID" IS NULL AND "CANONICAL_USER_ID" IS NULL)'
    )
    assert binds == ["u1", "u1", "a1", "a2"]


def test_without_linked_ids_only_the_user_columns() -> None:
    where, binds = row_condition("pages", EVENT_COLUMNS, "u1", []) or ("", [])
    assert where == '"USER_ID" = ? OR "CANONICAL_USER_ID" = ?' and binds == ["u1", "u1"]


def test_aliases_match_previous_ids() -> None:
    cols = {"id", "user_id", "previous_id", "anonymous_id"}
    where, binds = row_condition("aliases", cols, "u1", ["a1"]) or ("", [])
    assert '"PREVIOUS_ID" = ?' in where and '"PREVIOUS_ID" IN (?)' in where
    assert binds.count("a1") == 2


def test_identity_map_users_and_tables_without_identities() -> None:
    cols = {"identifier", "identifier_type", "canonical_user_id"}
    where, binds = row_condition("identity_map", cols, "u1", ["a1"]) or ("", [])
    assert where == '"CANONICAL_USER_ID" = ? OR ("IDENTIFIER" = ? AND "IDENTIFIER_TYPE" = ?)'
    assert binds == ["u1", "u1", "user_id"]
    assert row_condition("users", {"id", "email"}, "u1", ["a1"]) == ('"ID" = ?', ["u1"])
    assert row_condition("accounts", {"id", "name"}, "u1", ["a1"]) is None


def test_segflow_bookkeeping_is_never_deleted_from() -> None:
    layout: dict[str, set[str]] = {
        "tracks": set(),
        "_segflow_deletions": set(),
        "_segflow_schema_changes": set(),
        "audit_log": set(),
        "identified_events": {"user_id", "anonymous_id"},  # the sink's view: no rows of its own
    }
    assert deletable_tables(layout) == ["audit_log", "tracks"]


def test_source_schemas_are_those_holding_segflow_tables() -> None:
    tables = [
        ("WEB", "TRACKS"),
        ("LEGACY_APP", "IDENTITY_MAP"),  # a source the rules do not name any more
        ("UNKNOWN_SOURCE", "PAGES"),
        ("ANALYTICS", "DAILY_REVENUE"),  # someone else's schema: left alone
        ("_SEGFLOW", "_SEGFLOW_OFFSETS"),  # the control schema holds no user rows
        ("INFORMATION_SCHEMA", "TABLES"),
    ]
    assert source_schemas(tables) == ["legacy_app", "unknown_source", "web"]


def test_older_user_ids_an_alias_linked_match_wherever_the_user_id_does() -> None:
    cols = {"id", "user_id", "previous_id", "anonymous_id", "canonical_user_id"}
    where, binds = row_condition("aliases", cols, "u1", ["a1"], ["old1", "old2"]) or ("", [])
    assert where == (
        '"USER_ID" IN (?, ?, ?) OR "CANONICAL_USER_ID" IN (?, ?, ?) OR "PREVIOUS_ID" IN (?, ?, ?)'
        ' OR ("ANONYMOUS_ID" IN (?) AND "USER_ID" IS NULL AND "CANONICAL_USER_ID" IS NULL)'
        ' OR "PREVIOUS_ID" IN (?)'
    )
    assert binds == ["u1", "old1", "old2"] * 3 + ["a1", "a1"]
    ident = {"identifier", "identifier_type", "canonical_user_id"}
    where, binds = row_condition("identity_map", ident, "u1", [], ["old1"]) or ("", [])
    assert where == '"CANONICAL_USER_ID" = ? OR ("IDENTIFIER" IN (?, ?) AND "IDENTIFIER_TYPE" = ?)'
    assert binds == ["u1", "u1", "old1", "user_id"]
    assert row_condition("users", {"id"}, "u1", [], ["old1"]) == ('"ID" IN (?, ?)', ["u1", "old1"])
