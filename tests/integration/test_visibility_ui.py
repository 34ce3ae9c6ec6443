"""The web UI in a real headless browser (Debian's chromium through its chromedriver), against a
real broker, processor, worker and `processor ui` (issue 9 item 3): the list with its counts by
status (refreshed live), a query and a bad query, a workflow page with its input, pending timer,
failure with stack trace and history, a signal sent and a cancel pressed from the page, each seen
to take effect. Screenshots go to $DP_SCREENSHOTS (default artifacts/ui/ in the checkout)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from processor._visibility.http import VisibilityClient
from processor.client import Client
from tests.dp_harness import REPO, Cluster, wait_for
from tests.integration.test_visibility import _answers, _free_port, _ui

pytestmark = pytest.mark.integration

SHOTS = Path(os.environ.get("DP_SCREENSHOTS") or REPO / "artifacts" / "ui")


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.fail("the browser test needs chromium and chromedriver on PATH: `bash scripts/setup` installs "
                    "Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(driver))
    browser.set_page_load_timeout(60)
    return browser


def _shot(browser: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    assert browser.save_screenshot(str(path)), f"screenshot {path}"
    print(f"screenshot: {path}")


def _texts(browser: Any, css: str) -> list[str]:
    """The text of every element `css` selects; [] while the page is being replaced (a form's
    POST and redirect), so a wait polls through the navigation."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return [e.text for e in browser.find_elements(By.CSS_SELECTOR, css)]
    except (StaleElementReferenceException, WebDriverException):
        return []


def _status_on_page(browser: Any, url: str) -> str:
    browser.get(url)
    return "".join(_texts(browser, "h1 [data-role=status]")[:1])


