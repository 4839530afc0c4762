"""Key rotation (console/rekey.py): rows in clear and rows under an old key end up under the new key,
the console reads them with the new key alone, and a row no listed key opens stops the run."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import StatementError

from console.conversations import EVENTS, ConversationIndex, transcript
from console.rekey import rekey
from services.db import make_engine, make_sessionmaker
from services.migrate import upgrade
from services.settings import ROOT
from tests.console.synthetic import PHONE, SCRIPTS, conversation
from textnorm.masking import mask
from textnorm.sealing import Keyring, SealedValueError, new_key

K1, K2 = f"k1:{new_key()}", f"k2:{new_key()}"


def sealed(rows: list[dict], keyring: Keyring) -> list[dict]:
    return [{**r, "data": keyring.seal(r["data"], r["sender_id"])} for r in rows]


def test_rotation_moves_every_row_to_the_new_key(tmp_path: Path) -> None:
    tracker = make_engine(f"sqlite:///{tmp_path / 'tracker.db'}")
    EVENTS.metadata.create_all(tracker)
    now = time.time()
    old = Keyring.parse(K1)
    with tracker.begin() as t:
        t.execute(insert(EVENTS), conversation("phone-clear", "phone", SCRIPTS[0], now - 100))  # before sealing
        t.execute(insert(EVENTS), sealed(conversation("phone-k1", "phone", SCRIPTS[1], now - 50), old))
    both = Keyring.parse(f"{K2},{K1}")
    done = rekey(tracker, both, batch=7)  # several batches
    with tracker.connect() as t:
        rows = t.execute(select(EVENTS.c.sender_id, EVENTS.c.data)).all()
    assert done.read == len(rows) and done.sealed + done.moved == len(rows)
    assert done.sealed == sum(r.sender_id == "phone-clear" for r in rows)
    assert {both.key_of(r.data) for r in rows} == {"k2"}
    assert all(PHONE not in r.data for r in rows)
    assert rekey(tracker, both).sealed == rekey(tracker, both).moved == 0  # nothing left to do
    heze = make_engine(f"sqlite:///{tmp_path / 'heze.db'}")
    upgrade(heze)
    sessions = make_sessionmaker(heze)
    new_only = Keyring.parse(K2)  # the old key removed after the run
    ConversationIndex(tracker, sessions, keyring=new_only).sync()
    with sessions() as s:
        said = [t.text for t in transcript(tracker, s, "phone-k1", keyring=new_only) if t.kind == "user"]
    assert said == [mask(text) for text, _, _ in SCRIPTS[1]] and len(said) == len(SCRIPTS[1])


def test_a_row_no_key_opens_stops_the_run_before_anything_is_written(tmp_path: Path) -> None:
    """The wrong DATA_KEYS in the operator's shell: rows in clear are not sealed under it either."""
    tracker = make_engine(f"sqlite:///{tmp_path / 'tracker.db'}")
    EVENTS.metadata.create_all(tracker)
    clear = conversation("clear", "rest", SCRIPTS[0], time.time() - 10)
    with tracker.begin() as t:
        t.execute(insert(EVENTS), clear)
        t.execute(insert(EVENTS), sealed(conversation("lost", "rest", SCRIPTS[2], time.time()), Keyring.parse(K1)))
    with pytest.raises(SealedValueError, match=f"events row {len(clear) + 1}: .*nothing was changed"):
        rekey(tracker, Keyring.parse(K2), batch=3)
    with tracker.connect() as t:
        keys = [Keyring.parse(K1).key_of(d) for d in t.execute(select(EVENTS.c.data).order_by(EVENTS.c.id)).scalars()]
    assert keys == [None] * len(clear) + ["k1"] * (len(keys) - len(clear))


def test_the_command_rotates_and_reports(tmp_path: Path) -> None:
    tracker = make_engine(f"sqlite:///{tmp_path / 'tracker.db'}")
    EVENTS.metadata.create_all(tracker)
    with tracker.begin() as t:
        t.execute(insert(EVENTS), sealed(conversation("cli", "rest", SCRIPTS[0], time.time()), Keyring.parse(K1)))
    env = {**os.environ, "TRACKER_DB": str(tmp_path / "tracker.db"), "HEZE_DB_URL": f"sqlite:///{tmp_path / 'heze.db'}",
           "DATA_KEYS": f"{K2},{K1}", "HEZE_ENV": "test"}
    result = subprocess.run([sys.executable, "-m", "console", "rekey"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "moved to key k2" in result.stdout
    # a keyring that cannot open the rows (the old key dropped before the run): refused, with the row
    result = subprocess.run([sys.executable, "-m", "console", "rekey"], cwd=ROOT, env={**env, "DATA_KEYS": f"k3:{new_key()}"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "events row 1" in result.stderr


def test_personal_fields_of_the_service_database_are_sealed_and_rekeyed(tmp_path: Path) -> None:
    from services import sealed
    from services.models import FeedbackTicket, PhoneCall, SmsOutbox
    from console.rekey import rekey_service_data
    import datetime as dt

    heze = make_engine(f"sqlite:///{tmp_path / 'heze.db'}")
    upgrade(heze)
    sessions = make_sessionmaker(heze)
    before = sealed.keyring()
    try:
        sealed.use(Keyring.parse(K1))
        with sessions() as s:
            s.add(FeedbackTicket(number="T0000001", category="complaint", content=f"路灯坏了，电话{PHONE}",
                                 location="牡丹区中华路88号", contact_phone=PHONE, department="城管",
                                 due_date=dt.date(2026, 12, 20), channel="wechat", sender_id="s1"))
            s.add(SmsOutbox(phone=PHONE, text="您的工单T0000001已受理"))
            s.add(PhoneCall(call_id="call-1", transport="audiosocket", caller=PHONE,
                            started_at=dt.datetime.now(dt.timezone.utc)))
            s.commit()
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("heze.db*"))
        for clear in (PHONE, "牡丹区中华路88号", "路灯坏了", "已受理"):
            assert clear.encode() not in raw, clear
        with sessions() as s:  # the code reads plain text
            ticket = s.scalars(select(FeedbackTicket)).one()
            assert (ticket.contact_phone, ticket.location) == (PHONE, "牡丹区中华路88号")
        both = Keyring.parse(f"{K2},{K1}")
        done = rekey_service_data(heze, both)
        assert (done.moved, done.sealed) == (6, 0)  # ticket 3 + sms 2 + call 1 fields
        sealed.use(Keyring.parse(K2))  # the old key gone
        with sessions() as s:
            assert s.scalars(select(SmsOutbox.phone)).one() == PHONE
            assert s.scalars(select(PhoneCall.caller)).one() == PHONE
    finally:
        sealed.use(before)


def test_a_process_without_keys_never_writes_a_personal_field_in_clear(tmp_path: Path) -> None:
    from services import sealed
    from services.models import SmsOutbox
    from textnorm.sealing import KeyringError

    heze = make_engine(f"sqlite:///{tmp_path / 'heze.db'}")
    upgrade(heze)
    before = sealed.keyring()
    try:
        sealed.use(Keyring.parse(""))
        with make_sessionmaker(heze)() as s:
            s.add(SmsOutbox(phone=PHONE, text="您好"))
            with pytest.raises(StatementError, match="no DATA_KEYS: sms_outbox.phone is not written in clear") as refused:
                s.commit()
        assert isinstance(refused.value.orig, KeyringError)
    finally:
        sealed.use(before)
    assert PHONE.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("heze.db*"))
