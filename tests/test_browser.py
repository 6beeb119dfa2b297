"""The dashboard in a real browser: headless Chromium against a real ``jobkit api`` and worker.

Sign in with the token, read a failed job's traceback, click retry and watch the
job succeed when the page refreshes itself, cancel a job no worker will take.
Screenshots of each step are saved in the test's temp dir.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobkit.embedded import Beanstalkd, free_port
from tests.api.serving import Command, request
from tests.conftest import unique
from tests.helpers import eventually
from tests.processes import clean_env
from tests.servers import missing

pytestmark = pytest.mark.e2e
TOKEN = "browser-test-token"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1000")


def chromium_paths() -> tuple[str, str]:
    """Where Chromium and its driver are (Debian: ``chromium``, ``chromium-driver``)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing("headless Chromium is not installed (apt-get install chromium chromium-driver)")
    assert browser is not None and driver is not None
    return browser, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium driven by selenium, with a fresh profile."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed (pip install -e .[test])")
    binary, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path, log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


class Stack:
    """``jobkit api --processes 2`` (token set) and one worker on ``queue``, over beanstalkd and SQLite."""

    def __init__(self, beanstalkd: Beanstalkd, tmp_path: Path, queue: str) -> None:
        self.port, self.queue, self.tmp = free_port(), queue, tmp_path
        self.env = clean_env(JOBKIT_BROKER_URL=beanstalkd.url, JOBKIT_API_TOKEN=TOKEN,
                             JOBKIT_BACKEND_URL=f"sqlite:///{tmp_path / 'jobs.db'}")
        self.api = Command(["api", "-A", "tests.taskapp:app", "--host", "127.0.0.1", "--port", str(self.port),
                            "--processes", "2"], self.env, tmp_path / "api.log")
        self.worker = Command(["worker", "-A", "tests.taskapp:app", "-q", queue, "-c", "1"], self.env,
                              tmp_path / "worker.log")
        self.api.wait_for_port(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, data = request(self.port, method, path, body, {"Authorization": f"Bearer {TOKEN}"})
        return status, json.loads(data) if data else None

    def enqueue(self, task: str, args: list[Any], queue: str) -> str:
        status, answer = self.call("POST", "/v1/jobs", {"task": task, "args": args, "queue": queue})
        assert status == 202, answer
        return str(answer["id"])

    def state(self, job_id: str) -> str:
        return str(self.call("GET", f"/v1/jobs/{job_id}")[1]["state"])

    def stop(self) -> None:
        self.worker.stop()
        self.api.stop()


@pytest.fixture
def stack(beanstalkd: Beanstalkd, tmp_path: Path) -> Iterator[Stack]:
    started = Stack(beanstalkd, tmp_path, unique("browser"))
    yield started
    started.stop()


def test_sign_in_see_the_traceback_retry_and_cancel(browser: Any, stack: Stack, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    flag = tmp_path / "second-run-succeeds"
    failing = stack.enqueue("fails_until", [str(tmp_path / "calls"), str(flag)], stack.queue)
    idle = stack.enqueue("add", [1, 2], unique("nobody-watches"))
    eventually(lambda: stack.state(failing) == "failed", timeout_s=30, what="the first run to fail")

    browser.get(f"{stack.url}/dashboard")  # no session yet: the sign-in form
    browser.save_screenshot(str(tmp_path / "1-sign-in.png"))
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form[action='/dashboard/login'] button").click()
    eventually(lambda: browser.find_element(By.TAG_NAME, "h1").text == "Overview", timeout_s=10,
               what="the overview after signing in")
    assert TOKEN not in browser.current_url
    assert browser.find_element(By.CSS_SELECTOR, "svg.chart")
    browser.save_screenshot(str(tmp_path / "2-overview.png"))

    browser.get(f"{stack.url}/dashboard/jobs/{failing}")
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "Traceback (most recent call last)" in page and f"{flag} is missing" in page
    browser.save_screenshot(str(tmp_path / "3-failed-job.png"))

    flag.touch()  # the next run succeeds
    browser.find_element(By.CSS_SELECTOR, f"form[action='/dashboard/jobs/{failing}/retry'] button").click()
    eventually(lambda: "The job was queued again." in browser.find_element(By.CSS_SELECTOR, ".notice").text,
               timeout_s=10, what="the notice after retry")
    eventually(lambda: browser.find_element(By.CSS_SELECTOR, ".actions .st").text == "succeeded",
               timeout_s=30, what="the job page to refresh itself showing success")
    assert stack.state(failing) == "succeeded"
    browser.save_screenshot(str(tmp_path / "4-succeeded.png"))

    browser.get(f"{stack.url}/dashboard/jobs/{idle}")
    browser.find_element(By.CSS_SELECTOR, f"form[action='/dashboard/jobs/{idle}/cancel'] button").click()
    eventually(lambda: browser.find_element(By.CSS_SELECTOR, ".actions .st").text == "cancelled",
               timeout_s=10, what="the job page to show the job cancelled")
    assert stack.state(idle) == "cancelled"
    browser.save_screenshot(str(tmp_path / "5-cancelled.png"))
    assert all((tmp_path / f"{name}.png").stat().st_size > 0 for name in (
        "1-sign-in", "2-overview", "3-failed-job", "4-succeeded", "5-cancelled"))
