"""Train the Rasa model when it is missing or stale: ``python -m stack.train``.

Rasa compares the fingerprint of config, domain and data with the newest model in the
output folder and skips training when nothing changed; this wraps that with the project's
paths and one fixed model name, so every process and test uses the same file."""
from __future__ import annotations

import os
import subprocess
import sys

from services.settings import ROOT
from stack.processes import RASA_ENV

MODEL_NAME = "heze"
# nlu_augment/: generated examples (phone transcripts of training sentences, scripts/asr_nlu.py);
# the NLU cross-validation runs on the curated nlu_data/ alone.
TRAIN_ARGS = ["--domain", "bot/domain", "--data", "bot/data", "nlu_data", "nlu_augment", "--config", "config.yml"]


def train(out_dir: str = "var/models") -> int:
    cmd = [str(ROOT / ".venv-rasa/bin/rasa"), "train", *TRAIN_ARGS, "--out", out_dir, "--fixed-model-name", MODEL_NAME]
    log = ROOT / "var/log/train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print("检查模型，必要时训练（约 1 分钟）/ training the Rasa model if stale ...", flush=True)
    with open(log, "wb") as out:
        rc = subprocess.call(cmd, cwd=ROOT, env={**os.environ, **RASA_ENV}, stdout=out, stderr=subprocess.STDOUT)
    if rc != 0:
        print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
        print(f"训练失败 / training failed, log: {log}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(train())
