"""The Dockerfile: hadolint-clean, ships every package the project installs, runs `segflow` as
the non-root user the chart expects. (No Docker engine here: the image itself is not built.)"""

from __future__ import annotations

import re
import subprocess
import tomllib
from typing import Any

import yaml

from tests.deploy.conftest import CHART, ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_hadolint_finds_nothing(tools: Any) -> None:
    proc = subprocess.run(
        [str(tools.hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_package_is_copied_and_not_ignored() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in include}
    copied = {
        args.split()[0].rstrip("/")
        for word, args in _instructions()
        if word == "COPY" and not args.startswith("--from")
    }
    assert packages <= copied, f"not copied: {packages - copied}"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for package in packages:
        assert f"!{package}/" in ignore, f".dockerignore excludes {package}/"


def test_image_runs_segflow_as_the_charts_non_root_user() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "segflow" in project["project"]["scripts"]
    instructions = _instructions()
    (entrypoint,) = [args for word, args in instructions if word == "ENTRYPOINT"]
    assert entrypoint.endswith('"segflow"]')
    stages = [args for word, args in instructions if word == "FROM"]
    assert stages[0].endswith("AS build") and stages[-1].endswith("AS runtime"), "multi-stage"
    uid = next(
        args for word, args in instructions if word == "ARG" and args.startswith("SEGFLOW_UID")
    )
    (user,) = [args for word, args in instructions if word == "USER"]
    assert user == "${SEGFLOW_UID}:${SEGFLOW_UID}"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(uid.split("=")[1]) == values["podSecurityContext"]["runAsUser"] != 0
    env = " ".join(args for word, args in instructions if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "no .pyc writes on a read-only root"


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (FROM included)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, args in _instructions():
        if word == "FROM":
            current = []
            stages[args.split()[-1]] = current
        current.append((word, args))
    return stages


def test_the_default_image_installs_the_production_lock_only() -> None:
    """The last stage (what `docker build .` makes) copies the build stage's virtualenv, which
    installed requirements/production.lock hash-checked and the project without dependencies;
    the emulator (requirements/local.lock) reaches only the `local` target."""
    stages = _stages()
    assert list(stages)[-1] == "runtime"
    copies = {
        name: [a for w, a in body if w == "COPY" and a.startswith("--from=")]
        for name, body in stages.items()
    }
    assert copies["runtime"] == ["--from=build /opt/segflow /opt/segflow"]
    assert copies["local"] == ["--from=build-local /opt/segflow /opt/segflow"]
    build = " ".join(a for w, a in stages["build"] if w == "RUN")
    assert "--require-hashes --requirement requirements/production.lock" in build
    assert "pip install --no-deps ." in build
    assert "local.lock" not in build and "dev.lock" not in build and "[" not in build
    local = " ".join(a for w, a in stages["build-local"] if w == "RUN")
    assert "--require-hashes --requirement requirements/local.lock" in local
    assert (ROOT / "requirements" / "production.lock").exists()
