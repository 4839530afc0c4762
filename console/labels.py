"""What staff read instead of codes: the assistant's intents in Chinese (the code stays beside it,
for the exports), and a conversation's outcome."""
from __future__ import annotations

from typing import Any

INTENT_NAMES = {
    "affirm": "肯定（好、是、对）", "ask_guide": "问办事指南", "bot_challenge": "问是不是机器人", "cancel": "不办了",
    "check_progress": "查办件进度", "check_ticket": "查工单", "choose": "选第几个", "deny": "否定（不、不用）",
    "give_feedback": "反映问题", "goodbye": "再见", "greet": "打招呼", "inform": "提供信息（号码等）",
    "out_of_scope": "与政务无关", "pay_bill": "缴费", "rate": "评分", "repeat": "再说一遍", "request_human": "转人工",
    "slow_down": "说慢点", "thank": "感谢", "nlu_fallback": "没听懂",
}


def intent_label(code: str | None) -> str:
    """"查办件进度 · check_progress"; an unknown code as it is."""
    if not code:
        return ""
    name = INTENT_NAMES.get(code)
    return f"{name} · {code}" if name else code


def outcome(summary: Any) -> str:
    """How a conversation ended, for the list: handed to a person, not understood, or self-service."""
    if summary.handoff:
        return "转人工"
    if summary.fallback:
        return "有没听懂"
    return "自助办结" if summary.turns else "—"
