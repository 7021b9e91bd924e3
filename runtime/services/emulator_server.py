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
import re
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from fakesnow.instance import FakeSnow

logger = logging.getLogger(__name__)

# DuckDB's default is 16 MB; see `_checkpoint_when_idle` for why the emulator's is higher.
DEFAULT_CHECKPOINT_THRESHOLD = "1GB"
DEFAULT_IDLE_CHECKPOINT_S = 2.0
_IDLE_CHECKPOINT_MIN_BYTES = 1 << 20


def _size(text: str) -> str:
    """`text` if it is a DuckDB memory size such as 16MB or 1GB; ValueError otherwise."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?\s*(B|KB|MB|GB|KiB|MiB|GiB)", text.strip()):
        raise ValueError(f"--checkpoint-threshold: not a size such as 16MB or 1GB: {text!r}")
    return text.strip()


# `fakesnow.server` is also a function in fakesnow/__init__.py: fetch the module itself.
_server_module: Any = importlib.import_module("fakesnow.server")


class _Activity:
    """ASGI wrapper counting requests in flight, and remembering when the last one ended and
    when each session token was last used (by any request)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last_seen: dict[str, float] = {}
        self.in_flight = 0
        self.last_end = time.monotonic()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":  # the lifespan scope lasts as long as the server
            await self.app(scope, receive, send)
            return
        token = None
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                token = value.decode(errors="replace")[17:-1]
                self.last_seen[token] = time.monotonic()
                break
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.last_end = time.monotonic()
            if token is not None:
                self.last_seen[token] = self.last_end


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


def _checkpoint_when_idle(duck_conn: Any, activity: _Activity, idle_s: float) -> None:
    """Write each database's log into its file once no request has run for `idle_s`.

    DuckDB checkpoints a database inside the commit that takes its write-ahead log past
    `checkpoint_threshold`, and that commit waits for it: with a sink loading steadily, one
    flush every ~20 s took 2-3 s instead of 0.5-0.9 s (bench/results/cost-per-event.md). A
    Snowflake warehouse has no such pause. The emulator therefore sets a high threshold and
    checkpoints here, between requests, which also keeps the log that a killed emulator
    replays at its next start short."""
    cursor = duck_conn.cursor()
    checkpointed_at = 0.0
    while True:
        time.sleep(idle_s / 4)
        if activity.in_flight or time.monotonic() - activity.last_end < idle_s:
            continue
        if activity.last_end <= checkpointed_at:
            continue  # nothing ran since the last checkpoint
        checkpointed_at = activity.last_end
        try:
            rows = cursor.execute(
                "SELECT database_name, path FROM duckdb_databases() WHERE path IS NOT NULL"
            ).fetchall()
            for name, path in rows:
                wal = Path(f"{path}.wal")
                if wal.exists() and wal.stat().st_size > _IDLE_CHECKPOINT_MIN_BYTES:
                    quoted = '"' + name.replace('"', '""') + '"'
                    cursor.execute(f"CHECKPOINT {quoted}")
        except Exception:  # a database detached or busy meanwhile: the next idle spell retries
            logger.warning("idle checkpoint failed", exc_info=True)
            checkpointed_at = 0.0


def serve(
    host: str,
    port: int,
    db_dir: Path,
    idle_session_timeout_s: float = 0.0,
    checkpoint_threshold: str = DEFAULT_CHECKPOINT_THRESHOLD,
    idle_checkpoint_s: float = DEFAULT_IDLE_CHECKPOINT_S,
) -> None:
    """Serve the emulator until SIGTERM/SIGINT; the databases are files `db_dir/<NAME>.db`.

    With `idle_session_timeout_s` > 0, sessions unused that long are closed (see
    `_reap_idle_sessions`); clients then log in again. DuckDB checkpoints inside a commit only
    past `checkpoint_threshold`; otherwise after `idle_checkpoint_s` without requests (see
    `_checkpoint_when_idle`)."""
    db_dir.mkdir(parents=True, exist_ok=True)
    shared = FakeSnow(db_path=db_dir)
    shared.duck_conn.execute(f"SET checkpoint_threshold = '{_size(checkpoint_threshold)}'")
    # Attach the databases of earlier runs, so fully qualified names work without a
    # connection that names the database first.
    for db_file in sorted(db_dir.glob("*.db")):
        shared.connect(database=db_file.stem.upper()).close()
    _server_module.shared_fs = shared
    activity = _Activity(_server_module.app)
    if idle_session_timeout_s > 0:
        threading.Thread(
            target=_reap_idle_sessions,
            args=(idle_session_timeout_s, activity.last_seen),
            name="session-reaper",
            daemon=True,
        ).start()
    if idle_checkpoint_s > 0:
        threading.Thread(
            target=_checkpoint_when_idle,
            args=(shared.duck_conn, activity, idle_checkpoint_s),
            name="idle-checkpoint",
            daemon=True,
        ).start()
    config = uvicorn.Config(
        activity,
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
    parser.add_argument(
        "--checkpoint-threshold",
        default=DEFAULT_CHECKPOINT_THRESHOLD,
        help="write-ahead log size past which a commit checkpoints (DuckDB's default: 16MB)",
    )
    parser.add_argument(
        "--idle-checkpoint-s",
        type=float,
        default=DEFAULT_IDLE_CHECKPOINT_S,
        help="checkpoint once no request has run this long (0: only past the threshold)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(
        args.host,
        args.port,
        args.db_dir.resolve(),
        args.idle_session_timeout_s,
        args.checkpoint_threshold,
        args.idle_checkpoint_s,
    )


if __name__ == "__main__":
    main()
