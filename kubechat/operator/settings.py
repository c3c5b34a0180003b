"""Operator settings, read from KUBECHAT_OPERATOR_* environment variables.

Store credentials are not here: the operator reads Elasticsearch and S3 settings through
`kubechat.core.settings.StoreSettings` (KUBECHAT_ELASTICSEARCH_*, KUBECHAT_S3_*), as the API does,
so one Secret configures both.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
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
    trtllm_model_templates_dir: str = Field(
        default="/app/all_models/inflight_batcher_llm",
        description="Folder of NVIDIA's inflight_batcher_llm models inside trtllm_image; the pods copy "
        "preprocessing/1/model.py and postprocessing/1/model.py from it. NVIDIA's Triton docs use this "
        "path for 25.01+ images; images that lack it (issues report 24.07 and 24.12) need a derived image "
        "or another path here.",
    )
    model_s3_endpoint: str = Field(
        default="",
        description="host:port of the S3 service s3:// model sources are fetched from; empty: AWS S3.",
    )
    model_s3_secure: bool = Field(default=True, description="HTTPS to model_s3_endpoint.")
    model_s3_region: str = Field(default="", description="Region of model_s3_endpoint, when it needs one.")
    namespace: str = Field(default="", description="Watch one namespace; empty watches all.")
    resync_interval_s: float = Field(default=60.0, gt=0, description="Drift correction of children.")
    count_interval_s: float = Field(default=60.0, gt=0, description="Knowledge-base document counts.")
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the operator's Prometheus metrics (/metrics); unset: not served (the chart "
        "sets 9464).",
    )
    log_format: Literal["plain", "json"] = Field(
        default="plain",
        validation_alias=AliasChoices("KUBECHAT_OPERATOR_LOG_FORMAT", "KUBECHAT_LOG_FORMAT"),
        description="`json`: one JSON object per log line.",
    )
    log_level: str = Field(
        default="INFO", validation_alias=AliasChoices("KUBECHAT_OPERATOR_LOG_LEVEL", "KUBECHAT_LOG_LEVEL")
    )
