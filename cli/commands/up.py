"""segflow up: the whole pipeline locally, on the embedded defaults."""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from types import FrameType

from cli.options import add_settings_options, settings_from_args
from ingest.settings import IngestSettings
from observe.console.settings import ConsoleSettings
from processors.settings import ProcessorSettings
from runtime.logs import setup_logging
from runtime.rules import Rules, load_rules
from runtime.services import emulator
from runtime.services import kafka as local_kafka
from runtime.services.layout import ServicePaths
from runtime.settings import (
    KafkaSettings,
    ObservabilitySettings,
    WarehouseSettings,
    build_settings,
)
from runtime.supervisor import ChildSpec, Supervisor
from runtime.topic_admin import create_topics, expected_topics
from schemas.errors import ConfigError
from sinks.snowflake.settings import SinkSettings

DESCRIPTION = """Run the whole pipeline on this machine: start the local Kafka broker and the
Snowflake emulator unless external ones are configured, create the topics, then run the edge, a
processor worker, a sink and the web console as child processes. It prints one line per
component when its /readyz answers, then where to send events, where the health, metrics and
console are, and how to stop. A dead child is restarted and reported; Ctrl-C stops everything
it started.

The children log WARNING and above (prefixed by component); --verbose, or a --log-level given
explicitly, brings back their INFO lines (group joins, partition lists, recovery tables).

This is local development: the children run with SEGFLOW_ALLOW_DEV_DEFAULTS=true (unless set
otherwise), so the edge accepts the embedded rules' public write keys, with a WARNING."""

COMPONENTS = ("ingest", "process", "sink")
EMULATOR_EXTRA = "local"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--partitions", type=int, default=12, help="partitions per topic")
    parser.add_argument(
        "--ingest-port", type=int, default=None, help="edge port [env SEGFLOW_INGEST_PORT]"
    )
    parser.add_argument(
        "--verbose",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="show the components' INFO lines too (default: WARNING and above)",
    )
    add_settings_options(parser, ObservabilitySettings)
    add_settings_options(parser, KafkaSettings)
    add_settings_options(parser, WarehouseSettings)


@dataclass(frozen=True)
class Endpoints:
    """Where a person reaches the running pipeline (all on this machine)."""

    edge: str
    health: dict[str, str]
    metrics: dict[str, str]
    console: str | None


def _local(host: str) -> str:
    """A URL host for an address a server binds to (any address: this machine's loopback)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host


def endpoints(
    ingest: IngestSettings,
    process: ProcessorSettings,
    sink: SinkSettings,
    console: tuple[str, int] | None,
) -> Endpoints:
    """The components' URLs as their settings place them; port 0 (any) has no known URL."""
    edge = f"http://{_local(ingest.host)}:{ingest.port}"
    if ingest.admin_port is not None:
        admin = f"http://{_local(ingest.admin_host)}:{ingest.admin_port}"
    else:
        admin = edge
    bases = {
        "ingest": admin if ingest.port and ingest.admin_port != 0 else None,
        "process": f"http://{_local(process.metrics_host)}:{process.metrics_port}"
        if process.metrics_port
        else None,
        "sink": f"http://{_local(sink.metrics_host)}:{sink.metrics_port}"
        if sink.metrics_port
        else None,
    }
    known = {name: base for name, base in bases.items() if base is not None}
    return Endpoints(
        edge=edge,
        health={name: base + "/readyz" for name, base in known.items()},
        metrics={name: base + "/metrics" for name, base in known.items()},
        console=f"http://{_local(console[0])}:{console[1]}" if console else None,
    )


def child_log_level(obs: ObservabilitySettings, verbose: bool) -> str:
    """WARNING for the children unless asked for more (--verbose, or --log-level given)."""
    if verbose or "log_level" in obs.model_fields_set:
        return obs.log_level
    return "WARNING"


def _local_pii_key(paths: ServicePaths) -> str:
    """A per-machine HMAC key for local runs, kept in var/ (production sets its own secret)."""
    key_file = paths.var / "pii-hmac.key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_hex(32))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def _console_address() -> tuple[str, int]:
    """(host, port) the web console will serve on (its SEGFLOW_CONSOLE_* settings)."""
    console = build_settings(ConsoleSettings)
    return console.host, console.port


def _require_emulator() -> None:
    if importlib.util.find_spec("fakesnow") is None:
        raise ConfigError(
            "the local Snowflake emulator is not installed: install the extra "
            f"(pip install 'segflow[{EMULATOR_EXTRA}]', which make venv does), or point "
            "SEGFLOW_SNOWFLAKE_ACCOUNT (and its credentials) at a Snowflake account"
        )


