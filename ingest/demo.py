"""Realistic Segment traffic for `segflow demo`, sent through the real Segment Python SDK.

`journeys()` is pure: for each simulated user it yields the calls a product would send, in
order: anonymous page views with UTM parameters, a signup, identify with traits (email, phone),
group with account traits, feature-usage tracks, a checkout ending in Order Completed with
revenue, sometimes an alias; some events arrive late (timestamps hours old) and some are sent
twice with the same messageId. `malformed_requests()` are bodies the edge must refuse.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from runtime.settings import SegflowSettings
from schemas.errors import ConfigError

FEATURES = ["Dashboard Viewed", "Report Exported", "Filter Applied", "Invite Sent", "Search Run"]
PLANS = ["free", "starter", "pro", "enterprise"]
INDUSTRIES = ["retail", "media", "fintech", "health", "education"]
PRODUCTS = [("sku-1", "Notebook", 12.5), ("sku-2", "Pen", 2.0), ("sku-3", "Backpack", 49.0)]
CAMPAIGNS = [
    ("google", "cpc", "winter_sale"),
    ("newsletter", "email", "weekly"),
    ("twitter", "social", "launch"),
]
PAGES = [("Home", "/"), ("Pricing", "/pricing"), ("Docs", "/docs"), ("Blog", "/blog")]


class DemoSettings(SegflowSettings):
    """`segflow demo`: where to send and how much."""

    model_config = SettingsConfigDict(env_prefix="SEGFLOW_DEMO_")

    edge_url: str = Field("http://127.0.0.1:8088", description="Base URL of a running edge")
    write_key: str = Field("dev-write-key", description="Write key of the source to send as")
    source: str = Field("web", description="Source (warehouse schema) the write key maps to")
    users: int = Field(200, ge=1, description="Simulated users; each makes ~11 calls")
    seed: int = Field(7, description="Random seed: the same seed sends the same story")
    late_fraction: float = Field(0.05, ge=0, le=1, description="Share of events hours late")
    duplicate_fraction: float = Field(0.02, ge=0, le=1, description="Share sent twice")
    wait_s: float = Field(120.0, ge=0, description="How long to wait for rows to be queryable")


@dataclass(frozen=True)
class Call:
    """One SDK call: the Client method and its keyword arguments."""

    method: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    duplicate: bool = False

    @property
    def message_id(self) -> str:
        return str(self.kwargs["message_id"])


def _msg() -> str:
    return str(uuid.uuid4())


def journeys(
    users: int,
    *,
    seed: int = 7,
    now: datetime | None = None,
    late_fraction: float = 0.05,
    duplicate_fraction: float = 0.02,
    alias_fraction: float = 0.1,
) -> Iterator[Call]:
    """Every call of `users` simulated users, user after user."""
    rng = random.Random(seed)
    clock = now or datetime.now(UTC)
    for n in range(users):
        yield from _journey(rng, n, clock, late_fraction, duplicate_fraction, alias_fraction)


def _journey(
    rng: random.Random,
    n: int,
    now: datetime,
    late_fraction: float,
    duplicate_fraction: float,
    alias_fraction: float,
) -> Iterator[Call]:
    anon = f"anon-{uuid.UUID(int=rng.getrandbits(128))}"
    user_id = f"user-{n:06d}-{rng.randrange(10**6):06d}"
    account = f"account-{rng.randrange(max(1, n // 5 + 1)):05d}"
    source, medium, campaign = rng.choice(CAMPAIGNS)
    base_context = {"library": {"name": "analytics-python", "version": "2.4.0"}}

    def ts() -> datetime:
        if rng.random() < late_fraction:
            return now - timedelta(hours=rng.randint(1, 48))
        return now

    def call(method: str, **kwargs: Any) -> Iterator[Call]:
        kwargs.setdefault("timestamp", ts())
        kwargs["message_id"] = _msg()
        kwargs.setdefault("context", base_context)
        c = Call(method, kwargs)
        yield c
        if rng.random() < duplicate_fraction:
            yield Call(method, kwargs, duplicate=True)

    for name, path in rng.sample(PAGES, k=rng.randint(1, 3)):
        context = {
            **base_context,
            "campaign": {"source": source, "medium": medium, "name": campaign},
            "page": {"path": path, "url": f"https://shop.example{path}"},
            "ip": f"203.0.113.{rng.randrange(1, 255)}",
        }
        yield from call(
            "page", anonymous_id=anon, name=name, properties={"path": path}, context=context
        )
    yield from call(
        "track", anonymous_id=anon, event="Signed Up", properties={"plan": rng.choice(PLANS)}
    )
    traits = {
        "email": f"{user_id}@example.com",
        "phone": f"+1 415 555 {rng.randrange(10**4):04d}",
        "name": f"User {n}",
        "plan": rng.choice(PLANS),
        "logins": rng.randint(1, 40),
    }
    yield from call("identify", user_id=user_id, anonymous_id=anon, traits=traits)
    yield from call(
        "group",
        user_id=user_id,
        group_id=account,
        traits={
            "name": f"Account {account}",
            "industry": rng.choice(INDUSTRIES),
            "employees": rng.randint(1, 5000),
        },
    )
    for _ in range(rng.randint(1, 4)):
        yield from call(
            "track",
            user_id=user_id,
            event=rng.choice(FEATURES),
            properties={"duration_ms": rng.randint(10, 5000), "beta": rng.random() < 0.2},
        )
    yield from call("screen", user_id=user_id, name="Settings", properties={"tab": "billing"})
    items = rng.sample(PRODUCTS, k=rng.randint(1, len(PRODUCTS)))
    revenue = round(sum(price for _, _, price in items), 2)
    yield from call(
        "track",
        user_id=user_id,
        event="Checkout Started",
        properties={"value": revenue, "currency": "USD"},
    )
    yield from call(
        "track",
        user_id=user_id,
        event="Order Completed",
        properties={
            "order_id": f"order-{n:06d}",
            "revenue": revenue,
            "currency": "USD",
            "products": [{"sku": sku, "name": nm, "price": p} for sku, nm, p in items],
        },
    )
    if rng.random() < alias_fraction:
        yield from call("alias", previous_id=anon, user_id=user_id)


def malformed_requests(write_key: str) -> list[tuple[str, bytes, str]]:
    """(path, body, what is wrong) for requests the edge must answer with 400."""
    return [
        ("/v1/track", b'{"userId": "u1", "event": ', "invalid JSON"),
        ("/v1/track", b'{"event": "No Identity"}', "neither userId nor anonymousId"),
        ("/v1/track", b'{"userId": "u1"}', "track without event"),
        ("/v1/batch", b'{"batch": [{"type": "launch", "userId": "u1"}]}', "unknown type"),
    ]


@dataclass
class SendReport:
    sent: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    message_ids: dict[str, set[str]] = field(default_factory=dict)  # call type -> unique ids


def send(
    calls: Iterator[Call] | list[Call],
    host: str,
    write_key: str,
    *,
    on_progress: Any = None,
    upload_size: int = 100,
) -> SendReport:
    """Send calls through the Segment Python SDK (batched /v1/batch posts, as in production)."""
    try:
        from segment.analytics.client import Client
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "the demo sends through the Segment Python SDK, which is not installed: "
            "pip install 'segflow[local]' (make venv installs it)"
        ) from exc

    report = SendReport()

    def on_error(exc: Exception, batch: list[dict[str, Any]]) -> None:
        report.errors.append(f"{type(exc).__name__}: {exc} ({len(batch)} events)")

    client = Client(
        write_key,
        host=host.rstrip("/"),
        upload_size=upload_size,
        upload_interval=0.1,
        max_retries=5,
        on_error=on_error,
        gzip=True,
        max_queue_size=100_000,
    )
    try:
        for call in calls:
            getattr(client, call.method)(**call.kwargs)
            report.sent += 1
            if call.duplicate:
                report.duplicates += 1
            else:
                report.message_ids.setdefault(call.method, set()).add(call.message_id)
            if on_progress is not None:
                on_progress(1)
        client.flush()
    finally:
        client.join()
    return report
