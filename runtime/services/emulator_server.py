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
from pathlib import Path
from typing import Any

import uvicorn
from fakesnow.instance import FakeSnow

logger = logging.getLogger(__name__)

# `fakesnow.server` is also a function in fakesnow/__init__.py: fetch the module itself.
_server_module: Any = importlib.import_module("fakesnow.server")


def serve(host: str, port: int, db_dir: Path) -> None:
    """Serve the emulator until SIGTERM/SIGINT; the databases are files `db_dir/<NAME>.db`."""
    db_dir.mkdir(parents=True, exist_ok=True)
    shared = FakeSnow(db_path=db_dir)
    # Attach the databases of earlier runs, so fully qualified names work without a
    # connection that names the database first.
    for db_file in sorted(db_dir.glob("*.db")):
        shared.connect(database=db_file.stem.upper()).close()
    _server_module.shared_fs = shared
    config = uvicorn.Config(
        _server_module.app,
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(args.host, args.port, args.db_dir.resolve())


if __name__ == "__main__":
    main()
