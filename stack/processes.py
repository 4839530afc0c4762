"""A small supervisor: start processes, wait for their health endpoints, stop them all."""
from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from services.settings import ROOT, Settings
from console.settings import ConsoleSettings, get_console_settings
from voice.settings import VoiceSettings, get_voice_settings

RASA_ENV = {
    "RASA_TELEMETRY_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
    "PYTHONWARNINGS": "ignore",
}


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    health_url: str
    url: str
    env: dict[str, str] = field(default_factory=dict)


class StartupError(RuntimeError):
    pass


class Stack:
    """Runs processes in their own process groups; ``stop`` ends every one of them."""

    def __init__(self, specs: list[ProcessSpec], log_dir: Path) -> None:
        self.specs = specs
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, spec: ProcessSpec) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{spec.name}.log", "ab") as log:
            self.procs[spec.name] = subprocess.Popen(
                spec.argv, cwd=ROOT, env={**os.environ, **spec.env}, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def start(self, timeout: float = 240, only: str | None = None) -> None:
        """Start every process (or the one named ``only``) and wait until each is healthy."""
        chosen = [s for s in self.specs if only in (None, s.name)]
        for spec in chosen:
            self._spawn(spec)
        deadline = time.monotonic() + timeout
        pending = {s.name: s for s in chosen}
        with httpx.Client(timeout=2) as client:
            while pending:
                for name, spec in list(pending.items()):
                    if self.procs[name].poll() is not None:
                        self.stop()
                        raise StartupError(f"{name} exited during start-up:\n{self.log_tail(name)}")
                    try:
                        if client.get(spec.health_url).status_code == 200:
                            del pending[name]
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    self.stop()
                    raise StartupError(f"not healthy after {timeout:.0f}s: {', '.join(pending)}")
                time.sleep(0.3)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def poll_dead(self) -> str | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return name
        return None

    def stop(self, grace: float = 15, only: str | None = None) -> None:
        """Stop every process (or the one named ``only``): SIGTERM to its group, then SIGKILL."""
        chosen = {n: p for n, p in self.procs.items() if only in (None, n)}
        for proc in chosen.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for name, proc in chosen.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            del self.procs[name]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that hands one Settings object to every child process."""
    env = {
        "HEZE_ENV": settings.heze_env,
        "RASA_HOST": settings.rasa_host, "RASA_PORT": str(settings.rasa_port),
        "RASA_API_TOKEN": settings.rasa_api_token.get_secret_value(),
        "TRACKER_DB": settings.tracker_db, "RASA_MODEL_DIR": settings.rasa_model_dir,
        "RASA_ENDPOINTS": settings.rasa_endpoints,
        "ACTION_HOST": settings.action_host, "ACTION_PORT": str(settings.action_port),
        "SERVICES_API_HOST": settings.services_api_host, "SERVICES_API_PORT": str(settings.services_api_port),
        "PUBLIC_BASE_URL": settings.public_base_url, "HEZE_DB_URL": settings.heze_db_url,
        "PAYMENT_PROVIDER": settings.payment_provider, "SMS_PROVIDER": settings.sms_provider,
    }
    if settings.payment_sandbox_secret:
        env["PAYMENT_SANDBOX_SECRET"] = settings.payment_sandbox_secret.get_secret_value()
    # bot/credentials.yml reads these; Rasa needs every one set, empty when a channel is not configured.
    for prefix in ("wechat", "miniprogram"):
        for name in ("token", "encoding_aes_key", "appid", "secret", "mode", "api_base", "kf_account"):
            value = getattr(settings, f"{prefix}_{name}")
            env[f"{prefix}_{name}".upper()] = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    env["DATA_KEYS"] = settings.data_keys_text
    env["PHONE_CHANNEL_TOKEN"] = settings.phone_channel_token.get_secret_value() or secrets.token_hex(24)
    env["WEBCHAT_SESSION_KEY"] = settings.webchat_key_text  # the services API signs, the Rasa channel checks
    env["WEBCHAT_SESSION_HOURS"] = str(settings.webchat_session_hours)
    env["WEBCHAT_GUESTS"] = str(settings.webchat_guests).lower()
    env["WECHAT_OAUTH_BASE"] = settings.wechat_oauth_base
    env["WECHAT_CLAIMS"] = settings.wechat_claims
    env["WECHAT_DEADLINE_S"] = str(settings.wechat_deadline_s)
    env["WECHAT_RETRY_S"] = str(settings.wechat_retry_s)
    env["WECHAT_HUMAN_S"] = str(settings.wechat_human_s)
    # The WeChat front and the channels share this secret; the front relays to Rasa (or to the replicas'
    # balancer, WECHAT_FRONT_UPSTREAM).
    env["WECHAT_FRONT_TOKEN"] = settings.wechat_front_token.get_secret_value() or secrets.token_hex(24)
    env["WECHAT_FRONT_HOST"] = settings.wechat_front_host
    env["WECHAT_FRONT_PORT"] = str(settings.wechat_front_port)
    env["WECHAT_FRONT_CUT_S"] = str(settings.wechat_front_cut_s)
    # Reminders (the services API's scheduler; the action server says how a reminder would arrive) and
    # the departments' open API.
    for prefix in ("reminder_", "open_api_", "proxy_", "sms_"):
        env.update(prefixed_env(settings, prefix))
    env["WECHAT_REMINDER_TEMPLATE_ID"] = settings.wechat_reminder_template_id
    env["MINIPROGRAM_REMINDER_TEMPLATE_ID"] = settings.miniprogram_reminder_template_id
    env["HOTLINE_NUMBER"] = settings.hotline_number
    env.update(settings.broker_env())
    return env


def prepare_tracker_store(settings: Settings) -> None:
    """Put the embedded SQLite tracker store in WAL mode before Rasa opens it.

    Rasa creates its own engine, so it cannot be given pragmas; ``journal_mode=WAL`` is stored in
    the database file and holds for every later connection: one fsync per saved turn instead of
    the rollback journal's several, and readers (the console) never block Rasa's writes."""
    if settings.rasa_endpoints != "bot/endpoints.yml":
        return  # another tracker store (PostgreSQL in production)
    path = Path(settings.tracker_db)
    path = path if path.is_absolute() else ROOT / path
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")


def model_path(settings: Settings) -> Path:
    path = Path(settings.rasa_model_dir)
    return path if path.is_absolute() else ROOT / path


def prefixed_env(settings: BaseSettings, prefix: str) -> dict[str, str]:
    """A process's own settings (VOICE_*, CONSOLE_*), handed on to it as they were read."""
    return {name.upper(): value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            for name, value in settings.model_dump().items() if name.startswith(prefix)}


def specs(settings: Settings, voice: VoiceSettings | None = None,
          console: ConsoleSettings | None = None) -> list[ProcessSpec]:
    vs = voice or get_voice_settings()
    env = {**settings_env(settings), **prefixed_env(vs, "voice_")}
    # The gateway's shared secret (PBX, WeChat channel): from .env, else one for this run.
    env["VOICE_GATEWAY_TOKEN"] = env.get("VOICE_GATEWAY_TOKEN") or secrets.token_hex(24)
    py = str(ROOT / ".venv" / "bin" / "python")
    rasa = str(ROOT / ".venv-rasa" / "bin" / "rasa")
    api = f"http://{settings.services_api_host}:{settings.services_api_port}"
    actions = f"http://{settings.action_host}:{settings.action_port}"
    core = f"http://{settings.rasa_host}:{settings.rasa_port}"
    voice_url = f"http://{vs.voice_host}:{vs.voice_http_port}"
    env["VOICE_ASR_URL"] = f"{voice_url}/asr"
    env["VOICE_GATEWAY_URL"] = voice_url  # the web chat's microphone and "read aloud" (services API)
    cs = console or get_console_settings()
    console_url = f"http://{cs.console_host}:{cs.console_port}"
    env.update(prefixed_env(cs, "console_"))
    front = f"http://{settings.wechat_front_host}:{settings.wechat_front_port}"
    return [
        ProcessSpec("services-api", [py, "-m", "services", "serve"], f"{api}/health", api, env),
        ProcessSpec("action-server", [py, "-m", "actions"], f"{actions}/health", actions, env),
        ProcessSpec("voice-gateway", [py, "-m", "voice"], f"{voice_url}/health", voice_url, env),
        ProcessSpec("console", [py, "-m", "console", "serve"], f"{console_url}/health", console_url, env),
        ProcessSpec(
            "rasa",
            [
                rasa, "run", "--model", str(model_path(settings)), "--enable-api",
                "--auth-token", settings.rasa_api_token.get_secret_value(),
                "--interface", settings.rasa_host, "--port", str(settings.rasa_port),
                "--credentials", "bot/credentials.yml", "--endpoints", settings.rasa_endpoints,
            ],
            f"{core}/", core, {**env, **RASA_ENV},
        ),
        ProcessSpec("wechat-front", [str(ROOT / ".venv-rasa" / "bin" / "python"), "-m", "channels.front"],
                    f"{front}/health", front,
                    {"WECHAT_FRONT_UPSTREAM": core, **{k: v for k, v in env.items() if k.startswith("WECHAT_FRONT_")}}),
    ]
