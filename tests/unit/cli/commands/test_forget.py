from __future__ import annotations

from pathlib import Path

import pytest

from cli.commands.forget import user_ids
from schemas.errors import ConfigError


def test_ids_from_options_and_file_deduplicated_in_order(tmp_path: Path) -> None:
    file = tmp_path / "ids.txt"
    file.write_text("# ticket 42\nu2\n\n u3 \nu1\n")
    assert user_ids(["u1", "u2"], file) == ["u1", "u2", "u3"]


def test_no_ids_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        user_ids([], None)
    with pytest.raises(ConfigError):
        user_ids([], tmp_path / "missing.txt")
