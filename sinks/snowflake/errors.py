"""The one place warehouse errors are classified, by error code (never by message text).

Retryable: lost or refused connections, timeouts, expired sessions, HTTP 5xx/429 from the
service, lock and transaction conflicts. Misfit: a failure a record's *data* can cause (a value
Snowflake refuses for its column, a string or document over the LOB size, an identifier that
does not resolve): neither retried as is nor fatal, the sink isolates the records that cause it
and sends them to the DLQ (isolation.py, misfits.py). Fatal: everything else (SQL compilation,
missing objects, privileges, bad credentials, quota). All carry the table and the statement
kind, so an operator reads *where* it failed; data errors never quote the value.

The misfit codes and where Snowflake shows them (messages as Snowflake prints them):
- 000904 (42000) "invalid identifier" (a column the statement names is not there);
- 100035 (22007) "Timestamp '...' is not recognized";
- 100038 (22018) "Numeric value '...' is not recognized";
- 100039 (22003) "Numeric value '...' is out of range" (TO_DECIMAL docs);
- 100046 (22003) "Number out of representable range" (DML into a NUMBER column);
- 100069 (22P02) "Error parsing JSON" (includes "document is too large, max size 16777216
  bytes" and invalid UTF-8 inside a document);
- 100078 (22000) "String '...' is too long and would be truncated";
- 100082 (22000) "Max LOB size (16777216) exceeded, actual size of parsed column is ..."
  (docs: "String & binary data types", "Semi-structured data types").
"""

from __future__ import annotations

from schemas.errors import FatalError, RetryableError, SegflowError

# Client-side codes of snowflake-connector-python (snowflake.connector.errorcode).
_RETRYABLE_CLIENT = {
    250001,  # ER_FAILED_TO_CONNECT_TO_DB
    250002,  # ER_CONNECTION_IS_CLOSED
    250003,  # ER_FAILED_TO_REQUEST
    250005,  # ER_FAILED_TO_SERVER
    251011,  # ER_CONNECTION_TIMEOUT
    251012,  # ER_RETRYABLE_CODE
    252007,  # ER_FAILED_TO_RENEW_SESSION
    252010,  # ER_CHUNK_DOWNLOAD_FAILED
    252013,  # ER_INCOMPLETE_RESULT_CHUNK
    253003,  # ER_FAILED_TO_UPLOAD_TO_STAGE
}
# Server-side codes of Snowflake.
_RETRYABLE_SERVER = {
    604,  # statement canceled (statement timeout)
    625,  # lock wait: too many waiters / lock timeout
    630,  # statement reached its statement or warehouse timeout
    390111,  # session no longer exists
    390112,  # session expired
    390114,  # authentication token expired
    390103,  # session token not found (server restarted)
    390104,  # user must log in again
}
# Never retried even though their SQLSTATE class (08) says "connection": bad credentials.
_FATAL = {
    390100,  # incorrect username or password
    390101,  # user is disabled / locked
    390102,  # account is disabled
    390144,  # JWT token is invalid (key-pair auth)
    390189,  # role does not exist or is not authorized
}
# Server-side codes a record's data can cause (see the module docstring for their messages).
MISFIT_CODES = frozenset({904, 100035, 100038, 100039, 100046, 100069, 100078, 100082})
# HTTP statuses the connector reports as 290000 + status.
_HTTP_BASE = 290000
_RETRYABLE_HTTP = {401, 408, 429, 500, 502, 503, 504}
# SQLSTATE classes: 08 connection exception, 40 transaction rollback (serialization, deadlock).
_RETRYABLE_SQLSTATE_CLASSES = ("08", "40")


class WarehouseRetryableError(RetryableError):
    """A transient warehouse failure: the flush rolled back; back off and retry it."""


class WarehouseFatalError(FatalError):
    """A warehouse failure retrying cannot fix: the sink stops, naming table and statement."""


class WarehouseMisfitError(SegflowError):
    """A statement failed because of what some record holds (a value, a size, a name): the
    flush rolled back; retrying the same batch fails again, but its other records load once the
    offending ones are set apart (sent to the DLQ). Neither retryable nor fatal."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class FencedError(SegflowError):
    """The offsets moved under us (another instance owns the partition): the flush rolled back."""

    def __init__(self, partitions: list[tuple[str, int]]) -> None:
        super().__init__(f"flush fenced: offsets of {len(partitions)} partitions moved")
        self.partitions = partitions


def is_retryable(errno: int | None, sqlstate: str | None) -> bool:
    """The classification itself: error code first, then SQLSTATE class."""
    if errno is not None:
        if errno in _FATAL:
            return False
        if errno in _RETRYABLE_CLIENT or errno in _RETRYABLE_SERVER:
            return True
        if _HTTP_BASE <= errno < _HTTP_BASE + 1000:
            return errno - _HTTP_BASE in _RETRYABLE_HTTP
    return bool(sqlstate) and str(sqlstate)[:2] in _RETRYABLE_SQLSTATE_CLASSES


def classify(exc: BaseException, *, statement: str, table: str | None = None) -> SegflowError:
    """Wrap any exception raised by a warehouse call into a retryable, misfit or fatal error."""
    if isinstance(exc, SegflowError):
        return exc
    where = f"{statement}" + (f" on {table}" if table else "")
    errno = getattr(exc, "errno", None)
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, ConnectionError | TimeoutError):
        return WarehouseRetryableError(f"warehouse unreachable during {where}: {exc}")
    try:
        code = int(errno) if errno is not None else None
    except (TypeError, ValueError):
        code = None
    # data errors (100xxx) quote the offending value: never put it in a log line
    text = "data conversion error" if code and 100000 <= code < 101000 else _first_line(exc)
    detail = f"{type(exc).__name__} {code}/{sqlstate}: {text}"
    if code in MISFIT_CODES:
        return WarehouseMisfitError(f"data refused during {where}: {detail}", code)
    if is_retryable(code, sqlstate):
        return WarehouseRetryableError(f"transient warehouse error during {where}: {detail}")
    return WarehouseFatalError(
        f"warehouse error during {where}: {detail}. Check the table's layout, the role's "
        "privileges and the connection settings, then restart the sink"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
