"""Conversations written into a tracker store the way Rasa 3.6 writes them (the ``events`` table),
for the console's tests and its benchmark. Personal numbers in them are fictional but well-formed."""
from __future__ import annotations

import json
import random
import time
from typing import Any

from sqlalchemy import Engine, insert

from console.conversations import EVENTS
from textnorm.sealing import Keyring

# The personal numbers the tests look for on every page: none of them may appear in the clear.
PHONE = "13812345678"
ID_NUMBER = "371702198001011230"
PHONE_SPOKEN = "幺三八幺二三四五六七八"
BANK_CARD = "6222021234567890123"
SECRETS = (PHONE, ID_NUMBER, BANK_CARD, "12345678", "198001011230")

SCRIPTS: list[list[tuple[str, str, float]]] = [
    [("你好", "greet", 0.99), ("俺想查一下办件进度", "check_progress", 0.93), (f"手机号{PHONE}", "inform", 0.88)],
    [("我要交水费", "pay_bill", 0.97), (f"身份证{ID_NUMBER}", "inform", 0.91), ("好的", "affirm", 0.95)],
    [("路灯不亮了", "give_feedback", 0.62), (f"我电话是{PHONE_SPOKEN}", "inform", 0.55), ("转人工", "request_human", 0.98)],
    [("这个咋弄啊", "nlu_fallback", 0.31), (f"卡号{BANK_CARD}", "inform", 0.44), ("办身份证要带什么", "ask_guide", 0.9)],
]


def _event(sender: str, kind: str, ts: float, data: dict[str, Any], intent: str | None = None,
           action: str | None = None) -> dict[str, Any]:
    return {"sender_id": sender, "type_name": kind, "timestamp": ts, "intent_name": intent, "action_name": action,
            "data": json.dumps({"event": kind, "timestamp": ts, **data}, ensure_ascii=False)}


def conversation(sender: str, channel: str, script: list[tuple[str, str, float]], start: float,
                 rating: int | None = None) -> list[dict[str, Any]]:
    rows = [_event(sender, "action", start, {"name": "action_session_start"}, action="action_session_start")]
    ts = start
    for text, intent, conf in script:
        ts += 3
        md = {"channel": channel}
        if channel == "phone":
            md.update({"caller": PHONE, "asr_confidence": 0.71, "call_id": sender})
        rows.append(_event(sender, "user", ts, {
            "text": text, "input_channel": channel, "metadata": md,
            "parse_data": {"intent": {"name": intent, "confidence": conf}, "entities": [], "text": text}},
            intent=intent))
        action = {"nlu_fallback": "action_fallback", "request_human": "action_handoff"}.get(intent, "utter_ok")
        rows.append(_event(sender, "action", ts + 0.05, {"name": action, "policy": "RulePolicy", "confidence": 1.0},
                           action=action))
        rows.append(_event(sender, "bot", ts + 0.1, {"text": f"好的，已记下：{text}", "data": {"buttons": None},
                                                      "metadata": {}}))
        rows.append(_event(sender, "action", ts + 0.11, {"name": "action_listen"}, action="action_listen"))
    if rating:
        rows.append(_event(sender, "slot", ts + 1, {"name": "rating", "value": str(rating)}))
    return rows


def write_conversations(engine: Engine, n: int, seed: int = 0, days: int = 14,
                        keyring: Keyring | None = None) -> list[str]:
    """``n`` conversations spread over the last ``days`` days; returns their sender ids. With a
    ``keyring``, each row's event is sealed as the project's tracker store writes it."""
    EVENTS.metadata.create_all(engine)
    rnd = random.Random(seed)
    now = time.time()
    senders: list[str] = []
    batch: list[dict[str, Any]] = []
    for i in range(n):
        channel = ("wechat", "miniprogram", "phone", "rest")[i % 4]
        sender = f"{channel}-{seed}-{i:06d}"
        senders.append(sender)
        rows = conversation(sender, channel, SCRIPTS[i % len(SCRIPTS)], now - rnd.uniform(0, days * 86400))
        batch.extend({**r, "data": keyring.seal(r["data"], sender)} for r in rows) if keyring else batch.extend(rows)
        if len(batch) > 5000:
            with engine.begin() as conn:
                conn.execute(insert(EVENTS), batch)
            batch = []
    if batch:
        with engine.begin() as conn:
            conn.execute(insert(EVENTS), batch)
    return senders
