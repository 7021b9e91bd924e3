"""Where the local services keep their files: jars, data, logs and pid files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# runtime/services/layout.py -> the repository root is three levels up.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ServicePaths:
    """The directories of the local services, all under the repository root by default."""

    root: Path
    var: Path

    @classmethod
    def at(
        cls,
        home: str | os.PathLike[str] | None = None,
        var_dir: str | os.PathLike[str] | None = None,
    ) -> ServicePaths:
        """Paths under `home` (the repo root; default: found from this package's location).

        `var_dir` moves data, logs and pid files elsewhere (tests run private instances so).
        """
        root = Path(home).resolve() if home else _PACKAGE_ROOT
        var = Path(var_dir).resolve() if var_dir else root / "var"
        return cls(root=root, var=var)

    @property
    def cache(self) -> Path:
        """Downloaded artefacts (git-ignored)."""
        return self.root / ".cache"

    def data_dir(self, name: str) -> Path:
        return self.var / name

    def log_file(self, name: str) -> Path:
        return self.var / "log" / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.var / "run" / f"{name}.pid"

    def lock_file(self, name: str) -> Path:
        return self.var / "run" / f"{name}.lock"
