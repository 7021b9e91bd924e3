from __future__ import annotations

import pytest

from schemas.naming import (
    MAX_IDENTIFIER_LENGTH,
    cut_text,
    event_table_name,
    flatten,
    path_column,
    snake_case,
)


@pytest.mark.parametrize(
    ("name", "column"),
    [
        # Segment's documented examples
        ("sampleText", "sample_text"),
        ("FOO:BAR$BAZ", "foo_bar_baz"),
        ("___$$Base64Encode", "base64_encode"),
        # more of the same rules
        ("userID", "user_id"),
        ("HTMLParser", "html_parser"),
        ("Order Completed", "order_completed"),
        ("already_snake", "already_snake"),
        ("  spaced  out ", "spaced_out"),
        ("9lives", "_9lives"),
        ("$$$", ""),
    ],
)
def test_snake_case(name: str, column: str) -> None:
    assert snake_case(name) == column


def test_dotted_path() -> None:
    assert path_column("context.app.version") == "context_app_version"


def test_flatten_nested_objects_and_arrays() -> None:
    flat = dict(
        flatten({"app": {"version": "1.2", "build": {"number": 7}}, "tags": ["a", "b"]}, "context")
    )
    assert flat == {
        "context_app_version": "1.2",
        "context_app_build_number": 7,
        "context_tags": '["a","b"]',
    }


def test_identifiers_are_cut() -> None:
    assert len(snake_case("a" * 1000)) == MAX_IDENTIFIER_LENGTH


def test_event_tables_never_take_a_reserved_name() -> None:
    assert event_table_name("Order Completed") == "order_completed"
    assert event_table_name("Identifies") == "identifies_event"
    assert event_table_name("users") == "users_event"
    assert event_table_name("!!!") == "_unnamed_event"


def test_cut_text_at_segments_limit() -> None:
    assert cut_text("x" * 600) == "x" * 512
    assert cut_text("short") == "short"
