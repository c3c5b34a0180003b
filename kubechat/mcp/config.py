"""The MCP servers kubechat connects to, as declared in KUBECHAT_MCP_SERVERS.

The setting holds a JSON list, or the path of a YAML or JSON file holding that list (the Helm
chart mounts one). Configuration never holds a secret: a stdio server's environment and an HTTP
server's headers name variables of kubechat's own environment (`env_from`, `headers_from_env`),
read when the server is connected. A variable that is missing does not stop kubechat: the server
stays unavailable, its status says which variable is missing, and loading logs a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

logger = logging.getLogger(__name__)

# `<server>__<tool>` must stay a valid OpenAI function name (letters, digits, `_`, `-`; ≤ 64).
SERVER_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,30}$"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Our variables' names are upper case: a token pasted where a name belongs is refused, instead of
# being looked up and then printed as the name of a missing variable.
OUR_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)
# What a stdio server inherits from kubechat's environment besides its `env_from`.
INHERITED_ENV = ("PATH", "HOME", "LANG")


class McpConfigError(ValueError):
    """KUBECHAT_MCP_SERVERS cannot be read or declares an invalid server."""


class MissingSecretError(Exception):
    """A variable named by `env_from` or `headers_from_env` is not set in kubechat's environment."""


class McpServerConfig(BaseModel):
    """One MCP server. Its tools are offered to models as `<name>__<tool>`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=SERVER_NAME_PATTERN, description="Lower-case letters, digits and `-`.")
    transport: Literal["stdio", "http"]
    # stdio
    command: str = Field(default="", description="stdio: the program to run.")
    args: list[str] = Field(default_factory=list, description="stdio: its arguments.")
    cwd: str | None = Field(default=None, description="stdio: its working directory.")
    env_from: dict[str, str] = Field(
        default_factory=dict,
        description="stdio: the child's variable -> the name of a variable of kubechat's environment. "
        f"Besides these, the child inherits only {', '.join(INHERITED_ENV)}.",
    )
    # http
    url: str = Field(default="", description="http: the streamable HTTP endpoint (http:// or https://).")
    headers_from_env: dict[str, str] = Field(
        default_factory=dict,
        description="http: header -> the name of a variable of kubechat's environment holding its value, "
        'e.g. {"Authorization": "GITHUB_MCP_AUTH"} with GITHUB_MCP_AUTH="Bearer ghp_...".',
    )
    timeout_s: float = Field(default=30.0, gt=0, description="Longest a tool call may take.")
    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="Longest the handshake or a tool listing may take."
    )
    tools: list[str] | None = Field(
        default=None,
        description="The server's tools kubechat uses (names or fnmatch patterns); unset: all of them.",
    )

    @field_validator("env_from")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for child, ours in value.items():
            if not ENV_NAME.match(child):
                raise ValueError(f"{child!r} is not an environment variable name")
            if not OUR_ENV_NAME.match(ours):
                # The value is not echoed: it may be a secret written here by mistake.
                raise ValueError(
                    f"env_from[{child!r}] must name a variable of kubechat's environment "
                    "(upper case); "
                    "secret values never belong in this configuration"
                )
        return value

    @field_validator("headers_from_env")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for header, ours in value.items():
            if not HEADER_NAME.match(header):
                raise ValueError(f"{header!r} is not an HTTP header name")
            if not OUR_ENV_NAME.match(ours):
                raise ValueError(
                    f"headers_from_env[{header!r}] must name a variable of kubechat's environment "
                    "(upper case); "
                    "secret values never belong in this configuration"
                )
        return value

    @model_validator(mode="after")
    def _transport_fields(self) -> McpServerConfig:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError("a stdio server needs `command`")
            if self.url or self.headers_from_env:
                raise ValueError("`url` and `headers_from_env` are for http servers")
        else:
            if self.command or self.args or self.cwd or self.env_from:
                raise ValueError("`command`, `args`, `cwd` and `env_from` are for stdio servers")
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("an http server needs an http:// or https:// `url`")
            if parts.username or parts.password:
                raise ValueError("credentials do not belong in `url`: use headers_from_env")
        return self

    def secret_variables(self) -> list[str]:
        """The variables of kubechat's environment this server reads."""
        return [*self.env_from.values(), *self.headers_from_env.values()]

    def missing_variables(self, environ: Mapping[str, str] = os.environ) -> list[str]:
        return [name for name in self.secret_variables() if name not in environ]

    def child_environment(self, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
        """The whole environment of a stdio server's process."""
        self._require(environ)
        inherited = {name: environ[name] for name in INHERITED_ENV if name in environ}
        return inherited | {child: environ[ours] for child, ours in self.env_from.items()}

    def headers(self, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
        """The headers sent with every request to an HTTP server."""
        self._require(environ)
        return {header: environ[ours] for header, ours in self.headers_from_env.items()}

    def _require(self, environ: Mapping[str, str]) -> None:
        missing = self.missing_variables(environ)
        if missing:
            raise MissingSecretError(f"environment variable {', '.join(missing)} is not set")


def load_mcp_servers(value: str) -> list[McpServerConfig]:
    """The servers declared by KUBECHAT_MCP_SERVERS: a JSON list, or the path of a YAML or JSON
    file holding one. Empty: none. Raises McpConfigError with what is wrong and where."""
    value = value.strip()
    if not value:
        return []
    if value.startswith(("[", "{")):
        where = "KUBECHAT_MCP_SERVERS"
        try:
            declared: Any = json.loads(value)
        except json.JSONDecodeError as exc:
            raise McpConfigError(f"{where} is not valid JSON: {exc}") from None
    else:
        path = Path(value)
        where = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise McpConfigError(
                f"KUBECHAT_MCP_SERVERS is neither a JSON list nor a readable file: {exc}"
            ) from None
        try:
            # YAML 1.2 is a superset of JSON: one parser reads both kinds of file.
            declared = yaml.safe_load(text) if text.strip() else []
        except yaml.YAMLError as exc:
            raise McpConfigError(f"{where} is not valid YAML or JSON: {exc}") from None
    if not isinstance(declared, list):
        raise McpConfigError(f"{where} must hold a list of MCP servers, not {type(declared).__name__}")
    servers = [_server(where, i, item) for i, item in enumerate(declared)]
    seen: set[str] = set()
    for server in servers:
        if server.name in seen:
            raise McpConfigError(f"{where} declares the MCP server {server.name!r} twice")
        seen.add(server.name)
        missing = server.missing_variables()
        if missing:
            logger.warning(
                "MCP server %s needs environment variable %s, which is not set: it stays unavailable",
                server.name,
                ", ".join(missing),
            )
    return servers


def _server(where: str, index: int, item: object) -> McpServerConfig:
    label = f"{where}: server {index}"
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        label += f" ({item['name']})"
    if not isinstance(item, dict):
        raise McpConfigError(f"{label} must be a mapping, not {type(item).__name__}")
    try:
        return McpServerConfig.model_validate(item)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'server'}: {error['msg']}" for error in exc.errors()
        )
        raise McpConfigError(f"{label}: {problems}") from None
