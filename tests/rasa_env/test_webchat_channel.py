"""channels/webchat.py's checks inside Rasa's environment: who may speak (the signed session, never the
body), what metadata a page may send, and what a reloaded page shows of the conversation. The HTTP
round trip through the real Rasa server is tests/e2e/test_webchat.py."""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any


def test_the_sender_comes_from_the_signed_session_only() -> None:
    from channels.webchat import WebChatInput
    from textnorm.webtoken import issue

    channel = WebChatInput.from_credentials({"session_key": "k" * 32})
    token = issue(b"k" * 32, "oa:wx0123456789abcdef:oCitizen000000000000000001", "oa", 60)

    def request(header: str) -> Any:
        return SimpleNamespace(headers={"authorization": header})

    who = channel.session(request(f"Bearer {token}"))
    assert who is not None and who.sender_id == "web:oa:wx0123456789abcdef:oCitizen000000000000000001"
    assert channel.session(request(token)) is None  # not a bearer header
    assert channel.session(request("Bearer " + token[:-2])) is None
    assert WebChatInput.from_credentials({"session_key": "other-key"}).session(request(f"Bearer {token}")) is None
    expired = issue(b"k" * 32, "guest:" + "g" * 22, "guest", 1, now=time.time() - 10)
    assert channel.session(request(f"Bearer {expired}")) is None

def test_without_a_key_the_channel_derives_the_services_apis_or_is_off(monkeypatch: Any) -> None:
    from channels.webchat import WebChatInput
    from textnorm.webtoken import session_key

    monkeypatch.setenv("DATA_KEYS", "k1:" + "A" * 43)
    assert WebChatInput.from_credentials({"session_key": ""}).key == session_key("", "k1:" + "A" * 43).encode()
    monkeypatch.delenv("DATA_KEYS")
    assert WebChatInput.from_credentials({}).key == b""  # nothing to sign with: the webhook answers 503


def test_only_known_metadata_passes() -> None:
    from channels.webchat import _metadata

    assert _metadata(None) == {}
    assert _metadata({"shown": "查办件进度", "acting_for": 7}) == {"shown": "查办件进度", "acting_for": 7}
    for bad in ([], "x", {"caller": "13800000001"}, {"channel": "phone"}, {"shown": ""}, {"shown": "字" * 41},
                {"acting_for": "7"}, {"acting_for": True}, {"acting_for": 0}, {"acting_for": 2 ** 31}):
        assert _metadata(bad) is None, bad


def test_history_is_the_latest_session_with_tapped_buttons_by_their_title() -> None:
    from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, UserUttered

    from channels.webchat import HISTORY, history_of

    buttons = [{"title": "查办件进度", "payload": "/check_progress"}]
    events = [
        SessionStarted(), UserUttered("旧的会话"), BotUttered("旧的回答"),
        SessionStarted(), ActionExecuted("action_listen"),
        UserUttered("/greet"), BotUttered("您好", data={"buttons": buttons}),
        UserUttered("/check_progress", metadata={"shown": "查办件进度"}), BotUttered("请说受理编号"),
        UserUttered("20261101000001"), BotUttered(None),
    ]
    assert history_of(events) == [
        {"from": "bot", "text": "您好", "buttons": buttons},
        {"from": "user", "text": "查办件进度"},
        {"from": "bot", "text": "请说受理编号"},
        {"from": "user", "text": "20261101000001"},
    ]
    many = [SessionStarted()] + [UserUttered(f"第{i}句") for i in range(HISTORY + 5)]
    said = history_of(many)
    assert len(said) == HISTORY and said[-1]["text"] == f"第{HISTORY + 4}句"
