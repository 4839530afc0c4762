"""Reviewed failures become training data and regression tests: corrections as Rasa NLU YAML for
``nlu_data/``, a conversation as Rasa test stories for ``tests/stories/`` that pass ``rasa test core``.

A story is what Rasa needs to replay the conversation's predictions: the intents and entities
(the reviewer's where corrected), the actions, and the form's ``active_loop`` steps. The transcript
has no loop events; they follow from the actions, as Rasa runs forms: a form's action activates it
when another (or none) was active; when the bot's next action is not listening the form ended
(filled or stopped), else it stays active; ``action_deactivate_loop`` ends it. Slot steps are
written only for slots that steer predictions (none today: every slot is influence_conversation:
false). Masked numbers become fictional stand-ins of the same kind (``console/standins.py``).

After a corrected message the bot's own actions were answers to the wrong intent, and what would
have followed the right one never happened. The story ends there with the steps the bot's rules
take for the corrected message in that place (``console/dialogue.py``): the dialogue is rules only,
so that is what the trained policy predicts, and ``rasa test`` then checks it stays so. A story also
ends where an action chose the next action itself (``FollowupAction``): no story step can say that.
Each session is a story of its own, since Rasa starts a session with no form and no slots.
"""
from __future__ import annotations

import functools
import json
import re
from collections import defaultdict
from typing import Any, Iterable

import yaml

from console.conversations import Turn
from console.dialogue import Dialogue
from console.standins import StandIns
from services.models import MessageAnnotation
from services.settings import ROOT
from textnorm.numerals import normalize_numbers


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
FOLLOWUP = "followup_action"  # the policy Rasa records for an action another action asked for (FollowupAction)


def _entities(t: Turn) -> list[dict[str, Any]]:
    """The reviewer's entities when they gave some, else the NLU's."""
    corrected = json.loads(t.annotation.entities) if t.annotation and t.annotation.entities else []
    return corrected or t.entities


def _corrected(t: Turn) -> bool:
    """The reviewer changed what the bot acts on: the intent, or which entities the message has."""
    a = t.annotation
    if a is None:
        return False
    names = {str(e.get("entity")) for e in _entities(t)}
    return bool(a.intent and a.intent != t.intent) or names != {str(e.get("entity")) for e in t.entities}


def _user_step(t: Turn, stand_ins: StandIns) -> dict[str, Any]:
    """An ``intent:`` step for a button or "/intent" payload, else the citizen's words with the entities
    annotated; masked numbers become stand-ins. Spoken digits are written as digits where an entity's
    value is only in that form ("二〇二六…" and 20261101000001), so the annotation can hold it."""
    intent = (t.annotation.intent if t.annotation and t.annotation.intent else t.intent) or "nlu_fallback"
    entities = [{"entity": str(e.get("entity")), "value": stand_ins.text(str(e.get("value", "")))}
                for e in _entities(t)]
    text = stand_ins.text(t.text)
    if text.startswith("/"):
        step: dict[str, Any] = {"intent": intent}
        if entities:
            step["entities"] = [{e["entity"]: e["value"]} for e in entities]
        return step
    if any(e["value"] not in text and e["value"] in normalize_numbers(text) for e in entities):
        text = normalize_numbers(text)
    return {"user": _annotated(text, entities), "intent": intent}


def _sessions(turns: list[Turn]) -> list[list[Turn]]:
    """Rasa starts each session afresh (no form, no slots): each is a story of its own."""
    sessions: list[list[Turn]] = [[]]
    for t in turns:
        if t.kind == "action" and t.text == "action_session_start":
            sessions.append([])
        else:
            sessions[-1].append(t)
    return [s for s in sessions if any(t.kind == "user" for t in s)]


def _story_steps(turns: list[Turn], dialogue: Dialogue, stand_ins: StandIns) -> tuple[list[dict[str, Any]], str]:
    """One session's steps, and why it ends early ("" when it does not)."""
    steps: list[dict[str, Any]] = []
    form: str | None = None       # the active form
    ran_form = False              # the last action was a form: it stays active if the bot then listened
    last_action: str | None = None
    for t in turns:
        if t.kind == "action" and t.text == "action_listen":
            continue
        if ran_form and t.kind == "action":  # the form ended (filled, or stopped by its validator)
            steps.append({"active_loop": None})
            form = None
        if t.kind in ("user", "action"):
            ran_form = False
        if t.kind == "user":
            steps.append(_user_step(t, stand_ins))
            if _corrected(t):
                names = {str(e.get("entity")) for e in _entities(t)}
                steps.extend(dialogue.next_steps(steps[-1]["intent"], names, form, last_action))
                return steps, "corrected"
        elif t.kind == "action":
            if t.detail.get("policy") == FOLLOWUP:
                return steps, "followup"
            steps.append({"action": t.text})
            last_action = t.text
            if t.text in dialogue.forms:
                if form != t.text:
                    steps.append({"active_loop": t.text})
                    form = t.text
                ran_form = True
            elif t.text == "action_deactivate_loop":
                steps.append({"active_loop": None})
                form = None
        elif t.kind == "slot" and " = " in t.text:
            name, value = t.text.split(" = ", 1)
            if name in dialogue.steering_slots:
                try:
                    steps.append({"slot_was_set": [{name: json.loads(stand_ins.text(value))}]})
                except ValueError:  # a masked number outside a JSON string: not a value a story can hold
                    continue
    return steps, ""


_ENDINGS = {"corrected": " (ends at a corrected message, with what the rules do after it)",
            "followup": " (ends where an action chose the next action itself)"}


@functools.cache
def project_dialogue() -> Dialogue:
    """The project's own forms, slots and rules (read once, at the first export)."""
    return Dialogue.load(ROOT / "bot")


def test_story(ref: str, turns: list[Turn], dialogue: Dialogue | None = None) -> str:
    """The conversation as Rasa test stories (one per session) for ``rasa test core``."""
    dialogue = dialogue or project_dialogue()
    stories = []
    stand_ins = StandIns()  # one per conversation: a number keeps its stand-in across sessions
    for number, session in enumerate(_sessions(turns), 1):
        steps, ending = _story_steps(session, dialogue, stand_ins)
        name = f"reviewed conversation {_SLUG.sub('-', ref)[:60]}" + (f" session {number}" if number > 1 else "")
        stories.append({"story": name + _ENDINGS.get(ending, ""), "steps": steps})
    header = ("# Exported from the staff console: personal numbers are fictional stand-ins. Save under tests/stories/.\n"
              'version: "3.1"\n')
    return header + yaml.safe_dump({"stories": stories}, allow_unicode=True, sort_keys=False)
