"""Hypothesis strategies for Segment-like free-form maps: the keys and values hostile clients
send (unicode, emoji, CJK and control characters, keys that normalise to nothing or to the same
column, very long keys, deep nesting, every JSON type, integers beyond 64 bits)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# bounded, so a property test takes seconds; no example database in the shared working tree
PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# keys that collide after normalisation (a_b), normalise to nothing, or name a column segflow
# writes itself
TRICKY_KEYS = [
    "a b",
    "a-b",
    "A_B",
    "aB",
    "a_b",
    "a.b",
    "a",
    "b",
    "$$$",
    "日本",
    "🎉",
    "",
    "\x00\x01",
    "id",
    "ID",
    "event",
    "context_ip",
    "ip",
    "_segflow_offset",
    "9lives",
    "HTMLParser",
    "a\\.b",
]

keys = st.one_of(
    st.sampled_from(TRICKY_KEYS),
    st.text(max_size=12),  # any unicode but lone surrogates, control characters included
    st.text(alphabet="aAbB_ -.", min_size=1, max_size=8),  # many collisions
    st.text(alphabet="abAB_ $", min_size=200, max_size=320),  # too long for one identifier
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=-(10**40), max_value=10**40),  # beyond 64 bits (parsed as floats)
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)

json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(keys, children, max_size=5),
    ),
    max_leaves=25,
)


@st.composite
def deep_objects(draw: st.DrawFn) -> dict[str, Any]:
    """One chain of nested objects up to 40 levels deep (the edge allows 32), a leaf at the end
    and siblings on the way."""
    path = draw(st.lists(keys, min_size=1, max_size=40))
    node: Any = draw(json_values)
    for key in reversed(path):
        node = {key: node, **draw(st.dictionaries(keys, scalars, max_size=2))}
    return dict(node)


free_maps = st.one_of(st.dictionaries(keys, json_values, max_size=8), deep_objects())


def json_text(obj: Any) -> str:
    """JSON text as a client sends it (the stdlib writes integers of any size)."""
    return json.dumps(obj, ensure_ascii=False)
