"""The WeChat protocol layer the channel stands on: known-answer vectors, round trips, bad input."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from channels.wechat_protocol import (
    MAX_BODY_BYTES, Envelope, NonceCache, ProtocolError, RequestGuard, check_message, parse_body, parse_json,
    parse_xml, pseudonym, signature, split_text, text_reply, transfer_reply,
)

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
        ((good, "yesterday", "n6"), "not a unix time"),
        ((good, "1" * 400, "n6"), "not a unix time"),  # once an OverflowError and a 500
        ((good, "-1", "n6"), "not a unix time"),
        ((good, str(now), "n" * 65), "malformed nonce"),
        ((good, str(now), "n 1"), "malformed nonce"),
        (("z" * 40, str(now), "n6"), "malformed nonce or signature"),
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


def test_a_verified_request_is_fresh_once() -> None:
    now = 1_800_000_000
    guard = RequestGuard(TOKEN, clock=lambda: now)
    sig = signature(TOKEN, str(now), "n1")
    guard.verify(sig, str(now), "n1")
    guard.verify(sig, str(now), "n1")  # verify alone does not judge the nonce
    assert guard.fresh("n1") and not guard.fresh("n1")


def test_bodies_in_another_encoding_are_refused_before_the_dtd_test() -> None:
    internal = '<!DOCTYPE xml [<!ENTITY x "expanded">]><xml><Content>&x;</Content></xml>'
    declared = '<?xml version="1.0" encoding="ISO-8859-1"?><xml><Content>x</Content></xml>'
    for body in (internal.encode("utf-16"), internal.encode("utf-16-le"), internal.encode("utf-32"),
                 "<xml><Content>é</Content></xml>".encode("latin-1"), declared.encode("latin-1"),
                 b"<xml><Content>a\x00b</Content></xml>"):
        with pytest.raises(ProtocolError) as err:
            parse_body(body)
        assert err.value.status == 400
    assert parse_xml('<?xml version="1.0" encoding="UTF-8"?><xml><Content>好</Content></xml>'.encode()) == {
        "Content": "好"}
    assert parse_xml(b"\xef\xbb\xbf<xml><Content>x</Content></xml>") == {"Content": "x"}  # a UTF-8 BOM is UTF-8


def test_json_bad_input() -> None:
    deep = b'{"a":' * 1200 + b"1" + b"}" * 1200  # once a RecursionError and a 500
    for body, status in ((deep, 400), (b'{"a": [[[[[1]]]]]}', 400), (b'{"a": NaN}', 400), (b"[1, 2]", 400),
                         (b'{"a": 1', 400), (b'{"a": "' + b"x" * MAX_BODY_BYTES + b'"}', 413),
                         (b'{"Encrypt": "\\ud800"}', 400),  # once a UnicodeEncodeError (500) at the signature
                         (b'{"' + b'\\"' * 30_000, 400)):  # an unterminated string: one pass, not quadratic
        with pytest.raises(ProtocolError) as err:
            parse_json(body)
        assert err.value.status == status
    msg = parse_json(b'{"MsgId": 24536887512345678901, "Content": "\\u4f60\\u597d", "Brace": "{{{{{{", "N": null}')
    assert msg == {"MsgId": "24536887512345678901", "Content": "你好", "Brace": "{{{{{{", "N": ""}


def test_identifying_fields_are_bounded() -> None:
    good = {"FromUserName": "oAbC-123_x", "ToUserName": "gh_abc", "MsgId": "123", "CreateTime": "1800000000",
            "MsgType": "text", "Content": "任何内容 <>&/"}
    assert check_message(good) == good
    for field, value in (("FromUserName", ""), ("FromUserName", "o/1"), ("FromUserName", "o" * 65),
                         ("MsgId", "1e5"), ("MsgId", "9" * 33), ("CreateTime", "1" * 400), ("MsgType", "te xt")):
        with pytest.raises(ProtocolError) as err:
            check_message({**good, field: value})
        assert err.value.status == 400


def test_a_transfer_reply_in_xml_and_json() -> None:
    xml = parse_xml(transfer_reply("o1", "gh_heze", "kf2001@heze", create_time=1).encode())
    assert xml["MsgType"] == "transfer_customer_service" and xml["ToUserName"] == "o1"
    assert "<KfAccount><![CDATA[kf2001@heze]]></KfAccount>" in transfer_reply("o1", "gh", "kf2001@heze")
    assert "TransInfo" not in transfer_reply("o1", "gh")
    as_json = parse_json(transfer_reply("m1", "gh_mini", as_json=True, create_time=7).encode())
    assert as_json == {"ToUserName": "m1", "FromUserName": "gh_mini", "CreateTime": "7",
                       "MsgType": "transfer_customer_service"}
    envelope = Envelope(TOKEN, AES_KEY, APPID)
    sealed = parse_json(envelope.encrypt_json_reply('{"MsgType": "transfer_customer_service"}', "n1", "18").encode())
    assert sealed["MsgSignature"] == signature(TOKEN, "18", "n1", sealed["Encrypt"])
    assert "transfer_customer_service" in envelope.decrypt(sealed["Encrypt"])


def test_a_pseudonym_hides_the_openid_but_tells_citizens_apart() -> None:
    assert pseudonym("oAbC123") == pseudonym("oAbC123") != pseudonym("oAbC124")
    assert "oAbC123" not in pseudonym("oAbC123") and len(pseudonym("oAbC123")) == 13
