"""The DLQ contract: the headers a record carries on ``segment.dlq``, built and read in one place.

Every component that dead-letters a record (the processors, the Snowflake sink) builds its
headers with `dlq_headers`, so a DLQ entry looks the same whoever wrote it:

- the headers the record had at its origin (e.g. ``segflow-source``), kept in order, minus any
  earlier DLQ headers (a record dead-lettered twice carries only the latest reason and origin);
- ``segflow-error``: the reason, cut to `REASON_MAX_CHARS` characters. It must never quote a
  payload: callers pass reasons that name what failed, not what the record holds;
- ``segflow-error-code``: the error code (`RecordError.code`), what metrics and replay filter on;
- ``segflow-origin-topic`` / ``-partition`` / ``-offset``: where the record was read.

`parse_dlq_headers` reads them back (tests, replay tools). The header names themselves stay in
`schemas.topics`, beside the other headers every component shares.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from schemas.topics import (
    HEADER_ERROR,
    HEADER_ERROR_CODE,
    HEADER_ORIGIN_OFFSET,
    HEADER_ORIGIN_PARTITION,
    HEADER_ORIGIN_TOPIC,
)

#: the error code of a record whose processing raised something other than a RecordError
PROCESSING_FAILED = "processing_failed"


def failure_reason(exc: BaseException, component: str) -> str:
    """The DLQ reason of a record whose processing raised `exc` (not a RecordError) in
    `component`: the exception's type and a fixed message, never its text (which may quote the
    record)."""
    return f"processing failed: {type(exc).__name__} (see the {component}'s log)"


def log_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log `exc` for a record sent to the DLQ as `PROCESSING_FAILED` (`what`: which record
    failed at what): its type and stack frames, not its text (which may quote the record)."""
    logger.error(
        "%s: %s\n%s",
        what,
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
    )


# The reason header's length cap, in characters: a reason is a sentence, and an exception
# message that quotes a whole record must not make the DLQ entry twice as large.
REASON_MAX_CHARS = 1000

# The headers `dlq_headers` sets; a record's own headers with these names are replaced.
DLQ_HEADER_NAMES: frozenset[str] = frozenset(
    (
        HEADER_ERROR,
        HEADER_ERROR_CODE,
        HEADER_ORIGIN_TOPIC,
        HEADER_ORIGIN_PARTITION,
        HEADER_ORIGIN_OFFSET,
    )
)

Header = tuple[str, bytes]
# Headers as the Kafka clients hand them over: confluent-kafka's list of (key, value | None)
# pairs, aiokafka/Faust's sequence of pairs or a mapping, or None when a record has none.
RawHeaders = Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None


def origin_headers(raw: RawHeaders) -> list[Header]:
    """A record's own headers as (str, bytes) pairs, in order (a missing value becomes b"")."""
    if not raw:
        return []
    kind = type(raw)  # a consumed record's headers are a list or tuple: no ABC check for them
    listed = kind is list or kind is tuple or not isinstance(raw, Mapping)
    items: Iterable[tuple[str, bytes | None]] = raw if listed else raw.items()  # type: ignore[assignment,union-attr]
    return [
        (k if type(k) is str else str(k), v if type(v) is bytes else b"" if v is None else bytes(v))
        for k, v in items
    ]


def dlq_headers(
    reason: str,
    code: str,
    topic: str,
    partition: int,
    offset: int,
    origin: RawHeaders = None,
) -> list[Header]:
    """The headers of a record's DLQ copy: its `origin` headers (earlier DLQ headers dropped),
    then the reason (cut to `REASON_MAX_CHARS`), the error code and where it was read."""
    kept = [h for h in origin_headers(origin) if h[0] not in DLQ_HEADER_NAMES]
    kept.extend(
        (
            (HEADER_ERROR, reason[:REASON_MAX_CHARS].encode()),
            (HEADER_ERROR_CODE, code.encode()),
            (HEADER_ORIGIN_TOPIC, topic.encode()),
            (HEADER_ORIGIN_PARTITION, str(partition).encode()),
            (HEADER_ORIGIN_OFFSET, str(offset).encode()),
        )
    )
    return kept


@dataclass(frozen=True)
class DlqEntry:
    """What a DLQ record's headers say: why it failed, where it came from, its own headers."""

    reason: str
    code: str
    topic: str
    partition: int
    offset: int
    origin: list[Header]


def parse_dlq_headers(raw: RawHeaders) -> DlqEntry | None:
    """Read back what `dlq_headers` wrote; None if the headers are not a complete DLQ entry
    (a record that was not dead-lettered, or one whose origin headers are missing or garbled)."""
    pairs = origin_headers(raw)
    found = {k: v for k, v in pairs if k in DLQ_HEADER_NAMES}
    if len(found) != len(DLQ_HEADER_NAMES):
        return None
    try:
        partition = int(found[HEADER_ORIGIN_PARTITION])
        offset = int(found[HEADER_ORIGIN_OFFSET])
        return DlqEntry(
            reason=found[HEADER_ERROR].decode(),
            code=found[HEADER_ERROR_CODE].decode(),
            topic=found[HEADER_ORIGIN_TOPIC].decode(),
            partition=partition,
            offset=offset,
            origin=[h for h in pairs if h[0] not in DLQ_HEADER_NAMES],
        )
    except ValueError:  # a non-numeric partition or offset, or bytes that are not UTF-8
        return None
