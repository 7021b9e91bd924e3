"""Launcher of the local Snowflake emulator: fakesnow's HTTP server on one DuckDB directory.

`fakesnow -s` ignores `-d DIR` and keeps everything in memory. This launcher points the server
module's shared instance (`fakesnow.server.shared_fs`, fakesnow 0.12.1) at a file-backed
`FakeSnow(db_path=DIR)`, so every connection shares it and data survives a restart; it then
serves `fakesnow.server.app` with uvicorn. Run as a script (it imports nothing of ours):

    python runtime/services/emulator_server.py --host 127.0.0.1 --port 8090 --db-dir var/warehouse
"""

from __future__ import annotations

import argparse
import importlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from fakesnow.instance import FakeSnow

logger = logging.getLogger(__name__)

# `fakesnow.server` is also a function in fakesnow/__init__.py: fetch the module itself.
_server_module: Any = importlib.import_module("fakesnow.server")


class _SessionActivity:
    """ASGI wrapper remembering when each session token was last used (by any request)."""

    def __init__(self, app: Any, last_seen: dict[str, float]) -> None:
        self.app = app
        self.last_seen = last_seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        token = None
        if scope.get("type") == "http":
            for key, value in scope.get("headers", []):
                if key == b"authorization":
                    token = value.decode(errors="replace")[17:-1]
                    self.last_seen[token] = time.monotonic()
                    break
        try:
            await self.app(scope, receive, send)
        finally:
            if token is not None:
                self.last_seen[token] = time.monotonic()


def _reap_idle_sessions(timeout_s: float, last_seen: dict[str, float]) -> None:
    """Close sessions unused for `timeout_s`, rolling back what they left open.

    A client killed inside a transaction never sends COMMIT, ROLLBACK or a logout: without this
    its open transaction would hold its writes (and conflict with every later writer of the same
    rows) until the emulator restarts. Snowflake itself aborts such detached transactions (after
    four idle hours by default, or SYSTEM$ABORT_TRANSACTION)."""
    sessions: dict[str, Any] = _server_module.sessions
    while True:
        time.sleep(min(1.0, timeout_s / 2))
        now = time.monotonic()
        for token, conn in list(sessions.items()):
            seen = last_seen.setdefault(token, now)
            if now - seen < timeout_s:
                continue
            sessions.pop(token, None)
            last_seen.pop(token, None)
            try:
                conn.close()
            except Exception:  # a broken session: dropping it is all that is left to do
                logger.debug("closing an idle session failed", exc_info=True)
            logger.info(
                "closed a session idle for %.0f s (its open transaction rolled back)", now - seen
            )


def serve(host: str, port: int, db_dir: Path, idle_session_timeout_s: float = 0.0) -> None:
    """Serve the emulator until SIGTERM/SIGINT; the databases are files `db_dir/<NAME>.db`.

    With `idle_session_timeout_s` > 0, sessions unused that long are closed (see
    `_reap_idle_sessions`); clients then log in again."""
    db_dir.mkdir(parents=True, exist_ok=True)
    shared = FakeSnow(db_path=db_dir)
    # Attach the databases of earlier runs, so fully qualified names work without a
    # connection that names the database first.
    for db_file in sorted(db_dir.glob("*.db")):
        shared.connect(database=db_file.stem.upper()).close()
    _server_module.shared_fs = shared
    app: Any = _server_module.app
    if idle_session_timeout_s > 0:
        last_seen: dict[str, float] = {}
        app = _SessionActivity(app, last_seen)
        threading.Thread(
            target=_reap_idle_sessions,
            args=(idle_session_timeout_s, last_seen),
            name="session-reaper",
            daemon=True,
        ).start()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        shared.duck_conn.close()  # checkpoint the files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--db-dir", type=Path, required=True)
    parser.add_argument(
        "--idle-session-timeout-s",
        type=float,
        default=0.0,
        help="close sessions unused this long, rolling back their open transactions (0: never)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(args.host, args.port, args.db_dir.resolve(), args.idle_session_timeout_s)


if __name__ == "__main__":
    main()
