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
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import snowflake.connector
import sqlglot
import sqlglot.errors
import uvicorn
from fakesnow.instance import FakeSnow
from sqlglot import exp

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


class _Translations:
    """fakesnow's work on a statement's text that depends on the text alone, remembered.

    fakesnow parses every statement with sqlglot, runs some 76 rewriting passes over its tree
    and parses it again as DuckDB SQL to describe its result: for the sink's statements, which
    repeat their text flush after flush (the values are binds), that was about a quarter of the
    emulator's time and a third of its multi-table insert's (py-spy, in
    bench/results/cost-per-event.md). A statement seen before takes a copy of the trees made
    the first time. Bounded by the texts' total size (least recently used first out); a text
    over an eighth of the budget is not kept. A tree
    takes ~240 bytes per character of its text (tracemalloc, 40-column INSERT ... SELECTs): the
    default budget, 1 million characters, is ~250 MB at most; one sink's statements in
    bench/e2e.py came to ~120,000 characters."""

    def __init__(self, budget_chars: int) -> None:
        self.budget = budget_chars
        self.entries: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        self.chars = 0
        self.hits = 0
        self.misses = 0
        self.lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any:
        """A copy of the tree kept under `key`, or None."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self.entries.move_to_end(key)
            self.hits += 1
        return entry[0].copy()

    def through(self, key: tuple[Any, ...], chars: int, make: Callable[[], Any]) -> Any:
        """The tree kept under `key`, else `make()`'s, kept (an exception is raised, not kept)."""
        tree = self.get(key)
        if tree is None:
            tree = make()
            self.put(key, tree, chars)
        return tree

    def summary(self) -> str:
        """One line on what is kept and how often it served, for the log."""
        with self.lock:
            return (
                f"translations remembered: {len(self.entries)} of {self.chars:,} characters "
                f"(budget {self.budget:,}); {self.hits:,} hits, {self.misses:,} misses"
            )

    def put(self, key: tuple[Any, ...], tree: Any, chars: int) -> None:
        """Keep a copy of `tree` (made from a text of `chars` characters) under `key`."""
        if chars > self.budget // 8:
            return
        kept = tree.copy()
        with self.lock:
            old = self.entries.pop(key, None)
            if old is not None:
                self.chars -= old[1]
            self.entries[key] = (kept, chars)
            self.chars += chars
            while self.chars > self.budget:
                _, (_, size) = self.entries.popitem(last=False)
                self.chars -= size


DEFAULT_TRANSLATION_CHARS = 1_000_000
_TRANSLATIONS = _Translations(DEFAULT_TRANSLATION_CHARS)  # see _Translations

_MULTITABLE = re.compile(r"\s*INSERT\s+(OVERWRITE\s+)?(?:ALL|FIRST)\b", re.IGNORECASE)
_ROWS_INSERTED = "number of rows inserted into {}"
_TRANSACTION = re.compile(r"\s*(BEGIN|START|COMMIT|ROLLBACK)\b", re.IGNORECASE)


def _compilation_error(message: str) -> Exception:
    return snowflake.connector.errors.ProgrammingError(
        f"SQL compilation error: {message}", errno=1003, sqlstate="42000"
    )


def _check_values(values: Any) -> None:
    """Snowflake's rule for an INTO clause's VALUES: source column names, NULL or DEFAULT."""
    for item in values.expressions[0].expressions if values is not None else []:
        if not (
            (isinstance(item, exp.Column) and not item.table)
            or isinstance(item, exp.Null)
            or (isinstance(item, exp.Var) and item.name.upper() == "DEFAULT")
        ):
            raise _compilation_error(
                "the VALUES of a multi-table insert name source columns, NULL or DEFAULT only, "
                f"not {item.sql(dialect='snowflake')}"
            )


# what the scan for a multi-table insert's subquery skips or counts: comments, string literals
# ('...' and $$...$$), quoted identifiers, parentheses; and the words that may start a subquery
_SCAN = re.compile(
    r"--[^\n]*|/\*.*?\*/|'(?:[^'\\]|\\.|'')*'|\$\$.*?\$\$|\"(?:[^\"]|\"\")*\"|[()]"
    r"|(?<![\w$])(?:SELECT|WITH)\b",
    re.IGNORECASE | re.DOTALL,
)


