"""User deletion ("forget"): every row of a user, in every table of the source schemas, gone.

The source schemas are found in the warehouse (information_schema): every schema holding a
table segflow writes (identity_map, the call type tables, users, accounts, audit_log, its
_segflow_ bookkeeping), so sources the rules file no longer names, or never named (events of
an unknown source land in their own schema), are covered too. `--source` restricts it.

For each user id and each source schema:

1. the identifiers linked to the user are read from ``identity_map`` (rows whose
   canonical_user_id is the user);
2. the user is put on the suppression list (runtime.suppressions.publish_suppressions) with
   those identifiers, *before* anything is deleted, so the edge, backfills and the sink stop
   accepting the user's events while the rows go;
3. in one transaction per schema and user, every table loses the rows that belong to the user
   (see :func:`row_condition`) and ``_segflow_deletions`` gains a receipt: request id, user id,
   how many linked identifiers, rows deleted per table, when. The receipt keeps the user id
   (needed to audit and to lift the suppression) but never the linked identifiers' values;
4. the sinks may still hold rows decoded before the suppression: right after publishing,
   the topics' data ends were taken (:mod:`sinks.sink_progress`); once every sink group has
   loaded past them (bounded: a SinkBarrierError names what is behind), the deletion runs again
   and the late rows are added to the receipt. The sinks also drop suppressed users' rows as
   each batch is taken, so what they load after the barrier cannot be the user's.

``--unsuppress`` lifts the suppression (a tombstone) and records that in the receipts table;
deleted rows do not come back.

Which rows belong to the user: ``user_id`` or ``canonical_user_id`` is the user, or the row is
anonymous (no user_id, no canonical user) with one of the user's linked anonymous ids; in
``identity_map`` the identifier is one of the user's or resolves to the user; in ``users`` the
``id`` is the user. Anonymous rows of a shared device that stitching gave to another user stay.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from runtime.settings import SegflowSettings
from schemas.errors import SegflowError
from sinks.session import WarehouseSession
from sinks.snowflake import ddl
from sinks.snowflake.tables import ACCOUNTS, AUDIT_LOG, IDENTITY_MAP, SCHEMA_CHANGES, USERS

logger = logging.getLogger(__name__)

DELETIONS = "_segflow_deletions"
RECEIPT_COLUMNS = {
    "request_id": "VARCHAR",
    "action": "VARCHAR",
    "user_id": "VARCHAR",
    "linked_identifiers": "NUMBER",
    "rows_deleted": "NUMBER",
    "tables": "VARIANT",
    "reason": "VARCHAR",
    "requested_at": "TIMESTAMP_TZ",
    "completed_at": "TIMESTAMP_TZ",
}
_IN_CHUNK = 500  # identifiers bound in one IN (...) list
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


class ForgetSettings(SegflowSettings):
    """`segflow forget`: how long it waits for the sinks before its final deletion pass."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_FORGET_")

    sink_wait_s: float = Field(
        600.0, ge=0, description="Seconds to wait for the sinks to pass the suppression; 0 = none"
    )
    sink_groups: str = Field(
        "", description="Sink groups to wait for, comma-separated; empty = all in _segflow_offsets"
    )
    control_schema: str = Field(
        "_segflow", description="Schema of the sinks' _segflow_offsets table"
    )
    progress_s: float = Field(
        10.0, gt=0, description="Seconds between progress lines while waiting"
    )

    def groups(self) -> list[str]:
        return [g.strip() for g in self.sink_groups.split(",") if g.strip()]


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


def row_condition(
    table: str, columns: Iterable[str], user_id: str, anonymous_ids: Sequence[str]
) -> tuple[str, list[str]] | None:
    """The WHERE clause (and binds) selecting the user's rows of `table`; None if it has none.

    `columns` are the table's column names in lower case."""
    cols = set(columns)
    parts: list[str] = []
    binds: list[str] = []
    if table == IDENTITY_MAP:
        # Every link that resolves to the user (its anonymous ids included), and the user's own
        # user_id entry whoever it resolves to.
        if "canonical_user_id" in cols:
            parts.append(f"{ddl.quote('canonical_user_id')} = ?")
            binds.append(user_id)
        if "identifier" in cols and "identifier_type" in cols:
            parts.append(f"({ddl.quote('identifier')} = ? AND {ddl.quote('identifier_type')} = ?)")
            binds += [user_id, "user_id"]
    elif table == USERS:
        if "id" in cols:
            parts.append(f"{ddl.quote('id')} = ?")
            binds.append(user_id)
    else:
        for column in ("user_id", "canonical_user_id", "previous_id"):
            if column in cols:
                parts.append(f"{ddl.quote(column)} = ?")
                binds.append(user_id)
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
    """Tables of a schema the user's rows can be in: all but segflow's own bookkeeping."""
    return sorted(t for t in layout if not t.startswith("_segflow"))


