"""segflow up: the whole pipeline locally, on the embedded defaults."""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
from types import FrameType

from cli.options import add_settings_options, settings_from_args
from runtime.logs import setup_logging
from runtime.rules import load_rules
from runtime.services import emulator
from runtime.services import kafka as local_kafka
from runtime.services.layout import ServicePaths
from runtime.settings import KafkaSettings, ObservabilitySettings, WarehouseSettings
from runtime.supervisor import ChildSpec, Supervisor
from runtime.topic_admin import create_topics, expected_topics

DESCRIPTION = """Run the whole pipeline on this machine: start the local Kafka broker and the
Snowflake emulator unless external ones are configured, create the topics, then run the edge, a
processor worker and a sink as child processes (logs prefixed by component; a dead child is
restarted and reported). Ctrl-C stops everything it started.

This is local development: the children run with SEGFLOW_ALLOW_DEV_DEFAULTS=true (unless set
otherwise), so the edge accepts the embedded rules' public write keys, with a WARNING."""

COMPONENTS = ("ingest", "process", "sink")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--partitions", type=int, default=12, help="partitions per topic")
    parser.add_argument(
        "--ingest-port", type=int, default=None, help="edge port [env SEGFLOW_INGEST_PORT]"
    )
    add_settings_options(parser, ObservabilitySettings)
    add_settings_options(parser, KafkaSettings)
    add_settings_options(parser, WarehouseSettings)


def _local_pii_key(paths: ServicePaths) -> str:
    """A per-machine HMAC key for local runs, kept in var/ (production sets its own secret)."""
    key_file = paths.var / "pii-hmac.key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_hex(32))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def run(args: argparse.Namespace) -> int:
    obs = settings_from_args(ObservabilitySettings, args)
    kafka = settings_from_args(KafkaSettings, args)
    warehouse = settings_from_args(WarehouseSettings, args)
    setup_logging("up", obs.log_level, "text")
    rules = load_rules(obs.rules_file)  # a bad rules file stops here, before anything starts
    paths = ServicePaths.at()

    started: list[str] = []
    if "bootstrap" not in kafka.model_fields_set:
        print("starting the local Kafka broker (first start fetches its jars once) ...")
        if local_kafka.start():
            started.append("kafka")
    host, port, _ = warehouse.endpoint
    if warehouse.is_emulator and host in ("127.0.0.1", "localhost"):
        print("starting the local Snowflake emulator ...")
        if emulator.start(port=port or emulator.DEFAULT_PORT):
            started.append("emulator")
    created = create_topics(kafka, expected_topics(kafka.topics, partitions=args.partitions))
    print(f"topics ready ({len(created)} created)")

    env = {"SEGFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap}
    if "log_format" not in obs.model_fields_set:
        env["SEGFLOW_LOG_FORMAT"] = "text"  # a person reads these lines, prefixed by component
    if args.ingest_port:
        env["SEGFLOW_INGEST_PORT"] = str(args.ingest_port)
    env.setdefault("SEGFLOW_PROCESS_PII_HMAC_KEY", _local_pii_key(paths))
    # Local development: the embedded rules' public write keys may serve (the edge warns).
    allow = obs.allow_dev_defaults if "allow_dev_defaults" in obs.model_fields_set else True
    env["SEGFLOW_ALLOW_DEV_DEFAULTS"] = "true" if allow else "false"
    specs = [
        ChildSpec(name, [sys.executable, "-m", "cli.main", name], env=env) for name in COMPONENTS
    ]
    supervisor = Supervisor(specs)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # no KeyboardInterrupt: raised anywhere (in a restart, or while the supervisor holds
        # its output lock) it could leave the stop hanging; the loop ends at its next poll
        supervisor.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    supervisor.start()
    _banner(args.ingest_port or 8088, rules.sources[0].write_keys[0], rules.sources[0].name)
    try:
        supervisor.run_until_stopped()
        print("\nstopping ...")
    finally:
        supervisor.stop()
        for name in reversed(started):
            (local_kafka if name == "kafka" else emulator).stop()
            print(f"stopped the local {name}")
    return 0


def _banner(port: int, write_key: str, source: str) -> None:
    print(
        f"""
segflow is running.
  send events:   curl -u {write_key}: -H 'Content-Type: application/json' \\
                   -d '{{"userId":"u1","event":"Signed Up","properties":{{"plan":"pro"}}}}' \\
                   http://127.0.0.1:{port}/v1/track
  or any Segment SDK with its host set to http://127.0.0.1:{port} and write key {write_key}
  demo traffic:  .venv/bin/segflow demo
  query:         .venv/bin/segflow query "select event, count(*) from {source}.tracks group by 1"
  metrics:       http://127.0.0.1:{port}/metrics
  stop:          Ctrl-C
""",
        flush=True,
    )
