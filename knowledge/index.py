"""The search index: BM25 over jieba tokens and dense vectors, one entry per guide section.

Built by ``python -m knowledge build`` into ``var/kb/``; a fingerprint of the content, local
details, model and index version tells when it is stale."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import bm25s
import numpy as np
from tqdm import tqdm

from knowledge.config import KnowledgeSettings
from knowledge.content import Section, Topic, load_topics
from knowledge.embed import Encoder, load_encoder
from knowledge import text as text_module
from knowledge.text import Tokenizer, aspect_of, strip_aspect

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)
INDEX_VERSION = 1
Mode = Literal["hybrid", "bm25", "dense"]

# Reciprocal rank fusion: score = sum of w / (RRF_K + rank). Weights measured on the dev split
# (bench/RESULTS.md); the dense list only counts its top DENSE_DEPTH sections.
RRF_K = 60
BM25_WEIGHT = 1.0
DENSE_WEIGHT = 0.1
DENSE_DEPTH = 50


@dataclass(frozen=True)
class Hit:
    slug: str
    title: str
    section: str
    score: float
    text: str

    def as_json(self) -> dict[str, object]:
        return {"slug": self.slug, "title": self.title, "section": self.section, "score": round(self.score, 4)}


def section_document(topic: Topic, section: Section) -> str:
    """What is indexed for a section: the topic's names, the section's name and its text."""
    return "\n".join([topic.title, " ".join(topic.aliases), section.name, section.text])


def fingerprint(settings: KnowledgeSettings, encoder: Encoder | None) -> str:
    digest = hashlib.sha256(f"v{INDEX_VERSION}".encode())
    digest.update(Path(text_module.__file__ or "").read_bytes())  # tokenisation and stopwords
    for path in sorted(settings.resolve(settings.content_dir).glob("*.md")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    local = settings.resolve(settings.local_file)
    if local.exists():
        digest.update(b"local\0" + local.read_bytes())
    digest.update(f"model\0{encoder.identity if encoder else '-'}".encode())
    return digest.hexdigest()


class KnowledgeBase:
    """Sections of every guide, searchable by BM25, dense vectors, or both fused."""

    def __init__(self, topics: list[Topic], encoder: Encoder | None = None, dense_weight: float = DENSE_WEIGHT) -> None:
        self.dense_weight = dense_weight
        self.built_now = False
        self.topics = {t.slug: t for t in topics}
        self.sections = [s for t in topics for s in t.all_sections()]
        self.encoder = encoder
        words = [w for t in topics for w in (t.title, *t.aliases)]
        self.tokenizer = Tokenizer(words)
        self.bm25 = bm25s.BM25()
        self.dense: np.ndarray | None = None
        self._section_tokens: list[list[str]] = []
        self.idf: dict[str, float] = {}
        self.topic_vocab: dict[str, set[str]] = {}

    # -- building and loading ------------------------------------------------------------
    def _tokenize_sections(self, progress: bool = False) -> None:
        sections = tqdm(self.sections, desc="BM25 tokens", unit="section", disable=not progress)
        self._section_tokens = [self.tokenizer.tokens(section_document(self.topics[s.slug], s)) for s in sections]
        n = len(self._section_tokens)
        df = Counter(tok for tokens in self._section_tokens for tok in set(tokens))
        self.idf = {tok: math.log(1 + (n - c + 0.5) / (c + 0.5)) for tok, c in df.items()}
        # A word no guide uses weighs as much as a typical word, not as much as the rarest one:
        # "刚生" or "岁数" should not outweigh 户口 or 结婚 when they sit beside them.
        self._idf_unknown = float(np.median(list(self.idf.values()))) if self.idf else 1.0
        self.topic_vocab = {}
        for section, tokens in zip(self.sections, self._section_tokens):
            self.topic_vocab.setdefault(section.slug, set()).update(tokens)

    def build(self, progress: bool = False) -> "KnowledgeBase":
        self._tokenize_sections(progress)
        self.bm25 = bm25s.BM25()
        self.bm25.index(self._section_tokens, show_progress=False)
        if self.encoder:
            texts = [section_document(self.topics[s.slug], s) for s in self.sections]
            self.dense = self.encoder.documents(texts, progress=progress)
        return self

    def save(self, directory: Path, fingerprint_value: str) -> None:
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.bm25.save(str(tmp / "bm25"))
        if self.dense is not None:
            np.save(tmp / "dense.npy", self.dense)
        manifest = {
            "version": INDEX_VERSION, "fingerprint": fingerprint_value, "built_at": time.time(),
            "sections": [[s.slug, s.name] for s in self.sections],
            "model": str(self.encoder.model_dir) if self.encoder else None,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
        old = directory.with_name(directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)  # the swap: a reader sees the old index or the new one, never half
        shutil.rmtree(old, ignore_errors=True)

    def load_saved(self, directory: Path) -> bool:
        """Use a saved index if it holds exactly these sections; False when it does not."""
        try:
            manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if manifest.get("sections") != [[s.slug, s.name] for s in self.sections]:
            return False
        if self.encoder is not None and not (directory / "dense.npy").exists():
            return False
        self._tokenize_sections()
        self.bm25 = bm25s.BM25.load(str(directory / "bm25"))
        if self.encoder is not None:
            self.dense = np.load(directory / "dense.npy")
        return True

    # -- searching ----------------------------------------------------------------------
    def section_scores(self, query: str, mode: Mode = "hybrid") -> np.ndarray:
        """A score per section (higher is better); zero means no evidence."""
        n = len(self.sections)
        tokens = self.tokenizer.tokens(query)
        bm = self.bm25.get_scores(tokens) if tokens else np.zeros(n)
        if mode == "bm25" or self.encoder is None or self.dense is None:
            if mode == "dense":
                raise RuntimeError("dense search needs an embedding model")
            return np.asarray(bm, dtype=np.float64)
        dense = self.dense @ self.encoder.query(query)
        if mode == "dense":
            return np.asarray(dense, dtype=np.float64)
        fused = np.zeros(n)
        order = np.argsort(-bm, kind="stable")
        matched = order[bm[order] > 0]
        fused[matched] += BM25_WEIGHT / (RRF_K + 1 + np.arange(len(matched)))
        top = np.argsort(-dense, kind="stable")[:DENSE_DEPTH]
        fused[top] += self.dense_weight / (RRF_K + 1 + np.arange(len(top)))
        return fused

    def search(self, query: str, k: int = 3, mode: Mode = "hybrid", per_topic: bool = True) -> list[Hit]:
        """The best ``k`` sections, best first; with ``per_topic``, one section per topic, the
        section the question asks for (by its aspect words) when it names one."""
        scores = self.section_scores(query, mode)
        order = np.argsort(-scores, kind="stable")
        aspect = aspect_of(query)
        hits: list[Hit] = []
        seen: set[str] = set()
        for i in order:
            if scores[i] <= 0 and mode != "dense":
                break
            section = self.sections[i]
            if per_topic:
                if section.slug in seen:
                    continue
                seen.add(section.slug)
                if aspect:
                    section = self.topics[section.slug].section(aspect)
            hits.append(Hit(section.slug, section.title, section.name, float(scores[i]), section.text))
            if len(hits) >= k:
                break
        return hits

    def coverage(self, query: str, slug: str) -> float:
        """How much of the question's topic words (aspect words and stopwords aside) the topic
        holds, weighted by IDF: 1.0 when every word is there, 0.0 when none is."""
        tokens = self.topic_tokens(query)
        if not tokens:
            return 0.0
        vocab = self.topic_vocab.get(slug, set())
        total = sum(self.idf.get(t, self._idf_unknown) for t in tokens)
        found = sum(self.idf.get(t, self._idf_unknown) for t in tokens if t in vocab)
        return found / total if total else 0.0

    def topic_tokens(self, query: str) -> set[str]:
        """The words of a question that can name a topic: no aspect words, no stopwords, and no
        single characters (after stopwords those are verbs and particles far more often than topics)."""
        return {t for t in self.tokenizer.tokens(strip_aspect(query)) if len(t) > 1 or t.isdigit()}

    def names_a_topic(self, query: str) -> bool:
        """False for a question that is only aspect words ("在哪办", "要多少钱"): a follow-up."""
        return bool(self.topic_tokens(query))


def open_knowledge_base(settings: KnowledgeSettings | None = None, build_if_stale: bool = True,
                        progress: bool = False, force: bool = False) -> KnowledgeBase:
    """The knowledge base of these settings: the saved index when it is current (and ``force`` is
    not set), else built (and saved when ``build_if_stale``). ``built_now`` tells which happened."""
    settings = settings or KnowledgeSettings()
    encoder = load_encoder(settings.model_path, settings.query_instruction)
    topics = load_topics(settings.resolve(settings.content_dir), settings.resolve(settings.local_file))
    kb = KnowledgeBase(topics, encoder, settings.dense_weight)
    index_dir = settings.resolve(settings.index_dir)
    current = fingerprint(settings, encoder)
    if not force and is_current(index_dir, current) and kb.load_saved(index_dir):
        return kb
    kb.build(progress=progress)
    kb.built_now = True
    if build_if_stale:
        kb.save(index_dir, current)
    return kb


def is_current(index_dir: Path, fingerprint_value: str) -> bool:
    try:
        manifest = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return manifest.get("fingerprint") == fingerprint_value and manifest.get("version") == INDEX_VERSION
