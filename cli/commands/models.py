"""segflow models run|test|docs: the dbt project in analytics/ against the configured warehouse.

The dbt profile is written from the warehouse settings (``SEGFLOW_SNOWFLAKE_*``) into a private
temporary directory for each call, so nobody writes a ``profiles.yml``; secrets are not written
into it: the profile reads them from the environment of the dbt process (``env_var``).

dbt is an optional extra (``pip install 'segflow[models]'``). Its pins (dbt-core 1.11 needs
pathspec < 0.13) conflict with the dev tools' (mypy needs pathspec >= 1), so the development
setup installs it into a venv of its own, ``.venv-dbt`` (scripts/venv.sh); the command finds
dbt beside the running Python first, then in ``.venv-dbt``, then on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from cli.options import add_settings_options, settings_from_args
from runtime.settings import SegflowSettings, WarehouseSettings
from schemas.errors import ConfigError, FatalError

DESCRIPTION = """Build, test or document the analytics models (sessions, attribution, adoption,
account health, revenue, user profiles, deletion audit) of one source with dbt, e.g.
segflow models run --source web; then segflow query "select * from web_analytics.sessions".
The models read the source's schema and write to <source>_analytics."""

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILE = "segflow"
ACTIONS = {"run": "run", "test": "test", "docs": "docs"}
# Environment variables the generated profile reads its secrets from.
PASSWORD_ENV = "SEGFLOW_DBT_PASSWORD"
PASSPHRASE_ENV = "SEGFLOW_DBT_PRIVATE_KEY_PASSPHRASE"


class ModelsSettings(SegflowSettings):
    """`segflow models`: which source to model and where dbt and its project are."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_MODELS_")

    source: str = Field("web", description="Source (warehouse schema) the models read")
    target_schema: str = Field("", description="Schema the models write; empty: <source>_analytics")
    project_dir: Path | None = Field(
        None, description="The dbt project directory; unset: analytics/ of the segflow checkout"
    )
    work_dir: Path = Field(
        Path("var/dbt"), description="Where dbt writes its target/ (compiled SQL, docs) and logs"
    )
    dbt_path: str = Field("", description="The dbt executable; empty: found automatically")
    threads: int = Field(1, ge=1, description="dbt threads (models built at once)")
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)

    @property
    def schema_name(self) -> str:
        return self.target_schema or f"{self.source}_analytics"

    @property
    def project(self) -> Path:
        return self.project_dir or REPO_ROOT / "analytics"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=sorted(ACTIONS), help="run, test or docs (generate)")
    parser.add_argument(
        "--full-refresh",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="rebuild incremental models from scratch",
    )
    parser.add_argument("--select", default=None, help="dbt node selection, e.g. sessions+")
    parser.add_argument(
        "--vars", default=None, help="dbt vars as YAML/JSON, e.g. '{session_timeout_minutes: 45}'"
    )
    add_settings_options(parser, ModelsSettings)


def profile(settings: ModelsSettings) -> dict[str, Any]:
    """The dbt profiles.yml content for `settings` (secrets as env_var references)."""
    wh = settings.warehouse
    out: dict[str, Any] = {
        "type": "snowflake",
        "account": wh.account,
        "user": wh.user,
        "database": wh.database,
        "schema": settings.schema_name,
        "threads": settings.threads,
        "connect_retries": 0,
        "connect_timeout": wh.login_timeout_s,
        "query_tag": "segflow:models",
    }
    connect = wh.connect_kwargs("models")  # the credentials the connector itself would use
    if "private_key_file" in connect:
        out["private_key_path"] = str(connect["private_key_file"])
        if connect.get("private_key_file_pwd") is not None:
            out["private_key_passphrase"] = "{{ env_var('" + PASSPHRASE_ENV + "') }}"
    elif connect.get("password") is not None:
        out["password"] = "{{ env_var('" + PASSWORD_ENV + "') }}"
    if wh.warehouse:
        out["warehouse"] = wh.warehouse
    if wh.role:
        out["role"] = wh.role
    host, port, protocol = wh.endpoint
    if host:
        out["host"] = host
    if port:
        out["port"] = port
    if protocol:
        out["protocol"] = protocol
    return {PROFILE: {"target": "segflow", "outputs": {"segflow": out}}}


def secret_env(settings: ModelsSettings) -> dict[str, str]:
    """The environment variables the profile's env_var references read."""
    connect = settings.warehouse.connect_kwargs("models")
    env: dict[str, str] = {}
    if "private_key_file" in connect:
        if connect.get("private_key_file_pwd") is not None:
            env[PASSPHRASE_ENV] = str(connect["private_key_file_pwd"])
    elif connect.get("password") is not None:
        env[PASSWORD_ENV] = str(connect["password"])
    return env


