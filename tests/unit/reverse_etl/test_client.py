from __future__ import annotations

import gzip
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from reverse_etl.client import (
    ApiError,
    Response,
    RetryPolicy,
    SegmentApiClient,
    retry_after_seconds,
)
from schemas.errors import RetryableError


class FakeApi:
    def __init__(self, answers: Sequence[Response | OSError]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, bytes, dict[str, str]]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
        self.calls.append((url, body, headers))
        answer = self.answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer


def _client(api: FakeApi, slept: list[float], **kw: object) -> SegmentApiClient:
    return SegmentApiClient(
        "http://edge:8088/",
        "wk",
        transport=api,
        sleep=slept.append,
        policy=RetryPolicy(initial_s=1.0, max_s=30.0, max_attempts=3),
        **kw,  # type: ignore[arg-type]
    )


def test_retry_after_forms() -> None:
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 01 May 2024 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Wed, 01 May 2024 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(initial_s=1.0, max_s=10.0, max_attempts=5)
    assert policy.delay(1, None, 1.0) == 1.0 and policy.delay(1, None, 0.0) == 0.5
    assert policy.delay(3, None, 1.0) == 4.0
    assert policy.delay(10, None, 1.0) == 10.0
    assert policy.delay(1, 7.0, 0.0) == 7.0
    assert policy.delay(1, 999.0, 0.0) == 10.0


def test_posts_gzip_with_basic_auth_and_retries_429_5xx_and_network_errors() -> None:
    api = FakeApi(
        [
            Response(429, "3", b""),
            Response(503, None, b""),
            ConnectionRefusedError("refused"),
            Response(200, None, b"{}"),
        ]
    )
    slept: list[float] = []
    outcomes: list[str] = []
    client = _client(api, slept, on_response=outcomes.append)
    client.send(b'{"batch":[]}')  # three retries, then accepted
    assert outcomes == ["429", "503", "network_error", "200"]
    assert slept[0] >= 3.0  # Retry-After honoured
    url, body, headers = api.calls[0]
    assert url == "http://edge:8088/v1/batch"
    assert gzip.decompress(body) == b'{"batch":[]}'
    assert headers["Authorization"] == "Basic d2s6"
    assert headers["Content-Encoding"] == "gzip"


def test_gives_up_after_max_retries() -> None:
    api = FakeApi([Response(503, None, b"")] * 4 + [Response(200, None, b"")])
    slept: list[float] = []
    with pytest.raises(RetryableError) as info:
        _client(api, slept).send(b"{}")
    assert len(api.calls) == 4 and len(slept) == 3
    assert "after 3 retries" in str(info.value)


def test_success_after_retries() -> None:
    api = FakeApi([Response(500, None, b""), Response(200, None, b"")])
    slept: list[float] = []
    client = _client(api, slept, gzip_bodies=False)
    client.send(b"{}")
    assert len(api.calls) == 2 and len(slept) == 1 and client.retries == 1
    assert api.calls[0][1] == b"{}" and "Content-Encoding" not in api.calls[0][2]


def test_other_client_errors_are_fatal_at_once() -> None:
    api = FakeApi([Response(401, None, b'{"code":"unknown_write_key"}')])
    with pytest.raises(ApiError) as info:
        _client(api, []).send(b"{}")
    assert info.value.status == 401 and "unknown_write_key" in str(info.value)
