"""The local Apache Kafka broker: one KRaft broker+controller run from the Maven Central jars.

The jars are fetched once with Maven (kafka-pom.xml next to this file) into `.cache/kafka/lib`.
Data lives in `var/kafka/data`, the log in `var/log/kafka.log`, the pid in `var/run/kafka.pid`.
A `Node` is one KRaft process; `kafka_cluster.py` runs three of them from the same code.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from runtime.services import process
from runtime.services.layout import ServicePaths
from runtime.services.process import ServiceError, ServiceStatus

logger = logging.getLogger(__name__)

NAME = "kafka"
KAFKA_VERSION = "4.1.1"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093
JAVA_OPTS = ("-Xmx1G", "-Xms256m", "-XX:+UseG1GC", "-Djava.awt.headless=true")
MAIN_CLASS = "kafka.Kafka"
_HERE = Path(__file__).resolve().parent
_POM = _HERE / "kafka-pom.xml"
_LOG4J2 = _HERE / "kafka-log4j2.properties"
_FETCH_TIMEOUT_SECONDS = 600


def lib_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """Where the Kafka jars are cached."""
    return ServicePaths.at(home).cache / "kafka" / "lib"


def fetch_jars(home: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """Download the Kafka broker, tools and log binding jars once; return their directory."""
    lib = lib_dir(home)
    marker = lib / f".kafka-{KAFKA_VERSION}"
    if marker.exists() and not force:
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("Maven (mvn) is not on PATH; it is needed once to fetch the Kafka jars")
    tmp = lib.with_name(lib.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    logger.info("fetching Kafka %s jars with Maven into %s", KAFKA_VERSION, lib)
    args = [mvn, "-q", "-B", "-f", str(_POM), "dependency:copy-dependencies"]
    args += [f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"]
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=_FETCH_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"Maven did not fetch the Kafka jars in {exc.timeout} s") from exc
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-2000:]
        raise ServiceError(f"Maven failed to fetch the Kafka jars ({' '.join(args)}):\n{tail}")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    marker.touch()
    return lib


def is_ready(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when a metadata request to `bootstrap` (host:port) is answered with a broker list."""
    from confluent_kafka.admin import AdminClient  # heavy import: only when probing

    host, _, port = bootstrap.rpartition(":")
    if not process.port_open(host or DEFAULT_HOST, int(port)):
        return False  # skip librdkafka's connection-refused noise
    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "socket.connection.setup.timeout.ms": int(timeout * 1000),
            "log_level": 0,  # no connection-refused lines on stderr while it starts
        }
    )
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:  # KafkaException: not ready yet
        return False
    return bool(metadata.brokers)


def broker_ready(address: str, node_id: int, timeout: float = 3.0) -> bool:
    """True when the broker at `address` answers metadata and lists itself (registered,
    unfenced): in a cluster a broker listening is not yet a broker serving."""
    from confluent_kafka.admin import AdminClient

    host, _, port = address.rpartition(":")
    if not process.port_open(host, int(port)):
        return False
    admin = AdminClient(
        {
            "bootstrap.servers": address,
            "socket.connection.setup.timeout.ms": int(timeout * 1000),
            "log_level": 0,
        }
    )
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:  # KafkaException: not ready yet
        return False
    return node_id in metadata.brokers


