"""Fixtures of the deployment checks: the tools, installed once into .cache/ by deploy/tools.py,
and the Helm chart rendered with each values file."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "segflow"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "segflow.json"

# The values files the chart is checked with: every file in ci/. The chart's defaults alone
# refuse to render (no rules file, no PII key: test_helm_chart checks it); "development" is
# the explicit developmentDefaults opt-in.
VALUES_FILES: dict[str, Path | None] = {
    p.name.removesuffix("-values.yaml"): p for p in sorted((CHART / "ci").glob("*-values.yaml"))
}
DEVELOPMENT = CHART / "ci" / "development-values.yaml"
# The oldest Kubernetes the chart supports and the newest one the schemas know.
KUBE_VERSIONS = ("1.27.0", "1.37.0")
# The first test of a session on a new machine builds helm (several minutes on 2 busy cores,
# nothing in the Go caches yet); once the tools are cached the whole module takes seconds.
COLD_INSTALL_TIMEOUT_S = 1200


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(COLD_INSTALL_TIMEOUT_S))


def load_tools_module() -> ModuleType:
    """deploy/tools.py, which is a script and not part of an installed package."""
    name = "segflow_deploy_tools"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / "tools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tools() -> Any:
    """helm, kubeconform, compose-spec, hadolint and the schemas (installed on first use)."""
    module = load_tools_module()
    try:
        return module.ensure_tools()
    except module.ToolError as exc:
        pytest.fail(f"cannot install the deployment check tools: {exc}")


def helm_env() -> dict[str, str]:
    """Keep helm's cache and config inside .cache/, away from the user's home."""
    home = ROOT / ".cache" / "helm-home"
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def run_helm(tools: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.helm), *args], capture_output=True, text=True, env=helm_env(), timeout=120
    )


def template_args(values: Path | None, kube_version: str, *extra: str) -> list[str]:
    args = [
        "template",
        "segflow",
        str(CHART),
        "--namespace",
        "data",
        "--kube-version",
        kube_version,
    ]
    if values is not None:
        args += ["--values", str(values)]
    return [*args, *extra]


@pytest.fixture(scope="session")
def render(tools: Any) -> Callable[[str], str]:
    """Render the chart with a named values file (see VALUES_FILES); cached per name."""
    cache: dict[str, str] = {}

    def _render(name: str) -> str:
        if name not in cache:
            proc = run_helm(tools, *template_args(VALUES_FILES[name], KUBE_VERSIONS[0]))
            assert proc.returncode == 0, f"helm template ({name} values) failed:\n{proc.stderr}"
            cache[name] = proc.stdout
        return cache[name]

    return _render


@pytest.fixture(scope="session")
def manifests(render: Callable[[str], str]) -> Callable[[str], list[dict[str, Any]]]:
    """The rendered objects of a values file, parsed."""

    def _manifests(name: str) -> list[dict[str, Any]]:
        return [doc for doc in yaml.safe_load_all(render(name)) if doc]

    return _manifests


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every Pod (the `helm test` one), Deployment, Job and CronJob."""
    found = []
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "Pod":
            found.append((f"{kind}/{name}", obj["spec"]))
        elif kind in ("Deployment", "Job"):
            found.append((f"{kind}/{name}", obj["spec"]["template"]["spec"]))
        elif kind == "CronJob":
            found.append((f"{kind}/{name}", obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return found


def load_compose(tools: Any, path: Path) -> subprocess.CompletedProcess[str]:
    """compose-go's loader (schema validation, interpolation, merges) over a compose file."""
    return subprocess.run(
        [str(tools.compose_spec), "--format", "json", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},  # no SEGFLOW_* of the caller leaks into interpolation
    )


@pytest.fixture(scope="session")
def compose_model(tools: Any) -> dict[str, Any]:
    """docker-compose.yml as the Compose Specification loader resolves it."""
    proc = load_compose(tools, COMPOSE_FILE)
    assert proc.returncode == 0, f"docker-compose.yml is not valid:\n{proc.stderr}"
    model: dict[str, Any] = json.loads(proc.stdout)
    return model
