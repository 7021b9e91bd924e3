"""The web console in a real headless browser (Debian's chromium, driven by selenium through
Debian's chromedriver; nothing is downloaded at test time).

One real path: the edge and the processors as subprocesses on the module's own topics, and
`segflow console` (with a token) beside them. Events posted to the edge must appear in the live
view within seconds; a poison record on a raw topic must appear in the DLQ view with the reason
the processors gave it. A screenshot of each view is written to var/console-<view>.png.

Without the browser packages the test fails under CI (CI=true) and is skipped otherwise, naming
scripts/browser.sh, which installs them.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import Producer

from runtime.settings import KafkaSettings
from runtime.topic_admin import create_topics, expected_topics
from schemas.dlq import parse_dlq_headers
from schemas.topics import HEADER_SOURCE, Topics
from tests.integration.components import REPO, Component, env_for, read_topic, warehouse
from tests.integration.conftest import free_port, unique_name
from tests.integration.pipeline import post

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "console-test-token-" + uuid.uuid4().hex
SHOTS = REPO / "var"
EMAIL = "jane.console@example.com"
T = TypeVar("T")


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return None
    return f"missing {', '.join(missing)}: run scripts/browser.sh (Debian's chromium packages)"


def wait_for(check: Callable[[], T], timeout_s: float, what: str) -> T:
    """Poll `check` until it is truthy (exceptions count as not yet); fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # the page is still loading: try again
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}: {last!r}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = browser_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    before = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    # a Service given the driver's path: Selenium Manager is never asked for one
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        if before is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = before


def http_ready(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)
        except urllib.error.HTTPError:
            return False

    return ready


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, warehouse_conn_params: dict[str, Any], tmp_path_factory: Any
) -> Iterator[dict[str, Any]]:
    """The edge, the processors and the console on the module's own topics."""
    tmp = tmp_path_factory.mktemp("console")
    prefix = unique_name("console") + "."
    database = unique_name("CONSOLE").upper()
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=prefix)
    create_topics(kafka, expected_topics(kafka.topics, partitions=1))
    warehouse(warehouse_conn_params, database).close()  # the schema view reads it
    env = env_for(kafka_bootstrap, warehouse_conn_params, prefix, database)
    ports = {"ingest": free_port(), "process": free_port(), "console": free_port()}
    app_id = unique_name("console-app")
    env.update(
        {
            "SEGFLOW_PROCESS_APP_ID": app_id,
            "SEGFLOW_PROCESS_STATE_DIR": str(tmp / "faust"),
            "SEGFLOW_PROCESS_PII_HMAC_KEY": "console-test-key-0123456789abcdef0123456789",
            "SEGFLOW_PROCESS_METRICS_PORT": str(ports["process"]),
            "SEGFLOW_INGEST_PORT": str(ports["ingest"]),
            "SEGFLOW_CONSOLE_PORT": str(ports["console"]),
            "SEGFLOW_CONSOLE_TOKEN": TOKEN,
            "SEGFLOW_CONSOLE_SCRAPE_INTERVAL_S": "1",
            "SEGFLOW_CONSOLE_STATUS_INTERVAL_S": "2",
            "SEGFLOW_CONSOLE_UPDATE_INTERVAL_S": "0.2",
            "SEGFLOW_STATUS_EDGE_URL": f"http://127.0.0.1:{ports['ingest']}",
            "SEGFLOW_STATUS_PROCESSORS_URL": f"http://127.0.0.1:{ports['process']}",
            "SEGFLOW_STATUS_SINK_URL": f"http://127.0.0.1:{free_port()}",  # no sink: down
            "SEGFLOW_STATUS_PROCESSORS_GROUP": app_id,
            "SEGFLOW_STATUS_TIMEOUT_S": "3",
            "SEGFLOW_SNOWFLAKE_NETWORK_TIMEOUT_S": "10",
            "SEGFLOW_SNOWFLAKE_LOGIN_TIMEOUT_S": "5",
        }
    )
    started: list[Component] = []
    try:
        for name in ("console", "process", "ingest"):
            started.append(Component(name, [name], env, tmp / f"{name}.log"))
        console, process, ingest = started
        console.wait_until(http_ready(f"http://127.0.0.1:{ports['console']}/healthz"), 30)
        ingest.wait_ready_http(ports["ingest"], 60)
        process.wait_ready_http(ports["process"], 90)
        yield {
            "console": f"http://127.0.0.1:{ports['console']}",
            "edge": f"http://127.0.0.1:{ports['ingest']}",
            "bootstrap": kafka_bootstrap,
            "topics": Topics(prefix),
        }
    finally:
        for comp in started:  # all at once: each one's shutdown overlaps the others'
            if comp.proc.poll() is None:
                comp.proc.terminate()
        for comp in started:
            comp.stop()


