"""``python -m knowledge build | search | eval | import`` (see README.md, "Knowledge base")."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from typing import TYPE_CHECKING

from knowledge.config import KnowledgeSettings

if TYPE_CHECKING:
    from knowledge.index import KnowledgeBase


def _open(args: argparse.Namespace, progress: bool = False) -> "KnowledgeBase":
    from knowledge.index import open_knowledge_base

    settings = KnowledgeSettings()
    if getattr(args, "no_model", False):
        settings.embedding_model = ""
    return open_knowledge_base(settings, build_if_stale=True, progress=progress)


def cmd_build(args: argparse.Namespace) -> int:
    from knowledge.index import open_knowledge_base

    settings = KnowledgeSettings()
    index_dir = settings.resolve(settings.index_dir)
    started = time.perf_counter()
    kb = open_knowledge_base(settings, progress=True, force=not args.if_stale)
    if not kb.built_now:
        print(f"knowledge index is current: {index_dir}")
        return 0
    dense = f"dense vectors from {kb.encoder.description}" if kb.encoder else "no embedding model: BM25 and pinyin only"
    print(f"knowledge index: {len(kb.topics)} guides, {len(kb.sections)} sections, {dense}; "
          f"{index_dir} in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    kb = _open(args)
    hits = kb.search(args.question, k=args.k, mode=args.mode)
    if args.json:
        print(json.dumps([h.as_json() for h in hits], ensure_ascii=False))
    else:
        for n, hit in enumerate(hits, start=1):
            print(f"{n}. {hit.title} · {hit.section} ({hit.slug}, {hit.score:.4f})\n   {hit.text[:120]}")
        if not hits:
            print("没有找到相关的办事指南。")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from knowledge.evaluate import evaluate, evaluate_sections, read_pairs, read_section_cases
    from knowledge.index import MODES

    kb = _open(args)
    files = [Path(f) for f in args.files]
    with_sections = [_has_sections(f) for f in files]
    if any(with_sections) and not all(with_sections):
        print("error: give either question<TAB>slug files or question<TAB>slug<TAB>section files", file=sys.stderr)
        return 2
    modes = list(MODES) if args.mode == "all" else [args.mode]
    results = {}
    for mode in modes:
        if mode == "dense" and kb.encoder is None:
            print("dense: skipped, no embedding model configured", file=sys.stderr)
            continue
        if mode == "hybrid" and kb.encoder is None:
            print("hybrid: no embedding model configured, so this is BM25 and pinyin alone", file=sys.stderr)
        if with_sections and all(with_sections):
            cases = [c for f in files for c in read_section_cases(f)]
            r = evaluate_sections(kb, cases, mode)
            print(f"{mode:7s} n={int(r['questions'])} top-1 {r['top1']:.3f}  MRR {r['mrr']:.3f}  section "
                  f"{r['section']:.3f}  guide and section {r['guide_and_section']:.3f}  answered right "
                  f"{r['answered_right']:.3f}", file=sys.stdout if not args.json else sys.stderr)
            results[mode] = r
            continue
        pairs = [p for f in files for p in read_pairs(f)]
        results[mode] = evaluate(kb, pairs, mode)
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=1))
    elif not all(with_sections):
        for mode, r in results.items():
            line = (f"{mode:7s} n={int(r['questions'])} top-1 {r['top1']:.3f}  top-3 {r['top3']:.3f}  "
                    f"MRR {r['mrr']:.3f}  answered right {r['answered_right']:.3f}  offered {r['offered_right']:.3f}")
            if "none_questions" in r:
                line += f"  refused {r['none_refused']:.3f} of {int(r['none_questions'])} off-topic"
            print(line)
    return 0


def _has_sections(path: Path) -> bool:
    """True for a question<TAB>slug<TAB>section file (judged on its first question line)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            return line.count("\t") == 2
    return False


def cmd_import(args: argparse.Namespace) -> int:
    from knowledge.catalog import import_catalogue, write_topics

    settings = KnowledgeSettings()
    report = import_catalogue(Path(args.file))
    for error in report.errors:
        print(f"rejected: {error}", file=sys.stderr)
    out = Path(args.out) if args.out else settings.resolve(settings.content_dir)
    if not args.dry_run:
        write_topics(report.topics, out)
    print(f"{len(report.topics)} guides {'checked' if args.dry_run else 'written to ' + str(out)}, "
          f"{len(report.errors)} rows rejected, {report.unset_sections} empty sections read "
          f"以当地政务服务中心公布为准. Run `python -m knowledge build` to index them.")
    return 1 if report.errors else 0


def cmd_nlu_lookup(args: argparse.Namespace) -> int:
    from knowledge.content import load_topics
    from knowledge.nlu import write_lookup

    settings = KnowledgeSettings()
    path = Path(args.out)
    changed = write_lookup(load_topics(settings.resolve(settings.content_dir)), path)
    print(f"{path}: {'written; retrain the NLU (make train)' if changed else 'already current'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m knowledge", description="菏泽办事指南知识库")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="build the index under var/kb/")
    p.add_argument("--if-stale", action="store_true", help="only when the content, local details or model changed")
    p.set_defaults(func=cmd_build)
    p = sub.add_parser("search", help="search the guides")
    p.add_argument("question")
    p.add_argument("-k", type=int, default=3)
    p.add_argument("--mode", choices=["hybrid", "lexical", "bm25", "pinyin", "dense"], default="hybrid")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-model", action="store_true", help="BM25 and pinyin, even when a model is configured")
    p.set_defaults(func=cmd_search)
    p = sub.add_parser("eval", help="top-1, top-3 and MRR for question<TAB>slug files; guide and section "
                                     "for question<TAB>slug<TAB>section files")
    p.add_argument("files", nargs="+")
    p.add_argument("--mode", choices=["hybrid", "lexical", "bm25", "pinyin", "dense", "all"], default="hybrid")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-model", action="store_true")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("import", help="load an official service catalogue (CSV or JSON) as guides")
    p.add_argument("file")
    p.add_argument("--out", help="folder to write the guides to (default: the content folder)")
    p.add_argument("--dry-run", action="store_true", help="check the rows, write nothing")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("nlu-lookup", help="write the NLU lookup table of service words from the guides")
    p.add_argument("--out", default="nlu_data/service_words.yml")
    p.set_defaults(func=cmd_nlu_lookup)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from knowledge.content import ContentError

    try:
        return int(args.func(args))
    except ContentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
