from __future__ import annotations

import pytest

from reverse_etl.settings import ReverseEtlSettings
from reverse_etl.sync import call_spec
from runtime.settings import build_settings
from schemas.errors import ConfigError


def test_exactly_one_query_source(tmp_path: object) -> None:
    with pytest.raises(ConfigError):
        build_settings(ReverseEtlSettings)
    settings = build_settings(ReverseEtlSettings, query="select 1 as user_id")
    assert settings.sql() == "select 1 as user_id"
    assert settings.row_key_column == "user_id"


def test_track_needs_a_key_and_integrations_must_be_an_object() -> None:
    with pytest.raises(ConfigError):
        call_spec(build_settings(ReverseEtlSettings, query="q", call="track"))
    with pytest.raises(ConfigError):
        call_spec(build_settings(ReverseEtlSettings, query="q", integrations_json="[1]"))
    spec = call_spec(build_settings(ReverseEtlSettings, query="q", call="track", key_column="id"))
    assert spec.key_column == "id" and spec.integrations == {"Segflow": False}


def test_limits_cannot_exceed_segment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGFLOW_REVERSE_ETL_MAX_BATCH_EVENTS", "5000")
    with pytest.raises(ConfigError) as info:
        build_settings(ReverseEtlSettings, query="q")
    assert "SEGFLOW_REVERSE_ETL_MAX_BATCH_EVENTS" in str(info.value)
