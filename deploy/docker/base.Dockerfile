# syntax=docker/dockerfile:1
# The Python environment every process image starts from. deploy/docker/build.sh builds it twice:
#   heze/base-rasa  PYTHON_VERSION=3.10  LOCK=requirements/rasa.lock  (Rasa Open Source 3.6 runs on 3.10 only)
#   heze/base-app   PYTHON_VERSION=3.11  LOCK=requirements/app.lock   (action server, services API, voice, console)
# One virtualenv at /opt/venv, installed from the lock file the way scripts/bootstrap.sh does it
# (--no-deps, then pip check); a non-root user, uid 10001; the code goes under /app. No setting and
# no secret is baked in: every process reads its settings from the environment at run time.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS venv
ARG LOCK=requirements/app.lock
# torch is locked as its CPU build (torch==...+cpu), published on PyTorch's own index; a local
# mirror can be given for both with --build-arg PIP_INDEX_URL=... --build-arg PIP_EXTRA_INDEX_URL=...
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# A compiler for any locked package published as source only; it stays in this stage.
# Debian's stable release: its security updates, not pinned versions.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
COPY ${LOCK} /tmp/requirements.lock
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps -r /tmp/requirements.lock \
 && /opt/venv/bin/pip check

FROM python:${PYTHON_VERSION}-slim-bookworm
# HF_HUB_OFFLINE: models come from the image, never from a hub at run time (as in the Makefile).
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1
COPY --from=venv /opt/venv /opt/venv
RUN groupadd --system --gid 10001 heze \
 && useradd --system --uid 10001 --gid heze --create-home --home-dir /home/heze --shell /usr/sbin/nologin heze
COPY deploy/docker/healthcheck.py /usr/local/bin/heze-healthcheck
WORKDIR /app
# var/ is the one place a process writes (caches, the knowledge index when rebuilt); the code stays root's.
RUN mkdir var && chown heze:heze var
