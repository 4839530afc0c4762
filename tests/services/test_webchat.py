"""The web chat's page server in-process (services/webchat.py), with WeChat's login endpoints played by
the local fake and no Rasa behind it (the whole stack is tests/e2e/test_webchat.py): sessions, logins,
what bad input gets, and that the page needs nothing from elsewhere."""
from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.api import create_app
from services.container import Services
from services.webchat import COOKIE, HEADER, RATE_MAX, STATIC, RateLimit
from tests.sandbox import free_port, make_settings
from tests.fakes.wechat_api import FakeWeChat, serve
from textnorm.webtoken import issue, session_key, verify

API = {HEADER: "1"}
OA_APPID, MP_APPID = "wx" + "0a" * 8, "wx" + "0b" * 8
WECHAT_UA = "Mozilla/5.0 (Linux; Android 12) MicroMessenger/8.0.50"


@pytest.fixture
def fakes() -> Iterator[tuple[FakeWeChat, FakeWeChat, str, str]]:
    oa, mp = FakeWeChat(appid=OA_APPID, secret="oa-secret"), FakeWeChat(appid=MP_APPID, secret="mp-secret")
    with serve(oa, free_port()) as oa_url, serve(mp, free_port()) as mp_url:
        yield oa, mp, oa_url, mp_url


def client_for(services: Services, **overrides: object) -> TestClient:
    values: dict[str, object] = {"rasa_port": free_port(), "voice_gateway_url": f"http://127.0.0.1:{free_port()}",
                                 "public_base_url": "http://testserver"}
    values.update(overrides)
    return TestClient(create_app(make_settings(**values), services))


@pytest.fixture
def guest(seeded: Services) -> Iterator[TestClient]:
    with client_for(seeded) as client:  # one event loop for the app's lifetime, as under uvicorn
        assert client.get("/chat").status_code == 200
        yield client


@pytest.fixture
def wechat(seeded: Services, fakes: tuple[FakeWeChat, FakeWeChat, str, str]) -> Iterator[TestClient]:
    _, _, oa_url, mp_url = fakes
    with client_for(seeded, wechat_appid=OA_APPID, wechat_secret=SecretStr("oa-secret"), wechat_api_base=oa_url,
                    wechat_oauth_base=oa_url, miniprogram_appid=MP_APPID,
                    miniprogram_secret=SecretStr("mp-secret"), miniprogram_api_base=mp_url) as client:
        yield client


def test_a_token_says_who_and_until_when() -> None:
    key = b"k" * 32
    subject = f"oa:{OA_APPID}:oABCDEFGHIJKLMNOPQRSTUVWXYZ0"
    token = issue(key, subject, "oa", 60, now=1000)
    who = verify(key, token, now=1059)
    assert who is not None and who.subject == subject and who.verified and who.sender_id == "web:" + subject
    assert verify(key, token, now=1060) is None  # expired
    assert verify(b"x" * 32, token, now=1000) is None  # another key
    head, payload, mac = token.split(".")
    other = issue(key, f"oa:{OA_APPID}:someoneElse000000000000000", "oa", 60, now=1000).split(".")[1]
    assert verify(key, f"{head}.{other}.{mac}", now=1000) is None  # someone else's payload under this MAC
    for junk in ("", "w1", "w1..", "w2." + payload + "." + mac, token + "x", "a.b.c.d", "w1." + "A" * 700 + ".x"):
        assert verify(key, junk, now=1000) is None
    guest = verify(key, issue(key, "guest:" + "g" * 22, "guest", 60, now=0), now=1)
    assert guest is not None and not guest.verified
    for subject, source in (("guest:short", "guest"), (f"mp:{OA_APPID}:abcdefgh", "oa"), ("oa:wx1:abc", "oa")):
        with pytest.raises(ValueError):
            issue(key, subject, source, 60)
    with pytest.raises(ValueError):
        session_key("", "")
    assert session_key("", "k1:" + "A" * 43) == session_key("", "k1:" + "A" * 43) != session_key("", "k2:" + "B" * 43)


def test_a_guest_gets_the_page_with_nothing_from_elsewhere(guest: TestClient) -> None:
    client = guest
    page = client.get("/chat")
    assert page.status_code == 200
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "Path=/chat" in cookie
    # Style and script are inline, admitted by their hashes; nothing is loaded from elsewhere. Rasa is not
    # running, so the page says it is offline (no messages).
    policy = page.headers["content-security-policy"]
    script = re.findall(r"<script>(.*?)</script>", page.text, re.S)
    assert len(script) == 1 and f"'sha256-{base64.b64encode(hashlib.sha256(script[0].encode()).digest()).decode()}'" in policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text)
    assert '"messages": []' in page.text and "长辈模式" in page.text
    css = client.get("/chat/static/chat.css")  # for the notice pages
    assert css.status_code == 200 and "immutable" in css.headers["cache-control"]
    for bad in ("/chat/static/../webchat.py", "/chat/static/chat.html", "/chat/static/x.js"):
        assert client.get(bad).status_code == 404
    # Elderly mode is remembered by its cookie: the page comes back large before any script runs.
    client.cookies.set("heze_elder", "1")
    assert 'class="chat elder"' in client.get("/chat").text and 'aria-pressed="true"' in client.get("/chat").text


