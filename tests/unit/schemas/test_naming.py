from __future__ import annotations

import pytest

from schemas.naming import (
    MAX_IDENTIFIER_LENGTH,
    NOTHING_RESERVED,
    ReservedColumns,
    child_column,
    cut_text,
    event_table_name,
    fit_identifier,
    flatten,
    key_path_column,
    parse_unmapped_key,
    path_column,
    snake_case,
    unmapped_key,
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
    columns, unmapped = flatten(
        {"app": {"version": "1.2", "build": {"number": 7}}, "tags": ["a", "b"]},
        "context",
        reserved=NOTHING_RESERVED,
    )
    assert columns == {
        "context_app_version": "1.2",
        "context_app_build_number": 7,
        "context_tags": '["a","b"]',
    }
    assert unmapped == {}


def test_identifiers_are_cut() -> None:
    assert len(snake_case("a" * 1000)) == MAX_IDENTIFIER_LENGTH


def test_long_names_are_cut_with_a_hash_of_the_whole_name() -> None:
    assert fit_identifier("x" * 255) == "x" * 255
    cut = fit_identifier("x" * 256)
    assert len(cut) == MAX_IDENTIFIER_LENGTH and cut.startswith("x" * 246 + "_")
    # two names sharing their first 255 characters stay apart
    assert snake_case("p" * 300 + "x") != snake_case("p" * 300 + "y")
    assert fit_identifier("p" * 300 + "x") == fit_identifier("p" * 300 + "x")


def test_nested_columns_are_cut_as_a_whole() -> None:
    """Each part fits, but the join did not: {"a"*200: {"b"*200: 1}} made 401 characters."""
    columns, _ = flatten({"a" * 200: {"b" * 200: 1}}, reserved=NOTHING_RESERVED)
    [(column, value)] = columns.items()
    assert value == 1 and len(column) == MAX_IDENTIFIER_LENGTH
    assert column == path_column("a" * 200 + "." + "b" * 200)
    assert column == child_column(child_column("", "a" * 200), "b" * 200)
    deep, _ = flatten(
        {"k" * 100: {"k" * 100: {"k" * 100: {"x": 1, "y": 2}}}},
        "context",
        reserved=NOTHING_RESERVED,
    )
    assert len(deep) == 2 and all(len(c) <= MAX_IDENTIFIER_LENGTH for c in deep)


def test_long_event_and_source_names_fit() -> None:
    assert len(event_table_name("E" * 5000)) == MAX_IDENTIFIER_LENGTH
    assert len(event_table_name("users" + "x" * 300)) == MAX_IDENTIFIER_LENGTH
    assert event_table_name("E" * 5000) != event_table_name("E" * 5001)


@pytest.mark.parametrize("key", ["$$$", "日本", "", "___", "🎉"])
def test_a_key_normalising_to_nothing_keeps_its_value_in_unmapped(key: str) -> None:
    columns, unmapped = flatten(
        {key: "v", "ok": 1}, root=("properties",), reserved=NOTHING_RESERVED
    )
    assert columns == {"ok": 1}
    assert unmapped == {unmapped_key(("properties", key)): "v"}
    # nested: neither dropped nor merged into the parent's column
    columns, unmapped = flatten(
        {"cart": {key: 7, "size": 2}}, root=("properties",), reserved=NOTHING_RESERVED
    )
    assert columns == {"cart_size": 2}
    assert unmapped == {unmapped_key(("properties", "cart", key)): 7}


def test_colliding_keys_never_overwrite_each_other() -> None:
    obj = {"a b": 1, "a-b": 2, "A_B": 3, "aB": 4, "a": {"b": 5}, "a.b": 6}
    columns, unmapped = flatten(obj, root=("properties",), reserved=NOTHING_RESERVED)
    assert columns == {"a_b": 1}  # the first in the object's order takes the column
    assert unmapped == {
        "properties.a-b": 2,
        "properties.A_B": 3,
        "properties.aB": 4,
        "properties.a.b": 5,
        "properties.a\\.b": 6,  # a dot inside a key is escaped: it is not the path a.b
    }


def test_unmapped_keys_of_different_paths_differ() -> None:
    paths = [("p", "a.b"), ("p", "a", "b"), ("p", "a\\", "b"), ("p", "a\\.b"), ("p.a", "b")]
    assert len({unmapped_key(p) for p in paths}) == len(paths)


def test_reserved_and_taken_names_go_to_unmapped() -> None:
    reserved = ReservedColumns(frozenset({"id"}), ("_segflow", "context_"))
    columns, unmapped = flatten(
        {"id": "x", "ID": "y", "plan": "pro", "ip": 1, "context": {"ip": 3}},
        "",
        ("traits",),
        taken={"ip"},
        reserved=reserved,
    )
    assert columns == {"plan": "pro"}
    assert unmapped == {
        "traits.id": "x",
        "traits.ID": "y",
        "traits.ip": 1,
        "traits.context.ip": 3,  # a context_* name is the context's own
    }


def test_a_name_only_another_table_reserves_is_a_column() -> None:
    """The reserved set is the table's: `name` is free where the table has no such column."""
    obj = {"name": "Ada", "plan": "pro"}
    columns, unmapped = flatten(obj, root=("traits",), reserved=ReservedColumns(frozenset({"id"})))
    assert columns == {"name": "Ada", "plan": "pro"} and unmapped == {}
    pages = ReservedColumns(frozenset({"id", "name", "category"}))
    columns, unmapped = flatten(obj, root=("properties",), reserved=pages)
    assert columns == {"plan": "pro"} and unmapped == {"properties.name": "Ada"}


@pytest.mark.parametrize(
    "path", [("traits", "name"), ("properties", "a.b", "c"), ("p", "a\\", "b"), ("t", ""), ("x",)]
)
def test_an_unmapped_key_gives_back_its_path(path: tuple[str, ...]) -> None:
    assert parse_unmapped_key(unmapped_key(path)) == path


def test_a_key_path_names_the_column_flatten_gives_it() -> None:
    assert key_path_column(("user", "Name")) == "user_name"
    assert key_path_column(("$$$", "x")) == ""
    assert key_path_column(("a" * 200, "b" * 200)) == child_column(
        child_column("", "a" * 200), "b" * 200
    )


def test_event_tables_never_take_a_reserved_name() -> None:
    assert event_table_name("Order Completed") == "order_completed"
    assert event_table_name("Identifies") == "identifies_event"
    assert event_table_name("users") == "users_event"
    assert event_table_name("!!!") == "_unnamed_event"


def test_cut_text_at_segments_limit() -> None:
    assert cut_text("x" * 600) == "x" * 512
    assert cut_text("short") == "short"
