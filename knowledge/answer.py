"""From a question to what the assistant says: one section, three choices, or nothing."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from knowledge.index import Hit, KnowledgeBase, Mode
from knowledge.text import OVERVIEW, SECTIONS, asked_aspect
from textnorm.numerals import normalize_numbers

# Measured on knowledge/eval/dev.tsv and negatives.tsv (bench/RESULTS.md): a topic that holds at
# least STRONG of the question's topic words (IDF-weighted) is answered; at least WEAK gets the
# top three offered as choices; below that nothing fits.
STRONG = 0.5
WEAK = 0.4
# Two topics holding the question's words equally are a tie when the second scores this close.
TIE = 0.95


@dataclass(frozen=True)
class Answer:
    """What to say. ``hit.section`` is one of SECTIONS, or OVERVIEW ("概述") when the question named
    no aspect: then ``hit.text`` is the guide in short ending with the offer of the sections, and
    ``sections`` lists the sections the citizen can ask for next (empty otherwise)."""
    kind: Literal["answer", "choices", "none"]
    hit: Hit | None = None
    choices: list[Hit] = field(default_factory=list)
    confidence: float = 0.0
    followup: bool = False
    sections: tuple[str, ...] = ()


def answer(kb: KnowledgeBase, question: str, context_slug: str | None = None, mode: Mode = "hybrid") -> Answer:
    """The answer to ``question``. ``context_slug`` is the topic of the conversation so far: a
    question that names no topic ("在哪办") is answered from it."""
    asked = asked_aspect(question)
    if context_slug in kb.topics and not kb.names_a_topic(question):
        slug = str(context_slug)
        hit = _section_hit(kb, slug, kb.section_for(question, slug, asked), 1.0)
        return Answer("answer", hit, confidence=1.0, followup=True, sections=_offered(hit))
    hits = kb.search(question, k=3, mode=mode)
    if not hits:
        return Answer("none")
    best = hits[0]
    confidence = kb.coverage(question, best.slug)
    if confidence >= STRONG and not _tied(kb, question, best.slug):
        best = _section_hit(kb, best.slug, kb.section_for(question, best.slug, asked), best.score)
        return Answer("answer", best, hits, confidence, sections=_offered(best))
    if confidence >= WEAK:
        return Answer("choices", None, hits, confidence)
    return Answer("none", None, hits, confidence)


def _tied(kb: KnowledgeBase, question: str, best_slug: str) -> bool:
    """Two guides hold the question's words equally well and the words score them alike ("补贴"): let
    the citizen choose. Judged on BM25 scores, whatever the fusion, so the answer does not depend
    on the embedding model's rank noise (fused scores are ranks, too close to compare this way)."""
    first_two = kb.search(question, k=2, mode="bm25")
    if len(first_two) < 2 or best_slug not in {h.slug for h in first_two}:
        return False
    first, second = first_two
    return kb.coverage(question, second.slug) >= kb.coverage(question, first.slug) and second.score >= TIE * first.score


def _section_hit(kb: KnowledgeBase, slug: str, name: str, score: float) -> Hit:
    section = kb.topics[slug].section(name)
    return Hit(slug, section.title, name, score, section.text)


def _offered(hit: Hit) -> tuple[str, ...]:
    return SECTIONS if hit.section == OVERVIEW else ()


_SPOKEN_NUMBERS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


def pick(choices: list[str], reply: str) -> str | None:
    """The slug a citizen picks from numbered choices: "2", "第二个", "二", "选3"."""
    m = re.search(r"(?<!\d)([1-9])(?!\d)", normalize_numbers(reply)) or re.search(r"[一二两三四五六七八九]", reply)
    if not m:
        return None
    number = int(m.group(1)) if m.group(0).isdigit() else _SPOKEN_NUMBERS[m.group(0)]
    return choices[number - 1] if 1 <= number <= len(choices) else None


_SENTENCE_END = re.compile(r"(?<=[。；！？;!?])|\n+")


def sentences(text: str) -> list[str]:
    """The sentences of a section, list markers and Markdown emphasis removed."""
    out = []
    for piece in _SENTENCE_END.split(text):
        piece = re.sub(r"^\s*(?:[-*]|\d+[.、)])\s*", "", piece).replace("**", "").strip()
        if piece:
            out.append(piece)
    return out


def spoken(text: str, max_sentences: int = 3, max_chars: int = 40) -> list[str]:
    """At most ``max_sentences`` short sentences for the phone: long ones are cut at a comma."""
    out: list[str] = []
    for sentence in sentences(text):
        if len(sentence) > max_chars:
            cut = max((sentence.rfind(c, 0, max_chars) for c in "，、,："), default=-1)
            sentence = sentence[:cut] + "。" if cut > 8 else sentence[:max_chars] + "…"
        elif sentence[-1] not in "。！？":
            sentence = sentence.rstrip("；;") + "。"
        out.append(sentence)
        if len(out) >= max_sentences:
            break
    return out
