"""segflow services start|stop|status|kill|fetch [kafka|emulator] [--brokers N]."""

from __future__ import annotations

import argparse
import dataclasses

from cli.options import add_settings_options, settings_from_args
from cli.output import add_output_option, to_json, wants_json
from runtime.services import emulator, kafka_cluster
from runtime.services import kafka as local_kafka
from runtime.services.__main__ import SERVICES
from runtime.services.__main__ import run as run_services
from runtime.services.process import ServiceError, ServiceStatus
from runtime.settings import KafkaSettings
from schemas.errors import FatalError

DESCRIPTION = """Start, stop or inspect the local development services: an Apache Kafka 4.x
KRaft broker on 127.0.0.1:9092 (jars fetched once from Maven Central into .cache/) and the local
Snowflake emulator (fakesnow server mode on a DuckDB file, 127.0.0.1:8090). Data in var/, logs in
var/log/. `--brokers 3` makes kafka a local cluster of three KRaft nodes (each broker and
controller) on 127.0.0.1:19092-19094, data in var/kafka-1..3, beside the single broker; `status`
lists its nodes while they run. When SEGFLOW_KAFKA_BOOTSTRAP names another broker, ours is
neither started nor stopped."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["start", "stop", "status", "kill", "fetch"])
    parser.add_argument("services", nargs="*", choices=[*SERVICES, []], metavar="SERVICE")
    parser.add_argument(
        "--home", default=None, help="repository root (default: found from the installed package)"
    )
    parser.add_argument(
        "--brokers",
        type=int,
        choices=[1, 3],
        default=1,
        help="1: the single broker on :9092 (default); 3: the local cluster on :19092-19094",
    )
    add_output_option(parser)
    add_settings_options(parser, KafkaSettings)


def statuses(
    names: list[str], home: str | None, external: str | None, brokers: int
) -> list[ServiceStatus]:
    """The status of each named service (and of the local cluster's nodes when they run)."""
    found: list[ServiceStatus] = []
    for name in names:
        if name == "kafka" and external:
            found.append(local_kafka.external_status(external))
        elif name == "kafka":
            cluster = kafka_cluster.cluster(home, brokers=3)
            if brokers == 1:
                found.append(local_kafka.status(home))
            if brokers > 1 or cluster.running():
                found.extend(cluster.status())
        else:
            found.append(emulator.status(home))
    return found


def run(args: argparse.Namespace) -> int:
    kafka = settings_from_args(KafkaSettings, args)
    external = kafka.bootstrap if "bootstrap" in kafka.model_fields_set else None
    names = list(args.services or SERVICES)
    if wants_json(args) and args.action == "status":
        found = statuses(names, args.home, external, args.brokers)
        print(to_json([dataclasses.asdict(st) for st in found]))
        return 0 if all(st.ready for st in found) else 1
    if args.action == "stop":
        names.reverse()
    try:
        return run_services(args.action, names, args.home, external, args.brokers)
    except ServiceError as exc:
        raise FatalError(str(exc)) from exc
