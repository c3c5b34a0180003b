"""kubechat's own MCP server at /mcp, driven by the official `mcp` client against the API process
(real embedder and OCR model in the session's tritonserver); and an API that is itself the client
of a configured MCP server, as /ready reports it."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psutil
import pytest
import yaml
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import CallToolResult, TextContent

from kubechat.embedded.tritonserver import TritonServer
from tests.conftest import ALICE_KEY, BOB_KEY, EXAMPLE_MODELS, ROOT, ApiProcess, api_env, auth
from tests.images import text_image
from tests.integration.test_image_chat import upload_image
from tests.integration.test_knowledge_bases import indexed
from tests.integration.test_mcp_client import STDIO_TOOLS
from tests.polling import wait_until

pytestmark = pytest.mark.triton

TOOLS = {"list_knowledge_bases", "search_knowledge_base", "get_document_chunk", "describe_image"}
FIELD_GUIDE = b"""# Field guide

## Herons
The grey heron nests in colonies called heronries, high in tall trees near water.

## Kingfishers
The common kingfisher dives for small fish from a low perch above slow streams.
"""


@asynccontextmanager
async def mcp_session(api: ApiProcess, key: str | None = ALICE_KEY) -> AsyncIterator[ClientSession]:
    headers = auth(key) if key else {}
    async with (
        create_mcp_http_client(headers=headers) as client,
        streamable_http_client(f"{api.url}/mcp", http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def structured(result: CallToolResult) -> dict[str, Any]:
    assert isinstance(result.structured_content, dict), text(result)
    return dict(result.structured_content)


async def test_mcp_needs_an_api_key(api: ApiProcess) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers) as http:
        for key in (None, "not-a-key"):
            response = await http.post("/mcp", json=initialize, headers=auth(key) if key else {})
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthenticated"
            assert response.headers["www-authenticate"] == "Bearer"
        # Stateless: no stream of server-initiated messages to open.
        response = await http.get("/mcp", headers=auth())
        assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    with pytest.raises(BaseException) as refused:  # the SDK raises it inside task groups
        async with mcp_session(api, key=None):
            pass
    leaf = refused.value
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, MCPError), repr(refused.value)


async def test_the_tools_are_listed(api: ApiProcess) -> None:
    async with mcp_session(api) as session:
        assert session.server_info is not None and session.server_info.name == "kubechat"
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    search = tools["search_knowledge_base"]
    assert set(search.input_schema["required"]) == {"knowledge_base", "query"}
    assert search.input_schema["properties"]["k"]["default"] == 5
    assert "ctx" not in search.input_schema["properties"]
    assert search.output_schema is not None and "sources" in search.output_schema["properties"]


async def test_the_knowledge_bases_one_may_read_are_listed(api: ApiProcess) -> None:
    async with mcp_session(api) as session:
        alice = await session.call_tool("list_knowledge_bases", {})
    async with mcp_session(api, BOB_KEY) as session:
        bob = await session.call_tool("list_knowledge_bases", {})
    assert not alice.is_error and not bob.is_error
    alices = {kb["name"]: kb for kb in structured(alice)["knowledge_bases"]}
    assert set(alices) == {"handbook", "misdeclared"}
    assert {kb["name"] for kb in structured(bob)["knowledge_bases"]} == {"handbook", "private"}
    assert isinstance(alices["handbook"]["documents"], int) and alices["handbook"]["ready"]
    assert "handbook" in text(alice) and "private" not in text(alice)


async def test_search_returns_cited_chunks_and_a_chunk_is_fetched_by_its_id(
    api: ApiProcess, http: httpx.AsyncClient
) -> None:
    (document,) = await indexed(http, "handbook", ("field-guide.md", FIELD_GUIDE))
    async with mcp_session(api) as session:
        result = await session.call_tool(
            "search_knowledge_base", {"knowledge_base": "handbook", "query": "where do herons nest?", "k": 3}
        )
        assert not result.is_error, text(result)
        sources = structured(result)["sources"]
        best = sources[0]
        assert 1 <= len(sources) <= 3 and [s["n"] for s in sources] == list(range(1, len(sources) + 1))
        assert best["document_name"] == "field-guide.md" and best["document_id"] == document["id"]
        assert best["knowledge_base"] == "handbook" and "heronries" in best["text"]
        assert best["chunk_id"].startswith(f"{document['id']}:")
        assert text(result).startswith(f"[1] field-guide.md, section {best['section']}: ")
        assert "heronries" in text(result).split("\n\n")[0]

        chunk = await session.call_tool(
            "get_document_chunk", {"knowledge_base": "handbook", "chunk_id": best["chunk_id"]}
        )
        assert not chunk.is_error, text(chunk)
        assert structured(chunk)["text"] == best["text"]
        assert structured(chunk)["document_name"] == "field-guide.md"
        assert best["text"] in text(chunk)

        missing = await session.call_tool(
            "get_document_chunk", {"knowledge_base": "handbook", "chunk_id": f"{document['id']}:999"}
        )
        assert missing.is_error and text(missing).startswith("document_not_found: ")

    # Bob reads the handbook too, but not the knowledge bases that are alice's alone.
    async with mcp_session(api, BOB_KEY) as session:
        shared = await session.call_tool(
            "search_knowledge_base", {"knowledge_base": "handbook", "query": "heron"}
        )
        assert not shared.is_error and structured(shared)["sources"]
        for tool, arguments in (
            ("search_knowledge_base", {"knowledge_base": "misdeclared", "query": "heron"}),
            ("get_document_chunk", {"knowledge_base": "misdeclared", "chunk_id": best["chunk_id"]}),
        ):
            refused = await session.call_tool(tool, arguments)
            assert refused.is_error, tool
            assert structured(refused)["error"]["code"] == "knowledge_base_not_found"
            assert text(refused) == "knowledge_base_not_found: unknown knowledge base 'misdeclared'"


async def test_an_uploaded_image_is_described(api: ApiProcess, http: httpx.AsyncClient) -> None:
    image = await upload_image(http, text_image(["The password is", "OSPREY"]), "note.png")
    async with mcp_session(api) as session:
        result = await session.call_tool("describe_image", {"image_id": image["id"]})
    assert not result.is_error, text(result)
    assert "OSPREY" in text(result)
    described = structured(result)
    assert described["image_id"] == image["id"] and described["name"] == "note.png"
    assert described["model"] == "ocr" and "OSPREY" in described["description"]
    # Another principal's image does not exist for them.
    async with mcp_session(api, BOB_KEY) as session:
        refused = await session.call_tool("describe_image", {"image_id": image["id"]})
    assert refused.is_error and structured(refused)["error"]["code"] == "image_not_found"


@pytest.fixture(scope="module")
def tooled_api(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """An API that is the client of the stdio test server, configured by a YAML file as the chart
    mounts it, and of a server whose secret is missing."""
    state = tmp_path_factory.mktemp("tooled-state")
    servers = [
        {
            "name": "local",
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-m", "tests.mcp_servers.stdio_server"],
            "cwd": str(ROOT),
            "env_from": {"MCP_TEST_TOKEN": "KUBECHAT_TEST_STDIO_TOKEN"},
        },
        {"name": "locked", "transport": "http", "url": "http://127.0.0.1:9/mcp",
         "headers_from_env": {"Authorization": "KUBECHAT_TEST_NEVER_SET"}},
    ]  # fmt: skip
    (state / "mcp-servers.yaml").write_text(yaml.safe_dump(servers))
    env = api_env(triton, EXAMPLE_MODELS, state) | {
        "KUBECHAT_MCP_SERVERS": str(state / "mcp-servers.yaml"),
        "KUBECHAT_TEST_STDIO_TOKEN": "api-child-token",
    }
    process = ApiProcess(env, state / "api.log")
    process.start()
    yield process
    process.stop()


def test_ready_reports_the_mcp_servers_without_gating(tooled_api: ApiProcess) -> None:
    assert tooled_api.process is not None
    ready = httpx.get(f"{tooled_api.url}/ready", timeout=30)
    assert ready.status_code == 200, ready.text  # the broken MCP server does not make it unready
    servers = ready.json()["mcp_servers"]
    assert servers["local"]["connected"] and servers["local"]["tools"] == len(STDIO_TOOLS)
    assert servers["local"]["transport"] == "stdio" and servers["local"]["last_error"] == ""
    assert not servers["locked"]["connected"]
    assert "KUBECHAT_TEST_NEVER_SET is not set" in servers["locked"]["last_error"]
    assert "api-child-token" not in json.dumps(servers)


def test_stopping_the_api_stops_its_stdio_servers(tooled_api: ApiProcess) -> None:
    assert tooled_api.process is not None
    api = psutil.Process(tooled_api.process.pid)
    children = [c for c in api.children(recursive=True) if "tests.mcp_servers.stdio_server" in c.cmdline()]
    assert len(children) == 1
    tooled_api.stop()
    wait_until(lambda: _gone(children[0]), 10, "the stdio server to exit")


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def local_api(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """An API without KUBECHAT_API_KEYS: every request is the local principal."""
    state = tmp_path_factory.mktemp("local-state")
    env = api_env(triton, EXAMPLE_MODELS, state) | {"KUBECHAT_LOCAL_PRINCIPAL": "alice"}
    del env["KUBECHAT_API_KEYS"]
    process = ApiProcess(env, state / "api.log")
    process.start()
    yield process
    process.stop()


async def test_without_api_keys_mcp_answers_local_hosts_only(local_api: ApiProcess) -> None:
    async with mcp_session(local_api, key=None) as session:
        result = await session.call_tool("list_knowledge_bases", {})
    assert {kb["name"] for kb in structured(result)["knowledge_bases"]} == {"handbook", "misdeclared"}
    # A page of another site reaching 127.0.0.1 (DNS rebinding) is refused.
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=local_api.url, headers=headers) as http:
        response = await http.post("/mcp", json=initialize, headers={"Host": "rebound.example"})
        assert response.status_code == 421
        response = await http.post("/mcp", json=initialize, headers={"Origin": "http://rebound.example"})
        assert response.status_code == 403
