"""Bad input gets the one error shape with a stable code, on every route and on the socket
(docs/reliability.md): numbers past what the engine's tensors hold, lone surrogates, cursors
past any sequence number, unknown routes and methods, bodies that are not JSON, frames past the
limit. The reproductions of issue 21's red-team run, each answered as documented."""

from __future__ import annotations

from typing import Any

import pytest

from kubechat.triton.contract import INT32_MAX
from tests.api.conftest import InProcessApi, receive_json, turn_frames
from tests.conftest import ALICE_KEY

QUESTION = [{"role": "user", "content": "Name three colours."}]
JSON = {"content-type": "application/json", "Authorization": f"Bearer {ALICE_KEY}"}


def error(response: Any) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "type", "param"}, body
    return response.status_code, body["error"]["code"]


# Options past the engine's types (seed UINT64, top_k and max_tokens INT32), of the wrong JSON
# type (booleans are not numbers, 1.5 is not an integer), or an empty model name.
BAD_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("seed past UINT64", {"options": {"seed": 2**64}}),
    ("seed past I-JSON's integers", {"options": {"seed": 2**53}}),
    ("negative seed", {"options": {"seed": -1}}),
    ("seed false", {"options": {"seed": False}}),
    ("seed 1.5", {"options": {"seed": 1.5}}),
    ("seed as text", {"options": {"seed": "7"}}),
    ("top_k past INT32", {"options": {"top_k": 2**31}}),
    ("top_k past INT64", {"options": {"top_k": 2**63}}),
    ("negative top_k", {"options": {"top_k": -1}}),
    ("max_tokens past INT32", {"options": {"max_tokens": 2**31}}),
    ("max_tokens true", {"options": {"max_tokens": True}}),
    ("temperature true", {"options": {"temperature": True}}),
    ("temperature past 2", {"options": {"temperature": 1e300}}),
    ("seventeen stop words", {"options": {"stop": ["x"] * 17}}),
    ("an empty stop word", {"options": {"stop": [""]}}),
    ("empty model", {"model": ""}),
    ("tools 1", {"tools": 1}),
]


@pytest.mark.parametrize(("case", "fields"), BAD_OPTIONS, ids=[c for c, _ in BAD_OPTIONS])
def test_options_past_the_engines_types_are_refused_on_the_socket(
    api: InProcessApi, case: str, fields: dict[str, Any]
) -> None:
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        receive_json(socket)
        socket.send_json({"type": "message", "content": "go", **fields})
        refused = receive_json(socket)
        socket.send_json({"type": "message", "content": "go"})
        *_, done = turn_frames(socket)
    assert refused["type"] == "error" and refused["message_id"] is None
    assert refused["error"]["code"] == "malformed_message", refused
    assert done["status"] == "complete"
    assert len(api.messages(session)) == 2  # only the turn that was accepted
    assert len(api.triton.requests) == 1


def test_the_largest_options_the_engine_takes_reach_it(api: InProcessApi) -> None:
    session = api.session()
    options = {"seed": 2**53 - 1, "top_k": INT32_MAX, "temperature": 2, "stop": ["x"] * 16}
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        receive_json(socket)
        socket.send_json({"type": "message", "content": "go", "options": options})
        *_, done = turn_frames(socket)
    assert done["status"] == "complete"
    (request,) = api.triton.requests
    params = request.params
    assert (params.seed, params.top_k, params.temperature) == (2**53 - 1, INT32_MAX, 2.0)


V1_BAD: list[tuple[str, dict[str, Any]]] = [
    ("seed past UINT64", {"seed": 2**64}),
    ("seed past I-JSON's integers", {"seed": 2**53}),
    ("negative seed", {"seed": -1}),
    ("seed false", {"seed": False}),
    ("max_tokens past INT32", {"max_tokens": 2**31}),
    ("max_completion_tokens past INT32", {"max_completion_tokens": 2**63}),
    ("temperature true", {"temperature": True}),
    ("n true", {"n": True}),
    ("empty model", {"model": ""}),
    ("an empty stop word", {"stop": ""}),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("case", "fields"), V1_BAD, ids=[c for c, _ in V1_BAD])
def test_options_past_the_engines_types_are_refused_on_v1(
    api: InProcessApi, case: str, fields: dict[str, Any], stream: bool
) -> None:
    body = {"model": "synthetic", "messages": QUESTION, "stream": stream, **fields}
    response = api.client.post("/v1/chat/completions", json=body)
    # /v1 answers a request that does not validate as OpenAI does: 400, naming the field.
    assert error(response) == (400, "invalid_request")
    assert response.json()["error"]["param"] == next(iter(fields))
    assert api.triton.requests == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "synthetic", "messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"model": "synthetic", "messages": [{"role": "user", "content": "a\\udc00b"}]}',
        # The surrogate's own bytes, which no UTF-8 text contains.
        b'{"model": "synthetic", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
        b'{"model": "synthetic", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        '{"model": "synthetic", "messages": []}'.encode("utf-16"),
    ],
    ids=["lone high surrogate", "lone low surrogate", "surrogate bytes", "NaN", "UTF-16"],
)
def test_a_body_that_is_not_strict_json_is_refused(api: InProcessApi, body: bytes) -> None:
    response = api.client.post("/v1/chat/completions", content=body, headers=JSON)
    assert error(response) == (400, "invalid_request")
    assert "not valid JSON" in response.json()["error"]["message"]
    assert api.triton.requests == []


