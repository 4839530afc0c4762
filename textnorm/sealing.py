"""Encryption at rest of personal data: AES-256-GCM under a keyring from settings (``DATA_KEYS``).

A keyring is written ``id:key,id:key,...``: each id 1–16 of ``[0-9A-Za-z_-]``, each key 32 random
bytes in URL-safe base64 (``python -m textnorm.sealing new-key`` prints one). The first key seals
everything written from then on; every key listed opens what was sealed under it. Rotating a key:
put a new key first and keep the old ones after it, restart, run the re-encryption command of the
store (``python -m console rekey``), then remove the old key (docs/DESIGN.md, "Encryption at rest").

A sealed value is text: ``s1:<key id>:<base64url(12-byte nonce + ciphertext + tag)>``. The
associated data binds it to where it belongs (the tracker store passes the conversation's sender
id, the service database ``table.column``), so a value moved to another conversation or another
column does not open (rows within one conversation, or values within one column, could still be
swapped by someone who can write the database). Text that does not start with ``s1:``
is taken as written before encryption was turned on and returned as it is (re-encryption seals it).

Pure Python with ``cryptography`` (in both environments: 3.10 for Rasa, 3.11 for the rest)."""
from __future__ import annotations

import base64
import binascii
import os
import re
import sys
from typing import Dict, Iterable, Optional, Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "s1:"
_KEY_ID = re.compile(r"[0-9A-Za-z_-]{1,16}")
ENV = "DATA_KEYS"
# The associated data of the event broker's messages (rasa_runtime/event_broker.py, console/feed.py).
BROKER_CONTEXT = "rasa-event-broker"


class KeyringError(ValueError):
    """A keyring setting that cannot be used, or a sealed value whose key is not in the keyring."""


class SealedValueError(Exception):
    """A sealed value that does not open: damaged, moved to another row, or sealed under a key that
    is no longer in the keyring. Never answered with a guess: the caller reports it. (Not a
    ValueError: stock Rasa's ``session_scope`` takes any ValueError for a missing database schema
    and exits the process.)"""


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def _decode_key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise KeyringError("each key must be 32 bytes in URL-safe base64 (python -m textnorm.sealing new-key)")
    return raw


class Keyring:
    """The keys of one deployment: ``current`` seals, all of them open."""

    def __init__(self, keys: Iterable[Tuple[str, bytes]]) -> None:
        self._keys: Dict[str, AESGCM] = {}
        self.current: Optional[str] = None
        for key_id, raw in keys:
            if not _KEY_ID.fullmatch(key_id):  # never echoed: an operator may have pasted a key there
                raise KeyringError("a key id is 1-16 of [0-9A-Za-z_-] (DATA_KEYS is written id:key,id:key)")
            if key_id in self._keys:
                raise KeyringError(f"key id {key_id!r} is listed twice")
            self._keys[key_id] = AESGCM(raw)
            self.current = self.current or key_id

    @classmethod
    def parse(cls, setting: str) -> "Keyring":
        """``id:key,id:key``; an empty setting is an empty keyring (nothing sealed)."""
        pairs = []
        for part in (p.strip() for p in setting.split(",")):
            if not part:
                continue
            key_id, sep, key = part.partition(":")
            if not sep:
                raise KeyringError("DATA_KEYS is written id:key,id:key (the first key seals)")
            pairs.append((key_id.strip(), _decode_key(key.strip())))
        return cls(pairs)

    @classmethod
    def from_env(cls, name: str = ENV) -> "Keyring":
        return cls.parse(os.environ.get(name, ""))

    def __bool__(self) -> bool:
        return self.current is not None

    @property
    def ids(self) -> Tuple[str, ...]:
        return tuple(self._keys)

    def seal(self, text: str, context: str = "") -> str:
        """``text`` sealed under the current key, bound to ``context``; as it is with no key."""
        if self.current is None:
            return text
        nonce = os.urandom(12)
        body = self._keys[self.current].encrypt(nonce, text.encode("utf-8"), context.encode("utf-8"))
        return f"{PREFIX}{self.current}:{base64.urlsafe_b64encode(nonce + body).decode()}"

    def open(self, stored: str, context: str = "") -> str:
        """What ``seal`` was given; text written before sealing is returned as it is."""
        if not stored.startswith(PREFIX):
            return stored
        key_id, _, body = stored[len(PREFIX):].partition(":")
        aead = self._keys.get(key_id)
        if aead is None:
            raise SealedValueError(f"sealed under key {key_id!r}, which is not in DATA_KEYS")
        try:
            raw = base64.urlsafe_b64decode(body)
            return aead.decrypt(raw[:12], raw[12:], context.encode("utf-8")).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError) as e:
            raise SealedValueError(f"a value sealed under key {key_id!r} does not open ({type(e).__name__})") from e

    def key_of(self, stored: str) -> Optional[str]:
        """The id of the key ``stored`` is sealed under (None for text written in clear)."""
        return stored[len(PREFIX):].partition(":")[0] if stored.startswith(PREFIX) else None

    def is_current(self, stored: str) -> bool:
        return self.key_of(stored) == self.current


def keyring_setting(setting: str, key_file: Optional[str] = None) -> str:
    """The deployment's ``DATA_KEYS`` text: the setting when set; else, for the embedded default
    only, the keyring kept in ``key_file`` (``var/data.keys``), made with one new key the first time
    and readable by its owner only. Production sets ``DATA_KEYS`` (its settings refuse to start
    without it). The stack hands the text to every process it starts."""
    if setting.strip() or key_file is None:
        return setting
    if not os.path.exists(key_file):
        # Written whole under another name, then linked into place: a process starting at the same
        # time either finds no file or the whole keyring, never an empty one. The id is random, so a
        # generated key never shares an id with a deployment's key.
        os.makedirs(os.path.dirname(key_file) or ".", exist_ok=True)
        part = f"{key_file}.{os.getpid()}.part"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"d{os.urandom(3).hex()}:{new_key()}\n")
        try:
            os.link(part, key_file)
        except FileExistsError:  # another process made it first: theirs is the keyring
            pass
        finally:
            os.unlink(part)
    with open(key_file) as f:
        text = f.read().strip()
    if not text:
        raise KeyringError(f"{key_file} is empty: delete it to have a key made, or set DATA_KEYS")
    return text


def keyring_for(setting: str, key_file: Optional[str] = None) -> Keyring:
    return Keyring.parse(keyring_setting(setting, key_file))


def main(argv: Iterable[str]) -> int:
    args = list(argv)
    if args == ["new-key"]:
        print(new_key())
        return 0
    print("usage: python -m textnorm.sealing new-key", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
