import json

import pytest
from pydantic import SecretStr, ValidationError

from services.payments import InvalidNotification, SandboxProvider
from tests.sandbox import TEST_DATA_KEYS, make_settings

SECRET = b"k" * 32


def provider(now: float = 1_800_000_000.0) -> SandboxProvider:
    return SandboxProvider(SECRET, "https://pay.example.test/", clock=lambda: now)


def test_sandbox_notification_round_trip() -> None:
    body, headers = provider().notification("202611250000000001", 5630)
    note = provider().verify(body, headers)
    assert (note.order_no, note.amount_fen) == ("202611250000000001", 5630)
    assert provider().checkout_url("1") == "https://pay.example.test/pay/1"


def test_known_answer_signature() -> None:
    # HMAC-SHA256(key, "<timestamp>." + body), hex; computed independently with
    # `openssl dgst -sha256 -hmac kkkk...` (32 k's).
    body = b'{"order_no":"1","amount_fen":100,"txn_id":"T"}'
    headers = {"X-Sandbox-Timestamp": "1800000000",
               "X-Sandbox-Signature": "3ac1a7ed413d3a7ca988aa0ce842b82fc5e0cfdaf27e888b2c9a2f7bf29e0920"}
    assert provider().verify(body, headers).amount_fen == 100


@pytest.mark.parametrize("tamper", ["body", "signature", "stale", "missing", "malformed"])
def test_forged_or_stale_notifications_are_rejected(tamper: str) -> None:
    body, headers = provider().notification("1", 100)
    if tamper == "body":
        body = body.replace(b"100", b"1")
    elif tamper == "signature":
        headers["X-Sandbox-Signature"] = "0" * 64
    elif tamper == "stale":
        body, headers = provider(now=1_800_000_000.0 - 301).notification("1", 100)
    elif tamper == "missing":
        headers = {}
    elif tamper == "malformed":
        body = b"not json"
        headers["X-Sandbox-Signature"] = provider()._sign(headers["X-Sandbox-Timestamp"], body)  # noqa: SLF001
    with pytest.raises(InvalidNotification):
        provider().verify(body, headers)


def test_settings_refuse_sample_secrets_in_production() -> None:
    with pytest.raises(ValidationError):
        make_settings(heze_env="production", rasa_api_token=SecretStr("change-me"))
    with pytest.raises(ValidationError):  # the sandbox takes no real money
        make_settings(heze_env="production", public_base_url="https://x.test")
    with pytest.raises(ValidationError):
        make_settings(payment_sandbox_secret=None)



def test_every_process_refuses_to_start_in_production_without_data_keys() -> None:
    """Personal data is encrypted at rest: no process makes itself a key file in production."""
    from console.settings import ConsoleSettings
    from voice.settings import VoiceSettings

    with pytest.raises(ValidationError, match="DATA_KEYS"):
        make_settings(heze_env="production", data_keys=SecretStr(""), public_base_url="https://x.test")
    with pytest.raises(ValidationError, match="DATA_KEYS"):
        ConsoleSettings(_env_file=None, heze_env="production", console_secure_cookies=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="DATA_KEYS"):
        VoiceSettings(_env_file=None, heze_env="production", phone_channel_token="p" * 20,  # type: ignore[call-arg]
                      voice_gateway_token="g" * 20)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RASA_PORT", "6005")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://heze.example.test")
    s = make_settings()
    assert s.rasa_port == 6005 and s.public_base_url == "https://heze.example.test"
    assert json.dumps(s.payment_notify_url).endswith('/payments/notify/sandbox"')


def test_every_setting_has_one_owner_and_every_process_reads_the_common_ones_alike() -> None:
    """One declaration per setting across the processes' settings classes (CommonSettings holds what
    they share), and the same environment gives each process the same shared values."""
    from console.settings import ConsoleSettings
    from services.settings import CommonSettings, EventBrokerSettings, Settings
    from voice.settings import VoiceSettings

    classes = (CommonSettings, EventBrokerSettings, Settings, ConsoleSettings, VoiceSettings)
    owners: dict[str, list[str]] = {}
    for cls in classes:
        for name in cls.__dict__.get("__annotations__", {}):
            if not name.startswith("model_"):
                owners.setdefault(name, []).append(cls.__name__)
    assert {n: o for n, o in owners.items() if len(o) > 1} == {}
    env = {"heze_env": "test", "heze_db_url": "sqlite:///x.db", "rasa_port": 5999, "wechat_deadline_s": 3.5,
           "data_keys": TEST_DATA_KEYS}
    made = [Settings(_env_file=None, rasa_api_token="t", payment_sandbox_secret="s", **env),  # type: ignore[call-arg]
            ConsoleSettings(_env_file=None, **env), VoiceSettings(_env_file=None, **env)]  # type: ignore[call-arg]
    for name in CommonSettings.model_fields:
        assert len({str(getattr(m, name)) for m in made}) == 1, name
    assert len({m.resolve("var/x") for m in made}) == 1
    with pytest.raises(ValueError, match="DATA_KEYS"):
        VoiceSettings(_env_file=None, heze_env="production", phone_channel_token="p" * 20,  # type: ignore[call-arg]
                      voice_gateway_token="g" * 20, voice_vosk_model="/m")
