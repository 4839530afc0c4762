"""What the exported test stories need to know of the bot: its forms, the slots that steer its
predictions, and its rules (``bot/domain``, ``bot/data/rules.yml``), read as Rasa reads them.

The rules answer "what should the bot have done after this message, had it understood it?" for a
message a reviewer corrected. The dialogue is RulePolicy and MemoizationPolicy only, and every
flow, interruption and unhappy path is a rule (docs/DESIGN.md, "Dialogue"), so the rules are the
policy: a rule fits when its intent and entities are the message's, its form condition is the
active form (none outside a form) and the action it starts after, if it names one, is the bot's
last action; the most specific fitting rule wins, as in RulePolicy. Inside a form with no rule for
the intent the form itself runs (it takes the answer). No fitting rule: nothing is predicted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Rule:
    name: str
    intent: str
    entities: frozenset[str]
    form: str | None        # the form its condition requires; None with no condition or "active_loop: null"
    inside_form: bool       # the condition names a form
    after: str | None       # the action the rule starts after, when it names one
    then: tuple[dict[str, Any], ...]  # its steps after the message: actions and active_loop


def _rule(item: dict[str, Any], steering: frozenset[str]) -> Rule | None:
    """A rule of the shape [action], intent, steps...; other shapes (form submissions) predict no reply."""
    condition = item.get("condition") or []
    loops = [c["active_loop"] for c in condition if "active_loop" in c]
    if any("slot_was_set" in c for c in condition) or len(loops) > 1:
        return None
    steps = item.get("steps") or []
    at = [i for i, s in enumerate(steps) if "intent" in s]
    if len(at) != 1 or at[0] > 1 or (at[0] == 1 and "action" not in steps[0]):
        return None
    step = steps[at[0]]
    then = tuple(s for s in steps[at[0] + 1:] if "action" in s or "active_loop" in s or (
        "slot_was_set" in s and all(next(iter(v)) in steering for v in s["slot_was_set"])))
    return Rule(str(item.get("rule")), str(step["intent"]), frozenset(str(e) for e in step.get("entities") or []),
                loops[0] if loops else None, bool(loops and loops[0]), steps[0]["action"] if at[0] == 1 else None,
                then)


@dataclass(frozen=True)
class Dialogue:
    forms: frozenset[str]
    steering_slots: frozenset[str]  # slots whose value the policies see (influence_conversation)
    rules: tuple[Rule, ...]

    @classmethod
    def load(cls, bot: Path) -> Dialogue:
        """From ``bot/domain/*.yml`` and ``bot/data/rules.yml``."""
        forms: set[str] = set()
        steering: set[str] = set()
        for path in sorted((bot / "domain").glob("*.yml")):
            domain = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            forms.update(domain.get("forms") or {})
            for name, slot in (domain.get("slots") or {}).items():
                # Rasa's default: every slot but an `any` slot influences the conversation.
                if slot.get("influence_conversation", slot.get("type") != "any"):
                    steering.add(name)
        rules_file = yaml.safe_load((bot / "data" / "rules.yml").read_text(encoding="utf-8")) or {}
        fixed = frozenset(steering)
        rules = tuple(r for r in (_rule(item, fixed) for item in rules_file.get("rules") or []) if r is not None)
        return cls(frozenset(forms), fixed, rules)

    def next_steps(self, intent: str, entities: set[str], form: str | None,
                   last_action: str | None) -> list[dict[str, Any]]:
        """The steps the bot's rules take after a message with ``intent`` and ``entities`` while
        ``form`` is active (None: no form), the bot's last action being ``last_action``."""
        fitting = [r for r in self.rules
                   if r.intent == intent and r.entities <= entities and (r.after is None or r.after == last_action)
                   and (r.form == form if form else not r.inside_form)]
        if not fitting:
            return [{"action": form}] if form else []
        best = max(fitting, key=lambda r: (r.inside_form, r.after is not None, len(r.entities)))
        return [dict(s) for s in best.then]
