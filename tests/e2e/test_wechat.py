"""The official account through the WeChat channel inside the real Rasa server: safe mode, retries,
the 4.5-second deadline, customer-service delivery from a local WeChat API, and bad input."""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from channels.wechat_protocol import signature
from services.settings import ROOT
from tests.e2e.conftest import Running
from tests.e2e.people import Citizen, console_sign_in, deliver, wechat_url
from tests.fakes.wechat_api import Account
from tests.sandbox import free_port

pytestmark = pytest.mark.e2e


@contextmanager
def stopped(pid: int, seconds: float) -> Iterator[None]:
    """The process group ``pid`` stopped (SIGSTOP) for ``seconds``, counted from entering."""
    os.killpg(pid, signal.SIGSTOP)
    resume = threading.Timer(seconds, lambda: os.killpg(pid, signal.SIGCONT))
    resume.start()
    try:
        yield
    finally:
        resume.join()


def test_url_verification_echoes_only_when_signed(running: Running) -> None:
    ts, nonce = str(int(time.time())), uuid.uuid4().hex
    good = {"signature": signature(running.account.token, ts, nonce), "timestamp": ts, "nonce": nonce, "echostr": "e42"}
    assert running.http.get(wechat_url(running), params=good).text == "e42"
    forged = {**good, "nonce": uuid.uuid4().hex}
    assert running.http.get(wechat_url(running), params=forged).status_code == 403


def test_a_conversation_in_safe_mode_with_numbered_choices(running: Running) -> None:
    citizen = Citizen(running)
    welcome = citizen.say("你好")
    assert "菏泽市民政务助手" in welcome and "1. 查办件进度" in welcome and "请回复数字选择" in welcome
    assert "受理编号" in citizen.say("1")  # the number picks the first button: check_progress
    answer = citizen.say("20261101000001")
    assert "审核中" in answer and "牡丹区政务服务中心" in answer


def test_guide_answers_and_payment_links_reach_wechat(running: Running) -> None:
    citizen = Citizen(running)
    guide = citizen.say("办身份证要带什么")
    assert "所需材料" in guide and "/guide/id-card-apply" in guide
    assert "户号" in citizen.say("交燃气费")
    assert "应缴" in citizen.say("3000000001")  # no other test pays this bill
    assert "/pay/" in citizen.say("确认")


def test_three_deliveries_make_one_turn_and_the_same_reply(running: Running) -> None:
    citizen = Citizen(running)
    citizen.msg_id += 1
    inner = running.account.text_xml(citizen.openid, "查工单", citizen.msg_id, create_time=int(time.time()))
    replies = []
    for delay in (0, 5, 5):  # WeChat's schedule: at 0, 5 and 10 s
        time.sleep(delay)
        resp = deliver(running, inner)
        replies.append(running.account.open_reply(resp.text)["Content"])
    assert replies[0] == replies[1] == replies[2] and "工单号" in replies[0]
    tracker = running.http.get(f"{running.rasa_url}/conversations/{citizen.openid}/tracker",
                               params={"token": running.settings.rasa_api_token.get_secret_value()}).json()
    user_turns = [e for e in tracker["events"] if e["event"] == "user"]
    assert len(user_turns) == 1 and user_turns[0]["input_channel"] == "wechat"
    assert user_turns[0]["metadata"]["channel"] == "wechat"


def test_a_slow_turn_gets_success_then_one_customer_service_message(running: Running) -> None:
    citizen = Citizen(running)
    assert "受理编号" in citizen.say("查进度")
    citizen.msg_id += 1
    inner = running.account.text_xml(citizen.openid, "20261101000001", citizen.msg_id)
    with stopped(running.stack.procs["action-server"].pid, 7):  # the action server stalls for 7 s
        started = time.monotonic()
        first = deliver(running, inner)
        waited = time.monotonic() - started
        assert first.text == "success" and 3.9 <= waited < 4.5
        time.sleep(5 - waited)
        assert deliver(running, inner).text == "success"  # WeChat's retry: no second turn
    deadline = time.monotonic() + 30
    while not running.wechat.texts_to(citizen.openid) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    (sent,) = running.wechat.texts_to(citizen.openid)
    assert "审核中" in sent


