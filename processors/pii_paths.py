"""Where a PII rule applies: its path compiled, and the fields it addresses in an event document.

A rule's path addresses a field in the document ``{"properties": {...}, "traits": {...}, ...}``
(``traits.email``, ``context.ip``); ``*`` matches one level: any key of an object or any element
of an array (``properties.*.phone``); a digit segment is an array index. Pure functions, no I/O.
Rules without wildcards come before rules with them, the file order otherwise; the common shapes
(an exact path through objects, ``root.*.name``) have fast paths beside the general walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.rules import PiiRule

#: a concrete field's path: object keys and array indices from the document's root
Path = tuple[str | int, ...]
#: (parent container, key in it, concrete path) of a field a rule addresses
Match = tuple[Any, str | int, Path]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule's path split into segments, its action and what a mask keeps."""

    segments: tuple[str, ...]
    action: str
    keep: str
    exact: bool
    star_name: bool  # root.*.name: the name in any object one level below the root


def compile_rules(rules: list[PiiRule]) -> list[CompiledRule]:
    """The rules in the order they apply: exact paths first, then wildcard paths."""
    compiled = []
    for r in rules:
        segments = tuple(r.path.split("."))
        star_name = len(segments) == 3 and segments[1] == "*" and is_name(segments[2])
        compiled.append(CompiledRule(segments, r.action, r.keep, "*" not in segments, star_name))
    # exact paths first, then wildcard paths; the file order otherwise (sort is stable)
    return sorted(compiled, key=lambda r: not r.exact)


def rules_by_root(rules: list[CompiledRule]) -> list[tuple[str, list[CompiledRule]]]:
    """The rules grouped by their root, in order: a root absent from an event skips them all.
    (Paths under different roots never meet, so the order between roots does not matter.)"""
    groups: dict[str, list[CompiledRule]] = {}
    for rule in rules:
        groups.setdefault(rule.segments[0], []).append(rule)
    return list(groups.items())


def render(path: Path) -> str:
    """A concrete path as recorded in the ``path:action`` entries (``properties.items.0.email``)."""
    return ".".join(map(str, path))


def is_name(segment: str) -> bool:
    """True for a segment that can address an object key only (not ``*``, not an index)."""
    return segment != "*" and not segment.isdigit()


def star_name_match(doc: dict[str, Any], segments: tuple[str, ...]) -> list[Match]:
    """What :func:`matches` finds for ``root.*.name``: `name` in the objects below the root
    (an array below the root has indices, never names)."""
    root, _, name = segments
    out: list[Match] = []
    for k, v in doc[root].items():
        if type(v) is dict and name in v:
            out.append((v, name, (root, k, name)))
    return out


def exact_match(doc: dict[str, Any], segments: tuple[str, ...]) -> list[Match] | None:
    """The field an exact path names when it runs through objects only: [] when absent, None
    when the path crosses an array (then :func:`matches` resolves the indices)."""
    node: Any = doc
    for seg in segments[:-1]:
        node = node.get(seg)
        if type(node) is not dict:
            return None if type(node) is list else []
    if segments[-1] in node:
        return [(node, segments[-1], segments)]
    return []


def matches(container: Any, segments: tuple[str, ...], prefix: Path) -> list[Match]:
    """(parent container, key in it, concrete path) of every field `segments` addresses."""
    frontier: list[tuple[Any, Path]] = [(container, prefix)]
    for seg in segments[:-1]:
        nxt: list[tuple[Any, Path]] = []
        for node, path in frontier:
            if isinstance(node, dict):
                if seg == "*":
                    nxt.extend(
                        (v, (*path, k)) for k, v in node.items() if isinstance(v, dict | list)
                    )
                else:
                    v = node.get(seg)
                    if isinstance(v, dict | list):
                        nxt.append((v, (*path, seg)))
            elif isinstance(node, list):
                if seg == "*":
                    nxt.extend(
                        (v, (*path, i)) for i, v in enumerate(node) if isinstance(v, dict | list)
                    )
                elif seg.isdigit() and int(seg) < len(node):
                    v = node[int(seg)]
                    if isinstance(v, dict | list):
                        nxt.append((v, (*path, int(seg))))
        if not nxt:
            return []
        frontier = nxt
    last = segments[-1]
    out: list[Match] = []
    for node, path in frontier:
        if isinstance(node, dict):
            if last == "*":
                out.extend((node, k, (*path, k)) for k in node)
            elif last in node:
                out.append((node, last, (*path, last)))
        elif isinstance(node, list):
            if last == "*":
                out.extend((node, i, (*path, i)) for i in range(len(node)))
            elif last.isdigit() and int(last) < len(node):
                out.append((node, int(last), (*path, int(last))))
    return out
