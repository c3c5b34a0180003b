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
        description="NVIDIA's Triton image with TensorRT-LLM (GPU models; a ChatModel's spec.engine.image "
        "wins): it runs kubechat's LLM API model on the PyTorch backend.",
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
    cache_storage_class: str = Field(
        default="",
        description="Storage class of GPU models' weight caches (a ChatModel's spec.storage."
        "storageClassName wins); empty: the cluster's default class.",
    )
    cache_service_account: str = Field(
        default="",
        description="Service account of the weight cache Jobs, allowed to annotate Jobs with their "
        "download progress (the chart creates it); empty: no progress until a Job ends.",
    )
    cache_access_mode: str = Field(
        default="ReadWriteMany",
        description="Access mode of GPU models' weight caches (spec.storage.accessMode wins). "
        "ReadWriteMany lets replicas on every node mount the cache; with ReadWriteOnce they must "
        "all run on the node it is attached to.",
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
