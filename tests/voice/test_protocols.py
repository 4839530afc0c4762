"""AudioSocket frames, WebSocket metadata and DTMF text frames, and how choices are spoken."""
from __future__ import annotations

import asyncio
import struct
import uuid

import pytest

from voice.audiosocket import (AUDIO_RATES, KIND_AUDIO, KIND_DTMF, KIND_HANGUP, KIND_UUID, Closed, Frame,
                               ProtocolError, check, encode, read_frame)
from voice.call import normalise_caller, valid_call_id
from voice.wording import is_yes_no, spoken_choices
from voice.media_ws import MediaError, dtmf_of, parse_start


def reader_of(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    r.feed_eof()
    return r


def test_frame_layout_is_type_length_payload() -> None:
    # docs.asterisk.org AudioSocket: 1 byte type, 2 bytes big-endian length, payload.
    assert encode(KIND_AUDIO, b"\x01\x02") == b"\x10\x00\x02\x01\x02"
    assert encode(KIND_HANGUP) == b"\x00\x00\x00"
    u = uuid.UUID("0f0e0d0c-0b0a-0908-0706-050403020100")
    assert encode(KIND_UUID, u.bytes)[:3] == b"\x01\x00\x10"


async def test_frames_are_read_back() -> None:
    u = uuid.uuid4()
    data = encode(KIND_UUID, u.bytes) + encode(KIND_DTMF, b"5") + encode(KIND_AUDIO, bytes(320)) + encode(KIND_HANGUP)
    r = reader_of(data)
    frames = [await read_frame(r, 1) for _ in range(4)]
    assert [f.kind for f in frames] == [KIND_UUID, KIND_DTMF, KIND_AUDIO, KIND_HANGUP]
    assert uuid.UUID(bytes=frames[0].payload) == u and frames[1].payload == b"5" and len(frames[2].payload) == 320


@pytest.mark.parametrize("frame, why", [
    (Frame(KIND_UUID, bytes(15)), "UUID frame"),
    (Frame(KIND_DTMF, b"55"), "DTMF"),
    (Frame(KIND_DTMF, b"x"), "DTMF"),
    (Frame(KIND_AUDIO, bytes(321)), "audio frame"),
    (Frame(KIND_AUDIO, b""), "audio frame"),
    (Frame(KIND_AUDIO, bytes(64000)), "audio frame"),
    (Frame(0x12, bytes(6402)), "audio frame"),
])
def test_malformed_frames_are_refused(frame: Frame, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        check(frame)


def test_other_rates_and_unknown_kinds_are_not_errors() -> None:
    # Dial(AudioSocket/.../c(slin16)) sends kind 0x12 with 640-byte frames (res_audiosocket.h: 0x11-0x18).
    assert AUDIO_RATES[0x12] == 16000 and AUDIO_RATES[0x16] == 48000
    check(Frame(0x12, bytes(640)))
    check(Frame(0x42, b"x"))  # skipped and counted by the call, not fatal


async def test_truncated_frames_are_refused() -> None:
    with pytest.raises(ProtocolError, match="inside a frame"):
        await read_frame(reader_of(b"\x10\x01"), 1)  # header cut short
    with pytest.raises(ProtocolError, match="inside a frame"):
        await read_frame(reader_of(struct.pack(">BH", KIND_AUDIO, 320) + bytes(100)), 1)
    with pytest.raises(Closed):  # a bare close between frames: Asterisk's caller hung up
        await read_frame(reader_of(b""), 1)


async def test_only_the_first_frame_has_a_timeout() -> None:
    r = asyncio.StreamReader()
    with pytest.raises(ProtocolError, match="timeout"):
        await read_frame(r, 0.05)
    r.feed_data(encode(KIND_DTMF, b"1"))
    assert (await read_frame(r)).payload == b"1"  # no timeout: a silent caller sends nothing for as long as it likes


def test_scores_keep_their_own_digit_as_key() -> None:
    said, keys = spoken_choices([{"title": "5分很满意", "payload": "/rate{\"rating\": \"5\"}"},
                                 {"title": "1分不满意", "payload": "/rate{\"rating\": \"1\"}"}])
    assert keys == {"5": "/rate{\"rating\": \"5\"}", "1": "/rate{\"rating\": \"1\"}"}
    assert "按5" in said[0]


def test_yes_no_choices_are_recognised() -> None:
    assert is_yes_no({"1": "/affirm", "2": "/deny"})
    assert not is_yes_no({"1": "/check_progress", "*": "/request_human"})
    assert not is_yes_no({})


def test_media_metadata() -> None:
    assert parse_start('{"callSid": "ABC-1", "from": "+86 138-0000-1234", "sampleRate": 16000}') == \
        ("abc-1", "13800001234", 16000)
    call_id, caller, rate = parse_start("{}")
    assert valid_call_id(call_id) and caller is None and rate == 8000
    for bad, why in (("not json", "not JSON"), ("[1]", "object"), ('{"sampleRate": 44100}', "sample rate"),
                     ('{"uuid": "../../etc"}', "not allowed")):
        with pytest.raises(MediaError, match=why):
            parse_start(bad)


def test_dtmf_text_frames() -> None:
    assert dtmf_of('{"event": "dtmf", "digit": "5"}') == "5"
    assert dtmf_of('{"type": "dtmf", "dtmf": {"digit": "#"}}') == "#"
    assert dtmf_of('{"event": "dtmf", "digit": "55"}') is None
    assert dtmf_of('{"event": "mark"}') is None
    assert dtmf_of("garbage") is None


def test_caller_numbers_are_normalised() -> None:
    assert normalise_caller("+86 138-0000-0008") == "13800000008"
    assert normalise_caller("013800000008") == "13800000008"
    assert normalise_caller("0530-5551234") == "05305551234"  # a Heze landline keeps its area code
    assert normalise_caller("anonymous") is None
