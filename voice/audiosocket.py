"""Asterisk AudioSocket: a TCP server, one connection per call.

Frames (Asterisk ``res_audiosocket``, docs.asterisk.org "AudioSocket"; the rates from
``include/asterisk/res_audiosocket.h``): 1 byte kind, 2 bytes payload length (big-endian),
payload. Kinds: 0x00 hang-up, 0x01 call UUID (16 bytes, first), 0x03 DTMF digit (1 ASCII byte),
0x10 audio (signed linear 16-bit LE mono, 8 kHz, 320 bytes per 20 ms), 0x11-0x18 the same at 12,
16, 24, 32, 44.1, 48, 96 and 192 kHz (``Dial(AudioSocket/host:port/uuid/c(slin16))`` sends 0x12,
640-byte frames), 0xff error (1 byte code).

What a real Asterisk 20 does (shared/pbx/README.md): no frames at all while a Local-channel or
silence-suppressed caller is quiet; a caller's hang-up is a bare TCP close, never 0x00; and
``AudioSocket()`` hangs up after 2 s without a frame in either direction, so the gateway sends
silence frames whenever it is not speaking (voice/speaking.py). So there is no idle timeout here:
the call's silence policy ends a silent call. Audio goes back as 0x10 frames paced at 20 ms (the
channel transcodes); the gateway ends a call with a 0x00 frame, and the dialplan then asks
``GET /calls/{uuid}/next``.

Frames of a kind this module does not know are skipped and counted (a newer Asterisk may add
kinds); a malformed length ends that one connection, and no other call sees it."""
from __future__ import annotations

import asyncio
import logging
import struct
import uuid
from dataclasses import dataclass

from voice.audio import PHONE_RATE, frame_bytes
from voice.call import Call, Gateway
from voice.wording import PROMPTS, sentences

logger = logging.getLogger(__name__)

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_AUDIO = 0x10
KIND_ERROR = 0xFF
AUDIO_RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000, 0x15: 44100, 0x16: 48000,
               0x17: 96000, 0x18: 192000}
MAX_AUDIO_MS = 200  # Asterisk sends 20 ms
DTMF_KEYS = set("0123456789*#ABCD")
FIRST_FRAME_TIMEOUT_S = 5.0


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


class Closed(Exception):
    """The peer closed the connection between frames: for Asterisk, the caller hung up."""


def check(frame: Frame) -> None:
    """Raise ProtocolError for a frame of a known kind whose payload the protocol does not allow."""
    k, n = frame.kind, len(frame.payload)
    if k == KIND_UUID and n != 16:
        raise ProtocolError(f"UUID frame of {n} bytes (16 expected)")
    if k == KIND_DTMF and (n != 1 or chr(frame.payload[0]) not in DTMF_KEYS):
        raise ProtocolError("DTMF frame is not one key")
    if k in AUDIO_RATES and (n == 0 or n % 2 or n > AUDIO_RATES[k] * 2 * MAX_AUDIO_MS // 1000):
        raise ProtocolError(f"audio frame of {n} bytes")


async def read_frame(reader: asyncio.StreamReader, timeout: float | None = None) -> Frame:
    """The next frame; Closed at a clean end of the stream, ProtocolError for a broken one."""
    try:
        header = await asyncio.wait_for(reader.readexactly(3), timeout)
        kind, length = struct.unpack(">BH", header)
        payload = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("connection closed inside a frame") from exc
        raise Closed() from exc
    except asyncio.TimeoutError as exc:  # (an OSError since 3.11: caught first)
        raise ProtocolError("no frame within the timeout") from exc
    except (ConnectionError, OSError) as exc:
        raise Closed() from exc
    frame = Frame(kind, payload)
    check(frame)
    return frame


class AudioSocketTransport:
    in_rate = PHONE_RATE
    out_rate = PHONE_RATE
    keepalive = True  # Asterisk hangs up after 2 s without a frame in either direction

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.closed = False

    async def send_audio(self, frame: bytes) -> None:
        if self.closed:
            return
        try:
            self.writer.write(encode(KIND_AUDIO, frame))
            await self.writer.drain()
        except (ConnectionError, RuntimeError, OSError):
            self.closed = True  # the caller has gone; the reader sees the close

    async def stop_playback(self) -> None:
        """Nothing to tell Asterisk: audio it has not received is simply not sent."""

    async def close(self, next_step: str | None = None) -> None:
        """0x00 and close: Asterisk's AudioSocket() returns and the dialplan asks /calls/{uuid}/next."""
        if self.closed:
            return
        self.closed = True
        try:
            self.writer.write(encode(KIND_HANGUP))
            await self.writer.drain()
        except (ConnectionError, RuntimeError, OSError):
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
        refused = await gw.admit(call_id)
        if refused == "busy":
            await _say_and_close(gw, transport, PROMPTS["busy"])
            return
        if refused:
            raise ProtocolError(f"call UUID refused ({refused})")
        call = Call(gw, call_id, transport, "audiosocket", gw.caller_for(call_id))
        await gw.attend(call, _read_loop(reader, call))
    except Closed:
        logger.info("AudioSocket call %s: closed before it started", call_id)
    except ProtocolError as exc:
        logger.warning("AudioSocket call %s ended: %s", call_id, exc)
    except Exception:  # noqa: BLE001 - one call's failure stays with that call
        logger.exception("AudioSocket connection failed")
    finally:
        gw.admitting.discard(call_id)  # a call admitted but never attended gives its place back
        await transport.close()


async def _read_loop(reader: asyncio.StreamReader, call: Call) -> None:
    """Frames -> the call's inputs, until the caller hangs up (a bare close, 0x00, or 0xff)."""
    while True:
        try:
            frame = await read_frame(reader)
        except Closed:
            call.hangup("caller_hangup")
            return
        rate = AUDIO_RATES.get(frame.kind)
        if rate is not None:
            if rate != call.transport.in_rate:
                call.input_rate(rate)
            call.audio(frame.payload)
        elif frame.kind == KIND_DTMF:
            call.key(chr(frame.payload[0]))
        elif frame.kind == KIND_HANGUP:
            call.hangup("caller_hangup")
            return
        elif frame.kind == KIND_ERROR:
            code = frame.payload[0] if frame.payload else -1
            logger.warning("call %s: Asterisk reported error %s", call.call_id, code)
            call.hangup("error")
            return
        elif frame.kind == KIND_UUID:
            raise ProtocolError("a second UUID frame")
        else:
            if not call.unknown_frames:
                logger.warning("call %s: skipping frames of unknown kind 0x%02x", call.call_id, frame.kind)
            call.unknown_frames += 1


async def _say_and_close(gw: Gateway, transport: AudioSocketTransport, text: str) -> None:
    frame = frame_bytes(transport.out_rate)
    loop = asyncio.get_running_loop()
    t = loop.time()
    for line in sentences(text):
        pcm = await gw.speaker.render(line, gw.settings.voice_tts_rate)
        for i in range(0, len(pcm), frame):
            await transport.send_audio(pcm[i:i + frame].ljust(frame, b"\0"))
            t += 0.02
            await asyncio.sleep(max(0.0, t - loop.time()))


async def serve(gw: Gateway) -> asyncio.AbstractServer:
    s = gw.settings

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handle_connection(gw, reader, writer)

    return await asyncio.start_server(on_connect, s.voice_audiosocket_host, s.voice_audiosocket_port)
