# syntax=docker/dockerfile:1
#
# kubechat's image. Three programs, one image:
#   the API       (default command)        uvicorn --factory kubechat.api.app:create_app
#   the operator  (the chart's command)    kubechat operator
#   ChatModel pods' fetch step (operator)  python -m kubechat.operator.fetch
# They are one Python distribution with one dependency set (pyproject.toml); two images would be
# the same layers under two names, built, scanned and pinned twice. The operator already names
# one image for its fetch step (KUBECHAT_OPERATOR_KUBECHAT_IMAGE); the chart sets it to this one.
#
# Built by skaffold (skaffold.yaml) from the repository root:
#   docker build -f docker/kubechat.Dockerfile -t ghcr.io/kubechat/kubechat:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
# The chat page (web/) is built with the Node.js version it is developed and tested with.
ARG NODE_IMAGE=node:20.20.2-bookworm-slim

# The chat page: npm ci from the lockfile, then the Vite build into kubechat/api/static, which the
# API serves at / (kubechat/api/web.py). Only its output goes on; Node.js stays in this stage.
FROM ${NODE_IMAGE} AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/index.html web/tsconfig.json web/vite.config.ts ./
COPY web/public ./public
COPY web/src ./src
RUN npm run build

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The dependencies first (an empty package with the real pyproject.toml): this layer is
# reused for as long as only kubechat's own code changes.
COPY pyproject.toml README.md ./
RUN mkdir kubechat && touch kubechat/__init__.py \
    && pip install . && pip uninstall --yes kubechat && rm -rf kubechat build
COPY kubechat ./kubechat
COPY --from=web /src/kubechat/api/static ./kubechat/api/static
RUN pip install --no-deps .

FROM ${PYTHON_IMAGE}
# The unprivileged user kubechat's pods run as (kubechat.operator.manifests.NON_ROOT_UID).
RUN groupadd --gid 1000 kubechat \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kubechat
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The chart runs it with a read-only root filesystem; /tmp and the state folder are volumes.
WORKDIR /tmp
USER 1000:1000
EXPOSE 8000 8080
CMD ["uvicorn", "--factory", "kubechat.api.app:create_app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--forwarded-allow-ips", "*", "--ws-per-message-deflate", "false"]
