"""The configuration reference, generated from the settings classes themselves.

`python -m cli.reference > docs/configuration.md` rewrites the reference; a test keeps the
committed file equal to what this module renders, so the documentation cannot drift.
"""

from __future__ import annotations

import importlib
import pkgutil
import typing

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from cli.main import SUBCOMMANDS
from runtime.settings import SegflowSettings

PACKAGES = ("runtime", "ingest", "processors", "sinks", "reverse_etl", "deletion", "cli")
# The shared connections first, then the pipeline's components in the order events flow.
ORDER = (
    "KafkaSettings",
    "WarehouseSettings",
    "ObservabilitySettings",
    "IngestSettings",
    "ProcessorSettings",
    "SinkSettings",
)


def settings_classes() -> list[type[SegflowSettings]]:
    """Every settings class: imports each `settings` module of our packages and each
    subcommand, then walks the subclasses of SegflowSettings (new ones are found as they land)."""
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            if info.name.rsplit(".", 1)[-1].endswith("settings"):
                importlib.import_module(info.name)
    for _, module_name, _ in SUBCOMMANDS:
        importlib.import_module(f"cli.commands.{module_name}")
    found: list[type[SegflowSettings]] = []
    pending = list(SegflowSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    order = {name: i for i, name in enumerate(ORDER)}
    return sorted(found, key=lambda c: (order.get(c.__name__, len(order)), c.__name__))


def _is_nested(field: FieldInfo) -> bool:
    annotation = field.annotation
    return isinstance(annotation, type) and issubclass(annotation, SegflowSettings)


def _type_name(annotation: object) -> str:
    if annotation is None:
        return "None"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if args:
        inner = ", ".join(_type_name(a) for a in args if a is not type(None))
        nullable = " or unset" if type(None) in args else ""
        name = getattr(origin, "__name__", str(origin))
        return (inner + nullable) if name in ("Union", "UnionType") else f"{name}[{inner}]"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: object = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if isinstance(value, SecretStr):
        return "(secret)"
    if value is None:
        return ""
    if value == "":
        return '""'
    return f"`{value}`"


def render_markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the settings classes by `python -m cli.reference`; do not edit by hand.",
        "Every variable is also a command-line option of the commands that use it",
        "(`SEGFLOW_KAFKA_BOOTSTRAP` is `--kafka-bootstrap`); `segflow <command> --help` shows",
        "which. Rules that are data (write keys, PII rules, tracking plan) live in the YAML rules",
        "file named by `SEGFLOW_RULES_FILE`; the embedded default is `runtime/default_rules.yaml`.",
    ]
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines += ["", f"## {cls.__name__} (`{prefix}*`)", "", doc, ""]
        lines += ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, field in cls.model_fields.items():
            if _is_nested(field):
                continue
            env = (prefix + name).upper()
            description = (field.description or "").replace("|", "\\|")
            lines.append(
                f"| `{env}` | {_type_name(field.annotation)} | {_default(field)} | {description} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
