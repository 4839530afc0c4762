"""Intent accuracy of a trained model on labelled texts, as the assistant would act on them.

``python -m nlu.evaluate --model var/models/heze.tar.gz FILE.tsv [--text-column asr] [--out report.json]``
(in the Rasa environment). FILE.tsv has a header with ``intent`` and a text column. Unlike
``rasa test nlu``, which undoes the FallbackClassifier before it compares, ``nlu_fallback`` here is
what the conversation gets ("请换个说法"), so it counts as a miss unless the label is ``nlu_fallback``.
A miss keeps the row's ``reference`` text (what the caller said) when the file has that column, for
``python -m nlu.acts`` (what the caller gets from the whole assistant).
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List


def read_rows(path: Path, column: str) -> List[Dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


async def predict(model: Path, texts: List[str]) -> List[Dict[str, Any]]:
    from rasa.core.agent import Agent

    agent = Agent.load(str(model))
    out = []
    for text in texts:
        if not text.strip():  # the recogniser heard nothing: the caller is asked again, a miss
            out.append({"intent": "", "confidence": 0.0})
            continue
        parsed = await agent.parse_message(text)
        out.append({"intent": parsed["intent"]["name"], "confidence": round(float(parsed["intent"]["confidence"]), 3)})
    return out


def report(rows: List[Dict[str, str]], column: str, predictions: List[Dict[str, Any]]) -> Dict[str, Any]:
    misses = [{"text": r.get(column) or "", "label": r["intent"], "predicted": p["intent"], "confidence": p["confidence"],
               **({"reference": r["reference"]} if "reference" in r else {})}
              for r, p in zip(rows, predictions) if p["intent"] != r["intent"]]
    per_intent: Dict[str, Dict[str, int]] = {}
    for row, pred in zip(rows, predictions):
        stats = per_intent.setdefault(row["intent"], {"n": 0, "correct": 0})
        stats["n"] += 1
        stats["correct"] += pred["intent"] == row["intent"]
    return {
        "n": len(rows), "accuracy": round(1 - len(misses) / len(rows), 4) if rows else 0.0,
        "fallbacks": sum(p["intent"] == "nlu_fallback" for p in predictions),
        "empty": sum(p["intent"] == "" for p in predictions),
        "per_intent": per_intent,
        "confusions": dict(Counter(f"{m['label']}->{m['predicted']}" for m in misses).most_common()),
        "misses": misses,
    }


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--model", type=Path, default=Path("var/models/heze.tar.gz"))
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    rows = read_rows(args.file, args.text_column)
    predictions = asyncio.run(predict(args.model, [r.get(args.text_column) or "" for r in rows]))
    result = report(rows, args.text_column, predictions)
    text = json.dumps(result, ensure_ascii=False, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("n", "accuracy", "fallbacks", "empty")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
