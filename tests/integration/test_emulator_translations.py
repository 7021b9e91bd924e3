"""The emulator's remembered statement translations (runtime/services/emulator_server.py,
`_Translations`): a statement seen before skips fakesnow's parse and rewrite, and answers as it
did without them. In process, on fakesnow's own connection (no server): what is tested is the
translation, which is the same code either way; the shared emulator runs it for every other
integration test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakesnow import cursor as fakesnow_cursor
from fakesnow.instance import FakeSnow
from snowflake.connector.errors import ProgrammingError

from runtime.services import emulator_server

pytestmark = pytest.mark.integration


@pytest.fixture
def memo(monkeypatch: pytest.MonkeyPatch) -> emulator_server._Translations:
    """Translations installed for this test only (fakesnow's own functions restored after)."""
    cls = fakesnow_cursor.FakeSnowflakeCursor
    for owner, name in (
        (cls, "_transform"),
        (cls, "_describe_last_sql"),
        (fakesnow_cursor, "parse_one"),
        (emulator_server._server_module, "parse_one"),
    ):
        monkeypatch.setattr(owner, name, getattr(owner, name))
    translations = emulator_server._Translations(200_000)
    monkeypatch.setattr(emulator_server, "_TRANSLATIONS", translations)
    emulator_server._install_multitable_insert()
    emulator_server._install_translations(translations)
    return translations


@pytest.fixture
def cur(memo: emulator_server._Translations, tmp_path: Path) -> Iterator[Any]:
    conn = FakeSnow(db_path=tmp_path).connect(database="TR", schema="A", paramstyle="qmark")
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE t (id INTEGER, s VARCHAR)")
        cursor.execute("INSERT INTO t VALUES (1, 'a1'), (2, 'a2')")
        cursor.execute("CREATE SCHEMA b")
        cursor.execute("CREATE TABLE b.t (id INTEGER, s VARCHAR)")
        cursor.execute("INSERT INTO b.t VALUES (1, 'b1')")
        cursor.execute("USE SCHEMA a")  # CREATE SCHEMA made b the current one
        yield cursor
    conn.close()


def test_a_repeated_statement_is_translated_once_and_takes_its_new_binds(
    cur: Any, memo: emulator_server._Translations
) -> None:
    select = "SELECT s FROM t WHERE id = ?"
    assert cur.execute(select, [1]).fetchall() == [("a1",)]
    hits = memo.hits
    assert cur.execute(select, [2]).fetchall() == [("a2",)]
    assert memo.hits > hits  # its parse, rewrite and describe came from the memo
    insert = "INSERT INTO t (id, s) VALUES (?, ?)"
    for i in (3, 4):
        assert cur.execute(insert, [i, f"a{i}"]).rowcount == 1
    assert cur.execute("SELECT COUNT(*) FROM t").fetchone() == (4,)
    assert [d.name for d in cur.execute(select, [3]).description] == ["S"]


def test_the_same_text_reads_the_current_schema_and_identifier_binds_are_not_kept(
    cur: Any,
) -> None:
    select = "SELECT s FROM t ORDER BY id"
    assert cur.execute(select).fetchall() == [("a1",), ("a2",)]
    cur.execute("USE SCHEMA b")
    assert cur.execute(select).fetchall() == [("b1",)]
    dynamic = "SELECT s FROM IDENTIFIER(?) ORDER BY id"
    assert cur.execute(dynamic, ["tr.b.t"]).fetchall() == [("b1",)]
    assert cur.execute(dynamic, ["tr.a.t"]).fetchall() == [("a1",), ("a2",)]


def test_a_table_changed_since_is_read_as_it_is_now(cur: Any) -> None:
    select = "SELECT * FROM t WHERE id = 1"
    assert [d.name for d in cur.execute(select).description] == ["ID", "S"]
    cur.execute("ALTER TABLE t ADD COLUMN extra VARCHAR")
    cur.execute(select)
    assert [d.name for d in cur.description] == ["ID", "S", "EXTRA"]
    assert cur.fetchall() == [(1, "a1", None)]
    cur.execute("DROP TABLE t")
    with pytest.raises(ProgrammingError) as refused:
        cur.execute(select)
    assert refused.value.errno == 2003  # does not exist, as when translated anew


def test_a_syntax_error_is_refused_every_time_and_not_kept(
    cur: Any, memo: emulator_server._Translations
) -> None:
    for _ in range(2):
        with pytest.raises(ProgrammingError) as refused:
            cur.execute("SELECT FROM WHERE t")
        assert refused.value.errno == 1003
    assert not any("SELECT FROM WHERE t" in str(key) for key in memo.entries)


def test_a_repeated_multi_table_insert_counts_each_run(
    cur: Any, memo: emulator_server._Translations
) -> None:
    cur.execute("CREATE TABLE low (id INTEGER)")
    cur.execute("CREATE TABLE high (id INTEGER)")
    insert = (
        "INSERT ALL WHEN id < ? THEN INTO low (id) VALUES (id) "
        "ELSE INTO high (id) VALUES (id) SELECT id FROM t WHERE id >= ?"
    )
    with pytest.raises(ProgrammingError):  # binds outside the subquery: refused, as before
        cur.execute(insert, [2, 0])
    insert = (
        "INSERT ALL WHEN id < 2 THEN INTO low (id) VALUES (id) "
        "ELSE INTO high (id) VALUES (id) SELECT id FROM t WHERE id >= ?"
    )
    assert cur.execute(insert, [0]).fetchall() == [(1, 1)]
    hits = memo.hits
    assert cur.execute(insert, [2]).fetchall() == [(0, 1)]
    assert memo.hits > hits
    assert cur.execute("SELECT COUNT(*) FROM high").fetchone() == (2,)


def test_the_memo_keeps_texts_within_its_budget(cur: Any) -> None:
    memo = emulator_server._Translations(8_000)
    emulator_server._install_translations(memo)
    for i in range(200):
        assert cur.execute(f"SELECT {i} AS n FROM t WHERE id = 1").fetchone() == (i,)
    assert 0 < memo.chars <= 8_000
    big = "SELECT 1 AS n" + " " * 1_000 + " FROM t WHERE id = 1"  # over an eighth of it
    cur.execute(big)
    assert not any(big in str(key) for key in memo.entries)


def test_statements_of_other_kinds_are_not_kept(
    cur: Any, memo: emulator_server._Translations
) -> None:
    for i in range(3):  # DDL and the like often carry a name or a load id of their own
        cur.execute(f"CREATE TABLE made_{i} (id INTEGER)")
        cur.execute(f"INSERT OVERWRITE INTO made_{i} SELECT id FROM t")
        assert cur.execute(f"SELECT COUNT(*) FROM made_{i}").fetchone() == (2,)
    kept = [str(key) for key in memo.entries]
    assert any("SELECT COUNT(*) FROM made_0" in key for key in kept)
    assert not any("CREATE" in key or "OVERWRITE" in key for key in kept)


def test_a_negative_budget_stops_start_up_naming_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--translation-chars"):
        emulator_server.serve("127.0.0.1", 0, tmp_path / "db", translation_chars=-1)
    assert not (tmp_path / "db").exists()
