"""`python -m runtime.services start|stop|status|kill|fetch [kafka|emulator] [--brokers N]`.

`--brokers 3` makes `kafka` the local three-node cluster (kafka_cluster.py, 127.0.0.1:19092-4)
instead of the single broker; `status` lists the cluster's nodes whenever they run.

This entry point is the one place of the package that reads the environment:
SEGFLOW_HOME (the repo root; default: found from the package location) and
SEGFLOW_KAFKA_BOOTSTRAP (an external broker: ours is then neither started nor stopped).
Exit status: 0 on success (`status`: 0 when every named service is ready), 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from runtime.services import emulator, kafka, kafka_cluster
from runtime.services.process import ServiceError, ServiceStatus

SERVICES = ("kafka", "emulator")


def _print(st: ServiceStatus, note: str = "") -> None:
    state = "ready" if st.ready else ("running, not ready" if st.running else "stopped")
    owner = f"pid {st.pid}" if st.pid else ("not started by segflow" if st.running else "")
    extra = ", ".join(x for x in (owner, note) if x)
    print(f"{st.name:<9} {state:<19} {st.address}" + (f"  ({extra})" if extra else ""))


def run_cluster(command: str, home: str | None, brokers: int) -> int:
    """One command over the local cluster of `brokers` nodes; the exit status."""
    cluster = kafka_cluster.cluster(home, brokers=brokers)
    if command == "fetch":
        print(f"kafka jars in {kafka.fetch_jars(home)}")
        return 0
    if command == "start":
        started = cluster.start()
        note = "started" if started else "already running"
    elif command in ("stop", "kill"):
        if command == "stop":
            done = cluster.stop()
        else:
            done = any([cluster.kill_node(n.node_id) for n in cluster.nodes])
        verb = "stopped" if command == "stop" else "killed"
        print(f"{'kafka':<9} {'cluster ' + verb if done else 'cluster was not running (ours)'}")
        return 0
    else:
        note = ""
    statuses = cluster.status()
    for st in statuses:
        _print(st, note)
    if command == "start" or all(st.ready for st in statuses):
        print(f"bootstrap: SEGFLOW_KAFKA_BOOTSTRAP={cluster.bootstrap}")
    return 0 if all(st.ready for st in statuses) else 1


def run(
    command: str,
    names: list[str],
    home: str | None,
    external_kafka: str | None,
    brokers: int = 1,
) -> int:
    """Run one command over the named services; return the exit status."""
    ok = True
    for name in names:
        if name == "kafka" and brokers > 1 and not external_kafka:
            ok = run_cluster(command, home, brokers) == 0 and ok
            continue
        if name == "kafka" and external_kafka:
            if command in ("start", "status"):
                st = kafka.external_status(external_kafka)
                _print(st, "external: SEGFLOW_KAFKA_BOOTSTRAP")
                ok = ok and st.ready
            continue
        module = kafka if name == "kafka" else emulator
        if command == "fetch":
            if name == "kafka":
                print(f"kafka jars in {kafka.fetch_jars(home)}")
        elif command == "start":
            started = module.start(home)
            _print(module.status(home), "started" if started else "already running")
        elif command == "stop":
            print(f"{name:<9} {'stopped' if module.stop(home) else 'was not running (ours)'}")
        elif command == "kill":
            print(f"{name:<9} {'killed' if module.kill(home) else 'was not running (ours)'}")
        else:
            st = module.status(home)
            _print(st)
            ok = ok and st.ready
            if name == "kafka":
                _print_cluster_if_running(home)
    return 0 if ok else 1


def _print_cluster_if_running(home: str | None) -> None:
    cluster = kafka_cluster.cluster(home)
    if cluster.running():
        for st in cluster.status():
            _print(st, "cluster node")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.services", description="Local Kafka broker and Snowflake emulator."
    )
    parser.add_argument("command", choices=["start", "stop", "status", "kill", "fetch"])
    parser.add_argument("services", nargs="*", choices=[*SERVICES, []], metavar="SERVICE")
    parser.add_argument("--home", default=None, help="repo root (env SEGFLOW_HOME)")
    parser.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="1: the single broker on :9092 (default); 3: the local cluster on :19092-19094",
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=None,
        help="append the names of the services this `start` started to this file",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("snowflake.connector").setLevel(logging.WARNING)  # one line per probe
    home = args.home or os.environ.get("SEGFLOW_HOME") or None
    external_kafka = os.environ.get("SEGFLOW_KAFKA_BOOTSTRAP") or None
    names = args.services or list(SERVICES)
    if args.command == "stop":
        names = list(reversed(names))
    try:
        if args.command == "start" and args.record and args.brokers == 1:
            return _start_recording(names, home, external_kafka, args.record)
        return run(args.command, names, home, external_kafka, args.brokers)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _start_recording(names: list[str], home: str | None, external: str | None, rec: Path) -> int:
    """`start --record FILE`: like start, and note which services this call started."""
    for name in names:
        if name == "kafka" and external:
            if run("start", [name], home, external) != 0:
                return 1
            continue
        module = kafka if name == "kafka" else emulator
        if module.start(home):
            with rec.open("a") as fh:
                fh.write(f"{name}\n")
            _print(module.status(home), "started")
        else:
            _print(module.status(home), "already running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