@dataclass
class UserReceipt:
    user_id: str
    schema: str
    linked_identifiers: int = 0
    tables: dict[str, int] = field(default_factory=dict)

    @property
    def rows_deleted(self) -> int:
        return sum(self.tables.values())


@dataclass
class ForgetReport:
    request_id: str
    receipts: list[UserReceipt] = field(default_factory=list)
    late_rows: int = 0
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        lines = []
        for r in self.receipts:
            detail = ", ".join(f"{t} {n}" for t, n in sorted(r.tables.items()) if n)
            lines.append(
                f"{r.schema}: user {r.user_id}: {verb} {r.rows_deleted} rows"
                + (f" ({detail})" if detail else "")
                + f", {r.linked_identifiers} linked identifiers"
            )
        if self.late_rows:
            lines.append(f"{self.late_rows} rows that landed during the deletion were deleted too")
        return "\n".join(lines) if lines else "no source schema found in the warehouse"


Publish = Callable[[dict[str, list[str]], str, bool], None]
"""(user -> identifiers, reason, lift) -> None: runtime.suppressions.publish_suppressions."""

SinkBarrier = Callable[[], Callable[[], None]]
"""Called right after the suppression is published: takes the topics' data ends and returns
the wait, which returns once every sink passed them (or raises SinkBarrierError)."""


