"""The search index: BM25 over jieba tokens, BM25 over their pinyin, and dense vectors, one entry per
guide section, fused by reciprocal rank.

Built by ``python -m knowledge build`` into ``var/kb/``; a fingerprint of the content, local
details, model and index version tells when it is stale."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import bm25s
import numpy as np
import pypinyin
from tqdm import tqdm

from knowledge.config import KnowledgeSettings
from knowledge.content import Section, Topic, load_topics
from knowledge.embed import Encoder, load_encoder
from knowledge import text as text_module
from knowledge.text import HOURS, OVERVIEW, SECTIONS, Tokenizer, asked_aspect, hours_section, strip_aspect, syllables

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)
INDEX_VERSION = 2
# bm25: characters' words; pinyin: their sounds; lexical: both fused; dense: the embedding model;
# hybrid: all three fused (lexical when there is no model).
Mode = Literal["hybrid", "lexical", "bm25", "pinyin", "dense"]
MODES: tuple[Mode, ...] = ("bm25", "pinyin", "lexical", "dense", "hybrid")

# Reciprocal rank fusion: score = sum of w / (RRF_K + rank), over the sections each list matched.
# Weights measured on the dev splits (bench/RESULTS.md). Only ranks are fused, never raw scores:
# e5's cosines sit near 0.8 even for unrelated text. The dense list counts its top DENSE_DEPTH.
RRF_K = 60
BM25_WEIGHT = 1.0
PINYIN_WEIGHT = 1.5
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
    digest.update(f"pypinyin\0{pypinyin.__version__}".encode())
    for path in sorted(settings.resolve(settings.content_dir).glob("*.md")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    published = settings.resolve(settings.published_dir)  # a guide published or updated makes the index stale
    for path in sorted(published.glob("*.md")) if published.is_dir() else []:
        digest.update(b"published\0" + path.name.encode() + b"\0" + path.read_bytes())
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
        self.pinyin = bm25s.BM25()
        self.dense: np.ndarray | None = None
        self._section_tokens: list[list[str]] = []
        self._section_pinyin: list[list[str]] = []
        self.idf: dict[str, float] = {}
        self.topic_vocab: dict[str, set[str]] = {}
        self.topic_sounds: dict[str, set[str]] = {}

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
        self.topic_sounds = {}
        for section, tokens in zip(self.sections, self._section_tokens):
            self.topic_vocab.setdefault(section.slug, set()).update(tokens)
            self.topic_sounds.setdefault(section.slug, set()).update(p for t in tokens for p in _sound_pairs(t))
        self._section_pinyin = [self.tokenizer.pinyin_tokens(section_document(self.topics[s.slug], s))
                                for s in self.sections]

    def build(self, progress: bool = False, known: dict[str, np.ndarray] | None = None) -> "KnowledgeBase":
        """Index every section; ``known``: vectors of section documents embedded already (only the
        other sections go through the model)."""
        self._tokenize_sections(progress)
        self.bm25 = bm25s.BM25()
        self.bm25.index(self._section_tokens, show_progress=False)
        self.pinyin = bm25s.BM25()
        self.pinyin.index(self._section_pinyin, show_progress=False)
        if self.encoder:
            texts = self._documents()
            known = known or {}
            new = [t for t in dict.fromkeys(texts) if t not in known]
            embedded = dict(zip(new, self.encoder.documents(new, progress=progress))) if new else {}
            self.dense = np.stack([known[t] if t in known else embedded[t] for t in texts]) if texts else None
        return self

    def _documents(self) -> list[str]:
        return [section_document(self.topics[s.slug], s) for s in self.sections]

    def with_topics(self, topics: list[Topic]) -> "KnowledgeBase":
        """A new index of ``topics`` with this one's model, embedding only the sections that changed:
        a guide a department publishes is found without a restart (``GuideWatcher``)."""
        known = dict(zip(self._documents(), self.dense)) if self.dense is not None else {}
        return KnowledgeBase(topics, self.encoder, self.dense_weight).build(known=known)

    def save(self, directory: Path, fingerprint_value: str) -> None:
        """Written beside ``directory`` and swapped in. Processes that start together with a stale
        index (two action servers) each write their own copy; the last swap wins, none fails."""
        tmp = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.bm25.save(str(tmp / "bm25"))
        self.pinyin.save(str(tmp / "pinyin"))
        if self.dense is not None:
            np.save(tmp / "dense.npy", self.dense)
        manifest = {
            "version": INDEX_VERSION, "fingerprint": fingerprint_value, "built_at": time.time(),
            "sections": [[s.slug, s.name] for s in self.sections],
            "model": self.encoder.description if self.encoder else None,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
        old = directory.with_name(f"{directory.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        try:
            directory.rename(old)
        except FileNotFoundError:  # none yet, or another process is swapping its copy in
            pass
        try:
            tmp.rename(directory)  # the swap: a reader sees the old index or the new one, never half
        except OSError:  # another process swapped its copy in meanwhile (the same index): keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)

    def load_saved(self, directory: Path) -> bool:
        """Use a saved index if it holds exactly these sections; False when it does not."""
        try:
            manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if manifest.get("sections") != [[s.slug, s.name] for s in self.sections]:
            return False
        if self.encoder is not None and not (directory / "dense.npy").exists() or not (directory / "pinyin").exists():
            return False
        self._tokenize_sections()
        self.bm25 = bm25s.BM25.load(str(directory / "bm25"))
        self.pinyin = bm25s.BM25.load(str(directory / "pinyin"))
        if self.encoder is not None:
            self.dense = np.load(directory / "dense.npy")
        return True

    # -- searching ----------------------------------------------------------------------
    def section_scores(self, query: str, mode: Mode = "hybrid") -> np.ndarray:
        """A score per section (higher is better); zero means no evidence."""
        n = len(self.sections)
        if mode == "dense" and (self.encoder is None or self.dense is None):
            raise RuntimeError("dense search needs an embedding model")
        words = self.topic_part(query)
        tokens = self.tokenizer.tokens(words) if mode != "pinyin" and mode != "dense" else []
        bm = np.asarray(self.bm25.get_scores(tokens), dtype=np.float64) if tokens else np.zeros(n)
        if mode == "bm25":
            return bm
        sounds = self.tokenizer.pinyin_tokens(words) if mode != "dense" else []
        py = np.asarray(self.pinyin.get_scores(sounds), dtype=np.float64) if sounds else np.zeros(n)
        if mode == "pinyin":
            return py
        dense = None
        if mode in ("dense", "hybrid") and self.encoder is not None and self.dense is not None:
            dense = np.asarray(self.dense @ self.encoder.query(query), dtype=np.float64)
            if mode == "dense":
                return dense
        fused = np.zeros(n)
        _add_ranks(fused, bm, BM25_WEIGHT)
        _add_ranks(fused, py, PINYIN_WEIGHT)
        if dense is not None:
            top = np.argsort(-dense, kind="stable")[:DENSE_DEPTH]
            fused[top] += self.dense_weight / (RRF_K + 1 + np.arange(len(top)))
        return fused

    def search(self, query: str, k: int = 3, mode: Mode = "hybrid", per_topic: bool = True) -> list[Hit]:
        """The best ``k`` sections, best first; with ``per_topic``, one section per topic, the
        section the question asks for (``section_for``) when it names one."""
        scores = self.section_scores(query, mode)
        order = np.argsort(-scores, kind="stable")
        asked = asked_aspect(query)
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
                if asked:
                    section = self.topics[section.slug].section(self.section_for(query, section.slug, asked))
            hits.append(Hit(section.slug, section.title, section.name, float(scores[i]), section.text))
            if len(hits) >= k:
                break
        return hits

    def topic_part(self, query: str) -> str:
        """What the words search for: the question without its aspect cues when something is left
        ("补身份证得多少钱" -> "补身份证得"), so that 多少钱 picks the section, not the guide whose fee
        section says the most about money. A question made of cues only ("几点上班") is kept whole."""
        stripped = strip_aspect(query)
        return stripped if self.topic_tokens(query) else query

    def section_for(self, query: str, slug: str, asked: str | None = "") -> str:
        """The section of guide ``slug`` that answers ``query``: the aspect it asks for (office
        hours: wherever this guide keeps them), or OVERVIEW when it names none."""
        aspect = asked_aspect(query) if asked == "" else asked
        if aspect is None:
            return OVERVIEW
        if aspect == HOURS:
            return hours_section(self.topics[slug].sections)
        return aspect if aspect in SECTIONS else OVERVIEW

    def coverage(self, query: str, slug: str) -> float:
        """How much of the question's topic words (aspect words and stopwords aside) the topic
        holds, weighted by IDF: 1.0 when every word is there, 0.0 when none is."""
        tokens = self.topic_tokens(query)
        if not tokens:
            return 0.0
        vocab = self.topic_vocab.get(slug, set())
        sounds = self.topic_sounds.get(slug, set())
        total = sum(self.idf.get(t, self._idf_unknown) for t in tokens)
        # A word the guide holds, or one that sounds like a word it holds (宜宝 for 医保): a phone
        # recogniser's homophone is as good as the word, since only pinyin found the guide.
        found = sum(self.idf.get(t, self._idf_unknown) for t in tokens
                    if t in vocab or len(t) > 1 and set(_sound_pairs(t)) <= sounds)
        return found / total if total else 0.0

    def topic_tokens(self, query: str) -> set[str]:
        """The words of a question that can name a topic: no aspect words, no stopwords, and no
        single characters (after stopwords those are verbs and particles far more often than topics),
        no numbers written in Chinese numerals."""
        return {t for t in self.tokenizer.tokens(strip_aspect(query))
                if (len(t) > 1 or t.isdigit()) and not all(c in _NUMERALS for c in t)}

    def names_a_topic(self, query: str) -> bool:
        """False for a question that is only aspect words ("在哪办", "要多少钱"): a follow-up."""
        return bool(self.topic_tokens(query))


_NUMERALS = frozenset("零〇一二两三四五六七八九十百千万")  # "七十九" is an age, never a topic


def _sound_pairs(word: str) -> list[str]:
    """Neighbouring syllable pairs inside one word ("公积金" -> gong_ji, ji_jin), as pinyin_tokens
    writes them: a misheard word (公鸡) sounds like a guide's word when all its pairs are there."""
    sounds = syllables(word)
    return [f"{a}_{b}" for a, b in zip(sounds, sounds[1:])]