def test_the_page_and_its_code_stay_small() -> None:
    """HTML + CSS + JS under 100 KB: the first visit on a slow mobile network (bench/RESULTS.md times it)."""
    total = sum((STATIC / name).stat().st_size for name in ("chat.html", "chat.css", "chat.js"))
    assert total < 100 * 1024, total


def test_without_guests_a_browser_outside_wechat_is_told_where_to_go(seeded: Services) -> None:
    with client_for(seeded, webchat_guests=False) as client:
        page = client.get("/chat")
    assert page.status_code == 403 and "请在微信" in page.text and COOKIE not in page.headers.get("set-cookie", "")


def test_official_account_login_goes_through_wechat(wechat: TestClient,
                                                    fakes: tuple[FakeWeChat, FakeWeChat, str, str]) -> None:
    oa, _, oa_url, _ = fakes
    oa.signed_in = "oCitizen0000000000000000001"
    first = wechat.get("/chat", headers={"User-Agent": WECHAT_UA}, follow_redirects=False)
    assert first.status_code == 302 and first.headers["location"].startswith(f"{oa_url}/connect/oauth2/authorize?")
    assert "scope=snsapi_base" in first.headers["location"] and f"appid={OA_APPID}" in first.headers["location"]
    back = httpx.get(first.headers["location"], follow_redirects=False).headers["location"]  # WeChat's page
    assert back.startswith("http://testserver/chat/oauth?code=")
    code = re.search(r"code=([^&]+)", back).group(1)  # type: ignore[union-attr]
    landed = wechat.get(back.replace("http://testserver", ""), follow_redirects=False)
    assert landed.status_code == 303 and landed.headers["location"] == "/chat"
    who = verify(make_settings().webchat_key_text.encode(), wechat.cookies[COOKIE])
    assert who is not None and who.subject == f"oa:{OA_APPID}:{oa.signed_in}" and who.verified
    # A code works once; a state that is not this browser's is refused.
    wechat.cookies.set("heze_chat_state", "s1", path="/chat")
    assert wechat.get(f"/chat/oauth?code={code}&state=s1").status_code == 502
    assert wechat.get(f"/chat/oauth?code={oa.login_code('x' * 28)}&state=other").status_code == 400
    assert wechat.get("/chat/oauth").status_code == 400


def test_mini_program_login_exchanges_the_wx_login_code(wechat: TestClient,
                                                        fakes: tuple[FakeWeChat, FakeWeChat, str, str]) -> None:
    _, mp, _, _ = fakes
    code = mp.login_code("oMini00000000000000000000001")
    got = wechat.post("/chat/session", json={"code": code})
    assert got.status_code == 200 and got.json()["expires_in"] == 60
    ticket = got.json()["ticket"]
    assert verify(make_settings().webchat_key_text.encode(), ticket) is None  # a ticket is not a session
    assert wechat.post("/chat/session", json={"code": code}).status_code == 403  # used
    bad: object
    for bad in ({"code": ""}, {"code": 5}, {}, [], {"code": "x" * 200}):
        assert wechat.post("/chat/session", json=bad).status_code == 400
    assert wechat.post("/chat/session", content=b"{", headers={"content-type": "application/json"}).status_code == 400
    entered = wechat.get(f"/chat/enter?ticket={ticket}", follow_redirects=False)
    assert entered.status_code == 303 and entered.headers["location"] == "/chat"
    who = verify(make_settings().webchat_key_text.encode(), wechat.cookies[COOKIE])
    assert who is not None and who.subject == f"mp:{MP_APPID}:oMini00000000000000000000001" and ticket not in \
        entered.headers["set-cookie"]
    assert wechat.get(f"/chat/enter?ticket={ticket}").status_code == 401  # once
    assert wechat.get("/chat/enter?ticket=w1.bad.token").status_code == 401
    # Someone else's ticket does not replace the session of a browser already signed in.
    other = wechat.post("/chat/session", json={"code": mp.login_code("oSomeoneElse000000000000001")}).json()["ticket"]
    assert wechat.get(f"/chat/enter?ticket={other}").status_code == 409
    assert verify(make_settings().webchat_key_text.encode(), wechat.cookies[COOKIE]).subject.endswith("oMini00000000000000000000001")  # type: ignore[union-attr]


