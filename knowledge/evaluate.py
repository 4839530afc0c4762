"""Retrieval quality on ``question<TAB>slug`` files (top-1, top-3, MRR; 'none' lines test refusals)
and on ``question<TAB>slug<TAB>section`` files (the guide and the section)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from knowledge.answer import answer
from knowledge.content import ContentError
from knowledge.index import KnowledgeBase, Mode
from knowledge.text import OVERVIEW, SECTIONS


@dataclass(frozen=True)
class Pair:
    question: str
    slug: str  # "none": nothing in the knowledge base fits


def read_pairs(path: Path) -> list[Pair]:
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ContentError(f"{path}:{number}: expected 'question<TAB>slug'")
        pairs.append(Pair(parts[0].strip(), parts[1].strip()))
    return pairs


def evaluate(kb: KnowledgeBase, pairs: list[Pair], mode: Mode = "hybrid") -> dict[str, float]:
    """Ranking metrics over the answerable pairs; what the assistant would do, over all pairs."""
    unknown = sorted({p.slug for p in pairs if p.slug != "none" and p.slug not in kb.topics})
    if unknown:
        raise ContentError(f"slugs not in the knowledge base: {', '.join(unknown)}")
    answerable = [p for p in pairs if p.slug != "none"]
    top1 = top3 = rr = 0.0
    answered_right = offered = 0
    for pair in answerable:
        ranked = [h.slug for h in kb.search(pair.question, k=len(kb.topics), mode=mode)]
        if pair.slug in ranked:
            rank = ranked.index(pair.slug) + 1
            top1 += rank == 1
            top3 += rank <= 3
            rr += 1 / rank
        reply = answer(kb, pair.question, mode=mode)
        answered_right += reply.kind == "answer" and reply.hit is not None and reply.hit.slug == pair.slug
        offered += reply.kind == "choices" and pair.slug in [h.slug for h in reply.choices]
    refusals = [p for p in pairs if p.slug == "none"]
    refused = sum(answer(kb, p.question, mode=mode).kind == "none" for p in refusals)
    n = max(len(answerable), 1)
    result = {
        "questions": float(len(answerable)), "top1": top1 / n, "top3": top3 / n, "mrr": rr / n,
        "answered_right": answered_right / n, "offered_right": offered / n,
    }
    if refusals:
        result["none_questions"] = float(len(refusals))
        result["none_refused"] = refused / len(refusals)
    return result


@dataclass(frozen=True)
class SectionCase:
    question: str
    slug: str
    section: str  # one of SECTIONS, or OVERVIEW when the question names no aspect


def read_section_cases(path: Path) -> list[SectionCase]:
    """``question<TAB>slug<TAB>section`` lines; an empty section or 概述 means "names no aspect"."""
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) == 2:
            parts.append("")
        section = parts[2] if len(parts) == 3 and parts[2] and parts[2].lower() != "none" else OVERVIEW
        if len(parts) != 3 or not parts[0] or not parts[1] or section not in (*SECTIONS, OVERVIEW):
            raise ContentError(f"{path}:{number}: expected 'question<TAB>slug<TAB>section'")
        cases.append(SectionCase(parts[0], parts[1], section))
    return cases


def evaluate_sections(kb: KnowledgeBase, cases: list[SectionCase], mode: Mode = "hybrid") -> dict[str, float]:
    """Guide and section quality: ``top1``/``mrr`` rank the guides; ``section`` is the share whose
    first guide is answered from the labelled section (right or wrong guide); ``guide_and_section``
    needs both; ``answered_right`` is what the assistant says (an answer, not choices)."""
    unknown = sorted({c.slug for c in cases if c.slug not in kb.topics})
    if unknown:
        raise ContentError(f"slugs not in the knowledge base: {', '.join(unknown)}")
    top1 = rr = section = both = answered = 0.0
    for case in cases:
        ranked = [h.slug for h in kb.search(case.question, k=len(kb.topics), mode=mode)]
        rank = ranked.index(case.slug) + 1 if case.slug in ranked else 0
        top1 += rank == 1
        rr += 1 / rank if rank else 0.0
        chosen = kb.section_for(case.question, ranked[0]) if ranked else None
        section += chosen == case.section
        both += rank == 1 and chosen == case.section
        reply = answer(kb, case.question, mode=mode)
        answered += (reply.kind == "answer" and reply.hit is not None
                     and (reply.hit.slug, reply.hit.section) == (case.slug, case.section))
    n = max(len(cases), 1)
    return {"questions": float(len(cases)), "top1": top1 / n, "mrr": rr / n, "section": section / n,
            "guide_and_section": both / n, "answered_right": answered / n}
