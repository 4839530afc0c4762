# syntax=docker/dockerfile:1
# Voice gateway (`python -m voice`): HTTP and WebSocket on 8010, Asterisk AudioSocket on 9092.
# espeak-ng speaks (through pyttsx3) and ffmpeg decodes WeChat voice messages, both from Debian.
# The Chinese Vosk model `make models` fetched (var/models/vosk-model-small-cn-0.22) is copied in.
ARG BASE_IMAGE=heze/base-app:latest
FROM ${BASE_IMAGE}
WORKDIR /app
# Debian's stable release: its security updates, not pinned versions.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng ffmpeg \
 && rm -rf /var/lib/apt/lists/*
ENV VOICE_HOST=0.0.0.0 VOICE_HTTP_PORT=8010 VOICE_AUDIOSOCKET_HOST=0.0.0.0 VOICE_AUDIOSOCKET_PORT=9092 \
    VOICE_VOSK_MODEL=var/models/vosk-model-small-cn-0.22
COPY voice voice
COPY services services
COPY knowledge knowledge
COPY textnorm textnorm
COPY nlu nlu
COPY var/models/vosk-model-small-cn-0.22 var/models/vosk-model-small-cn-0.22
# Recordings (VOICE_RECORD_AUDIO): a volume mounted here starts with this owner.
RUN install -d -o heze -g heze var/recordings
USER 10001:10001
EXPOSE 8010 9092
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/heze-healthcheck", "http://127.0.0.1:${VOICE_HTTP_PORT}/health"]
CMD ["python", "-m", "voice"]
