"""What a caller gets from the whole assistant, beside the NLU's intent: ``python -m nlu.acts REPORT.json``
(in the application environment, after ``python -m nlu.evaluate ... --out REPORT.json``).

The conversation sends a message the NLU could not place (``nlu_fallback``) to the service guides
first, and one it calls ``out_of_scope`` too when a guide answers it with confidence
(actions/conversation.py ``ActionFallback``, ``ActionOutOfScope``). Such a miss of an ``ask_guide``
message is counted right here when the guides answer it (or, after a fallback, offer choices) with
the guide they find for the reference text, the words the caller really said. Every other miss stays
a miss. The knowledge base is the one without an embedding model (BM25 and pinyin), as the tests
build it. The NLU's own accuracy (``accuracy``) is unchanged; this adds ``acts_accuracy``. It only
looks at misses: a message rightly called ``out_of_scope`` that the guides would still take over
(and so answer wrongly) is not charged here (the phone test set has no ``out_of_scope`` label).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from knowledge.answer import answer
from knowledge.config import KnowledgeSettings
from knowledge.content import load_topics
from knowledge.index import KnowledgeBase

TAKEN_OVER = {"nlu_fallback": ("answer", "choices"), "out_of_scope": ("answer",)}


def rescued(kb: KnowledgeBase, miss: dict[str, Any]) -> bool:
    """Would the guides give this caller the guide they asked about, where the NLU gave up?"""
    kinds = TAKEN_OVER.get(miss["predicted"])
    if miss["label"] != "ask_guide" or not kinds or not miss["text"].strip() or not miss.get("reference"):
        return False
    reply = answer(kb, miss["text"])
    if reply.kind not in kinds:
        return False
    offered = {reply.hit.slug} if reply.hit is not None else {h.slug for h in reply.choices}
    meant = answer(kb, miss["reference"])
    return meant.hit is not None and meant.hit.slug in offered


def score(report: dict[str, Any], kb: KnowledgeBase) -> dict[str, Any]:
    taken = [m for m in report["misses"] if rescued(kb, m)]
    right = report["n"] - len(report["misses"]) + len(taken)
    return {"acts_accuracy": round(right / report["n"], 4) if report["n"] else 0.0,
            "answered_by_the_guides": [m["text"] for m in taken]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text(encoding="utf-8"))
    settings = KnowledgeSettings()
    kb = KnowledgeBase(load_topics(settings.resolve(settings.content_dir), settings.resolve(settings.local_file)),
                       None).build()
    report.update(score(report, kb))
    args.report.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("n", "accuracy", "acts_accuracy")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
