"""The dashboard in a real headless browser (Debian's chromium, driven through chromedriver
by selenium), against `watch --ui` on a copy of the sample and the real engine.

What the page shows is read from its DOM. A MutationObserver the test installs records
every state a row passes through and every time the log is emptied, so a build that is
over before the next poll still counts as seen, and no reload happens in between.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.helpers.dashboard import Start, Ui, sample_copy
from tests.helpers.polling import wait_until

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = (  # the machine's network is closed: no background calls home, no GPU, no sandbox
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,800",
)
RECORD = """
window.seen = [];
window.logCleared = 0;
const note = () => {
  for (const tr of document.querySelectorAll("#images tbody tr")) {
    window.seen.push(tr.dataset.name + " " + tr.dataset.state);
  }
};
new MutationObserver(note).observe(document.querySelector("#images tbody"), {childList: true});
new MutationObserver(() => {
  if (document.getElementById("log").textContent === "") window.logCleared += 1;
}).observe(document.getElementById("log"), {childList: true, characterData: true, subtree: true});
window.loadedOnce = true;
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        missing = "Debian's chromium and chromium-driver are not installed: run scripts/setup"
        if os.environ.get("CI") == "true":
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    def row(self, name: str) -> dict[str, str]:
        """The cells of `name`'s row as the page shows them now; {} when it has none."""
        found = self.driver.execute_script(
            """const tr = document.querySelector(`#images tbody tr[data-name="${arguments[0]}"]`);
            if (!tr) return {};
            const text = (c) => tr.querySelector("td." + c).textContent;
            return {state: tr.dataset.state, cause: text("cause"), ref: text("ref")};""",
            name,
        )
        return dict(found)

    def wait_ok(self, name: str, cause: str) -> None:
        """Until the page shows `name` ok with `cause`."""

        def shown() -> bool:
            row = self.row(name)
            return row.get("cause") == cause and row.get("state") == "ok"

        wait_until(shown, f"{name} ok with the cause {cause!r}", timeout=60)

    def states(self) -> dict[str, str]:
        return {name: self.row(name).get("state", "") for name in self.names()}

    def names(self) -> list[str]:
        rows = self.driver.find_elements(By.CSS_SELECTOR, "#images tbody tr")
        return [str(r.get_attribute("data-name")) for r in rows]

    def seen(self) -> list[str]:
        return list(self.driver.execute_script("return window.seen"))

    def script(self, code: str) -> Any:
        return self.driver.execute_script(code)

    def click(self, selector: str) -> None:
        """A click on what `selector` finds now: found and clicked in one step of the page,
        so an event's redraw in between cannot leave a stale element."""
        clicked = self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); if (e) e.click(); return !!e;",
            selector,
        )
        assert clicked, f"nothing on the page matches {selector}"

    def text(self, element_id: str) -> str:
        return str(self.driver.find_element(By.ID, element_id).text)


def test_the_dashboard_follows_saves_triggers_and_logs_live(
    tmp_path: Path, start_ui: Start, browser: webdriver.Chrome
) -> None:
    root = sample_copy(tmp_path / "sample")
    ui: Ui = start_ui(root)
    page = Page(browser)
    browser.get(ui.url + "/?poll=0")  # no timed refresh: every change comes from an event
    wait_until(lambda: page.names() == ["sample-app", "sample-base", "sample-tool"], "the rows")
    wait_until(lambda: set(page.states().values()) == {"ok"}, "every image ok on the page")
    wait_until(lambda: page.text("connection") == "live", "the event stream")
    assert page.row("sample-base")["ref"].startswith("localhost:")
    graph = browser.find_elements(By.CSS_SELECTOR, "#graph svg g.node.state-ok")
    assert sorted(str(g.get_attribute("data-name")) for g in graph) == [
        "sample-app",
        "sample-base",
        "sample-tool",
    ]

    # a row's log, then a save: the row goes building, then ok with the save as its cause,
    # and the open log empties and fills with the new build's lines, all without a reload
    page.click('#images tbody tr[data-name="sample-base"] td.name')
    wait_until(lambda: "Successfully built" in page.text("log"), "sample-base's log")
    assert page.text("log-name") == "sample-base"
    page.script(RECORD)
    (root / "base" / "greeting.txt").write_text("hello from the browser test\n")
    page.wait_ok("sample-base", "changed files: greeting.txt")
    page.wait_ok("sample-app", "image map sample-base updated")
    seen = page.seen()
    assert "sample-base building" in seen
    assert seen.index("sample-base building") < len(seen) - 1 - seen[::-1].index("sample-base ok")
    assert page.script("return window.logCleared") >= 1  # the new build's log replaced the old
    wait_until(lambda: "Successfully built" in page.text("log"), "the new build's lines")
    graph_base = browser.find_element(By.CSS_SELECTOR, '#graph g.node[data-name="sample-base"]')
    assert "state-ok" in str(graph_base.get_attribute("class"))

    # the Trigger button builds an up-to-date image again, with that cause
    page.click('#images tbody tr[data-name="sample-tool"] button.trigger')
    page.wait_ok("sample-tool", "manual trigger")
    assert "sample-tool building" in page.seen()
    assert page.text("log-name") == "sample-base"  # the button did not open its row's log

    # another row's log opens on a click
    page.click('#images tbody tr[data-name="sample-tool"] td.name')
    wait_until(lambda: page.text("log-name") == "sample-tool", "sample-tool's log to open")
    wait_until(lambda: "$ " in page.text("log"), "sample-tool's log lines")
    assert page.script("return window.loadedOnce") is True  # no reload since RECORD ran
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
