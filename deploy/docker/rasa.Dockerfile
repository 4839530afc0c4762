# syntax=docker/dockerfile:1
# Rasa server with the project's input channels (channels/), tracker store (rasa_runtime/) and NLU
# components (textnorm/, nlu/). It runs `rasa run` with the arguments stack/processes.py gives it,
# taken from the same settings (tests/deploy checks that they agree); in containers RASA_ENDPOINTS is
# deploy/endpoints.yml (PostgreSQL tracker store, Redis lock store, RabbitMQ event broker).
# The model is the one `make train` wrote (var/models/heze.tar.gz): a new model is a new image tag.
ARG BASE_IMAGE=heze/base-rasa:latest
FROM ${BASE_IMAGE}
WORKDIR /app
# What stack/processes.py (RASA_ENV) sets for Rasa, and where this container listens.
ENV RASA_TELEMETRY_ENABLED=false TF_CPP_MIN_LOG_LEVEL=2 SQLALCHEMY_SILENCE_UBER_WARNING=1 PYTHONWARNINGS=ignore \
    RASA_HOST=0.0.0.0 RASA_PORT=5005 RASA_MODEL_DIR=var/models RASA_ENDPOINTS=deploy/endpoints.yml
COPY bot/credentials.yml bot/credentials.yml
COPY deploy/endpoints.yml deploy/endpoints.yml
COPY channels channels
COPY rasa_runtime rasa_runtime
COPY textnorm textnorm
COPY nlu nlu
COPY var/models/heze.tar.gz var/models/heze.tar.gz
USER 10001:10001
EXPOSE 5005
# Loading the model takes up to a minute or two: the start period covers it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "/usr/local/bin/heze-healthcheck", "http://127.0.0.1:${RASA_PORT}/"]
# A shell runs it so that the token and the addresses come from the environment; exec hands the
# process over, so Rasa itself gets SIGTERM.
# hadolint ignore=DL3025
CMD exec rasa run --model "$RASA_MODEL_DIR" --enable-api --auth-token "$RASA_API_TOKEN" \
    --interface "$RASA_HOST" --port "$RASA_PORT" \
    --credentials bot/credentials.yml --endpoints "$RASA_ENDPOINTS"
