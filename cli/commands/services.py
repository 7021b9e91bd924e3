"""segflow services start|stop|status|kill|fetch [kafka|emulator] [--brokers N]."""

from __future__ import annotations

import argparse

from cli.options import add_settings_options, settings_from_args
from runtime.services.__main__ import SERVICES
from runtime.services.__main__ import run as run_services
from runtime.settings import KafkaSettings

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
    add_settings_options(parser, KafkaSettings)


def run(args: argparse.Namespace) -> int:
    kafka = settings_from_args(KafkaSettings, args)
    external = kafka.bootstrap if "bootstrap" in kafka.model_fields_set else None
    names = list(args.services or SERVICES)
    if args.action == "stop":
        names.reverse()
    return run_services(args.action, names, args.home, external, args.brokers)
