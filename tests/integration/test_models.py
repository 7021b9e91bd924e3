"""The analytics models (analytics/, dbt) on data sent through the real pipeline.

A generated scenario (users with sessions, UTM channels, features, orders, accounts) goes
edge -> broker -> processors -> sink; ``segflow models run`` and ``segflow models test`` build
the models on the emulator; their tables are compared with results computed here, in Python,
from the scenario alone. Then more events arrive: an incremental run must equal a full refresh.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from cli.main import main as segflow
from ingest.demo import Call, send
from schemas.codec import RAW_EVENT
from tests.integration.components import decode_all, read_topic
from tests.integration.pipeline import SOURCE, WRITE_KEY, Pipeline, poll, running_pipeline

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DBT = REPO / ".venv-dbt" / "bin" / "dbt"
CHANNELS = ["google", "newsletter", "twitter", None]  # None: no UTM, the 'direct' channel
FEATURES = ["Dashboard Viewed", "Report Exported", "Filter Applied", "Invite Sent"]
ACCOUNTS = ["acct-a", "acct-b", "acct-c"]
SESSION_GAP = timedelta(minutes=30)
LOOKBACK = timedelta(days=30)
HALF_LIFE_DAYS = 7.0
WEIGHTS = {"recency": 30, "frequency": 25, "breadth": 20, "seats": 15, "trend": 10}


@dataclass
class Ev:
    call: str  # page | track | identify | group
    user: str  # the resolved user the scenario means
    ts: datetime
    anonymous: bool = False
    event: str = ""
    channel: str | None = None
    revenue: float = 0.0
    account: str = ""


@dataclass
class Scenario:
    events: list[Ev] = field(default_factory=list)

    def calls(self, anon_ids: dict[str, str]) -> list[Call]:
        out = []
        for e in self.events:
            ids: dict[str, Any] = (
                {"anonymous_id": anon_ids[e.user]}
                if e.anonymous
                else {"user_id": e.user, "anonymous_id": anon_ids[e.user]}
                if e.call == "identify"
                else {"user_id": e.user}
            )
            kw: dict[str, Any] = {**ids, "timestamp": e.ts, "message_id": str(uuid.uuid4())}
            if e.call == "page":
                ctx: dict[str, Any] = {"page": {"path": "/pricing"}}
                if e.channel:
                    ctx["campaign"] = {"source": e.channel, "medium": "cpc", "name": "c"}
                kw.update(name="Pricing", properties={"path": "/pricing"}, context=ctx)
            elif e.call == "track":
                props: dict[str, Any] = {}
                if e.event == "Order Completed":
                    props = {"revenue": e.revenue, "currency": "USD"}
                kw.update(event=e.event, properties=props)
            elif e.call == "identify":
                kw.update(traits={"plan": "pro", "name": f"N {e.user}"})
            elif e.call == "group":
                kw.update(group_id=e.account, traits={"name": e.account})
            out.append(Call(e.call, kw))
        return out


def scenario(rng: random.Random, users: list[str], start: datetime, days: int) -> Scenario:
    """Sessions of `users` over `days` days from `start` (events 08:00-20:00 UTC)."""
    sc = Scenario()
    for n, user in enumerate(users):
        first = True
        for day in range(days):
            if not first and rng.random() < 0.45:
                continue
            t = start + timedelta(days=day, hours=8 + rng.randint(0, 3), minutes=rng.randint(0, 59))
            for _ in range(rng.randint(1, 2)):
                channel = rng.choice(CHANNELS)
                sc.events.append(Ev("page", user, t, anonymous=first, channel=channel))
                if first:
                    t += timedelta(minutes=rng.randint(1, 5))
                    sc.events.append(Ev("identify", user, t))
                    sc.events.append(Ev("track", user, t, event="Signed Up"))
                    account = ACCOUNTS[n % len(ACCOUNTS)]
                    sc.events.append(Ev("group", user, t, account=account))
                    first = False
                for _ in range(rng.randint(1, 3)):
                    # gaps near the 30-minute timeout on both sides test the boundary
                    t += timedelta(minutes=rng.choice([2, 7, 25, 29]))
                    sc.events.append(Ev("track", user, t, event=rng.choice(FEATURES)))
                if rng.random() < 0.35:
                    t += timedelta(minutes=rng.randint(1, 10))
                    revenue = float(rng.choice([19, 49, 99, 12.5]))
                    sc.events.append(Ev("track", user, t, event="Order Completed", revenue=revenue))
                t += rng.choice([timedelta(minutes=31), timedelta(minutes=45), timedelta(hours=3)])
    return sc


# ---- the expectations, computed from the scenario alone -------------------------------------


def activity(evs: list[Ev]) -> list[Ev]:
    return sorted((e for e in evs if e.call in ("page", "track")), key=lambda e: (e.user, e.ts))


def sessions_of(evs: list[Ev]) -> dict[str, list[list[Ev]]]:
    out: dict[str, list[list[Ev]]] = defaultdict(list)
    for e in activity(evs):
        runs = out[e.user]
        if runs and e.ts - runs[-1][-1].ts <= SESSION_GAP:
            runs[-1].append(e)
        else:
            runs.append([e])
    return out


def channel_of(session: list[Ev]) -> str:
    return next((e.channel for e in session if e.call == "page" and e.channel), None) or "direct"


def attribution(evs: list[Ev]) -> dict[tuple[str, str], float]:
    """(model, channel) -> credited revenue."""
    credits: dict[tuple[str, str], float] = defaultdict(float)
    sessions = sessions_of(evs)
    for conv in (e for e in evs if e.event == "Order Completed"):
        touches = [s for s in sessions[conv.user] if conv.ts - LOOKBACK <= s[0].ts <= conv.ts]
        touches.sort(key=lambda s: s[0].ts)
        credits[("first_touch", channel_of(touches[0]))] += conv.revenue
        credits[("last_touch", channel_of(touches[-1]))] += conv.revenue
        weights = [
            0.5 ** ((conv.ts - s[0].ts).total_seconds() / 86400 / HALF_LIFE_DAYS) for s in touches
        ]
        for s, w in zip(touches, weights, strict=True):
            credits[("linear", channel_of(s))] += conv.revenue / len(touches)
            credits[("time_decay", channel_of(s))] += conv.revenue * w / sum(weights)
    return credits


def revenue_by_day_channel(evs: list[Ev]) -> dict[tuple[date, str], float]:
    out: dict[tuple[date, str], float] = defaultdict(float)
    sessions = sessions_of(evs)
    for conv in (e for e in evs if e.event == "Order Completed"):
        last = max((s for s in sessions[conv.user] if s[0].ts <= conv.ts), key=lambda s: s[0].ts)
        out[(conv.ts.date(), channel_of(last))] += conv.revenue
    return out


def week(d: datetime) -> date:
    return (d - timedelta(days=d.weekday())).date()


def adoption(evs: list[Ev]) -> dict[tuple[str, date, int], tuple[int, int]]:
    """(feature, cohort week, weeks since) -> (adopters in the cohort, users active that week)."""
    used: dict[tuple[str, str], set[date]] = defaultdict(set)
    for e in evs:
        if e.event in FEATURES:
            used[(e.event, e.user)].add(week(e.ts))
    out: dict[tuple[str, date, int], tuple[int, int]] = {}
    cohorts: dict[tuple[str, date], list[set[date]]] = defaultdict(list)
    for (feature, _user), weeks in used.items():
        cohorts[(feature, min(weeks))].append(weeks)
    for (feature, cohort), members in cohorts.items():
        for weeks in members:
            for w in weeks:
                k = (w - cohort).days // 7
                size, active = out.get((feature, cohort, k), (len(members), 0))
                out[(feature, cohort, k)] = (size, active + 1)
    return out


def health(evs: list[Ev], account: str, day: date) -> float:
    members = {e.user for e in evs if e.call == "group" and e.account == account}
    acts = [e for e in activity(evs) if e.user in members and e.ts.date() <= day]
    window = [e for e in acts if day - timedelta(days=6) <= e.ts.date()]
    prior = [e for e in acts if day - timedelta(days=13) <= e.ts.date() < day - timedelta(days=6)]
    recency_days = (day - max(e.ts.date() for e in acts)).days
    recency = max(0.0, 1 - recency_days / 30)
    frequency = min(1.0, len(window) / 50)
    breadth = len({e.event for e in window if e.event in FEATURES}) / len(
        {e.event for e in evs if e.event in FEATURES}
    )
    seats = min(1.0, len({e.user for e in window}) / 5)
    trend = min(1.0, len(window) / len(prior) / 2) if prior else (1.0 if window else 0.0)
    parts = {"recency": recency, "frequency": frequency, "breadth": breadth, "seats": seats}
    parts["trend"] = trend
    return round(100 * sum(WEIGHTS[k] * v for k, v in parts.items()) / sum(WEIGHTS.values()), 2)


# ---- the test -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(
    kafka_bootstrap: str, warehouse_conn_params: dict[str, Any], tmp_path_factory: Any
) -> Iterator[Pipeline]:
    if not DBT.is_file():
        pytest.skip("dbt is not installed in .venv-dbt (scripts/venv.sh makes it)")
    tmp: Path = tmp_path_factory.mktemp("models")
    with running_pipeline(kafka_bootstrap, warehouse_conn_params, tmp) as pipe:
        yield pipe


def deliver(pipe: Pipeline, calls: list[Call], before: dict[str, int]) -> dict[str, int]:
    report = send(calls, pipe.edge, WRITE_KEY)
    assert not report.errors, report.errors
    tables = {"page": "pages", "track": "tracks", "identify": "identifies", "group": "groups"}
    want = {t: before.get(t, 0) + len(report.message_ids.get(c, ())) for c, t in tables.items()}
    for table, n in want.items():

        def loaded(table: str = table, n: int = n) -> bool:
            return pipe.count(table) >= n

        poll(loaded, 120, f"{n} rows in {table}")
    # the per-event table of orders is loaded in the same flushes as tracks, but poll it too
    orders = sum(1 for c in calls if c.kwargs.get("event") == "Order Completed")
    if orders:
        poll(
            lambda: pipe.count("order_completed") >= before.get("orders", 0) + orders,
            120,
            "orders loaded",
        )
    want["orders"] = before.get("orders", 0) + orders
    return want


def models(pipe: Pipeline, tmp: Path, *args: str) -> None:
    env = [
        "--snowflake-host",
        str(pipe.conn_params["host"]),
        "--snowflake-port",
        str(pipe.conn_params["port"]),
        "--snowflake-database",
        pipe.database,
        "--models-work-dir",
        str(tmp),
        "--models-dbt-path",
        str(DBT),
        "--models-source",
        SOURCE,
    ]
    assert segflow(["models", *args, *env]) == 0, f"segflow models {' '.join(args)} failed"


def snapshot(pipe: Pipeline) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table in (
        "stg_events",
        "sessions",
        "conversions_attributed",
        "feature_adoption",
        "funnel_steps",
        "account_health",
        "revenue_daily",
        "user_profiles",
    ):
        rows = pipe.query(f"SELECT * FROM {SOURCE}_analytics.{table}")
        # floats summed in another order differ in the last digits: compare to 6 places
        rounded = [tuple(round(v, 6) if isinstance(v, float) else v for v in r) for r in rows]
        out[table] = sorted(rounded, key=lambda r: tuple(str(v) for v in r))
    return out


def test_models_match_the_scenario_and_incremental_equals_full_refresh(
    pipeline: Pipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(20261204)
    users = [f"user-{i:03d}" for i in range(12)]
    anon = {u: f"anon-{uuid.UUID(int=rng.getrandbits(128))}" for u in users}
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=16)
    first = scenario(rng, users, start, 10)
    print(f"warehouse database {pipeline.database}")
    counts = deliver(pipeline, first.calls(anon), {})
    models(pipeline, tmp_path, "run")

    # more events arrive: later days for the same users, and two new users
    more_users = [*users, "user-100", "user-101"]
    anon.update({u: f"anon-{uuid.UUID(int=rng.getrandbits(128))}" for u in more_users[-2:]})
    later = scenario(rng, more_users[-2:], start + timedelta(days=10), 5)
    rest = scenario(rng, users, start + timedelta(days=10), 5)
    rest.events = [e for e in rest.events if e.call in ("page", "track") and not e.anonymous]
    second = Scenario([*later.events, *rest.events])
    deliver(pipeline, second.calls(anon), counts)
    models(pipeline, tmp_path, "run")
    models(pipeline, tmp_path, "test")
    incremental = snapshot(pipeline)

    evs = [*first.events, *second.events]
    check_sessions(pipeline, evs)
    check_attribution(pipeline, evs)
    check_revenue(pipeline, evs)
    check_adoption(pipeline, evs)
    check_health(pipeline, evs)

    models(pipeline, tmp_path, "run", "--full-refresh")
    full = snapshot(pipeline)
    for table, rows in incremental.items():
        assert rows == full[table], f"{table}: the incremental run differs from a full refresh"

    check_churn_risk_reverse_etl(pipeline, capsys)


def check_churn_risk_reverse_etl(pipe: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    """The reverse-ETL examples run: every user of an account is sent once as an identify with
    the account's health (the churn-risk audience), every account once as a group call."""
    members = pipe.query(
        f"SELECT COUNT(*) FROM {SOURCE}_analytics.user_profiles WHERE account_id IS NOT NULL"
    )[0][0]
    run_reverse_etl(pipe, capsys, "churn_risk", [], members)
    accounts = pipe.query(
        f"SELECT COUNT(DISTINCT account_id) FROM {SOURCE}_analytics.account_health"
    )[0][0]
    assert accounts
    group = ["--reverse-etl-call", "group", "--reverse-etl-group-id-column", "group_id"]
    run_reverse_etl(pipe, capsys, "account_health", group, accounts)

    # the edge accepted them (`sent N`): on the raw topic, each account's group call carries its
    # health as traits (the processors keep reverse ETL's echo out of the event tables)
    raw = decode_all(RAW_EVENT, read_topic(pipe.bootstrap, pipe.topics.raw("group"), expected=1))
    sent = {
        r["groupId"]: orjson.loads(r["traits"])
        for r in raw
        if "account_health" in (r.get("context") or "")
    }
    assert len(sent) == accounts, sent.keys()
    assert all("health_score" in t and "at_risk" in t for t in sent.values())


