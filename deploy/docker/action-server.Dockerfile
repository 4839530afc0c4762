# syntax=docker/dockerfile:1
# Action server (`python -m actions`): the rasa-sdk action protocol on FastAPI, with the knowledge
# base. The embedding model `make models` fetched (var/models/bge-small-zh-v1.5) is copied in and
# the index is built here, so replicas start with a current index instead of each building one.
ARG BASE_IMAGE=heze/base-app:latest
FROM ${BASE_IMAGE}
WORKDIR /app
ENV ACTION_HOST=0.0.0.0 ACTION_PORT=5055 \
    KB_EMBEDDING_MODEL=var/models/bge-small-zh-v1.5 \
    KB_QUERY_INSTRUCTION=为这个句子生成表示以用于检索相关文章：
COPY actions actions
COPY services services
COPY knowledge knowledge
COPY textnorm textnorm
COPY nlu nlu
COPY var/models/bge-small-zh-v1.5 var/models/bge-small-zh-v1.5
# The index depends on the model and KB_QUERY_INSTRUCTION: set another instruction at run time
# and each replica rebuilds the index in var/kb when it starts.
RUN python -m knowledge build --if-stale && chown -R heze:heze var/kb && install -d -o heze -g heze var/published-guides
USER 10001:10001
EXPOSE 5055
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/heze-healthcheck", "http://127.0.0.1:${ACTION_PORT}/health"]
CMD ["python", "-m", "actions"]