def test_events_and_unsupported_messages(running: Running) -> None:
    account: Account = running.account
    openid = "o" + uuid.uuid4().hex[:20]
    welcome = account.open_reply(deliver(running, account.event_xml(openid, "subscribe")).text)["Content"]
    assert "菏泽市民政务助手" in welcome
    menu = account.open_reply(deliver(running, account.event_xml(openid, "CLICK", "PAY")).text)["Content"]
    assert "交什么费" in menu
    assert deliver(running, account.event_xml(openid, "unsubscribe")).text == "success"
    image = (f"<xml><ToUserName>gh</ToUserName><FromUserName>{openid}</FromUserName><CreateTime>1</CreateTime>"
             "<MsgType>image</MsgType><PicUrl>http://x/y.jpg</PicUrl><MsgId>77</MsgId></xml>")
    assert "文字和语音" in account.open_reply(deliver(running, image).text)["Content"]


def test_bad_requests_are_refused_without_a_turn(running: Running, tmp_path) -> None:  # type: ignore[no-untyped-def]
    account: Account = running.account
    inner = account.text_xml("o-bad", "你好", 1)
    params, body = account.sealed(inner)
    cases = [
        ({**params, "msg_signature": "0" * 40}, body, 403),
        (account.sealed(inner, timestamp=int(time.time()) - 400)[0], account.sealed(inner)[1], 403),
        (params, b"<xml><Encrypt>unclosed", 400),
        (params, b"<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml><Encrypt>&x;</Encrypt></xml>", 400),
        (params, b"<xml>" + b"a" * 70_000 + b"</xml>", 413),
        ({k: v for k, v in params.items() if k not in ("encrypt_type", "msg_signature")},
         inner.encode(), 400),  # a plain message in safe mode
    ]
    for query, content, status in cases:
        assert running.http.post(wechat_url(running), params=query, content=content).status_code == status
    assert running.http.post(wechat_url(running), params=params, content=body).status_code == 200
    # The same nonce and signature with another body: the signature covers the ciphertext.
    assert running.http.post(wechat_url(running), params=params, content=account.sealed(inner)[1]).status_code == 403
    other = Account(token=account.token, aes_key=account.aes_key, appid="wx0000000000000000")
    q, b = other.sealed(inner)
    assert running.http.post(wechat_url(running), params=q, content=b).status_code == 403  # another appid


