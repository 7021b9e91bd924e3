"""The oracle of the naming and row-mapping property tests: every non-null leaf of a free-form
map is kept, either in `_unmapped` under its key path (or an ancestor's) or in its own column,
which no other leaf claims."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from schemas.naming import child_column, unmapped_key


def same(a: Any, b: Any) -> bool:
    return orjson.dumps(a) == orjson.dumps(b)


def assert_leaves_kept(
    node: Mapping[str, Any],
    path: tuple[str, ...],
    prefix: str,
    columns: Mapping[str, Any],
    unmapped: Mapping[str, Any],
    claimed: set[str],
    where: str = "",
) -> None:
    """Walk `node` (found at key `path`, flattened under column `prefix`) and look each leaf up;
    the columns it finds are added to `claimed`, and a column already claimed fails."""
    for key, value in node.items():
        if value is None:
            continue
        here = (*path, key)
        if unmapped_key(here) in unmapped:
            assert same(unmapped[unmapped_key(here)], value), (where, here)
            continue
        column = child_column(prefix, key)
        assert column, f"{where}: {here} has no column and is not in _unmapped"
        if isinstance(value, dict):
            assert_leaves_kept(value, here, column, columns, unmapped, claimed, where)
            continue
        expected = orjson.dumps(value).decode() if isinstance(value, list) else value
        assert column in columns, f"{where}: {here} lost"
        assert same(columns[column], expected), f"{where}: {here} changed"
        assert column not in claimed, f"{where}: {here} shares column {column}"
        claimed.add(column)
