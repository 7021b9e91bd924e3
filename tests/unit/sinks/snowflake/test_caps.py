"""The tables-per-schema cap (caps.py): rows of tables a schema has no room for folded."""

from __future__ import annotations

from sinks.snowflake.caps import fold_capped_tables
from sinks.snowflake.rows import TableRow
from sinks.snowflake.tables import Kind, fixed_columns


def test_tables_beyond_the_cap_fold_into_tracks_unmapped() -> None:
    fixed = fixed_columns("tracks")
    known = {("web", "tracks"): fixed, ("web", "old_event"): fixed_columns("old_event")}
    rows = []
    for n, event in enumerate(["old_event", "new_one", "new_two", "new_two"]):
        mid = f"m{n}"
        rows.append(TableRow("web", "tracks", Kind.APPEND, {"id": mid}, {"ctx": 1}, mid))
        rows.append(TableRow("web", event, Kind.APPEND, {"id": mid, "color": "red"}, {"x": 2}, mid))
    out, changes = fold_capped_tables(rows, known, max_tables=4)
    tables = [r.table for r in out]
    # old_event exists; new_one takes the third place (the fourth is kept for
    # _segflow_schema_changes); new_two has no room
    assert tables == ["tracks", "old_event", "tracks", "new_one", "tracks", "tracks"]
    assert out[4].unmapped == {"ctx": 1, "color": "red", "x": 2}
    assert rows[4].unmapped == {"ctx": 1}  # the input is not changed
    assert [(c.table, c.change, c.occurrences) for c in changes] == [("new_two", "table_limit", 2)]
    # Segment's own tables are never capped
    ident = TableRow("web", "identifies", Kind.APPEND, {"id": "i"}, None, "i")
    out, changes = fold_capped_tables([ident], known, max_tables=1)
    assert out == [ident] and not changes
