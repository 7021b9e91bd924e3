"""The PII HMAC key: long enough, never the public development key outside development, and
the version label recorded on events tied to the key itself."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from processors.settings import (
    DEVELOPMENT_PII_HMAC_KEY,
    MIN_PII_HMAC_KEY_BYTES,
    ProcessorSettings,
)
from runtime.settings import ObservabilitySettings, build_settings
from schemas.errors import ConfigError

KEY_A = "a" * MIN_PII_HMAC_KEY_BYTES
KEY_B = "b" * MIN_PII_HMAC_KEY_BYTES


def test_a_short_key_is_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGFLOW_PROCESS_PII_HMAC_KEY", "k" * (MIN_PII_HMAC_KEY_BYTES - 1))
    with pytest.raises(ConfigError, match=r"pii_hmac_key \(SEGFLOW_PROCESS_PII_HMAC_KEY\)"):
        build_settings(ProcessorSettings)
    assert ProcessorSettings(pii_hmac_key=SecretStr(KEY_A)).pii_hmac_key is not None


def test_the_public_development_key_needs_the_development_opt_in() -> None:
    with pytest.raises(ValidationError, match="public development key"):
        ProcessorSettings(
            pii_hmac_key=SecretStr(DEVELOPMENT_PII_HMAC_KEY),
            observability=ObservabilitySettings(allow_dev_defaults=False),
        )
    ProcessorSettings(
        pii_hmac_key=SecretStr(DEVELOPMENT_PII_HMAC_KEY),
        observability=ObservabilitySettings(allow_dev_defaults=True),
    )


def test_two_keys_never_share_a_version_label() -> None:
    a = ProcessorSettings(pii_hmac_key=SecretStr(KEY_A), pii_key_version="v2")
    b = ProcessorSettings(pii_hmac_key=SecretStr(KEY_B), pii_key_version="v2")
    assert a.pii_key_label.startswith("v2-") and b.pii_key_label.startswith("v2-")
    assert a.pii_key_label != b.pii_key_label
    again = ProcessorSettings(pii_hmac_key=SecretStr(KEY_A), pii_key_version="v2")
    assert again.pii_key_label == a.pii_key_label  # stable across restarts
    assert KEY_A not in a.pii_key_label
