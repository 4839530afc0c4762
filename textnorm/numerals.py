"""Turn numbers said or typed in Chinese into ASCII digits.

Citizens read out application, phone and ID-card numbers digit by digit, and speech
recognisers write them as Chinese characters ("幺三八 幺二三四 五六七八"). Only runs of at
least three digits (or runs mixing Chinese and ASCII digits) are rewritten, so words such as
"一下", "两个" or "最后四位" stay as they are.
"""
from __future__ import annotations

import re

DIGITS: dict[str, str] = {}
for _digit, _chars in {
    "0": "0０零〇○洞",
    "1": "1１一幺壹",
    "2": "2２二两貳贰",
    "3": "3３三叁",
    "4": "4４四肆",
    "5": "5５五伍",
    "6": "6６六陆",
    "7": "7７七柒拐",
    "8": "8８八捌",
    "9": "9９九玖勾",
}.items():
    for _c in _chars:
        DIGITS[_c] = _digit

# Separators people put inside numbers: spaces (ASR output), hyphens, dots in spoken pauses.
_SEPARATORS = " \t\u3000-－—、，,"
_CHECK_X = "XxＸｘ×叉"
_DIGIT_CLASS = "".join(DIGITS)
_RUN = re.compile(
    f"[{re.escape(_DIGIT_CLASS)}](?:[{re.escape(_SEPARATORS)}]*[{re.escape(_DIGIT_CLASS)}])*"
    f"(?:[{re.escape(_SEPARATORS)}]*[{re.escape(_CHECK_X)}](?![A-Za-z]))?"
)
MIN_RUN = 3


def _convert(run: str) -> str | None:
    digits = [DIGITS[c] for c in run if c in DIGITS]
    tail = "X" if run[-1] in _CHECK_X else ""
    has_ascii = any(c in "0123456789０１２３４５６７８９" for c in run)
    has_chinese = any(c in DIGITS and c not in "0123456789０１２３４５６７８９" for c in run)
    if tail and len(digits) not in (3, 17):
        return None  # only an ID card number (or its last four) ends with X
    if len(digits) >= MIN_RUN or (has_ascii and has_chinese) or (has_ascii and len(digits) >= 2):
        return "".join(digits) + tail
    return None


def normalize_numbers(text: str) -> str:
    """Rewrite digit runs in ``text`` as ASCII digits, dropping separators inside them."""

    def repl(match: re.Match[str]) -> str:
        run = match.group(0)
        converted = _convert(run)
        if converted is None and run[-1] in _CHECK_X:
            # Not an ID number: convert the digits, leave the trailing letter alone.
            body = run.rstrip(_CHECK_X + _SEPARATORS)
            converted = _convert(body)
            if converted is not None:
                return converted + run[len(body):]
        return run if converted is None else converted

    return _RUN.sub(repl, text)


def digits_only(text: str) -> str:
    """Normalise ``text`` and keep only its digits (and a final X of an ID card number)."""
    norm = normalize_numbers(text)
    kept = "".join(c for c in norm if c.isascii() and (c.isdigit() or c in "Xx"))
    return kept.upper()


def spell_digits(number: str, group: int = 4) -> str:
    """Spell a number for reading aloud, digit by digit in groups: '1381' -> '幺三八幺'."""
    names = {"0": "零", "1": "幺", "2": "二", "3": "三", "4": "四", "5": "五",
             "6": "六", "7": "七", "8": "八", "9": "九", "X": "叉"}
    spelled = [names.get(c, c) for c in number.upper()]
    groups = ["".join(spelled[i:i + group]) for i in range(0, len(spelled), group)]
    return "，".join(groups)
