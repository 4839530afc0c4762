"""textnorm.sealing: sealed values open only with their key and where they belong; the keyring
setting is checked; the embedded default's key file is made once, readable by its owner only."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from textnorm.sealing import Keyring, KeyringError, SealedValueError, keyring_for, keyring_setting, new_key


def test_a_sealed_value_opens_with_its_key_and_context_only() -> None:
    k1, k2 = new_key(), new_key()
    ring = Keyring.parse(f"k1:{k1}")
    sealed = ring.seal("电话13800000001", "sender-a")
    assert sealed.startswith("s1:k1:") and "13800000001" not in sealed
    assert sealed != ring.seal("电话13800000001", "sender-a")  # a new nonce each time
    assert ring.open(sealed, "sender-a") == "电话13800000001"
    with pytest.raises(SealedValueError):
        ring.open(sealed, "sender-b")  # moved to another conversation
    with pytest.raises(SealedValueError, match="k1"):
        Keyring.parse(f"k2:{k2}").open(sealed, "sender-a")  # the key was removed
    with pytest.raises(SealedValueError):
        ring.open(sealed[:-6] + "AAAAAA", "sender-a")  # damaged
    with pytest.raises(SealedValueError):
        ring.open("s1:k1:not base64!", "sender-a")
    rotated = Keyring.parse(f"k2:{k2},k1:{k1}")
    assert rotated.open(sealed, "sender-a") == "电话13800000001"
    assert rotated.key_of(rotated.seal("x")) == "k2" and not rotated.is_current(sealed)


def test_text_written_before_sealing_is_read_as_it_is_and_no_keys_seal_nothing() -> None:
    assert Keyring.parse(f"k1:{new_key()}").open('{"event": "user"}') == '{"event": "user"}'
    empty = Keyring.parse("")
    assert not empty and empty.seal("13800000001") == "13800000001"


@pytest.mark.parametrize("setting", ["k1", f"k1:{new_key()[:-4]}", "k1:短", f"bad id!:{new_key()}",
                                     f"k1:{new_key()},k1:{new_key()}", f":{new_key()}"])
def test_a_keyring_that_cannot_be_used_is_refused(setting: str) -> None:
    with pytest.raises(KeyringError):
        Keyring.parse(setting)


def test_the_embedded_default_makes_its_key_file_once(tmp_path: Path) -> None:
    path = tmp_path / "var" / "data.keys"
    first = keyring_setting("", str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and first.startswith("d")
    assert keyring_setting("", str(path)) == first  # kept, not made again
    assert [p.name for p in path.parent.iterdir()] == ["data.keys"]  # no part file left
    setting = f"prod:{new_key()}"
    assert keyring_setting(setting, str(path)) == setting  # DATA_KEYS wins
    assert keyring_for("", str(path)).current == first.split(":")[0]
    other = tmp_path / "other" / "data.keys"
    assert keyring_setting("", str(other)).split(":")[0] != first.split(":")[0]  # never the same id twice
    path.write_text("")
    with pytest.raises(KeyringError, match="empty"):
        keyring_setting("", str(path))


def test_a_key_pasted_where_the_id_goes_is_not_echoed() -> None:
    key = new_key()
    with pytest.raises(KeyringError) as refused:
        Keyring.parse(f"{key}:{new_key()}")
    assert key[:8] not in str(refused.value)
