"""Reverse ETL: a warehouse query's rows sent as identify or track calls to a Segment-compatible
API (api.segment.io by default, any host, our own edge included).

Modules: ``calls`` (rows -> calls, row hashes; pure), ``batches`` (Segment's request limits;
pure), ``client`` (HTTP with Basic auth, gzip, back-off on 429/5xx, Retry-After), ``state``
(``_segflow_reverse_etl_state`` in the warehouse: sync name, row key, row hash, synced_at),
``sync`` (one sync, or one every interval).

The echo marker
---------------
Every call carries ``context.segflow.reverse_etl = "<sync name>"`` and, by default,
``integrations = {"Segflow": false}`` (see schemas/markers.py). When the calls go to our own
edge, or to Segment relaying to us, they come back through the raw topics. They are not new user
activity: the warehouse already holds those facts. ``schemas.markers.reverse_etl_sync(context,
integrations)`` returns the sync name for such an event; the processors should drop (and count)
marked events before they reach the clean topics, and the sink should skip marked rows as a
second guard, so the event tables never load the echo.

Other decisions: the messageId of a call is derived from (sync, row key, row hash), so a row
version sent twice (a crash between the API's answer and the state update) is deduplicated
downstream; rows that vanish from the query are left alone (nothing is sent for them).
"""

from reverse_etl.settings import ReverseEtlSettings
from reverse_etl.sync import ReverseEtlMetrics, ReverseEtlSync, SyncReport

__all__ = ["ReverseEtlMetrics", "ReverseEtlSettings", "ReverseEtlSync", "SyncReport"]
