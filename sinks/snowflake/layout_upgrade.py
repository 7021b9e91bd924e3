"""The upgrade of a table the first warehouse layout wrote, planned: pure functions.

Layout 1 reserved one set of names on every table (`LAYOUT_1_RESERVED`); layout 2 reserves them
per table (`tables.reserved_columns`), so some values layout 1 kept in ``_unmapped`` now have a
column (`freed_columns`). Layout 1 kept such a value under its key path (``traits.name``;
``traits.Name`` for another key naming the same column) and, before that, under the column's
name itself (``name``). What moves where, decided from a table's rows (ordered by identity, so
that they can stream: `count_kinds` over them gives `plan_types`, then `row_move` per row):

- per row and column the first candidate key present wins (the key spelled as the column, then
  other spellings in key order, then the bare column name; `candidates`), the others stay;
- a new column takes the type most of its values have (``NUMBER`` and ``FLOAT`` together make
  ``FLOAT``; strings make ``VARCHAR``, or ``TIMESTAMP_TZ`` when all of them are timestamps); an
  existing column keeps its type; a value of another type stays in ``_unmapped`` (no value is
  lost, none is converted), and so does every value of a table at its column cap;
- copies of one row (an event loaded twice) move once; copies that differ do not move.

`update_sql` is the statement that carries one batch of moves out (migrations.py runs it).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.naming import (
    OWNED_PREFIX,
    ReservedColumns,
    key_path_column,
    parse_unmapped_key,
    unmapped_key,
)
from sinks.snowflake import ddl
from sinks.snowflake.evolution import looks_like_timestamp
from sinks.snowflake.tables import (
    ACCOUNTS,
    BOOLEAN,
    FLOAT,
    LOAD_ID_COLUMN,
    NUMBER,
    TIMESTAMP,
    USERS,
    VARCHAR,
    layout_of,
    reserved_columns,
)

LAYOUT_1_RESERVED = ReservedColumns(
    frozenset(
        {
            "id",
            "anonymous_id",
            "user_id",
            "received_at",
            "sent_at",
            "timestamp",
            "original_timestamp",
            "uuid_ts",
            "loaded_at",
            "event",
            "event_text",
            "name",
            "category",
            "group_id",
            "previous_id",
            "channel",
            "canonical_user_id",
            "_unmapped",
            "_masked_fields",
            "_pii_key_version",
        }
    ),
    (OWNED_PREFIX,),
)
"""The names layout 1 kept from every table's properties and traits."""

_TRAIT_TABLES = frozenset({"identifies", "groups", USERS, ACCOUNTS})
_NO_MAP_TABLES = frozenset({"tracks", "aliases", "identity_map", "audit_log"})
_EVENT_IDENTITY = ("id", "_segflow_topic", "_segflow_partition", "_segflow_offset")

Columns = dict[str, str]


def map_root(table: str) -> str | None:
    """The map a table's dynamic columns come from (``traits`` / ``properties``); None for a
    table without one (tracks, aliases, segflow's own)."""
    if table in _NO_MAP_TABLES or table.startswith(OWNED_PREFIX):
        return None
    return "traits" if table in _TRAIT_TABLES else "properties"


def freed_columns(table: str) -> frozenset[str]:
    """The names layout 1 reserved on every table and layout 2 leaves to `table`'s map."""
    now = reserved_columns(table)
    return frozenset(c for c in LAYOUT_1_RESERVED.names if c not in now)


def key_column(key: str, root: str, freed: frozenset[str]) -> str | None:
    """The freed column an `_unmapped` key holds a value of, or None: the bare column name
    (the first layout 1), or a key path from `root` naming it (``traits.Name`` -> ``name``)."""
    if key in freed:
        return key
    path = parse_unmapped_key(key)
    if len(path) < 2 or path[0] != root:
        return None
    column = key_path_column(path[1:])
    return column if column in freed else None


def candidates(keys: Iterable[str], root: str, freed: frozenset[str]) -> dict[str, list[str]]:
    """Column -> its candidate keys in the order they are tried: the key spelled as the column
    (``traits.name``), other spellings in key order, the bare column name last."""
    found: dict[str, list[str]] = {}
    for key in keys:
        column = key_column(key, root, freed)
        if column is not None:
            found.setdefault(column, []).append(key)
    for column, keys_of in found.items():
        exact = unmapped_key((root, column))
        keys_of.sort(key=lambda k: (k != exact, k == column, k))
    return found


