"""The citizens' web chat in Debian's Chromium (Playwright), against the real stack: at two phone sizes
(360 x 740 and 414 x 896), in normal and elderly mode (长辈模式), a progress check through the choice
buttons, a complaint, a bill paid through the sandbox (the payment page opened in place, then back to
the conversation), an answer read aloud, and a question spoken through the hold-to-talk button with
Chromium's fake microphone playing a recorded caller (tests/fixtures/speech). Then 子女代办 from end to
end: a son in WeChat's browser (the official account's OAuth against the local WeChat) asks to act for
his father, the father calls the line from his own mobile, says 同意代办 and keys in the texted code,
the son checks the father's progress and pays his bill, staff see it in the console, and the father
ends it by phone. Every state is checked with axe-core (no serious or critical violation);
screenshots are kept under test-artifacts/webchat/."""
from __future__ import annotations

import datetime
import json
import re
import shutil
import time
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import select

from services.models import Application, Bill, PaymentOrder, SmsOutbox
from services.settings import ROOT
from tests.e2e.conftest import Running
from tests.e2e.browser import accessible, sign_in
from tests.e2e.people import call, create_console_user, replies
from tests.voice.phone_client import PhoneClient
from tests.voice.speech import utterance

pytestmark = pytest.mark.e2e
ARTIFACTS = ROOT / "test-artifacts" / "webchat"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SPOKEN = ROOT / "tests" / "fixtures" / "speech" / "zh" / "bill_001.wav"  # 俺想交水费
SIZES = {"360x740": (360, 740), "414x896": (414, 896)}


def seconds(wav: Path) -> float:
    with wave.open(str(wav)) as w:
        return w.getnframes() / w.getframerate()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        yield p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={SPOKEN}%noloop", "--autoplay-policy=no-user-gesture-required"])


def shot(page: Page, name: str, whole: bool = False) -> None:
    """What the phone's screen shows (``whole``: the conversation so far, on a screen tall enough for it)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    if whole and size:
        page.set_viewport_size({"width": size["width"], "height": page.evaluate("document.getElementById('log').scrollHeight") + 400})
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    if whole and size:
        page.set_viewport_size(size)


def bots(page: Page) -> int:
    return page.locator(".msg.bot").count()


def answered(page: Page, before: int) -> str:
    """What the assistant said after ``before`` bot messages, once the turn is over (polled from here:
    the page's CSP forbids the string evaluation wait_for_function uses)."""
    deadline = time.monotonic() + 60
    while bots(page) <= before or "正在" in page.locator("#status").inner_text():
        assert time.monotonic() < deadline, page.locator("#status").inner_text()
        page.wait_for_timeout(100)
    return " ".join(page.locator(".msg.bot").nth(i).locator(".text").inner_text() for i in range(before, bots(page)))


def say(page: Page, text: str) -> str:
    before = bots(page)
    page.fill("#text", text)
    page.press("#text", "Enter")
    return answered(page, before)


def tap(page: Page, title: str) -> str:
    before = bots(page)
    page.locator(".msg.bot").last.locator(".choices button", has_text=title).first.click()
    return answered(page, before)


def open_chat(browser: Browser, running: Running, size: str, **context: Any) -> Page:
    width, height = SIZES[size]
    ctx = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=2, is_mobile=True,
                              has_touch=True, locale="zh-CN", **context)
    ctx.grant_permissions(["microphone"], origin=running.settings.public_base_url)
    page = ctx.new_page()
    page.goto(f"{running.settings.public_base_url}/chat")
    page.wait_for_selector(".msg.bot")
    return page


def a_water_bill(running: Running) -> str:
    """A bill of this test's own (the other flows pay the sample ones)."""
    account = "19" + uuid.uuid4().int.__str__()[:8]
    with running.services.sessions() as s:
        s.add(Bill(bill_type="water", account=account, holder_name="网页测试", district="牡丹区", period="2026-11",
                   amount_fen=4210, due_date=datetime.date(2026, 12, 31)))
        s.commit()
    return account


def check_elderly_sizes(page: Page) -> None:
    """MIIT's age-friendly rules as the browser lays the page out: text 18-30 px, line spacing >= 1.3,
    every control at least 60 x 60 px."""
    style = page.evaluate("""() => { const s = getComputedStyle(document.querySelector('.msg.bot'));
        return [parseFloat(s.fontSize), parseFloat(s.lineHeight)]; }""")
    assert 18 <= style[0] <= 30 and style[1] / style[0] >= 1.3, style
    small = page.evaluate("""() => [...document.querySelectorAll('button, textarea, input, select, a')]
        .filter(e => e.offsetParent !== null).map(e => [e.textContent.trim() || e.id, e.getBoundingClientRect()])
        .filter(([, r]) => r.width < 60 || r.height < 60).map(([n, r]) => [n, Math.round(r.width), Math.round(r.height)])""")
    assert not small, small


