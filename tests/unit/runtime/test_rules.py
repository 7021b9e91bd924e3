from __future__ import annotations

from pathlib import Path

import pytest

from runtime.rules import (
    development_write_keys,
    load_rules,
    parse_rules,
    refuse_development_keys,
)
from schemas.errors import ConfigError

GOOD = """\
sources:
  - name: web
    write_keys: [k1, k2]
  - name: backend
    write_keys: [k3]
pii:
  rules:
    - {path: traits.email, action: hash}
"""


def test_embedded_default_is_valid() -> None:
    rules = load_rules(None)
    assert rules.source_for_key()["dev-write-key"].name == "web"
    assert rules.identity.max_user_ids_per_anonymous_id == 5


def test_good_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    rules = load_rules(path)
    assert {k: s.name for k, s in rules.source_for_key().items()} == {
        "k1": "web",
        "k2": "web",
        "k3": "backend",
    }
    assert rules.tracking_plan.mode == "evolve"


def test_bad_field_names_field_and_line() -> None:
    text = GOOD.replace("action: hash", "action: scramble")
    with pytest.raises(ConfigError) as info:
        parse_rules(text, "rules.yaml")
    assert "rules.yaml:8" in str(info.value)
    assert "pii.rules.0.action" in str(info.value)


def test_unknown_key_is_refused_with_its_line() -> None:
    text = GOOD + "tracking_plan:\n  mode: evolve\n  modes: strict\n"
    with pytest.raises(ConfigError) as info:
        parse_rules(text, "rules.yaml")
    assert "rules.yaml:11" in str(info.value)
    assert "tracking_plan.modes" in str(info.value)


def test_bad_source_name() -> None:
    with pytest.raises(ConfigError, match=r"rules.yaml:2: sources.0.name"):
        parse_rules("sources:\n  - name: Web-Site\n    write_keys: [k]\n", "rules.yaml")


def test_duplicate_write_key() -> None:
    text = "sources:\n  - {name: a, write_keys: [k]}\n  - {name: b, write_keys: [k]}\n"
    with pytest.raises(ConfigError, match="key used by two sources"):
        parse_rules(text, "rules.yaml")


def test_not_yaml() -> None:
    with pytest.raises(ConfigError, match=r"rules.yaml:\d+: not valid YAML"):
        parse_rules("sources: [\n", "rules.yaml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "nope.yaml")


# ------------------------------------------------------------------ public development keys


def test_the_embedded_rules_are_refused_without_the_development_opt_in() -> None:
    with pytest.raises(ConfigError) as err:
        refuse_development_keys(load_rules(None), False, "default_rules.yaml")
    message = str(err.value)
    assert "default_rules.yaml" in message and "['backend', 'web']" in message
    assert "SEGFLOW_RULES_FILE" in message and "SEGFLOW_ALLOW_DEV_DEFAULTS" in message


def test_own_rules_reusing_a_development_key_are_refused_too() -> None:
    rules = parse_rules("sources:\n  - {name: shop, write_keys: [live-1, dev-write-key]}\n")
    with pytest.raises(ConfigError, match=r"rules.yaml: sources \['shop'\]"):
        refuse_development_keys(rules, False, "rules.yaml")


def test_own_keys_pass_and_the_opt_in_still_warns(caplog: pytest.LogCaptureFixture) -> None:
    refuse_development_keys(parse_rules(GOOD), False, "rules.yaml")
    assert not caplog.records
    refuse_development_keys(parse_rules(GOOD), True, "rules.yaml")
    (record,) = caplog.records
    assert record.levelname == "WARNING" and "SEGFLOW_ALLOW_DEV_DEFAULTS" in record.getMessage()


def test_the_opt_in_serves_the_embedded_rules_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refuse_development_keys(load_rules(None), True, "default_rules.yaml")
    (record,) = caplog.records
    assert record.levelname == "WARNING" and "SEGFLOW_ALLOW_DEV_DEFAULTS" in record.getMessage()
    assert "dev-write-key" not in record.getMessage()  # sources named, keys not logged


def test_the_development_keys_are_those_of_the_embedded_file() -> None:
    assert development_write_keys() == frozenset(load_rules(None).source_for_key())
