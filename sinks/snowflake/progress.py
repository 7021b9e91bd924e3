"""Where each partition of the sink stands: one object per partition, named transitions.

Pure: no Kafka, no warehouse. The consumer (consumer.py, flushing.py) calls a transition at each
step a partition takes; a transition the state does not allow is a bug of the sink and raises
`ProgressError` at once, instead of letting a partition's offsets drift silently (as the
Snowflake connector's PartitionOffsetTracker keeps each channel's offsets in one object).

A partition's life::

    assign(stored) --> FETCHING --hand_to_flush--> (in flight) --loaded--> FETCHING
          | stored None    |  abandon() (in a callback)      reseek() (now)
          v                v                                      |
        PARKED           RESEEK <---------------------------------'
                           '--resume(stored)--> FETCHING (or PARKED while stopping)
    any assigned state --revoke()--> REVOKED, --lose()--> LOST (released: never loaded again)

- ``stored`` is the next offset the warehouse holds for the partition (-1: none yet), as read at
  assignment or re-seek and moved by every flush this instance committed (`loaded`): a flush must
  expect exactly it, which is the compare-and-set the warehouse checks too.
- ``in_flight`` is where the flush holding the partition's records will leave it (`hand_to_flush`);
  a flush loaded in parts (a misfit split) moves ``stored`` part by part up to it.
- ``resought``: the partition was re-read from the warehouse offsets during the current consume()
  batch, so the records already fetched for it are stale (`new_poll` clears it).
- RESEEK: its buffers do not continue from ``stored`` any more (the flush holding them failed in a
  rebalance callback, or was fenced there); it is re-read from the warehouse offsets as soon as the
  warehouse connection may be used, and nothing of it is loaded until then.
- PARKED: assigned while stopping, offsets not read: what Kafka hands over is not buffered.
- REVOKED / LOST: released; a batch still holding its records drops them (`Progress.released`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from schemas.errors import FatalError
from schemas.topics import PartitionKey


class PartitionState(Enum):
    FETCHING = "fetching"
    """Assigned, read from the stored offset; records are buffered and loaded."""
    PARKED = "parked"
    """Assigned while stopping, offsets unread: records are not buffered."""
    RESEEK = "reseek"
    """Assigned, buffers abandoned: to be re-read from the warehouse offsets."""
    REVOKED = "revoked"
    """Given back in a rebalance: nothing of it is loaded any more."""
    LOST = "lost"
    """Taken away (session lost): another instance may own it already."""


ASSIGNED = frozenset({PartitionState.FETCHING, PartitionState.PARKED, PartitionState.RESEEK})


class ProgressError(FatalError):
    """A transition a partition's state does not allow: a bug of the sink, not of the data."""


@dataclass
class PartitionProgress:
    topic: str
    partition: int
    state: PartitionState
    stored: int | None
    """The next offset stored in the warehouse (-1: none yet); None while it was never read."""
    in_flight: int | None = None
    """The offset the flush holding this partition's records moves it to."""
    resought: bool = False
    """Re-read during the current consume() batch: records fetched before are stale."""

    @classmethod
    def assign(cls, topic: str, partition: int, stored: int | None) -> PartitionProgress:
        """A newly assigned partition, starting at `stored` (None: parked, not read)."""
        state = PartitionState.PARKED if stored is None else PartitionState.FETCHING
        return cls(topic, partition, state, stored)

    # -- queries -----------------------------------------------------------------------------
    @property
    def key(self) -> PartitionKey:
        return (self.topic, self.partition)

    @property
    def assigned(self) -> bool:
        return self.state in ASSIGNED

    @property
    def released(self) -> bool:
        return not self.assigned

    @property
    def loadable(self) -> bool:
        """Its buffers continue from the stored offset, so a flush may take them."""
        return self.state is PartitionState.FETCHING

    # -- transitions -------------------------------------------------------------------------
    def hand_to_flush(self, expected: int, new: int) -> None:
        """Its buffered records, `expected` -> `new`, go to a flush."""
        self._require("hand to a flush", PartitionState.FETCHING)
        if self.in_flight is not None:
            self._refuse(f"hand to a flush while a flush to {self.in_flight} holds it")
        if expected != self.stored or new <= expected:
            self._refuse(f"hand {expected} -> {new} to a flush; the warehouse holds {self.stored}")
        self.in_flight = new

    def loaded(self, expected: int, new: int) -> None:
        """The warehouse committed the move `expected` -> `new` (all or part of the flush)."""
        self._require("mark loaded", PartitionState.FETCHING)
        if (
            self.in_flight is None
            or expected != self.stored
            or not expected < new <= self.in_flight
        ):
            self._refuse(
                f"mark {expected} -> {new} loaded; stored {self.stored}, in flight {self.in_flight}"
            )
        self.stored = new
        if new == self.in_flight:
            self.in_flight = None

    def abandon(self) -> None:
        """The flush holding its records failed where it cannot be retried (a rebalance
        callback), or was fenced there: re-read it from the warehouse offsets later."""
        self._require("abandon", *ASSIGNED)
        self.state = PartitionState.RESEEK
        self.in_flight = None

    def reseek(self) -> None:
        """Re-read it now: unassigned from Kafka, its buffers dropped, its offsets read again."""
        self._require("re-seek", *ASSIGNED)
        self.state = PartitionState.RESEEK
        self.in_flight = None

    def resume(self, stored: int | None) -> None:
        """Assigned again after a re-seek, at `stored` (None: stopping, parked)."""
        self._require("resume", PartitionState.RESEEK)
        self.state = PartitionState.PARKED if stored is None else PartitionState.FETCHING
        self.stored = stored
        self.resought = True

    def revoke(self) -> None:
        self._require("revoke", *ASSIGNED)
        self.state = PartitionState.REVOKED
        self.in_flight = None

    def lose(self) -> None:
        self._require("lose", *ASSIGNED)
        self.state = PartitionState.LOST
        self.in_flight = None

    def new_poll(self) -> None:
        self.resought = False

    def _require(self, what: str, *states: PartitionState) -> None:
        if self.state not in states:
            self._refuse(f"{what} while {self.state.value}")

    def _refuse(self, what: str) -> None:
        raise ProgressError(f"{self.topic}[{self.partition}]: cannot {what}")