def _subquery_start(command: str) -> int | None:
    """Where the subquery of a multi-table insert starts in its text: the first SELECT or WITH
    outside parentheses, comments, string literals and quoted identifiers (WHEN conditions hold
    subqueries only in parentheses)."""
    depth = 0
    for match in _SCAN.finditer(command):
        text = match.group()
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
        elif depth == 0 and text[0].isalpha():
            return match.start()
    return None


def _quoted(ident: Any) -> str:
    """A Snowflake identifier as a DuckDB one (unquoted ones upper-case, as Snowflake reads
    them)."""
    name = ident.name if ident.args.get("quoted") else ident.name.upper()
    return '"' + name.replace('"', '""') + '"'


_DUCK_ERRORS: dict[str, tuple[int, str]] = {  # as fakesnow reports them
    "ConversionException": (100035, "22007"),
    "CatalogException": (2003, "42S02"),
    "ParserException": (1003, "42000"),
    "BinderException": (2043, "02000"),
}


def _as_snowflake_error(exc: Exception) -> Exception:
    """A DuckDB error as the ProgrammingError fakesnow makes of it (others: a generic one, so
    the client gets an error answer, not an HTTP 500 it would retry)."""
    code = _DUCK_ERRORS.get(type(exc).__name__, (100090, "22000"))
    msg = str(exc.args[0] if exc.args else exc).split("\n")[0]
    return snowflake.connector.errors.ProgrammingError(msg=msg, errno=code[0], sqlstate=code[1])


def _when_column(k: int) -> str:
    """The subquery's column holding the k-th WHEN group's condition."""
    return f'"#SEGFLOW_WHEN_{k}"'


def _multitable_insert(cursor: Any, execute: Any, command: str, params: Any, kwargs: Any) -> Any:
    """Snowflake's multi-table INSERT (``INSERT ALL|FIRST [WHEN c THEN] INTO t [(cols)]
    [VALUES (source columns)] ... [ELSE INTO ...] <subquery>``), which DuckDB lacks, run as
    Snowflake documents it ("INSERT (multi-table)"): the subquery is evaluated once, before any
    row is inserted; each of its rows goes to every INTO clause whose WHEN holds (ALL) or to
    the first one's (FIRST), to the ELSE clause's when none holds; VALUES name source columns,
    NULL or DEFAULT only (without VALUES: the subquery's columns in order); the statement is
    all or nothing.

    Here the subquery, with each WHEN condition as a column of its own, runs once through
    fakesnow (its transforms and error codes) into Arrow; each INTO clause is then an INSERT ...
    SELECT of plain column references from those rows, straight to DuckDB, in the caller's
    transaction (in one of its own under autocommit). The result is Snowflake's: one row, a
    "number of rows inserted into <TABLE>" column per target table (several INTO clauses of one
    table: their sum). Not supported: OVERWRITE, and binds outside the subquery (refused, not
    ignored)."""
    try:
        return _run_multitable_insert(cursor, execute, command, params, kwargs)
    except sqlglot.errors.ParseError as exc:
        raise _compilation_error(str(exc).split("\n")[0]) from exc


