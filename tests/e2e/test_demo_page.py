"""The demo page in a real headless Chromium, against daphne on the demo settings.

The browser reaches daphne through a proxy the tests can cut (tests/support/proxy.py): a
dropped socket while daphne and its tasks run on, which the page must survive with every step
exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import websockets
from playwright.async_api import Locator, Page, expect

from tests.support.processes import ROOT, Daphne, ProcessDatabase
from tests.support.proxy import CuttableProxy

pytestmark = pytest.mark.slow

SCREENSHOT = ROOT / "build" / "demo.png"  # docs/demo.png is a copy of it


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """daphne serving the demo settings on a database of its own, for this module's tests."""
    tag = os.environ.get("STREAMAPP_TEST_DB", "test_streamapp")
    database = ProcessDatabase(tmp_path_factory.mktemp("demo_page"), f"{tag}_page").create()
    prefix = os.environ.get("STREAMAPP_LAYER_PREFIX", "asgi")
    env = {**database.env, "DJANGO_SETTINGS_MODULE": "demo.settings",
           "STREAMAPP_LAYER_PREFIX": f"{prefix}_page"}
    server = Daphne(env).start()
    yield server
    output = server.stop()
    database.drop()
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
async def proxy(demo_server):
    proxy = await CuttableProxy(demo_server.port).start()
    yield proxy
    await proxy.stop()


# Every change of the connection indicator, with the page's clock (Date.now(), the wall clock
# the test's time.time() reads too): window.connectionLog = [{state, text, at}, …].
RECORD_CONNECTION = """
window.connectionLog = [];
document.addEventListener("DOMContentLoaded", () => {
  const indicator = document.getElementById("connection");
  const note = () => connectionLog.push(
    {state: indicator.dataset.state, text: indicator.textContent, at: Date.now()});
  new MutationObserver(note).observe(
    indicator, {attributes: true, childList: true, characterData: true, subtree: true});
});
"""


class DemoPage:
    """The demo page as a user sees it: forms to start tasks, one card per task."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        self.sent: list[dict[str, Any]] = []  # every frame the page sent on its sockets
        page.on("websocket", lambda ws: ws.on("framesent", self._record))

    def _record(self, payload: str | bytes) -> None:
        self.sent.append(json.loads(payload))

    async def open(self) -> DemoPage:
        await self.page.add_init_script(RECORD_CONNECTION)
        await self.page.goto(self.url)
        await self.loaded()
        return self

    async def loaded(self) -> None:
        """Connected, and the cards of earlier tasks (GET /tasks/) are back, each in its state."""
        await expect(self.connection).to_have_attribute("data-state", "open")
        await expect(self.page.locator("#tasks")).to_have_attribute("data-restored", "true")
        await expect(self.page.locator('.card[aria-busy="true"]')).to_have_count(0)

    async def dismiss_ended(self) -> None:
        """Close every ended card, as a user tidying the page does."""
        dismiss = self.page.locator(".card .dismiss:visible")
        while await dismiss.count():
            await dismiss.first.click()

    def subscribes(self, key: str) -> list[dict[str, Any]]:
        return [frame for frame in self.sent
                if frame["action"] == "subscribe" and frame["task"] == key]

    @property
    def connection(self) -> Locator:
        return self.page.locator("#connection")

    async def start(self, button: str, **fields: Any) -> str:
        """Fill the starter's fields (``kind-name``), click its button; returns the task key."""
        for name, value in fields.items():
            await self.page.fill(f"#id_{name.replace('__', '-')}", str(value))
        async with self.page.expect_response("**/demo/tasks/") as created:
            await self.page.get_by_role("button", name=button).click()
        response = await created.value
        assert response.status == 201, await response.text()
        return (await response.json())["key"]

    def card(self, key: str) -> Locator:
        return self.page.locator(f'.card[data-key="{key}"]')

    async def rendered(self, key: str, attribute: str) -> list[int]:
        """The data-``attribute`` of every event the card rendered, in order."""
        return await self.card(key).locator(f".events li[data-{attribute}]").evaluate_all(
            f"items => items.map(item => Number(item.dataset.{attribute}))"
        )

    async def wait_for_status(self, key: str, status: str) -> None:
        await expect(self.card(key)).to_have_attribute("data-status", status)
        await expect(self.card(key).locator(".status")).to_have_text(status)