def test_every_route_with_a_json_body_reads_strict_json(api: InProcessApi) -> None:
    """Every route of the schema that takes JSON, not only /v1 (each router uses ApiRoute)."""
    taken = 0
    for path, operations in api.client.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            if "application/json" not in operation.get("requestBody", {}).get("content", {}):
                continue
            url = path.replace("{name}", "handbook").replace("{session_id}", "s")
            response = api.client.request(method, url, content=b'{"title": "\\ud800"}', headers=JSON)
            status = 400 if path.startswith("/v1/") else 422  # OpenAI's status under /v1
            assert error(response) == (status, "invalid_request"), (method, path)
            taken += 1
    assert taken >= 4  # sessions (create, rename), search, chat completions


@pytest.mark.parametrize("cursor", ["99999999999999999999", str(2**63), "-1", "x", "1e999:x"])
def test_a_message_cursor_past_any_sequence_number_is_a_400(api: InProcessApi, cursor: str) -> None:
    """Issue 21 (4): 2**63 and beyond overflowed SQLite's integers into a 500."""
    response = api.client.get(f"/sessions/{api.session()}/messages", params={"cursor": cursor})
    assert error(response) == (400, "invalid_request")


@pytest.mark.parametrize("listing", ["/sessions", "/knowledge-bases/handbook/documents", "/images"])
@pytest.mark.parametrize("cursor", ["1e999:x", "nan:x", "-inf:x", "x:y"])
def test_a_time_cursor_that_is_no_time_is_a_400(api: InProcessApi, listing: str, cursor: str) -> None:
    assert error(api.client.get(listing, params={"cursor": cursor})) == (400, "invalid_request")


def test_an_unknown_route_is_a_json_404(api: InProcessApi) -> None:
    for method, path in [("GET", "/nope"), ("POST", "/nope"), ("GET", "/sessions/a%2Fb/messages"),
                         ("DELETE", "/sessions/a%2F..%2Fb"), ("GET", "/v1/nothing")]:  # fmt: skip
        assert error(api.client.request(method, path)) == (404, "not_found"), (method, path)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/sessions", "GET, POST"),
        ("PUT", "/sessions/abc", "DELETE, GET, PATCH"),
        ("OPTIONS", "/sessions/abc", "DELETE, GET, PATCH"),
        ("POST", "/health", "GET"),
        ("GET", "/v1/chat/completions", "POST"),
        ("DELETE", "/knowledge-bases/handbook/documents", "GET, POST"),
    ],
)
def test_a_method_the_path_lacks_is_a_405_that_lists_all_of_its_methods(
    api: InProcessApi, method: str, path: str, allowed: str
) -> None:
    response = api.client.request(method, path)
    assert error(response) == (405, "method_not_allowed")
    assert response.headers["allow"] == allowed


@pytest.mark.parametrize(
    "body",
    [b"{bad", b"", b"\x80\x81 not UTF-8", b"[1, 2", b'{"title": 1e999999}', b"9" * 5000],
    ids=["broken", "empty", "not UTF-8", "cut", "huge float", "huge int"],
)
def test_a_body_that_does_not_parse_is_a_json_error(api: InProcessApi, body: bytes) -> None:
    status, code = error(api.client.post("/sessions", content=body, headers=JSON))
    assert (status, code) == (422, "invalid_request")


def test_a_frame_past_the_limit_in_bytes_is_refused_and_the_socket_stays(api: InProcessApi) -> None:
    """The limit counts bytes: a frame of few characters but many UTF-8 bytes is past it too."""
    limit = api.services.settings.max_ws_frame_bytes
    session = api.session()
    with api.client.websocket_connect(f"/ws/chat/{session}") as socket:
        receive_json(socket)
        text = "€" * (limit // 3 + 1)  # three bytes each: fewer characters than the limit
        assert len(text) < limit
        socket.send_json({"type": "message", "content": text})
        refused = receive_json(socket)
        socket.send_json({"type": "ping"})
        assert receive_json(socket) == {"type": "pong"}
    assert refused["error"]["code"] == "message_too_large"
    assert api.messages(session) == []


def test_the_openapi_schema_documents_every_error_with_the_error_model(api: InProcessApi) -> None:
    schema = api.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    error_model = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            # /v1 answers a request that does not validate with 400, as OpenAI does.
            invalid = "400" if path.startswith("/v1/") else "422"
            assert {invalid, "500"} <= statuses, (method, path)
            for status, response in operation["responses"].items():
                if (status != "default" and int(status) < 400) or (path == "/ready" and status == "503"):
                    continue
                assert response["content"]["application/json"]["schema"] == error_model, (
                    method,
                    path,
                    status,
                )
    completions = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"400", "401", "404", "409", "413", "415", "502", "503"} <= set(completions)
    assert "model_not_found" in completions["404"]["description"]
    messages = schema["paths"]["/sessions/{session_id}/messages"]["get"]["responses"]
    assert {"400", "401", "404"} <= set(messages)
