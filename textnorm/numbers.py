"""What a number a citizen gives is, by its length, prefix and check character.

Citizens answer with numbers out of order ("查一下" and an application number, an ID number where a
bill account was asked, a phone number where a place was asked). One table says what each kind of
number looks like, so the NLU (which routes a message by its number) and the actions (which refuse
a number of the wrong kind with a clear sentence) agree. Pure Python: both environments import it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from textnorm.ids import is_valid_id_number, is_valid_mobile
from textnorm.numerals import normalize_numbers

# The kinds, as the NLU's entity names (nlu_data/regexes.yml) and the names citizens hear.
APPLICATION = "application_number"  # 14 digits starting 20 (受理编号: year + serial)
TICKET = "ticket_number"            # 8 digits, not starting 0 (工单号)
PHONE = "phone_number"              # 11-digit mainland mobile
ID_NUMBER = "id_number"             # 18 characters, GB 11643 check
ACCOUNT = "account_number"          # 10 digits, not starting 0 (水电气户号)
ID_LAST4 = "id_last4"               # 3 digits and a digit or X

SPOKEN_NAME = {
    APPLICATION: "受理编号", TICKET: "工单号", PHONE: "手机号", ID_NUMBER: "身份证号", ACCOUNT: "户号",
    ID_LAST4: "身份证后4位",
}



def named(kind: str | None) -> str:
    """"这是身份证号。" for a number of a known kind given where another was asked; "" otherwise."""
    return f"这是{SPOKEN_NAME[kind]}。" if kind in SPOKEN_NAME else ""


_NUMBER = re.compile(r"(?<![0-9A-Za-z])[0-9]+[Xx]?(?![0-9A-Za-z])")

# Words around a number that say nothing but "here is my number" (or "no, it is"): what remains of a
# message after removing them and the number tells whether the number is all it says.
_FILLER = re.compile(
    "|".join(sorted((
        "不对", "不是", "错了", "说错了", "应该是", "我说错了", "改成", "换成", "重新说", "更正", "是", "就是",
        "查一下", "查一查", "查查", "查下", "帮我查", "帮忙查", "给我查", "给俺查", "帮俺查", "麻烦查", "看一下", "看看",
        "我的", "俺的", "俺", "我", "的", "这个", "那个", "号码", "编号", "受理编号", "办件编号", "回执", "工单号", "工单",
        "手机号", "手机", "电话", "电话号码", "身份证号", "身份证", "后四位", "最后四位", "尾号", "户号", "账号", "号",
        "手机号码", "身份证号码", "号码是", "联系电话", "联系方式", "受理号", "申请编号", "申请号", "缴费户号", "用户号",
        "单号", "工单编号", "留个", "记一下", "打这个",
        "嗯", "啊", "哦", "呢", "吧", "了", "呀", "一下", "请", "您", "麻烦", "帮忙", "帮我", "好", "吗", "多少", "写的",
        "查", "帮", "给", "看", "这", "那",
    ), key=len, reverse=True))
)
_PUNCT = re.compile(r"[\s,，。.!！?？:：;；、~～\-—]+")


@dataclass(frozen=True)
class FoundNumber:
    kind: str | None  # one of the kinds above, None for a number of no known shape
    value: str
    start: int
    end: int


def kind_of(number: str) -> str | None:
    """The kind of a number given as ASCII digits (and a final X), or None."""
    n = number.upper()
    if len(n) == 18 and is_valid_id_number(n):
        return ID_NUMBER
    if not n.isdigit():
        return ID_LAST4 if re.fullmatch(r"\d{3}X", n) else None
    if len(n) == 14 and n.startswith("20"):
        return APPLICATION
    if len(n) == 11 and is_valid_mobile(n):
        return PHONE
    if len(n) == 10 and n[0] != "0":
        return ACCOUNT
    if len(n) == 8 and n[0] != "0":
        return TICKET
    if len(n) == 4:
        return ID_LAST4
    return None


def find_numbers(text: str) -> list[FoundNumber]:
    """Every number in ``text`` (spoken digits normalised first), with its kind."""
    norm = normalize_numbers(text)
    return [FoundNumber(kind_of(m.group(0)), m.group(0).upper(), m.start(), m.end()) for m in _NUMBER.finditer(norm)]


def only_number(text: str) -> FoundNumber | None:
    """The number, when a message says nothing else: "查一下20261101000001", "不对，是1000000002",
    "手机号13800000001". None when it says more (a matter, a question) or holds no or several numbers."""
    norm = normalize_numbers(text)
    found = [FoundNumber(kind_of(m.group(0)), m.group(0).upper(), m.start(), m.end()) for m in _NUMBER.finditer(norm)]
    if len(found) != 1 or len(found[0].value) < 4:
        return None
    rest = norm[:found[0].start] + " " + norm[found[0].end:]
    rest = _PUNCT.sub("", _FILLER.sub("", rest))
    return found[0] if not rest else None