def _run_multitable_insert(
    cursor: Any, execute: Any, command: str, params: Any, kwargs: Any
) -> Any:
    # the INTO clauses are parsed here, the subquery (most of the text) only by fakesnow
    start = _subquery_start(command)
    if start is None:
        raise _compilation_error("a multi-table insert needs a subquery")
    head = command[:start] + " SELECT 1"
    tree = _TRANSLATIONS.through(
        ("multitable", head), len(head), lambda: sqlglot.parse_one(head, read="snowflake")
    )
    if not isinstance(tree, exp.MultitableInserts):
        return execute(cursor, command, params, **kwargs)
    if _MULTITABLE.match(command).group(1):  # type: ignore[union-attr]  # sqlglot drops it
        raise _compilation_error("the emulator does not support INSERT OVERWRITE ALL|FIRST")
    if tree.find(exp.Placeholder) is not None:
        raise _compilation_error("the emulator takes binds in the subquery of INSERT ALL only")
    binds = kwargs.get("binding_params") if "binding_params" in kwargs else params
    server = {"server": True} if kwargs.get("server") else {}

    # WHEN groups in order: (condition, ELSE?, their INTO clauses); an INTO without a condition
    # of its own belongs to the WHEN or ELSE before it (with no WHEN at all: unconditional)
    groups: list[tuple[Any, bool, list[Any]]] = []
    for branch in tree.expressions:
        insert = branch.this
        _check_values(insert.expression)
        is_else = bool(branch.args.get("else_"))
        if branch.expression is None and not is_else and groups:
            groups[-1][2].append(insert)
        else:
            groups.append((branch.expression, is_else, [insert]))
    first = str(tree.args.get("kind") or "ALL").upper() == "FIRST"
    conditional = any(c is not None or e for c, e, _ in groups)
    if conditional and groups[0][0] is None:
        raise _compilation_error("a conditional multi-table insert starts with a WHEN clause")
    if not conditional and first:
        raise _compilation_error("an unconditional multi-table insert is INSERT ALL")

    # each WHEN condition, evaluated in the subquery, as a column of its own
    whens = {k: c for k, (c, e, _) in enumerate(groups) if c is not None and not e}
    text = command[start:].rstrip().rstrip(";")
    flags = [
        f"COALESCE(({c.sql(dialect='snowflake')}), FALSE) AS {_when_column(k)}"
        for k, c in whens.items()
    ]
    wrapped = f"SELECT *, {', '.join(flags)} FROM ({text}\n)" if flags else text
    if binds and "binding_params" in kwargs:  # through the server
        execute(cursor, wrapped, binding_params=binds, **server)
    else:
        execute(cursor, wrapped, binds or None, **server)
    rows = cursor._arrow_table  # fakesnow's result of the statement just run
    source = rows.column_names[: len(rows.column_names) - len(whens)]
    duck = cursor._duck_conn
    held = [_when_column(k) for k in whens]
    counts: dict[str, int] = {}  # by target table, in the order of the INTO clauses
    # all or nothing: in the caller's transaction; else, under autocommit, in one of its own;
    # with autocommit off, the statement opens the session's transaction, as DML does
    own_transaction = False
    if not cursor._conn._autocommit:
        if not cursor._conn._in_transaction:
            duck.begin()
            cursor._conn._in_transaction = True
    elif not getattr(cursor._conn, "segflow_in_transaction", False):
        duck.begin()
        own_transaction = True
    try:
        earlier: list[str] = []
        for k, (condition, is_else, inserts) in enumerate(groups):
            if is_else:
                where = " AND ".join(f"NOT {c}" for c in held) or "TRUE"
            elif condition is None:
                where = "TRUE"
            else:
                own = _when_column(k)
                where = " AND ".join([*(f"NOT {c}" for c in earlier), own]) if first else own
                earlier.append(own)
            for insert in inserts:
                name, n = _insert_into(cursor, duck, insert, rows, source, where)
                counts[name] = counts.get(name, 0) + n
        if own_transaction:
            duck.execute("COMMIT")
    except BaseException:
        if own_transaction:
            duck.execute("ROLLBACK")
        raise
    columns = ", ".join(
        f'{n} AS "{_ROWS_INSERTED.format(name).replace(chr(34), chr(34) * 2)}"'
        for name, n in counts.items()
    )
    return execute(cursor, f"SELECT {columns}", None, **server)


