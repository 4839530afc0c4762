"""The NLU export keeps citizens' text as text: their brackets never become annotations, and the
classifier's "cannot tell" is never a training label."""
from __future__ import annotations

import json

import yaml

from console.exports import nlu_yaml
from services.models import MessageAnnotation


def correction(text: str, intent: str, entities: list[dict[str, str]] | None = None) -> MessageAnnotation:
    return MessageAnnotation(sender_id="s", event_id=1, text=text, intent=intent, flagged=False,
                             entities=json.dumps(entities or [], ensure_ascii=False))


def test_citizens_brackets_stay_text_and_only_known_names_annotate() -> None:
    exported = nlu_yaml([
        correction("我想问[身份证](证件)在哪办", "ask_guide", [{"entity": "service", "value": "身份证"}]),
        correction("{\"a\": 1} 交电费", "pay_bill", [{"entity": "bill type", "value": "电费"}]),
        correction("这个咋弄", "nlu_fallback"),
    ])
    data = yaml.safe_load(exported)
    examples = {item["intent"]: item["examples"] for item in data["nlu"]}
    assert set(examples) == {"ask_guide", "pay_bill"}  # nlu_fallback is not a label
    assert examples["ask_guide"] == "- 我想问［[身份证](service)］（证件）在哪办\n"
    assert examples["pay_bill"] == "- ｛\"a\": 1｝ 交电费\n"  # "bill type" is no entity name: left out
    assert "(证件)" not in exported