def test_browser_lists_opens_signals_and_cancels(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    c = Cluster(kafka_bootstrap, prefix, tmp_path, partitions=2)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    client = Client(kafka_bootstrap, prefix=prefix, visibility_url=url)
    vis = VisibilityClient(url)
    browser = None
    try:
        c.processor(0)
        c.worker()
        _ui(c, port, tmp_path / "vis", "ui.log")
        wait_for(lambda: _answers(vis), 120, interval=0.5, message="processor ui serving")
        for i in range(3):
            client.start_workflow("ThreeSteps", i, id=f"order-{i}", search_attributes={"CustomerId": f"c{i}"})
        client.start_workflow("Failing", "card declined", id="declined", search_attributes={"CustomerId": "c0"})
        client.start_workflow("Approval", 3600.0, id="waits-an-hour", memo={"why": "a pending timer"})
        client.start_workflow("Approval", 0.05, id="needs-approval", search_attributes={"CustomerId": "c9"})
        for i in range(3):
            client.result(f"order-{i}", timeout=120)
        want = {"Completed": 3, "Failed": 1, "Running": 2}
        wait_for(lambda: vis.count()["by_status"] == want, 120, interval=0.2, message=f"the projection at {want}")
        wait_for(lambda: vis.describe("needs-approval")["history_length"] >= 3, 60,
                 message="needs-approval past its short sleep (started, timer started, timer fired)")

        browser = _browser()
        browser.get(url + "/")
        rows = browser.find_elements(By.CSS_SELECTOR, "#workflows tbody tr")
        assert sorted(r.get_attribute("data-workflow-id") for r in rows) == sorted(
            ["order-0", "order-1", "order-2", "declined", "waits-an-hour", "needs-approval"])
        counts = {e.get_attribute("data-status"): e.find_element(By.CLASS_NAME, "n").text
                  for e in browser.find_elements(By.CSS_SELECTOR, "#counts [data-status]")}
        assert counts["All"] == "6" and counts["Running"] == "2" and counts["Failed"] == "1", counts
        _shot(browser, "01-list")

        box = browser.find_element(By.ID, "query")
        box.clear()
        box.send_keys("ExecutionStatus = 'Running' OR CustomerId = 'c0' ORDER BY WorkflowId")
        box.submit()
        wait_for(lambda: "query=" in browser.current_url, 30, message="the query submitted")
        listed = [r.get_attribute("data-workflow-id")
                  for r in browser.find_elements(By.CSS_SELECTOR, "#workflows tbody tr")]
        assert listed == ["declined", "needs-approval", "order-0", "waits-an-hour"], listed
        _shot(browser, "02-query")

        box = browser.find_element(By.ID, "query")
        box.clear()
        box.send_keys("CustomerId = ")
        box.submit()
        wait_for(lambda: _texts(browser, "[data-role=error]") != [], 30, message="the bad query's error")
        error = _texts(browser, "[data-role=error]")[0]
        assert error.startswith("list query:") and "Traceback" not in browser.page_source, error

        browser.get(url + "/")
        browser.find_element(By.LINK_TEXT, "waits-an-hour").click()
        wait_for(lambda: "/workflows/waits-an-hour" in browser.current_url, 30, message="the workflow page")
        assert _texts(browser, "h1 [data-role=status]") == ["Running"]
        assert browser.find_elements(By.CSS_SELECTOR, "#timers tbody tr"), "its pending timer, with the due time"
        assert "3600" in browser.find_element(By.XPATH, "//section[h2='Input']").text
        assert "TimerStarted" in [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#history b")]
        _shot(browser, "03-workflow-running")

        browser.get(url + "/workflows/declined")
        assert _texts(browser, "h1 [data-role=status]") == ["Failed"]
        stacks = _texts(browser, "[data-role=stack]")
        assert stacks and any("card declined" in t for t in _texts(browser, "[data-role=failure]"))
        assert any("Traceback" in s or "File " in s for s in stacks), "the full stack trace"
        _shot(browser, "04-workflow-failed")

        # A signal from the page: the workflow it releases completes with the signal's argument.
        browser.get(url + "/workflows/needs-approval")
        browser.find_element(By.CSS_SELECTOR, "#signal-form input[name=name]").send_keys("approve")
        args = browser.find_element(By.CSS_SELECTOR, "#signal-form input[name=args]")
        args.clear()
        args.send_keys('["ann from the browser"]')
        browser.find_element(By.ID, "signal").click()
        wait_for(lambda: _texts(browser, "[data-role=flash]") == ["signal sent"], 30, message="the signal sent")
        wait_for(lambda: _status_on_page(browser, url + "/workflows/needs-approval") == "Completed", 60,
                 interval=0.5, message="needs-approval completed by the browser's signal")
        assert "approved by ann from the browser" in browser.find_element(By.CSS_SELECTOR, "[data-role=result]").text

        # The live counts: with the list page open, a workflow that completes elsewhere is counted
        # without a reload (the marker set in the page survives).
        client.start_workflow("Approval", 0.05, id="approved-elsewhere")
        browser.get(url + "/")
        browser.execute_script("window.__not_reloaded = true")
        completed = int(browser.find_element(By.CSS_SELECTOR, "#counts [data-status=Completed] .n").text)
        client.signal("approved-elsewhere", "approve", "someone else")
        wait_for(lambda: _texts(browser, "#counts [data-status=Completed] .n") == [str(completed + 1)], 60,
                 interval=0.2, message="the Completed count updated live")
        assert browser.execute_script("return window.__not_reloaded === true")

        # Cancel from the page.
        browser.get(url + "/workflows/waits-an-hour")
        browser.find_element(By.CSS_SELECTOR, "#cancel-form input[name=reason]").send_keys("pressed in the test")
        browser.find_element(By.ID, "cancel").click()
        wait_for(lambda: _texts(browser, "[data-role=flash]") == ["cancel sent"], 30, message="the cancel sent")
        wait_for(lambda: _status_on_page(browser, url + "/workflows/waits-an-hour") == "Canceled", 60,
                 interval=0.5, message="waits-an-hour canceled from the browser")
        assert not browser.find_elements(By.ID, "cancel"), "no buttons on a closed workflow"
        _shot(browser, "05-workflow-canceled")
        assert client.describe("waits-an-hour")["status"] == "canceled", "canceled in the engine, not just the page"
    finally:
        if browser is not None:
            browser.quit()
        client.close()
        c.close()
