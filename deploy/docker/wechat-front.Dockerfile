# syntax=docker/dockerfile:1
# The WeChat front (`python -m channels.front`): WeChat's servers post to it and it relays to Rasa
# (WECHAT_FRONT_UPSTREAM: the balancer in front of the Rasa replicas), answering `success` itself at
# 4.5 s when Rasa is too busy; the reply then goes out as a customer-service message. It needs only
# aiohttp, which the Rasa environment has.
ARG BASE_IMAGE=heze/base-rasa:latest
FROM ${BASE_IMAGE}
WORKDIR /app
ENV WECHAT_FRONT_HOST=0.0.0.0 WECHAT_FRONT_PORT=5006
COPY channels/__init__.py channels/__init__.py
COPY channels/front.py channels/front.py
COPY channels/wechat_pace.py channels/wechat_pace.py
USER 10001:10001
EXPOSE 5006
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "/usr/local/bin/heze-healthcheck", "http://127.0.0.1:${WECHAT_FRONT_PORT}/health"]
CMD ["python", "-m", "channels.front"]
