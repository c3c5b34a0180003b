"""What `make serve` runs, as make itself prints it (`make -n`): the port and host a user gives,
tritonserver's ports after it, and no Hugging Face hub."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def serve_command(*variables: str) -> list[str]:
    # -n prints the recipes without running them; install's recipes are printed too, and skipped.
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "serve", *variables],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (line,) = [line for line in out.replace("\\\n", " ").splitlines() if "kubechat serve" in line]
    return shlex.split(line)


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def test_serve_listens_where_it_is_told() -> None:
    words = serve_command("PORT=8080", "HOST=0.0.0.0")

    assert "HF_HUB_OFFLINE=1" in words and words[words.index("serve") - 1].endswith("kubechat")
    assert (option(words, "--host"), option(words, "--port")) == ("0.0.0.0", "8080")
    ports = [option(words, f"--triton-{kind}-port") for kind in ("grpc", "http", "metrics")]
    assert ports == ["8081", "8082", "8083"]
    assert option(words, "--metrics-port") == "9544"


def test_serve_defaults_to_the_readme_address_and_passes_extra_options() -> None:
    words = serve_command("SERVE_ARGS=--state-dir /tmp/elsewhere")

    assert (option(words, "--host"), option(words, "--port")) == ("127.0.0.1", "8000")
    assert option(words, "--triton-grpc-port") == "8001"
    assert option(words, "--metrics-port") == "9464"
    assert option(words, "--state-dir") == "/tmp/elsewhere"
    # The demo MCP server the README calls, unless the environment names other servers.
    assert "KUBECHAT_MCP_SERVERS=examples/mcp/servers.yaml" in words
    assert words[0].startswith("PATH=") and words[0].split("=", 1)[1].split(":")[0].endswith("/bin")


def test_serve_keeps_the_mcp_servers_of_the_environment() -> None:
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "serve"],
        cwd=ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "KUBECHAT_MCP_SERVERS": "/etc/kubechat/mcp.yaml"},
    ).stdout  # fmt: skip
    assert "KUBECHAT_MCP_SERVERS=/etc/kubechat/mcp.yaml" in out.replace("'", "")