def run(args: argparse.Namespace) -> int:
    obs = settings_from_args(ObservabilitySettings, args)
    kafka = settings_from_args(KafkaSettings, args)
    warehouse = settings_from_args(WarehouseSettings, args)
    level = child_log_level(obs, args.verbose)
    setup_logging("up", level, "text")
    rules = load_rules(obs.rules_file)  # a bad rules file stops here, before anything starts
    paths = ServicePaths.at()

    env = {"SEGFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap, "SEGFLOW_LOG_LEVEL": level}
    if "log_format" not in obs.model_fields_set:
        env["SEGFLOW_LOG_FORMAT"] = "text"  # a person reads these lines, prefixed by component
    if args.ingest_port:
        env["SEGFLOW_INGEST_PORT"] = str(args.ingest_port)
    pii_key = _local_pii_key(paths)
    # Local development: the embedded rules' public write keys may serve (the edge warns).
    allow = obs.allow_dev_defaults if "allow_dev_defaults" in obs.model_fields_set else True
    env["SEGFLOW_ALLOW_DEV_DEFAULTS"] = "true" if allow else "false"
    # the children's settings, as they will build them: where each one answers
    ingest = build_settings(IngestSettings, port=args.ingest_port)
    process = build_settings(
        ProcessorSettings,
        **({} if _env_has_pii_key() else {"pii_hmac_key": pii_key}),
    )
    sink = build_settings(SinkSettings)
    if not _env_has_pii_key():
        env["SEGFLOW_PROCESS_PII_HMAC_KEY"] = pii_key
    console: tuple[str, int] | None = _console_address()
    urls = endpoints(ingest, process, sink, console)

    host, port, _ = warehouse.endpoint
    local_emulator = warehouse.is_emulator and host in ("127.0.0.1", "localhost")
    if local_emulator:
        _require_emulator()
    started: list[str] = []
    if "bootstrap" not in kafka.model_fields_set:
        print("starting the local Kafka broker (its first start fetches the jars once) ...")
        if local_kafka.start():
            started.append("kafka")
    print(f"kafka ready     {kafka.bootstrap}")
    if local_emulator:
        if emulator.start(port=port or emulator.DEFAULT_PORT):
            started.append("emulator")
        print(f"warehouse ready {host}:{port} (the local Snowflake emulator)")
    else:
        print(f"warehouse       {warehouse.account} (external)")
    created = create_topics(kafka, expected_topics(kafka.topics, partitions=args.partitions))
    print(f"topics ready    {len(created)} created, prefix {kafka.topic_prefix or '(none)'}")

    specs = [
        ChildSpec(
            name,
            [sys.executable, "-m", "cli.main", name],
            env=env,
            ready_url=urls.health.get(name),
        )
        for name in COMPONENTS
    ]
    if console is not None:
        specs.append(
            ChildSpec(
                "console",
                [sys.executable, "-m", "cli.main", "console"],
                env={**env, **_status_env(urls, process.app_id, sink.group_id)},
                ready_url=f"{urls.console}/healthz",
            )
        )
    supervisor = Supervisor(specs)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # no KeyboardInterrupt: raised anywhere (in a restart, or while the supervisor holds
        # its output lock) it could leave the stop hanging; the loop ends at its next poll
        supervisor.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    supervisor.start()
    try:
        supervisor.run_until_stopped(
            on_all_ready=lambda: supervisor.write(
                closing_block(urls, rules, allow and obs.rules_file is None, level)
            )
        )
        print("\nstopping ...", flush=True)
    finally:
        supervisor.stop()
        for name in reversed(started):
            (local_kafka if name == "kafka" else emulator).stop()
            print(f"stopped the local {name}")
    return 0


def _env_has_pii_key() -> bool:
    return any(
        os.environ.get(name)
        for name in ("SEGFLOW_PROCESS_PII_HMAC_KEY", "SEGFLOW_PROCESS_PII_HMAC_KEY_FILE")
    )


def _status_env(urls: Endpoints, processors_group: str, sink_group: str) -> dict[str, str]:
    """Where the console finds the components it shows (its SEGFLOW_STATUS_* settings)."""
    names = {"ingest": "EDGE", "process": "PROCESSORS", "sink": "SINK"}
    env = {
        f"SEGFLOW_STATUS_{names[name]}_URL": url.removesuffix("/readyz")
        for name, url in urls.health.items()
    }
    env["SEGFLOW_STATUS_PROCESSORS_GROUP"] = processors_group
    env["SEGFLOW_STATUS_SINK_GROUP"] = sink_group
    return env


def closing_block(urls: Endpoints, rules: Rules, dev_keys: bool, level: str) -> str:
    """What a person needs once everything is ready: where to send, look and stop."""
    source = rules.sources[0]
    if dev_keys:
        key, about = source.write_keys[0], "the embedded rules' public development key"
    else:
        key, about = "<write key>", "one of its write keys in your rules file"
    width = max((len(n) for n in urls.health), default=0)
    health = "\n".join(
        f"    {name:<{width}}  {url}   {urls.metrics[name]}" for name, url in urls.health.items()
    )
    console = (
        f"  console:    {urls.console}"
        if urls.console
        else "  console:    not in this version (segflow status shows the pipeline's state)"
    )
    logs = "WARNING and above (--verbose: everything)" if level == "WARNING" else level
    return f"""
segflow is running.
  edge:       {urls.edge}  (Segment Tracking API; any Segment SDK with this host)
  write key:  {key}  (source {source.name}: {about})
  try:        curl -u {key}: -H 'Content-Type: application/json' \\
                -d '{{"userId":"u1","event":"Signed Up"}}' {urls.edge}/v1/track
              segflow demo
  query:      segflow query "select event, count(*) from {source.name}.tracks group by 1"
  health and metrics:
{health}
{console}
  logs:       {logs}
  stop:       Ctrl-C
"""