def test_many_citizens_at_once_all_get_passive_replies(running: Running) -> None:
    citizens = [Citizen(running) for _ in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        replies = list(pool.map(lambda c: c.say("查工单"), citizens))
    assert all("工单号" in r for r in replies)


def test_the_mini_program_answers_through_customer_service_messages(running: Running) -> None:
    openid = "m" + uuid.uuid4().hex[:20]
    base = {"ToUserName": "gh_mini", "FromUserName": openid, "CreateTime": int(time.time()), "MsgType": "text"}
    mini_url = f"{running.front_url}/webhooks/miniprogram/webhook"
    for n, text in enumerate(("办护照要多少钱", "在哪办")):
        params, body = running.mini_account.sealed_json({**base, "Content": text, "MsgId": 900 + n})
        resp = running.http.post(mini_url, params=params, content=body)
        assert resp.status_code == 200 and resp.text == "success"  # the mini-program takes no passive replies
        deadline = time.monotonic() + 20
        while len(running.mini.texts_to(openid)) <= n and time.monotonic() < deadline:
            time.sleep(0.1)
    first, second = running.mini.texts_to(openid)
    assert "普通护照申请 · 收费标准" in first and "普通护照申请 · 办理地点" in second
    assert running.wechat.texts_to(openid) == []  # the official account's API was not used
    params, body = running.account.sealed_json({**base, "Content": "你好", "MsgId": 999})
    assert running.http.post(mini_url, params=params, content=body).status_code == 403  # the other account's key


def test_feedback_ticket_lookup_and_hand_off_through_wechat(running: Running) -> None:
    citizen = Citizen(running)
    assert "1. 投诉" in citizen.say("工厂半夜排污 河里死鱼")
    assert "哪里" in citizen.say("2")  # the second numbered choice: 举报
    citizen.say("巨野县城东")
    answer = citizen.say("匿名")
    number = re.search(r"工单号：(\d{8})", answer)
    assert number and "生态环境" in answer, answer
    rating = citizen.say("5")  # the rating question: its choices are numbered in score order
    assert "谢谢您的评价" in rating
    from sqlalchemy import select

    from services.models import Rating
    with running.services.sessions() as s:
        scores = [r.score for r in s.scalars(select(Rating).where(Rating.sender_id == citizen.openid))]
    assert scores == [5]  # "5" is 5 points, not the fifth choice of a list that began with 5分
    citizen.say("查工单")
    assert "已受理" in citizen.say(number.group(1))


def test_numbered_choices_answer_only_the_question_that_offered_them(running: Running) -> None:
    citizen = Citizen(running)
    assert "2. 缴费" in citizen.say("你好")
    assert "工单号" in citizen.say("查工单")  # a question with no choices: the menu's numbers lapse
    reply = citizen.say("2")
    assert "8位数字" in reply and "交什么费" not in reply, reply


def test_a_shared_location_becomes_the_tickets_location(running: Running) -> None:
    from sqlalchemy import select

    from services.models import FeedbackTicket

    citizen = Citizen(running)
    citizen.say("小区门口的井盖丢了 很危险")
    assert "哪里" in citizen.say("1")  # 投诉
    citizen.msg_id += 1
    location = (f"<xml><ToUserName><![CDATA[gh_heze]]></ToUserName><FromUserName><![CDATA[{citizen.openid}]]>"
                f"</FromUserName><CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[location]]></MsgType>"
                "<Location_X>35.2336</Location_X><Location_Y>115.4807</Location_Y><Scale>15</Scale>"
                f"<Label><![CDATA[山东省菏泽市牡丹区中华路与人民路交叉口]]></Label><MsgId>{citizen.msg_id}</MsgId></xml>")
    reply = running.account.open_reply(deliver(running, location).text)["Content"]
    assert "手机号" in reply, reply  # the form went on to the contact question
    answer = citizen.say("匿名")
    number = re.search(r"工单号：(\d{8})", answer)
    assert number, answer
    with running.services.sessions() as s:
        ticket = s.scalars(select(FeedbackTicket).where(FeedbackTicket.number == number.group(1))).one()
    assert ticket.location == "山东省菏泽市牡丹区中华路与人民路交叉口"


def voice_xml(openid: str, media_id: str, msg_id: int) -> str:
    return (f"<xml><ToUserName><![CDATA[gh_heze]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[voice]]></MsgType>"
            f"<MediaId><![CDATA[{media_id}]]></MediaId><Format><![CDATA[amr]]></Format><MsgId>{msg_id}</MsgId></xml>")


def reply_to(running: Running, citizen: Citizen, resp) -> str:  # type: ignore[no-untyped-def]
    """The passive reply, or the customer-service message that follows ``success``."""
    if resp.text != "success":
        return running.account.open_reply(resp.text)["Content"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not running.wechat.texts_to(citizen.openid):
        time.sleep(0.1)
    return running.wechat.texts_to(citizen.openid)[-1]


def test_a_voice_message_without_recognition_goes_through_the_voice_gateway(running: Running) -> None:
    from tests.voice.speech import utterance
    from voice.audio import write_wav

    citizen = Citizen(running)
    # WeChat sends AMR; this machine's ffmpeg decodes AMR but cannot encode it, so the stored file is MP3
    # (the gateway decodes whatever ffmpeg reads; an AMR file is decoded in tests/e2e/test_phone.py).
    mp3 = subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "wav", "-i", "pipe:0", "-f", "mp3", "pipe:1"],
                         input=write_wav(utterance("progress_009"), 8000), capture_output=True, check=True).stdout
    media_id = "media-" + uuid.uuid4().hex
    running.wechat.media[media_id] = mp3
    fetched = running.wechat.media_fetches
    citizen.msg_id += 1
    reply = reply_to(running, citizen, deliver(running, voice_xml(citizen.openid, media_id, citizen.msg_id)))
    assert reply and "没听清" not in reply
    assert running.wechat.media_fetches == fetched + 1
    tracker = running.http.get(f"{running.rasa_url}/conversations/{citizen.openid}/tracker",
                               params={"token": running.settings.rasa_api_token.get_secret_value()}).json()
    said = [e for e in tracker["events"] if e["event"] == "user"][-1]
    # The test model is Korean, so the words are Korean; what matters is that they reached Rasa.
    assert said["text"].strip() and said["metadata"]["transcribed_by"] == "vosk" and said["metadata"]["voice"]

    other = Citizen(running)
    other.msg_id += 1
    missing = reply_to(running, other, deliver(running, voice_xml(other.openid, "no-such-media", other.msg_id)))
    assert "没听清" in missing  # WeChat refused the media id: the citizen is asked to type or say it again