def _insert_into(
    cursor: Any, duck: Any, insert: Any, rows: Any, source: list[str], where: str
) -> tuple[str, int]:
    """One INTO clause: the subquery's `rows` (Arrow; `source`, its own columns) where `where`
    holds, into its table, straight to DuckDB; (the table's name as Snowflake reports it, the
    rows inserted). DuckDB reads `rows` by its local name (a replacement scan, as fakesnow reads
    a PUT's listing): nothing is registered, so nothing is left behind when the statement fails
    inside a transaction, which DuckDB then takes no other statement in before its rollback."""
    _segflow_multitable_rows = rows  # read by name by DuckDB below
    target = insert.this
    table = target.this if isinstance(target, exp.Schema) else target
    names = [_quoted(n) for n in target.expressions] if isinstance(target, exp.Schema) else None
    values = insert.expression
    if values is not None:
        items = list(values.expressions[0].expressions)
    else:  # the subquery's columns, in order
        items = [exp.column(exp.to_identifier(n, quoted=True)) for n in source]
    if names is not None and len(names) != len(items):
        raise _compilation_error(
            f"{len(names)} columns of {table.sql(dialect='snowflake')} take {len(items)} values"
        )
    pairs = [
        (n, v)
        for n, v in zip(names if names is not None else [None] * len(items), items, strict=True)
        if not (isinstance(v, exp.Var) and v.name.upper() == "DEFAULT")  # the column's default
    ]
    if names is None and len(pairs) != len(items):
        raise _compilation_error("DEFAULT takes a column list in a multi-table insert")
    catalog = _quoted(table.args["catalog"]) if table.args.get("catalog") else None
    schema = _quoted(table.args["db"]) if table.args.get("db") else None
    if catalog is None:
        catalog = '"' + str(cursor._conn.database).replace('"', '""') + '"'
    if schema is None:
        if not cursor._conn.schema:
            raise _compilation_error("no current schema for an unqualified INTO table")
        schema = '"' + str(cursor._conn.schema).replace('"', '""') + '"'
    ident = table.args["this"]
    into = f"{catalog}.{schema}.{_quoted(ident)}"
    select = ", ".join("NULL" if isinstance(v, exp.Null) else _quoted(v.this) for _, v in pairs)
    column_list = "" if names is None else " (" + ", ".join(str(n) for n, _ in pairs) + ")"
    sql = (
        f"INSERT INTO {into}{column_list} SELECT {select} "
        f"FROM _segflow_multitable_rows WHERE {where}"
    )
    try:
        (inserted,) = duck.execute(sql).fetchone()
    except duckdb.Error as exc:
        raise _as_snowflake_error(exc) from exc
    name = ident.name if ident.args.get("quoted") else ident.name.upper()
    return name, int(inserted)


