"""The plain logic behind the NLU components of ``nlu/routing.py``: no Rasa, so both environments
import it and the application's tests exercise it directly."""
from __future__ import annotations

import re
from typing import AbstractSet, Dict, List, Optional, Set, Tuple

_HAN_RUN = re.compile(r"[\u4e00-\u9fff]+")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
# Anything that is neither Chinese, Latin, a digit, space nor punctuation: other scripts, emoji.
_OTHER = re.compile(r"[^\u4e00-\u9fffA-Za-z0-9\s\u3000-\u303f\uff00-\uffef!-/:-@\[-`{-~]")


def units(text: str) -> List[Tuple[str, str]]:
    """The pieces of a message the guard judges: (kind, piece)."""
    out: List[Tuple[str, str]] = [("char", c) for run in _HAN_RUN.findall(text) for c in run]
    out.extend(("latin", w.lower()) for w in _LATIN_WORD.findall(text))
    out.extend(("other", c) for c in _OTHER.findall(text))
    return out


def vocabulary(text: str) -> Tuple[Set[str], Set[str]]:
    """What a training example teaches the guard: its Chinese characters and Latin words."""
    return {c for run in _HAN_RUN.findall(text) for c in run}, {w.lower() for w in _LATIN_WORD.findall(text)}


def known_share(text: str, chars: AbstractSet[str], latin: AbstractSet[str]) -> Optional[float]:
    """The share of a message's units the training data knows; None for a message with none
    (only digits or punctuation)."""
    judged = units(text)
    if not judged:
        return None
    known = sum((piece in chars) if kind == "char" else (piece in latin) if kind == "latin" else False
                for kind, piece in judged)
    return known / len(judged)


# The task a number of each kind serves (textnorm.numbers kinds): a classifier's choice of it stands.
TASKS_OF: Dict[str, Tuple[str, ...]] = {
    "application_number": ("check_progress",), "phone_number": ("check_progress",),
    "ticket_number": ("check_ticket",), "account_number": ("pay_bill",), "id_number": ("pay_bill",),
}

# Requests a later clause can make: the clause must ask for the task with a verb near its start
# ("还有交个水费", "顺便查一下工单"), not merely mention its words ("然后他们还乱收水费", "还有没有别的缴费方式").
SECOND_REQUESTS: Tuple[Tuple[str, "re.Pattern[str]"], ...] = (
    ("check_ticket", re.compile(r"^[^，,。？?]{0,6}查[^，,。？?]{0,4}工单")),
    ("check_progress", re.compile(r"^[^，,。？?]{0,6}查[^，,。？?]{0,6}(进度|办件|办到哪)")),
    ("pay_bill", re.compile(r"^[^，,。？?]{0,6}[交缴][^，,。？?]{0,4}(费|医保|养老保险)")),
    ("give_feedback", re.compile(r"^[^，,。？?]{0,4}(投诉|举报|提个?建议|求助)")),
)
# The tasks that run as a flow whose end can offer the second request (actions/common.py OFFERS).
FLOW_INTENTS = frozenset(intent for intent, _ in SECOND_REQUESTS)
_CLAUSE_MARK = re.compile(r"还有|另外|顺便|然后|还要|还想|再帮我|再给我|再帮俺|并且|同时|以及")
_ASKS_ABOUT = re.compile(r"没有|吗|么|怎么|咋|方式|多少|哪")


def second_request(text: str, first_intent: Optional[str]) -> Optional[str]:
    """The task a later clause of ``text`` asks for, when the first is another task."""
    if first_intent not in FLOW_INTENTS:
        return None
    parts = _CLAUSE_MARK.split(text, maxsplit=1)
    if len(parts) < 2 or _ASKS_ABOUT.search(parts[1]):
        return None
    later = parts[1].lstrip("，, ")
    for intent, asks in SECOND_REQUESTS:
        if asks.search(later):
            return intent if intent != first_intent else None
    return None