def test_a_message_that_got_the_apology_is_answered_when_the_services_are_back(running: Running) -> None:
    citizen = Citizen(running)
    running.stack.stop(only="action-server")
    try:
        apology = citizen.say("转人工")  # the hand-off runs in the action server
        assert "系统暂时有点问题" in apology and "马上回复您" in apology
        time.sleep(3)  # a retry round while still down changes nothing
        assert running.wechat.texts_to(citizen.openid) == []
    finally:
        running.stack.start(only="action-server")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not running.wechat.texts_to(citizen.openid):
        time.sleep(0.2)
    answered = running.wechat.texts_to(citizen.openid)
    assert len(answered) == 1 and "正在为您转人工" in answered[0]  # one customer-service message, the real answer
    time.sleep(3)
    assert len(running.wechat.texts_to(citizen.openid)) == 1  # and only once


def test_malformed_fields_get_a_4xx_before_and_after_the_signature_check(running: Running) -> None:
    account: Account = running.account
    mini_url = f"{running.front_url}/webhooks/miniprogram/webhook"
    inner = account.text_xml("oMalformed", "你好", 1)
    params, body = account.sealed(inner)
    ts, nonce = str(int(time.time())), uuid.uuid4().hex
    verify = {"signature": signature(account.token, ts, nonce), "timestamp": ts, "nonce": nonce, "echostr": "e"}
    deep = b'{"a":' * 1200 + b"1" + b"}" * 1200
    utf16 = '<!DOCTYPE xml [<!ENTITY x "expanded">]><xml><Encrypt>&x;</Encrypt></xml>'.encode("utf-16")
    unsigned = [  # once: 500 for the first three (OverflowError, RecursionError), 200 for the UTF-16 DTD
        ("post", wechat_url(running), {**params, "timestamp": "9" * 400}, body),
        ("get", wechat_url(running), {**verify, "timestamp": "9" * 400}, b""),
        ("post", mini_url, params, deep),
        ("post", wechat_url(running), params, utf16),
        ("post", wechat_url(running), {**params, "nonce": "x" * 500}, body),
    ]
    for method, where, query, content in unsigned:
        resp = running.http.request(method.upper(), where, params=query, content=content)
        assert 400 <= resp.status_code < 500, (query.get("timestamp", "")[:20], resp.status_code)
    # Signed and encrypted, but what is inside is malformed.
    for bad in ('<xml><FromUserName><![CDATA[o/../x]]></FromUserName><MsgType>text</MsgType>'
                '<Content>x</Content><MsgId>1</MsgId></xml>',
                '<xml><FromUserName><![CDATA[oOk]]></FromUserName><MsgType>text</MsgType>'
                f'<Content>x</Content><MsgId>{"9" * 400}</MsgId></xml>'):
        q, b = account.sealed(bad)
        assert running.http.post(wechat_url(running), params=q, content=b).status_code == 400
    mq, mb = running.mini_account.sealed_json({"FromUserName": "m" * 10, "MsgType": "text", "Content": "x",
                                               "CreateTime": "9" * 400})
    assert running.http.post(mini_url, params=mq, content=mb).status_code == 400
    log = (running.stack.log_dir / "rasa.log").read_text(encoding="utf-8", errors="replace")
    assert "oMalformed" not in log  # the openid of the query string is never logged
    assert "OverflowError" not in log and "RecursionError" not in log


