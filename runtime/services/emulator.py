"""The local Snowflake emulator (fakesnow server mode on DuckDB files), reached by the real
snowflake-connector-python over HTTP.

Databases live in `var/warehouse/<NAME>.db`, the log in `var/log/emulator.log`, the pid in
`var/run/emulator.pid`. `emulator_server.py` is the process that serves them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

from runtime.services import process
from runtime.services.layout import ServicePaths
from runtime.services.process import ServiceStatus

logger = logging.getLogger(__name__)

NAME = "emulator"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
_SERVER = Path(__file__).resolve().parent / "emulator_server.py"
_MARKER = "emulator_server.py"


def conn_params(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    database: str | None = None,
    schema: str | None = None,
    timeout: int = 30,
) -> dict[str, Any]:
    """Keyword arguments of `snowflake.connector.connect` for the emulator.

    Timeouts are short so that a failing server (HTTP 500, retried by the connector) shows up
    as an error rather than a hang.
    """
    params: dict[str, Any] = {
        "user": "segflow",
        "password": "segflow",
        "account": "fakesnow",
        "host": host,
        "port": port,
        "protocol": "http",
        "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
        "login_timeout": timeout,
        "network_timeout": timeout,
        "socket_timeout": timeout,
        "platform_detection_timeout_seconds": 0,
    }
    if database:
        params["database"] = database
    if schema:
        params["schema"] = schema
    return params


def is_ready(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: int = 5) -> bool:
    """True when the real connector can log in and run `SELECT 1`."""
    if not process.port_open(host, port):
        return False
    import snowflake.connector  # heavy import: only when probing

    try:
        conn = snowflake.connector.connect(**conn_params(host, port, timeout=timeout))
    except Exception:  # snowflake.connector.errors.Error and transport errors: not ready
        return False
    try:
        with conn.cursor() as cur:
            row = cur.execute("SELECT 1").fetchone()  # type: ignore[union-attr]
        return row is not None and row[0] == 1
    except Exception:
        return False
    finally:
        conn.close()


def service(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> process.Service:
    """The emulator on host:port, ready when the real connector runs `SELECT 1` there."""
    return process.Service(NAME, _MARKER, host, (port,), lambda: is_ready(host, port))


def status(
    home: str | os.PathLike[str] | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    var_dir: str | os.PathLike[str] | None = None,
) -> ServiceStatus:
    """Is our emulator (or any server on host:port that logs in and answers) ready?"""
    return process.status(ServicePaths.at(home, var_dir), service(host, port))


def start(
    home: str | os.PathLike[str] | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    var_dir: str | os.PathLike[str] | None = None,
    python: str | None = None,
    timeout: float = 60.0,
    idle_session_timeout_s: float = 0.0,
) -> bool:
    """Start the emulator unless it answers already; wait until `SELECT 1` works.

    Returns True when this call started it, False when it was already running. One that this
    project started from another version of `emulator_server.py` is restarted (a stamp beside
    its pid file records the launcher it runs).
    `python` is the interpreter to run it with (default: this one; it needs fakesnow[server]).
    `idle_session_timeout_s` > 0 closes sessions unused that long, rolling back transactions
    that killed clients left open (fault tests that SIGKILL a warehouse client need it).
    """
    if python is None and importlib.util.find_spec("fakesnow") is None:
        raise process.ServiceError(
            "the local Snowflake emulator (fakesnow) is not installed: "
            "pip install 'segflow[local]' (make venv installs it)"
        )
    paths = ServicePaths.at(home, var_dir)
    db_dir = paths.data_dir("warehouse")

    def prepare() -> list[str]:
        args = [python or sys.executable, str(_SERVER), "--host", host, "--port", str(port)]
        args += ["--db-dir", str(db_dir)]
        if idle_session_timeout_s > 0:
            args += ["--idle-session-timeout-s", str(idle_session_timeout_s)]
        return args

    # one we started from another version of the launcher lacks what this segflow sends it
    # (its multi-table INSERT, for one): restarted, its sessions' open transactions rolled back
    stamp = paths.pid_file(NAME).with_suffix(".launcher")
    digest = hashlib.sha256(_SERVER.read_bytes()).hexdigest()
    svc = service(host, port)
    current = process.status(paths, svc)
    if current.managed and current.ready:
        ran = stamp.read_text().strip() if stamp.exists() else ""
        if ran != digest:
            logger.warning("restarting the emulator (pid %s): its launcher changed", current.pid)
            process.stop(paths, svc, timeout=20.0)
    started = process.start(paths, svc, prepare, timeout=timeout)
    if started:
        stamp.write_text(digest + "\n")
        logger.info("emulator databases in %s", db_dir)
    return started


def stop(
    home: str | os.PathLike[str] | None = None,
    *,
    var_dir: str | os.PathLike[str] | None = None,
    timeout: float = 20.0,
) -> bool:
    """Stop our emulator (SIGTERM, then SIGKILL after `timeout`); False if it was not running."""
    return process.stop(ServicePaths.at(home, var_dir), service(), timeout=timeout)


def kill(
    home: str | os.PathLike[str] | None = None, *, var_dir: str | os.PathLike[str] | None = None
) -> bool:
    """SIGKILL our emulator at once (fault tests)."""
    return process.end(ServicePaths.at(home, var_dir), NAME, _MARKER, process.kill)