class Progress:
    """The progress of every partition this instance knows: assigned, or released since the
    last flush began (a batch may still hold records of those)."""

    def __init__(self) -> None:
        self._parts: dict[PartitionKey, PartitionProgress] = {}

    def get(self, tp: PartitionKey) -> PartitionProgress | None:
        return self._parts.get(tp)

    def __getitem__(self, tp: PartitionKey) -> PartitionProgress:
        return self._parts[tp]

    def assign(self, tp: PartitionKey, stored: int | None) -> PartitionProgress:
        """A partition Kafka assigned (replacing what was known of an earlier ownership)."""
        old = self._parts.get(tp)
        if old is not None and old.assigned:
            old._refuse("assign, it is assigned already")
        part = self._parts[tp] = PartitionProgress.assign(tp[0], tp[1], stored)
        return part

    def release(self, tp: PartitionKey, state: PartitionState) -> None:
        """Revoked or lost (`state`). A partition this instance did not hold is recorded as
        released too: a batch must not load it."""
        part = self._parts.get(tp)
        if part is None or part.released:
            self._parts[tp] = PartitionProgress(tp[0], tp[1], state, None)
        elif state is PartitionState.LOST:
            part.lose()
        else:
            part.revoke()

    def forget(self, tp: PartitionKey) -> None:
        self._parts.pop(tp, None)

    def forget_released(self) -> None:
        """A new flush begins: no batch holds records of released partitions any more."""
        for tp in [tp for tp, p in self._parts.items() if p.released]:
            del self._parts[tp]

    def new_poll(self) -> None:
        for part in self._parts.values():
            part.resought = False

    def assigned(self) -> set[PartitionKey]:
        return {tp for tp, p in self._parts.items() if p.assigned}

    def released(self) -> set[PartitionKey]:
        return {tp for tp, p in self._parts.items() if p.released}

    def loadable(self, tps: Iterable[PartitionKey]) -> set[PartitionKey]:
        """Those of `tps` whose buffers a flush may take."""
        return {tp for tp in tps if (p := self._parts.get(tp)) is not None and p.loadable}

    def pending_reseeks(self) -> list[PartitionKey]:
        """Assigned partitions waiting to be re-read from the warehouse offsets, in order."""
        return sorted(tp for tp, p in self._parts.items() if p.state is PartitionState.RESEEK)

    def skips(self, tp: PartitionKey) -> bool:
        """True when records fetched for `tp` are stale (re-sought during this batch)."""
        part = self._parts.get(tp)
        return part is not None and part.resought

    def hand_to_flush(self, moves: Iterable[tuple[str, int, int, int]]) -> None:
        for topic, partition, expected, new in moves:
            self._known((topic, partition), "hand to a flush").hand_to_flush(expected, new)

    def loaded(self, moves: Iterable[tuple[str, int, int, int]]) -> None:
        """A flush committed these moves; a partition released meanwhile is left as it is."""
        for topic, partition, expected, new in moves:
            part = self._parts.get((topic, partition))
            if part is not None and part.assigned:
                part.loaded(expected, new)

    def abandon(self, tps: Iterable[PartitionKey]) -> None:
        """The assigned ones of `tps` wait to be re-read (see `PartitionProgress.abandon`)."""
        for tp in tps:
            part = self._parts.get(tp)
            if part is not None and part.assigned:
                part.abandon()

    def _known(self, tp: PartitionKey, what: str) -> PartitionProgress:
        part = self._parts.get(tp)
        if part is None:
            raise ProgressError(f"{tp[0]}[{tp[1]}]: cannot {what}, it was never assigned")
        return part
