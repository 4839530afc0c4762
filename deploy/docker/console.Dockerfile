# syntax=docker/dockerfile:1
# Staff console (`python -m console serve`). It brings the service database's schema up to date
# when it starts. First admin: `python -m console create-user --username NAME` in this image.
ARG BASE_IMAGE=heze/base-app:latest
FROM ${BASE_IMAGE}
WORKDIR /app
ENV CONSOLE_HOST=0.0.0.0 CONSOLE_PORT=8020
COPY console console
COPY channels channels
COPY services services
COPY knowledge knowledge
COPY textnorm textnorm
COPY nlu nlu
# Recordings (VOICE_RECORD_AUDIO): a volume mounted here starts with this owner.
RUN install -d -o heze -g heze var/recordings
USER 10001:10001
EXPOSE 8020
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/heze-healthcheck", "http://127.0.0.1:${CONSOLE_PORT}/health"]
CMD ["python", "-m", "console", "serve"]
