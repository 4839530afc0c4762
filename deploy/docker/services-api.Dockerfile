# syntax=docker/dockerfile:1
# Services API (`python -m services serve`): payment pages, payment and SMS notifications, guides.
# The same image runs the database migrations (`python -m services migrate`, a one-off job).
ARG BASE_IMAGE=heze/base-app:latest
FROM ${BASE_IMAGE}
WORKDIR /app
ENV SERVICES_API_HOST=0.0.0.0 SERVICES_API_PORT=8030
COPY services services
COPY knowledge knowledge
COPY textnorm textnorm
COPY nlu nlu
# The published guides' volume (compose.yml) takes this directory's owner when first made.
RUN install -d -o heze -g heze var/published-guides
USER 10001:10001
EXPOSE 8030
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/heze-healthcheck", "http://127.0.0.1:${SERVICES_API_PORT}/health"]
CMD ["python", "-m", "services", "serve"]
