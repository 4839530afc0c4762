"""The plain logic of the NLU components: sounds, the out-of-domain measure, a second request."""
from __future__ import annotations

import pytest

from nlu.phonetic import sentence_features, syllables
from nlu.signals import known_share, second_request, vocabulary


@pytest.mark.parametrize(("heard", "meant"), [
    ("半件", "办件"), ("功单", "工单"), ("宜宝", "医保"), ("残疾症", "残疾证"), ("按", "俺"), ("高领捕贴", "高龄补贴"),
])
def test_a_recognisers_homophones_sound_alike(heard: str, meant: str) -> None:
    assert syllables(heard) == syllables(meant)
    assert set(sentence_features(heard)) == set(sentence_features(meant))


def test_different_words_sound_different() -> None:
    assert syllables("工单") != syllables("进度") and syllables("人工") != syllables("员工")


KNOWN_CHARS, KNOWN_LATIN = set(), set()
for example in ("俺想查一下办件进度", "交水费", "转人工", "你好 hello", "路灯坏了半个月", "谢谢"):
    chars, latin = vocabulary(example)
    KNOWN_CHARS |= chars
    KNOWN_LATIN |= latin


@pytest.mark.parametrize(("text", "share"), [
    ("俺想交水费", 1.0), ("asdkjhqwe zxcmnb", 0.0), ("오늘 날씨 어때요", 0.0), ("ありがとう", 0.0), ("😀😀", 0.0),
    ("鍋碗瓢盆", 0.0), ("hello 你好", 1.0), ("半件进度", 1.0),
])
def test_known_share(text: str, share: float) -> None:
    assert known_share(text, KNOWN_CHARS, KNOWN_LATIN) == pytest.approx(share)


def test_numbers_and_punctuation_have_no_units() -> None:
    assert known_share("20261101000001", KNOWN_CHARS, KNOWN_LATIN) is None
    assert known_share("。。。？", KNOWN_CHARS, KNOWN_LATIN) is None


@pytest.mark.parametrize(("text", "first", "second"), [
    ("俺想查一下办件进度，还有交个水费", "check_progress", "pay_bill"),
    ("交水费，顺便查一下工单", "pay_bill", "check_ticket"),
    ("查下进度，另外我要投诉", "check_progress", "give_feedback"),
    ("交水费还有电费", "pay_bill", None),            # the same task twice: one flow handles it
    ("俺想查一下办件进度", "check_progress", None),   # one request
    ("查进度，还有别的事吗", "check_progress", None),  # a later clause with no task in it
    # A later clause that mentions a task's words without asking for it.
    ("我要投诉物业，然后他们还乱收水费", "give_feedback", None),
    ("我要反映问题，还有就是电费收得太贵", "give_feedback", None),
    ("我去办营业执照，然后窗口让我等审批", "check_progress", None),
    ("交水费，还有没有别的缴费方式", "pay_bill", None),
    ("低保怎么申请，另外审批要多久", "ask_guide", None),         # the first is no flow
])
def test_second_request(text: str, first: str, second: str | None) -> None:
    assert second_request(text, first) == second
