"""The local cluster's layout and broker configuration (pure; no JVM started)."""

from __future__ import annotations

from pathlib import Path

from runtime.services import kafka, kafka_cluster


def test_three_nodes_on_distinct_ports_and_directories() -> None:
    nodes = kafka_cluster.nodes(3, base_port=19092)
    assert [n.address for n in nodes] == ["127.0.0.1:19092", "127.0.0.1:19093", "127.0.0.1:19094"]
    ports = [p for n in nodes for p in (n.port, n.controller_port)]
    assert len(set(ports)) == 6
    assert len({n.name for n in nodes}) == 3 and kafka.NAME not in {n.name for n in nodes}
    cluster = kafka_cluster.cluster(brokers=3, base_port=19092, var_dir="/tmp/x")
    assert cluster.bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"


def test_cluster_nodes_replicate_three_ways_with_two_in_sync() -> None:
    nodes = kafka_cluster.nodes(3, base_port=19092)
    props = kafka.node_properties(nodes[1], nodes, Path("/d"), 12)
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:19192,2@127.0.0.1:19193,3@127.0.0.1:19194"
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19093,CONTROLLER://127.0.0.1:19193"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ):
        assert props[key] == "3", key
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"


def test_the_single_broker_keeps_replication_one() -> None:
    node = kafka.single_node()
    props = kafka.node_properties(node, [node], Path("/d"), 12)
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["default.replication.factor"] == props["min.insync.replicas"] == "1"
    assert props["offsets.topic.num.partitions"] == "12"


def test_cluster_id_read_back_from_a_formatted_directory(tmp_path: Path) -> None:
    assert kafka.cluster_id_of(tmp_path) is None
    (tmp_path / "meta.properties").write_text("version=1\ncluster.id=abc\nnode.id=2\n")
    assert kafka.cluster_id_of(tmp_path) == "abc"
