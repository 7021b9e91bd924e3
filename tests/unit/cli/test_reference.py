from __future__ import annotations

from pathlib import Path

from cli.reference import render_markdown, settings_classes

REFERENCE = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_committed_reference_is_current() -> None:
    assert REFERENCE.read_text() == render_markdown(), (
        "docs/configuration.md is stale: run `python -m cli.reference > docs/configuration.md`"
    )


def test_every_field_is_documented() -> None:
    text = render_markdown()
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            if isinstance(field.annotation, type) and field.annotation.__name__.endswith(
                "Settings"
            ):
                continue
            assert f"`{(prefix + name).upper()}`" in text
            assert field.description, f"{cls.__name__}.{name} has no description"