@pytest.mark.parametrize("mode", ["normal", "elder"])
@pytest.mark.parametrize("size", list(SIZES))
def test_a_citizen_chats_on_a_phone(browser: Browser, running: Running, size: str, mode: str) -> None:
    name = f"{size}-{mode}"
    page = open_chat(browser, running, size)
    assert "请问办什么事" in page.locator(".msg.bot").first.inner_text()
    if mode == "elder":
        page.click("#elder")
        assert page.get_attribute("#elder", "aria-pressed") == "true"
        page.reload()  # remembered
        page.wait_for_selector(".msg.bot")
        assert "elder" in (page.get_attribute("html", "class") or "")
        check_elderly_sizes(page)
    shot(page, f"{name}-1-greeting")
    accessible(page)

    # A progress check through the choice buttons; the rating buttons give the score they say.
    assert "受理编号" in tap(page, "查办件进度")
    assert page.locator(".msg.bot").first.locator(".choices button").first.is_disabled()  # old choices retire
    answer = say(page, "20261101000001")
    assert "审核中" in answer and "材料审核" in answer, answer  # the sample application (services/seed.py)
    assert "谢谢" in tap(page, "5分"), "the rating"
    shot(page, f"{name}-2-progress")

    # A complaint, answered question by question.
    answer = say(page, "俺村东头的路灯黑了半个月了，晚上出门看不见")
    for _ in range(6):
        if "工单号" in answer:
            break
        if "匿名" in answer:
            answer = say(page, "匿名")
        elif "哪" in answer:
            answer = say(page, "牡丹区吴店镇东王庄村")
        elif page.locator(".msg.bot").last.locator(".choices button", has_text="投诉").count():
            answer = tap(page, "投诉")
        else:
            answer = say(page, "投诉")
    assert re.search(r"工单号：\d{8}", answer), answer
    shot(page, f"{name}-3-complaint")

    # A bill: the payment page opens in place, is paid (sandbox), and the conversation is still there.
    account = a_water_bill(running)
    assert "户号" in say(page, "交水费")
    assert "42.10" in say(page, account)
    say(page, "确认")
    link = page.locator(".msg.bot a", has_text="打开缴费页面").last
    order_no = (link.get_attribute("href") or "").rsplit("/", 1)[-1]
    link.click()
    page.wait_for_url(f"**/pay/{order_no}")
    shot(page, f"{name}-4-pay-page")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "支付成功" in page.content()
    with running.services.sessions() as s:
        order = s.query(PaymentOrder).filter_by(order_no=order_no).one()
        assert order.status == "paid" and order.channel == "webchat"
    page.goto(f"{running.settings.public_base_url}/chat")
    page.wait_for_selector(".msg.bot")
    assert "42.10" in page.locator("#log").inner_text() and "路灯" in page.locator("#log").inner_text()  # history kept
    shot(page, f"{name}-5-back-from-paying")

    # 朗读: the last answer as speech from the gateway's Mandarin voice.
    with page.expect_response("**/chat/api/tts") as spoken:
        page.locator(".msg.bot .read").last.click()
    wav = spoken.value  # (the page read the body into a blob; Playwright keeps no copy of it)
    assert wav.status == 200 and wav.headers["content-type"] == "audio/wav"
    assert int(wav.headers["content-length"]) > 32000 * 1  # more than a second of 16 kHz speech
    direct = page.request.post(f"{running.settings.public_base_url}/chat/api/tts", headers={"X-Heze-Chat": "1"},
                               data={"text": "您好，请问办什么事？"})
    assert direct.ok and direct.body()[:4] == b"RIFF" and direct.body()[8:12] == b"WAVE"

    # A question spoken through the microphone (Chromium plays the recorded caller into it).
    before = bots(page)
    box = page.locator("#mic").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    with page.expect_response("**/chat/api/asr", timeout=60_000) as heard:
        page.mouse.down()
        page.wait_for_selector("#mic.recording")
        page.wait_for_timeout(int((seconds(SPOKEN) + 0.8) * 1000))
        page.mouse.up()
    assert heard.value.status == 200, heard.value.text()
    transcript = heard.value.json()["text"]
    answer = answered(page, before)
    assert "水" in transcript and "户号" in answer, (transcript, answer)
    assert page.locator(".msg.user").last.inner_text() == transcript
    shot(page, f"{name}-6-spoken-question")
    shot(page, f"{name}-7-whole-conversation", whole=True)
    accessible(page)
    if mode == "elder":
        check_elderly_sizes(page)
    page.context.close()


WECHAT_UA = ("Mozilla/5.0 (Linux; Android 12; HarmonyOS) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 "
             "MicroMessenger/8.0.50.2701 NetType/4G Language/zh_CN")


def an_elder_with_an_application(running: Running) -> tuple[str, str]:
    """An elder of this test's own: a mobile and an application filed under it (ID ending 4321)."""
    elder = "139" + str(uuid.uuid4().int)[:8]
    number = "2026" + str(uuid.uuid4().int)[:10]
    with running.services.sessions() as s:
        s.add(Application(number=number, service_name="高龄津贴申领", applicant_phone=elder, applicant_id_last4="4321",
                          status="审核中", current_step="民政所初审", office="牡丹区民政局",
                          expected_date=datetime.date.today() + datetime.timedelta(days=5),
                          submitted_at=datetime.datetime.now(datetime.timezone.utc)))
        s.commit()
    return elder, number


