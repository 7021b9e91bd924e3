"""The deletion itself: find the schemas and the user's linked identifiers, publish the
suppression, delete in one transaction per schema and user, wait for the sinks, delete again,
keep the receipts (the whole sequence: the package's docstring)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import orjson

from deletion.receipts import DELETIONS, RECEIPT_COLUMNS, ForgetReport, UserReceipt
from deletion.rows import (
    IN_CHUNK,
    USER_ID_TYPE,
    deletable_tables,
    row_condition,
    source_schemas,
)
from schemas.errors import SegflowError
from sinks.snowflake import ddl
from sinks.snowflake.session import WarehouseSession
from sinks.snowflake.tables import IDENTITY_MAP

logger = logging.getLogger(__name__)


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
    ) -> list[tuple[str, str]]:
        """(identifier, identifier type) of every identifier other than the user id that
        identity_map resolves to the user: anonymous ids, and older user ids an alias linked."""
        if IDENTITY_MAP not in layout:
            return []
        rows = self.session.fetch_all(
            f'SELECT DISTINCT "IDENTIFIER", "IDENTIFIER_TYPE" FROM '
            f'{ddl.qualified(schema, IDENTITY_MAP)} WHERE "CANONICAL_USER_ID" = ?',
            [user_id],
        )
        return sorted(
            {
                (str(r[0]), str(r[1]))
                for r in rows
                if r[0] is not None and not (str(r[0]) == user_id and r[1] == USER_ID_TYPE)
            }
        )

    # -- the operations ----------------------------------------------------------------------
    def forget(
        self, user_ids: Sequence[str], *, reason: str | None = None, dry_run: bool = False
    ) -> ForgetReport:
        request_id = f"forget-{uuid.uuid4()}"
        report = ForgetReport(request_id, dry_run=dry_run)
        requested_at = datetime.now(UTC)
        layouts = {s: self.layout(s) for s in self.schemas}
        layouts = {s: lay for s, lay in layouts.items() if lay}
        linked: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for schema, lay in layouts.items():
            for user_id in user_ids:
                linked[(schema, user_id)] = self.linked_identifiers(schema, user_id, lay)
        if not dry_run:
            identifiers: dict[str, set[str]] = {u: set() for u in user_ids}
            for (_schema, user_id), ids in linked.items():
                identifiers[user_id].update(i for i, _type in ids)
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
        linked: Mapping[tuple[str, str], list[tuple[str, str]]],
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
        linked: Sequence[tuple[str, str]],
        dry_run: bool,
    ) -> None:
        anonymous_ids = [i for i, t in linked if t != USER_ID_TYPE]
        aliased_ids = [i for i, t in linked if t == USER_ID_TYPE]
        statements: list[tuple[str, str, list[str]]] = []
        for table in deletable_tables(layout):
            for start in range(0, max(1, len(anonymous_ids), len(aliased_ids)), IN_CHUNK):
                found = row_condition(
                    table,
                    layout[table],
                    receipt.user_id,
                    anonymous_ids[start : start + IN_CHUNK],
                    aliased_ids[start : start + IN_CHUNK],
                )
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
