from __future__ import annotations

from schemas.errors import FatalError, RetryableError
from sinks.snowflake.errors import WarehouseMisfitError, classify, is_retryable


class ConnectorError(Exception):
    def __init__(self, msg: str, errno: int | None, sqlstate: str | None = None) -> None:
        super().__init__(msg)
        self.errno = errno
        self.sqlstate = sqlstate


def test_transient_codes_are_retryable() -> None:
    assert is_retryable(250003, None)  # failed to execute request (connection refused)
    assert is_retryable(290503, None)  # HTTP 503
    assert is_retryable(290401, "08001")  # session gone after a restart
    assert is_retryable(625, "57014")  # lock wait
    assert is_retryable(None, "08006")
    assert is_retryable(12345, "40001")  # serialization failure


def test_everything_else_is_fatal() -> None:
    assert not is_retryable(2003, "42S02")  # object does not exist
    assert not is_retryable(1003, "42000")  # syntax
    assert not is_retryable(390100, "08004")  # wrong password
    assert not is_retryable(290404, None)


def test_classify_names_statement_and_table_and_hides_data_values() -> None:
    err = classify(
        ConnectorError("Table X does not exist", 2003, "42S02"), statement="insert", table="tracks"
    )
    assert isinstance(err, FatalError) and "insert on tracks" in str(err)
    err = classify(
        ConnectorError("Numeric value 'alice@x.com' is not recognized", 100038, "22018"),
        statement="insert",
        table="users",
    )
    assert isinstance(err, WarehouseMisfitError) and "alice" not in str(err)
    err = classify(ConnectionRefusedError("refused"), statement="copy")
    assert isinstance(err, RetryableError)


def test_data_errors_are_misfits_neither_retryable_nor_fatal() -> None:
    cases = [
        (904, "42000"),  # invalid identifier
        (100035, "22007"),  # timestamp not recognized
        (100038, "22018"),  # numeric value not recognized
        (100039, "22003"),  # numeric value out of range
        (100046, "22003"),  # number out of representable range
        (100069, "22P02"),  # error parsing JSON (too large, invalid UTF-8)
        (100078, "22000"),  # string too long
        (100082, "22000"),  # max LOB size exceeded
    ]
    for code, state in cases:
        err = classify(ConnectorError("'secret@x.com'", code, state), statement="copy")
        assert isinstance(err, WarehouseMisfitError), code
        assert not isinstance(err, RetryableError | FatalError)
        assert err.code == code


def test_warehouse_wide_failures_stay_retryable_or_fatal() -> None:
    auth = classify(ConnectorError("bad password", 390100, "08004"), statement="login")
    assert isinstance(auth, FatalError)
    denied = classify(ConnectorError("insufficient privileges", 3001, "42501"), statement="ddl")
    assert isinstance(denied, FatalError)
    net = classify(ConnectorError("503", 290503, None), statement="copy")
    assert isinstance(net, RetryableError)
    missing = classify(ConnectorError("no such table", 2003, "42S02"), statement="insert")
    assert isinstance(missing, FatalError)
