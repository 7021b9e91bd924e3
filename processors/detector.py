"""An opt-in detector of PII inside free text: emails, phone numbers, card numbers.

Pure functions, no I/O. ``find_pii(text, kinds)`` returns the spans it found, left to right,
without overlaps. Card numbers are 13-19 digits (spaces or dashes allowed between groups) that
pass the Luhn check; phone numbers are international (``+`` and 8-15 digits) or grouped national
numbers (``(555) 123-4567``, ``555-123-4567``, ``0171 2345678``). Digit runs without a ``+`` or
separators (ids, epoch timestamps) and ISO dates are not taken for phone numbers.

Numbers and addresses typed on phones or pasted from documents are found too: before matching,
a text is folded character by character (:func:`fold`): non-breaking and thin spaces to a space,
Unicode dashes to ``-``, full-width forms (U+FF01-FF5E: digits, plus, at sign, letters) to
ASCII and every other Unicode decimal digit to its ASCII digit. The fold keeps the length, so a
finding's span is the span of the original text, which is what gets masked.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from schemas.native import optional_extension

EMAIL = "email"
PHONE = "phone"
CARD = "card"

_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_CARD_RE = re.compile(r"(?<![\w.\-])\d(?:[ \-]?\d){12,18}(?![\w\-])")
_PHONE_RE = re.compile(
    r"(?<![\w+\-])(?:"
    r"\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]?\d{2,5}){1,4}"
    r"|\(\d{2,5}\)[ .\-]?\d{3,4}[ .\-]?\d{3,5}"
    r"|\d{3,5}[ .\-]\d{3,4}[ .\-]\d{3,5}"
    r"|0\d{2,4}[ /]\d{5,9}"
    r")(?![\w\-])"
)
_DIGIT_RUN = re.compile(r"\d[\d \t().+/\-]{6,}\d")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_NON_DIGIT = re.compile(r"\D")
# what fold() changes: Unicode spaces and dashes, full-width forms, non-ASCII decimal digits
_FOLDABLE = re.compile(
    "[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"  # no-break, thin, ideographic spaces
    "\u2010-\u2015\u2212\ufe58\ufe63"  # hyphens, dashes, minus signs
    "\uff01-\uff5e]"  # full-width ASCII: digits, +, @, letters, punctuation
    r"|(?![0-9])\d"  # any other Unicode decimal digit (Arabic-Indic, Devanagari, ...)
)
_FOLDED: dict[str, str] = {}
_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int


def _fold_char(match: re.Match[str]) -> str:
    ch = match.group()
    folded = _FOLDED.get(ch)
    if folded is None:
        code = ord(ch)
        if 0xFF01 <= code <= 0xFF5E:
            folded = chr(code - 0xFEE0)
        elif unicodedata.category(ch) == "Zs":
            folded = " "
        elif unicodedata.category(ch) == "Nd":
            folded = str(unicodedata.decimal(ch))
        else:
            folded = "-"
        _FOLDED[ch] = folded  # bounded: _FOLDABLE matches a few hundred characters
    return folded


def fold(text: str) -> str:
    """`text` with the look-alikes of the characters PII is written with replaced by them, one
    character for one (spans stay valid); the text itself when there is nothing to fold."""
    if text.isascii() or _FOLDABLE.search(text) is None:
        return text
    return _FOLDABLE.sub(_fold_char, text)


def luhn_valid(digits: str) -> bool:
    """True when a string of digits passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _digit_count(text: str) -> int:
    return sum(1 for c in text if "0" <= c <= "9")