@pytest.fixture
async def demo(page, proxy):
    proxy.refuse = False
    return await DemoPage(page, proxy.url).open()


async def test_a_started_task_fills_its_bar_and_says_completed(demo):
    key = await demo.start("Start example task", example__steps=8, example__delay=0.02)
    assert key.startswith("demo.exampletask.")

    await demo.wait_for_status(key, "completed")
    card = demo.card(key)
    bar = card.get_by_role("progressbar")
    await expect(bar).to_have_attribute("aria-valuenow", "100")
    title = await card.locator("h3").text_content()
    assert title.startswith("Example task #")
    await expect(bar).to_have_accessible_name(title)
    await expect(card.locator(".result")).to_have_text('Result: "Completed processing: hello"')
    await expect(card.get_by_role("button", name="Cancel")).to_be_disabled()
    assert await demo.rendered(key, "seq") == list(range(1, 11))
    assert await demo.rendered(key, "step") == list(range(1, 9))


async def test_a_failing_task_shows_its_error(demo):
    key = await demo.start("Start failing task", failing__fail_at=3)

    await demo.wait_for_status(key, "failed")
    card = demo.card(key)
    await expect(card.get_by_role("alert")).to_have_text("RuntimeError: boom")
    bar = card.get_by_role("progressbar")
    await expect(bar).to_have_attribute("aria-valuenow", "67")  # how far it got
    await expect(bar).to_have_attribute("aria-valuetext", "Failed at 67%")
    await expect(card.locator(".bar-label")).to_have_text("Failed at 67%")
    assert await bar_is_full(card)  # red end to end: it has ended, and not well
    assert await demo.rendered(key, "step") == [1, 2]


async def test_cancel_stops_a_running_task(demo, demo_server):
    key = await demo.start("Start slow task", slow__seconds=60)
    card = demo.card(key)
    await demo.wait_for_status(key, "running")
    await expect(card.locator(".events li")).not_to_have_count(0)

    await card.get_by_role("button", name="Cancel").click()

    await demo.wait_for_status(key, "cancelled")
    await expect(card.get_by_role("button", name="Dismiss")).to_be_visible()
    assert {"action": "cancel", "task": key} in demo.sent
    state = await server_state(demo_server, key)
    assert state["status"] == "cancelled"
    # Who or what cancelled it when the server says (DESIGN §3), else a plain "Cancelled".
    await expect(card.locator(".reason")).to_have_text(
        (state["error"] or {}).get("message", "Cancelled"))
    await expect(card.locator(".bar-label")).to_have_text(re.compile(r"^Cancelled at \d+%$"))
    assert await bar_is_full(card)


async def test_the_page_resumes_a_dropped_socket_with_no_missing_and_no_repeated_step(
    demo, proxy, demo_server
):
    steps = 60
    key = await demo.start("Start example task", example__steps=steps, example__delay=0.05)
    card = demo.card(key)
    await expect(card.locator(".events li").nth(4)).to_be_attached()

    proxy.refuse = True
    proxy.cut()
    await expect(demo.connection).to_have_attribute("data-state", "reconnecting")
    seen_before = max(await demo.rendered(key, "seq"))
    # The page is cut off while the task runs on: let it miss a few events for sure.
    await wait_until_server_passes(demo_server, key, seen_before + 5)
    proxy.refuse = False

    await demo.wait_for_status(key, "completed")
    await expect(demo.connection).to_have_attribute("data-state", "open")
    assert await demo.rendered(key, "seq") == list(range(1, steps + 3))
    assert await demo.rendered(key, "step") == list(range(1, steps + 1))
    # Resubscribed from the last seq the page had rendered when it was cut off. (On a loaded
    # machine the heartbeat may give up on a slow socket once more: each resubscribe then
    # starts where the page was, so the order of `since` never goes back.)
    sinces = [frame["since"] for frame in demo.subscribes(key)]
    assert sinces[0] == 0 and seen_before in sinces and sinces == sorted(sinces)
    assert int(await demo.connection.get_attribute("data-opens")) >= 2