class Forgetter:
    """Deletes users from the source schemas and keeps the receipts."""

    def __init__(
        self,
        session: WarehouseSession,
        schemas: Sequence[str] | None,
        publish: Publish,
        *,
        barrier: SinkBarrier | None = None,
    ) -> None:
        """`schemas`: the source schemas; None = every one found in the warehouse."""
        self.session = session
        self._schemas = None if schemas is None else list(schemas)
        self._discover = schemas is None
        self.publish = publish
        self.barrier = barrier

    @property
    def schemas(self) -> list[str]:
        if self._schemas is None:
            rows = self.session.fetch_all(
                "SELECT table_schema, table_name FROM information_schema.tables", []
            )
            self._schemas = source_schemas((str(s), str(t)) for s, t in rows)
        return self._schemas

    # -- warehouse facts ---------------------------------------------------------------------
    def layout(self, schema: str) -> dict[str, set[str]]:
        """table -> its columns (lower case) of one schema; empty when the schema is absent."""
        rows = self.session.fetch_all(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ?",
            [schema.upper()],
        )
        out: dict[str, set[str]] = {}
        for table, column in rows:
            out.setdefault(str(table).lower(), set()).add(str(column).lower())
        return out

    def linked_identifiers(
        self, schema: str, user_id: str, layout: Mapping[str, set[str]]
    ) -> list[str]:
        """Identifiers (other than the user id) that identity_map resolves to the user."""
        if IDENTITY_MAP not in layout:
            return []
        rows = self.session.fetch_all(
            f'SELECT DISTINCT "IDENTIFIER" FROM {ddl.qualified(schema, IDENTITY_MAP)} '
            'WHERE "CANONICAL_USER_ID" = ?',
            [user_id],
        )
        return sorted({str(r[0]) for r in rows if r[0] is not None and str(r[0]) != user_id})

    # -- the operations ----------------------------------------------------------------------
    def forget(
        self, user_ids: Sequence[str], *, reason: str | None = None, dry_run: bool = False
    ) -> ForgetReport:
        request_id = f"forget-{uuid.uuid4()}"
        report = ForgetReport(request_id, dry_run=dry_run)
        requested_at = datetime.now(UTC)
        layouts = {s: self.layout(s) for s in self.schemas}
        layouts = {s: lay for s, lay in layouts.items() if lay}
        linked: dict[tuple[str, str], list[str]] = {}
        for schema, lay in layouts.items():
            for user_id in user_ids:
                linked[(schema, user_id)] = self.linked_identifiers(schema, user_id, lay)
        if not dry_run:
            identifiers: dict[str, set[str]] = {u: set() for u in user_ids}
            for (_schema, user_id), ids in linked.items():
                identifiers[user_id].update(ids)
            self.publish(
                {u: sorted(ids) for u, ids in identifiers.items()}, reason or request_id, False
            )
        wait = self.barrier() if self.barrier is not None and not dry_run and layouts else None
        for schema, lay in layouts.items():
            for user_id in user_ids:
                receipt = UserReceipt(user_id, schema, len(linked[(schema, user_id)]))
                self._delete(schema, lay, receipt, linked[(schema, user_id)], dry_run)
                report.receipts.append(receipt)
        if wait is not None:
            try:
                wait()
            except SegflowError:
                for receipt in report.receipts:  # what was deleted is on record
                    self._receipt(receipt, request_id, "forget", reason, requested_at)
                raise
            self._late_pass(report, user_ids, linked)
        if not dry_run:
            for receipt in report.receipts:
                self._receipt(receipt, request_id, "forget", reason, requested_at)
        logger.info("forget %s: %d users, %d schemas", request_id, len(user_ids), len(layouts))
        return report

    def _late_pass(
        self,
        report: ForgetReport,
        user_ids: Sequence[str],
        linked: Mapping[tuple[str, str], list[str]],
    ) -> None:
        """The final pass, after the sinks passed the suppression: rows that landed meanwhile,
        in the schemas seen before and in any that appeared since (a new source)."""
        for receipt in report.receipts:
            before = receipt.rows_deleted
            lay = self.layout(receipt.schema)
            ids = linked[(receipt.schema, receipt.user_id)]
            self._delete(receipt.schema, lay, receipt, ids, False)
            report.late_rows += receipt.rows_deleted - before
        if self._discover:
            self._schemas = None
        known = {r.schema for r in report.receipts}
        for schema in self.schemas:
            lay = self.layout(schema) if schema not in known else {}
            for user_id in user_ids if lay else ():
                ids = sorted(
                    {i for (_s, u), found in linked.items() if u == user_id for i in found}
                )
                receipt = UserReceipt(user_id, schema, len(ids))
                self._delete(schema, lay, receipt, ids, False)
                report.receipts.append(receipt)
                report.late_rows += receipt.rows_deleted

    def unsuppress(self, user_ids: Sequence[str], *, reason: str | None = None) -> str:
        request_id = f"unsuppress-{uuid.uuid4()}"
        self.publish({u: [] for u in user_ids}, reason or request_id, True)
        now = datetime.now(UTC)
        for schema in self.schemas:
            if not self.layout(schema):
                continue
            for user_id in user_ids:
                self._receipt(UserReceipt(user_id, schema), request_id, "unsuppress", reason, now)
        return request_id

    # -- statements --------------------------------------------------------------------------
    def _delete(
        self,
        schema: str,
        layout: Mapping[str, set[str]],
        receipt: UserReceipt,
        anonymous_ids: Sequence[str],
        dry_run: bool,
    ) -> None:
        statements: list[tuple[str, str, list[str]]] = []
        for table in deletable_tables(layout):
            for chunk_start in range(0, max(1, len(anonymous_ids)), _IN_CHUNK):
                chunk = anonymous_ids[chunk_start : chunk_start + _IN_CHUNK]
                found = row_condition(table, layout[table], receipt.user_id, chunk)
                if found is not None:
                    where, binds = found
                    statements.append((table, where, binds))
        if dry_run:
            for table, where, binds in statements:
                rows = self.session.fetch_all(
                    f"SELECT COUNT(*) FROM {ddl.qualified(schema, table)} WHERE {where}", binds
                )
                receipt.tables[table] = receipt.tables.get(table, 0) + int(rows[0][0])
            return
        with self.session.transaction():
            for table, where, binds in statements:
                cur = self.session.run(
                    f"DELETE FROM {ddl.qualified(schema, table)} WHERE {where}",
                    binds,
                    kind="delete",
                    table=f"{schema}.{table}",
                )
                receipt.tables[table] = receipt.tables.get(table, 0) + int(cur.rowcount or 0)

    def _receipt(
        self,
        receipt: UserReceipt,
        request_id: str,
        action: str,
        reason: str | None,
        requested_at: datetime,
    ) -> None:
        schema = receipt.schema
        self.session.run(
            ddl.create_table(schema, DELETIONS, RECEIPT_COLUMNS), kind="ddl", table=DELETIONS
        )
        cols = ", ".join(ddl.quote(c) for c in RECEIPT_COLUMNS)
        try:
            self.session.run(
                f"INSERT INTO {ddl.qualified(schema, DELETIONS)} ({cols}) "
                "SELECT ?, ?, ?, ?, ?, PARSE_JSON(?), ?, CAST(? AS TIMESTAMP_TZ), "
                "CAST(? AS TIMESTAMP_TZ)",
                [
                    request_id,
                    action,
                    receipt.user_id,
                    receipt.linked_identifiers,
                    receipt.rows_deleted,
                    orjson.dumps(receipt.tables).decode(),
                    reason,
                    requested_at.isoformat(),
                    datetime.now(UTC).isoformat(),
                ],
                kind="insert",
                table=f"{schema}.{DELETIONS}",
            )
        except SegflowError:
            logger.error("deletion %s done but its receipt in %s failed", request_id, schema)
            raise
