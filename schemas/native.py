"""segflow's C extensions, each optional: `pip install -e .` (`make venv`) compiles them where a
C compiler is found (pyproject.toml, ``ext-modules``); without one the install goes on and the
Python code each of them speeds up runs instead, with the same results."""

from __future__ import annotations

import importlib
from typing import Any


def optional_extension(name: str) -> Any:
    """The compiled extension module `name`, None when it was not built."""
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - installs without a C compiler
        return None
