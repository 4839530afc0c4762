"""What the phone line says, as text: speakable sentences, numbers in groups, keys said aloud,
the gateway's own prompts, and long answers cut into turns a caller can follow.

Everything here is pure text in, text out, so every sentence the line can say can be checked
(tests/voice/test_wording.py runs them all through espeak-ng and refuses any that switches to
English)."""
from __future__ import annotations

import re
from typing import Any

from textnorm.numerals import spell_digits

# The key scheme (README "电话热线", deploy/asterisk/README.md). One key reaches a person from any
# state, number entry included, so it cannot be a digit.
HUMAN_KEY = "*"
END_KEY = "#"  # ends a keyed number; during a split answer, the next part; else says the last prompt again
MENU_HUMAN_ALIAS = "0"  # in a menu (not while a number is keyed), 0 also reaches a person
HUMAN_PAYLOAD = "/request_human"
GREET_PAYLOAD = "/greet"
REMINDER_PAYLOAD = "/reminder_call"  # the first turn of a call the assistant placed (services/calls.py)
# Sent to Rasa when a call ends: the default intent that restarts the conversation, so no form is
# left active in the tracker (Rasa's RulePolicy handles it before any form or rule).
CALL_ENDED_PAYLOAD = "/restart"

# What the gateway itself says (everything else comes from Rasa). Short, one idea per sentence.
PROMPTS = {
    "still_there": "您还在吗？需要帮忙请直接说，转人工按星号键。",
    "goodbye_silence": "没有听到您说话，先挂断了。需要时请再打来。再见。",
    "rasa_down": "不好意思，系统有点忙。请稍后再说一遍，或者按星号键转人工。",
    "to_human": "好的，马上为您转人工，请稍等。",
    "busy": "现在来电的人多，请稍后再打。再见。",
    "more": "接着听，请按井号键。",
    "human_hint": "转人工按星号键。",
}

_URL = re.compile(r"https?://\S+")
_MARKUP = re.compile(r"[*#>`_\[\]{}|<\"]")
_KEY_NAME = re.compile(r"按\s*([#*＃＊])\s*号?\s*键?")
_MONEY = re.compile(r"(\d+)\.(\d)(\d)?\s*元")
_DECIMAL = re.compile(r"(\d+)\.(\d+)")
_YEAR = re.compile(r"(?<!\d)(\d{4})(?=年)")
_LONG_NUMBER = re.compile(r"(?<!\d)\d(?:[\d\- ]*\d)?[Xx]?(?!\d)")
_LIST_MARK = re.compile(r"(?m)^\s*(\d{1,2})[.、)]\s*")
# Latin words that reach the line from answers; everything else Latin is spelled by the voice as
# pinyin, which the language check (tests/voice/test_wording.py) would catch.
LATIN_WORDS = {"APP": "手机应用", "App": "手机应用", "app": "手机应用", "ID": "编号", "OK": "好", "PDF": "电子文件",
               "EMS": "邮政快递", "WiFi": "无线网", "CA": "数字证书", "IC": "智能"}
_LATIN = re.compile(r"[A-Za-z]+")
DIGIT_NAMES = {"0": "零", "1": "一", "2": "二", "3": "三", "4": "四", "5": "五", "6": "六", "7": "七", "8": "八", "9": "九"}


def _key_name(m: re.Match[str]) -> str:
    return "按井号键" if m.group(1) in "#＃" else "按星号键"


def _money(m: re.Match[str]) -> str:
    yuan, jiao, fen = m.group(1), m.group(2), m.group(3) or "0"
    out = f"{int(yuan)}元"
    if jiao != "0" or fen != "0":
        out += f"{DIGIT_NAMES[jiao]}角" if jiao != "0" else "零"
    if fen != "0":
        out += f"{DIGIT_NAMES[fen]}分"
    return out


def say_digits(digits: str) -> str:
    """A number read digit by digit, in the groups people say: up to six digits in one breath
    (12345), mobile numbers 3-4-4, everything else in fours."""
    if len(digits) <= 6:
        return spell_digits(digits, group=6)
    if len(digits) == 11 and digits.startswith("1"):
        return spell_digits(digits[:3], group=3) + "，" + spell_digits(digits[3:])
    return spell_digits(digits)


def _long_number(m: re.Match[str]) -> str:
    """A number of five digits or more (ticket, application, phone, hotline) is read digit by
    digit; shorter ones are quantities and stay numbers."""
    raw = m.group(0)
    digits = "".join(c for c in raw if c.isdigit() or c in "Xx")
    if len(digits.rstrip("Xx")) < 5:
        return raw
    return say_digits(digits)


