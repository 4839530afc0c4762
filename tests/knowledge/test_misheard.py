"""Homophones a phone recogniser writes for service words (宜宝 for 医保) find the guide through the
pinyin index, and are answered; off-topic questions still get nothing."""
from pathlib import Path

import pytest

from knowledge.answer import answer
from knowledge.evaluate import evaluate, read_pairs
from knowledge.index import KnowledgeBase

EVAL = Path(__file__).resolve().parents[2] / "knowledge" / "eval"


@pytest.mark.parametrize(("question", "slug"), [
    ("宜宝在外地住院咋报销", "medical-reimbursement-offsite"), ("办残疾症要带啥", "disability-certificate"),
    ("社宝卡丢了咋办", "social-security-card"), ("户口签移要啥材料", "household-registration-transfer"),
    ("低宝咋申请", "minimum-living-allowance"),
])
def test_the_issues_misheard_words_are_answered_from_the_right_guide(knowledge: KnowledgeBase, question: str,
                                                                    slug: str) -> None:
    assert knowledge.search(question, k=1, mode="pinyin")[0].slug == slug
    reply = answer(knowledge, question)
    assert reply.kind == "answer" and reply.hit is not None and reply.hit.slug == slug


def test_held_out_misheard_questions_land_on_the_right_guide(knowledge: KnowledgeBase) -> None:
    pairs = read_pairs(EVAL / "misheard-test.tsv")
    assert len(pairs) >= 20
    with_pinyin = evaluate(knowledge, pairs, "hybrid")
    characters_only = evaluate(knowledge, pairs, "bm25")
    assert with_pinyin["top1"] >= 0.9 and with_pinyin["answered_right"] + with_pinyin["offered_right"] >= 0.9
    assert characters_only["top1"] <= 0.8  # the test needs pinyin to pass: it can fail


def test_off_topic_questions_still_get_nothing(knowledge: KnowledgeBase) -> None:
    negatives = read_pairs(EVAL / "negatives.tsv")
    result = evaluate(knowledge, negatives, "hybrid")
    assert result["none_refused"] >= 0.9  # 14 of 15, as before the pinyin index
    for question in ("今天天气怎么样", "阿巴阿巴", "猪肉多少钱一斤", "给我讲个笑话"):
        assert answer(knowledge, question).kind == "none", question


def test_a_misheard_word_counts_toward_confidence_only_when_every_syllable_pair_is_in_the_guide(
        knowledge: KnowledgeBase) -> None:
    assert knowledge.coverage("宜宝", "urban-rural-medical-insurance") == 1.0
    assert knowledge.coverage("公鸡金", "housing-provident-fund-withdrawal") == 1.0
    assert knowledge.coverage("宜宝", "passport") == 0.0
    assert knowledge.coverage("天气", "gas-bill") == 0.0  # tian_qi is not a pair inside 天然气
