"""Command-line options generated from settings classes, so every option has its env twin.

A field ``port`` of a class with env prefix ``SEGFLOW_INGEST_`` becomes ``--ingest-port``, reads
``SEGFLOW_INGEST_PORT`` when not given, and shows both in ``--help``. A boolean field becomes a
pair, ``--reverse-etl-gzip/--no-reverse-etl-gzip`` (its env twin still takes true or false).
Fields that are themselves settings classes (``kafka: KafkaSettings``) contribute their own
options (``--kafka-bootstrap``).

Secrets (``SecretStr`` fields) are best given as ``SEGFLOW_..._FILE`` (a file holding the value)
or in the environment: a command line is visible to every user of the machine (``ps``). Their
options still work for a one-off run, and say so on stderr when used.
"""

from __future__ import annotations

import argparse
import sys
import typing
from typing import Any, TypeVar

from pydantic import SecretStr

from runtime.settings import FILE_SUFFIX, SegflowSettings, build_settings, is_secret_field

S = TypeVar("S", bound=SegflowSettings)
_SCALARS = (str, int, float, bool, SecretStr)


def _nested(annotation: Any) -> type[SegflowSettings] | None:
    if isinstance(annotation, type) and issubclass(annotation, SegflowSettings):
        return annotation
    return None


def _cli_type(annotation: Any) -> bool:
    """True when a field can be given on the command line (scalars, paths, literals)."""
    origin = typing.get_origin(annotation)
    if origin in (list, dict, set, tuple):
        return False
    args = typing.get_args(annotation)
    if args and origin is not typing.Literal:
        return all(_cli_type(a) for a in args if a is not type(None))
    return True


def _is_bool(annotation: Any) -> bool:
    """True for ``bool`` and ``bool | None`` fields: they become ``--x/--no-x`` pairs."""
    if annotation is bool:
        return True
    args = typing.get_args(annotation)
    return bool(args) and {a for a in args if a is not type(None)} == {bool}


def _dest(env: str) -> str:
    return "opt__" + env.lower()


def add_settings_options(parser: argparse.ArgumentParser, cls: type[SegflowSettings]) -> None:
    """Add one option per field of `cls` (and of its nested settings classes)."""
    prefix = str(cls.model_config.get("env_prefix", "SEGFLOW_"))
    group = parser.add_argument_group(f"{cls.__name__} (environment {prefix}*)")
    for name, field in cls.model_fields.items():
        nested = _nested(field.annotation)
        if nested is not None:
            add_settings_options(parser, nested)
            continue
        env = (prefix + name).upper()
        flag = "--" + env.removeprefix("SEGFLOW_").lower().replace("_", "-")
        default = field.default
        if isinstance(default, SecretStr):
            default = "(secret)"
        shown = "" if default is None or callable(default) else f" (default {default})"
        description = field.description or ""
        if is_secret_field(field.annotation):
            group.add_argument(
                flag,
                dest=_dest(env),
                metavar=name.upper(),
                help=f"{description} [secret: env {env} or {env}{FILE_SUFFIX} (a file holding "
                "it); this option is visible in ps]",
            )
            continue
        if _is_bool(field.annotation):
            # --x / --no-x; unset (None) leaves the environment variable or the default in force
            group.add_argument(
                flag,
                dest=_dest(env),
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{description}{shown} [env {env}]",
            )
            continue
        if not _cli_type(field.annotation):
            description += " [environment only, JSON]"
            group.add_argument(flag, dest=_dest(env), help=argparse.SUPPRESS)
            continue
        group.add_argument(
            flag,
            dest=_dest(env),
            metavar=name.upper(),
            help=f"{description}{shown} [env {env}]",
        )


def settings_from_args(cls: type[S], args: argparse.Namespace) -> S:
    """Build `cls` from its options given on the command line, then the environment."""
    prefix = str(cls.model_config.get("env_prefix", "SEGFLOW_"))
    overrides: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        nested = _nested(field.annotation)
        if nested is not None:
            overrides[name] = settings_from_args(nested, args)
            continue
        env = (prefix + name).upper()
        value = getattr(args, _dest(env), None)
        if value is not None:
            if is_secret_field(field.annotation):
                print(
                    f"warning: {env} given on the command line, where any user of this machine "
                    f"can read it (ps); set {env} or {env}{FILE_SUFFIX} instead",
                    file=sys.stderr,
                )
            overrides[name] = value
    return build_settings(cls, **overrides)