def _cards(text: str) -> Iterable[Finding]:
    for m in _CARD_RE.finditer(text):
        digits = _NON_DIGIT.sub("", m.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield Finding(CARD, m.start(), m.end())


def _phones(text: str) -> Iterable[Finding]:
    for m in _PHONE_RE.finditer(text):
        value = m.group()
        if not 8 <= _digit_count(value) <= 15 or _ISO_DATE.match(value):
            continue
        yield Finding(PHONE, m.start(), m.end())


def _emails(text: str) -> Iterable[Finding]:
    for m in _EMAIL_RE.finditer(text):
        yield Finding(EMAIL, m.start(), m.end())


def may_hold_pii(text: str) -> bool:
    """False when `text` cannot hold any finding (no ``@``, no run of 8+ digits/separators)."""
    if not text.isascii():
        text = fold(text)
    return "@" in text or (len(text) >= 8 and _DIGIT_RUN.search(text) is not None)


_RUN_CHARS = frozenset("0123456789 \t().+/-")  # the characters phones and cards are made of
_SEPARATORS = " \t().+/-"
# an ASCII text's bytes as classes: "r" for a run character, "x" for any other
_RUN_CLASSES = bytes(ord("r") if chr(b) in _RUN_CHARS else ord("x") for b in range(256))
_LONG_RUN = b"r" * 8
# an ASCII text's bytes as a run's shape: digits 1-9 as 1, 0 and the separators as they are, a
# word character as "a", any other as '"' (:func:`_ascii_runs_verdict`)
_SHAPES = bytes(
    ord("1")
    if 0x31 <= b <= 0x39
    else b
    if chr(b) in _RUN_CHARS
    else ord("a")
    if b < 128 and (chr(b).isalnum() or chr(b) == "_")
    else ord('"')
    for b in range(256)
)
#: a shape with 13+ digits: its verdict depends on the digits themselves (a card's Luhn check)
_BY_DIGITS = object()
#: the run scan of :func:`_ascii_runs_verdict` in C, None when the extension was not built
_prescreen = optional_extension("processors._prescreen")


def _digit_runs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of ``_RUN_CHARS`` in the ASCII `text` whose digits span
    8+ characters (a run holding a ``_DIGIT_RUN`` match), left to right.

    The text's bytes are mapped to run / other classes (one C-level translate) and the runs of 8+
    are found with ``bytes.find``: a search that starts past a run finds the next run at its
    start, and the first other byte after it is its end."""
    classes = text.encode("ascii").translate(_RUN_CLASSES)
    out: list[tuple[int, int]] = []
    pos = classes.find(_LONG_RUN)
    while pos >= 0:
        end = classes.find(b"x", pos)
        if end < 0:
            end = len(classes)
        if len(text[pos:end].strip(_SEPARATORS)) >= 8:  # first digit to last digit
            out.append((pos, end))
        pos = classes.find(_LONG_RUN, end)
    return out


def _regex_runs(text: str) -> list[tuple[int, int]]:
    """What :func:`_digit_runs` returns, for any text (the runs widened from the matches)."""
    chars = _RUN_CHARS
    out: list[tuple[int, int]] = []
    for m in _DIGIT_RUN.finditer(text):
        start, end = m.span()
        while start > 0 and text[start - 1] in chars:
            start -= 1
        while end < len(text) and text[end] in chars:
            end += 1
        out.append((start, end))
    return out


def document_may_hold_pii(text: str, kinds: Iterable[str]) -> bool:
    """False when no string value of the JSON document `text` can hold a finding, decided from
    the text without walking its values.

    A phone or card number is made of ``_RUN_CHARS`` only and holds 8+ digits, so it lies in a
    maximal run of those characters whose digits span 8+ characters (a ``_DIGIT_RUN`` match). A
    value's runs are runs of the document's text too, bounded by the same characters (or by the
    value's quotes, which the patterns treat as they treat the value's start and end), so
    scanning each such run of the text, with the character on either side, finds whatever
    scanning each value would. Keys are JSON strings like values, so the verdict holds for the
    keys too. The text is folded first (:func:`fold`), as each value is when it is scanned: a
    value's folded text is then a part of the document's folded text.

    Escapes break that argument, and a text with a backslash gets a looser verdict. A ``\\u``
    escape can spell any character (``\\u0040`` is an ``@``, ``\\u0034`` a digit, ``\\uff10``
    a full-width digit) and ``\\/`` is a ``/``, which joins digits: such a text is always walked.
    The other escapes (``\\n``, ``\\t``, ``\\"``, ...) stand for characters no finding holds,
    so a finding is in the text as it is in the value; only its neighbours differ (``\\n``
    before a number reads as a letter in the text), so any run of 8+ digits gets the walk. A text
    with an ``@`` (emails) gets the walk too."""
    if not text.isascii():
        text = fold(text)
    if "@" in text:
        return True
    if "\\" in text:
        if "\\u" in text or "\\/" in text:
            return True
        return len(text) >= 8 and _DIGIT_RUN.search(text) is not None
    if text.isascii():
        return _ascii_runs_verdict(text, tuple(kinds))
    runs = _regex_runs(text)
    if not runs:
        return False
    wanted = tuple(kinds)  # the same tuple when given one
    seen = _verdicts(wanted)[1]
    for start, end in runs:
        run = text[max(start - 1, 0) : end + 1]
        verdict = seen.get(run)
        if verdict is None:
            verdict = _remember(seen, run, _finds_number(run, wanted))
        if verdict:
            return True
    return False


def _ascii_runs_verdict(text: str, kinds: tuple[str, ...]) -> bool:
    """:func:`_ascii_runs_verdict_py` in C (processors/_prescreen.c) when it is built: the same
    scan, the same remembered verdicts, :func:`_run_verdict` deciding what they do not hold."""
    if _prescreen is None:
        return _ascii_runs_verdict_py(text, kinds)
    shapes, exact = _verdicts(kinds)
    verdict: bool = _prescreen.runs_verdict(text, kinds, shapes, exact, _BY_DIGITS, _run_verdict)
    return verdict


def _run_verdict(text: str, lo: int, hi: int, shape: bytes, kinds: tuple[str, ...]) -> bool:
    """Whether the run ``text[lo:hi]`` (with its neighbours) of shape `shape` may hold a number
    of `kinds`: by its shape, then (13+ digits) by the run itself, each verdict remembered
    (see :func:`_ascii_runs_verdict_py`)."""
    shapes, exact = _verdicts(kinds)
    verdict = shapes.get(shape)
    if verdict is None:
        if shape.count(b"1") + shape.count(b"0") >= 13:
            verdict = _remember(shapes, shape, _BY_DIGITS)
        else:
            verdict = _remember(shapes, shape, _finds_number(text[lo:hi], kinds))
    if verdict is _BY_DIGITS:
        run = text[lo:hi]
        verdict = exact.get(run)
        if verdict is None:
            verdict = _remember(exact, run, _finds_number(run, kinds))
    return verdict is True


def _ascii_runs_verdict_py(text: str, kinds: tuple[str, ...]) -> bool:
    r"""Whether a card or phone number of `kinds` is in a run of the ASCII `text` (the runs of
    :func:`_digit_runs`, each with the character on either side, as :func:`_finds_number`
    decides it), from remembered verdicts where it can.

    A run's verdict depends on its digits only through which are 0 (the patterns' ``0\d{2,4}``)
    and, with 13 digits or more, on all of them (the Luhn check of a card); on its neighbours
    only through whether they are word characters (a neighbour is never a run character, and
    the patterns look at neighbours only through ``\w``, ``.``, ``+`` and ``-``). So a run with
    its neighbours is first looked up by its shape (``_SHAPES``: 1-9 as 1, a word character as
    ``a``, any other as ``"``): the shape's verdict, or ``_BY_DIGITS`` when it has 13+ digits,
    whose verdict is then looked up by the run itself. A run of 8+ characters whose digits span
    fewer than 8 holds no finding, and its shape remembers that too."""
    raw = text.encode("ascii")
    classes = raw.translate(_RUN_CLASSES)
    pos = classes.find(_LONG_RUN)
    if pos < 0:
        return False
    shaped = raw.translate(_SHAPES)
    while pos >= 0:
        end = classes.find(b"x", pos)
        if end < 0:
            end = len(classes)
        lo = pos - 1 if pos else 0
        if _run_verdict(text, lo, end + 1, shaped[lo : end + 1], kinds):
            return True
        pos = classes.find(_LONG_RUN, end)
    return False


def _verdicts(kinds: tuple[str, ...]) -> tuple[dict[bytes, object], dict[str, bool]]:
    """The remembered verdicts for `kinds`: (by shape, by the run itself)."""
    maps = _RUN_VERDICTS.get(kinds)
    if maps is None:
        maps = _RUN_VERDICTS[kinds] = ({}, {})
    return maps


def _remember(seen: dict[_K, _V], key: _K, verdict: _V) -> _V:
    if len(seen) >= _VERDICTS_MAX:
        seen.clear()
    seen[key] = verdict
    return verdict


def _finds_number(text: str, kinds: tuple[str, ...]) -> bool:
    """``bool(find_pii(text, kinds))`` for a folded text without ``@`` holding a digit run: a
    card or a phone number passes its checks (a phone overlapping a card only matters when
    there is a card)."""
    if CARD in kinds:
        for m in _CARD_RE.finditer(text):
            digits = _NON_DIGIT.sub("", m.group())
            if 13 <= len(digits) <= 19 and luhn_valid(digits):
                return True
    if PHONE in kinds:
        for m in _PHONE_RE.finditer(text):
            value = m.group()
            if 8 <= _digit_count(value) <= 15 and not _ISO_DATE.match(value):
                return True
    return False


# runs repeat from event to event (versions in user agents, ids and prices of one shape): their
# verdicts per kinds, by shape and by run (:func:`_ascii_runs_verdict`), each map bounded
_RUN_VERDICTS: dict[tuple[str, ...], tuple[dict[bytes, object], dict[str, bool]]] = {}
_VERDICTS_MAX = 65_536


def find_pii(text: str, kinds: Iterable[str]) -> list[Finding]:
    """Spans of PII in `text`, sorted, non-overlapping (emails, then cards, then phones win).
    Look-alike characters are folded first (:func:`fold`); the spans are those of `text`."""
    if not text.isascii():
        text = fold(text)
    wanted = set(kinds)
    has_at = "@" in text
    # phones and cards need a run of 8+ digits and separators: one C-level scan rules them out
    has_run = len(text) >= 8 and _DIGIT_RUN.search(text) is not None
    if not has_at and not has_run:
        return []
    found: list[Finding] = []
    if EMAIL in wanted and has_at:
        found.extend(_emails(text))
    if has_run and (CARD in wanted or PHONE in wanted):
        if CARD in wanted:
            found.extend(f for f in _cards(text) if not _overlaps(f, found))
        if PHONE in wanted:
            found.extend(f for f in _phones(text) if not _overlaps(f, found))
    found.sort(key=lambda f: f.start)
    return found


def _overlaps(f: Finding, others: list[Finding]) -> bool:
    return any(f.start < o.end and o.start < f.end for o in others)
