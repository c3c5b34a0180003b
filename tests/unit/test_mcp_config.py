"""KUBECHAT_MCP_SERVERS: the JSON list or the YAML/JSON file, and what is refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kubechat.mcp.config import McpConfigError, MissingSecretError, load_mcp_servers

GITHUB = {
    "name": "github",
    "transport": "http",
    "url": "https://api.githubcopilot.com/mcp/",
    "headers_from_env": {"Authorization": "GITHUB_MCP_AUTH"},
    "tools": ["get_*", "search_issues"],
}
FILES = {
    "name": "files",
    "transport": "stdio",
    "command": "npx",
    "args": ["-y", "@modelcontextprotocol/server-filesystem", "/srv"],
    "env_from": {"API_TOKEN": "FILES_TOKEN"},
    "timeout_s": 5,
}


def test_a_json_list_in_the_variable() -> None:
    github, files = load_mcp_servers(json.dumps([GITHUB, FILES]))
    assert github.transport == "http" and github.tools == ["get_*", "search_issues"]
    assert github.timeout_s == 30 and github.connect_timeout_s == 10  # the defaults
    assert files.command == "npx" and files.args[0] == "-y" and files.timeout_s == 5
    assert load_mcp_servers("") == [] and load_mcp_servers("  ") == []


def test_a_yaml_or_json_file(tmp_path: Path) -> None:
    yaml_file = tmp_path / "servers.yaml"
    yaml_file.write_text(
        """
- name: files
  transport: stdio
  command: npx
  args: [-y, "@modelcontextprotocol/server-filesystem", /srv]
  env_from: {API_TOKEN: FILES_TOKEN}
  timeout_s: 5
- name: github
  transport: http
  url: https://api.githubcopilot.com/mcp/
  headers_from_env: {Authorization: GITHUB_MCP_AUTH}
  tools: [get_*, search_issues]
"""
    )
    json_file = tmp_path / "servers.json"
    json_file.write_text(json.dumps([FILES, GITHUB]))
    assert load_mcp_servers(str(yaml_file)) == load_mcp_servers(str(json_file))
    assert [s.name for s in load_mcp_servers(str(yaml_file))] == ["files", "github"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_mcp_servers(str(empty)) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[{", "KUBECHAT_MCP_SERVERS is not valid JSON"),
        ("/nonexistent/servers.yaml", "neither a JSON list nor a readable file"),
        (json.dumps([GITHUB, {**FILES, "name": "github"}]), "declares the MCP server 'github' twice"),
        (json.dumps([{**FILES, "name": "Files"}]), "server 0 (Files): name: String should match pattern"),
        (json.dumps([{**FILES, "name": "x" * 32}]), "name: String should match pattern"),
        (json.dumps([{**FILES, "name": "a_b"}]), "name: String should match pattern"),
        (json.dumps([{**FILES, "transport": "sse"}]), "transport: Input should be 'stdio' or 'http'"),
        (json.dumps([{**FILES, "command": ""}]), "a stdio server needs `command`"),
        (json.dumps([{**FILES, "url": "http://x"}]), "`url` and `headers_from_env` are for http servers"),
        (json.dumps([{**GITHUB, "command": "x"}]), "are for stdio servers"),
        (json.dumps([{**GITHUB, "url": "ftp://x/"}]), "needs an http:// or https:// `url`"),
        (json.dumps([{**GITHUB, "url": "https://me:pw@x/"}]), "credentials do not belong in `url`"),
        (json.dumps([{**FILES, "timeout_s": 0}]), "timeout_s: Input should be greater than 0"),
        (json.dumps([{**FILES, "colour": "red"}]), "colour: Extra inputs are not permitted"),
        (json.dumps([{**FILES, "env_from": {"BAD-NAME": "X"}}]), "'BAD-NAME' is not an environment"),
        (json.dumps({"servers": [FILES]}), "must hold a list of MCP servers, not dict"),
        (json.dumps(["files"]), "server 0 must be a mapping, not str"),
    ],
)
def test_what_is_refused(value: str, message: str) -> None:
    with pytest.raises(McpConfigError) as refused:
        load_mcp_servers(value)
    assert message in str(refused.value)


def test_a_secret_value_written_in_the_configuration_is_refused_and_not_echoed() -> None:
    token = "ghp_1234abcdEFGH"  # a value, not the name of a variable (ours are upper case)
    for server in (
        {**FILES, "env_from": {"API_TOKEN": token}},
        {**GITHUB, "headers_from_env": {"Authorization": token}},
        {**GITHUB, "headers_from_env": {"Authorization": f"Bearer {token}"}},
    ):
        with pytest.raises(McpConfigError) as refused:
            load_mcp_servers(json.dumps([server]))
        assert "secret values never belong in this configuration" in str(refused.value)
        assert token not in str(refused.value)


def test_secrets_come_from_the_environment_when_connecting(caplog: pytest.LogCaptureFixture) -> None:
    """A missing variable is decided at connect: loading warns, the server stays unavailable
    with a clear reason (start does not fail), and it is found once it is set (a restart)."""
    with caplog.at_level(logging.WARNING):
        files, github = load_mcp_servers(json.dumps([FILES, GITHUB]))
    assert "needs environment variable FILES_TOKEN, which is not set" in caplog.text
    with pytest.raises(MissingSecretError, match="environment variable FILES_TOKEN is not set"):
        files.child_environment({"PATH": "/bin"})

    environ = {"PATH": "/bin", "HOME": "/home/k", "KUBECHAT_API_KEYS": "k=alice", "FILES_TOKEN": "t0k"}
    assert files.child_environment(environ) == {"PATH": "/bin", "HOME": "/home/k", "API_TOKEN": "t0k"}
    assert github.headers({"GITHUB_MCP_AUTH": "Bearer ghp_x"}) == {"Authorization": "Bearer ghp_x"}
    # The configuration holds names of variables only: nothing secret to print.
    assert "t0k" not in repr(files) and "ghp_x" not in repr(github)
    assert github.secret_variables() == ["GITHUB_MCP_AUTH"]
