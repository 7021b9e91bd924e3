"""Write keys as Segment takes them: Basic user name (colon optional) or writeKey in the body."""

from __future__ import annotations

import base64

import pytest

from ingest.auth import WriteKeys, key_from_authorization
from ingest.rejections import Rejection
from runtime.rules import parse_rules

RULES = parse_rules(
    "sources:\n  - {name: web, write_keys: [k1, k2]}\n  - {name: app, write_keys: [k3]}\n"
)


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (basic("k1:"), "k1"),
        (basic("k1"), "k1"),
        (basic("k1:pw"), "k1"),
        ("basic " + basic("k2")[6:], "k2"),
        (None, None),
        ("", None),
        ("Bearer abc", None),
        (basic(":"), None),
    ],
)
def test_key_from_authorization(header: str | None, key: str | None) -> None:
    assert key_from_authorization(header) == key


def test_malformed_basic_is_401() -> None:
    with pytest.raises(Rejection) as info:
        key_from_authorization("Basic !!!not-base64")
    assert (info.value.status, info.value.code) == (401, "malformed_authorization")


def test_keys_map_to_sources_header_first() -> None:
    keys = WriteKeys(RULES)
    assert keys.source("k1", None).name == "web"
    assert keys.source(None, "k3").name == "app"
    assert keys.source("k3", "k1").name == "app"
    assert keys.by_name("web") is not None and keys.by_name("nope") is None


@pytest.mark.parametrize(
    ("header", "body", "code"),
    [
        (None, None, "missing_write_key"),
        (None, "", "missing_write_key"),
        ("nope", None, "unknown_write_key"),
        (None, 5, "unknown_write_key"),
    ],
)
def test_missing_or_unknown_keys_are_401(header: str | None, body: object, code: str) -> None:
    with pytest.raises(Rejection) as info:
        WriteKeys(RULES).source(header, body)
    assert (info.value.status, info.value.code) == (401, code)
