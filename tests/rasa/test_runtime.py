"""rasa_runtime's own tests, which need Rasa: run inside .venv-rasa by its pytest (tests/rasa_env)."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from services.settings import ROOT
from stack.processes import RASA_ENV

pytestmark = pytest.mark.rasa


def test_rasa_runtime_passes_its_tests_in_the_rasa_environment() -> None:
    python = str(ROOT / ".venv-rasa" / "bin" / "python")
    result = subprocess.run([python, "-m", "pytest", "-c", "tests/rasa_env/pytest.ini", "tests/rasa_env", "-q"],
                            cwd=ROOT, env={**os.environ, **RASA_ENV}, capture_output=True, text=True, timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    passed = re.search(r"(\d+) passed", out)
    assert passed and int(passed.group(1)) >= 40, out[-2000:]
    assert not re.search(r"\d+ (skipped|xfailed|deselected)", out), out[-2000:]
