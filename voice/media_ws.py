"""WebSocket media endpoint for FreeSWITCH ``mod_audio_fork`` and jambonz ``listen``.

The PBX opens ``ws://gateway:8010/media``, sends one JSON text frame with the call's metadata
(``callSid``/``uuid``/``call_id``, ``from``/``caller``, ``sampleRate`` 8000 or 16000), then binary
frames of 16-bit little-endian PCM. DTMF comes as a text frame ``{"event": "dtmf", "digit": "5"}``
(jambonz: ``{"type": "dtmf", "dtmf": "5"}``). The gateway answers with binary PCM frames at the
same rate, paced at 20 ms, ``{"type": "killAudio"}`` to stop what is playing (barge-in), and
``{"type": "disconnect", "next": "human"|"hangup"}`` before it closes the socket.

The PBX authenticates with the gateway's shared secret (VOICE_GATEWAY_TOKEN): ``Authorization:
Bearer <token>`` or ``?token=<token>`` on the URL (mod_audio_fork cannot set headers). Only then is
the caller number in the metadata believed; a call id is accepted once.
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from voice.call import Call, Gateway, normalise_caller, valid_call_id

logger = logging.getLogger(__name__)

RATES = (8000, 16000)
MAX_BINARY = 64000
MAX_TEXT = 4096


class MediaError(ValueError):
    pass


def parse_start(text: str) -> tuple[str, str | None, int]:
    """(call id, caller, sample rate) from the first text frame; MediaError when it is not usable."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MediaError("the first frame is not JSON") from exc
    if not isinstance(meta, dict):
        raise MediaError("the first frame is not a JSON object")
    call_id = next((str(meta[k]) for k in ("callSid", "uuid", "call_id", "callId") if meta.get(k)), str(uuid.uuid4())).lower()
    if not valid_call_id(call_id):
        raise MediaError("call id has characters that are not allowed")
    caller = next((str(meta[k]) for k in ("caller", "from", "caller_id_number", "callerIdNumber") if meta.get(k)), None)
    if caller is not None:
        caller = normalise_caller(caller)
    rate = meta.get("sampleRate", meta.get("sample_rate", 8000))
    if rate not in RATES:
        raise MediaError(f"sample rate {rate!r} is not supported (8000 or 16000)")
    return call_id, caller, int(rate)


def dtmf_of(text: str) -> str | None:
    """The key of a DTMF text frame, None for any other text frame."""
    try:
        msg = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(msg, dict) or "dtmf" not in (msg.get("event"), msg.get("type")):
        return None
    key = msg.get("digit", msg.get("dtmf"))
    if isinstance(key, dict):  # jambonz nests {"dtmf": {"digit": "5"}}
        key = key.get("digit")
    return key if isinstance(key, str) and len(key) == 1 and key in "0123456789*#ABCD" else None


class WebSocketTransport:
    keepalive = False  # FreeSWITCH and jambonz keep the call up without our frames

    def __init__(self, ws: WebSocket, rate: int) -> None:
        self.ws, self.in_rate, self.out_rate = ws, rate, rate
        self.closed = False

    async def send_audio(self, frame: bytes) -> None:
        if not self.closed:
            try:
                await self.ws.send_bytes(frame)
            except (WebSocketDisconnect, RuntimeError):
                self.closed = True

    async def send_json(self, msg: dict[str, Any]) -> None:
        if not self.closed:
            try:
                await self.ws.send_text(json.dumps(msg))
            except (WebSocketDisconnect, RuntimeError):
                self.closed = True

    async def stop_playback(self) -> None:
        await self.send_json({"type": "killAudio"})

    async def close(self, next_step: str | None = None) -> None:
        """``{"type": "disconnect", "next": ...}`` (when the gateway ends the call), then close."""
        if next_step is not None:
            await self.send_json({"type": "disconnect", "next": next_step})
        if not self.closed:
            self.closed = True
            try:
                await self.ws.close(1000)
            except (WebSocketDisconnect, RuntimeError):
                pass  # the PBX has already gone


async def media_endpoint(gw: Gateway, ws: WebSocket) -> None:
    await ws.accept()
    transport = WebSocketTransport(ws, 8000)
    call_id = "(not started)"
    try:
        first = await asyncio.wait_for(ws.receive(), 5.0)
        if first.get("type") != "websocket.receive" or not first.get("text"):
            raise MediaError("the first frame must be the call's JSON metadata")
        call_id, caller, rate = parse_start(first["text"])
        transport.in_rate = transport.out_rate = rate
        refused = await gw.admit(call_id)
        if refused == "busy":
            await transport.send_json({"type": "disconnect", "next": "hangup", "reason": "busy"})
            return
        if refused:
            raise MediaError("this call id is already connected")
        call = Call(gw, call_id, transport, "websocket", caller or gw.caller_for(call_id))
        await gw.attend(call, _read_loop(ws, call))  # the call closes the transport itself
    except (MediaError, asyncio.TimeoutError) as exc:
        reason = str(exc) or "no metadata within 5 s"
        logger.warning("media call %s ended: %s", call_id, reason)
        await transport.send_json({"type": "error", "error": reason})
    except WebSocketDisconnect:
        pass  # the PBX went away; attend() has ended the call
    except Exception:  # noqa: BLE001 - one call's failure stays with that call
        logger.exception("media call failed")
    finally:
        gw.admitting.discard(call_id)  # a call admitted but never attended gives its place back
        await transport.close()


async def _read_loop(ws: WebSocket, call: Call) -> None:
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            call.hangup()
            return
        data = msg.get("bytes")
        if data is not None:
            if len(data) % 2 or len(data) > MAX_BINARY:
                raise MediaError(f"audio frame of {len(data)} bytes")
            if data:
                call.audio(data)
            continue
        text = msg.get("text") or ""
        if len(text) > MAX_TEXT:
            raise MediaError("text frame too long")
        key = dtmf_of(text)
        if key:
            call.key(key)
        elif '"hangup"' in text or '"stop"' in text:
            call.hangup()
            return


__all__ = ["media_endpoint", "parse_start", "dtmf_of"]