def value_kind(value: Any) -> str | None:
    """The column type a value of `_unmapped` moves into; None for one that moves nowhere (an
    object, an array, a null)."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return NUMBER if -(10**38) < value < 10**38 else FLOAT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        return TIMESTAMP if looks_like_timestamp(value) else VARCHAR
    return None


def new_column_type(kinds: Counter[str]) -> str | None:
    """The type of a new column for values of these kinds: the most common, where NUMBER and
    FLOAT count as FLOAT together and strings as VARCHAR unless all are timestamps."""
    merged: Counter[str] = Counter()
    for kind, n in kinds.items():
        if kind == NUMBER and kinds.get(FLOAT):
            kind = FLOAT
        elif kind == TIMESTAMP and kinds.get(VARCHAR):
            kind = VARCHAR
        merged[kind] += n
    if not merged:
        return None
    return max(sorted(merged), key=lambda k: merged[k])


def fits(column_type: str, value: Any) -> bool:
    """A value moves into a column of `column_type` only as that type (an integer into FLOAT)."""
    kind = value_kind(value)
    if kind is None:
        return False
    if column_type == VARCHAR:
        return isinstance(value, str)
    if column_type == FLOAT:
        return kind in (NUMBER, FLOAT)
    return kind == column_type


def bind_text(column_type: str, value: Any) -> str:
    """The value as the text bound for it (cast to the column's type in SQL)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclass
class RowMove:
    """One row's values leaving `_unmapped`: its identity (and load id), the columns set, and
    what stays in `_unmapped` (None when nothing does)."""

    identity: tuple[Any, ...]
    load_id: str | None
    values: dict[str, Any]
    rest: dict[str, Any] | None


def plan_row(
    unmapped: Mapping[str, Any], keys_of: Mapping[str, Sequence[str]], types: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(column -> value moved, what stays): per column the first candidate key present whose
    value fits the column's type."""
    moved: dict[str, Any] = {}
    taken: set[str] = set()
    for column, keys in keys_of.items():
        ctype = types.get(column)
        if ctype is None:
            continue
        for key in keys:
            if key in unmapped and fits(ctype, unmapped[key]):
                moved[column] = unmapped[key]
                taken.add(key)
                break
    rest = {k: v for k, v in unmapped.items() if k not in taken}
    return moved, rest


Row = tuple[tuple[Any, ...], str | None, Mapping[str, Any]]
"""A row as read: its identity, its load id (or None), its `_unmapped`."""


def distinct_rows(rows: Iterable[Row]) -> Iterator[tuple[Row, bool]]:
    """Rows ordered by identity, each identity once (its first copy), with whether all its
    copies (an event loaded twice) agree. Holds one row, so the rows may stream."""
    current: Row | None = None
    same = True
    for row in rows:
        if current is not None and row[0] == current[0]:
            same = same and row[2] == current[2]
            continue
        if current is not None:
            yield current, same
        current, same = row, True
    if current is not None:
        yield current, same


def count_kinds(
    kinds: Mapping[str, Counter[str]], keys_of: Mapping[str, Sequence[str]], row: Row
) -> None:
    """Add a row's values to the counts of kinds per column (its first candidate key each)."""
    unmapped = row[2]
    for column, keys in keys_of.items():
        key = next((k for k in keys if k in unmapped), None)
        kind = value_kind(unmapped[key]) if key is not None else None
        if kind is not None:
            kinds[column][kind] += 1


@dataclass
class TablePlan:
    """The upgrade of one table: candidate keys per column, column types (those of `add` are
    new), and, when planned from rows held (`plan_table`), the rows' moves and what stays."""

    table: str
    keys_of: dict[str, list[str]]
    types: dict[str, str] = field(default_factory=dict)
    add: dict[str, str] = field(default_factory=dict)
    moves: list[RowMove] = field(default_factory=list)
    kept: Counter[str] = field(default_factory=Counter)

    def moved(self) -> Counter[str]:
        return Counter(c for m in self.moves for c in m.values)


def plan_types(
    table: str,
    columns: Mapping[str, str],
    keys_of: dict[str, list[str]],
    kinds: Mapping[str, Counter[str]],
    max_columns: int,
) -> TablePlan:
    """The types of a table whose layout is `columns` from the kinds of its values per column
    (`count_kinds`): an existing column keeps its own, a missing one takes its values' type; a
    table at its column cap takes no new column (those values stay)."""
    plan = TablePlan(table, keys_of)
    room = max_columns - len(columns)
    for column in sorted(keys_of):
        if column in columns:
            plan.types[column] = columns[column]
            continue
        ctype = new_column_type(kinds.get(column, Counter()))
        if ctype is None or room <= 0:
            continue
        plan.types[column] = plan.add[column] = ctype
        room -= 1
    return plan


def row_move(
    row: Row,
    same: bool,
    keys_of: Mapping[str, Sequence[str]],
    types: Mapping[str, str],
    kept: Counter[str],
) -> RowMove | None:
    """The move of one distinct row (None: nothing moves); counts in `kept` the columns whose
    value stays. Copies that differ (`same` false) move nothing."""
    identity, load_id, unmapped = row
    if not same:  # which copy to write is unknown
        kept.update(c for c, ks in keys_of.items() if any(k in unmapped for k in ks))
        return None
    moved, rest = plan_row(unmapped, keys_of, types)
    for column, keys in keys_of.items():
        if column not in moved and any(k in unmapped for k in keys):
            kept[column] += 1
    return RowMove(identity, load_id, moved, rest or None) if moved else None


def plan_table(
    table: str,
    columns: Mapping[str, str],
    keys_of: dict[str, list[str]],
    rows: Iterable[Row],
    max_columns: int,
) -> TablePlan:
    """The whole plan of a table from rows held in memory, ordered by identity (copies
    adjacent): `plan_types`, then `row_move` per distinct row. migrations.py runs the same
    steps over rows it streams, holding none of them."""
    held = list(rows)
    kinds: dict[str, Counter[str]] = {c: Counter() for c in keys_of}
    for row, _ in distinct_rows(held):
        count_kinds(kinds, keys_of, row)
    plan = plan_types(table, columns, keys_of, kinds, max_columns)
    for row, same in distinct_rows(held):
        move = row_move(row, same, keys_of, plan.types, plan.kept)
        if move is not None:
            plan.moves.append(move)
    return plan


def identity_columns(table: str, columns: Mapping[str, str]) -> tuple[str, ...] | None:
    """The columns that find one row again (None: the table cannot be upgraded safely)."""
    names = ("id",) if layout_of(table) in (USERS, ACCOUNTS) else _EVENT_IDENTITY
    return names if all(n in columns for n in names) else None


def update_sql(
    schema: str,
    table: str,
    identity: Sequence[str],
    guard_load_id: bool,
    types: Mapping[str, str],
    moved: Sequence[str],
    rows: int,
) -> str:
    """One UPDATE of `rows` rows moving the `moved` columns: binds per row are the identity,
    the load id (if guarded), each moved value's text, and the JSON of what stays."""
    q = ddl.quote
    width = len(identity) + int(guard_load_id) + len(moved) + 1
    one = "(" + ", ".join(["?"] * width) + ")"
    n = len(identity) + int(guard_load_id)
    sets = [f"{q(c)} = s.column{n + i + 1}::{ddl.sql_type(types[c])}" for i, c in enumerate(moved)]
    sets.append(f'"_UNMAPPED" = PARSE_JSON(s.column{width})')
    where = [f"t.{q(c)} = s.column{i + 1}" for i, c in enumerate(identity)]
    if guard_load_id:
        where.append(f"COALESCE(t.{q(LOAD_ID_COLUMN)}, '') = s.column{len(identity) + 1}")
    where += [f"t.{q(c)} IS NULL" for c in moved]
    return (
        f"UPDATE {ddl.qualified(schema, table)} AS t SET {', '.join(sets)} "
        f"FROM (SELECT * FROM VALUES {', '.join([one] * rows)}) AS s "
        f"WHERE {' AND '.join(where)}"
    )


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
