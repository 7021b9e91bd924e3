"""Widenings a table's layout shows half done, and the statements that finish each. Pure.

A widening (ddl.widen_steps) leaves one of these layouts if it is stopped between two steps
(the column ``c``, its twin ``T`` of the new type and the old column set aside, ``R``):

| layout | stopped after | finished by the steps from |
| --- | --- | --- |
| c, T | adding or filling the twin | ADD (all again: each step is safe to redo) |
| T, R | setting the old column aside | SWAP (twin renamed, catch-up copy, drop) |
| c, R | renaming the twin | CATCH_UP (copy, drop) |
| T | an older version's drop, before its rename | the rename alone |

Where the column's name cannot be told (a cut twin or retired name, the column itself gone)
nothing is done: the operator renames it (logged by the caller). The types come from the
layout: the old type is the one of ``c`` (first layout) or ``R``, the new one of ``T`` or ``c``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sinks.snowflake import ddl


@dataclass(frozen=True)
class Resume:
    """How to finish one interrupted widening of `column` (None: its name cannot be told from
    the `leftover` twin or retired column)."""

    column: str | None
    leftover: str
    source: str | None
    target: str
    steps: list[str]


def is_leftover(name: str) -> bool:
    return name.endswith(ddl.WIDEN_SUFFIX) or name.endswith(ddl.RETIRED_SUFFIX)


def resume_steps(schema: str, table: str, columns: Mapping[str, str]) -> list[Resume]:
    """Every widening of `table` its layout (`columns`: name -> type) shows half done."""
    out: list[Resume] = []
    seen: set[str] = set()
    for name in [n for n in columns if is_leftover(n)]:
        column = ddl.widened_column(name, columns)
        if column is None:
            out.append(Resume(None, name, None, columns[name], []))
            continue
        if column in seen:
            continue
        seen.add(column)
        twin, retired = ddl.twin_name(column), ddl.retired_name(column)
        has_col, has_twin, has_old = column in columns, twin in columns, retired in columns
        if has_old and not (has_col or has_twin):  # no widening leaves this: not ours to fix
            out.append(Resume(None, retired, columns[retired], columns[retired], []))
        elif has_old:
            # the old column's values are copied into the column (renamed twin) or its twin
            source = columns[retired]
            target = columns[column] if has_col else columns[twin]
            first = ddl.CATCH_UP if has_col else ddl.SWAP
            steps = ddl.widen_steps(schema, table, column, source, target)[first:]
            out.append(Resume(column, retired, source, target, steps))
            if has_col and has_twin:  # a second widening began after: finish it as well
                steps = ddl.widen_steps(schema, table, column, target, columns[twin])
                out.append(Resume(column, twin, target, columns[twin], steps))
        elif has_col:
            source, target = columns[column], columns[twin]
            steps = ddl.widen_steps(schema, table, column, source, target)
            out.append(Resume(column, twin, source, target, steps))
        else:
            steps = [ddl.widen_steps(schema, table, column)[ddl.SWAP]]
            out.append(Resume(column, twin, None, columns[twin], steps))
    return out


def finished(columns: dict[str, str], resume: Resume) -> None:
    """`columns` as they are once `resume` ran: the column of the new type, no leftovers."""
    assert resume.column is not None
    columns.pop(ddl.twin_name(resume.column), None)
    columns.pop(ddl.retired_name(resume.column), None)
    columns[resume.column] = resume.target
