"""PII masking by the rules file: hash, mask, truncate, drop or keep, per field path.

Pure functions, no I/O. An event's free-form maps form one document
``{"properties": {...}, "traits": {...}, "context": {...}, "integrations": {...}, "extra": {...}}``
and a rule's path addresses a field in it (``traits.email``, ``context.ip``); ``*`` matches one
level: any key of an object or any element of an array (``properties.*.phone``). The same rules
apply to every call type.

- hash: HMAC-SHA256 with a secret key, hex. Strings are normalised first (surrounding and
  repeated whitespace removed, lower case) so ``" Jo@X.com"`` and ``"jo@x.com"`` hash alike and
  joins across tables still work; without the key a dictionary attack is useless.
- mask: replace by ``***`` keeping a configured part: ``domain`` (``***@example.com``),
  ``last4`` (``***4567``), ``first1`` (``j***``) or ``none``.
- truncate: IPv4 addresses to their /24, IPv6 to their /48; a value that is not an IP address
  is dropped (it cannot be truncated safely).
- drop: the field is removed.
- keep: the field stays as it is and the detector leaves it alone.

A concrete field is handled by the first rule that matches it, rules without wildcards before
rules with them. The opt-in detector then scans every other string value for emails, phone
numbers and card numbers and applies its action to what it finds (mask and hash replace the
finding inside the text; drop removes the field). Every change is recorded as ``path:action``.

Names are screened too (``pii.names``, on by default): every key at every level of the five maps,
and the record's event name, page or screen name and category. Keys become column names, event
names table names, and both travel in schema changes and alerts, where no rule can reach them. A
name holding an email, phone or card number is replaced as a whole by ``redacted_<kind>_<8 hex>``
(:func:`redacted_name`), recorded as ``<path>:redact_name`` (``event:redact_name``); the value
under a renamed key is then handled by the rules and the detector like any other, under its new
path. Keys are renamed before any rule runs, so no recorded path carries the old key.

What each action does to a value is in :mod:`processors.pii_values`; which fields a rule's path
addresses, in :mod:`processors.pii_paths`. Where processors/_prescreen.c is built, the detector
walks only the values a C screen returns (non-ASCII, or with an ``@`` or 8+ digits: nothing else
can hold a finding) and the name screen skips a root whose keys all fail that screen; the same
results as the Python walks of every value and key (tests/unit/processors/test_masking_walks.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processors.detector import CARD, EMAIL, PHONE, document_may_hold_pii, find_pii
from processors.pii_paths import (
    Match,
    Path,
    compile_rules,
    exact_match,
    matches,
    render,
    rules_by_root,
    star_name_match,
)
from processors.pii_values import Hasher, mask_value, redacted_name, truncate_ip
from runtime.rules import PiiRules
from schemas.errors import ConfigError
from schemas.native import optional_extension

_prescreen = optional_extension("processors._prescreen")
#: the string values below a container that may hold PII, with where (C; None: not built)
_candidates: Any = getattr(_prescreen, "candidates", None)
#: whether a key at or below a container may hold PII (C; None: not built)
_keys_may_hold: Any = getattr(_prescreen, "keys_may_hold", None)

DOCUMENT_ROOTS = ("properties", "traits", "context", "integrations", "extra")
_DETECTOR_KEEP = {EMAIL: "domain", PHONE: "last4", CARD: "last4"}
#: the record's fields that hold names rather than values: the event (a table name), a page or
#: screen name and its category
NAME_FIELDS = ("event", "name", "category")
REDACT_NAME = "redact_name"
_NAMES_MAX = 65_536


class Masker:
    """Applies the PII rules of the rules file to an event document, in place."""

    def __init__(self, pii: PiiRules, hmac_key: bytes | None, key_version: str) -> None:
        self._rules = compile_rules(pii.rules)
        self._rule_groups = rules_by_root(self._rules)
        self._detector = pii.detector if pii.detector.enabled else None
        uses_hash = any(r.action == "hash" for r in self._rules) or (
            self._detector is not None and self._detector.action == "hash"
        )
        if uses_hash and not hmac_key:
            raise ConfigError(
                "the PII rules hash fields but no key is set: set SEGFLOW_PROCESS_PII_HMAC_KEY"
            )
        self._key = hmac_key or b""
        self._hash = Hasher(self._key)
        self.key_version = key_version
        self.uses_hash = uses_hash
        self._detector_roots: tuple[str, ...] = DOCUMENT_ROOTS
        self._replace_finding = self._replacer(self._detector.action if self._detector else "")
        # context values (user agents, URLs, library names) repeat from event to event
        self._findings: dict[str, list[Any]] = {}
        self._name_kinds = tuple(pii.names.kinds) if pii.names.enabled else ()
        self._name_key = hmac_key or None
        # keys and event names repeat far more than values: name -> stand-in (None: clean)
        self._names: dict[str, str | None] = {}
        self._truncated: dict[str, str | None] = {}  # IP address -> its network (None: no IP)
        screened = set(self._name_kinds)
        if self._detector is not None:
            screened.update(self._detector.kinds)
        self._screened_kinds = tuple(sorted(screened))
        #: the detector and the name screen start from the C screens when they are built
        #: (False: the Python walks of every value and key, the reference the tests compare
        #: them with)
        self.native_walk = True

    def rename(self, name: str) -> str | None:
        """The stand-in of `name` when it holds PII of the screened kinds, else None."""
        names = self._names
        if name in names:
            return names[name]
        findings = find_pii(name, self._name_kinds) if self._name_kinds else []
        out = redacted_name(name, findings[0].kind, self._name_key) if findings else None
        if len(names) >= _NAMES_MAX:
            names.clear()
        names[name] = out
        return out

    def mask_names(self, record: dict[str, Any]) -> list[str]:
        """Replace the record's event, page/screen name and category when they hold PII, in
        place; returns the ``<field>:redact_name`` entries."""
        entries: list[str] = []
        if not self._name_kinds:
            return entries
        for name in NAME_FIELDS:
            value = record.get(name)
            if type(value) is str and value:
                new = self.rename(value)
                if new is not None:
                    record[name] = new
                    entries.append(f"{name}:{REDACT_NAME}")
        return entries

    def apply(
        self,
        doc: dict[str, Any],
        texts: dict[str, str] | None = None,
        touched: set[str] | None = None,
    ) -> tuple[list[str], bool]:
        """Mask `doc` in place. Returns the ``path:action`` entries and whether anything hashed.

        `texts` may give each root's JSON text as received: the detector then skips a root
        whose text holds no candidate at all (one C-level scan instead of a walk). `touched`,
        when given, receives the roots an entry was recorded for (the roots changed).
        """
        entries: list[str] = []
        handled: set[Path] = set()
        hashed = False
        # the roots whose text may hold a finding of any screened kind, in keys or in values;
        # None: every root (no texts given)
        candidates: tuple[str, ...] | None = None
        if texts is not None and self._screened_kinds:
            kinds = self._screened_kinds
            found_in: list[str] = []
            for r in DOCUMENT_ROOTS:
                text = texts.get(r)
                if text and text != "{}" and document_may_hold_pii(text, kinds):
                    found_in.append(r)
            candidates = tuple(found_in)
        if self._name_kinds:
            for root in DOCUMENT_ROOTS if candidates is None else candidates:
                value = doc.get(root)
                if value and type(value) is dict:
                    if (
                        _keys_may_hold is not None
                        and self.native_walk
                        and not _keys_may_hold(value)
                    ):
                        continue  # no key below can hold a finding: nothing to rename
                    before = len(entries)
                    self._rename_keys(value, (root,), entries)
                    if touched is not None and len(entries) > before:
                        touched.add(root)
        for root, rules in self._rule_groups:
            if not doc.get(root):
                continue  # the root (properties, traits, ...) is empty in this event
            for rule in rules:
                if root not in doc:
                    break  # an earlier rule dropped the whole root: nothing left below it
                found: list[Match] | None = None
                if rule.exact:
                    segments = rule.segments
                    node = doc.get(root)  # a rule on the whole root may have replaced it
                    if len(segments) == 2 and type(node) is dict:
                        if segments[1] not in node:
                            continue
                        found = [(node, segments[1], segments)]
                    else:
                        found = exact_match(doc, segments)
                elif rule.star_name and type(doc[root]) is dict:
                    found = star_name_match(doc, rule.segments)
                if found is None:
                    found = matches(doc, rule.segments, ())
                for parent, key, path in found:
                    if path in handled:
                        continue
                    handled.add(path)
                    if rule.action == "keep":
                        continue
                    action = self._act(parent, key, rule.action, rule.keep)
                    if action is not None:
                        hashed = hashed or action == "hash"
                        entries.append(f"{render(path)}:{action}")
                        if touched is not None:
                            touched.add(root)
        if self._detector is not None:
            roots = self._detector_roots if candidates is None else candidates
            if roots:
                hashed = self._detect(doc, roots, handled, entries, touched) or hashed
        return entries, hashed

    def _rename_keys(self, container: Any, prefix: Path, entries: list[str]) -> None:
        """Rename the keys holding PII in `container` and below, in place (order kept)."""
        names = self._names
        renames: dict[str, str] | None = None
        if type(container) is dict:
            for k, v in container.items():
                new = names[k] if k in names else self.rename(k)
                if new is not None:
                    if renames is None:
                        renames = {}
                    renames[k] = new
                if (type(v) is dict or type(v) is list) and v:
                    self._rename_keys(v, (*prefix, new or k), entries)
            if renames is not None:
                items = [(renames.get(k, k), v) for k, v in container.items()]
                container.clear()
                container.update(items)
                for new in renames.values():
                    entries.append(f"{render((*prefix, new))}:{REDACT_NAME}")
        else:
            for i, v in enumerate(container):
                if (type(v) is dict or type(v) is list) and v:
                    self._rename_keys(v, (*prefix, i), entries)

    def _truncate(self, value: Any) -> str | None:
        """:func:`truncate_ip`, remembered for strings (a user's address repeats)."""
        if type(value) is not str:
            return truncate_ip(value)
        seen = self._truncated
        if value in seen:
            return seen[value]
        out = truncate_ip(value)
        if len(seen) >= _NAMES_MAX:
            seen.clear()
        seen[value] = out
        return out

    def _act(self, parent: Any, key: str | int, action: str, keep: str) -> str | None:
        value = parent[key]
        if value is None:
            return None
        if action == "hash":
            parent[key] = self._hash(value)
        elif action == "mask":
            parent[key] = mask_value(value, keep)
        elif action == "truncate":
            truncated = self._truncate(value)
            if truncated is None:
                del parent[key]
                return "drop"
            parent[key] = truncated
        elif action == "drop":
            del parent[key]
        return action

    def _detect(
        self,
        doc: dict[str, Any],
        roots: tuple[str, ...],
        handled: set[Path],
        entries: list[str],
        touched: set[str] | None = None,
    ) -> bool:
        assert self._detector is not None
        kinds = self._detector.kinds
        action = self._detector.action
        cache = self._findings
        replace = self._replace_finding
        hashed = False

        def visit(container: Any, prefix: Path) -> None:
            # Most values hold no PII: a value's path is built only when something is found in
            # it (or when it is a container to descend into), then checked against `handled`.
            nonlocal hashed
            dropped: list[str | int] = []
            items = container.items() if type(container) is dict else enumerate(container)
            for k, v in items:
                kind = type(v)
                if kind is str:
                    findings = cache.get(v)
                    if findings is None:
                        path = (*prefix, k)
                        if path in handled:  # a rule's output (a hash, a truncated IP)
                            continue
                        findings = self._find(v, kinds)
                        if not findings:
                            continue
                    elif not findings:
                        continue
                    else:
                        path = (*prefix, k)
                        if path in handled:
                            continue
                    if action == "drop":
                        dropped.append(k)
                    else:
                        # replacing a value in place does not disturb the iteration
                        container[k] = _replace(v, findings, replace)
                        hashed = hashed or action == "hash"
                    entries.append(f"{render(path)}:{action}")
                elif (kind is dict or kind is list) and v:
                    path = (*prefix, k)
                    if path not in handled:
                        visit(v, path)
            for k in reversed(dropped):
                del container[k]

        def screened(container: dict[str, Any], prefix: Path) -> None:
            # What visit does, in the same order, from the string values that may hold PII
            # (processors/_prescreen.c, ``candidates``) without looking at the others
            nonlocal hashed
            dropped: dict[int, tuple[Any, list[str | int]]] = {}
            for parent, k, path in _candidates(container, prefix):
                if path in handled or (
                    len(path) > 2 and any(path[:i] in handled for i in range(2, len(path)))
                ):
                    continue  # a rule's output, or below a field a rule handled (kept, say)
                v = parent[k]
                findings = cache.get(v)
                if findings is None:
                    findings = self._find(v, kinds)
                if not findings:
                    continue
                if action == "drop":
                    dropped.setdefault(id(parent), (parent, []))[1].append(k)
                else:
                    parent[k] = _replace(v, findings, replace)
                    hashed = hashed or action == "hash"
                entries.append(f"{render(path)}:{action}")
            for parent, keys in dropped.values():
                for k in reversed(keys):  # indices from the last: the earlier ones stay put
                    del parent[k]

        walk = visit if _candidates is None or not self.native_walk else screened
        for root in roots:
            value = doc.get(root)
            if isinstance(value, dict) and value:
                before = len(entries)
                walk(value, (root,))
                if touched is not None and len(entries) > before:
                    touched.add(root)
        return hashed

    def _find(self, text: str, kinds: Any) -> list[Any]:
        """:func:`find_pii`, remembered for texts up to 512 characters (context values, user
        agents and URLs repeat from event to event; the memo is bounded)."""
        findings = find_pii(text, kinds)
        if len(text) <= 512:
            cache = self._findings
            if len(cache) >= 65_536:
                cache.clear()
            cache[text] = findings
        return findings

    def _replacer(self, action: str) -> Callable[[str, str], str]:
        if action == "hash":
            return lambda text, _kind: self._hash(text)
        return lambda text, kind: mask_value(text, _DETECTOR_KEEP[kind])


def _replace(text: str, findings: list[Any], replace: Callable[[str, str], str]) -> str:
    out: list[str] = []
    pos = 0
    for f in findings:
        out.append(text[pos : f.start])
        out.append(replace(text[f.start : f.end], f.kind))
        pos = f.end
    out.append(text[pos:])
    return "".join(out)