def test_the_same_msgid_from_two_citizens_and_two_accounts_gets_each_its_own_answer(running: Running) -> None:
    first, second = Citizen(running), Citizen(running)
    second.msg_id = first.msg_id
    assert "受理编号" in first.say("查进度")
    other = second.say("查工单")  # the same MsgId: once the first citizen's reply, and no turn
    assert "工单号" in other and "受理编号" not in other
    openid = "m" + uuid.uuid4().hex[:20]
    mini_url = f"{running.front_url}/webhooks/miniprogram/webhook"
    params, body = running.mini_account.sealed_json({"ToUserName": "gh_mini", "FromUserName": openid,
                                                     "CreateTime": int(time.time()), "MsgType": "text",
                                                     "Content": "查工单", "MsgId": first.msg_id})
    assert running.http.post(mini_url, params=params, content=body).text == "success"
    deadline = time.monotonic() + 20
    while not running.mini.texts_to(openid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "工单号" in running.mini.texts_to(openid)[0]  # once dropped: the official account had used the MsgId


def test_a_signed_resend_gets_the_stored_reply_and_other_replays_stay_refused(running: Running) -> None:
    citizen = Citizen(running)
    citizen.msg_id += 1
    params, body = running.account.sealed(running.account.text_xml(citizen.openid, "查工单", citizen.msg_id))
    first = running.http.post(wechat_url(running), params=params, content=body)
    again = running.http.post(wechat_url(running), params=params, content=body)  # a retry that reused the query string
    assert first.status_code == again.status_code == 200
    assert running.account.open_reply(again.text)["Content"] == running.account.open_reply(first.text)["Content"]
    assert "工单号" in running.account.open_reply(again.text)["Content"]
    # Replays of anything never taken stay refused: an event with nothing to answer, a refused message.
    q, b = running.account.sealed(running.account.event_xml(citizen.openid, "VIEW", "https://example.org/"))
    assert running.http.post(wechat_url(running), params=q, content=b).text == "success"
    assert running.http.post(wechat_url(running), params=q, content=b).status_code == 403
    q, b = running.account.sealed("<xml><MsgType>text</MsgType><Content>x</Content><MsgId>5</MsgId></xml>")
    assert running.http.post(wechat_url(running), params=q, content=b).status_code == 400  # no sender
    assert running.http.post(wechat_url(running), params=q, content=b).status_code == 400
    ts, nonce = str(int(time.time())), uuid.uuid4().hex
    verify = {"signature": signature(running.account.token, ts, nonce), "timestamp": ts, "nonce": nonce, "echostr": "e"}
    assert running.http.get(wechat_url(running), params=verify).text == "e"
    assert running.http.get(wechat_url(running), params=verify).status_code == 403  # URL verification is never replayed
    tracker = running.http.get(f"{running.rasa_url}/conversations/{citizen.openid}/tracker",
                               params={"token": running.settings.rasa_api_token.get_secret_value()}).json()
    assert len([e for e in tracker["events"] if e["event"] == "user"]) == 1


def test_the_mini_program_answers_images_and_cards_with_a_message(running: Running) -> None:
    openid = "m" + uuid.uuid4().hex[:20]
    mini_url = f"{running.front_url}/webhooks/miniprogram/webhook"
    base = {"ToUserName": "gh_mini", "FromUserName": openid, "CreateTime": int(time.time())}
    pushes = [{**base, "MsgType": "image", "PicUrl": "http://mmbiz/x.jpg", "MediaId": "img1", "MsgId": 71},
              {**base, "MsgType": "miniprogrampage", "Title": "办事", "AppId": "wx1", "PagePath": "pages/a",
               "ThumbUrl": "", "ThumbMediaId": "t", "MsgId": 72}]
    for push in pushes:
        params, body = running.mini_account.sealed_json(push)
        assert running.http.post(mini_url, params=params, content=body).text == "success"
    deadline = time.monotonic() + 10
    while len(running.mini.texts_to(openid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running.mini.texts_to(openid) == [UNSUPPORTED_TEXT, UNSUPPORTED_TEXT]  # once: silence


UNSUPPORTED_TEXT = "目前我能看懂文字和语音消息。请用文字或语音告诉我您要办什么事。"


def test_a_handoff_reaches_wechats_human_service_until_staff_hand_the_citizen_back(running: Running) -> None:
    import httpx

    citizen = Citizen(running)
    citizen.msg_id += 1
    resp = deliver(running, running.account.text_xml(citizen.openid, "转人工", citizen.msg_id))
    transfer = running.account.open_reply(resp.text)
    assert transfer["MsgType"] == "transfer_customer_service" and transfer["ToUserName"] == citizen.openid
    assert "<KfAccount><![CDATA[kf2001@gh_heze]]></KfAccount>" in running.account.open_reply_raw(resp.text)
    deadline = time.monotonic() + 10
    while not running.wechat.texts_to(citizen.openid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "正在为您转人工" in running.wechat.texts_to(citizen.openid)[0]  # the bot's words, as a message
    citizen.msg_id += 1
    still = deliver(running, running.account.text_xml(citizen.openid, "你好 有人吗", citizen.msg_id))
    assert running.account.open_reply(still.text)["MsgType"] == "transfer_customer_service"  # no turn, to the agent

    with httpx.Client(base_url=running.console_url, timeout=30, follow_redirects=False) as staff:
        csrf = console_sign_in(running, staff)
        listed = staff.get("/humans").text
        assert running.ref(citizen.openid) in listed and citizen.openid not in listed and "kf2001@gh_heze" in listed
        back = staff.post(f"/humans/{running.ref(citizen.openid)}/return", data={"csrf_token": csrf})
        assert back.status_code == 303
    assert "工单号" in citizen.say("查工单")  # the bot's again
    tracker = running.http.get(f"{running.rasa_url}/conversations/{citizen.openid}/tracker",
                               params={"token": running.settings.rasa_api_token.get_secret_value()}).json()
    said = [e["text"] for e in tracker["events"] if e["event"] == "user"]
    assert said == ["转人工", "查工单"]  # "你好 有人吗" went to the agent, not the bot


def test_a_handoff_in_the_mini_program_transfers_in_the_response(running: Running) -> None:
    openid = "m" + uuid.uuid4().hex[:20]
    mini_url = f"{running.front_url}/webhooks/miniprogram/webhook"
    base = {"ToUserName": "gh_mini", "FromUserName": openid, "CreateTime": int(time.time()), "MsgType": "text"}
    params, body = running.mini_account.sealed_json({**base, "Content": "转人工", "MsgId": 61})
    resp = running.http.post(mini_url, params=params, content=body)
    assert resp.headers["content-type"].startswith("application/json")
    transfer = running.mini_account.open_reply(resp.text)
    assert transfer["MsgType"] == "transfer_customer_service" and transfer["ToUserName"] == openid
    assert transfer["FromUserName"] == "gh_mini"
    deadline = time.monotonic() + 10
    while not running.mini.texts_to(openid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "正在为您转人工" in running.mini.texts_to(openid)[0]
    params, body = running.mini_account.sealed_json({**base, "Content": "人呢", "MsgId": 62})
    again = running.mini_account.open_reply(running.http.post(mini_url, params=params, content=body).text)
    assert again["MsgType"] == "transfer_customer_service"
    entered = {**base, "MsgType": "event", "Event": "user_enter_tempsession", "SessionFrom": "x"}
    params, body = running.mini_account.sealed_json(entered)
    assert running.http.post(mini_url, params=params, content=body).text == "success"  # events are not transferred
    # The agent closes the session in WeChat's customer-service tool: the citizen is the bot's again.
    closed = {**base, "CreateTime": int(time.time()) + 1, "MsgType": "event", "Event": "kf_close_session",
              "KfAccount": "kf2001@gh_mini", "CloseType": "KF"}
    params, body = running.mini_account.sealed_json(closed)
    assert running.http.post(mini_url, params=params, content=body).text == "success"
    params, body = running.mini_account.sealed_json({**base, "Content": "查工单", "MsgId": 63})
    assert running.http.post(mini_url, params=params, content=body).text == "success"
    deadline = time.monotonic() + 20
    while len(running.mini.texts_to(openid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "工单号" in running.mini.texts_to(openid)[-1]  # answered by the bot, not transferred


# -- the WeChat front (channels/front.py): WeChat's 5-second rule kept outside Rasa's busy loop -----

def _front_token(running: Running) -> str:
    return next(s for s in running.stack.specs if s.name == "wechat-front").env["WECHAT_FRONT_TOKEN"]


def _customer_service_texts(running: Running, openid: str, timeout: float = 30) -> list[str]:
    """What reached the citizen as customer-service messages, once they stop coming."""
    deadline = time.monotonic() + timeout
    while not running.wechat.texts_to(openid) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # a second one would come now
    return running.wechat.texts_to(openid)


def test_a_frozen_rasa_gets_success_at_the_cut_and_the_reply_once_later(running: Running) -> None:
    citizen = Citizen(running)
    citizen.msg_id += 1
    inner = running.account.text_xml(citizen.openid, "你好", citizen.msg_id)
    with stopped(running.stack.procs["rasa"].pid, 6):  # Rasa's loop does nothing for 6 s, as under a burst
        started = time.monotonic()
        first = deliver(running, inner)
        waited = time.monotonic() - started
    assert first.status_code == 200 and first.text == "success" and 4.4 <= waited < 4.9
    (sent,) = _customer_service_texts(running, citizen.openid)
    assert "菏泽市民政务助手" in sent
    health = running.http.get(f"{running.front_url}/health").json()
    assert health["cut"] >= 1 and health["lost"] == 0


def test_a_passive_reply_the_front_cut_goes_out_as_one_customer_service_message(running: Running,
                                                                                tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A second front that cuts at once: every passive reply Rasa gives reaches it too late.
    port = free_port()
    env = {**os.environ, "WECHAT_FRONT_UPSTREAM": running.rasa_url, "WECHAT_FRONT_TOKEN": _front_token(running),
           "WECHAT_FRONT_PORT": str(port), "WECHAT_FRONT_CUT_S": "0"}
    with open(tmp_path / "front.log", "wb") as log:
        front = subprocess.Popen([str(ROOT / ".venv-rasa" / "bin" / "python"), "-m", "channels.front"], cwd=ROOT,
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if running.http.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        citizen = Citizen(running)
        citizen.msg_id += 1
        params, body = running.account.sealed(running.account.text_xml(citizen.openid, "查工单", citizen.msg_id))
        assert running.http.post(f"{url}/webhooks/wechat/webhook", params=params, content=body).text == "success"
        (sent,) = _customer_service_texts(running, citizen.openid)
        assert "工单号" in sent
        health = running.http.get(f"{url}/health").json()
        assert health["cut"] == 1 and health["resent"] == 1 and health["lost"] == 0
        # The channel sends a reply once, however often it is asked; and only the front may ask.
        key = f"{running.account.appid}/{citizen.openid}/msg:{citizen.msg_id}"
        undelivered = f"{running.rasa_url}/webhooks/wechat/undelivered"
        with_secret = {"X-Heze-Front": _front_token(running)}
        assert running.http.post(undelivered, json={"claim": key}, headers=with_secret).status_code == 404
        assert running.http.post(undelivered, json={"claim": key}).status_code == 403
        assert running.http.post(undelivered, json={"claim": key}, headers={"X-Heze-Front": "guess"}).status_code == 403
        assert running.http.post(undelivered, json={"claim": 5}, headers=with_secret).status_code == 400
        assert running.http.post(undelivered, content=b"{", headers=with_secret).status_code == 400
        never = f"{running.account.appid}/{citizen.openid}/msg:1"
        assert running.http.post(undelivered, json={"claim": never}, headers=with_secret).status_code == 404
        assert running.wechat.texts_to(citizen.openid) == [sent]
        # A transfer to the human service cannot be redone: the citizen is asked to send it again (the
        # message then reaches the agent), beside the bot's own words.
        handed = Citizen(running)
        handed.msg_id += 1
        params, body = running.account.sealed(running.account.text_xml(handed.openid, "转人工", handed.msg_id))
        assert running.http.post(f"{url}/webhooks/wechat/webhook", params=params, content=body).text == "success"
        deadline = time.monotonic() + 30
        while len(running.wechat.texts_to(handed.openid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        texts = running.wechat.texts_to(handed.openid)
        assert len(texts) == 2 and any("正在为您转人工" in t for t in texts) and any("再发一次" in t for t in texts)
        handed.msg_id += 1
        again = deliver(running, running.account.text_xml(handed.openid, "我想问社保", handed.msg_id))
        assert running.account.open_reply(again.text)["MsgType"] == "transfer_customer_service"
    finally:
        front.terminate()
        front.wait(10)


def test_the_arrival_time_is_trusted_only_with_the_front_secret(running: Running) -> None:
    # Straight to Rasa with a made-up arrival 10 s ago and no secret: the channel's own clock counts.
    citizen = Citizen(running)
    citizen.msg_id += 1
    params, body = running.account.sealed(running.account.text_xml(citizen.openid, "你好", citizen.msg_id))
    resp = running.http.post(f"{running.rasa_url}/webhooks/wechat/webhook", params=params, content=body,
                             headers={"X-Heze-Arrived": str(time.time() - 10)})
    assert resp.text != "success" and "菏泽市民政务助手" in running.account.open_reply(resp.text)["Content"]
    assert "X-Heze-Claim" not in resp.headers
    # With the secret the channel counts from that arrival: past its deadline, `success` at once and the
    # reply as a customer-service message.
    late = Citizen(running)
    late.msg_id += 1
    params, body = running.account.sealed(running.account.text_xml(late.openid, "你好", late.msg_id))
    started = time.monotonic()
    resp = running.http.post(f"{running.rasa_url}/webhooks/wechat/webhook", params=params, content=body,
                             headers={"X-Heze-Arrived": str(time.time() - 10), "X-Heze-Front": _front_token(running)})
    assert resp.text == "success" and time.monotonic() - started < 2.0
    (sent,) = _customer_service_texts(running, late.openid)
    assert "菏泽市民政务助手" in sent
