"""The staff console in Debian's Chromium (Playwright), over the conversations the real stack
recorded: log in, filter to low-confidence phone conversations, open one, correct an intent, export,
mark it reviewed, log out. A screenshot of each page is kept under test-artifacts/console/."""
from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Page, sync_playwright

from services.settings import ROOT
from tests.e2e.conftest import Running

pytestmark = pytest.mark.e2e
ARTIFACTS = ROOT / "test-artifacts" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "console-e2e-" + uuid.uuid4().hex[:8]


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_reviewer_session_in_the_browser(running: Running) -> None:
    # A new user creates the first admin, as the README says.
    made = subprocess.run([sys.executable, "-m", "console", "create-user", "--username", "zhang", "--password-stdin"],
                          input=PASSWORD + "\n", text=True, capture_output=True, cwd=ROOT,
                          env={"HEZE_DB_URL": running.settings.heze_db_url, "PATH": "/usr/bin:/bin"})
    assert made.returncode == 0, made.stderr
    # A phone caller the assistant did not understand, with a personal number in what they said.
    caller = "call-" + uuid.uuid4().hex[:12]
    phone_md = {"channel": "phone", "caller": "13800000009"}
    running.say(caller, "/greet", phone_md)
    running.say(caller, "嗯那个俺家那个啥弄不成了", phone_md)
    running.say(caller, "我电话幺三八零零零零零零零九", phone_md)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        page.goto(f"{running.console_url}/conversations")
        assert "/login" in page.url  # no session: the login page
        shot(page, "1-login")
        page.fill("input[name=username]", "zhang")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{running.console_url}/conversations")

        page.select_option("select[name=channel]", "phone")
        page.fill("input[name=max_confidence]", "0.7")
        page.click("#filters button[type=submit]")
        page.wait_for_load_state()
        shot(page, "2-low-confidence-phone")
        row = page.locator(f"a[href='/conversations/{running.ref(caller)}']")
        assert row.count() == 1, page.content()

        row.click()
        page.wait_for_url(f"**/conversations/{running.ref(caller)}")
        body = page.content()
        assert "13800000009" not in body and "138****0009" in body  # the number is masked
        shot(page, "3-conversation")

        message = page.locator(".turn.user").filter(has_text="俺家")
        message.locator("select[name=intent]").select_option("give_feedback")
        message.locator("input[name=entities]").fill("feedback_category=求助")
        message.locator("button", has_text="更正").click()
        page.wait_for_load_state()
        assert page.locator(".turn.user").filter(has_text="俺家").locator(".tag.fixed").inner_text() == "已更正为 give_feedback"
        shot(page, "4-corrected")

        exported = page.request.get(f"{running.console_url}/exports/nlu.yml")
        assert exported.ok
        nlu = yaml.safe_load(exported.text())
        assert {"intent": "give_feedback", "examples": "- 嗯那个俺家那个啥弄不成了\n"} in nlu["nlu"]
        story = yaml.safe_load(page.request.get(f"{running.console_url}/conversations/{running.ref(caller)}/story.yml").text())
        assert {"user": "嗯那个俺家那个啥弄不成了", "intent": "give_feedback"} in story["stories"][0]["steps"]

        page.click("#mark-reviewed")
        page.wait_for_load_state()
        assert "已审核" in page.content()
        shot(page, "5-reviewed")

        page.goto(f"{running.console_url}/")
        shot(page, "6-dashboard")
        page.click("#logout")
        page.wait_for_url("**/login")
        shot(page, "7-logged-out")
        page.goto(f"{running.console_url}/conversations")
        assert "/login" in page.url  # the session is gone
        browser.close()
    for name in ("1-login", "2-low-confidence-phone", "3-conversation", "4-corrected", "5-reviewed", "6-dashboard"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000
    assert Path(ARTIFACTS).is_dir()
