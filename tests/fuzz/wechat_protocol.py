"""Coverage-guided fuzzing (atheris, libFuzzer) of the WeChat protocol layer: whatever a request
carries (query values, an XML or JSON body, a safe-mode envelope around anything), opening it ends
in a message or in ``ProtocolError`` (which the channel answers 4xx), never in another exception
(which would be a 500).

    .venv/bin/python -m tests.fuzz.wechat_protocol -runs=1000000 CORPUS_DIR   (make fuzz)

Each input is steered by its first byte to one of: an unsigned request; a validly signed and
encrypted one whose plaintext is the fuzz input; a validly signed plain-mode one; raw AES blocks of
fuzz bytes (the envelope's length and appid fields); the query checks alone; the text splitter;
bodies nested thousands deep. Query values are sometimes long runs of digits.
Valid signatures are computed here, so the fuzzer reaches past the signature check."""
from __future__ import annotations

import base64
import json
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from channels.wechat_protocol import (
        Envelope, ProtocolError, RequestGuard, open_message, signature, split_text, text_reply, transfer_reply,
    )

TOKEN = "fuzzToken2026"
AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
APPID = "wx49f0ab532d5d035a"
NOW = 1_800_000_000
GUARD = RequestGuard(TOKEN, clock=lambda: NOW + 0.5)  # a float, as time.time() is
ENVELOPE = Envelope(TOKEN, AES_KEY, APPID)
MODES = ("safe", "compatible", "plain")


def _aes_raw(data: bytes) -> str:
    """Fuzz bytes as ciphertext under the account's key: the envelope's own fields are then fuzzed."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = base64.b64decode(AES_KEY + "=")
    padded = data + b"\0" * (-len(data) % 16) if data else b"\0" * 16
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def _value(fdp: atheris.FuzzedDataProvider) -> str:
    """A query value: any text, a long run of one digit (a timestamp of hundreds of digits once
    overflowed a float), or a 64-bit number."""
    shape = fdp.ConsumeIntInRange(0, 2)
    if shape == 0:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64))
    if shape == 1:
        return str(fdp.ConsumeIntInRange(0, 9)) * fdp.ConsumeIntInRange(0, 5000)
    return str(fdp.ConsumeInt(8))


NESTINGS = [(b'{"a":', b"}"), (b"[", b"]"), (b"<a>", b"</a>"), (b'{"Encrypt":', b"}")]


def _nested(fdp: atheris.FuzzedDataProvider) -> bytes:
    """An opening, repeated up to thousands of times, a core, and a closing as often: JSON or XML
    nested deeper than any parser's recursion (once a RecursionError). The openings are JSON's and
    XML's own, or fuzz bytes."""
    depth = fdp.ConsumeIntInRange(0, 4000)
    if fdp.ConsumeBool():
        opening, closing = fdp.PickValueInList(NESTINGS)
    else:
        opening, closing = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8)), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))
    core = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16))
    prefix = b"<xml>" if opening.startswith(b"<") and fdp.ConsumeBool() else b""
    return prefix + opening * depth + core + closing * depth + (b"</xml>" if prefix else b"")


def _stamp(fdp: atheris.FuzzedDataProvider) -> tuple[str, str]:
    """A timestamp (near now, or any value: the signature is computed over whatever it is) and a
    nonce as WeChat makes them. Taken before the body, which consumes the rest of the input."""
    ts = str(NOW + fdp.ConsumeIntInRange(-400, 400)) if fdp.ConsumeBool() else _value(fdp)
    return ts, fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8)).hex() or "n"


def _signed(stamp: tuple[str, str], encrypt: str = "") -> dict[str, str]:
    ts, nonce = stamp
    return {"timestamp": ts, "nonce": nonce, "encrypt_type": "aes" if encrypt else "",
            "signature": signature(TOKEN, ts, nonce), "msg_signature": signature(TOKEN, ts, nonce, encrypt)}


def _wrap(as_json: bool, encrypt: str) -> bytes:
    if as_json:
        return json.dumps({"ToUserName": "gh_mini", "Encrypt": encrypt}).encode()
    return f"<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>".encode()


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.ConsumeIntInRange(0, 6)
    mode = MODES[fdp.ConsumeIntInRange(0, 2)]
    try:
        if kind == 0:  # nothing signed: query values and body as they come
            args = {name: _value(fdp) for name in ("timestamp", "nonce", "signature", "msg_signature", "encrypt_type")}
            open_message(args, fdp.ConsumeBytes(fdp.remaining_bytes()), mode, GUARD, ENVELOPE)
        elif kind == 1:  # signed and encrypted: the plaintext is the fuzz input
            stamp, as_json = _stamp(fdp), fdp.ConsumeBool()
            inner = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
            encrypt = ENVELOPE.encrypt_reply(inner, "n", "1").split("<![CDATA[", 1)[1].split("]]>", 1)[0]
            open_message(_signed(stamp, encrypt), _wrap(as_json, encrypt), "safe", GUARD, ENVELOPE)
        elif kind == 2:  # signed, plain mode: the body is the fuzz input
            stamp = _stamp(fdp)
            open_message(_signed(stamp), fdp.ConsumeBytes(fdp.remaining_bytes()), "plain", GUARD, ENVELOPE)
        elif kind == 3:  # raw AES blocks: the envelope's random, length, message and appid fields
            stamp, as_json = _stamp(fdp), fdp.ConsumeBool()
            encrypt = _aes_raw(fdp.ConsumeBytes(fdp.remaining_bytes()))
            open_message(_signed(stamp, encrypt), _wrap(as_json, encrypt), "safe", GUARD, ENVELOPE)
        elif kind == 4:  # the query checks alone
            GUARD.verify(_value(fdp), _value(fdp), _value(fdp))
        elif kind == 6:  # deep nesting, unsigned and (plain mode) signed
            args = _signed(_stamp(fdp)) if fdp.ConsumeBool() else {"timestamp": _value(fdp), "nonce": _value(fdp)}
            open_message(args, _nested(fdp), MODES[fdp.ConsumeIntInRange(1, 2)], GUARD, ENVELOPE)
        else:  # replies: any text is split under the byte limit and survives the XML round trip
            text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
            limit = 64
            pieces = split_text(text, limit)
            assert all(len(p.encode("utf-8")) <= limit for p in pieces[:-1] or pieces), "a piece over the limit"
            transfer_reply("o1", "gh", text[:32])
            text_reply("o1", "gh", text)
    except ProtocolError:
        pass


def seeds(directory: Path) -> None:
    """A few well-formed messages, so the fuzzer starts from what WeChat really sends."""
    message = ("<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName><![CDATA[oAbc-1_x]]></FromUserName>"
               "<CreateTime>1800000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
               "<Content><![CDATA[查工单]]></Content><MsgId>6969</MsgId></xml>")
    push = json.dumps({"ToUserName": "gh", "FromUserName": "m1", "CreateTime": 1, "MsgType": "text",
                       "Content": "你好", "MsgId": 1})
    directory.mkdir(parents=True, exist_ok=True)
    for n, (kind, body) in enumerate([(0, message), (1, message), (1, push), (2, message), (2, push), (5, "第一条。\n第二条")]):
        (directory / f"seed-{n}").write_bytes(bytes([kind * 43, 0]) + body.encode("utf-8"))


def main() -> None:
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpus:
        seeds(Path(corpus[0]))
    else:
        sys.argv.append(tempfile.mkdtemp(prefix="wechat-fuzz-"))
        seeds(Path(sys.argv[-1]))
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
