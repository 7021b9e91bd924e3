"""identified_events: the view's text from a schema's layout, and when the sink (re)makes it."""

from __future__ import annotations

from unittest.mock import create_autospec

import pytest

from sinks.snowflake.connection import SinkConnection
from sinks.snowflake.errors import WarehouseFatalError, WarehouseRetryableError
from sinks.snowflake.tables import fixed_columns
from sinks.snowflake.views import EVENT_TABLES, IdentityViews, identified_events_sql


def layout(*tables: str) -> dict[str, dict[str, str]]:
    return {t: dict(fixed_columns(t)) for t in tables}


def test_the_view_unions_the_event_tables_present_and_resolves_through_identity_map() -> None:
    sql = identified_events_sql("web", layout("tracks", "pages", "identity_map", "users"))
    assert sql is not None
    assert sql.startswith('CREATE OR REPLACE VIEW "WEB"."IDENTIFIED_EVENTS" AS ')
    assert 'FROM "WEB"."TRACKS"' in sql and 'FROM "WEB"."PAGES"' in sql
    assert '"WEB"."SCREENS"' not in sql and '"WEB"."USERS"' not in sql
    assert sql.count("UNION ALL") == 1
    assert "'track' AS \"TYPE\"" in sql and "'pages' AS \"TABLE_NAME\"" in sql
    assert 'COALESCE("EVENT_TEXT", "EVENT")::VARCHAR AS "EVENT"' in sql  # the name as sent
    # the identifier's user (else the processors' stitch), looked up once more
    assert (
        'COALESCE(c."CANONICAL_USER_ID", k."CANONICAL_USER_ID", e."CANONICAL_USER_ID", '
        'e."USER_ID") AS "RESOLVED_USER_ID"' in sql
    )
    assert 'k."IDENTIFIER" = COALESCE(e."USER_ID", e."ANONYMOUS_ID")' in sql
    assert 'c."IDENTIFIER" = COALESCE(k."CANONICAL_USER_ID", e."CANONICAL_USER_ID")' in sql
    # one row per identifier: a link before a row naming itself, the newest link first
    assert 'PARTITION BY "IDENTIFIER" ORDER BY CASE WHEN' in sql
    assert '"LINKED_AT" DESC NULLS LAST' in sql
    for column in ("ID", "TYPE", "EVENT", "ANONYMOUS_ID", "USER_ID", "TIMESTAMP", "RECEIVED_AT"):
        assert f'e."{column}"' in sql


def test_every_call_type_has_its_table_and_each_one_its_columns() -> None:
    sql = identified_events_sql("web", layout(*EVENT_TABLES))
    assert sql is not None and sql.count("UNION ALL") == len(EVENT_TABLES) - 1
    assert set(EVENT_TABLES.values()) == {"track", "page", "screen", "identify", "group", "alias"}
    assert 'NULL::VARCHAR AS "EVENT"' in sql  # identifies, groups, aliases: no name


def test_without_identity_map_the_view_reads_the_stitched_user() -> None:
    sql = identified_events_sql("web", layout("pages"))
    assert sql is not None and "IDENTITY_MAP" not in sql
    assert 'COALESCE(e."CANONICAL_USER_ID", e."USER_ID") AS "RESOLVED_USER_ID"' in sql


def test_a_table_made_before_a_column_existed_reads_it_as_null() -> None:
    old = layout("pages")
    del old["pages"]["canonical_user_id"]
    sql = identified_events_sql("web", old)
    assert sql is not None and 'NULL::VARCHAR AS "CANONICAL_USER_ID"' in sql


def test_no_event_table_no_view() -> None:
    assert identified_events_sql("web", layout("identity_map", "users")) is None
    assert identified_events_sql("web", {}) is None


def test_the_sink_makes_the_view_once_and_again_when_the_tables_change() -> None:
    conn = create_autospec(SinkConnection, instance=True)
    views = IdentityViews(conn)
    assert views.ensure("web", layout("pages"))
    assert not views.ensure("web", layout("pages"))  # the same tables: nothing to do
    assert views.ensure("web", layout("pages", "identity_map"))  # identity_map appeared
    assert views.ensure("web", layout("pages", "identity_map", "tracks"))  # a new event table
    assert not views.ensure("web", {**layout("pages", "identity_map", "tracks"), "order": {}})
    assert not views.ensure("mobile", None)  # a schema with no tables yet
    views.reset()  # a new session: made again
    assert views.ensure("web", layout("pages", "identity_map", "tracks"))
    sqls = [c.args[0] for c in conn.run.call_args_list]
    assert len(sqls) == 4 and all(s.startswith("CREATE OR REPLACE VIEW") for s in sqls)
    assert all(c.kwargs["kind"] == "ddl" for c in conn.run.call_args_list)


def test_a_view_the_warehouse_refuses_does_not_stop_loading(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = create_autospec(SinkConnection, instance=True)
    conn.run.side_effect = WarehouseFatalError("Insufficient privileges (003001)")
    views = IdentityViews(conn)
    assert not views.ensure("web", layout("pages"))
    assert "could not make the view web.identified_events" in caplog.text
    assert not views.ensure("web", layout("pages"))  # not tried again in this session
    assert conn.run.call_count == 1
    conn.run.side_effect = WarehouseRetryableError("connection lost")
    with pytest.raises(WarehouseRetryableError):  # a broken session is the loader's to handle
        views.ensure("web", layout("pages", "tracks"))
