"""docker-compose.yml: valid against the Compose Specification (compose-go's reference loader,
the library `docker compose` itself is built on), and internally consistent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import COMPOSE_FILE, DASHBOARD, load_compose


@pytest.fixture()
def compose(compose_model: dict[str, Any]) -> dict[str, Any]:
    return compose_model


MONITORING = ("prometheus", "grafana")
NOT_SEGFLOW = ("kafka", *MONITORING)


def test_compose_file_matches_the_specification(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "kafka",
        "topics",
        "emulator",
        "ingest",
        "process",
        "sink",
        *MONITORING,
    }


def test_the_specification_check_rejects_an_unknown_key(tools: Any, tmp_path: Path) -> None:
    broken = COMPOSE_FILE.read_text().replace("stop_grace_period: 3m", "stop_grace_perod: 3m")
    path = tmp_path / "docker-compose.yml"
    path.write_text(broken)
    proc = load_compose(tools, path)
    assert proc.returncode != 0
    assert "stop_grace_perod" in proc.stderr


def test_references_between_services_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    volumes = set(compose.get("volumes", {}))
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for mount in service.get("volumes", []):
            if mount["type"] == "volume":
                assert mount["source"] in volumes, f"{name} mounts undeclared volume"


def test_segflow_containers_run_like_in_kubernetes(compose: dict[str, Any]) -> None:
    """Same image, read-only root, /tmp writable, the pipeline starts after its topics exist."""
    segflow = {n: s for n, s in compose["services"].items() if n not in NOT_SEGFLOW}
    images = {s["image"] for s in segflow.values()}
    assert len(images) == 1
    for name, service in segflow.items():
        assert service["read_only"] is True, name
        assert any(t.startswith("/tmp") for t in service["tmpfs"]), name
        assert service["cap_drop"] == ["ALL"], name
    for name in ("ingest", "process", "sink"):
        conditions = segflow[name]["depends_on"]
        assert conditions["topics"]["condition"] == "service_completed_successfully", name
        assert "healthcheck" in segflow[name], name
    assert segflow["sink"]["depends_on"]["emulator"]["condition"] == "service_healthy"
    assert segflow["topics"]["command"][:2] == ["topics", "create"]
    assert segflow["emulator"]["entrypoint"][-2:] == ["-m", "runtime.services.emulator_server"]


def test_kafka_is_a_kraft_broker(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    bootstrap = compose["services"]["ingest"]["environment"]["SEGFLOW_KAFKA_BOOTSTRAP"]
    assert f"PLAINTEXT://{bootstrap}" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_compose_is_local_development_and_says_so(compose: dict[str, Any]) -> None:
    """The explicit development opt-in on every segflow container, ports on 127.0.0.1 only,
    and the edge's /metrics on its admin port, which its health check uses."""
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond localhost"
        if name in ("emulator", *NOT_SEGFLOW):
            continue
        assert service["environment"]["SEGFLOW_ALLOW_DEV_DEFAULTS"] == "true", name
    ingest = compose["services"]["ingest"]
    admin = ingest["environment"]["SEGFLOW_INGEST_ADMIN_PORT"]
    assert f"127.0.0.1:{admin}/readyz" in " ".join(ingest["healthcheck"]["test"])


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            assert service["build"]["target"] == "local", name  # the image with the emulator
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and "$" not in image, f"{name}: {image}"


def test_prometheus_scrapes_every_component_and_grafana_shows_the_dashboard(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    mounts = {
        name: {m["target"]: Path(m["source"]) for m in s.get("volumes", []) if m["type"] == "bind"}
        for name, s in services.items()
    }
    config = yaml.safe_load(mounts["prometheus"]["/etc/prometheus/prometheus.yml"].read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    env = {name: services[name]["environment"] for name in ("ingest", "process", "sink")}
    assert targets == {
        f"ingest:{env['ingest']['SEGFLOW_INGEST_ADMIN_PORT']}",
        f"process:{env['process']['SEGFLOW_PROCESS_METRICS_PORT']}",
        f"sink:{env['sink']['SEGFLOW_SINK_METRICS_PORT']}",
    }
    grafana = mounts["grafana"]
    provisioning = grafana["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "segflow.yml").read_text())[
        "providers"
    ]
    dashboards = provider["options"]["path"]
    assert grafana[f"{dashboards}/segflow.json"] == DASHBOARD
    assert "9090" in str(services["prometheus"]["ports"]) and "3000" in str(
        services["grafana"]["ports"]
    )
