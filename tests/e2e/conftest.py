"""The whole stack as real processes: Rasa server, action server and services API."""
from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.container import Services, build_services
from services.settings import Settings
from stack.processes import Stack
from tests.sandbox import console_settings, free_port, make_settings, start_stack, voice_settings
from tests.fakes.wechat_api import Account, FakeWeChat, serve
from console.settings import ConsoleSettings
from voice.models import packaged_whisper
from voice.settings import VoiceSettings


@dataclass
class Running:
    settings: Settings
    services: Services
    stack: Stack
    http: httpx.Client
    wechat: FakeWeChat
    account: Account
    mini: FakeWeChat
    mini_account: Account
    voice: VoiceSettings
    console: ConsoleSettings

    @property
    def console_url(self) -> str:
        return f"http://{self.console.console_host}:{self.console.console_port}"

    @property
    def voice_url(self) -> str:
        return f"http://{self.voice.voice_host}:{self.voice.voice_http_port}"

    @property
    def pbx_headers(self) -> dict[str, str]:
        """What the dialplan and the WeChat channel send to the gateway."""
        return {"Authorization": f"Bearer {self.voice.voice_gateway_token.get_secret_value()}"}

    @property
    def rasa_url(self) -> str:
        return f"http://{self.settings.rasa_host}:{self.settings.rasa_port}"

    @property
    def front_url(self) -> str:
        """The WeChat front (channels/front.py): where WeChat's servers post, as in production."""
        return f"http://{self.settings.wechat_front_host}:{self.settings.wechat_front_port}"

    def ref(self, sender: str) -> str:
        """A conversation's pseudonym in the console's URLs (the console's key lives in the service database)."""
        from console.conversations import conversation_ref, ref_key
        return conversation_ref(ref_key(self.services.sessions), sender)

    def say(self, sender: str, text: str, metadata: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"sender": sender, "message": text}
        if metadata:
            body["metadata"] = metadata
        resp = self.http.post(f"{self.rasa_url}/webhooks/rest/webhook", json=body)
        resp.raise_for_status()
        return resp.json()


def joined(replies: list[dict[str, Any]]) -> str:
    return " ".join(r.get("text") or "" for r in replies)


def packaged_whisper_dir(tmp: Path) -> Path:
    """The packaged Whisper base, assembled once per checkout under var/models (145 MB)."""
    from services.settings import ROOT
    from voice.settings import PACKAGED_WHISPER_MODEL

    return packaged_whisper(ROOT / PACKAGED_WHISPER_MODEL)


@pytest.fixture(scope="session")
def running(rasa_model: Path, packaged_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("stack")
    api_port = free_port()
    account = Account(token="hezeToken2026", aes_key=base64.b64encode(os.urandom(32)).decode()[:43],
                      appid="wx" + os.urandom(8).hex())
    fake = FakeWeChat(appid=account.appid, secret="wechat-secret-" + os.urandom(4).hex())
    mini_account = Account(token="miniToken2026", aes_key=base64.b64encode(os.urandom(32)).decode()[:43],
                           appid="wx" + os.urandom(8).hex())
    mini = FakeWeChat(appid=mini_account.appid, secret="mini-secret-" + os.urandom(4).hex())
    with serve(fake, free_port()) as wechat_url, serve(mini, free_port()) as mini_url:
        settings = make_settings(
            wechat_token=account.token, wechat_encoding_aes_key=account.aes_key, wechat_appid=account.appid,
            wechat_secret=fake.secret, wechat_api_base=wechat_url, wechat_oauth_base=wechat_url, wechat_claims=str(tmp / "wechat.db"),
            wechat_retry_s=2.0, wechat_kf_account="kf2001@gh_heze",
            miniprogram_token=mini_account.token, miniprogram_encoding_aes_key=mini_account.aes_key,
            miniprogram_appid=mini_account.appid, miniprogram_secret=mini.secret, miniprogram_api_base=mini_url,
            rasa_port=free_port(), action_port=free_port(), services_api_port=api_port,
            public_base_url=f"http://127.0.0.1:{api_port}",
            heze_db_url=f"sqlite:///{tmp / 'heze.db'}", tracker_db=str(tmp / "tracker.db"),
            rasa_model_dir=str(rasa_model.parent),
            # Reminders (tests/e2e/test_reminders.py): due every day, no quiet hours, checked every 2 s,
            # calls through the test PBX's spool (Local/<number>@test-callee picks up), WeChat's template set.
            reminder_check_s=2.0, reminder_medical_window="01-01/12-31", reminder_pension_window="01-01/12-31",
            reminder_quiet_hours="8-8", reminder_per_day=10, wechat_reminder_template_id="TPL-reminder",
            reminder_call_spool=str(tmp / "pbx-outgoing"), reminder_call_channel="Local/{number}@test-callee",
            sms_sweep_s=5.0,  # a message held by the per-number limit goes a minute later, not two
        )
        (tmp / "pbx-outgoing").mkdir()
        # Short silences so the silence tests end in seconds. Chinese speech is recognised by the
        # multilingual Whisper base that two PyPI packages ship (the only Chinese model to be had
        # here; Vosk's packaged model is Korean and is tested on its own in tests/voice).
        voice = voice_settings(tmp, voice_silence_timeout_s=3.0, voice_digit_timeout_s=3.0,
                               voice_record_audio=True, voice_recordings_dir=str(tmp / "recordings"),
                               voice_max_calls=12,  # the ten-call test; the busy policy is tested on its own
                               voice_asr_engine="whisper", voice_whisper_model=str(packaged_whisper_dir(tmp)))
        yield from _running(settings, voice, packaged_model_dir, tmp, account, fake, mini_account, mini)


def _running(settings: Settings, voice: VoiceSettings, packaged_model_dir: Path, tmp: Path, account: Account,
             fake: FakeWeChat, mini_account: Account, mini: FakeWeChat) -> Iterator[Running]:
    # The guides' own index, with dense vectors from the packaged model.
    console = console_settings()
    # Guides published through the open API land in the run's own directory, and the action server
    # looks for them every second (tests/e2e/test_published_guides.py).
    stack, engine = start_stack(settings, tmp, voice, {"KB_INDEX_DIR": str(tmp / "kb"),
                                                       "KB_EMBEDDING_MODEL": str(packaged_model_dir),
                                                       "KB_QUERY_INSTRUCTION": "",
                                                       "KB_PUBLISHED_DIR": str(tmp / "published-guides"),
                                                       "KB_REFRESH_S": "1"}, console=console)
    services = build_services(settings, engine)
    try:
        with httpx.Client(timeout=60) as http:
            yield Running(settings, services, stack, http, fake, account, mini, mini_account, voice, console)
    finally:
        stack.stop()
        engine.dispose()