def texted_code(running: Running, elder: str) -> str:
    with running.services.sessions() as s:
        rows = s.execute(select(SmsOutbox.phone, SmsOutbox.params).where(SmsOutbox.kind == "proxy_code")
                         .order_by(SmsOutbox.id.desc())).all()
    return str(next(json.loads(params)["code"] for phone, params in rows if phone == elder))


def test_a_family_member_pays_for_a_parent_who_consented_by_phone(browser: Browser, running: Running) -> None:
    elder, application = an_elder_with_an_application(running)
    running.wechat.signed_in = "oFamily" + uuid.uuid4().hex[:21]
    page = open_chat(browser, running, "414x896", user_agent=WECHAT_UA)  # WeChat's in-app browser: OAuth first
    family = f"web:oa:{running.account.appid}:{running.wechat.signed_in}"

    # The son asks to act for his father; the father is texted a code.
    page.click("#family-open")
    page.fill("#elder-phone", elder)
    page.select_option("#relation", "父亲")
    page.click("#family-form button[type=submit]")
    page.wait_for_selector("#family-told:has-text('验证码已用短信发到')")
    assert "等家人打电话确认" in page.locator("#grants").inner_text()
    shot(page, "family-1-requested")
    code = texted_code(running, elder)

    # The father calls the line from that phone, says he agrees, and keys in the code.
    async def consent(phone: PhoneClient) -> None:
        phone.speak(utterance("proxy_008"))  # 俺同意代办
        said = await replies(running, phone.call_id, 2)
        assert "验证码" in said[1], said
        await phone.wait_quiet(0.6)
        phone.press(code + "#")
        said = await replies(running, phone.call_id, 3)
        assert "可以替您办事了" in said[2] and "解除代办" in said[2], said

    call(running, elder, consent)
    [grant] = [g for g in running.services.proxies.of_family(family) if g.status == "active"]

    # The son acts for his father: a progress check by the father's number, and a bill paid.
    page.click("#family-open")
    page.click("#family-open")  # closed and opened again: the list is read afresh
    page.locator("#grants button", has_text="为父亲办事").click()
    assert "正在为父亲" in page.locator("#acting").inner_text()
    shot(page, "family-2-acting")
    assert "受理编号" in say(page, "查办件进度")
    assert "用您父亲的手机号查" in say(page, "没有编号")
    answer = say(page, "4321")
    assert answer.startswith("（为您父亲代查）") and "高龄津贴申领" in answer and "民政所初审" in answer, answer
    account = a_water_bill(running)
    say(page, "交水费")
    say(page, account)
    assert "（为您父亲代缴）已生成缴费订单" in say(page, "确认")
    page.locator(".msg.bot a", has_text="打开缴费页面").last.click()
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "支付成功" in page.content()
    shot(page, "family-3-paid")
    page.click("text=回到在线咨询")
    page.wait_for_selector(".msg.bot")
    assert "正在为父亲" in page.locator("#acting").inner_text()  # still acting for him
    trail = [e.action for e in running.services.proxies.trail(grant.id)]
    assert trail[:2] == ["requested", "consented"] and {"progress_checked", "order_created"} <= set(trail)

    # Staff see the grant and what was done under it.
    password = "proxy-e2e-" + uuid.uuid4().hex[:8]
    create_console_user(running, "wang_proxy", password, role="supervisor")
    staff = page.context.browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")  # type: ignore[union-attr]
    desk = staff.new_page()
    sign_in(desk, running, "wang_proxy", password)
    desk.goto(f"{running.console_url}/proxies")
    listing = desk.content()
    assert elder not in listing and f"{elder[:3]}****{elder[-4:]}" in listing
    shot(desk, "family-4-console")
    accessible(desk)
    desk.goto(f"{running.console_url}/proxies?grant={grant.id}")
    shown = desk.locator("#trail").inner_text()
    assert "老人来电同意" in shown and "代查办件进度" in shown and "代下缴费订单" in shown, shown
    shot(desk, "family-5-console-trail")
    staff.close()

    # The father ends it by phone; the son's next message in his name is refused and the page says so.
    async def revoke(phone: PhoneClient) -> None:
        phone.speak(utterance("proxy_003"))  # 解除代办
        said = await replies(running, phone.call_id, 2)
        assert "已经解除" in said[1], said

    call(running, elder, revoke)
    page.goto(f"{running.settings.public_base_url}/chat")
    page.wait_for_selector(".msg.bot")
    page.fill("#text", "查办件进度")
    page.press("#text", "Enter")
    page.wait_for_selector("#status:has-text('代办已经结束')")
    assert page.locator("#acting").is_hidden() and page.input_value("#text") == "查办件进度"  # kept to send again
    shot(page, "family-6-ended")
    page.context.close()
