"""Typed settings of the staff console (prefix ``CONSOLE_``), validated at start."""
from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, model_validator

from services.settings import ROOT, EventBrokerSettings


class ConsoleSettings(EventBrokerSettings):
    """The console's own settings; the environment, database, keys, tracker store and the WeChat
    channels' store and deadline come from ``CommonSettings``, the event broker's from its class."""

    # The Rasa tracker store: the SQLite file of the embedded default, or a database URL (PostgreSQL).
    console_tracker_url: str = ""
    # The key of the conversation pseudonyms in URLs, links, the API and exports (a keyed hash of the
    # sender id, which can be a phone number). Empty: a random key kept in the console's database.
    console_pseudonym_key: SecretStr = SecretStr("")

    console_host: str = "127.0.0.1"
    console_port: int = 8020
    # Cookies only over HTTPS (set when the console is behind an HTTPS reverse proxy; production).
    console_secure_cookies: bool = False
    console_session_hours: float = Field(default=8.0, gt=0)
    console_max_failed_logins: int = Field(default=5, ge=1)
    console_lockout_minutes: float = Field(default=15.0, gt=0)
    console_page_size: int = Field(default=50, ge=5, le=500)
    console_ticket_due_days: int = Field(default=15, ge=1)
    # Conversations (tracker events, summaries, annotations), phone call records and their recordings
    # older than this many days are deleted daily (console/retention.py); 0 keeps everything.
    console_retention_days: int = Field(default=180, ge=0, le=3650)

    @model_validator(mode="after")
    def _check(self) -> "ConsoleSettings":
        if self.heze_env == "production" and not self.console_secure_cookies:
            raise ValueError("CONSOLE_SECURE_COOKIES must be true in production (the console runs behind HTTPS)")
        if self.heze_env == "production" and not self.rabbitmq_host:
            raise ValueError("RABBITMQ_HOST must be set in production: the conversation index follows Rasa's event "
                             "broker (several Rasa replicas commit out of id order; polling the tracker store misses events)")
        return self

    @property
    def tracker_url(self) -> str:
        if self.console_tracker_url:
            return self.console_tracker_url
        path = self.tracker_db if self.tracker_db.startswith("/") else str(ROOT / self.tracker_db)
        return f"sqlite:///{path}"


@lru_cache(maxsize=1)
def get_console_settings() -> ConsoleSettings:
    return ConsoleSettings()
