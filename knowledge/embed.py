"""Dense sentence vectors from a local sentence-transformers model directory. Never downloads."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
_warned: set[str] = set()


class Encoder:
    """A sentence-transformers model loaded from a directory, on the CPU, offline."""

    def __init__(self, model_dir: Path, query_instruction: str = "") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer  # heavy import: only when a model is used

        self.model_dir = model_dir
        self.query_instruction = query_instruction
        self._model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)

    @property
    def identity(self) -> str:
        """Changes when the model's weights or configuration change (part of the index fingerprint)."""
        digest = hashlib.sha256()
        for path in sorted(self.model_dir.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(self.model_dir)}:{stat.st_size}".encode())
        return f"{self.model_dir.name}:{digest.hexdigest()[:16]}:{self.query_instruction}"

    def documents(self, texts: list[str], progress: bool = False) -> np.ndarray:
        vectors = self._model.encode(
            texts, batch_size=32, normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def query(self, text: str) -> np.ndarray:
        vector = self._model.encode(
            [self.query_instruction + text], normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(vector[0], dtype=np.float32)


def load_encoder(model: str, query_instruction: str = "") -> Encoder | None:
    """The configured encoder, or None (logged once per model setting) when none is usable."""
    path = Path(model) if model else None
    if path is None or not (path / "modules.json").exists() and not (path / "config.json").exists():
        key = model or "<unset>"
        if key not in _warned:
            _warned.add(key)
            log.warning("no embedding model at %s: knowledge search runs on BM25 alone", key)
        return None
    return Encoder(path, query_instruction)