def run_reverse_etl(
    pipe: Pipeline,
    capsys: pytest.CaptureFixture[str],
    sync: str,
    extra: list[str],
    expected: int,
) -> None:
    capsys.readouterr()
    code = segflow(
        [
            "reverse-etl",
            *extra,
            "--reverse-etl-sync-name",
            sync,
            "--reverse-etl-query-file",
            str(REPO / "analytics" / "reverse_etl" / f"{sync}.sql"),
            "--reverse-etl-api-host",
            pipe.edge,
            "--reverse-etl-write-key",
            WRITE_KEY,
            "--kafka-bootstrap",
            pipe.bootstrap,
            "--kafka-topic-prefix",
            pipe.prefix,
            "--snowflake-host",
            str(pipe.conn_params["host"]),
            "--snowflake-port",
            str(pipe.conn_params["port"]),
            "--snowflake-database",
            pipe.database,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"sent {expected} in" in out, out


def check_sessions(pipe: Pipeline, evs: list[Ev]) -> None:
    want = {
        (user, s[0].ts.replace(microsecond=0), len(s))
        for user, runs in sessions_of(evs).items()
        for s in runs
    }
    rows = pipe.query(
        f"SELECT user_id, session_start, event_count FROM {SOURCE}_analytics.sessions"
    )
    got = {(u, ts.astimezone(UTC).replace(microsecond=0), int(n)) for u, ts, n in rows}
    assert len(rows) == len(want)
    # the pipeline corrects timestamps by the SDK's sentAt: allow a second of skew
    loose = {(u, n, round(ts.timestamp() / 5)) for u, ts, n in got}
    assert loose == {(u, n, round(ts.timestamp() / 5)) for u, ts, n in want}


def check_attribution(pipe: Pipeline, evs: list[Ev]) -> None:
    rows = pipe.query(
        "SELECT channel, SUM(credit_first_touch), SUM(credit_last_touch), SUM(credit_linear), "
        f"SUM(credit_time_decay) FROM {SOURCE}_analytics.conversions_attributed GROUP BY channel"
    )
    got: dict[tuple[str, str], float] = {}
    for channel, *credits in rows:
        for model, credit in zip(
            ("first_touch", "last_touch", "linear", "time_decay"), credits, strict=True
        ):
            if float(credit or 0):
                got[(model, channel)] = float(credit)
    want = {k: v for k, v in attribution(evs).items() if v}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) < 0.01, (key, got[key], value)


def check_revenue(pipe: Pipeline, evs: list[Ev]) -> None:
    rows = pipe.query(
        f"SELECT day, channel, SUM(revenue) FROM {SOURCE}_analytics.revenue_daily "
        "WHERE orders > 0 GROUP BY day, channel"
    )
    got = {(d, c): float(Decimal(r)) for d, c, r in rows}
    want = revenue_by_day_channel(evs)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) < 0.01, (key, got[key], value)


def check_adoption(pipe: Pipeline, evs: list[Ev]) -> None:
    rows = pipe.query(
        "SELECT feature, cohort_week, week_number, cohort_users, retained_users "
        f"FROM {SOURCE}_analytics.feature_adoption"
    )
    got = {(f, w, int(k)): (int(c), int(r)) for f, w, k, c, r in rows if int(r)}
    assert got == adoption(evs)


def check_health(pipe: Pipeline, evs: list[Ev]) -> None:
    last = max(e.ts for e in evs).date()
    rows = pipe.query(
        f"SELECT account_id, health_score FROM {SOURCE}_analytics.account_health "
        f"WHERE day = '{last.isoformat()}'"
    )
    got = {a: float(s) for a, s in rows}
    for account in ACCOUNTS:
        assert abs(got[account] - health(evs, account, last)) < 0.02, account