def _add_ranks(fused: np.ndarray, scores: np.ndarray, weight: float) -> None:
    """Reciprocal-rank points for the sections a list matched (score above zero)."""
    order = np.argsort(-scores, kind="stable")
    matched = order[scores[order] > 0]
    fused[matched] += weight / (RRF_K + 1 + np.arange(len(matched)))


def open_knowledge_base(settings: KnowledgeSettings | None = None, build_if_stale: bool = True,
                        progress: bool = False, force: bool = False) -> KnowledgeBase:
    """The knowledge base of these settings: the saved index when it is current (and ``force`` is
    not set), else built (and saved when ``build_if_stale``). ``built_now`` tells which happened."""
    settings = settings or KnowledgeSettings()
    encoder = load_encoder(settings.model_path, settings.query_instruction, settings.embedding_fallback)
    topics = load_topics(settings.resolve(settings.content_dir), settings.resolve(settings.local_file),
                         settings.resolve(settings.published_dir))
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


def published_fingerprint(settings: KnowledgeSettings) -> str:
    """What the published guides are now (their names and bytes)."""
    digest = hashlib.sha256()
    published = settings.resolve(settings.published_dir)
    for path in sorted(published.glob("*.md")) if published.is_dir() else []:
        try:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError:  # replaced while read: the next look sees it
            continue
    return digest.hexdigest()


