from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
import pytest

from ingest.archive import ArchiveFile
from ingest.backfill import (
    BackfillSettings,
    Converted,
    convert_line,
    derived_message_id,
    is_suppressed,
    select_files,
    source_names,
)
from ingest.rejections import ItemProblem
from runtime.settings import build_settings
from schemas.errors import ConfigError
from schemas.segment import EventLimits

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def _line(**fields: object) -> bytes:
    event: dict[str, object] = {
        "type": "track",
        "event": "Viewed",
        "messageId": "m1",
        "anonymousId": "a1",
        "userId": "u1",
        "receivedAt": "2024-05-01T10:00:05.000Z",
        "timestamp": "2024-05-01T10:00:00.000Z",
        "sentAt": "2024-05-01T10:00:09.000Z",
        "originalTimestamp": "2024-05-01T10:00:04.000Z",
        "properties": {"n": 1},
        "projectId": "abc",
    }
    event.update(fields)
    return orjson.dumps({k: v for k, v in event.items() if v is not None})


def test_archived_times_are_kept_not_recorrected() -> None:
    out = convert_line(_line(), "web", NOW)
    assert isinstance(out, Converted)
    r = out.record
    assert r["receivedAt"] == datetime(2024, 5, 1, 10, 0, 5, tzinfo=UTC)
    assert r["timestamp"] == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert r["source"] == "web" and r["messageId"] == "m1"
    assert out.key == b"a1" and out.call_type == "track"
    assert orjson.loads(r["extra"]) == {"projectId": "abc"}


def test_missing_message_id_is_derived_from_the_line() -> None:
    line = _line(messageId=None)
    first, second = convert_line(line, "web", NOW), convert_line(line, "web", NOW)
    assert isinstance(first, Converted) and isinstance(second, Converted)
    assert first.record["messageId"] == second.record["messageId"] == derived_message_id(line)
    assert len(derived_message_id(line)) < 100


def test_missing_received_at_falls_back_to_event_time() -> None:
    out = convert_line(_line(receivedAt=None), "web", NOW)
    assert isinstance(out, Converted)
    assert out.record["receivedAt"] == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (_line(event=""), "missing_event"),
    ],
)
def test_bad_lines_are_problems(line: bytes, code: str) -> None:
    out = convert_line(line, "web", NOW)
    assert isinstance(out, ItemProblem) and out.code == code


def test_blank_lines_are_skipped() -> None:
    assert convert_line(b"   ", "web", NOW) is None


class Suppressed:
    def is_suppressed(self, user_id: object = None, anonymous_id: object = None) -> bool:
        return "gone" in (user_id, anonymous_id)


def test_suppressed_users_by_user_anonymous_or_previous_id() -> None:
    for fields in ({"userId": "gone"}, {"anonymousId": "gone"}):
        out = convert_line(_line(**fields), "web", NOW)
        assert isinstance(out, Converted) and is_suppressed(Suppressed(), out.fields)
    alias = convert_line(
        _line(type="alias", previousId="gone", userId="new", anonymousId=None), "web", NOW
    )
    assert isinstance(alias, Converted) and is_suppressed(Suppressed(), alias.fields)
    keep = convert_line(_line(), "web", NOW)
    assert isinstance(keep, Converted) and not is_suppressed(Suppressed(), keep.fields)


def test_sources_map_and_must_be_known() -> None:
    folders = ["web", "Xy12Ab", "mobile"]
    got = source_names(folders, {"Xy12Ab": "backend"}, None, {"web", "backend", "mobile"})
    assert got == {"web": "web", "Xy12Ab": "backend", "mobile": "mobile"}
    assert source_names(
        folders, {"Xy12Ab": "backend"}, {"backend"}, {"web", "backend", "mobile"}
    ) == {"Xy12Ab": "backend"}
    with pytest.raises(ConfigError) as info:
        source_names(["Xy12Ab"], {}, None, {"web"})
    assert "--source-map Xy12Ab=NAME" in str(info.value)


def test_day_filter_is_inclusive() -> None:
    files = [ArchiveFile("web", date(2024, 5, d), None, f"web/{d}", 1) for d in (1, 2, 3, 4)]
    files.append(ArchiveFile("other", date(2024, 5, 2), None, "other/2", 1))
    chosen = select_files(files, {"web": "web"}, date(2024, 5, 2), date(2024, 5, 3))
    assert [f.rel_path for f in chosen] == ["web/2", "web/3"]


def test_default_checkpoint_name_depends_on_the_path() -> None:
    settings = build_settings(BackfillSettings)
    a, b = settings.checkpoint_for("s3://x/a"), settings.checkpoint_for("s3://x/b")
    assert a != b and a == settings.checkpoint_for("s3://x/a/")
    assert a.name.startswith("segflow-backfill-")


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (_line()[:-1] + b',"deep":' + b"[" * 600 + b"]" * 600 + b"}", "too_deep"),
        (_line()[:-1] + b',"big":18446744073709551616}', "number_out_of_range"),
        (_line(userId="u" * 513), "identifier_too_long"),
        (_line(event="e\x00"), "invalid_character"),
        (_line(timestamp="0001-01-01T00:00:00+23:00", receivedAt=None), "invalid_timestamp"),
        (_line(userId=True), "invalid_field"),
    ],
)
def test_a_line_past_the_edges_limits_is_an_invalid_line_not_a_crash(
    line: bytes, code: str
) -> None:
    out = convert_line(line, "web", NOW)
    assert isinstance(out, ItemProblem) and out.code == code


def test_backfill_takes_the_limits_it_is_given() -> None:
    limits = EventLimits(max_identifier_length=4)
    out = convert_line(_line(userId="u" * 5), "web", NOW, limits)
    assert isinstance(out, ItemProblem) and out.code == "identifier_too_long"
    assert isinstance(convert_line(_line(userId="u" * 5), "web", NOW), Converted)


def test_a_receivedat_utc_cannot_hold_is_kept_as_sent() -> None:
    out = convert_line(_line(receivedAt="9999-12-31T23:59:59-23:00"), "web", NOW)
    assert isinstance(out, Converted)
    assert orjson.loads(out.record["extra"])["receivedAt"] == "9999-12-31T23:59:59-23:00"
