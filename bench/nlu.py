"""NLU 5-fold cross-validation on the curated examples (`make bench-nlu`, about 9 minutes here).

Runs `rasa test nlu --cross-validation --folds 5` with numpy's global random state seeded (Rasa draws
the folds from it with no seed of its own), copies the intent report to bench/nlu-crossval/ and exits
1 when the intent macro-F1 is under the gate. The regression checks that run in `make test` are
tests/rasa/test_rasa_cli.py (the test stories' messages, the phone transcripts).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from services.settings import ROOT
from stack.processes import RASA_ENV

MIN_INTENT_MACRO_F1 = 0.95
FOLD_SEED = 0
_SEEDED_RASA = ("import sys, numpy; numpy.random.seed(int(sys.argv.pop(1))); "
                "from rasa.__main__ import main; sys.argv[0] = 'rasa'; main()")


def cross_validate(out: Path, folds: int = 5, seed: int = FOLD_SEED) -> dict:  # type: ignore[type-arg]
    python = str(ROOT / ".venv-rasa" / "bin" / "python")
    result = subprocess.run(
        [python, "-c", _SEEDED_RASA, str(seed), "test", "nlu", "--nlu", "nlu_data", "--config", "config.yml",
         "--cross-validation", "--folds", str(folds), "--out", str(out)],
        cwd=ROOT, env={**os.environ, **RASA_ENV}, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit((result.stdout + result.stderr)[-3000:])
    return json.loads((out / "intent_report.json").read_text())  # type: ignore[no-any-return]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = cross_validate(Path(tmp))
        dest = ROOT / "bench" / "nlu-crossval"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(tmp) / "intent_report.json", dest / "intent_report.json")
    f1 = report["macro avg"]["f1-score"]
    weak = {k: round(v["f1-score"], 3) for k, v in report.items() if isinstance(v, dict) and v.get("f1-score", 1) < 0.9}
    print(f"intent macro-F1 {f1:.4f} (gate {MIN_INTENT_MACRO_F1}); accuracy {report['accuracy']:.4f}; "
          f"weak intents: {weak or 'none'}")
    return 0 if f1 >= MIN_INTENT_MACRO_F1 else 1


if __name__ == "__main__":
    sys.exit(main())
