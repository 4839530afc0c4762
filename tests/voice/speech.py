"""Real speech for tests: espeak-ng's Mandarin voice, as a telephone would carry it (8 kHz)."""
from __future__ import annotations

import subprocess
from functools import lru_cache

from voice.audio import read_wav, resample


@lru_cache(maxsize=32)
def spoken(text: str, rate: int = 8000) -> bytes:
    """16-bit PCM of ``text`` said by espeak-ng (``cmn``), at ``rate``."""
    wav = subprocess.run(["espeak-ng", "-v", "cmn", "-s", "150", "--stdout", text],
                         check=True, capture_output=True, timeout=30).stdout
    pcm, src = read_wav(wav)
    return resample(pcm, src, rate)