@dataclass(frozen=True)
class Node:
    """One KRaft node (broker and controller in one process) of a local cluster."""

    node_id: int
    host: str
    port: int
    controller_port: int
    name: str
    """Names its data directory (`var/<name>`) and its pid, lock and log files."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def voter(self) -> str:
        return f"{self.node_id}@{self.host}:{self.controller_port}"


def single_node(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    controller_port: int = DEFAULT_CONTROLLER_PORT,
) -> Node:
    """The one local broker of `make run` and the tests."""
    return Node(1, host, port, controller_port, NAME)


def node_properties(
    node: Node, voters: list[Node], data_dir: Path, num_partitions: int
) -> dict[str, str]:
    """The server.properties of `node` in a cluster of `voters` (itself included).

    One node: replication factor 1. Three or more: 3 replicas and `min.insync.replicas=2`
    for every topic, the internal ones too, as production clusters run.
    """
    host = node.host
    replicas = min(3, len(voters))
    min_isr = max(1, replicas - 1)
    internal_partitions = 12 if len(voters) == 1 else 6
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(v.voter for v in voters),
        "listeners": f"PLAINTEXT://{host}:{node.port},CONTROLLER://{host}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": str(num_partitions),
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": str(internal_partitions),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "transaction.state.log.num.partitions": str(internal_partitions),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "group.initial.rebalance.delay.ms": "0",
        # After a SIGKILL the new incarnation can register only once the old session expired
        # (default 9 s): a short session makes a killed broker come back in ~3 s.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "log.retention.hours": "168",
        "log.segment.bytes": str(256 * 1024 * 1024),
        "num.recovery.threads.per.data.dir": "2",
    }
    if len(voters) > 1:  # several JVMs on a laptop's cores: fewer threads each
        settings.update(
            {
                "num.network.threads": "2",
                "num.io.threads": "2",
                "num.replica.fetchers": "1",
                "background.threads": "2",
                "log.cleaner.threads": "1",
            }
        )
    return settings


def write_properties(paths: ServicePaths, settings: dict[str, str], name: str) -> Path:
    props = paths.data_dir(name) / "server.properties"
    props.parent.mkdir(parents=True, exist_ok=True)
    props.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    return props


def node_service(node: Node, *, cluster: bool) -> process.Service:
    """`node` as a process: in a cluster it is ready once it is a registered broker."""
    if cluster:
        return process.Service(
            node.name,
            MAIN_CLASS,
            node.host,
            (node.port, node.controller_port),
            lambda: broker_ready(node.address, node.node_id),
        )
    return process.Service(
        node.name,
        MAIN_CLASS,
        node.host,
        (node.port, node.controller_port),
        lambda: is_ready(node.address),
    )


def node_launcher(
    paths: ServicePaths,
    node: Node,
    voters: list[Node],
    *,
    home: str | os.PathLike[str] | None,
    num_partitions: int,
    cluster_id: str | None = None,
    java_opts: tuple[str, ...] = JAVA_OPTS,
) -> process.Launch:
    """Prepares `node` (jars, properties, formatted storage) and returns its command line."""

    def prepare() -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise ServiceError("java is not on PATH; Kafka needs Java 17")
        lib = fetch_jars(home)
        data_dir = paths.data_dir(node.name) / "data"
        props = write_properties(
            paths, node_properties(node, voters, data_dir, num_partitions), node.name
        )
        log_file = paths.log_file(node.name)
        _format_storage(java, lib, props, data_dir, log_file, cluster_id or new_cluster_id())
        args = [java, *java_opts, f"-Dlog4j2.configurationFile={_LOG4J2}"]
        return [*args, "-cp", f"{lib}/*", MAIN_CLASS, str(props)]

    return prepare


def status(
    home: str | os.PathLike[str] | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    var_dir: str | os.PathLike[str] | None = None,
) -> ServiceStatus:
    """Is our broker (or any broker on host:port) running and answering metadata requests?"""
    node = single_node(host, port)
    return process.status(ServicePaths.at(home, var_dir), node_service(node, cluster=False))


def external_status(bootstrap: str) -> ServiceStatus:
    """Status of a broker run by someone else (SEGFLOW_KAFKA_BOOTSTRAP)."""
    ready = is_ready(bootstrap)
    return ServiceStatus(
        NAME, running=ready, pid=None, address=bootstrap, ready=ready, managed=False
    )


def start(
    home: str | os.PathLike[str] | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    controller_port: int = DEFAULT_CONTROLLER_PORT,
    var_dir: str | os.PathLike[str] | None = None,
    num_partitions: int = 12,
    timeout: float = 120.0,
) -> bool:
    """Start the broker unless one answers on host:port already; wait until it is ready.

    Returns True when this call started it, False when it was already running.
    Raises ServiceError (naming the log file) when it does not come up in `timeout` seconds.
    """
    paths = ServicePaths.at(home, var_dir)
    node = single_node(host, port, controller_port)
    prepare = node_launcher(paths, node, [node], home=home, num_partitions=num_partitions)
    return process.start(paths, node_service(node, cluster=False), prepare, timeout=timeout)


def stop(
    home: str | os.PathLike[str] | None = None,
    *,
    var_dir: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> bool:
    """Stop our broker (SIGTERM, then SIGKILL after `timeout`); False if it was not running."""
    paths = ServicePaths.at(home, var_dir)
    return process.stop(paths, node_service(single_node(), cluster=False), timeout=timeout)


def kill(
    home: str | os.PathLike[str] | None = None, *, var_dir: str | os.PathLike[str] | None = None
) -> bool:
    """SIGKILL our broker at once (fault tests); `start()` recovers its log afterwards."""
    return process.end(ServicePaths.at(home, var_dir), NAME, MAIN_CLASS, process.kill)


def cluster_id_of(data_dir: Path) -> str | None:
    """The cluster id a formatted KRaft data directory belongs to, else None."""
    try:
        text = (data_dir / "meta.properties").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    return None


def _format_storage(
    java: str, lib: Path, props: Path, data_dir: Path, log_file: Path, cluster_id: str
) -> None:
    """Format the KRaft storage on first start (a static quorum: controller.quorum.voters)."""
    if (data_dir / "meta.properties").exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [java, f"-Dlog4j2.configurationFile={_LOG4J2}", "-cp", f"{lib}/*"]
    args += ["kafka.tools.StorageTool", "format", "-c", str(props), f"--cluster-id={cluster_id}"]
    args += ["--ignore-formatted"]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        result = subprocess.run(
            args, stdout=log, stderr=subprocess.STDOUT, timeout=120, check=False
        )
    if result.returncode != 0:
        raise ServiceError(f"formatting Kafka storage in {data_dir} failed; see {log_file}")
    logger.info("formatted Kafka storage in %s (cluster id %s)", data_dir, cluster_id)


def new_cluster_id() -> str:
    """A Kafka Uuid string: 16 random bytes, URL-safe base64, unpadded, not starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid
