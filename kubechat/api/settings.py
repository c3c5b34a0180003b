"""API settings, read from KUBECHAT_* environment variables (never secret defaults in code)."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from kubechat.core.settings import StoreSettings

if TYPE_CHECKING:
    from kubechat.images.processing import ImageLimits

# The WebSocket server's own limit on a message (uvicorn's `ws_max_size`, 16 MiB by default):
# beyond it the server closes the socket with 1009 (message too big) before the API sees the
# frame. Every way of starting the API leaves uvicorn's default (`kubechat serve`, the image's
# command, the chart's, the tests' ApiProcess), so this is the one transport limit; frames
# between KUBECHAT_MAX_WS_FRAME_BYTES and it get an error event instead (docs/websocket.md).
WS_TRANSPORT_MAX_BYTES = 16 * 1024 * 1024

# Where a pod finds its own namespace (the service account's projected volume).
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class Discovery(StrEnum):
    """Where the API learns its ChatModels and KnowledgeBases."""

    FILES = "files"  # YAML files (models_dir, knowledge_bases_dir); one Triton at triton_url
    KUBERNETES = "kubernetes"  # custom resources in one namespace, each model on its own Triton


class Settings(StoreSettings):
    """Everything the API reads; the stores' part (StoreSettings) the operator reads too."""

    model_config = SettingsConfigDict(env_prefix="KUBECHAT_", env_file=None, extra="ignore")

    discovery: Discovery = Field(
        default=Discovery.FILES,
        description="`files`: ChatModel/KnowledgeBase YAML files and one Triton at TRITON_URL. "
        "`kubernetes`: the custom resources of KUBERNETES_NAMESPACE, watched through the API server.",
    )
    kubernetes_namespace: str = Field(
        default="",
        description="Namespace whose ChatModels and KnowledgeBases this API serves; empty means the "
        "pod's own namespace (else `default`).",
    )
    tokenizers_dir: Path | None = Field(
        default=None,
        description="Cluster mode: folder with one tokenizer folder per model name; unset means "
        "STATE_DIR/tokenizers.",
    )
    triton_url: str = Field(
        default="127.0.0.1:8001", description="Triton gRPC host:port (files mode: every model)."
    )
    models_dir: Path = Field(default=Path("examples/models"), description="Folder of ChatModel YAML files.")
    api_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated `key=principal` pairs. Unset: every request is the single "
        "local principal (embedded, loopback only).",
    )
    local_principal: str = "local"
    default_model: str = Field(default="", description="Model used when a message names none.")
    max_message_chars: int = Field(default=32_000, ge=1)
    max_ws_frame_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        lt=WS_TRANSPORT_MAX_BYTES,
        description="Largest WebSocket frame the chat accepts; a larger one is answered with an error "
        "event (`message_too_large`) and the socket stays open, up to the transport's own limit.",
    )
    history_turns: int = Field(
        default=50, ge=1, description="Most recent messages considered for a model's context."
    )
    triton_timeout_s: float = Field(default=600.0, gt=0)
    cors_origins: list[str] = Field(default_factory=list)
    web_dir: Path | None = Field(
        default=None,
        description="Folder of the built chat page; unset means the one `make install` builds into "
        "the package (kubechat/api/static).",
    )

    # Knowledge bases
    knowledge_bases_dir: Path = Field(
        default=Path("examples/knowledge-bases"), description="Folder of KnowledgeBase YAML files."
    )
    max_upload_files: int = Field(default=20, ge=1, description="Files in one upload request.")
    ingest_workers: int = Field(default=2, ge=1, description="Documents ingested at the same time.")
    retrieval_sources: int = Field(default=5, ge=1, le=50, description="Sources given to the model.")
    retrieval_candidates: int = Field(
        default=20, ge=1, le=1000, description="Hits per ranked list (kNN, BM25) before fusion."
    )

    # Images
    max_image_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="Largest image upload, in bytes (413 image_too_large)."
    )
    max_image_pixels: int = Field(
        default=40_000_000,
        ge=1,
        description="Most pixels (width x height, read from the header before decoding) an image may "
        "have; more is refused as a decompression bomb (413 decompression_bomb).",
    )
    image_max_side: int = Field(
        default=2048, ge=16, description="Stored images are downscaled so their longer side is at most this."
    )
    image_thumbnail_side: int = Field(default=256, ge=16, description="Longer side of image thumbnails.")
    vision_model: str = Field(
        default="",
        description="Vision model that describes images for text-only chat models; empty means the first "
        "model with the `vision` capability",
    )

    # MCP
    mcp_servers: str = Field(
        default="",
        description="MCP servers whose tools models may call: a JSON list, or the path of a YAML or JSON "
        "file holding one (see docs/mcp.md). Secrets only through each server's env_from / "
        "headers_from_env, which name variables of this environment.",
    )
    mcp_refresh_interval_s: float = Field(
        default=60.0, gt=0, description="How often each MCP server's tools are listed again."
    )
    mcp_tool_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest an MCP tool call may take, for servers that set no timeout_s.",
    )
    mcp_server_enabled: bool = Field(
        default=True,
        description="Serve kubechat's own MCP server (knowledge-base search, image description) at /mcp.",
    )

    # Observability (docs/observability.md)
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the Prometheus metrics endpoint (/metrics), served apart from the API so "
        "the ingress never exposes it; unset: not served (`kubechat serve` and the chart set 9464).",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics endpoint listens on.")
    metrics_enabled: bool = Field(
        default=True,
        description="Record request and answer metrics; off only to measure their cost (make bench).",
    )
    log_format: Literal["plain", "json"] = Field(
        default="plain",
        description="`json`: one JSON object per log line, with the request id, session id and a hash "
        "of the principal. Setting it also makes the API configure logging under a bare uvicorn.",
    )
    log_level: str = Field(default="INFO", description="Level of the root logger.")

    def image_limits(self) -> ImageLimits:
        # Imported here: the operator reads these settings too and has no use for Pillow.
        from kubechat.images.processing import ImageLimits

        return ImageLimits(
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
            max_side=self.image_max_side,
            thumbnail_side=self.image_thumbnail_side,
        )

    def cluster_tokenizers_dir(self) -> Path:
        return self.tokenizers_dir or self.state_dir / "tokenizers"

    def namespace(self) -> str:
        """The namespace served in cluster mode."""
        if self.kubernetes_namespace:
            return self.kubernetes_namespace
        if POD_NAMESPACE_FILE.exists():
            return POD_NAMESPACE_FILE.read_text().strip()
        return "default"

    def principals_by_key(self) -> dict[str, str]:
        if self.api_keys is None:
            return {}
        pairs = [p.strip() for p in self.api_keys.get_secret_value().split(",") if p.strip()]
        if not pairs:
            # Set but empty (say, an empty Secret) must not silently mean "no authentication".
            raise ValueError("KUBECHAT_API_KEYS is set but names no key; unset it for local mode")
        keys: dict[str, str] = {}
        for pair in pairs:
            key, sep, principal = pair.partition("=")
            if not sep or not key.strip() or not principal.strip():
                raise ValueError("KUBECHAT_API_KEYS must be comma-separated key=principal pairs")
            if key.strip() in keys:
                raise ValueError("KUBECHAT_API_KEYS names the same key twice")
            keys[key.strip()] = principal.strip()
        return keys


@lru_cache
def get_settings() -> Settings:
    return Settings()
