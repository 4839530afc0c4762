"""Asterisk AudioSocket: a TCP server, one connection per call.

Frames (Asterisk ``res_audiosocket``; docs.asterisk.org "AudioSocket"): 1 byte type, 2 bytes
payload length (big-endian), payload. Types: 0x00 hang-up, 0x01 call UUID (16 bytes, first),
0x03 DTMF digit (1 ASCII byte), 0x10 audio (signed linear 16-bit LE, 8 kHz mono, 320 bytes per
20 ms), 0xff error (1 byte code). Audio goes back in 0x10 frames paced at 20 ms; the gateway
ends a call with a 0x00 frame and closing the connection, and the dialplan then asks
``GET /calls/{uuid}/next``.

A malformed frame ends that one connection; no other call sees it."""
from __future__ import annotations

import asyncio
import logging
import struct
import uuid
from dataclasses import dataclass

from voice.audio import PHONE_RATE
from voice.call import PROMPTS, Call, Gateway

logger = logging.getLogger(__name__)

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_AUDIO = 0x10
KIND_ERROR = 0xFF
KNOWN_KINDS = {KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_AUDIO, KIND_ERROR}
MAX_AUDIO_PAYLOAD = 3200  # 200 ms at 8 kHz; Asterisk sends 320
DTMF_KEYS = set("0123456789*#ABCD")
FIRST_FRAME_TIMEOUT_S = 5.0
IDLE_TIMEOUT_S = 30.0  # Asterisk sends audio every 20 ms for as long as a call lasts


class ProtocolError(ValueError):
    """The peer broke the AudioSocket protocol; the call ends."""


@dataclass(frozen=True)
class Frame:
    kind: int
    payload: bytes


def encode(kind: int, payload: bytes = b"") -> bytes:
    if len(payload) > 0xFFFF:
        raise ValueError("AudioSocket payload over 65535 bytes")
    return struct.pack(">BH", kind, len(payload)) + payload


def check(frame: Frame) -> None:
    """Raise ProtocolError for a frame that is not what the protocol allows."""
    k, n = frame.kind, len(frame.payload)
    if k not in KNOWN_KINDS:
        raise ProtocolError(f"unknown frame type 0x{k:02x}")
    if k == KIND_UUID and n != 16:
        raise ProtocolError(f"UUID frame of {n} bytes (16 expected)")
    if k == KIND_DTMF and (n != 1 or chr(frame.payload[0]) not in DTMF_KEYS):
        raise ProtocolError("DTMF frame is not one key")
    if k == KIND_AUDIO and (n == 0 or n % 2 or n > MAX_AUDIO_PAYLOAD):
        raise ProtocolError(f"audio frame of {n} bytes")


async def read_frame(reader: asyncio.StreamReader, timeout: float) -> Frame:
    try:
        header = await asyncio.wait_for(reader.readexactly(3), timeout)
        kind, length = struct.unpack(">BH", header)
        payload = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("connection closed inside a frame" if exc.partial else "connection closed") from exc
    except asyncio.TimeoutError as exc:
        raise ProtocolError("no frame within the timeout") from exc
    frame = Frame(kind, payload)
    check(frame)
    return frame


class AudioSocketTransport:
    in_rate = PHONE_RATE
    out_rate = PHONE_RATE

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.closed = False

    async def send_audio(self, frame: bytes) -> None:
        if self.closed:
            return
        self.writer.write(encode(KIND_AUDIO, frame))
        try:
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            self.closed = True

    async def stop_playback(self) -> None:
        """Nothing to tell Asterisk: audio it has not received is simply not sent."""

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.writer.write(encode(KIND_HANGUP))
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            pass
        self.writer.close()


async def handle_connection(gw: Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One AudioSocket connection, start to end; never raises."""
    transport = AudioSocketTransport(writer)
    call_id = "(no UUID)"
    try:
        first = await read_frame(reader, FIRST_FRAME_TIMEOUT_S)
        if first.kind != KIND_UUID:
            raise ProtocolError("the first frame must be the call UUID")
        call_id = str(uuid.UUID(bytes=first.payload))
        refused = gw.refusal(call_id)
        if refused == "busy":
            await _say_and_close(gw, transport, PROMPTS["busy"])
            return
        if refused:
            raise ProtocolError("this call UUID is already connected")
        call = Call(gw, call_id, transport, "audiosocket", gw.caller_for(call_id))
        await gw.attend(call, _read_loop(reader, call))
    except ProtocolError as exc:
        logger.warning("AudioSocket call %s ended: %s", call_id, exc)
    except Exception:  # noqa: BLE001 - one call's failure stays with that call
        logger.exception("AudioSocket connection failed")
    finally:
        await transport.close()


async def _read_loop(reader: asyncio.StreamReader, call: Call) -> None:
    while True:
        frame = await read_frame(reader, IDLE_TIMEOUT_S)
        if frame.kind == KIND_AUDIO:
            call.audio(frame.payload)
        elif frame.kind == KIND_DTMF:
            call.dtmf(chr(frame.payload[0]))
        elif frame.kind == KIND_HANGUP:
            call.hangup()
            return
        elif frame.kind == KIND_ERROR:
            code = frame.payload[0] if frame.payload else -1
            logger.warning("call %s: Asterisk reported error %s", call.call_id, code)
            call.hangup()
            return
        elif frame.kind == KIND_UUID:
            raise ProtocolError("a second UUID frame")


async def _say_and_close(gw: Gateway, transport: AudioSocketTransport, text: str) -> None:
    pcm = await gw.speaker.render(text, gw.settings.voice_tts_rate)
    loop = asyncio.get_running_loop()
    step, t = 0.02, loop.time()
    for i in range(0, len(pcm), 320):
        await transport.send_audio(pcm[i:i + 320].ljust(320, b"\0"))
        t += step
        await asyncio.sleep(max(0.0, t - loop.time()))


async def serve(gw: Gateway) -> asyncio.AbstractServer:
    s = gw.settings

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handle_connection(gw, reader, writer)

    return await asyncio.start_server(on_connect, s.voice_audiosocket_host, s.voice_audiosocket_port)
