"""Personal fields of the service database, encrypted at rest (textnorm/sealing.py, ``DATA_KEYS``).

``Sealed`` is a column type: what the code writes is sealed on its way to the database and opened
on its way back, so models, queries that read them and the console see plain text. The fields are
the ones nothing searches by: a ticket's content, place, contact phone and reply, the SMS outbox, a call's
caller number and what was heard, pressed and answered on it, a family proxy's elder number. A sealed
value is bound to its table and column. Numbers the services look things up by (an application's
applicant phone, a bill's account) stay as the upstream systems keep them; SMS opt-outs and quotas,
and proxy grants, are looked up by a keyed hash of the number instead (services/sms.py ``NumberIndex``).

Each process uses the keyring its settings give (``use``, called where its services are built);
one that never called it takes ``DATA_KEYS`` from its environment (the stack always sets it) or its
settings.
A value written in clear (before encryption) is read as it is; ``python -m console rekey`` seals it."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Text
from sqlalchemy.types import TypeDecorator

from textnorm.sealing import Keyring, KeyringError

_keyring: Keyring | None = None


def use(keyring: Keyring) -> None:
    """The keyring this process seals and opens with."""
    global _keyring
    _keyring = keyring


def keyring() -> Keyring:
    """The keyring given by ``use``; else ``DATA_KEYS`` from the environment; else the settings'
    (``.env``, or the embedded default's key file)."""
    global _keyring
    if _keyring is None:
        _keyring = Keyring.from_env()
        if not _keyring:
            from services.settings import get_settings

            _keyring = Keyring.parse(get_settings().data_keys_text)
    return _keyring


class Sealed(TypeDecorator[str]):
    """Text sealed under the current key; the column's ``table.column`` is the associated data."""

    impl = Text
    cache_ok = True

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is None:
            return None
        ring = keyring()
        if not ring:  # never written in clear because a process was started without its keys
            raise KeyringError(f"no DATA_KEYS: {self.where} is not written in clear")
        return ring.seal(value, self.where)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else keyring().open(value, self.where)

    def process_literal_param(self, value: str | None, dialect: Any) -> str:
        raise TypeError("a sealed column takes bound parameters only")


SEALED_COLUMNS = {  # table: columns, for re-encryption
    "feedback_tickets": ("content", "location", "contact_phone", "reply"),
    "sms_outbox": ("phone", "text", "params"),
    "phone_calls": ("caller",),
    "phone_turns": ("transcript", "dtmf", "reply"),
    "proxy_grants": ("elder_phone",),
    "subscriptions": ("phone",),
    "campaign_tests": ("phone",),
}
