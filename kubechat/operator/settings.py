"""Operator settings, read from KUBECHAT_OPERATOR_* environment variables.

Store credentials are not here: the operator reads Elasticsearch and S3 settings through the
API's `Settings` (KUBECHAT_ELASTICSEARCH_*, KUBECHAT_S3_*), so one Secret configures both.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBECHAT_OPERATOR_", env_file=None, extra="ignore")

    trtllm_image: str = Field(
        default="nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3",
        description="NVIDIA's Triton image with the TensorRT-LLM backend (GPU models).",
    )
    cpu_image: str = Field(
        default="ghcr.io/kubechat/triton-cpu:0.1.0",
        description="Triton with the python backend and kubechat's CPU models (development).",
    )
    kubechat_image: str = Field(
        default="ghcr.io/kubechat/kubechat:0.1.0",
        description="kubechat's own image; runs the weight-fetching init step.",
    )
    image_pull_policy: str = "IfNotPresent"
    namespace: str = Field(default="", description="Watch one namespace; empty watches all.")
    resync_interval_s: float = Field(default=60.0, gt=0, description="Drift correction of children.")
    count_interval_s: float = Field(default=60.0, gt=0, description="Knowledge-base document counts.")
