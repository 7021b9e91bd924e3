"""The Helm chart: lint, render, validate against the Kubernetes schemas, and the properties a
reviewer of a production chart checks (non-root, read-only root, probes, grace periods, scaling
bounds, hooks, secrets that resolve)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sinks.snowflake.settings import SinkSettings
from tests.deploy.conftest import (
    CHART,
    DEVELOPMENT,
    KUBE_VERSIONS,
    VALUES_FILES,
    pod_specs,
    run_helm,
    template_args,
)

Manifests = Callable[[str], list[dict[str, Any]]]


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_helm_lint_passes_strictly(tools: Any, values: str) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", KUBE_VERSIONS[0]]
    if VALUES_FILES[values] is not None:
        args += ["--values", str(VALUES_FILES[values])]
    proc = run_helm(tools, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_rendered_manifests_match_the_kubernetes_schemas(
    tools: Any, tmp_path: Path, values: str, kube_version: str
) -> None:
    proc = run_helm(tools, *template_args(VALUES_FILES[values], kube_version))
    assert proc.returncode == 0, proc.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(proc.stdout)
    count = sum(1 for doc in yaml.safe_load_all(proc.stdout) if doc)
    args = [str(tools.kubeconform), "-strict", "-summary", "-kubernetes-version", kube_version]
    for location in tools.kubeconform_locations():
        args += ["-schema-location", location]
    result = subprocess.run([*args, str(rendered)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{count} resources found in 1 file - Valid: {count}, Invalid: 0" in result.stdout


def test_kubeconform_rejects_a_misspelt_field(tools: Any, tmp_path: Path, render: Any) -> None:
    """The schemas are strict: an unknown field deep in a pod template fails validation."""
    broken = render("production").replace("readOnlyRootFilesystem:", "readOnlyRootFilesytem:", 1)
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    args = [str(tools.kubeconform), "-strict", "-kubernetes-version", KUBE_VERSIONS[0]]
    for location in tools.kubeconform_locations():
        args += ["-schema-location", location]
    result = subprocess.run([*args, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "readOnlyRootFilesytem" in result.stdout


@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_every_pod_runs_non_root_on_a_read_only_root(manifests: Manifests, values: str) -> None:
    pods = pod_specs(manifests(values))
    assert pods
    for where, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] != 0, where
        assert pod["automountServiceAccountToken"] is False, where
        mounts_by_volume = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, f"{where}: /tmp must be writable"
            assert all(name in mounts_by_volume for name in mounts.values()), where
            assert container["resources"]["requests"], where


@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_long_running_components_are_probed_on_healthz_and_readyz(
    manifests: Manifests, values: str
) -> None:
    deployments = {
        name: d
        for name, d in _by_kind(manifests(values), "Deployment").items()
        if not name.endswith("-emulator")  # the development emulator is no segflow component
    }
    assert {d.rsplit("-", 1)[-1] for d in deployments} == {"ingest", "process", "sink"}
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert container[probe]["httpGet"]["port"] in ports, f"{name} {probe}"


def test_sink_grace_period_outlasts_a_flush(manifests: Manifests, tools: Any) -> None:
    """Flush age plus two statement timeouts, from the settings' own defaults."""
    defaults = SinkSettings()
    flush = defaults.flush_age_s + 2 * defaults.warehouse.network_timeout_s
    for values in VALUES_FILES:
        sink = next(
            d for n, d in _by_kind(manifests(values), "Deployment").items() if n.endswith("-sink")
        )
        env = {
            e["name"]: e.get("value")
            for e in sink["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        age = float(env.get("SEGFLOW_SINK_FLUSH_AGE_S") or defaults.flush_age_s)
        timeout = float(
            env.get("SEGFLOW_SNOWFLAKE_NETWORK_TIMEOUT_S") or defaults.warehouse.network_timeout_s
        )
        grace = sink["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > age + 2 * timeout, values
    proc = run_helm(
        tools,
        *template_args(
            DEVELOPMENT,
            KUBE_VERSIONS[0],
            "--set",
            f"sink.terminationGracePeriodSeconds={int(flush)}",
        ),
    )
    assert proc.returncode != 0
    assert "sink.terminationGracePeriodSeconds" in proc.stderr


def test_defaults_render_a_development_install(manifests: Manifests) -> None:
    objects = manifests("development")
    kinds = {o["kind"] for o in objects}
    assert {"ScaledObject", "ServiceMonitor", "CronJob", "Ingress"}.isdisjoint(kinds)
    emulator = _by_kind(objects, "Service")["segflow-emulator"]
    assert len(_by_kind(objects, "PodDisruptionBudget")) == 3
    assert len(_by_kind(objects, "HorizontalPodAutoscaler")) == 1
    deployments = _by_kind(objects, "Deployment")
    ingest = next(d for n, d in deployments.items() if n.endswith("-ingest"))
    assert "replicas" not in ingest["spec"], "the HPA owns the edge's replica count"
    sink = next(d for n, d in deployments.items() if n.endswith("-sink"))
    env = {
        e["name"]: e.get("value") for e in sink["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SEGFLOW_SNOWFLAKE_ACCOUNT"] == "fakesnow"
    assert env["SEGFLOW_SNOWFLAKE_PROTOCOL"] == "http"
    assert env["SEGFLOW_SNOWFLAKE_HOST"] == emulator["metadata"]["name"]
    assert env["SEGFLOW_SNOWFLAKE_PORT"] == str(emulator["spec"]["ports"][0]["port"])


def test_production_values_render_every_optional_part(manifests: Manifests) -> None:
    objects = manifests("production")
    jobs = _by_kind(objects, "Job")
    (topics,) = jobs.values()
    annotations = topics["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert topics["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "topics",
        "create",
        "--partitions",
        "24",
    ]
    scaled = _by_kind(objects, "ScaledObject")
    assert len(scaled) == 2
    for obj in scaled.values():
        assert obj["spec"]["maxReplicaCount"] <= 24, "replicas never exceed the partitions"
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] in ("segflow-processors", "segflow-sink")
    for name, deployment in _by_kind(objects, "Deployment").items():
        if not name.endswith("-ingest"):
            assert "replicas" not in deployment["spec"], f"KEDA owns {name}'s replica count"
    cronjobs = _by_kind(objects, "CronJob")
    assert {n.removeprefix("segflow-") for n in cronjobs} == {
        "backfill",
        "reverse-etl-churn-scores",
        "reverse-etl-trial-ending",
    }
    backfill = cronjobs["segflow-backfill"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = backfill["containers"]
    assert container["args"][:2] == ["backfill", "s3://acme-segment-archive/segment-logs/"]
    checkpoint = next(v for v in backfill["volumes"] if v["name"] == "checkpoint")
    assert checkpoint["persistentVolumeClaim"]["claimName"] == "segflow-backfill"
    assert container["workingDir"] == "/var/lib/segflow/backfill", "the checkpoint is written there"
    assert "segflow-backfill" in _by_kind(objects, "PersistentVolumeClaim")
    assert len(_by_kind(objects, "ServiceMonitor")) == 1
    assert len(_by_kind(objects, "Ingress")) == 1
    rules = _by_kind(objects, "Secret")
    assert "segflow-rules" in rules and "rules.yaml" in rules["segflow-rules"]["stringData"]
    assert not _by_kind(objects, "ConfigMap")
    assert not any(name.endswith("-emulator") for name in _by_kind(objects, "Deployment"))


def _secret_refs(pod: dict[str, Any]) -> list[tuple[str, str]]:
    refs = []
    for container in pod["containers"]:
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                refs.append((ref["name"], ref["key"]))
    for volume in pod["volumes"]:
        if "secret" in volume:
            for item in volume["secret"].get("items", []):
                refs.append((volume["secret"]["secretName"], item["key"]))
    return refs


def test_inline_secrets_resolve_to_rendered_secrets(manifests: Manifests) -> None:
    """With every secret given inline, each reference names a rendered Secret and key; the
    topic hook only uses Secrets that are hooks themselves (the others do not exist yet)."""
    objects = manifests("inline-secrets")
    secrets = {
        n: set(s.get("data", {})) | set(s.get("stringData", {}))
        for n, s in _by_kind(objects, "Secret").items()
    }
    hooks = {
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == "Secret" and "helm.sh/hook" in o["metadata"].get("annotations", {})
    }
    for where, pod in pod_specs(objects):
        for name, key in _secret_refs(pod):
            assert name in secrets, f"{where} references missing Secret {name}"
            assert key in secrets[name], f"{where} references missing key {name}/{key}"
            if where.startswith("Job/"):
                assert name in hooks, f"{where} runs before Secret {name} exists"


def test_production_secrets_are_references_to_existing_ones(manifests: Manifests) -> None:
    objects = manifests("production")
    rendered = set(_by_kind(objects, "Secret"))
    referenced = {name for _, pod in pod_specs(objects) for name, _ in _secret_refs(pod)}
    assert referenced - rendered == {
        "segflow-kafka",
        "segflow-snowflake",
        "segflow-pii",
        "segflow-webhook",
        "kafka-ca",
        "segflow-reverse-etl",
        "segflow-lifecycle-source",
    }


def test_keda_replicas_above_the_partition_count_are_refused(tools: Any) -> None:
    proc = run_helm(
        tools,
        *template_args(
            DEVELOPMENT,
            KUBE_VERSIONS[0],
            "--set",
            "sink.keda.enabled=true",
            "--set",
            "sink.keda.maxReplicas=13",
        ),
    )
    assert proc.returncode != 0
    assert "exceeds topics.partitions" in proc.stderr


def test_production_snowflake_needs_credentials(tools: Any) -> None:
    proc = run_helm(
        tools,
        *template_args(
            DEVELOPMENT,
            KUBE_VERSIONS[0],
            "--set",
            "snowflake.account=myorg-acct",
            "--set",
            "process.piiHmacKey=" + "k" * 32,
        ),
    )
    assert proc.returncode != 0
    assert "snowflake.auth" in proc.stderr


_KEY = re.compile(r"^( *)([A-Za-z][A-Za-z0-9_.-]*):")


def test_every_value_is_documented() -> None:
    """Every key of values.yaml has a comment line right above it. A "# -- " comment documents a
    value; keys nested in such a value are its default content (e.g. resources) and need none."""
    undocumented = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, is a documented value) of the enclosing keys
    for number, line in enumerate(lines, start=1):
        match = _KEY.match(line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        above = lines[number - 2].strip() if number > 1 else ""
        inside_value = any(documented for _, documented in stack)
        if not above.startswith("#") and not inside_value:
            undocumented.append(f"values.yaml:{number}: {line.strip()}")
        stack.append((indent, above.startswith("# --")))
    assert not undocumented, "undocumented values:\n" + "\n".join(undocumented)


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        paths.add(prefix + key)
        paths |= _schema_paths(sub, f"{prefix}{key}.")
    return paths


def _value_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    """Paths of values.yaml down to where the schema stops describing structure (free maps)."""
    paths = set()
    for key, value in values.items():
        paths.add(prefix + key)
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and "properties" in sub:
            paths |= _value_paths(value, sub, f"{prefix}{key}.")
    return paths


def test_values_schema_describes_exactly_the_documented_values() -> None:
    """values.schema.json (which helm enforces, so a misspelt value fails the install) and
    values.yaml name the same values."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert _schema_paths(schema) == _value_paths(values, schema)


def test_a_misspelt_value_is_refused(tools: Any) -> None:
    proc = run_helm(
        tools, *template_args(DEVELOPMENT, KUBE_VERSIONS[0], "--set", "sink.replicas=3")
    )
    assert proc.returncode != 0
    assert "additional properties 'replicas' not allowed" in proc.stderr


# ------------------------------------------------------------------ no public defaults


def _env(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_the_chart_defaults_deploy_no_public_key(tools: Any, tmp_path: Path) -> None:
    """Without developmentDefaults, an install needs its own rules file and PII key."""
    bare = run_helm(tools, *template_args(None, KUBE_VERSIONS[0]))
    assert bare.returncode != 0 and "developmentDefaults" in bare.stderr
    key = "k" * 32
    no_rules = run_helm(
        tools, *template_args(None, KUBE_VERSIONS[0], "--set", f"process.piiHmacKey={key}")
    )
    assert no_rules.returncode != 0
    assert "rules.content, rules.existingSecret or rules.existingConfigMap" in no_rules.stderr
    rules = tmp_path / "rules-values.yaml"
    rules.write_text("rules:\n  content: 'sources: [{name: web, write_keys: [wk_live_1]}]'\n")
    no_key = run_helm(tools, *template_args(rules, KUBE_VERSIONS[0]))
    assert no_key.returncode != 0 and "process.piiHmacKey" in no_key.stderr
    short = run_helm(
        tools, *template_args(rules, KUBE_VERSIONS[0], "--set", "process.piiHmacKey=" + "k" * 31)
    )
    assert short.returncode != 0 and "piiHmacKey" in short.stderr
    ok = run_helm(
        tools, *template_args(rules, KUBE_VERSIONS[0], "--set", f"process.piiHmacKey={key}")
    )
    assert ok.returncode == 0, ok.stderr
    assert "SEGFLOW_ALLOW_DEV_DEFAULTS" not in ok.stdout
    assert "segflow-development-only-pii-hmac-key" not in ok.stdout


@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_only_the_development_install_opts_in_to_public_defaults(
    manifests: Manifests, values: str
) -> None:
    objects = manifests(values)
    development = values == "development"
    for where, pod in pod_specs(objects):
        if where.endswith("-emulator"):
            continue  # the development emulator is no segflow component
        for container in pod["containers"]:
            allowed = _env(container).get("SEGFLOW_ALLOW_DEV_DEFAULTS")
            if not development:
                assert allowed is None, f"{where} ({values})"
            elif where.startswith("Deployment/"):  # the edge, processors and sink
                assert allowed == "true", f"{where} ({values})"
    dev_key = base64.b64encode(b"segflow-development-only-pii-hmac-key").decode()
    for name, secret in _by_kind(objects, "Secret").items():
        holds_dev_key = dev_key in secret.get("data", {}).values()
        assert holds_dev_key == (development and name == "segflow"), f"{name} ({values})"


def test_a_webhook_source_needs_a_webhook_secret(tools: Any) -> None:
    proc = run_helm(
        tools,
        *template_args(
            DEVELOPMENT, KUBE_VERSIONS[0], "--set", "ingest.env.SEGFLOW_INGEST_WEBHOOK_SOURCE=web"
        ),
    )
    assert proc.returncode != 0 and "ingest.webhookSecret" in proc.stderr
    proc = run_helm(
        tools,
        *template_args(
            DEVELOPMENT,
            KUBE_VERSIONS[0],
            "--set",
            "ingest.env.SEGFLOW_INGEST_WEBHOOK_SOURCE=web",
            "--set",
            "ingest.webhookSecret=not-a-real-secret",
        ),
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_the_edge_serves_metrics_and_probes_on_its_admin_port_only(
    manifests: Manifests, values: str
) -> None:
    objects = manifests(values)
    deployments = _by_kind(objects, "Deployment")
    ingest = next(d for n, d in deployments.items() if n.endswith("-ingest"))
    (container,) = ingest["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = _env(container)
    assert env["SEGFLOW_INGEST_PORT"] == str(ports["http"])
    assert env["SEGFLOW_INGEST_ADMIN_PORT"] == str(ports["metrics"])
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "metrics", probe
    services = _by_kind(objects, "Service")
    public = services["segflow-ingest"]
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["http"]
    assert "segflow.io/metrics" not in public["metadata"]["labels"]
    admin = services["segflow-ingest-metrics"]
    assert admin["spec"]["type"] == "ClusterIP"
    assert [p["targetPort"] for p in admin["spec"]["ports"]] == ["metrics"]
    assert admin["metadata"]["labels"]["segflow.io/metrics"] == "true"
    for monitor in _by_kind(objects, "ServiceMonitor").values():
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
