"""Pinyin of Chinese text, as a telephone recogniser confuses it.

A recogniser on 8 kHz speech writes the right sounds with the wrong characters: 半件 for 办件, 功单 for
工单, 宜宝 for 医保, 残疾症 for 残疾证, 按 for 俺. Toneless pinyin makes those pairs equal; merging the
finals and initials that Shandong speakers and small recognisers confuse (zh/z, ch/c, sh/s, -ng/-n,
n/l) makes more of them equal. Pure Python over pypinyin, so both environments can import it.
"""
from __future__ import annotations

import re
from functools import lru_cache

from pypinyin import Style, lazy_pinyin

_HAN = re.compile(r"[\u4e00-\u9fff]")
# Order matters: retroflex initials first, then nasal finals.
_FUZZY = ((re.compile(r"^([zcs])h"), r"\1"), (re.compile(r"^n(?=[^g])"), "l"), (re.compile(r"ng$"), "n"))


@lru_cache(maxsize=8192)
def fuzzy(syllable: str) -> str:
    """One toneless syllable with the usual confusions merged: 'zheng' -> 'zen', 'ning' -> 'lin'."""
    for pattern, repl in _FUZZY:
        syllable = pattern.sub(repl, syllable)
    return syllable


def syllables(text: str, merge: bool = True) -> list[str]:
    """The syllables of the Chinese characters in ``text`` (other characters are left out)."""
    han = "".join(_HAN.findall(text))
    if not han:
        return []
    out = lazy_pinyin(han, style=Style.NORMAL, errors="ignore")
    return [fuzzy(s) for s in out] if merge else out


def ngrams(items: list[str], n: int) -> list[str]:
    return ["_".join(items[i:i + n]) for i in range(len(items) - n + 1)]


def token_features(token_text: str) -> list[str]:
    sy = syllables(token_text)
    return [f"t1:{s}" for s in sy] + [f"t2:{g}" for g in ngrams(sy, 2)]


def sentence_features(text: str, max_n: int = 3) -> list[str]:
    sy = syllables(text)
    return [f"s{n}:{g}" for n in range(1, max_n + 1) for g in ngrams(sy, n)]