async def test_several_tasks_at_once_in_every_state(demo, demo_server):
    """Also saves the screenshot the README shows (build/demo.png, copied to docs/demo.png)."""
    await demo.dismiss_ended()  # the earlier tests' cards, restored from GET /tasks/
    done = await demo.start("Start example task", example__steps=12, example__delay=0.02)
    failed = await demo.start("Start failing task", failing__fail_at=4)
    cancelled = await demo.start("Start slow task", slow__seconds=10)
    running_slow = await demo.start("Start slow task", slow__seconds=10)
    running = await demo.start("Start example task", example__steps=50, example__delay=0.1)

    await demo.wait_for_status(done, "completed")
    await demo.wait_for_status(failed, "failed")
    await expect(demo.card(cancelled).locator(".events li").nth(14)).to_be_attached()
    await demo.card(cancelled).get_by_role("button", name="Cancel").click()
    await demo.wait_for_status(cancelled, "cancelled")
    await expect(demo.card(running).locator('.events li[data-step="20"]')).to_be_attached()
    await expect(demo.card(running_slow).locator(".events li").nth(24)).to_be_attached()
    await expect(demo.page.locator(".card")).to_have_count(5)

    SCREENSHOT.parent.mkdir(exist_ok=True)
    await demo.page.screenshot(path=SCREENSHOT, full_page=True, animations="disabled")
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG")

    for key in (running, running_slow):  # stop them now, not at daphne's shutdown
        await cancel_on_server(demo_server, key)


async def test_a_reload_mid_task_brings_the_card_back_with_every_event_once(demo, demo_server):
    steps = 40
    key = await demo.start("Start example task", example__steps=steps, example__delay=0.05)
    await expect(demo.card(key).locator(".events li").nth(4)).to_be_attached()
    watched = await demo.page.evaluate("Object.entries(sessionStorage).map(([k, v]) => v)")
    assert any(key in value for value in watched)  # the client's persist keeps the key
    # Make sure the card comes back from what the tab kept, not only from the list endpoint.
    await demo.page.route(is_task_list, lambda route: route.abort())

    sent_before_reload = len(demo.sent)
    await demo.page.reload()

    await demo.loaded()
    await expect(demo.page.locator("#start-error")).to_contain_text(
        "Could not list your recent tasks")
    await demo.wait_for_status(key, "completed")
    assert await demo.rendered(key, "seq") == list(range(1, steps + 3))
    assert await demo.rendered(key, "step") == list(range(1, steps + 1))
    await expect(demo.page.locator(f'.card[data-key="{key}"]')).to_have_count(1)
    # The new page replayed the task from the log into its new card.
    after_reload = [frame for frame in demo.sent[sent_before_reload:]
                    if frame["action"] == "subscribe" and frame["task"] == key]
    assert after_reload[0] == {"action": "subscribe", "task": key, "since": 0}


async def test_a_second_tab_sees_the_same_tasks_through_the_list_endpoint(demo, demo_server):
    steps = 40
    running = await demo.start("Start example task", example__steps=steps, example__delay=0.05)
    failed = await demo.start("Start failing task", failing__fail_at=3)
    await demo.wait_for_status(failed, "failed")
    await expect(demo.card(running).locator(".events li").nth(2)).to_be_attached()

    second = DemoPage(await demo.page.context.new_page(), demo.url)
    async with second.page.expect_response(lambda r: is_task_list(r.url)) as listing:
        await second.open()
    listed = [task["task"] for task in (await (await listing.value).json())["tasks"]]
    assert listed[:2] == [failed, running]  # newest first

    await second.wait_for_status(failed, "failed")
    await expect(second.card(failed).get_by_role("alert")).to_have_text("RuntimeError: boom")
    await second.wait_for_status(running, "completed")
    assert await second.rendered(running, "seq") == list(range(1, steps + 3))
    assert await second.page.evaluate("sessionStorage.length") > 0  # its own record now
    await second.page.close()


