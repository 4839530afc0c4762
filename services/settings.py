"""Typed settings of the application processes (action server, services API, runner)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from textnorm.sealing import Keyring, keyring_setting

ROOT = Path(__file__).resolve().parent.parent
_SAMPLE_SECRETS = {"", "change-me", "changeme", "secret", "test"}


class CommonSettings(BaseSettings):
    """What every process reads under the same name: the environment, the service database, the keys
    personal data is sealed with, where Rasa and its stores are, the phone channel's token, the WeChat
    channels' store and deadline; and how paths are resolved. Each process's settings inherit it
    (``Settings``, ``ConsoleSettings``, ``VoiceSettings``); no setting is declared twice
    (tests/services/test_payments_and_settings.py)."""

    model_config = SettingsConfigDict(env_file=ROOT / ".env", extra="ignore")

    heze_env: Literal["development", "production", "test"] = "development"
    heze_db_url: str = "sqlite:///var/heze.db"
    # Keys that encrypt personal data at rest (the tracker store's events, the service database's
    # personal fields, the event broker's messages; textnorm/sealing.py): "id:key,id:key", the first
    # seals, all open. Empty: the embedded default keeps one in var/data.keys; production must set it
    # (keep it apart from the database's backups).
    data_keys: SecretStr = SecretStr("")
    rasa_host: str = "127.0.0.1"
    rasa_port: int = 5005
    # The Rasa tracker store of the embedded default (a SQLite file; production: deploy/endpoints.yml).
    tracker_db: str = "var/tracker.db"
    # The phone channel's shared secret between the voice gateway and Rasa. Empty: `python -m stack`
    # makes a random one for each run (both processes get it from the stack).
    phone_channel_token: SecretStr = SecretStr("")
    # Where the WeChat channels keep message claims, held and failed messages, numbered choices and
    # who is with a human: a SQLite file, or a redis:// URL (several Rasa replicas).
    wechat_claims: str = "var/wechat.db"
    # WeChat's passive-reply deadline as the channels keep it (a later reply goes as a customer-service
    # message; the console flags it).
    wechat_deadline_s: float = 4.0
    # The WeChat front (channels/front.py): WeChat's servers post here, and it relays to Rasa. Its loop is
    # never busy with turns, so it keeps WeChat's 5 s rule when Rasa is saturated: `success` at cut_s
    # after arrival, the reply then as a customer-service message. Its secret with the channel: empty,
    # `python -m stack` makes one for each run.
    wechat_front_host: str = "127.0.0.1"
    wechat_front_port: int = 5006
    wechat_front_cut_s: float = Field(default=4.5, ge=0.0, le=4.9)
    wechat_front_token: SecretStr = SecretStr("")
    # The voice gateway's shared secret for POST /asr, POST /tts, the /media WebSocket and /calls/*: the
    # dialplan (CURLOPT httpheader), FreeSWITCH (?token= on the WebSocket URL), the WeChat channel and
    # the web chat (through the services API) send it. Empty: `make run` makes one for each run.
    voice_gateway_token: SecretStr = SecretStr("")
    # Signs the web chat's sessions (textnorm/webtoken.py): the services API issues them, the Rasa
    # channel checks them. Empty: derived from DATA_KEYS' first key (rotating DATA_KEYS signs everyone out).
    webchat_session_key: SecretStr = SecretStr("")

    @model_validator(mode="after")
    def _check_common(self) -> "CommonSettings":
        if self.heze_env == "production" and not self.data_keys.get_secret_value().strip():
            raise ValueError("DATA_KEYS must be set in production (personal data is encrypted at rest)")
        webchat_key = self.webchat_session_key.get_secret_value()
        if self.heze_env == "production" and webchat_key and len(webchat_key) < 32:
            raise ValueError("WEBCHAT_SESSION_KEY must be 32 characters or more (or empty: derived from DATA_KEYS)")
        return self

    def resolve(self, path: str | Path) -> Path:
        """A path from settings; relative paths are relative to the repository root."""
        return Path(path) if Path(path).is_absolute() else ROOT / path

    @property
    def data_keys_text(self) -> str:
        """``DATA_KEYS``, or the embedded default's key file (made the first time)."""
        key_file = None if self.heze_env == "production" else str(ROOT / "var" / "data.keys")
        return keyring_setting(self.data_keys.get_secret_value(), key_file)

    @property
    def keyring(self) -> Keyring:
        return Keyring.parse(self.data_keys_text)

    @property
    def webchat_key_text(self) -> str:
        from textnorm.webtoken import session_key

        return session_key(self.webchat_session_key.get_secret_value(), self.data_keys_text)


