"""What a deletion did: a receipt per user and schema (kept in ``_segflow_deletions``) and the
report `segflow forget` prints. The receipt keeps the user id (needed to audit and to lift the
suppression) but never the linked identifiers' values."""

from __future__ import annotations

from dataclasses import dataclass, field

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
