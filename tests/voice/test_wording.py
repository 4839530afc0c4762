"""Everything the phone line says is Mandarin to espeak-ng, short, and with numbers read as people read them."""
from __future__ import annotations

from typing import Any

import pytest

from actions.guide import spoken_answer
from knowledge.index import Hit
from voice.tts import choose_voice, speaks_mandarin
from voice.voicecheck import domain_sentences, foreign, gateway_sentences
from voice.wording import (PROMPTS, readback, seconds_of, sentences, speakable, split_turns, spoken_choices)

VOICE = choose_voice("")


def test_the_voice_is_chosen_by_what_it_does() -> None:
    # Debian 12's espeak-ng 1.51: "cmn" is "Chinese (Mandarin, latin as English)" and reads the
    # pinyin of every character after the first as English ("yao four"); it is refused.
    assert not speaks_mandarin("cmn")
    assert choose_voice("cmn") == VOICE == "cmn-latn-pinyin"
    assert foreign("cmn", ["我要查办件进度"]) == ["我要查办件进度"]
    assert foreign(VOICE, ["我要查办件进度", "请按#号", "APP"]) == ["请按#号", "APP"]  # the check can fail


def test_every_domain_response_and_gateway_prompt_stays_mandarin() -> None:
    said = domain_sentences() + gateway_sentences()
    assert len(said) > 90
    assert foreign(VOICE, said) == []


def test_every_spoken_guide_answer_stays_mandarin(knowledge: Any) -> None:
    answers = [spoken_answer(Hit(topic.slug, topic.title, name, 1.0, text))
               for topic in knowledge.topics.values() for name, text in topic.sections.items()]
    assert len(answers) >= 200
    said = [line for a in answers for line in sentences(speakable(a))]
    assert foreign(VOICE, said) == []


@pytest.mark.parametrize("text, spoken", [
    ("请说工单号，输完按#号键。", "请说工单号，输完按井号键"),
    ("工单10000001：处理中。", "工单幺零零零，零零零幺：处理中"),
    ("应缴35.50元。", "应缴35元五角"),
    ("应缴12.05元。", "应缴12元零五分"),
    ("2026年11月办完。", "二零二六年11月办完"),
    ("请拨打12345热线。", "请拨打幺二三四五热线"),
    ("手机13800000001。", "手机幺三八，零零零零，零零零幺"),
    ("身份证号18位，后四位123X。", "身份证号18位，后四位123X"),
    ("下载APP办理。", "下载手机应用办理"),
    ("1. 身份证：审核中\n2. 社保卡：已办结", "第1，身份证：审核中。第2，社保卡：已办结"),
])
def test_numbers_keys_and_latin_are_said_in_words(text: str, spoken: str) -> None:
    assert speakable(text) == spoken
    assert foreign(VOICE, [spoken]) == []


def test_readback_groups_digits_as_people_say_them() -> None:
    assert readback("20261101000001") == "您输入的是：二零二六，幺幺零幺，零零零零，零幺。"
    assert readback("13800000001") == "您输入的是：幺三八，零零零零，零零零幺。"
    assert readback("1230") == "您输入的是：幺二三零。"


def test_choices_say_their_keys_and_the_human_key_is_star() -> None:
    lines, keys = spoken_choices([
        {"title": "查办件进度", "payload": "/check_progress"}, {"title": "缴费", "payload": "/pay_bill"},
        {"title": "反映问题", "payload": "/give_feedback"}, {"title": "查工单", "payload": "/check_ticket"},
        {"title": "转人工", "payload": "/request_human"}])
    assert lines == ["查办件进度按1，缴费按2，反映问题按3，查工单按4。", "转人工按星号键。"]
    assert keys == {"1": "/check_progress", "2": "/pay_bill", "3": "/give_feedback", "4": "/check_ticket",
                    "*": "/request_human"}
    lines, keys = spoken_choices([{"title": f"{n}分 很满意", "payload": f'/rate{{"rating": "{n}"}}'} for n in (5, 4)])
    assert lines == ["5分很满意按5，4分很满意按4。"] and set(keys) == {"5", "4"}
    assert all(len(line) <= 40 for line in lines)
    five = [{"title": f"{n}分", "payload": f'/rate{{"rating": "{n}"}}'} for n in range(5, 0, -1)]
    assert spoken_choices(five)[0] == ["5分按5，4分按4，3分按3。", "2分按2，1分按1。"]


def test_long_answers_are_split_into_turns_of_at_most_fifteen_seconds() -> None:
    answer = sentences("您办的“居民身份证换领”：审核中。现在到了“材料审核”这一步。预计12月5日办完。"
                       "办理单位：菏泽市牡丹区公安分局户政大厅。请给这次服务打个分。请说几分，或者按键。"
                       "5分很满意请按5，4分满意请按4，3分一般请按3。2分不满意请按2，1分很不满意请按1。")
    parts = split_turns(answer, 150, 15.0)
    assert len(parts) >= 2 and [line for p in parts for line in p] == answer
    more = seconds_of(PROMPTS["more"], 150)
    assert all(sum(seconds_of(line, 150) for line in p) + more <= 15.0 for p in parts)
    assert split_turns(["好的。"], 150) == [["好的。"]]
    # A keyed number's read-back is said first, in the same breath: it counts against the first part.
    status = sentences("您办的“居民身份证换领”：审核中。现在到了“材料审核”这一步。预计12月5日办完。")
    assert split_turns(status, 150, 15.0) == [status]
    assert len(split_turns(status, 150, 15.0, lead_s=seconds_of("您输入的是：二零二六，幺幺零幺，零零零零，零幺。", 150))) == 2
