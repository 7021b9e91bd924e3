"""Lag arithmetic as kafka-consumer-groups.sh --describe does it, and the admin calls behind it."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from observe.lag import GroupLag, PartitionLag, partition_lags, read_group_lag


def test_lag_is_end_minus_committed_and_unknown_without_a_commit() -> None:
    parts = partition_lags(
        committed={("t", 0): 5, ("t", 1): -1001},
        assigned={("t", 1): "m1", ("t", 2): "m1"},
        ends={("t", 0): 12, ("t", 1): 7, ("t", 2): 3},
    )
    assert [(p.partition, p.committed, p.end, p.lag, p.member) for p in parts] == [
        (0, 5, 12, 7, None),
        (1, None, 7, None, "m1"),  # OFFSET_INVALID: no commit, lag "-" as the tool prints
        (2, None, 3, None, "m1"),
    ]


def test_totals_leave_out_unknown_lag_and_count_it_apart() -> None:
    group = GroupLag(
        "g",
        "stable",
        1,
        (
            PartitionLag("a", 0, 10, 15),
            PartitionLag("a", 1, None, 9),
            PartitionLag("b", 0, 0, 4),
        ),
    )
    assert group.total == 9
    assert group.uncommitted == 1
    assert group.by_topic() == {"a": 5, "b": 4}
    as_json = group.to_dict()
    assert as_json["lag"] == 9 and as_json["uncommitted_partitions"] == 1
    assert [t["lag"] for t in as_json["topics"]] == [5, 4]
    assert as_json["topics"][0]["partitions"][1] == {
        "partition": 1,
        "committed": None,
        "end": 9,
        "lag": None,
        "member": None,
    }


def test_a_committed_offset_past_the_end_gives_the_tools_negative_lag() -> None:
    assert PartitionLag("t", 0, 12, 10).lag == -2


def _done(value: Any = None, error: BaseException | None = None) -> Future[Any]:
    f: Future[Any] = Future()
    if error is not None:
        f.set_exception(error)
    else:
        f.set_result(value)
    return f


def test_read_group_lag_joins_commits_assignments_and_end_offsets() -> None:
    admin = MagicMock(spec_set=AdminClient)
    member = SimpleNamespace(
        member_id="m-1", assignment=SimpleNamespace(topic_partitions=[TopicPartition("t", 1)])
    )
    admin.describe_consumer_groups.return_value = {
        "g": _done(SimpleNamespace(state=ConsumerGroupState.STABLE, members=[member]))
    }
    admin.list_consumer_group_offsets.return_value = {
        "g": _done(SimpleNamespace(topic_partitions=[TopicPartition("t", 0, 40)]))
    }
    admin.list_offsets.side_effect = lambda request, **kw: {
        tp: _done(SimpleNamespace(offset={0: 100, 1: 8}[tp.partition])) for tp in request
    }
    lag = read_group_lag(admin, "g", 1.0)
    assert (lag.state, lag.members, lag.total, lag.uncommitted) == ("stable", 1, 60, 1)
    assert [(p.partition, p.lag) for p in lag.partitions] == [(0, 60), (1, None)]


def test_a_group_kafka_does_not_know_is_missing() -> None:
    admin = MagicMock(spec_set=AdminClient)
    admin.describe_consumer_groups.return_value = {
        "g": _done(error=KafkaException(KafkaError(KafkaError.GROUP_ID_NOT_FOUND)))
    }
    assert read_group_lag(admin, "g", 1.0) == GroupLag("g", "missing", 0)
    admin.describe_consumer_groups.return_value = {
        "g": _done(SimpleNamespace(state=ConsumerGroupState.DEAD, members=[]))
    }
    admin.list_consumer_group_offsets.return_value = {
        "g": _done(SimpleNamespace(topic_partitions=[]))
    }
    assert read_group_lag(admin, "g", 1.0).state == "missing"
    admin.list_offsets.assert_not_called()
