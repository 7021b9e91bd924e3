"""The error tree every segflow package shares.

SegflowError
 +-- RetryableError   back off, commit nothing, try again
 +-- FatalError       stop the process with a non-zero exit code
 +-- ConfigError      a bad setting or rules file (a FatalError)
 +-- RecordError      one bad record: goes to the DLQ with its origin, the stream moves on
      +-- CodecError  bytes that are not a record we can read
"""

from __future__ import annotations


class SegflowError(Exception):
    """Root of every error segflow raises on purpose."""


class RetryableError(SegflowError):
    """A transient failure: roll back, back off and retry; nothing was committed."""


class FatalError(SegflowError):
    """A failure retrying cannot fix: the process stops with a non-zero exit code."""


class ConfigError(FatalError):
    """A setting or the rules file is invalid; the message names the field (and line)."""


class RecordError(SegflowError):
    """One record that cannot be processed. Carries where it came from and its raw bytes."""

    def __init__(
        self,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        raw: bytes | None = None,
        code: str = "invalid_record",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.raw = raw

    def at(self, topic: str, partition: int, offset: int) -> RecordError:
        """Return self with its origin filled in (the codec does not know where bytes came from)."""
        self.topic, self.partition, self.offset = topic, partition, offset
        return self

    def __str__(self) -> str:
        where = ""
        if self.topic is not None:
            where = f" at {self.topic}[{self.partition}]@{self.offset}"
        return f"{self.code}: {self.reason}{where}"


class CodecError(RecordError):
    """Bytes that do not decode as a segflow Avro record."""

    def __init__(self, reason: str, *, raw: bytes | None = None) -> None:
        super().__init__(reason, raw=raw, code="undecodable")
