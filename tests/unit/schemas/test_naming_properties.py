"""Properties of the naming rules over generated keys and objects: every name fits Snowflake,
long names stay apart, and flattening loses no value."""

from __future__ import annotations

import re
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from schemas.naming import (
    NOTHING_RESERVED,
    child_column,
    event_table_name,
    fit_identifier,
    flatten,
    snake_case,
    unmapped_key,
)
from schemas.snowflake_limits import MAX_IDENTIFIER_LENGTH
from tests.unit.leaf_oracle import assert_leaves_kept
from tests.unit.segment_strategies import PROPERTY_SETTINGS, free_maps, json_text, keys

GENERATED = re.compile(r"[a-z0-9_]+")


def valid_name(name: str) -> bool:
    """A name segflow generates: non-empty, at most 255 characters, snake_case characters only
    (so its upper-cased, quoted form is the same length)."""
    return 0 < len(name) <= MAX_IDENTIFIER_LENGTH and GENERATED.fullmatch(name) is not None


@PROPERTY_SETTINGS
@given(st.text(max_size=600), st.integers(min_value=20, max_value=MAX_IDENTIFIER_LENGTH))
def test_fit_identifier_fits_and_keeps_what_fits(name: str, limit: int) -> None:
    fitted = fit_identifier(name, limit)
    assert len(fitted) <= limit
    assert fitted == fit_identifier(name, limit)
    if len(name) <= limit:
        assert fitted == name


@PROPERTY_SETTINGS
@given(st.text(alphabet="ab", min_size=256, max_size=400), st.text(alphabet="ab", min_size=1))
def test_two_long_names_never_collide(name: str, tail: str) -> None:
    assert fit_identifier(name) != fit_identifier(name + tail)


@PROPERTY_SETTINGS
@given(keys, keys, st.text(max_size=300))
def test_every_name_fits_snowflake(key: str, other: str, event: str) -> None:
    part = snake_case(key)
    assert part == "" or valid_name(part)
    column = child_column(part, other) if part else ""
    assert column == "" or valid_name(column)
    assert valid_name(event_table_name(event))


@PROPERTY_SETTINGS
@given(st.text(alphabet="aAbB1 _.", max_size=30))
def test_acronym_split_is_the_one_segment_documents(name: str) -> None:
    """The linear-time acronym rule splits exactly where the original pattern did."""
    old = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    new = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    assert old == new


@PROPERTY_SETTINGS
@given(
    st.lists(st.lists(keys, min_size=1, max_size=4).map(tuple), min_size=2, max_size=6, unique=True)
)
def test_unmapped_keys_of_different_paths_never_meet(paths: list[tuple[str, ...]]) -> None:
    assert len({unmapped_key(p) for p in paths}) == len(paths)


@PROPERTY_SETTINGS
@given(free_maps)
def test_flatten_keeps_every_value_in_a_column_or_in_unmapped(obj: dict[str, Any]) -> None:
    parsed = orjson.loads(json_text(obj))  # what the sink reads
    columns, unmapped = flatten(parsed, "", ("properties",), reserved=NOTHING_RESERVED)
    assert all(valid_name(c) for c in columns)
    claimed: set[str] = set()
    assert_leaves_kept(parsed, ("properties",), "", columns, unmapped, claimed)
    assert claimed == set(columns)  # and nothing else became a column
