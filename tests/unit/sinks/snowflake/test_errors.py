from __future__ import annotations

from schemas.errors import FatalError, RetryableError
from sinks.snowflake.errors import classify, is_retryable


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
    assert isinstance(err, FatalError) and "alice" not in str(err)
    err = classify(ConnectionRefusedError("refused"), statement="copy")
    assert isinstance(err, RetryableError)
