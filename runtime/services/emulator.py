"""The local Snowflake emulator (fakesnow server mode on DuckDB files), reached by the real
snowflake-connector-python over HTTP.

Databases live in `var/warehouse/<NAME>.db`, the log in `var/log/emulator.log`, the pid in
`var/run/emulator.pid`. `emulator_server.py` is the process that serves them.
"""

from __future__ import annotations

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


def status(
    home: str | os.PathLike[str] | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    var_dir: str | os.PathLike[str] | None = None,
) -> ServiceStatus:
    """Is our emulator (or any server on host:port that logs in and answers) ready?"""
    paths = ServicePaths.at(home, var_dir)
    pid = process.read_pid(paths.pid_file(NAME), _MARKER)
    ready = is_ready(host, port) if pid or process.port_open(host, port) else False
    return ServiceStatus(
        name=NAME,
        running=pid is not None or ready,
        pid=pid,
        address=f"{host}:{port}",
        ready=ready,
        managed=pid is not None,
    )


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

    Returns True when this call started it, False when it was already running.
    `python` is the interpreter to run it with (default: this one; it needs fakesnow[server]).
    `idle_session_timeout_s` > 0 closes sessions unused that long, rolling back transactions
    that killed clients left open (fault tests that SIGKILL a warehouse client need it).
    """
    paths = ServicePaths.at(home, var_dir)
    log_file = paths.log_file(NAME)
    with process.lock(paths.lock_file(NAME)):
        current = status(home, host=host, port=port, var_dir=var_dir)
        if current.ready:
            return False
        if current.pid is not None:
            process.wait_ready(
                NAME, current.pid, lambda: is_ready(host, port), timeout=timeout, log_file=log_file
            )
            return False
        if process.port_open(host, port):
            raise process.ServiceError(
                f"{host}:{port} is taken by a program that is not the emulator"
            )
        db_dir = paths.data_dir("warehouse")
        args = [python or sys.executable, str(_SERVER), "--host", host, "--port", str(port)]
        args += ["--db-dir", str(db_dir)]
        if idle_session_timeout_s > 0:
            args += ["--idle-session-timeout-s", str(idle_session_timeout_s)]
        pid = process.spawn(args, log_file=log_file, pid_file=paths.pid_file(NAME), cwd=paths.root)
        try:
            process.wait_ready(
                NAME, pid, lambda: is_ready(host, port), timeout=timeout, log_file=log_file
            )
        except process.ServiceError:
            process.kill(pid)
            raise
        logger.info("emulator ready on %s:%s (pid %s), databases in %s", host, port, pid, db_dir)
        return True


def stop(
    home: str | os.PathLike[str] | None = None,
    *,
    var_dir: str | os.PathLike[str] | None = None,
    timeout: float = 20.0,
) -> bool:
    """Stop our emulator (SIGTERM, then SIGKILL after `timeout`); False if it was not running."""
    paths = ServicePaths.at(home, var_dir)
    return process.end(paths, NAME, _MARKER, lambda pid: process.terminate(pid, timeout=timeout))


def kill(
    home: str | os.PathLike[str] | None = None, *, var_dir: str | os.PathLike[str] | None = None
) -> bool:
    """SIGKILL our emulator at once (fault tests)."""
    return process.end(ServicePaths.at(home, var_dir), NAME, _MARKER, process.kill)