class GuideWatcher:
    """Keeps a process's knowledge base current with the guides departments publish through the open
    API (services/published_guides.py): ``check`` (every ``KB_REFRESH_S`` in the action server) reads
    the published directory and, when it changed, indexes the guides again and hands the new index
    to ``swap`` (requests under way finish on the old one). Only changed sections are embedded again.
    The saved index is left alone (several processes share it): ``python -m knowledge build
    --if-stale``, run at each start, saves it."""

    def __init__(self, settings: KnowledgeSettings, current: KnowledgeBase,
                 swap: Callable[[KnowledgeBase], None], seen: str | None = None) -> None:
        """``seen``: the published guides' fingerprint taken before ``current`` loaded them (a guide
        published while it loaded is then indexed at the first look); default: now."""
        self.settings, self.current, self.swap = settings, current, swap
        self.seen = published_fingerprint(settings) if seen is None else seen
        self.refused = ""

    def check(self) -> bool:
        """True when the index was renewed; a guide that would not load leaves the current one serving."""
        now = published_fingerprint(self.settings)
        if now in (self.seen, self.refused):
            return False
        try:
            topics = load_topics(self.settings.resolve(self.settings.content_dir),
                                 self.settings.resolve(self.settings.local_file),
                                 self.settings.resolve(self.settings.published_dir))
            renewed = self.current.with_topics(topics)
        except Exception:  # noqa: BLE001 - the guides as they were keep serving; tried again next time
            log.exception("the published guides could not be indexed; the index stays as it was")
            self.refused = now  # logged once, not every look, until the directory changes again
            return False
        self.seen, self.current = now, renewed
        self.swap(renewed)
        log.info("published guides indexed again: %d guides", len(renewed.topics))
        return True

    def run(self, every_s: float, stop: threading.Event) -> None:
        while not stop.wait(every_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the directory unreadable for a moment: look again later
                log.exception("looking for published guides failed")


def is_current(index_dir: Path, fingerprint_value: str) -> bool:
    try:
        manifest = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return manifest.get("fingerprint") == fingerprint_value and manifest.get("version") == INDEX_VERSION
