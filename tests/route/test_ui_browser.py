"""The web page in a real browser (Debian's chromium under Playwright) against the demo stack: the models table, an
unload and a load from the page seen without a reload, the playground's streamed answer with its thinking apart, a
request's log line in the log view (and the pause button), the activity table, a wrong admin key refused. Each page
is saved as a screenshot under the test's tmp_path."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.demo.data import ITEMS, WEATHER_TOOL, weather_answer, weather_question, weather_result
from testkit.browser import browser_missing, chromium
from testkit.stack import StackProcess, demo_models_missing
from tests.route.ui_stack import admin_key, ask, ui_stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(demo_models_missing() is not None, reason=str(demo_models_missing())),
    pytest.mark.skipif(browser_missing() is not None, reason=f"browser tests: {browser_missing()}"),
]
__all__ = ["ui_stack"]  # the module's fixture

if browser_missing() is None:
    from playwright.sync_api import Browser, Page, expect
else:  # the module is skipped; these names only keep the annotations importable
    Browser = Page = object  # type: ignore[misc,assignment]

TIMEOUT = 30_000  # ms


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Browser, ui_stack: StackProcess, tmp_path: Path) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage) on the page, given the admin key the way a person does."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    tab.set_default_timeout(TIMEOUT)
    tab.goto(ui_stack.router + "/ui/")
    give_key(tab, admin_key(ui_stack))
    yield tab
    context.close()
    assert not errors, errors  # no script error, nothing blocked by the CSP


def give_key(tab: Page, key: str) -> None:
    expect(tab.locator("#key-form")).to_be_visible()
    tab.fill("#key-input", key)
    tab.click("#key-form button[type=submit]")


def status_of(tab: Page, model: str) -> object:
    return tab.locator(f"tr[data-model='{model}'] .status")


def test_the_models_table_shows_every_demo_model(page: Page, tmp_path: Path) -> None:
    for model in ("demo-think", "demo-harmony", "demo-vision"):
        expect(status_of(page, model)).to_have_text("loaded")
    expect(page.locator("#conn")).to_have_text("live")
    expect(page.locator("#memory .meter")).to_have_count(2)
    expect(page.locator("tr[data-model='demo-think'] button")).to_have_text("Unload")
    page.screenshot(path=tmp_path / "models.png")


def test_an_unload_from_the_page_shows_in_the_table_without_a_reload(page: Page, tmp_path: Path) -> None:
    expect(status_of(page, "demo-harmony")).to_have_text("loaded")
    page.evaluate("window.__same_page = true")
    page.click("tr[data-model='demo-harmony'] button[data-action=unload]")
    expect(status_of(page, "demo-harmony")).to_have_text("unloaded")
    page.screenshot(path=tmp_path / "unloaded.png")
    page.click("tr[data-model='demo-harmony'] button[data-action=load]")
    expect(status_of(page, "demo-harmony")).to_have_text("loaded")
    assert page.evaluate("window.__same_page") is True  # the same document all along: no reload


def test_the_playground_streams_an_answer_with_its_thinking_apart(page: Page, tmp_path: Path) -> None:
    item = ITEMS[0]
    page.click("#tab-playground")
    page.wait_for_selector("#pg-model option[value='demo-think']", state="attached")
    page.select_option("#pg-model", "demo-think")
    page.fill("#pg-input", item.question)
    page.press("#pg-input", "Enter")
    answer = page.locator(".msg.assistant").last
    expect(answer.locator(".usage")).to_contain_text("completion", timeout=60_000)
    expect(answer.locator(".content")).to_have_text(item.answer)
    expect(answer.locator("details .think")).to_have_text(item.reasoning)
    expect(answer.locator(".content")).not_to_contain_text(item.reasoning)
    answer.locator("details summary").click()  # the thinking folds away
    expect(answer.locator("details .think")).to_be_hidden()
    page.screenshot(path=tmp_path / "playground.png")


def test_the_playground_shows_a_tool_call_as_a_call_and_sends_its_result(page: Page, tmp_path: Path) -> None:
    page.click("#tab-playground")
    page.wait_for_selector("#pg-model option[value='demo-think']", state="attached")
    page.select_option("#pg-model", "demo-think")
    page.click(".tools-box summary")
    page.fill("#pg-tools", json.dumps([dict(WEATHER_TOOL)]))
    page.fill("#pg-input", weather_question("Oslo"))
    page.press("#pg-input", "Enter")
    call = page.locator(".msg.assistant").last.locator(".tool")
    expect(call).to_contain_text("call get_weather(", timeout=60_000)
    expect(call).to_contain_text("Oslo")
    expect(page.locator("#pg-input")).to_have_attribute("placeholder", re.compile("result of get_weather"))
    result = weather_result("snowy", 3)
    page.fill("#pg-input", result)
    page.press("#pg-input", "Enter")
    expect(page.locator(".msg.tool")).to_contain_text(result)
    final = page.locator(".msg.assistant").last
    expect(final.locator(".usage")).to_contain_text("completion", timeout=60_000)
    expect(final.locator(".content")).to_have_text(weather_answer("Oslo", result))
    page.screenshot(path=tmp_path / "tool-call.png")


def test_a_request_log_line_appears_in_the_log_view_and_pause_holds_it(
    page: Page, ui_stack: StackProcess, tmp_path: Path
) -> None:
    page.click("#tab-logs")
    page.select_option("#log-source", "demo-think")
    expect(page.locator("#log-state")).to_have_text("following demo-think")
    lines = page.locator("#log-lines div")
    expect(lines.first).to_be_attached()  # the backlog (one event)
    chats = lines.filter(has_text="POST /v1/chat/completions 200")
    before = chats.count()
    ask(ui_stack, ITEMS[1].question)
    expect(chats).to_have_count(before + 1)
    page.click("#log-pause")
    shown = lines.count()
    ask(ui_stack, ITEMS[2].question)
    expect(page.locator("#log-state")).to_contain_text("new lines held")
    assert lines.count() == shown
    page.click("#log-pause")
    expect(lines).not_to_have_count(shown)
    page.screenshot(path=tmp_path / "logs.png")


def test_the_activity_table_lists_the_last_requests_newest_first(
    page: Page, ui_stack: StackProcess, tmp_path: Path
) -> None:
    ask(ui_stack, ITEMS[3].question, model="demo-harmony")
    page.click("#tab-activity")
    first = page.locator("#activity-table tbody tr").first
    expect(first).to_contain_text("demo-harmony")
    expect(first).to_contain_text("/v1/chat/completions")
    expect(first).to_contain_text("200")
    page.screenshot(path=tmp_path / "activity.png")


def test_a_wrong_admin_key_is_refused_and_the_page_says_so(
    browser: Browser, ui_stack: StackProcess, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT)
    tab.goto(ui_stack.router + "/ui/")
    expect(tab.locator("#key-msg")).to_contain_text("needs its admin key")
    give_key(tab, "not-the-key")
    expect(tab.locator("#key-msg")).to_contain_text("refused")
    expect(tab.locator("#conn")).to_have_text("admin key needed")
    expect(tab.locator("#models-table tbody tr")).to_have_count(0)
    tab.screenshot(path=tmp_path / "refused.png")
    give_key(tab, admin_key(ui_stack))  # the right one, in the same tab, without a reload
    expect(status_of(tab, "demo-think")).to_have_text("loaded")
    context.close()


# the first contentful paint's time, or -1 when the page has painted nothing within 10 s
FIRST_PAINT = """new Promise((resolve) => {
  setTimeout(() => resolve(-1), 10000);
  new PerformanceObserver((list) => {
    const e = list.getEntries().find((e) => e.name === "first-contentful-paint");
    if (e) resolve(e.startTime);
  }).observe({ type: "paint", buffered: true });
})"""


def test_first_paint_needs_only_the_page_and_its_stylesheet(browser: Browser, ui_stack: StackProcess) -> None:
    """What makes the first paint quick, rather than a time (speed goals live in benchmarks): with every request
    but the page and its stylesheet held unanswered (the script, and so every call to the router's API), the page
    still paints."""
    context = browser.new_context()
    held: list[Any] = []

    def gate(route: Any) -> None:
        if route.request.url.endswith(("/ui/", "/app.css")):
            route.continue_()
        else:
            held.append(route)

    context.route("**/*", gate)
    tab = context.new_page()
    tab.goto(ui_stack.router + "/ui/", wait_until="commit")
    paint = tab.evaluate(FIRST_PAINT)
    assert paint > 0 and any(r.request.url.endswith("/app.js") for r in held)
    for route in held:
        route.abort()
    context.close()
