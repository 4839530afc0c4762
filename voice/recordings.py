"""Caller audio recordings (off by default): one WAV per call under var/recordings/<date>/."""
from __future__ import annotations

import datetime as dt
import logging
import time
import wave
from pathlib import Path

logger = logging.getLogger(__name__)


class WavRecording:
    def __init__(self, path: Path, rate: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._wav = wave.open(str(path), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)

    def write(self, pcm: bytes) -> None:
        self.written = True
        self._wav.writeframes(pcm)

    def set_rate(self, rate: int) -> None:
        """The PBX's audio turned out to be at another rate; only before anything was written."""
        if not getattr(self, "written", False):
            self._wav.setframerate(rate)

    def close(self) -> str:
        self._wav.close()
        return str(self.path)


class Recorder:
    """Makes a recording per call and deletes recordings older than the retention period."""

    def __init__(self, root: Path, retention_days: int) -> None:
        self.root, self.retention_days = root, retention_days

    def __call__(self, call_id: str, rate: int) -> WavRecording:
        day = dt.date.today().isoformat()
        return WavRecording(self.root / day / f"{call_id}.wav", rate)

    def purge(self, now: float | None = None) -> int:
        """Delete recordings older than the retention period; returns how many went."""
        cutoff = (now or time.time()) - self.retention_days * 86400
        removed = 0
        for path in self.root.glob("*/*.wav"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        for day in self.root.glob("*"):
            if day.is_dir() and not any(day.iterdir()):
                day.rmdir()
        if removed:
            logger.info("deleted %d recordings older than %d days", removed, self.retention_days)
        return removed
