"""The WeChat protocol layer the channel stands on: known-answer vectors, round trips, bad input."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from channels.wechat_protocol import (
    MAX_BODY_BYTES, Envelope, NonceCache, ProtocolError, RequestGuard, parse_xml, signature, split_text, text_reply,
)
from channels.wechat_store import Claim, RedisClaims, SqliteClaims, message_key

# WeChat's published sample values (the enterprise-account envelope is the official account's
# safe mode with the corp id in place of the appid), as wechatpy's own tests use them.
TOKEN = "123456"
AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
APPID = "wx49f0ab532d5d035a"
SAMPLE_ENCRYPT = (
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dG"
    "ymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBi"
    "T+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SN"
    "dshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eB"
    "dCRxthuL0="
)
SAMPLE_ECHO = "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q=="


def test_known_answer_signatures() -> None:
    assert signature(TOKEN, "1411525903", "461056294", SAMPLE_ENCRYPT) == "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"
    assert signature(TOKEN, "1411443780", "437374425", SAMPLE_ECHO) == "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96"
    # Plain mode: no ciphertext in the signature; the order of the parts does not matter.
    assert signature("tok", "2", "1") == signature("tok", "1", "2")


def test_known_answer_decryption() -> None:
    msg = parse_xml(Envelope(TOKEN, AES_KEY, APPID).decrypt(SAMPLE_ENCRYPT).encode())
    assert (msg["Content"], msg["FromUserName"], msg["MsgType"]) == ("test", "messense", "text")


def test_reply_round_trip_through_the_envelope() -> None:
    envelope = Envelope(TOKEN, AES_KEY, APPID)
    reply = text_reply("openid-1", "gh_heze", "您好，请问办什么事？]]>还有")
    wrapped = parse_xml(envelope.encrypt_reply(reply, "nonce-1", "1800000000").encode())
    assert wrapped["MsgSignature"] == signature(TOKEN, "1800000000", "nonce-1", wrapped["Encrypt"])
    assert parse_xml(envelope.decrypt(wrapped["Encrypt"]).encode())["Content"] == "您好，请问办什么事？]]>还有"


def test_wrong_appid_and_garbage_ciphertext_are_refused() -> None:
    with pytest.raises(ProtocolError) as err:
        Envelope(TOKEN, AES_KEY, "wx0000000000000000").decrypt(SAMPLE_ENCRYPT)
    assert err.value.status == 403 and "appid" in err.value.reason
    for junk in ("not base64!", "AAAA", SAMPLE_ENCRYPT[:-8] + "AAAAAAA="):
        with pytest.raises(ProtocolError) as err:
            Envelope(TOKEN, AES_KEY, APPID).decrypt(junk)
        assert err.value.status in (400, 403)
    with pytest.raises(ValueError):
        Envelope(TOKEN, "short", APPID)


def test_guard_refuses_forgery_stale_timestamps_and_replays() -> None:
    now = 1_800_000_000
    guard = RequestGuard(TOKEN, clock=lambda: now)
    good = signature(TOKEN, str(now), "n1")
    guard.check(good, str(now), "n1")
    cases = [
        ((signature(TOKEN, str(now), "n2")[:-1] + "0", str(now), "n2"), "bad signature"),
        ((signature(TOKEN, str(now - 301), "n3"), str(now - 301), "n3"), "window"),
        ((signature(TOKEN, str(now + 301), "n4"), str(now + 301), "n4"), "window"),
        ((good, str(now), "n1"), "replayed"),
        (("", str(now), "n5"), "missing"),
        ((good, "yesterday", "n6"), "not a number"),
    ]
    for args, reason in cases:
        with pytest.raises(ProtocolError) as err:
            guard.check(*args)
        assert reason in err.value.reason and err.value.status in (400, 403)
    # A forged request does not use up its nonce: the genuine one still passes.
    with pytest.raises(ProtocolError):
        guard.check("0" * 40, str(now), "n7")
    guard.check(signature(TOKEN, str(now), "n7"), str(now), "n7")


def test_nonces_are_forgotten_after_the_window() -> None:
    cache = NonceCache(window_s=300)
    assert cache.first_time("n", 1000) and not cache.first_time("n", 1100)
    assert cache.first_time("other", 2000) and cache.first_time("n", 2000)


def test_xml_bad_input(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET", encoding="utf-8")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file://{secret}">]>'
           "<xml><Content>&x;</Content></xml>").encode()
    laughs = b'<!DOCTYPE xml [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><xml><Content>&b;</Content></xml>'
    for body, status in ((xxe, 400), (laughs, 400), (b"<xml><Content>unclosed", 400), (b"<root/>", 400),
                         (b"<xml>" + b"a" * MAX_BODY_BYTES + b"</xml>", 413), (b"", 400)):
        with pytest.raises(ProtocolError) as err:
            parse_xml(body)
        assert err.value.status == status
        assert "TOP-SECRET" not in err.value.reason
    assert parse_xml(b"<xml><MsgId>1</MsgId><Content><![CDATA[hi]]></Content></xml>") == {"MsgId": "1", "Content": "hi"}


def test_long_text_is_split_under_the_byte_limit() -> None:
    text = "\n".join(f"第{i}条：办理身份证需要带居民户口簿，未满十六周岁的由监护人陪同。" for i in range(120))
    pieces = split_text(text)
    assert len(pieces) > 1 and all(len(p.encode("utf-8")) <= 2000 for p in pieces)
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")
    assert split_text("短") == ["短"]


@pytest.fixture(params=["sqlite", "redis"])
def claims(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return SqliteClaims(str(tmp_path / "claims.db"))
    store = RedisClaims("redis://127.0.0.1:6379/0", prefix=f"heze-test-{uuid.uuid4().hex}:")
    try:
        store.claim("ping")
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Redis is needed for this test (127.0.0.1:6379): {exc}")
    return store


def test_each_message_is_claimed_exactly_once(claims) -> None:  # type: ignore[no-untyped-def]
    key = message_key({"MsgId": "6969", "FromUserName": "o1"})
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: claims.claim(key), range(32)))
    assert sum(r.state == "new" for r in results) == 1 and all(r.state in ("new", "pending") for r in results)
    claims.finish(key, ["您好", "第二段"])
    assert claims.claim(key) == Claim("done", ["您好", "第二段"])
    other = message_key({"FromUserName": "o1", "CreateTime": "1800000000", "Event": "subscribe"})
    assert other.startswith("evt:o1:") and claims.claim(other).state == "new"
    claims.release(other)  # a failed turn gives its claim back: the next delivery may try again
    assert claims.claim(other).state == "new"


def test_numbered_choices_are_kept_per_citizen(claims) -> None:  # type: ignore[no-untyped-def]
    assert claims.choices("o1") == []
    claims.set_choices("o1", ["/check_progress", "/pay_bill"])
    claims.set_choices("o2", ["/greet"])
    assert claims.choices("o1") == ["/check_progress", "/pay_bill"] and claims.choices("o2") == ["/greet"]


def test_failed_turns_are_kept_until_answered(claims) -> None:  # type: ignore[no-untyped-def]
    assert claims.failed() == []
    claims.keep_failed("msg:1", {"sender": "o1", "text": "转人工", "metadata": {"channel": "wechat"}})
    claims.keep_failed("msg:2", {"sender": "o2", "text": "查工单", "metadata": {}})
    assert [(k, t["text"]) for k, t in claims.failed()] == [("msg:1", "转人工"), ("msg:2", "查工单")]
    claims.drop_failed("msg:1")
    assert [k for k, _ in claims.failed()] == ["msg:2"]
