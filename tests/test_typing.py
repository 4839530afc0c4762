"""mypy is clean on the application packages (settings in mypy.ini)."""
import subprocess
import sys

from services.settings import ROOT


def test_mypy_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "services", "textnorm", "stack", "actions", "knowledge", "voice", "console", "nlu", "rasa_runtime"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