def api(url: str, token: str | None) -> int:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def shot(driver: Any, view: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"console-{view}.png"))


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_console_views_in_a_headless_browser(browser: Any, stack: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base = stack["console"]
    # -- the token: API calls need it, a browser signs in once and gets a session cookie
    assert api(f"{base}/api/events", None) == 401
    assert api(f"{base}/api/events", "wrong-token-wrong-token") == 401
    assert api(f"{base}/api/events", TOKEN) == 200
    browser.get(base + "/")
    assert browser.current_url.endswith("/login")
    browser.find_element(By.ID, "token").send_keys("wrong-token-wrong-token\n")
    wait_for(lambda: "Wrong token" in browser.page_source, 5, "the login page's refusal")
    browser.get(f"{base}/?token={TOKEN}#live")
    wait_for(lambda: browser.current_url == f"{base}/#live", 5, "the token-less redirect")
    [cookie] = browser.get_cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]

    # -- live events: posted to the edge, shown within seconds, masked, expandable, filterable
    wait_for(lambda: text_of(browser, "#conn") == "live", 10, "the event stream")
    run = uuid.uuid4().hex[:8]
    batch = [
        {
            "type": "track",
            "event": f"Console Check {run} {i}",
            "userId": f"user-{run}",
            "messageId": f"console-{run}-{i}",
            "properties": {"email": EMAIL, "revenue": i},
        }
        for i in range(3)
    ] + [{"type": "page", "name": f"Pricing {run}", "anonymousId": f"anon-{run}"}]
    sent = time.monotonic()
    status, _ = post(stack["edge"] + "/v1/batch", json.dumps({"batch": batch}).encode())
    assert status == 200
    wait_for(
        lambda: all(f"Console Check {run} {i}" in text_of(browser, "#live-rows") for i in range(3)),
        15,
        "the posted events in the live view",
    )
    seen_after = time.monotonic() - sent
    print(f"live view: events shown {seen_after:.2f}s after the edge answered")
    assert seen_after < 10
    rows = browser.find_elements(By.CSS_SELECTOR, "#live-rows tr.event")
    target = next(r for r in rows if f"Console Check {run} 0" in r.text)
    target.click()

    def expanded() -> str:
        text = text_of(browser, "#live-rows tr.detail pre")
        return text if "maskedFields" in text else ""

    detail = wait_for(expanded, 10, "the expanded record")
    assert f"console-{run}-0" in detail and "properties.email" in detail
    assert EMAIL not in detail and EMAIL not in browser.page_source
    shot(browser, "live")
    Select(browser.find_element(By.ID, "f-type")).select_by_visible_text("page")
    wait_for(
        lambda: (
            f"Pricing {run}" in text_of(browser, "#live-rows")
            and "Console Check" not in text_of(browser, "#live-rows")
        ),
        10,
        "the type filter",
    )

    # -- the DLQ: a poison record on a raw topic, dead-lettered by the processors with a reason
    raw_track = stack["topics"].raw("track")
    producer = Producer({"bootstrap.servers": stack["bootstrap"]})
    producer.produce(raw_track, b"not an avro record " + EMAIL.encode(), key=b"poison",
                     headers=[(HEADER_SOURCE, b"web")])  # fmt: skip
    producer.flush(10)
    [dead] = read_topic(stack["bootstrap"], stack["topics"].dlq, expected=1, settle_s=0.2)
    entry = parse_dlq_headers(dead.headers())
    assert entry is not None and entry.reason
    browser.get(f"{base}/#dlq")
    wait_for(lambda: entry.reason in text_of(browser, "#dlq-rows"), 10, "the DLQ reason")
    dlq_text = text_of(browser, "#view-dlq")
    assert f"{raw_track}[0]@{entry.offset}" in dlq_text
    assert f"segflow replay copy --from-topic {raw_track} --to-topic {raw_track}" in dlq_text
    assert EMAIL not in browser.page_source  # the poison record's bytes are never shown
    shot(browser, "dlq")

    # -- the pipeline: the edge and the processors up with their rates, the absent sink down
    browser.get(f"{base}/#pipeline")
    wait_for(
        lambda: (
            "up" in text_of(browser, "tr[data-stage=edge]")
            and "up" in text_of(browser, "tr[data-stage=processors]")
            and "down" in text_of(browser, "tr[data-stage=sink]")
        ),
        10,
        "the stages",
    )
    wait_for(lambda: "Consumer lag" in text_of(browser, "#status"), 10, "the status tables")
    shot(browser, "pipeline")

    # -- schema changes (none loaded: no sink runs here) and the sources with their snippets
    browser.get(f"{base}/#schema")
    wait_for(lambda: text_of(browser, "#schema-note"), 10, "the schema view's note")
    shot(browser, "schema")
    browser.get(f"{base}/#sources")
    wait_for(lambda: "web" in text_of(browser, "#source-list"), 10, "the source list")
    snippets = text_of(browser, "#snippets")
    assert "<WRITE_KEY>" in snippets and stack["edge"] in snippets
    assert "dev-write-key" not in browser.page_source  # write keys are never shown
    shot(browser, "sources")