def speakable(text: str) -> str:
    """What can be said: no links or markup, keys and numbers in words, line breaks as pauses."""
    text = _URL.sub("", text)
    text = _KEY_NAME.sub(_key_name, text)
    text = _LIST_MARK.sub(lambda m: f"第{m.group(1)}，", text)
    text = _MARKUP.sub("", text)
    text = re.sub(r"(?<=[\u3400-\u9fff])\s*/\s*(?=[\u3400-\u9fff])", "或", text)  # 户号/用户编号
    text = _MONEY.sub(_money, text)
    text = _YEAR.sub(lambda m: "".join(DIGIT_NAMES[c] for c in m.group(1)), text)
    text = _DECIMAL.sub(lambda m: m.group(1) + "点" + "".join(DIGIT_NAMES[c] for c in m.group(2)), text)
    text = _LONG_NUMBER.sub(_long_number, text)
    text = _LATIN.sub(lambda m: LATIN_WORDS.get(m.group(0), m.group(0)), text)
    text = re.sub(r"\s*\n+\s*", "。", text)
    return re.sub(r"。{2,}", "。", text).strip(" 。")


def sentences(text: str) -> list[str]:
    """Split at sentence ends so the first sentence can play while the next renders."""
    parts = [p.strip() for p in re.split(r"(?<=[。！？!?；;])", text) if p.strip(" 。！？!?；;")]
    return [p if p[-1] in "。！？!?；;" else p + "。" for p in parts]


def readback(digits: str) -> str:
    """The keyed number read back in groups: '您输入的是：二零二六，幺幺零幺。'"""
    return f"您输入的是：{say_digits(digits)}。"


def spoken_choices(buttons: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """Buttons said with their keys ("查办件进度请按1，缴费请按2。") and the key -> payload map.

    Keys are 1, 2, 3 ... in order, unless every title starts with its own digit ("5分 很满意"),
    which is then the key. The hand-off button is the human key (*), as it is everywhere on the
    line, said in a sentence of its own."""
    usable = [(str(b.get("title", "")).strip(), str(b.get("payload", ""))) for b in buttons if b.get("payload")]
    others = [(t, p) for t, p in usable if p != HUMAN_PAYLOAD]
    leading = [t[:1] for t, _ in others]
    own_digits = all(d.isdigit() and d != "0" for d in leading) and len(set(leading)) == len(leading)
    keys: dict[str, str] = {}
    said: list[str] = []
    for n, (title, payload) in enumerate(others[:9], start=1):
        key = title[0] if own_digits else str(n)
        keys[key] = payload
        said.append(f"{''.join(title.split())}按{key}")
    per = -(-len(said) // -(-len(said) // 4)) if said else 1  # at most four choices a sentence, evenly
    lines = ["，".join(said[i:i + per]) + "。" for i in range(0, len(said), per)]
    if len(others) < len(usable):
        keys[HUMAN_KEY] = HUMAN_PAYLOAD
        lines.append(PROMPTS["human_hint"])
    return lines, keys


def is_yes_no(keys: dict[str, str]) -> bool:
    payloads = {p.split("{")[0] for p in keys.values()}
    return bool(payloads) and payloads <= {"/affirm", "/deny", HUMAN_PAYLOAD}


def seconds_of(line: str, rate_wpm: int) -> float:
    """About how long espeak-ng takes to say ``line`` at ``rate_wpm``: 0.32 s a character at 150
    words a minute, 0.3 s a pause (measured on cmn-latn-pinyin; tests/voice/test_tts.py checks it)."""
    chars = sum(1 for c in line if not c.isspace())
    pauses = sum(1 for c in line if c in "，。！？；：、")
    return ((chars - pauses) * 0.32 + pauses * 0.3) * 150 / rate_wpm


def split_turns(lines: list[str], rate_wpm: int, max_s: float = 15.0, lead_s: float = 0.0) -> list[list[str]]:
    """Cut one answer into parts of at most ``max_s`` seconds of speech each (a sentence is never
    cut; one longer than ``max_s`` is a part of its own). The caller hears one part, then
    PROMPTS["more"], and the next part on END_KEY, on "接着说", or after a short silence.
    ``lead_s``: speech already said before the first part in the same breath (a keyed number's read-back)."""
    if lead_s + sum(seconds_of(line, rate_wpm) for line in lines) <= max_s:
        return [lines]
    parts: list[list[str]] = []
    budget = max_s - seconds_of(PROMPTS["more"], rate_wpm)  # each part but the last ends with "接着听"
    current: list[str] = []
    used = lead_s
    for line in lines:
        s = seconds_of(line, rate_wpm)
        if current and used + s > budget:
            parts.append(current)
            current, used = [], 0.0
        current.append(line)
        used += s
    if current:
        parts.append(current)
    return parts
