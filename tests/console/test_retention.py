"""Retention (console/retention.py): conversations, call records and recordings past the period
are deleted as a whole; newer ones, and a conversation that came back to life, stay."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, insert, select

from console.conversations import EVENTS, ConversationIndex
from console.retention import purge
from services.db import make_engine, make_sessionmaker
from services.migrate import upgrade
from services.models import AuditEntry, ConversationSummary, MessageAnnotation, PhoneCall, PhoneTurn
from services.settings import ROOT
from tests.console.synthetic import SCRIPTS, conversation, write_conversations

DAY = 86400.0


def test_old_conversations_calls_and_recordings_go_new_ones_stay(tmp_path: Path) -> None:
    heze = make_engine(f"sqlite:///{tmp_path / 'heze.db'}")
    upgrade(heze)
    sessions = make_sessionmaker(heze)
    tracker = make_engine(f"sqlite:///{tmp_path / 'tracker.db'}")
    recent = write_conversations(tracker, 6, days=10)
    now = time.time()
    with tracker.begin() as t:
        t.execute(insert(EVENTS), conversation("old-1", "phone", SCRIPTS[0], now - 200 * DAY))
        t.execute(insert(EVENTS), conversation("old-2", "wechat", SCRIPTS[1], now - 400 * DAY))
        # came back: an old session and a new one
        t.execute(insert(EVENTS), conversation("back-1", "rest", SCRIPTS[2], now - 300 * DAY))
        t.execute(insert(EVENTS), conversation("back-1", "rest", SCRIPTS[3], now - 2 * DAY))
    ConversationIndex(tracker, sessions).sync()
    old_wav, new_wav = tmp_path / "old-1.wav", tmp_path / "new.wav"
    old_wav.write_bytes(b"RIFF"), new_wav.write_bytes(b"RIFF")
    utc = dt.timezone.utc
    with sessions() as s:
        s.add(MessageAnnotation(sender_id="old-1", event_id=1, text="手机号138****5678", intent="inform", flagged=True,
                                username="rev", updated_at=dt.datetime.now(utc)))
        old_call = PhoneCall(call_id="old-1", transport="audiosocket", caller="138****0001",
                             started_at=dt.datetime.fromtimestamp(now - 200 * DAY, utc), recording=str(old_wav))
        s.add(old_call)
        s.flush()
        s.add(PhoneTurn(call_pk=old_call.id, seq=1, kind="speech", transcript="查进度",
                        created_at=old_call.started_at))  # with turns: once an IntegrityError and no purge
        s.add(PhoneCall(call_id="new-1", transport="audiosocket", caller="138****0002", started_at=dt.datetime.fromtimestamp(now - DAY, utc),
                        recording=str(new_wav)))
        s.commit()

    done = purge(tracker, sessions, days=180)
    assert (done.conversations, done.calls, done.recordings) == (2, 1, 1)  # old-1 and old-2; back-1 lives on
    with tracker.connect() as t:
        left = dict(t.execute(select(EVENTS.c.sender_id, func.min(EVENTS.c.timestamp)).group_by(EVENTS.c.sender_id)).all())
    assert set(left) == set(recent) | {"back-1"}
    assert left["back-1"] > now - 3 * DAY  # only the old session of a conversation that came back went
    with sessions() as s:
        assert set(s.scalars(select(ConversationSummary.sender_id))) == set(recent) | {"back-1"}
        back = s.get(ConversationSummary, "back-1")
        assert back is not None and back.turns == len(SCRIPTS[3]) and "路灯" not in back.text  # the old session's words
        assert s.scalars(select(MessageAnnotation)).all() == []
        assert [c.call_id for c in s.scalars(select(PhoneCall))] == ["new-1"] and s.scalars(select(PhoneTurn)).all() == []
        (entry,) = s.scalars(select(AuditEntry).where(AuditEntry.action == "purge")).all()
        assert "2 conversations" in (entry.detail or "")
    assert not old_wav.exists() and new_wav.exists()
    assert purge(tracker, sessions, days=180).conversations == 0  # nothing more to do
    assert purge(tracker, sessions, days=0).conversations == 0  # 0 keeps everything


def test_the_purge_command(tmp_path: Path) -> None:
    tracker = make_engine(f"sqlite:///{tmp_path / 'tracker.db'}")
    with tracker.begin() as t:
        EVENTS.metadata.create_all(t)
        t.execute(insert(EVENTS), conversation("old-1", "phone", SCRIPTS[0], time.time() - 365 * DAY))
    env = {"HEZE_DB_URL": f"sqlite:///{tmp_path / 'heze.db'}", "TRACKER_DB": str(tmp_path / "tracker.db"),
           "CONSOLE_RETENTION_DAYS": "30", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "console", "purge"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "删除了 1 个对话" in out.stdout and "保留 30 天" in out.stdout


def test_the_rebuild_command_fills_what_an_upgrade_added(tmp_path: Path) -> None:
    """Summaries read before migration 0008 have no entities/actions: `console rebuild` fills them
    from the events, and keeps what reviewers wrote."""
    heze = make_engine(f"sqlite:///{tmp_path / 'heze.db'}")
    upgrade(heze)
    sessions = make_sessionmaker(heze)
    tracker = make_engine(f"sqlite:///{tmp_path / 'tracker.db'}")
    write_conversations(tracker, 4)
    ConversationIndex(tracker, sessions).sync()
    with sessions() as s:
        for x in s.scalars(select(ConversationSummary)):
            x.entities, x.actions, x.note = " ", " ", "已回电"
        s.commit()
    env = {"HEZE_DB_URL": f"sqlite:///{tmp_path / 'heze.db'}", "TRACKER_DB": str(tmp_path / "tracker.db"),
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "console", "rebuild"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "重新统计了 4 个对话" in out.stdout
    with sessions() as s:
        rows = list(s.scalars(select(ConversationSummary)))
    assert all("utter_ok" in x.actions or "action_fallback" in x.actions for x in rows)
    assert all(x.note == "已回电" and x.turns == 3 for x in rows)
