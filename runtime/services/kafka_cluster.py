"""A local Kafka cluster: three KRaft nodes from the same jars as the single broker.

Each node is broker and controller at once (combined mode: three JVMs, the quorum of three
voters survives one node down; with two down the quorum is lost, the last broker can no
longer shrink its in-sync sets, and `acks=all` writes are refused until a node returns).
Node i listens on 127.0.0.1:<base_port + i - 1> (controller: <base_port + 100 + i - 1>), keeps
its data in `var/kafka-<i>/` and its log in `var/log/kafka-<i>.log`. Every topic gets 3
replicas and `min.insync.replicas=2`. The single broker (`kafka.py`, 127.0.0.1:9092) stays
the default of `make run`; the cluster runs beside it.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from runtime.services import kafka, process
from runtime.services.layout import ServicePaths
from runtime.services.process import ServiceError, ServiceStatus

logger = logging.getLogger(__name__)

DEFAULT_BROKERS = 3
DEFAULT_BASE_PORT = 19092
# Small heaps and C1 only: three JVMs share a laptop's (or a CI runner's) two cores.
JAVA_OPTS = (
    "-Xmx256m",
    "-Xms64m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)
_CONTROLLER_OFFSET = 100


def nodes(
    brokers: int = DEFAULT_BROKERS,
    host: str = kafka.DEFAULT_HOST,
    base_port: int = DEFAULT_BASE_PORT,
) -> list[kafka.Node]:
    """The nodes of a local cluster on consecutive ports from `base_port`."""
    return [
        kafka.Node(i, host, base_port + i - 1, base_port + _CONTROLLER_OFFSET + i - 1, f"kafka-{i}")
        for i in range(1, brokers + 1)
    ]


@dataclass(frozen=True)
class KafkaCluster:
    """A local multi-broker cluster: start, stop, kill or restart it whole or node by node."""

    paths: ServicePaths
    nodes: tuple[kafka.Node, ...]
    home: str | os.PathLike[str] | None = None
    num_partitions: int = 12

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def node(self, node_id: int) -> kafka.Node:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise ServiceError(f"the cluster has no node {node_id}")

    def _service(self, node: kafka.Node) -> process.Service:
        return kafka.node_service(node, cluster=True)

    def _cluster_id(self) -> str | None:
        """The id the formatted nodes share (a wiped node rejoins under it)."""
        for n in self.nodes:
            found = kafka.cluster_id_of(self.paths.data_dir(n.name) / "data")
            if found:
                return found
        return None

    def _launch(self, node: kafka.Node, cluster_id: str) -> tuple[int | None, bool]:
        prepare = kafka.node_launcher(
            self.paths,
            node,
            list(self.nodes),
            home=self.home,
            num_partitions=self.num_partitions,
            cluster_id=cluster_id,
            java_opts=JAVA_OPTS,
        )
        return process.launch(self.paths, self._service(node), prepare)

    def start(self, timeout: float = 180.0) -> bool:
        """Start every node not running and wait until all are registered brokers.

        The nodes are spawned together (a node alone has no controller quorum, so it cannot
        become ready). True when this call started at least one.
        """
        cluster_id = self._cluster_id() or kafka.new_cluster_id()
        waiting: list[tuple[kafka.Node, int, bool]] = []
        with process.lock(self.paths.lock_file("kafka-cluster")):
            for n in self.nodes:
                pid, started = self._launch(n, cluster_id)
                if pid is not None:
                    waiting.append((n, pid, started))
            deadline = time.monotonic() + timeout
            try:
                for n, pid, _ in waiting:
                    left = max(1.0, deadline - time.monotonic())
                    process.await_ready(self.paths, self._service(n), pid, timeout=left)
            except ServiceError:
                for n, _, started in waiting:
                    if started:
                        process.end(self.paths, n.name, kafka.MAIN_CLASS, process.kill)
                raise
        if waiting:
            logger.info("Kafka cluster ready on %s", self.bootstrap)
        return any(started for _, _, started in waiting)

    def start_node(self, node_id: int, timeout: float = 120.0) -> bool:
        """Start one node (after a stop or kill) and wait until it is a registered broker."""
        node = self.node(node_id)
        cluster_id = self._cluster_id() or kafka.new_cluster_id()
        pid, started = self._launch(node, cluster_id)
        if pid is not None:
            process.await_ready(self.paths, self._service(node), pid, timeout=timeout)
        return started

    def stop_node(self, node_id: int, timeout: float = 60.0) -> bool:
        """SIGTERM one node (a controlled shutdown: its leaderships move first)."""
        return process.stop(self.paths, self._service(self.node(node_id)), timeout=timeout)

    def kill_node(self, node_id: int) -> bool:
        """SIGKILL one node at once."""
        return process.end(self.paths, self.node(node_id).name, kafka.MAIN_CLASS, process.kill)

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop every node at once; False when none was running.

        All at once: stopped one by one, the last node waits for a controller quorum that
        left with the others, until it is killed."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            stopped = list(pool.map(lambda n: self.stop_node(n.node_id, timeout), self.nodes))
        return any(stopped)

    def status(self) -> list[ServiceStatus]:
        return [process.status(self.paths, self._service(n)) for n in self.nodes]

    def running(self) -> bool:
        """True when one of our nodes runs (their pid files name live processes)."""
        return any(
            process.read_pid(self.paths.pid_file(n.name), kafka.MAIN_CLASS) for n in self.nodes
        )


def cluster(
    home: str | os.PathLike[str] | None = None,
    *,
    brokers: int = DEFAULT_BROKERS,
    host: str = kafka.DEFAULT_HOST,
    base_port: int = DEFAULT_BASE_PORT,
    var_dir: str | os.PathLike[str] | None = None,
    num_partitions: int = 12,
) -> KafkaCluster:
    """The local cluster of `brokers` nodes (its data under `var_dir`, default `var/`)."""
    if brokers < 2:
        raise ServiceError("a cluster has 2 or more brokers; one broker is `kafka.start()`")
    return KafkaCluster(
        ServicePaths.at(home, var_dir),
        tuple(nodes(brokers, host, base_port)),
        home=home,
        num_partitions=num_partitions,
    )


def out_of_sync(bootstrap: str, brokers: int, timeout: float = 5.0) -> list[str]:
    """What keeps the cluster from being fully in sync, one line each (empty: in sync):
    a broker missing from the metadata, a partition without leader or with a replica out of
    its in-sync set. Internal topics count too (the group and transaction coordinators)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception as exc:  # KafkaException: no broker answers
        return [f"no metadata: {exc}"]
    problems = []
    if len(metadata.brokers) < brokers:
        problems.append(f"{len(metadata.brokers)} of {brokers} brokers registered")
    for name, topic in sorted(metadata.topics.items()):
        for pid, part in sorted(topic.partitions.items()):
            if part.leader < 0:
                problems.append(f"{name}[{pid}]: no leader")
            elif set(part.isrs) != set(part.replicas):
                problems.append(f"{name}[{pid}]: in sync {part.isrs} of {part.replicas}")
    return problems


def wait_in_sync(bootstrap: str, brokers: int, timeout: float = 120.0) -> float:
    """Poll until `out_of_sync` is empty; the seconds it took. ServiceError at the deadline."""
    started = time.monotonic()
    while True:
        problems = out_of_sync(bootstrap, brokers)
        if not problems:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            shown = "; ".join(problems[:5])
            raise ServiceError(f"cluster {bootstrap} not in sync after {timeout:.0f} s: {shown}")
        time.sleep(0.5)


def leaders(bootstrap: str, topics: list[str], timeout: float = 10.0) -> dict[int, int]:
    """How many partitions of `topics` each broker leads (node id -> count)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    metadata = admin.list_topics(timeout=timeout)
    counts: dict[int, int] = {}
    for name in topics:
        topic = metadata.topics.get(name)
        if topic is None:
            continue
        for part in topic.partitions.values():
            if part.leader >= 0:
                counts[part.leader] = counts.get(part.leader, 0) + 1
    return counts
