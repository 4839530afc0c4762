"""Reading Rasa's answer for the phone: sentences to say, keys to offer, and what the call does next."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voice.asr import DIGIT_PHRASES, YES_NO_PHRASES
from voice.wording import is_yes_no, sentences, speakable, spoken_choices


@dataclass
class Reply:
    lines: list[str] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # key -> payload, from the buttons
    handoff: bool = False  # the bot handed the caller to a person: say it, then end the session
    slow: bool = False  # "说慢点": the rest of the call at the slow rate
    expect_digits: bool = False  # the next answer is a number (the phone channel's "expect")

    @property
    def phrases(self) -> tuple[str, ...] | None:
        """What the recogniser should listen for next (None: free speech)."""
        if self.expect_digits:
            return DIGIT_PHRASES
        if is_yes_no(self.keys):
            return YES_NO_PHRASES
        return None


def read_reply(body: dict[str, Any] | None) -> Reply | None:
    """The phone channel's JSON ({"messages": [...], "expect": ...}); None when Rasa did not answer."""
    if body is None:
        return None
    reply = Reply(expect_digits=body.get("expect") == "digits")
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    # Keys a message sets itself (Rasa sends its custom part as a message of its own): the text
    # already says them ("现在办理请按1，转人工请按0。"), so the buttons are not read out.
    own_keys = next((keys for keys in map(own_keys_of, (m.get("custom") for m in messages)) if keys), {})
    reply.keys = own_keys
    for m in messages:
        if m.get("text"):
            reply.lines.extend(sentences(speakable(str(m["text"]))))
        custom = m.get("custom")
        if m.get("buttons") and not own_keys:
            said, reply.keys = spoken_choices(m["buttons"])
            reply.lines.extend(said)
        if isinstance(custom, dict):
            reply.handoff = reply.handoff or bool(custom.get("handoff"))
            if (custom.get("speech") or {}).get("rate") == "slow":
                reply.slow = True
    return reply


def own_keys_of(custom: Any) -> dict[str, str]:
    """Keys a message sets itself (``custom.keys``: key -> payload), said in its own text; only the
    phone's keys (0-9, *, #) and payloads that are requests ("/intent...") or words."""
    keys = custom.get("keys") if isinstance(custom, dict) else None
    if not isinstance(keys, dict):
        return {}
    return {k: v for k, v in keys.items()
            if isinstance(k, str) and len(k) == 1 and k in "0123456789*#" and isinstance(v, str) and 0 < len(v) <= 200}
