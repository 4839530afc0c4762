"""Reviewed failures become training data and regression tests: corrections as Rasa NLU YAML for
``nlu_data/``, a conversation as a Rasa test story for ``tests/stories/``. Both are masked."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any, Iterable

import yaml

from console.conversations import Turn
from services.models import MessageAnnotation


# Characters of Rasa's inline annotation syntax ("[值](实体)", "{...}"), as citizens may type them, and
# the full-width look-alikes they become in an export, so they stay text and never turn into annotations.
_SYNTAX = str.maketrans({"[": "［", "]": "］", "(": "（", ")": "）", "{": "｛", "}": "｝"})


def _annotated(text: str, entities: list[dict[str, Any]]) -> str:
    """Rasa's inline entity syntax: '[幺三八](phone_number)'; entities not found in the text are left
    out. The citizen's own brackets are made full-width first: "我想问[身份证](证件)" stays a sentence."""
    text = text.translate(_SYNTAX)
    for e in entities:
        value, name = str(e.get("value", "")).translate(_SYNTAX), str(e.get("entity", ""))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            continue
        if value and name and value in text and f"[{value}]" not in text:
            text = text.replace(value, f"[{value}]({name})", 1)
    return text


NOT_LABELS = frozenset({"nlu_fallback"})  # what the classifier says when it cannot tell: never a training label


def nlu_yaml(corrections: Iterable[MessageAnnotation]) -> str:
    """Corrected messages grouped by intent, in Rasa 3 NLU format."""
    by_intent: dict[str, list[str]] = defaultdict(list)
    for c in corrections:
        if not c.intent or not c.text or c.intent in NOT_LABELS:
            continue
        entities = json.loads(c.entities) if c.entities else []
        example = _annotated(c.text.replace("\n", " ").strip(), entities)
        if example not in by_intent[c.intent]:
            by_intent[c.intent].append(example)
    lines = ['version: "3.1"', "# Exported from the staff console (corrections); personal numbers are masked.", "nlu:"]
    for intent in sorted(by_intent):
        lines.append(f"  - intent: {intent}")
        lines.append("    examples: |")
        lines.extend(f"      - {example}" for example in by_intent[intent])
    return "\n".join(lines) + "\n"


_SLUG = re.compile(r"[^0-9A-Za-z_-]+")


def test_story(sender: str, turns: list[Turn]) -> str:
    """The conversation as a Rasa end-to-end test story, with the reviewer's corrected intents."""
    steps: list[dict[str, Any]] = []
    for t in turns:
        if t.kind == "user":
            intent = (t.annotation.intent if t.annotation and t.annotation.intent else t.intent) or "nlu_fallback"
            text = t.text
            entities = json.loads(t.annotation.entities) if t.annotation and t.annotation.entities else t.entities
            if text.startswith("/"):
                steps.append({"intent": intent})
            else:
                steps.append({"user": _annotated(text, entities), "intent": intent})
        elif t.kind == "action" and not t.text.startswith(("action_session_start", "action_listen")):
            steps.append({"action": t.text})
    story = {"stories": [{"story": f"reviewed conversation {_SLUG.sub('-', sender)[:60]}", "steps": steps}]}
    header = "# Exported from the staff console; personal numbers are masked. Save under tests/stories/.\n"
    return header + yaml.safe_dump(story, allow_unicode=True, sort_keys=False)
