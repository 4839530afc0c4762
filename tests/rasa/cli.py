"""Rasa's own command line, run in the Rasa environment (.venv-rasa) with the project's settings for it."""
from __future__ import annotations

import os
import subprocess

from services.settings import ROOT
from stack.processes import RASA_ENV

RASA = str(ROOT / ".venv-rasa" / "bin" / "rasa")


def rasa(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RASA, *args], cwd=ROOT, env={**os.environ, **RASA_ENV}, capture_output=True,
                          text=True, timeout=timeout)
