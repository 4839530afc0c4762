"""The staff console in Debian's Chromium (Playwright), over the conversations the real stack
recorded: log in, filter to low-confidence phone conversations, open one, correct an intent, export,
mark it reviewed, log out; and a reviewer's morning: the inbox of unsure messages labelled in one go,
a conversation corrected, "review next" through the unreviewed ones, the exports. Every page is
checked with axe-core (axe-playwright-python): no serious or critical violation. A screenshot of each
step is kept under test-artifacts/console/."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Page, sync_playwright

from services.settings import ROOT
from tests.e2e.browser import accessible, sign_in
from tests.e2e.conftest import Running
from tests.e2e.people import create_console_user

pytestmark = pytest.mark.e2e
ARTIFACTS = ROOT / "test-artifacts" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "console-e2e-" + uuid.uuid4().hex[:8]


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_reviewer_session_in_the_browser(running: Running) -> None:
    # A new user creates the first admin, as the README says.
    create_console_user(running, "zhang", PASSWORD)
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


def test_a_reviewers_morning_in_the_browser(running: Running) -> None:
    """Inbox → label → open a conversation → correct → review next → export; axe on every page."""
    password = "morning-" + uuid.uuid4().hex[:8]
    create_console_user(running, "li", password, role="admin")
    # Vague things callers say; the ones the NLU is unsure of (as its parse says) are the inbox's.
    vague = ["嗯嗯那个啥呀", "俺寻思着吧那个", "哎呀这个那个", "就是那个事儿呗", "喂喂喂那个", "那个谁来着",
             "呃呃呃", "咋说呢这个", "你听我说啊", "就那个嘛", "这这这", "啥玩意儿"]
    token = running.settings.rasa_api_token.get_secret_value()
    unsure_texts = []
    for text in vague:
        intent = running.http.post(f"{running.rasa_url}/model/parse", params={"token": token},
                                   json={"text": text}).json()["intent"]
        if intent["name"] == "nlu_fallback" or intent["confidence"] < 0.6:
            unsure_texts.append(text)
    assert len(unsure_texts) >= 3, unsure_texts
    said = {}
    for n, text in enumerate(unsure_texts[:3]):
        caller = f"morning-{n}-{uuid.uuid4().hex[:8]}"
        running.say(caller, text, {"channel": "phone", "caller": f"1380000001{n}"})
        said[caller] = text
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        page.goto(f"{running.console_url}/login")
        accessible(page)
        sign_in(page, running, "li", password)
        accessible(page)  # the dashboard
        shot(page, "m1-dashboard")

        page.goto(f"{running.console_url}/inbox")
        accessible(page)
        shot(page, "m2-inbox")
        listed = page.locator("#inbox").inner_text()
        unsure = {caller: text for caller, text in said.items() if text in listed}  # what the NLU was unsure of
        assert len(unsure) == 3, (listed, said)
        callers = list(unsure)
        for caller in callers[:2]:  # two of them labelled at once
            row = page.locator("#inbox tr").filter(has_text=unsure[caller])
            assert row.count() == 1, unsure[caller]
            row.locator("select").select_option("ask_guide")
            row.locator("input[type=checkbox]").check()
        page.click("#label-picked")
        page.wait_for_load_state()
        left = page.content()
        assert unsure[callers[0]] not in left and unsure[callers[1]] not in left and unsure[callers[2]] in left
        shot(page, "m3-inbox-labelled")

        page.goto(f"{running.console_url}/conversations?reviewed=no&channel=phone")
        accessible(page)
        page.locator(f"a[href='/conversations/{running.ref(callers[2])}']").click()
        page.wait_for_url(f"**/conversations/{running.ref(callers[2])}")
        accessible(page)
        message = page.locator(".turn.user").filter(has_text=unsure[callers[2]])
        message.locator("select[name=intent]").select_option("give_feedback")
        message.locator("button", has_text="更正").click()
        page.wait_for_load_state()
        assert "已更正为 give_feedback" in page.locator(".turn.user").filter(has_text=unsure[callers[2]]).inner_text()
        shot(page, "m4-corrected")
        seen = {running.ref(callers[2])}
        page.click("#review-next")  # reviewed, and on to the next unreviewed conversation
        page.wait_for_load_state()
        assert "/conversations/c" in page.url and page.url.rsplit("/", 1)[-1] not in seen
        accessible(page)
        shot(page, "m5-next")

        nlu = yaml.safe_load(page.request.get(f"{running.console_url}/exports/nlu.yml").text())
        examples = {item["intent"]: item["examples"] for item in nlu["nlu"]}
        assert unsure[callers[0]] in examples["ask_guide"] and unsure[callers[1]] in examples["ask_guide"]
        assert unsure[callers[2]] in examples["give_feedback"]
        story = page.request.get(f"{running.console_url}/conversations/{running.ref(callers[2])}/story.yml")
        assert story.ok and "give_feedback" in story.text() and "13800000012" not in story.text()

        for path in ("/conversations", "/tickets", "/humans", "/admin/users", "/admin/audit",
                     "/conversations/c00000000000000000000"):  # the last: the error page (404)
            page.goto(f"{running.console_url}{path}")
            assert page.locator("main h1").count() == 1, path
            accessible(page)
        assert "没有这个对话" in page.content()
        browser.close()
    for name in ("m1-dashboard", "m2-inbox", "m3-inbox-labelled", "m4-corrected", "m5-next"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000
