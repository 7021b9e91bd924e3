"""segflow topics create|check."""

from __future__ import annotations

import argparse

from cli.options import add_settings_options, settings_from_args
from runtime.settings import KafkaSettings, TopicSettings
from runtime.topic_admin import check_topics, create_topics, expected_topics

DESCRIPTION = """Create every segflow topic with explicit partitions, retention, compaction and
replication (running it twice is harmless), or check the cluster against those settings. Unset,
replication follows the cluster: 3 replicas and min.insync.replicas=2 on 3 or more brokers, 1 on
the single local broker."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["create", "check"], help="create or check")
    parser.add_argument(
        "--partitions", type=int, default=12, help="partitions per event topic (default 12)"
    )
    add_settings_options(parser, KafkaSettings)
    add_settings_options(parser, TopicSettings)


def run(args: argparse.Namespace) -> int:
    kafka = settings_from_args(KafkaSettings, args)
    replication = settings_from_args(TopicSettings, args)
    specs = expected_topics(
        kafka.topics,
        partitions=args.partitions,
        replication_factor=replication.replication_factor,
        min_insync_replicas=replication.min_insync_replicas,
    )
    if args.action == "create":
        created = create_topics(kafka, specs)
        for name in created:
            print(f"created {name}")
        print(
            f"{len(specs)} topics expected, {len(created)} created, "
            f"{len(specs) - len(created)} already there"
        )
        return 0
    problems = check_topics(kafka, specs)
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} differences from the expected topic settings")
        return 1
    print(f"all {len(specs)} topics match")
    return 0
