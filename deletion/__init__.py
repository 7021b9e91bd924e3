"""User deletion ("forget"): every row of a user, in every table of the source schemas, gone.

The source schemas are found in the warehouse (information_schema): every schema holding a
table segflow writes (identity_map, the call type tables, users, accounts, audit_log, its
_segflow_ bookkeeping), so sources the rules file no longer names, or never named (events of
an unknown source land in their own schema), are covered too. `--source` restricts it.

For each user id and each source schema:

1. the identifiers linked to the user are read from ``identity_map`` (rows whose
   canonical_user_id is the user);
2. the user is put on the suppression list (runtime.suppressions.publish_suppressions) with
   those identifiers, *before* anything is deleted, so the edge, backfills and the sink stop
   accepting the user's events while the rows go;
3. in one transaction per schema and user, every table loses the rows that belong to the user
   (:func:`deletion.rows.row_condition`) and ``_segflow_deletions`` gains a receipt: request
   id, user id, how many linked identifiers, rows deleted per table, when. The receipt keeps
   the user id (needed to audit and to lift the suppression) but never the linked identifiers'
   values;
4. the sinks may still hold rows decoded before the suppression: right after publishing,
   the topics' data ends were taken (:mod:`deletion.sink_progress`); once every sink group has
   loaded past them (bounded: a SinkBarrierError names what is behind), the deletion runs again
   and the late rows are added to the receipt. The sinks also drop suppressed users' rows as
   each batch is taken, so what they load after the barrier cannot be the user's.

``--unsuppress`` lifts the suppression (a tombstone) and records that in the receipts table;
deleted rows do not come back.

Which rows belong to the user: :mod:`deletion.rows`.
"""

from deletion.forgetter import Forgetter, Publish, SinkBarrier
from deletion.receipts import ForgetReport, UserReceipt
from deletion.settings import ForgetSettings
from deletion.sink_progress import SinkBarrierError

__all__ = [
    "ForgetReport",
    "ForgetSettings",
    "Forgetter",
    "Publish",
    "SinkBarrier",
    "SinkBarrierError",
    "UserReceipt",
]