class EventBrokerSettings(CommonSettings):
    """RabbitMQ, where Rasa publishes each conversation's events (deploy/endpoints.yml names the broker
    with these same variables) and the staff console reads them (console/feed.py). Empty host: no
    broker (the embedded default); the console then reads the tracker store every few seconds."""

    rabbitmq_host: str = ""
    rabbitmq_port: int = 5672
    rabbitmq_user: str = "guest"
    rabbitmq_password: SecretStr = SecretStr("guest")
    rabbitmq_queue: str = "heze_events"
    rabbitmq_exchange: str = "rasa-exchange"  # Rasa's default fanout exchange; one per deployment

    def broker_env(self) -> dict[str, str]:
        return {"RABBITMQ_HOST": self.rabbitmq_host, "RABBITMQ_PORT": str(self.rabbitmq_port),
                "RABBITMQ_USER": self.rabbitmq_user, "RABBITMQ_PASSWORD": self.rabbitmq_password.get_secret_value(),
                "RABBITMQ_QUEUE": self.rabbitmq_queue, "RABBITMQ_EXCHANGE": self.rabbitmq_exchange}

    @property
    def broker_url(self) -> str:
        from urllib.parse import quote

        return (f"amqp://{quote(self.rabbitmq_user, safe='')}:{quote(self.rabbitmq_password.get_secret_value(), safe='')}"
                f"@{self.rabbitmq_host}:{self.rabbitmq_port}/")


