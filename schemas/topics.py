"""Topic names of DESIGN.md, with an optional prefix (tests and multi-tenant clusters)."""

from __future__ import annotations

from dataclasses import dataclass

CALL_TYPES: tuple[str, ...] = ("track", "identify", "page", "screen", "group", "alias")

PartitionKey = tuple[str, int]
"""(topic, partition) as a plain key; confluent-kafka's TopicPartition is the client's object."""


@dataclass(frozen=True)
class Topics:
    """Every topic name segflow uses. `prefix` is prepended verbatim (e.g. "test123.")."""

    prefix: str = ""

    def raw(self, call_type: str) -> str:
        return f"{self.prefix}segment.raw.{call_type}"

    def clean(self, call_type: str) -> str:
        return f"{self.prefix}segment.events.{call_type}"

    @property
    def identity(self) -> str:
        return f"{self.prefix}segment.identity"

    @property
    def schema_changes(self) -> str:
        return f"{self.prefix}segment.schema-changes"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}segment.dlq"

    @property
    def suppressions(self) -> str:
        """Compacted list of suppressed (forgotten) users that the edge and the sink honour."""
        return f"{self.prefix}segment.suppressions"

    def all_raw(self) -> list[str]:
        return [self.raw(t) for t in CALL_TYPES]

    def all_clean(self) -> list[str]:
        return [self.clean(t) for t in CALL_TYPES]

    def call_type_of(self, topic: str) -> str:
        """The call type a raw or clean topic carries."""
        return topic.rsplit(".", 1)[-1]


# Record headers, shared by every component.
HEADER_SOURCE = "segflow-source"
HEADER_REQUEST_ID = "segflow-request-id"
HEADER_ERROR = "segflow-error"
HEADER_ERROR_CODE = "segflow-error-code"
HEADER_ORIGIN_TOPIC = "segflow-origin-topic"
HEADER_ORIGIN_PARTITION = "segflow-origin-partition"
HEADER_ORIGIN_OFFSET = "segflow-origin-offset"
HEADER_REPLAY = "segflow-replay"
