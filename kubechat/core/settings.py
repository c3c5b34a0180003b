"""Settings every kubechat process shares: where the stores are and how to reach them.

Read from KUBECHAT_* environment variables (in a cluster, credentials from Kubernetes Secrets),
never with secret defaults in code. The API's settings extend these; the operator reads only
these, so one Secret configures both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ElasticsearchCredentials(TypedDict):
    api_key: str | None
    username: str | None
    password: str | None
    ca_certs: str | None


class StoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBECHAT_", env_file=None, extra="ignore")

    state_dir: Path = Field(
        default=Path(".kubechat"), description="Embedded state: history database, tokenizers."
    )
    database_url: str = Field(
        default="", description="History store; empty means SQLite at STATE_DIR/history.sqlite3."
    )
    # Cluster stores; unset means the embedded ones under STATE_DIR.
    elasticsearch_url: str = ""
    elasticsearch_api_key: SecretStr | None = None
    elasticsearch_username: str = ""
    elasticsearch_password: SecretStr | None = None
    elasticsearch_ca_certs: str = ""
    elasticsearch_documents_index: str = Field(
        default="kubechat-documents",
        description="Document catalog index; one per kubechat installation sharing a cluster.",
    )
    elasticsearch_history_index: str = Field(
        default="kubechat-history",
        description="Chat history index (sessions and messages) when ELASTICSEARCH_URL is set; one "
        "per kubechat installation sharing a cluster.",
    )
    s3_endpoint: str = Field(default="", description="MinIO/S3 host:port; unset keeps documents on disk.")
    s3_bucket: str = "kubechat"
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_secure: bool = True
    s3_region: str = ""

    def history_database(self) -> Path:
        return Path(self.database_url) if self.database_url else self.state_dir / "history.sqlite3"

    def elasticsearch_credentials(self) -> ElasticsearchCredentials:
        """What a client of the Elasticsearch cluster needs, secrets revealed (never log it)."""
        return ElasticsearchCredentials(
            api_key=_secret(self.elasticsearch_api_key),
            username=self.elasticsearch_username or None,
            password=_secret(self.elasticsearch_password),
            ca_certs=self.elasticsearch_ca_certs or None,
        )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
