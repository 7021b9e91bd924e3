"""`segflow forget`'s settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from runtime.settings import SegflowSettings


class ForgetSettings(SegflowSettings):
    """`segflow forget`: how long it waits for the sinks before its final deletion pass."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_FORGET_")

    sink_wait_s: float = Field(
        600.0, ge=0, description="Seconds to wait for the sinks to pass the suppression; 0 = none"
    )
    sink_groups: str = Field(
        "", description="Sink groups to wait for, comma-separated; empty = all in _segflow_offsets"
    )
    control_schema: str = Field(
        "_segflow", description="Schema of the sinks' _segflow_offsets table"
    )
    progress_s: float = Field(
        10.0, gt=0, description="Seconds between progress lines while waiting"
    )

    def groups(self) -> list[str]:
        return [g.strip() for g in self.sink_groups.split(",") if g.strip()]
