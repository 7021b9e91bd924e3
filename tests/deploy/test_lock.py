"""The install is lean and locked: pyproject.toml declares every package our production code
imports (and production carries no emulator, demo SDK or test tool), and the lock files in
requirements/ (scripts/lock.sh) pin, with hashes, every declared dependency at a version its
specifier allows; production, local and dev agree on the versions they share."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import ROOT

PRODUCTION_PACKAGES = (
    "schemas",
    "runtime",
    "ingest",
    "processors",
    "sinks",
    "reverse_etl",
    "deletion",
    "observe",
    "cli",
)
LOCKS = ROOT / "requirements"
# lock file -> the extras it holds besides the dependencies (None: the extras alone)
LOCK_CONTENTS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "production.lock": (True, ("s3",)),
    "local.lock": (True, ("s3", "local")),
    "dev.lock": (True, ("s3", "local", "dev")),
    "models.lock": (False, ("models",)),
}
# Never in production: the emulator and its engine, the demo's SDK, test tools, pandas.
NOT_IN_PRODUCTION = {
    "fakesnow",
    "duckdb",
    "sqlglot",
    "segment-analytics-python",
    "pytest",
    "hypothesis",
    "moto",
    "selenium",
    "testcontainers",
    "pandas",
    "mypy",
    "ruff",
}
# Modules that production code never loads: run only where the `local` extra is installed.
LOCAL_MODULES = {"runtime/services/emulator_server.py"}


def _project() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def _requirements(deps: bool, extras: tuple[str, ...]) -> list[Requirement]:
    project = _project()
    found = [Requirement(r) for r in project["dependencies"]] if deps else []
    for extra in extras:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return [r for r in found if canonicalize_name(r.name) != "segflow"]


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


@cache
def _lock(name: str) -> dict[str, tuple[str, bool]]:
    """name -> (version, has hashes) of every pin in requirements/<name>."""
    text = (LOCKS / name).read_text()
    pins: dict[str, tuple[str, bool]] = {}
    entries = re.split(r"\n(?=[A-Za-z0-9])", text)
    for entry in entries:
        match = _PIN.match(entry)
        if match:
            pins[canonicalize_name(match[1])] = (match[2], "--hash=sha256:" in entry)
    return pins


@pytest.mark.parametrize("lock", sorted(LOCK_CONTENTS))
def test_every_declared_dependency_is_pinned_with_hashes(lock: str) -> None:
    deps, extras = LOCK_CONTENTS[lock]
    pins = _lock(lock)
    assert pins, f"requirements/{lock} is empty: run make lock"
    for req in _requirements(deps, extras):
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in requirements/{lock}: run make lock"
        version, _ = pins[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements/{lock} pins {name}=={version}, outside {req}: run make lock"
        )
    unhashed = [name for name, (_, hashed) in pins.items() if not hashed]
    assert not unhashed, f"pins without hashes in requirements/{lock}: {unhashed}"


def test_the_locks_agree_and_production_is_lean() -> None:
    production, local, dev = _lock("production.lock"), _lock("local.lock"), _lock("dev.lock")
    for small, big in ((production, local), (local, dev)):
        assert small.keys() <= big.keys()
        assert {n: v for n, (v, _) in small.items()} == {n: big[n][0] for n in small}
    assert not NOT_IN_PRODUCTION & production.keys(), NOT_IN_PRODUCTION & production.keys()
    assert {"fakesnow", "duckdb", "segment-analytics-python"} <= local.keys()
    declared = {canonicalize_name(r.name) for r in _requirements(True, ())}
    assert not NOT_IN_PRODUCTION & declared, "an emulator/test package among the dependencies"


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level, lazy) absolute imports of one module; `if TYPE_CHECKING:` blocks ignored."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    eager: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, inside_function: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module] if node.module and node.level == 0 else [])
            )
            (lazy if inside_function else eager).update(n.split(".")[0] for n in names)
        function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inside_function or function)

    visit(tree, False)
    return eager, lazy


def test_every_imported_package_is_declared() -> None:
    """A module imported when our code loads comes from a dependency (not from something that
    happens to be installed beside it); one imported inside a function, from an extra at least."""
    ours = set(PRODUCTION_PACKAGES) | {"tests"}
    stdlib = set(sys.stdlib_module_names)
    providers = metadata.packages_distributions()
    deps = {canonicalize_name(r.name) for r in _requirements(True, ())}
    extras = {canonicalize_name(r.name) for r in _requirements(True, ("s3", "local"))}
    problems = []
    for package in PRODUCTION_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            eager, lazy = _imports(path)
            for module, allowed, kind in ((eager, deps, "imported"), (lazy, extras, "lazily")):
                for name in sorted(module - ours - stdlib - {"__future__"}):
                    dists = {canonicalize_name(d) for d in providers.get(name, [name])}
                    wanted = extras if rel in LOCAL_MODULES else allowed
                    if not dists & wanted:
                        problems.append(f"{rel}: {name} ({kind}) from {sorted(dists)}")
    assert not problems, "declare these in pyproject.toml:\n" + "\n".join(problems)
