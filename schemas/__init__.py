"""The event contract: Segment models, Avro schemas and codec, topic names, warehouse naming."""

from schemas.codec import AvroCodec
from schemas.errors import (
    CodecError,
    ConfigError,
    FatalError,
    RecordError,
    RetryableError,
    SegflowError,
)
from schemas.topics import CALL_TYPES, Topics

__all__ = [
    "CALL_TYPES",
    "AvroCodec",
    "CodecError",
    "ConfigError",
    "FatalError",
    "RecordError",
    "RetryableError",
    "SegflowError",
    "Topics",
]
