"""Which rows and schemas belong to a user: pure functions building the WHERE clauses.

Which rows belong to the user: ``user_id``, ``canonical_user_id`` or ``previous_id`` is the
user or one of the older user ids an alias linked to the user (identity_map rows of type
``user_id`` resolving to the user), or the row is anonymous (no user_id, no canonical user) with
one of the user's linked anonymous ids; in ``identity_map`` the identifier is one of the user's
ids or resolves to the user; in ``users`` the ``id`` is one of the user's ids. Anonymous rows of
a shared device that stitching gave to another user stay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from deletion.receipts import DELETIONS
from sinks.snowflake import ddl
from sinks.snowflake.tables import ACCOUNTS, AUDIT_LOG, IDENTITY_MAP, SCHEMA_CHANGES, USERS
from sinks.snowflake.views import VIEWS

IN_CHUNK = 500  # identifiers bound in one IN (...) list
USER_ID_TYPE = "user_id"  # identity_map's identifier_type of a user id
# Tables whose presence marks a schema as one segflow loads (a source schema).
SOURCE_TABLES: frozenset[str] = frozenset(
    {
        IDENTITY_MAP,
        USERS,
        ACCOUNTS,
        AUDIT_LOG,
        SCHEMA_CHANGES,
        DELETIONS,
        "tracks",
        "identifies",
        "pages",
        "screens",
        "groups",
        "aliases",
    }
)


def source_schemas(tables: Iterable[tuple[str, str]]) -> list[str]:
    """The schemas (lower case) among (schema, table) pairs that hold a table segflow loads."""
    found = {
        str(schema).lower()
        for schema, table in tables
        if str(table).lower() in SOURCE_TABLES and str(schema).upper() != "INFORMATION_SCHEMA"
    }
    return sorted(found)


def _in_list(column: str, count: int) -> str:
    return f"{ddl.quote(column)} IN ({', '.join(['?'] * count)})"


def _user_is(column: str, user_ids: Sequence[str]) -> str:
    return f"{ddl.quote(column)} = ?" if len(user_ids) == 1 else _in_list(column, len(user_ids))


def row_condition(
    table: str,
    columns: Iterable[str],
    user_id: str,
    anonymous_ids: Sequence[str],
    aliased_ids: Sequence[str] = (),
) -> tuple[str, list[str]] | None:
    """The WHERE clause (and binds) selecting the user's rows of `table`; None if it has none.

    `columns` are the table's column names in lower case; `aliased_ids` the older user ids an
    alias linked to the user, matched wherever the user id is."""
    cols = set(columns)
    parts: list[str] = []
    binds: list[str] = []
    users = [user_id, *(a for a in aliased_ids if a != user_id)]
    if table == IDENTITY_MAP:
        # Every link that resolves to the user (its anonymous ids included), and the user's own
        # user_id entries whoever they resolve to.
        if "canonical_user_id" in cols:
            parts.append(f"{ddl.quote('canonical_user_id')} = ?")
            binds.append(user_id)
        if "identifier" in cols and "identifier_type" in cols:
            parts.append(
                f"({_user_is('identifier', users)} AND {ddl.quote('identifier_type')} = ?)"
            )
            binds += [*users, USER_ID_TYPE]
    elif table == USERS:
        if "id" in cols:
            parts.append(_user_is("id", users))
            binds += users
    else:
        for column in ("user_id", "canonical_user_id", "previous_id"):
            if column in cols:
                parts.append(_user_is(column, users))
                binds += users
        if "anonymous_id" in cols and anonymous_ids:
            clause = _in_list("anonymous_id", len(anonymous_ids))
            if "user_id" in cols:
                clause += f" AND {ddl.quote('user_id')} IS NULL"
            if "canonical_user_id" in cols:
                clause += f" AND {ddl.quote('canonical_user_id')} IS NULL"
            parts.append(f"({clause})")
            binds += list(anonymous_ids)
        if "previous_id" in cols and anonymous_ids:
            parts.append(_in_list("previous_id", len(anonymous_ids)))
            binds += list(anonymous_ids)
    if not parts:
        return None
    return " OR ".join(parts), binds


def deletable_tables(layout: Mapping[str, set[str]]) -> list[str]:
    """Tables of a schema the user's rows can be in: all but segflow's own bookkeeping and its
    views (which hold no rows of their own)."""
    return sorted(t for t in layout if not t.startswith("_segflow") and t not in VIEWS)
