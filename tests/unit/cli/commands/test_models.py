from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from cli.commands import models
from cli.commands.models import ModelsSettings, dbt_args, find_dbt, parse_vars, profile, secret_env
from cli.main import main as segflow
from runtime.settings import WarehouseSettings
from schemas.errors import ConfigError


def output(settings: ModelsSettings) -> dict[str, Any]:
    return profile(settings)["segflow"]["outputs"]["segflow"]


def test_profile_points_dbt_at_the_emulator_by_default() -> None:
    out = output(ModelsSettings())
    assert out["type"] == "snowflake"
    assert (out["account"], out["host"], out["port"], out["protocol"]) == (
        "fakesnow",
        "127.0.0.1",
        8090,
        "http",
    )
    assert out["database"] == "SEGFLOW"
    assert out["schema"] == "web_analytics"
    assert profile(ModelsSettings())["segflow"]["target"] == "segflow"


def test_profile_keeps_secrets_out_of_the_file() -> None:
    wh = WarehouseSettings(
        account="acme-x1", password=SecretStr("hunter2"), role="R", warehouse="W"
    )
    settings = ModelsSettings(source="app", target_schema="marts", warehouse=wh)
    out = output(settings)
    text = yaml.safe_dump(profile(settings))
    assert "hunter2" not in text
    assert out["password"] == "{{ env_var('" + models.PASSWORD_ENV + "') }}"
    assert secret_env(settings) == {models.PASSWORD_ENV: "hunter2"}
    assert (out["schema"], out["role"], out["warehouse"]) == ("marts", "R", "W")
    # a real account: the connector's own host, port and protocol
    assert not {"host", "port", "protocol"} & out.keys()


def test_profile_uses_key_pair_auth_when_a_key_is_set(tmp_path: Path) -> None:
    key = tmp_path / "key.p8"
    wh = WarehouseSettings(
        account="acme-x1", private_key_path=key, private_key_passphrase=SecretStr("pp")
    )
    out = output(ModelsSettings(warehouse=wh))
    assert out["private_key_path"] == str(key)
    assert "password" not in out
    assert "pp" not in yaml.safe_dump(out)
    assert secret_env(ModelsSettings(warehouse=wh)) == {models.PASSPHRASE_ENV: "pp"}


def test_dbt_args_pass_the_source_and_full_refresh(tmp_path: Path) -> None:
    settings = ModelsSettings(source="app", work_dir=tmp_path)
    args = dbt_args(
        "run", settings, tmp_path, full_refresh=True, select="sessions+", extra_vars={"x": 1}
    )
    assert args[0] == "run"
    assert "--full-refresh" in args
    assert args[args.index("--select") + 1] == "sessions+"
    assert json.loads(args[args.index("--vars") + 1]) == {"source": "app", "x": 1}
    assert args[args.index("--profiles-dir") + 1] == str(tmp_path)
    assert args[args.index("--target-path") + 1] == str(tmp_path / "app" / "target")
    assert dbt_args("docs", settings, tmp_path)[:2] == ["docs", "generate"]
    assert "--full-refresh" not in dbt_args("test", settings, tmp_path, full_refresh=True)


def test_parse_vars() -> None:
    assert parse_vars("{session_timeout_minutes: 45}") == {"session_timeout_minutes": 45}
    assert parse_vars(None) == {}
    with pytest.raises(ConfigError):
        parse_vars("[1, 2]")


def test_find_dbt_prefers_the_configured_path_and_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert find_dbt("/opt/dbt") == "/opt/dbt"
    monkeypatch.setattr(models, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"segflow\[models\]"):
        find_dbt("")
    dbt = tmp_path / ".venv-dbt" / "bin" / "dbt"
    dbt.parent.mkdir(parents=True)
    dbt.write_text("#!/bin/sh\n")
    dbt.chmod(dbt.stat().st_mode | stat.S_IXUSR)
    assert find_dbt("") == str(dbt)


def test_run_writes_the_profile_and_hands_dbt_the_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`segflow models run` calls dbt with a generated profile; the password only in its env."""
    seen: dict[str, Any] = {}

    def call(cmd: list[str], env: dict[str, str]) -> int:
        profiles = Path(cmd[cmd.index("--profiles-dir") + 1]) / "profiles.yml"
        seen["profile"] = yaml.safe_load(profiles.read_text())
        seen["mode"] = stat.S_IMODE(profiles.stat().st_mode)
        seen["cmd"], seen["env"] = cmd, env
        return 0

    monkeypatch.setattr(models.subprocess, "call", call)
    code = segflow(
        [
            "models",
            "run",
            "--full-refresh",
            "--models-source",
            "shop",
            "--models-dbt-path",
            "/bin/dbt-fake",
            "--models-work-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert seen["cmd"][:2] == ["/bin/dbt-fake", "run"]
    assert "--full-refresh" in seen["cmd"]
    assert seen["profile"]["segflow"]["outputs"]["segflow"]["schema"] == "shop_analytics"
    assert seen["mode"] == 0o600
    assert seen["env"][models.PASSWORD_ENV] == "segflow"
    assert seen["env"]["DBT_SEND_ANONYMOUS_USAGE_STATS"] == "false"


def test_run_refuses_a_missing_project(tmp_path: Path) -> None:
    code = segflow(["models", "run", "--models-project-dir", str(tmp_path)])
    assert code == 78


def test_the_project_declares_every_model_it_ships() -> None:
    """Every model file has its documentation entry (description, columns) and vice versa."""
    root = models.REPO_ROOT / "analytics" / "models"
    files = {p.stem for p in root.rglob("*.sql")}
    documented: dict[str, Any] = {}
    for path in root.rglob("*.yml"):
        for entry in yaml.safe_load(path.read_text()).get("models", []):
            documented[entry["name"]] = entry
    assert files == set(documented)
    for name, entry in documented.items():
        assert entry.get("description"), name
        assert entry.get("columns"), name
        assert all(c.get("description") for c in entry["columns"]), name
