"""What a caller gets when the NLU gives up on a guide question: the guides, if they find the right one."""
from __future__ import annotations

from typing import Any

from nlu.acts import rescued, score


def miss(text: str, predicted: str, label: str = "ask_guide", reference: str = "住院花的钱，医保咋报销") -> dict[str, Any]:
    return {"text": text, "label": label, "predicted": predicted, "confidence": 0.55, "reference": reference}


def test_a_misheard_guide_question_the_nlu_gave_up_on_is_answered_by_the_guides(knowledge: Any) -> None:
    assert rescued(knowledge, miss("住院花的钱，医保杂报销", "nlu_fallback"))


def test_only_the_guide_the_caller_meant_counts(knowledge: Any) -> None:
    # the guides answer it, but with another guide than the caller's words find
    assert not rescued(knowledge, miss("身份证丢了去哪补办", "nlu_fallback"))


def test_other_misses_stay_misses(knowledge: Any) -> None:
    assert not rescued(knowledge, miss("住院花的钱，医保杂报销", "nlu_fallback", label="check_progress"))
    assert not rescued(knowledge, miss("住院花的钱，医保杂报销", "pay_bill"))  # a confident wrong intent
    assert not rescued(knowledge, miss("", "nlu_fallback"))
    assert not rescued(knowledge, miss("嗯嗯嗯", "nlu_fallback"))


def test_the_score_adds_the_rescued_to_the_right_ones(knowledge: Any) -> None:
    report = {"n": 10, "misses": [miss("住院花的钱，医保杂报销", "nlu_fallback"), miss("嗯嗯嗯", "nlu_fallback")]}
    result = score(report, knowledge)
    assert result["acts_accuracy"] == 0.9 and result["answered_by_the_guides"] == ["住院花的钱，医保杂报销"]