def dbt_args(
    action: str,
    settings: ModelsSettings,
    profiles_dir: Path,
    *,
    full_refresh: bool = False,
    select: str | None = None,
    extra_vars: dict[str, Any] | None = None,
) -> list[str]:
    """The dbt command line (without the executable) for one action."""
    work = settings.work_dir
    cmd = ["docs", "generate"] if action == "docs" else [ACTIONS[action]]
    dbt_vars = {"source": settings.source, **(extra_vars or {})}
    args = [
        *cmd,
        "--project-dir",
        str(settings.project),
        "--profiles-dir",
        str(profiles_dir),
        "--profile",
        PROFILE,
        "--target-path",
        str(work / settings.source / "target"),
        "--log-path",
        str(work / settings.source / "logs"),
        "--vars",
        json.dumps(dbt_vars, sort_keys=True),
    ]
    if full_refresh and action == "run":
        args.append("--full-refresh")
    if select:
        args += ["--select", select]
    return args


def find_dbt(configured: str) -> str:
    """The dbt executable: the configured one, beside this Python, in .venv-dbt, on PATH."""
    if configured:
        return configured
    candidates = [Path(sys.executable).parent / "dbt", REPO_ROOT / ".venv-dbt" / "bin" / "dbt"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("dbt")
    if found:
        return found
    raise ConfigError(
        "dbt is not installed: pip install 'segflow[models]' (or run scripts/venv.sh, which "
        "makes .venv-dbt), or set SEGFLOW_MODELS_DBT_PATH"
    )


def parse_vars(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = yaml.safe_load(text)
    if not isinstance(value, dict):
        raise ConfigError(
            "--vars must be a YAML/JSON mapping, e.g. '{session_timeout_minutes: 45}'"
        )
    return value


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(ModelsSettings, args)
    if not (settings.project / "dbt_project.yml").is_file():
        raise ConfigError(f"no dbt project at {settings.project} (SEGFLOW_MODELS_PROJECT_DIR)")
    dbt = find_dbt(settings.dbt_path)
    extra_vars = parse_vars(args.vars)
    env = {
        **os.environ,
        **secret_env(settings),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_VERSION_CHECK": "false",
    }
    with tempfile.TemporaryDirectory(prefix="segflow-dbt-") as tmp:
        profiles_dir = Path(tmp)
        path = profiles_dir / "profiles.yml"
        path.write_text(yaml.safe_dump(profile(settings), sort_keys=False))
        path.chmod(0o600)
        cmd = [
            dbt,
            *dbt_args(
                args.action,
                settings,
                profiles_dir,
                full_refresh=args.full_refresh,
                select=args.select,
                extra_vars=extra_vars,
            ),
        ]
        try:
            code = subprocess.call(cmd, env=env)
        except OSError as exc:
            raise FatalError(f"cannot start dbt ({dbt}): {exc}") from exc
    if code == 0 and args.action == "docs":
        index = settings.work_dir / settings.source / "target" / "index.html"
        print(f"docs written: {index} (serve that directory with any static file server)")
    return code
