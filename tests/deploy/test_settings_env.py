"""The SEGFLOW_* names the chart and docker-compose.yml set are settings of the components, and
the values they give validate against those settings classes."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import AliasChoices, ValidationError

from cli.main import SUBCOMMANDS
from cli.reference import settings_classes
from runtime.settings import SegflowSettings, secret_file_envs
from tests.deploy.conftest import VALUES_FILES, pod_specs

# long enough for every secret's own checks (the PII HMAC key needs 32 bytes)
SECRET_PLACEHOLDER = "from-a-secret-" + "x" * 32


def env_names(cls: type[SegflowSettings]) -> set[str]:
    """The environment variables one class reads (its own fields; nested classes read theirs),
    the SEGFLOW_..._FILE twins of its secrets included."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set(secret_file_envs(cls).values())
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, SegflowSettings):
            continue
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        else:
            names.add((prefix + name).upper())
    return names


@pytest.fixture(scope="module")
def known_env() -> set[str]:
    return {name for cls in settings_classes() for name in env_names(cls)}


def test_the_components_settings_classes_are_found() -> None:
    names = {cls.__name__ for cls in settings_classes()}
    assert {
        "KafkaSettings",
        "WarehouseSettings",
        "ObservabilitySettings",
        "IngestSettings",
        "ProcessorSettings",
        "SinkSettings",
    } <= names
    assert "BackfillSettings" in names


def _container_env(objects: list[dict[str, Any]]) -> list[tuple[str, list[str], dict[str, str]]]:
    """(where, args, env) of every container; secret-sourced values become a placeholder."""
    result = []
    for where, pod in pod_specs(objects):
        for container in pod["containers"]:
            env = {e["name"]: e.get("value", SECRET_PLACEHOLDER) for e in container.get("env", [])}
            result.append((f"{where}/{container['name']}", container.get("args", []), env))
    return result


def _compose_env(compose: dict[str, Any]) -> list[tuple[str, list[str], dict[str, str]]]:
    return [
        (
            f"compose/{name}",
            list(service.get("command") or []),
            dict(service.get("environment") or {}),
        )
        for name, service in compose["services"].items()
        if name != "kafka"
    ]


def _all_envs(
    manifests: Callable[[str], list[dict[str, Any]]], compose: dict[str, Any]
) -> list[tuple[str, list[str], dict[str, str]]]:
    envs = [entry for values in VALUES_FILES for entry in _container_env(manifests(values))]
    return envs + _compose_env(compose)


def test_every_segflow_env_name_is_a_setting(
    manifests: Callable[[str], list[dict[str, Any]]],
    compose_model: dict[str, Any],
    known_env: set[str],
) -> None:
    unknown = sorted(
        {
            f"{where}: {name}"
            for where, _, env in _all_envs(manifests, compose_model)
            for name in env
            if name.startswith("SEGFLOW_") and name not in known_env
        }
    )
    assert not unknown, "set but read by no settings class:\n" + "\n".join(unknown)


def command_settings(command: str) -> list[type[SegflowSettings]]:
    """The settings classes a `segflow` subcommand builds (those its module imports); empty
    for a command that is not a `segflow` subcommand."""
    modules = {name: module for name, module, _ in SUBCOMMANDS}
    if command not in modules:
        return []
    module = importlib.import_module(f"cli.commands.{modules[command]}")
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, SegflowSettings)
        and value is not SegflowSettings
    ]


def test_the_values_given_validate_against_the_settings(
    manifests: Callable[[str], list[dict[str, Any]]],
    compose_model: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each command's settings classes accept the environment its container gets."""
    checked = set()
    for where, args, env in _all_envs(manifests, compose_model):
        if not args:
            continue
        for cls in command_settings(args[0]):
            with monkeypatch.context() as patch:
                for name in [n for n in os.environ if n.startswith("SEGFLOW_")]:
                    patch.delenv(name)
                for name, value in env.items():
                    patch.setenv(name, value)
                try:
                    cls()
                except ValidationError as exc:
                    pytest.fail(f"{where}: {cls.__name__} rejects its environment:\n{exc}")
            checked.add(args[0])
    assert {"ingest", "process", "sink", "topics"} <= checked
