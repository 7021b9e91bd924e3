"""Setting apart the records of a flush the warehouse refused for their data (a misfit).

The failed flush is loaded in parts (misfits.split) until each refused record stands alone in its
part; that record goes to the DLQ, read again from Kafka (deadletters.py), and its part loads
without rows, moving the offsets only. misfits.py has the rules; this is where they are carried
out, with the same load (and retries) as any flush.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from schemas.errors import FatalError, RecordError
from sinks.snowflake import misfits
from sinks.snowflake.batcher import FlushBatch
from sinks.snowflake.deadletters import DeadLetters
from sinks.snowflake.errors import WarehouseMisfitError
from sinks.snowflake.metrics import SinkMetrics

logger = logging.getLogger(__name__)


def isolate(
    batch: FlushBatch,
    error: WarehouseMisfitError,
    load: Callable[[FlushBatch], bool],
    dead_letters: DeadLetters,
    metrics: SinkMetrics,
) -> bool:
    """`batch` failed for some record's data: `load` it in parts until the records refused stand
    alone, send those to the DLQ and load the rest. True when all of it is in the warehouse (or
    the DLQ). `load` sets a part that fails for its data apart again (it calls back here)."""
    metrics.misfit_flushes.inc()
    metrics.flushes.labels("misfit").inc()
    parts = misfits.split(batch)
    if parts is None:
        if not batch.rows:
            raise FatalError(
                f"a flush with no rows was refused for its data, nothing committed: {error}"
            ) from error
        dead_letter(batch, error, dead_letters, metrics)
        parts = [misfits.offsets_only(batch)]
    else:
        logger.warning(
            "flush of %d records from %d partitions refused for its data; loading it in "
            "parts to set the refused records apart: %s",
            batch.records,
            len(batch.slices),
            error,
        )
    chained = len(batch.slices) == 1  # the parts share a partition's offset chain
    loaded = True
    for part in parts:
        if not load(part):
            loaded = False
            if chained:
                return False
    return loaded


def dead_letter(
    batch: FlushBatch, error: WarehouseMisfitError, dead_letters: DeadLetters, metrics: SinkMetrics
) -> None:
    """The one record of `batch` to the DLQ, as read from Kafka (the buffers hold rows)."""
    topic, partition, offset = misfits.refused_record(batch)
    metrics.misfits.labels(f"warehouse_{error.code}").inc()
    reason = RecordError(str(error), code=f"warehouse_misfit_{error.code}")
    dead_letters.send_refused(topic, partition, offset, reason.at(topic, partition, offset))