async def test_a_server_shutdown_leaves_connected_within_a_second(page, tmp_path):
    """daphne stops while a task runs: the indicator must not say "Connected" past a second,
    counts down to each attempt, and once a server is back the card says why the task ended.

    daphne closes the socket with 4012 as it begins to stop (docs/protocol.md, handover), and
    the page reconnects at once. (Without that close the page would still leave "Connected": a
    socket that goes quiet fails the page's ping, and one that streams on through the drain
    closes when the drain ends, short here.)
    """
    tag = os.environ.get("STREAMAPP_TEST_DB", "test_streamapp")
    database = ProcessDatabase(tmp_path, f"{tag}_shutdown").create()
    env = {**database.env, "DJANGO_SETTINGS_MODULE": "demo.settings",
           "STREAMAPP_SHUTDOWN_TIMEOUT": "0.4",
           "STREAMAPP_LAYER_PREFIX": os.environ.get("STREAMAPP_LAYER_PREFIX", "asgi") + "_down"}
    server = Daphne(env).start()
    try:
        demo = await DemoPage(page, server.url).open()
        key = await demo.start("Start slow task", slow__seconds=60)
        await expect(demo.card(key).locator(".events li").nth(2)).to_be_attached()

        stopped_at = time.time() * 1000
        server.process.send_signal(signal.SIGTERM)
        await expect(demo.connection).not_to_have_attribute("data-state", "open")
        log = await page.evaluate("connectionLog")
        left = next(entry for entry in log if entry["at"] >= stopped_at - 50
                    and entry["state"] != "open")
        assert left["at"] - stopped_at < 1000, [(e["at"] - stopped_at, e["text"]) for e in log]
        # daphne's 4012 (a restart): the page tries again at once, with no backoff.
        assert left["text"] == "Server restarting: reconnecting now (attempt 1)", log
        await expect(demo.connection).not_to_have_text("Connected")
        await asyncio.to_thread(server.stop, None)  # the shutdown ends the task, then daphne

        await expect(demo.connection).to_contain_text(re.compile(r"reconnecting in \d"))
        server = await asyncio.to_thread(Daphne(env, server.port).start)
        await expect(demo.connection).to_have_attribute("data-state", "open")

        await demo.wait_for_status(key, "cancelled")
        state = await server_state(server, key)
        assert state["error"]["type"] == "WorkerShutdown"
        await expect(demo.card(key).locator(".reason")).to_have_text(state["error"]["message"])
        assert await demo.rendered(key, "seq") == list(range(1, state["seq"] + 1))
        log = await page.evaluate("connectionLog")
        assert counted_down(log), log
    finally:
        output = server.stop()
        database.drop()
    assert "Traceback" not in output, output


def is_task_list(url: str) -> bool:
    """``GET /tasks/`` (not the demo's ``/demo/tasks/``)."""
    return urlsplit(url).path == "/tasks/"


async def bar_is_full(card: Locator) -> bool:
    """Wait until the card's bar is filled end to end (its width eases there)."""
    bar = await card.locator(".bar").element_handle()
    await card.page.wait_for_function(
        "bar => bar.querySelector('.bar-fill').getBoundingClientRect().width"
        " === bar.getBoundingClientRect().width", arg=bar)
    return True


def counted_down(log: list[dict[str, Any]]) -> bool:
    """Did one wait's text show fewer seconds later on ("reconnecting in 1.9 s" … "1.2 s")?"""
    waits: dict[str, list[float]] = {}
    for entry in log:
        found = re.search(r"reconnecting in ([\d.]+) s(.*)", entry["text"] or "")
        if found:
            waits.setdefault(found.group(2), []).append(float(found.group(1)))
    return any(seconds[0] > seconds[-1] for seconds in waits.values())


async def cancel_on_server(server: Daphne, key: str) -> None:
    """Cancel a task through its one-task endpoint (a no-op if it has ended); wait for the end."""
    async with asyncio.timeout(20), websockets.connect(task_url(server, key)) as ws:
        await ws.send(json.dumps({"action": "cancel"}))
        async for _ in ws:  # the endpoint closes after the task's final state
            pass


async def server_state(server: Daphne, key: str) -> dict[str, Any]:
    """The task's state frame as daphne sees it, straight from its one-task endpoint."""
    async with asyncio.timeout(20), websockets.connect(task_url(server, key)) as ws:
        return json.loads(await ws.recv())


async def wait_until_server_passes(server: Daphne, key: str, seq: int) -> None:
    """Return once daphne has logged event ``seq`` of the task (or the task has ended)."""
    async with asyncio.timeout(20), websockets.connect(task_url(server, key, since=seq - 1)) as ws:
        async for message in ws:  # the one-task endpoint closes after the final state
            frame = json.loads(message)
            if frame["type"] == "event" and frame["seq"] >= seq:
                return


def task_url(server: Daphne, key: str, since: int | None = None) -> str:
    url = f"{server.ws_url}/ws/tasks/{key.replace('.', '/')}/"
    return url if since is None else f"{url}?since={since}"
