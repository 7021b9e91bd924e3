"""The package map of DESIGN.md, checked: which of our packages may import which.

cli sits on top; reverse_etl, deletion and observe one floor below it (they work on the tables
the sink writes, so they may import sinks; observe reads a running pipeline for status views);
ingest, processors and sinks beside each other, never importing each other; runtime and schemas
below.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BASE = {"schemas", "runtime"}
MAY_IMPORT: dict[str, set[str]] = {
    "schemas": set(),
    "runtime": {"schemas"},
    "ingest": BASE,
    "processors": BASE,
    "sinks": BASE,
    "reverse_etl": BASE | {"sinks"},
    "deletion": BASE | {"sinks"},
    "observe": BASE | {"sinks"},
    "cli": BASE | {"ingest", "processors", "sinks", "reverse_etl", "deletion", "observe"},
}


def imported_packages(source: str) -> set[tuple[int, str]]:
    """(line, top-level package) of every absolute import, wherever it sits in the module."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


def violations(root: Path) -> list[str]:
    out = []
    for package, allowed in MAY_IMPORT.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, top in imported_packages(path.read_text(encoding="utf-8")):
                if top in MAY_IMPORT and top != package and top not in allowed:
                    out.append(f"{path.relative_to(root)}:{line} imports {top}")
    return sorted(out)


def test_packages_import_only_the_floors_below() -> None:
    assert violations(ROOT) == []


def test_every_installed_package_has_its_place_in_the_map() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in include} == set(MAY_IMPORT)


def test_a_sideways_import_is_reported(tmp_path: Path) -> None:
    (tmp_path / "sinks").mkdir()
    (tmp_path / "sinks" / "x.py").write_text(
        "from runtime import settings\n\ndef f():\n    import ingest.app\n", encoding="utf-8"
    )
    (tmp_path / "deletion").mkdir()
    (tmp_path / "deletion" / "y.py").write_text("import reverse_etl.sync\n", encoding="utf-8")
    assert violations(tmp_path) == [
        "deletion/y.py:1 imports reverse_etl",
        "sinks/x.py:4 imports ingest",
    ]
