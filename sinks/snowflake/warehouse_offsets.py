"""The sink's offsets as the warehouse owns them (`_segflow_offsets`), for `segflow replay reset`.

The sink seeks to the offsets in the warehouse, not to the consumer group's Kafka offsets, so a
replay into the sink must move these rows as well. Each move is a compare-and-set from the
offset read when the plan was made: a sink that loaded meanwhile makes the reset fail instead of
being silently overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.errors import FatalError
from schemas.topics import PartitionKey
from sinks.snowflake.offsets import UNKNOWN, OffsetStore
from sinks.snowflake.session import WarehouseSession


class WarehouseOffsets:
    def __init__(self, session: WarehouseSession, control_schema: str, group: str) -> None:
        self.session = session
        self.store = OffsetStore(control_schema, group)
        self.group = group

    def _execute(self, sql: str, binds: Sequence[Any]) -> Any:
        return self.session.run(sql, binds, kind="offsets", table="_segflow_offsets")

    def read(self, keys: Sequence[PartitionKey]) -> dict[PartitionKey, int | None]:
        """The next offset the sink will load per partition; None where it has none."""
        self.session.run(self.store.create_sql(), kind="ddl", table="_segflow_offsets")
        self.store.upgrade(self._execute)
        stored = self.store.read(self._execute, list(keys))
        return {k: (None if v == UNKNOWN else v) for k, v in stored.items()}

    def move(self, moves: Sequence[tuple[str, int, int | None, int]]) -> None:
        """(topic, partition, expected or None, new) per partition, all or nothing."""
        if not moves:
            return
        self.store.upgrade(self._execute)  # DDL: before the transaction
        with self.session.transaction():
            self.store.ensure(self._execute, [(t, p) for t, p, _, _ in moves])
            cas = [(t, p, UNKNOWN if e is None else e, n) for t, p, e, n in moves]
            if not self.store.compare_and_set(self._execute, cas):
                raise FatalError(
                    f"the offsets of sink group {self.group} moved while resetting them: a sink "
                    "is running; stop it and retry (nothing was changed)"
                )