def test_the_mini_programs_web_view_is_not_sent_to_the_official_accounts_login(wechat: TestClient) -> None:
    page = wechat.get("/chat", headers={"User-Agent": WECHAT_UA + " miniProgram/wx0b0b"}, follow_redirects=False)
    assert page.status_code == 401 and "小程序" in page.text


def test_a_session_over_half_its_life_is_renewed(seeded: Services) -> None:
    settings = make_settings()
    key = settings.webchat_key_text.encode()
    old = issue(key, "guest:" + "r" * 22, "guest", 3600)  # 1 hour left of 72
    with client_for(seeded) as client:
        page = client.get("/chat", headers={"Cookie": f"{COOKIE}={old}"})
        renewed = verify(key, page.headers["set-cookie"].split(";")[0].split("=", 1)[1])
    assert renewed is not None and renewed.subject == "guest:" + "r" * 22 and renewed.expires > time.time() + 70 * 3600


def test_cookies_are_secure_behind_https(seeded: Services) -> None:
    with client_for(seeded, public_base_url="https://assistant.test") as client:
        assert "Secure" in client.get("/chat").headers["set-cookie"]


def test_the_31st_message_in_a_minute_is_refused(guest: TestClient) -> None:
    told = [guest.post("/chat/api/message", json={"message": "你好"}, headers=API).status_code for _ in range(RATE_MAX + 1)]
    assert told[:RATE_MAX] == [502] * RATE_MAX and told[-1] == 429  # (no Rasa behind this test: 502)


def test_the_mini_program_endpoint_is_off_until_configured(guest: TestClient) -> None:
    assert guest.post("/chat/session", json={"code": "abc"}).status_code == 503


def test_api_calls_need_the_page_header_and_a_session(guest: TestClient, seeded: Services) -> None:
    assert guest.post("/chat/api/message", json={"message": "你好"}).status_code == 403  # no header: a cross-site form
    with client_for(seeded) as stranger:
        assert stranger.post("/chat/api/message", json={"message": "你好"}, headers=API).status_code == 401
        stranger.cookies.set(COOKIE, "w1.forged.token")
        assert stranger.get("/chat/api/history", headers=API).status_code == 401


def test_bad_messages_get_a_clear_answer(guest: TestClient) -> None:
    for body, status in (({"message": ""}, 400), ({"message": "  "}, 400), ({"message": 5}, 400), ([], 400),
                         ({"message": "字" * 501}, 413), ({"message": "查进度", "acting_for": "1"}, 400),
                         ({"message": "查进度", "acting_for": True}, 400)):
        got = guest.post("/chat/api/message", json=body, headers=API)
        assert got.status_code == status and got.json()["error"], body
    # A guest acts for nobody.
    got = guest.post("/chat/api/message", json={"message": "查进度", "acting_for": 1}, headers=API)
    assert got.status_code == 403 and "代办" in got.json()["error"] and got.json()["code"] == "proxy_ended"
    for huge in (2 ** 31, 2 ** 63, -1, 0):
        assert guest.post("/chat/api/message", json={"message": "查进度", "acting_for": huge}, headers=API).status_code == 400


def test_when_rasa_is_down_the_citizen_is_told_and_can_send_again(guest: TestClient) -> None:
    got = guest.post("/chat/api/message", json={"message": "办身份证要带什么"}, headers=API)
    assert got.status_code == 502 and "没有发出去" in got.json()["error"]


def test_too_many_messages_are_slowed_down() -> None:
    limit = RateLimit()
    assert all(limit.allow("a", now=float(i) / 10) for i in range(RATE_MAX))
    assert not limit.allow("a", now=3.0) and limit.allow("b", now=3.0)
    assert limit.allow("a", now=61.0)  # the window moved on


def test_recordings_are_checked_before_the_gateway(guest: TestClient) -> None:
    assert guest.post("/chat/api/asr", content=b"x" * 100, headers=API).status_code == 400
    assert guest.post("/chat/api/asr", content=b"x" * (1024 * 1024 + 1), headers=API).status_code == 413
    down = guest.post("/chat/api/asr", content=b"x" * 4000, headers={**API, "Content-Type": "audio/webm"})
    assert down.status_code == 503 and "打字" in down.json()["error"]  # no gateway at that address
    for body in ({"text": ""}, {"text": "字" * 601}, {"x": 1}):
        assert guest.post("/chat/api/tts", json=body, headers=API).status_code == 400
    assert guest.post("/chat/api/tts", json={"text": "您好"}, headers=API).status_code == 503


def test_a_guest_cannot_ask_to_act_for_family(guest: TestClient) -> None:
    assert guest.get("/chat/api/family", headers=API).json() == {"verified": False, "grants": []}
    got = guest.post("/chat/api/family", json={"phone": "13800000001", "relation": "父亲"}, headers=API)
    assert got.status_code == 403
    assert guest.post("/chat/api/family/1/end", headers=API).status_code == 404