def _install_multitable_insert() -> None:
    """fakesnow's cursors run multi-table inserts (`_multitable_insert`); other statements as
    before."""
    cls: Any = importlib.import_module("fakesnow.cursor").FakeSnowflakeCursor
    original = cls.execute
    if getattr(original, "segflow_multitable", False):
        return

    def execute(self: Any, command: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(command, str) and _MULTITABLE.match(command):
            return _multitable_insert(self, original, command, params, kwargs)
        result = original(self, command, params, *args, **kwargs)
        if isinstance(command, str) and (tx := _TRANSACTION.match(command)):
            # whether the session is inside BEGIN ... COMMIT|ROLLBACK (fakesnow keeps count only
            # with autocommit off)
            self._conn.segflow_in_transaction = tx.group(1).upper() in ("BEGIN", "START")
        return result

    execute.segflow_multitable = True  # type: ignore[attr-defined]
    cls.execute = execute


# statements whose translation depends on their text, the session's database and schema only
# (other kinds read the catalog, stages, variables or binds while translated: CREATE ... AS,
# PUT, LIST, SET, IDENTIFIER(?)), and that fakesnow does not split into several
_STABLE = (exp.Select, exp.Union, exp.Insert, exp.Update, exp.Delete)
_TEXT_KEY = "segflow_text"
_NOT_STABLE = re.compile(r"IDENTIFIER|@|\bOVERWRITE\b", re.IGNORECASE)


def _install_translations(memo: _Translations) -> None:
    """fakesnow's parse, rewrite and describe parse of a statement, through `memo`."""
    cursor_module: Any = importlib.import_module("fakesnow.cursor")
    dialect: Any = importlib.import_module("fakesnow.dialect")
    cls = cursor_module.FakeSnowflakeCursor
    if getattr(cls._transform, "segflow_translations", None) is memo:
        return
    parse = dialect.parse_one
    transform = getattr(cls._transform, "segflow_original", cls._transform)

    def parse_one(command: str) -> Any:
        tree = memo.get(("parse", command))
        if tree is None:
            tree = parse(command)  # a syntax error is raised, not kept
            if not isinstance(tree, _STABLE) or _NOT_STABLE.search(command):
                return tree  # PUT, COPY, DDL: often a text of their own (file, load id) each time
            memo.put(("parse", command), tree, len(command))
        tree.meta[_TEXT_KEY] = command
        return tree

    def _transform(self: Any, expression: Any, params: Any) -> Any:
        text = expression.meta.get(_TEXT_KEY)
        if text is None:
            return transform(self, expression, params)
        key = ("transform", text, self._conn.database, self._conn.schema)
        return memo.through(key, len(text), lambda: transform(self, expression, params))

    def _describe_last_sql(self: Any) -> list[Any]:
        text = f"DESCRIBE {self._last_sql}"
        expression = memo.through(
            ("describe", text), len(text), lambda: sqlglot.parse_one(text, read="duckdb")
        )
        with self._conn.cursor() as cur:  # another cursor: this one's result stays
            cur._execute(expression, self._last_params)
            return cur.fetchall()

    _transform.segflow_translations = memo  # type: ignore[attr-defined]
    _transform.segflow_original = transform  # type: ignore[attr-defined]
    cursor_module.parse_one = parse_one
    _server_module.parse_one = parse_one
    cls._transform = _transform
    cls._describe_last_sql = _describe_last_sql


def _checkpoint_when_idle(duck_conn: Any, activity: _Activity, idle_s: float) -> None:
    """Write each database's log into its file once no request has run for `idle_s`.

    DuckDB checkpoints a database inside the commit that takes its write-ahead log past
    `checkpoint_threshold`, and that commit waits for it: with a sink loading steadily, one
    flush every ~20 s took 2-3 s instead of 0.5-0.9 s (bench/results/cost-per-event.md). A
    Snowflake warehouse has no such pause. The emulator therefore sets a high threshold and
    checkpoints here, between requests, which also keeps the log that a killed emulator
    replays at its next start short. Each idle spell also logs what `_TRANSLATIONS` holds."""
    cursor = duck_conn.cursor()
    checkpointed_at = 0.0
    while True:
        time.sleep(idle_s / 4)
        if activity.in_flight or time.monotonic() - activity.last_end < idle_s:
            continue
        if activity.last_end <= checkpointed_at:
            continue  # nothing ran since the last checkpoint
        checkpointed_at = activity.last_end
        if _TRANSLATIONS.budget > 0:
            logger.info("%s", _TRANSLATIONS.summary())
        try:
            rows = cursor.execute(
                "SELECT database_name, path FROM duckdb_databases() WHERE path IS NOT NULL"
            ).fetchall()
            for name, path in rows:
                wal = Path(f"{path}.wal")
                size = wal.stat().st_size if wal.exists() else 0
                if size > _IDLE_CHECKPOINT_MIN_BYTES:
                    quoted = '"' + name.replace('"', '""') + '"'
                    started = time.monotonic()
                    cursor.execute(f"CHECKPOINT {quoted}")
                    logger.info(
                        "checkpointed %s (a %.0f MB log) in %.2f s",
                        name,
                        size / 1e6,
                        time.monotonic() - started,
                    )
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
    translation_chars: int = DEFAULT_TRANSLATION_CHARS,
) -> None:
    """Serve the emulator until SIGTERM/SIGINT; the databases are files `db_dir/<NAME>.db`.

    With `idle_session_timeout_s` > 0, sessions unused that long are closed (see
    `_reap_idle_sessions`); clients then log in again. DuckDB checkpoints inside a commit only
    past `checkpoint_threshold`; otherwise after `idle_checkpoint_s` without requests (see
    `_checkpoint_when_idle`). Translations of statements seen before are remembered up to
    `translation_chars` of their texts (0: none; see `_Translations`)."""
    if translation_chars < 0:
        raise ValueError(f"--translation-chars: not a count of characters: {translation_chars}")
    db_dir.mkdir(parents=True, exist_ok=True)
    _install_multitable_insert()
    _TRANSLATIONS.budget = translation_chars
    if translation_chars > 0:
        _install_translations(_TRANSLATIONS)
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
    parser.add_argument(
        "--translation-chars",
        type=int,
        default=DEFAULT_TRANSLATION_CHARS,
        help="remember the translations of statements seen before, up to this many characters "
        "of their texts (0: translate every statement anew)",
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
        args.translation_chars,
    )


if __name__ == "__main__":
    main()