class Settings(EventBrokerSettings):
    """Read from the environment and ``.env``; validated once at process start."""

    model_config = SettingsConfigDict(env_file=ROOT / ".env", extra="ignore")

    rasa_api_token: SecretStr
    rasa_model_dir: str = "var/models"
    rasa_endpoints: str = "bot/endpoints.yml"

    action_host: str = "127.0.0.1"
    action_port: int = 5055

    services_api_host: str = "127.0.0.1"
    services_api_port: int = 8030
    public_base_url: str = "http://127.0.0.1:8030"


    # Where progress (办件进度) comes from: the service database (the embedded default), or the
    # provincial integrated government-service platform (services/provincial.py;
    # deploy/provincial-platform.md), with the appId and appKey it issued to this system.
    applications_backend: Literal["sql", "provincial"] = "sql"
    provincial_base_url: str = ""
    provincial_app_id: str = ""
    provincial_app_key: SecretStr = SecretStr("")
    provincial_timeout_s: float = 3.0  # one attempt
    provincial_retries: int = 2  # after a timeout, network error or 5xx; never after a 4xx
    provincial_backoff_s: float = 0.2  # the first retry waits 0.1-0.2 s, doubling, capped below
    provincial_backoff_cap_s: float = 2.0
    provincial_deadline_s: float = 6.0  # a whole lookup, retries included (a caller is waiting)
    provincial_breaker_failures: int = 5  # failed lookups in a row that open the breaker
    provincial_breaker_cooldown_s: float = 30.0  # open this long, then one trial lookup
    provincial_cache_s: float = 60.0  # answers (not failures) are kept this long; 0: not kept

    payment_provider: Literal["sandbox", "wechatpay"] = "sandbox"
    payment_sandbox_secret: SecretStr | None = None
    # An order not paid this long after it was made is closed (WeChat Pay's time_expire too).
    payment_order_ttl_s: int = 1800
    # A pending order with no notification this long after it was made is queried at the provider.
    payment_query_after_s: int = 300
    # How often the services API queries silent orders and closes expired ones; 0: never.
    payment_sweep_s: float = 60.0
    # Daily reconciliation with the provider's trade bill (wechatpay only; services/reconcile.py):
    # how often the services API checks whether yesterday (China time) is still to be done; 0: never.
    reconcile_check_s: float = 1800.0
    reconcile_after_hour: int = 10  # China time; WeChat Pay advises fetching the bill after 10:00

    # WeChat Pay API v3 (services/wechatpay.py; deploy/wechatpay.md). JSAPI orders are paid to the
    # official account's and the mini-program's appids above (WECHAT_APPID, MINIPROGRAM_APPID): the
    # openid a citizen has is the one the chat channel knows. Native orders use WECHAT_APPID.
    wechatpay_mchid: str = ""
    wechatpay_private_key_path: str = ""  # the merchant API certificate's key, apiclient_key.pem
    wechatpay_cert_serial: str = ""  # that certificate's serial number
    wechatpay_apiv3_key: SecretStr = SecretStr("")  # 32 characters, set in the merchant platform
    wechatpay_public_key_path: str = ""  # WeChat Pay's platform public key, pub_key.pem
    wechatpay_public_key_id: str = ""  # its id, PUB_KEY_ID_...
    wechatpay_api_base: str = "https://api.mch.weixin.qq.com"
    # SMS (services/sms.py; deploy/sms.md): "outbox" keeps each message in the sms_outbox table (the
    # embedded default); "aliyun" sends through Alibaba Cloud SMS with the approved signature name and
    # template codes ("kind:SMS_123,..."; kinds in services/sms.py TEMPLATES).
    sms_provider: Literal["outbox", "aliyun"] = "outbox"
    sms_sign_name: str = "菏泽政务"
    # The phone line's number as citizens dial it (in SMS wording: "请拨打12345说“解除代办”").
    hotline_number: str = "12345"
    sms_templates: str = ""
    sms_min_interval_s: int = 60  # per number: at most one SMS in this long ...
    sms_per_day: int = 10  # ... and this many a day (China time); in the database, so all processes agree
    # The key of the hashes opt-outs and quotas look numbers up by; empty: derived from DATA_KEYS'
    # first key (the embedded default). Set once in production and never rotated (a new key forgets opt-outs).
    sms_number_key: SecretStr = SecretStr("")
    sms_timeout_s: float = 5.0
    sms_sweep_s: float = 60.0  # how often the services API retries and reads receipts; 0: never
    aliyun_sms_access_key_id: str = ""
    aliyun_sms_access_key_secret: SecretStr = SecretStr("")
    aliyun_sms_api_base: str = "https://dysmsapi.aliyuncs.com"
    # The secret path part of the receipt and reply push URLs (/sms/aliyun/<token>/report|up); empty: off.
    aliyun_sms_push_token: SecretStr = SecretStr("")
    # Family proxy (子女代办, services/proxy.py): how long an elder's consent lasts, and how long the
    # code texted to the elder may be keyed in on the phone line.
    proxy_consent_days: int = Field(default=90, ge=1, le=3650)
    proxy_code_ttl_hours: int = Field(default=24, ge=1, le=24 * 7)

    # WeChat official account (channels/wechat.py; deploy/wechat.md). Empty token or appid: not configured.
    wechat_token: str = ""
    wechat_encoding_aes_key: str = ""
    wechat_appid: str = ""
    wechat_secret: SecretStr = SecretStr("")
    wechat_mode: Literal["safe", "compatible", "plain"] = "safe"
    wechat_api_base: str = "https://api.weixin.qq.com"
    # How often messages that got the apology (a turn failed) are tried again, until answered or 48 h.
    wechat_retry_s: float = 60.0
    # 转人工 hands the citizen to WeChat's own human customer service (客服). An agent account
    # ("kf2001@gh_account") sends every hand-off to that agent; empty: to whichever agent is free.
    wechat_kf_account: str = ""
    # A citizen with a human is not answered by the bot until handed back in the console, or until
    # this long passes without a message from them (WeChat stops forwarding after 30 min too).
    wechat_human_s: float = 1800.0
    # The mini-program's customer-service messages: the same settings for its own appid.
    miniprogram_token: str = ""
    miniprogram_encoding_aes_key: str = ""
    miniprogram_appid: str = ""
    miniprogram_secret: SecretStr = SecretStr("")
    miniprogram_mode: Literal["safe", "compatible", "plain"] = "safe"
    miniprogram_api_base: str = "https://api.weixin.qq.com"
    miniprogram_kf_account: str = ""

    # The web chat (services/webchat.py, /chat on this API): sessions last this long; guests (no WeChat
    # identity: a browser outside WeChat, or no appid configured) may chat but never act for family.
    webchat_session_hours: int = Field(default=72, ge=1, le=24 * 30)
    webchat_guests: bool = True
    # WeChat's web authorisation page (the official account's OAuth; snsapi_base: the openid, no prompt).
    wechat_oauth_base: str = "https://open.weixin.qq.com"
    # The voice gateway the web chat's microphone and "read aloud" go through (`make run` sets it).
    voice_gateway_url: str = "http://127.0.0.1:8010"
    # Departments' open API (/api/v1, services/open_api.py): the requests a minute a new API key may make
    # (`api-key create --rate` overrides it per key), and how long a write's answer is kept for its
    # Idempotency-Key. Published guides go to KB_PUBLISHED_DIR (knowledge/config.py).
    open_api_rate_per_minute: int = Field(default=120, ge=1, le=10_000)
    open_api_idempotency_hours: int = Field(default=24, ge=1, le=24 * 7)

    # Reminders citizens subscribe to (services/subscriptions.py, services/reminders.py): how often the
    # services API queues and sends them (0: never), the yearly windows (China time, MM-DD/MM-DD) of the
    # resident medical-insurance payment and the pension certification, quiet hours (no reminder from
    # the first hour to the second; the same hour twice: none), at most this many a day per citizen, and the WeChat
    # subscribe-message templates (订阅通知; fields thing1 事项, time2 截止日期, thing3 说明). An account
    # without a template cannot carry reminders: its citizens are told so when they ask.
    reminder_check_s: float = 300.0
    reminder_medical_window: str = "09-01/12-31"
    reminder_pension_window: str = "06-01/12-31"
    reminder_quiet_hours: str = "21-8"
    reminder_per_day: int = Field(default=2, ge=1, le=10)
    wechat_reminder_template_id: str = ""
    miniprogram_reminder_template_id: str = ""
    # Reminder calls for callers who asked to be called (services/calls.py): Asterisk's outgoing spool
    # directory, shared with the PBX (/var/spool/asterisk/outgoing; empty: no calls, SMS only), and the
    # channel that dials a citizen ({number}: see [heze-outbound] in deploy/asterisk/extensions.conf).
    reminder_call_spool: str = ""
    reminder_call_channel: str = "Local/{number}@heze-outbound"
    reminder_max_calls: int = Field(default=4, ge=1, le=100)  # reminder calls under way at once

    @model_validator(mode="after")
    def _check_reminders(self) -> "Settings":
        from services.reminders import Window

        Window.parse(self.reminder_medical_window)
        Window.parse(self.reminder_pension_window)
        self.quiet_hours  # noqa: B018 - checked here, used by the services API
        return self

    @property
    def quiet_hours(self) -> tuple[int, int]:
        try:
            start, end = (int(h) for h in self.reminder_quiet_hours.split("-"))
        except ValueError:
            raise ValueError(f"REMINDER_QUIET_HOURS is two hours like 21-8, not {self.reminder_quiet_hours!r}") from None
        if not (0 <= start <= 23 and 0 <= end <= 23):
            raise ValueError("REMINDER_QUIET_HOURS: hours are 0-23")
        return start, end

    @model_validator(mode="after")
    def _check_secrets(self) -> "Settings":
        if self.payment_provider == "sandbox" and not self.payment_sandbox_secret:
            raise ValueError("PAYMENT_SANDBOX_SECRET must be set for the sandbox payment provider")
        if self.payment_provider == "wechatpay":
            self._check_wechatpay()
        if self.applications_backend == "provincial":
            self._check_provincial()
        if self.sms_provider == "aliyun":
            self._check_aliyun_sms()
        if self.heze_env == "production":
            if self.rasa_api_token.get_secret_value().lower() in _SAMPLE_SECRETS:
                raise ValueError("RASA_API_TOKEN is empty or a sample value; refusing to start")
            if self.payment_provider == "sandbox":
                raise ValueError("the sandbox payment provider takes no real money; not in production")
            if not self.public_base_url.startswith("https://"):
                raise ValueError("PUBLIC_BASE_URL must be https:// in production")
            if (self.wechat_token and self.wechat_mode == "plain") or (self.miniprogram_token and self.miniprogram_mode == "plain"):
                raise ValueError("WeChat plain mode sends citizens' messages unencrypted; use safe mode in production")
        return self

    def _check_wechatpay(self) -> None:
        missing = [name.upper() for name in ("wechatpay_mchid", "wechatpay_private_key_path", "wechatpay_cert_serial",
                                             "wechatpay_public_key_path", "wechatpay_public_key_id", "wechat_appid")
                   if not getattr(self, name)]
        if missing:
            raise ValueError(f"the wechatpay payment provider needs {', '.join(missing)}")
        if len(self.wechatpay_apiv3_key.get_secret_value().encode()) != 32:
            raise ValueError("WECHATPAY_APIV3_KEY must be the 32-character APIv3 key")
        for name in ("wechatpay_private_key_path", "wechatpay_public_key_path"):
            if not self.resolve(getattr(self, name)).is_file():
                raise ValueError(f"{name.upper()}: no such file")
        if self.heze_env == "production" and not self.wechatpay_api_base.startswith("https://"):
            raise ValueError("WECHATPAY_API_BASE must be https:// in production")

    def _check_provincial(self) -> None:
        key = self.provincial_app_key.get_secret_value()
        if not (self.provincial_base_url and self.provincial_app_id and key):
            raise ValueError("the provincial applications backend needs PROVINCIAL_BASE_URL, PROVINCIAL_APP_ID "
                             "and PROVINCIAL_APP_KEY")
        if min(self.provincial_timeout_s, self.provincial_deadline_s, self.provincial_backoff_s) <= 0 \
                or self.provincial_retries < 0 or self.provincial_breaker_failures < 1:
            raise ValueError("PROVINCIAL_TIMEOUT_S, _DEADLINE_S and _BACKOFF_S must be positive, _RETRIES at least 0, "
                             "_BREAKER_FAILURES at least 1")
        if self.heze_env == "production":
            if not self.provincial_base_url.startswith("https://"):
                raise ValueError("PROVINCIAL_BASE_URL must be https:// in production")
            if key.lower() in _SAMPLE_SECRETS or len(key) < 16:
                raise ValueError("PROVINCIAL_APP_KEY is a sample value or too short; refusing to start")

    def _check_aliyun_sms(self) -> None:
        from services.aliyun_sms import parse_templates
        from services.sms import TEMPLATES

        if not (self.aliyun_sms_access_key_id and self.aliyun_sms_access_key_secret.get_secret_value()
                and self.sms_sign_name):
            raise ValueError("the aliyun SMS provider needs ALIYUN_SMS_ACCESS_KEY_ID, ALIYUN_SMS_ACCESS_KEY_SECRET "
                             "and SMS_SIGN_NAME")
        missing = sorted(set(TEMPLATES) - set(parse_templates(self.sms_templates)))
        if missing:
            raise ValueError(f"SMS_TEMPLATES has no approved template code for {', '.join(missing)}")
        if self.heze_env == "production":
            if not self.aliyun_sms_api_base.startswith("https://"):
                raise ValueError("ALIYUN_SMS_API_BASE must be https:// in production")
            if len(self.sms_number_key.get_secret_value()) < 32:
                raise ValueError("SMS_NUMBER_KEY must be set (32+ characters) in production; it is never rotated")

    @property
    def payment_notify_url(self) -> str:
        """Where the payment provider posts notifications (loopback for the sandbox)."""
        return f"http://{self.services_api_host}:{self.services_api_port}/payments/notify/{self.payment_provider}"

    @property
    def payment_public_notify_url(self) -> str:
        """The notify URL a real provider is given with each order: public, https in production."""
        return f"{self.public_base_url.rstrip('/')}/payments/notify/{self.payment_provider}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; created on first use, never at import."""
    return Settings()  # type: ignore[call-arg]
