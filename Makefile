# Heze Citizen Assistant. The two commands: `make run` and `make test` (see README.md).
SHELL := /bin/bash
RASA  := .venv-rasa/bin/rasa
PY    := .venv/bin/python
RASA_ARGS := --domain bot/domain --data bot/data nlu_data nlu_augment --config config.yml
export RASA_TELEMETRY_ENABLED := false
export TF_CPP_MIN_LOG_LEVEL := 2
export SQLALCHEMY_SILENCE_UBER_WARNING := 1
export HF_HUB_OFFLINE := 1

.PHONY: run test bootstrap train db kb models validate bench bench-kb bench-wechat bench-voice bench-console bench-payments bench-nlu bench-scaleout bench-webchat bench-reminders fuzz lock clean

run: bootstrap db train kb
	$(PY) -m stack

# The tests train the model once per run, when a test first needs it (tests/conftest.py).
test: bootstrap
	$(PY) -m pytest

bootstrap:
	@bash scripts/bootstrap.sh

# Migrate the service database and load the fictional sample data into an empty one.
db: bootstrap
	@$(PY) -m services seed

# Trains only when the data, domain or config changed (Rasa compares fingerprints).
train: bootstrap
	@$(PY) -m stack.train

# The knowledge-base index under var/kb: built when missing or stale (content, local.yml, model).
kb: bootstrap
	@$(PY) -m knowledge build --if-stale

# Production models, where the internet is reachable (never at run time): the Chinese embedding model
# the Chinese Vosk model (VOSK_MODEL=vosk-model-cn-0.22 for the large one) and faster-whisper small.
models: bootstrap
	HF_HUB_OFFLINE=0 $(PY) -m knowledge.models var/models
	$(PY) -m voice.models var/models $(VOSK_MODEL)
	HF_HUB_OFFLINE=0 $(PY) -m voice.models var/models faster-whisper-small

validate: bootstrap
	$(RASA) data validate $(RASA_ARGS)

# Turns through the rest channel, then the project's Rasa against stock Rasa 3.6.21 (turn cost, profiles).
bench: bootstrap train
	$(PY) -m bench.run
	$(PY) -m bench.turns

bench-kb: bootstrap
	$(PY) -m bench.kb

bench-wechat: bootstrap train
	$(PY) -m bench.wechat

bench-voice: bootstrap train
	$(PY) -m bench.voice
	$(PY) -m bench.echo

bench-console: bootstrap
	$(PY) -m bench.console

# The reminder scheduler over 100,000 subscriptions, SQLite and PostgreSQL (about 2 minutes).
bench-reminders: bootstrap
	$(PY) -m bench.reminders

# The web chat page: its weight and the time to the first message on Chrome's 3G profiles (about 4 minutes).
bench-webchat: bootstrap train
	$(PY) -m bench.webchat

# WeChat Pay notify handling (real crypto, through the services API) and reconciliation of 100,000 orders.
bench-payments: bootstrap
	$(PY) -m bench.payments

# NLU 5-fold cross-validation on nlu_data/ (about 9 minutes); fails under intent macro-F1 0.95.
bench-nlu: bootstrap
	$(PY) -m bench.nlu

# Rasa replicas behind HAProxy (1, 2, 3) under locust load: turns/s, p95, CPU per turn (about 12 minutes).
bench-scaleout: bootstrap train
	$(PY) -m bench.scaleout

# A million inputs through the WeChat protocol layer (atheris); the corpus grows under var/fuzz.
# Result (runs, coverage, crashes: none expected) goes to bench/RESULTS.md by hand.
fuzz: bootstrap
	$(PY) -m tests.fuzz.wechat_protocol -runs=1000000 -print_final_stats=1 -artifact_prefix=var/fuzz/ var/fuzz/wechat_protocol

# Re-resolve the pinned requirements (needs the package index).
lock:
	@bash scripts/lock.sh

clean:
	rm -rf var/models var/log results
