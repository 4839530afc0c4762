"""The Rasa project through Rasa's own CLI: data validation, test stories, intent accuracy on the stories'
messages and on phone transcripts. The 5-fold NLU cross-validation is `make bench-nlu` (bench/nlu.py)."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.settings import ROOT
from stack.processes import RASA_ENV
from stack.train import TRAIN_ARGS
from tests.rasa.cli import rasa

pytestmark = pytest.mark.rasa


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


def evaluate(model: Path, rows: list[dict[str, str]], tmp_path: Path, name: str) -> dict:  # type: ignore[type-arg]
    """Intent accuracy as the conversation acts on it (nlu/evaluate.py: nlu_fallback is a miss)."""
    import csv

    tsv = tmp_path / f"{name}.tsv"
    with tsv.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["intent", "text", "reference"], delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / f"{name}.json"
    python = str(ROOT / ".venv-rasa" / "bin" / "python")
    result = subprocess.run([python, "-m", "nlu.evaluate", str(tsv), "--model", str(model), "--out", str(out)],
                            cwd=ROOT, env={**os.environ, **RASA_ENV}, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))


def _story_messages() -> list[dict[str, str]]:
    """Every user message of the test stories with its labelled intent, annotations removed."""
    rows = []
    for path in sorted((ROOT / "tests" / "stories").glob("test_*.yml")):
        for story in yaml.safe_load(path.read_text(encoding="utf-8"))["stories"]:
            for step in story["steps"]:
                if "user" in step:
                    text = re.sub(r"\[([^\]]*)\](?:\([^)]*\)|\{[^}]*\})", r"\1", step["user"]).strip()
                    row = {"text": text, "intent": step["intent"]}
                    if row not in rows:
                        rows.append(row)
    return rows


def test_story_messages_are_understood(rasa_model: Path, tmp_path: Path) -> None:
    """The test stories' user messages through the NLU: `rasa test core` takes the labelled intents as
    given, so this holds the NLU to the same labels (entities are checked by the e2e tests)."""
    rows = _story_messages()
    report = evaluate(rasa_model, rows, tmp_path, "stories")
    assert report["n"] == len(rows) and report["misses"] == []


# Intent accuracy on what a phone recogniser really writes: the held-out caller utterances of
# tests/fixtures/speech, transcribed by the packaged Whisper base (tests/fixtures/asr_nlu/test.tsv).
# A regression floor under what the model reaches today (0.84-0.87 over three trainings, bench/RESULTS.md;
# the path before, with a 0.5 s endpoint and greedy decoding, gave 0.75). Issue 12's goal is 0.90; with
# the packaged Whisper base (CER 0.36 on these calls) it is not met.
MIN_ASR_INTENT_ACCURACY = 0.80
ASR_TEST_SET = ROOT / "tests" / "fixtures" / "asr_nlu" / "test.tsv"


def test_intent_accuracy_on_asr_noised_speech(rasa_model: Path, tmp_path: Path, knowledge: Any) -> None:
    import csv

    from nlu.acts import score

    with ASR_TEST_SET.open(encoding="utf-8") as f:
        rows = [{"intent": r["intent"], "text": r["asr"], "reference": r["reference"]}
                for r in csv.DictReader(f, delimiter="\t")]
    assert len(rows) >= 100
    report = evaluate(rasa_model, rows, tmp_path, "asr")
    report.update(score(report, knowledge))  # and what the caller gets, with the guides (nlu/acts.py)
    dest = ROOT / "bench" / "nlu-asr"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    assert report["accuracy"] >= MIN_ASR_INTENT_ACCURACY, (report["accuracy"], report["confusions"], report["misses"][:10])
