"""The rules file: write keys -> sources, PII rules, identity guard rails, tracking plan.

One YAML file, validated by pydantic at start-up. A bad file stops the process with a
ConfigError naming the field and the line (``rules.yaml:12: pii.rules.1.action: ...``).

The embedded default file is for local development: its write keys are public (they are in this
repository). ``refuse_development_keys`` is the one place that decides whether rules carrying
them may serve: only with ``SEGFLOW_ALLOW_DEV_DEFAULTS=true`` (set by ``segflow up`` and
docker-compose.yml), and then with a WARNING at every start.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.errors import ConfigError
from schemas.topics import CALL_TYPES

logger = logging.getLogger(__name__)

PropertyType = Literal["string", "integer", "number", "boolean", "object", "array", "timestamp"]
_SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,254}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceRule(_Strict):
    """A Segment source: its write keys and its warehouse schema (= name)."""

    name: str = Field(description="Source name; the warehouse schema its tables live in")
    write_keys: list[str] = Field(min_length=1, description="Write keys that authenticate as it")
    audit: bool = Field(True, description="Keep an append-only audit archive of loaded events")
    rate_limit_per_s: float | None = Field(
        None, gt=0, description="Events per second accepted at the edge; unset = unlimited"
    )

    @field_validator("name")
    @classmethod
    def _schema_name(cls, v: str) -> str:
        if not _SOURCE_NAME.match(v):
            raise ValueError("must be lowercase snake_case starting with a letter (a schema name)")
        return v


class PiiRule(_Strict):
    """What to do with one field path (wildcards: ``properties.*.phone``)."""

    path: str = Field(min_length=1, description="Dotted field path, * matches one level")
    action: Literal["hash", "mask", "truncate", "drop", "keep"]
    keep: Literal["domain", "last4", "first1", "none"] = Field(
        "none", description="mask: what part to keep"
    )


class PiiDetector(_Strict):
    """Opt-in detector of emails, phone numbers and card numbers in any string value."""

    enabled: bool = False
    kinds: list[Literal["email", "phone", "card"]] = ["email", "phone", "card"]
    action: Literal["hash", "mask", "drop"] = "mask"


class PiiNames(_Strict):
    """Screening of names (keys at every level, event, page and screen names, categories):
    a name holding an email, phone or card number is replaced by ``redacted_<kind>_<8 hex>``."""

    enabled: bool = True
    kinds: list[Literal["email", "phone", "card"]] = ["email", "phone", "card"]


class PiiRules(_Strict):
    rules: list[PiiRule] = []
    detector: PiiDetector = PiiDetector()
    names: PiiNames = PiiNames()


DEFAULT_BLOCKED = ["", "null", "undefined", "anonymous", "0", "-1", "none", "nil", "unknown"]


class IdentityRules(_Strict):
    """Guard rails of identity stitching."""

    blocked_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED),
        description="Identifier values that never merge (compared case-insensitively)",
    )
    max_user_ids_per_anonymous_id: int = Field(
        5, ge=1, description="A device linked to more userIds than this is not merged further"
    )


class EventPlan(_Strict):
    properties: dict[str, PropertyType] = {}


class TrackingPlan(_Strict):
    """Known events/properties and traits. evolve: unknowns become columns; strict: `_unmapped`."""

    mode: Literal["evolve", "strict"] = "evolve"
    events: dict[str, EventPlan] = {}
    traits: dict[str, dict[str, PropertyType]] = Field(
        default_factory=dict, description="Per call type (identify, group): known traits"
    )
    alert_webhook_url: str | None = Field(None, description="Slack-compatible webhook for drift")
    alert_min_interval_s: float = Field(60.0, ge=0, description="At most one alert per interval")

    @field_validator("traits")
    @classmethod
    def _call_types(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        unknown = set(v) - set(CALL_TYPES)
        if unknown:
            raise ValueError(f"unknown call types {sorted(unknown)}; use {list(CALL_TYPES)}")
        return v


class Rules(_Strict):
    sources: list[SourceRule] = Field(min_length=1)
    pii: PiiRules = PiiRules()
    identity: IdentityRules = IdentityRules()
    tracking_plan: TrackingPlan = TrackingPlan()

    @model_validator(mode="after")
    def _unique(self) -> Rules:
        names: set[str] = set()
        keys: set[str] = set()
        for i, src in enumerate(self.sources):
            if src.name in names:
                raise ValueError(f"sources.{i}.name: duplicate source {src.name!r}")
            names.add(src.name)
            for key in src.write_keys:
                if key in keys:
                    raise ValueError(f"sources.{i}.write_keys: key used by two sources")
                keys.add(key)
        return self

    def source_for_key(self) -> dict[str, SourceRule]:
        """Write key -> source."""
        return {k: s for s in self.sources for k in s.write_keys}

    def source(self, name: str) -> SourceRule | None:
        return next((s for s in self.sources if s.name == name), None)


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at `loc`, or of its deepest existing ancestor."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def parse_rules(text: str, origin: str = "<rules>") -> Rules:
    """Parse and validate rules text; errors name the origin, line and field."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}" if mark is not None else origin
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the rules file must be a mapping with a 'sources' key")
    try:
        return Rules.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(root, loc)
            field = ".".join(str(p) for p in loc) or "(top level)"
            problems.append(f"{origin}:{line}: {field}: {err['msg']}")
        raise ConfigError("invalid rules file:\n  " + "\n  ".join(problems)) from exc


DEFAULT_RULES_NAME = "default_rules.yaml"


def _default_rules_text() -> str:
    return resources.files("runtime").joinpath(DEFAULT_RULES_NAME).read_text("utf-8")


def development_write_keys() -> frozenset[str]:
    """The write keys of the embedded default rules: public, for local development only."""
    return frozenset(parse_rules(_default_rules_text(), DEFAULT_RULES_NAME).source_for_key())


def refuse_development_keys(rules: Rules, allow_dev_defaults: bool, origin: str) -> None:
    """Stop unless `rules` are free of the public development write keys, or the development
    opt-in is set (then log a WARNING naming the sources that accept a public key).

    `origin` names the rules in messages: the rules file's path or the embedded default.
    """
    public = development_write_keys()
    exposed = sorted({s.name for s in rules.sources for k in s.write_keys if k in public})
    if not exposed:
        if allow_dev_defaults:
            logger.warning(
                "SEGFLOW_ALLOW_DEV_DEFAULTS is set: public development defaults are accepted. "
                "Local development only."
            )
        return
    if not allow_dev_defaults:
        raise ConfigError(
            f"{origin}: sources {exposed} accept the public development write keys of the "
            "embedded rules, which anyone can read; set SEGFLOW_RULES_FILE to your own rules "
            "file with keys of your own (or SEGFLOW_ALLOW_DEV_DEFAULTS=true, for local "
            "development only)"
        )
    logger.warning(
        "SEGFLOW_ALLOW_DEV_DEFAULTS is set: sources %s accept the public development write "
        "keys; anyone can send events as them. Local development only.",
        exposed,
    )


def load_rules(path: Path | None) -> Rules:
    """Load the rules file at `path`, or the embedded default when `path` is None."""
    if path is None:
        return parse_rules(_default_rules_text(), DEFAULT_RULES_NAME)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"rules file {path}: cannot read: {exc.strerror}") from exc
    return parse_rules(text, str(path))
