"""The Rasa project through Rasa's own CLI: data validation, test stories, NLU cross-validation."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from services.settings import ROOT
from stack.processes import RASA_ENV
from stack.train import TRAIN_ARGS

pytestmark = pytest.mark.rasa
RASA = str(ROOT / ".venv-rasa" / "bin" / "rasa")
MIN_INTENT_MACRO_F1 = 0.95


def rasa(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RASA, *args], cwd=ROOT, env={**os.environ, **RASA_ENV}, capture_output=True,
                          text=True, timeout=timeout)


def _responses_used_outside_stories() -> set[str]:
    """Responses that forms ask (utter_ask_<slot>), that actions send by name, or that Rasa's
    default actions send (action_default_fallback says utter_default)."""
    used: set[str] = {"utter_default"}
    for path in (ROOT / "bot" / "domain").glob("*.yml"):
        for form in (yaml.safe_load(path.read_text()).get("forms") or {}).values():
            used |= {f"utter_ask_{slot}" for slot in form.get("required_slots", [])}
    for path in (ROOT / "actions").glob("*.py"):
        used |= set(re.findall(r'response="(utter_\w+)"', path.read_text()))
    return used


def test_data_validate_is_clean() -> None:
    result = rasa("data", "validate", *TRAIN_ARGS)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    warnings = re.findall(r"UserWarning: (.*)", out)
    unused = {m for w in warnings for m in re.findall(r"The utterance '(\w+)' is not used in any story or rule", w)}
    others = [w for w in warnings if "is not used in any story or rule" not in w]
    assert others == []
    assert unused <= _responses_used_outside_stories(), unused - _responses_used_outside_stories()


def test_stories_all_pass(rasa_model: Path, tmp_path: Path) -> None:
    result = rasa("test", "core", "--model", str(rasa_model), "--stories", "tests/stories",
                  "--out", str(tmp_path), "--fail-on-prediction-errors")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    report = json.loads((tmp_path / "story_report.json").read_text())
    assert report["conversation_accuracy"]["accuracy"] == 1.0, (tmp_path / "failed_test_stories.yml").read_text()


# Rasa draws the folds from numpy's global random state (StratifiedKFold with no seed): fixing it
# makes the gate repeatable. Unseeded runs scatter by about +-0.005 (bench/RESULTS.md).
FOLD_SEED = 0
_SEEDED_RASA = ("import sys, numpy; numpy.random.seed(int(sys.argv.pop(1))); "
                "from rasa.__main__ import main; sys.argv[0] = 'rasa'; main()")


def test_nlu_cross_validation_macro_f1(tmp_path: Path) -> None:
    python = str(ROOT / ".venv-rasa" / "bin" / "python")
    result = subprocess.run(
        [python, "-c", _SEEDED_RASA, str(FOLD_SEED), "test", "nlu", "--nlu", "nlu_data", "--config", "config.yml",
         "--cross-validation", "--folds", "5", "--out", str(tmp_path)],
        cwd=ROOT, env={**os.environ, **RASA_ENV}, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report_path = tmp_path / "intent_report.json"
    report = json.loads(report_path.read_text())
    dest = ROOT / "bench" / "nlu-crossval"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(report_path, dest / "intent_report.json")
    f1 = report["macro avg"]["f1-score"]
    weak = {k: round(v["f1-score"], 3) for k, v in report.items() if isinstance(v, dict) and v.get("f1-score", 1) < 0.9}
    assert f1 >= MIN_INTENT_MACRO_F1, f"intent macro-F1 {f1:.3f} < {MIN_INTENT_MACRO_F1}; weak intents: {weak}"
