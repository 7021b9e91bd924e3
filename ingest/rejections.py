"""Why the edge refuses a request: one exception carrying the HTTP answer, and per-item problems.

Every refusal has a machine-readable ``code`` (stable, documented in ingest/app.py) and a human
``message``. A batch refused for bad items lists each item's index, code, field and message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.errors import SegflowError


@dataclass(frozen=True, slots=True)
class ItemProblem:
    """One invalid event of a request: its index in the batch (0 for single calls) and why."""

    index: int
    code: str
    message: str
    field: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclass(eq=False)
class Rejection(SegflowError):
    """A refused request: the status, a code and message, and the bad items if any."""

    status: int
    code: str
    message: str
    problems: list[ItemProblem] = field(default_factory=list)
    retry_after_s: int | None = None

    def __post_init__(self) -> None:
        super().__init__(f"{self.status} {self.code}: {self.message}")

    def body(self) -> dict[str, Any]:
        """The JSON answer; Segment's SDKs read ``code`` and ``message``."""
        out: dict[str, Any] = {"success": False, "code": self.code, "message": self.message}
        if self.problems:
            out["errors"] = [p.as_json() for p in self.problems]
        return out


def bad_request(code: str, message: str, problems: list[ItemProblem] | None = None) -> Rejection:
    return Rejection(400, code, message, problems or [])
