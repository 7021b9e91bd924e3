"""Benchmarks: run by hand, print their figures (see each module's docstring)."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka.admin import AdminClient


def drop_topics(bootstrap: str, prefixes: Iterable[str]) -> int:
    """Delete the topics a benchmark made (names starting with one of `prefixes`), so runs do
    not pile partitions up on the local broker. Best effort; returns how many were deleted."""
    starts = tuple(prefixes)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    doomed = [t for t in admin.list_topics(timeout=10).topics if t.startswith(starts)]
    deleted = 0
    for name, fut in admin.delete_topics(doomed).items() if doomed else ():
        try:
            fut.result(timeout=30)
            deleted += 1
        except Exception as exc:  # deleting is best effort
            print(f"could not delete bench topic {name}: {exc}")
    return deleted
