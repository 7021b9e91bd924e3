"""The local Apache Kafka broker: one KRaft broker+controller run from the Maven Central jars.

The jars are fetched once with Maven (kafka-pom.xml next to this file) into `.cache/kafka/lib`.
Data lives in `var/kafka/data`, the log in `var/log/kafka.log`, the pid in `var/run/kafka.pid`.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import uuid
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
_MAIN_CLASS = "kafka.Kafka"
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


def status(
    home: str | os.PathLike[str] | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    var_dir: str | os.PathLike[str] | None = None,
) -> ServiceStatus:
    """Is our broker (or any broker on host:port) running and answering metadata requests?"""
    paths = ServicePaths.at(home, var_dir)
    pid = process.read_pid(paths.pid_file(NAME), _MAIN_CLASS)
    address = f"{host}:{port}"
    ready = is_ready(address) if pid or process.port_open(host, port) else False
    return ServiceStatus(
        name=NAME,
        running=pid is not None or ready,
        pid=pid,
        address=address,
        ready=ready,
        managed=pid is not None,
    )


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
    address = f"{host}:{port}"
    with process.lock(paths.lock_file(NAME)):
        current = status(home, host=host, port=port, var_dir=var_dir)
        log_file = paths.log_file(NAME)
        if current.ready:
            if not current.managed:
                logger.info(
                    "a Kafka broker not started by segflow answers on %s; using it", address
                )
            return False
        if current.pid is not None:  # ours, still starting (or hung)
            process.wait_ready(
                NAME, current.pid, lambda: is_ready(address), timeout=timeout, log_file=log_file
            )
            return False
        for p in (port, controller_port):
            if process.port_open(host, p):
                raise ServiceError(f"{host}:{p} is taken by another program; cannot start Kafka")
        java = shutil.which("java")
        if java is None:
            raise ServiceError("java is not on PATH; Kafka needs Java 17")
        lib = fetch_jars(home)
        data_dir = paths.data_dir(NAME) / "data"
        props = _write_properties(paths, data_dir, host, port, controller_port, num_partitions)
        _format_storage(java, lib, props, data_dir, log_file)
        args = [java, *JAVA_OPTS, f"-Dlog4j2.configurationFile={_LOG4J2}"]
        args += ["-cp", f"{lib}/*", _MAIN_CLASS, str(props)]
        pid = process.spawn(args, log_file=log_file, pid_file=paths.pid_file(NAME), cwd=paths.root)
        try:
            process.wait_ready(
                NAME, pid, lambda: is_ready(address), timeout=timeout, log_file=log_file
            )
        except ServiceError:
            process.kill(pid)
            raise
        logger.info("Kafka ready on %s (pid %s)", address, pid)
        return True


def stop(
    home: str | os.PathLike[str] | None = None,
    *,
    var_dir: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> bool:
    """Stop our broker (SIGTERM, then SIGKILL after `timeout`); False if it was not running."""
    paths = ServicePaths.at(home, var_dir)
    return process.end(
        paths, NAME, _MAIN_CLASS, lambda pid: process.terminate(pid, timeout=timeout)
    )


def kill(
    home: str | os.PathLike[str] | None = None, *, var_dir: str | os.PathLike[str] | None = None
) -> bool:
    """SIGKILL our broker at once (fault tests); `start()` recovers its log afterwards."""
    return process.end(ServicePaths.at(home, var_dir), NAME, _MAIN_CLASS, process.kill)


def _write_properties(
    paths: ServicePaths,
    data_dir: Path,
    host: str,
    port: int,
    controller_port: int,
    num_partitions: int,
) -> Path:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": str(num_partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "12",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
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
    props = paths.data_dir(NAME) / "server.properties"
    props.parent.mkdir(parents=True, exist_ok=True)
    props.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    return props


def _format_storage(java: str, lib: Path, props: Path, data_dir: Path, log_file: Path) -> None:
    """Format the KRaft storage on first start (a static single-voter quorum)."""
    if (data_dir / "meta.properties").exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    cluster_id = _new_cluster_id()
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


def _new_cluster_id() -> str:
    """A Kafka Uuid string: 16 random bytes, URL-safe base64, unpadded, not starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid
