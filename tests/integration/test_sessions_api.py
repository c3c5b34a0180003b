"""Sessions REST: CRUD, pagination, principals, error shape."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import BOB_KEY, ApiProcess, auth
from tests.integration.conftest import chatting, new_session

pytestmark = pytest.mark.triton


async def test_session_lifecycle(http: httpx.AsyncClient) -> None:
    session = await new_session(http, "first title")
    renamed = await http.patch(f"/sessions/{session}", json={"title": "second title"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "second title"
    assert (await http.get(f"/sessions/{session}")).json()["title"] == "second title"
    assert (await http.delete(f"/sessions/{session}")).status_code == 204
    missing = await http.get(f"/sessions/{session}")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"code": "session_not_found", "message": f"session {session} not found",
                  "type": "invalid_request_error", "param": None}
    }  # fmt: skip


async def test_sessions_are_paginated_newest_first(api: ApiProcess) -> None:
    async with httpx.AsyncClient(base_url=api.url, headers=auth("carol-key")) as anonymous:
        assert (await anonymous.get("/sessions")).status_code == 401
    async with httpx.AsyncClient(base_url=api.url, headers=auth(BOB_KEY)) as bob:
        created = [await new_session(bob, f"s{i}") for i in range(5)]
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await bob.get("/sessions", params=params)).json()
            seen += [s["id"] for s in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        newest_first = [s for s in seen if s in created]
        assert newest_first == created[::-1]
        assert len(seen) == len(set(seen))


async def test_messages_are_paginated_in_order(api: ApiProcess, http: httpx.AsyncClient) -> None:
    session = await new_session(http)
    async with chatting(api, session) as chat:
        for i in range(3):
            await chat.ask(f"question {i}", model="synthetic", options={"max_tokens": 2})
            await chat.turn()
    page1 = (await http.get(f"/sessions/{session}/messages", params={"limit": 4})).json()
    page2 = (
        await http.get(f"/sessions/{session}/messages", params={"limit": 4, "cursor": page1["next_cursor"]})
    ).json()
    items = page1["items"] + page2["items"]
    assert page2["next_cursor"] is None
    assert [m["seq"] for m in items] == [1, 2, 3, 4, 5, 6]
    assert [m["content"] for m in items if m["role"] == "user"] == ["question 0", "question 1", "question 2"]
    bad = await http.get(f"/sessions/{session}/messages", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"


async def test_principals_cannot_see_each_others_sessions(api: ApiProcess, http: httpx.AsyncClient) -> None:
    alices = await new_session(http, "alice's secret")
    async with httpx.AsyncClient(base_url=api.url, headers=auth(BOB_KEY)) as bob:
        listed = [s["id"] for s in (await bob.get("/sessions", params={"limit": 200})).json()["items"]]
        assert alices not in listed
        for method, path, body in [
            ("GET", f"/sessions/{alices}", None),
            ("GET", f"/sessions/{alices}/messages", None),
            ("PATCH", f"/sessions/{alices}", {"title": "mine now"}),
            ("DELETE", f"/sessions/{alices}", None),
        ]:
            response = await bob.request(method, path, json=body)
            assert response.status_code == 404, (method, path)
    assert (await http.get(f"/sessions/{alices}")).json()["title"] == "alice's secret"


async def test_requests_need_a_valid_key_but_probes_do_not(api: ApiProcess) -> None:
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        response = await anonymous.get("/sessions")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"
        assert response.headers["www-authenticate"] == "Bearer"
        assert (await anonymous.get("/health")).json() == {"status": "ok"}
        ready = await anonymous.get("/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["model:smollm2"] == "ready"
        assert ready.json()["knowledge_bases"] == {"ready": 3, "unavailable": 0}  # counts, not names


async def test_invalid_bodies_get_the_error_shape(http: httpx.AsyncClient) -> None:
    response = await http.post("/sessions", json={"title": ""})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    response = await http.post("/sessions", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 422


async def test_models_lists_the_catalog(http: httpx.AsyncClient) -> None:
    models = {m["name"]: m for m in (await http.get("/models")).json()["items"]}
    assert set(models) == {"smollm2", "minilm", "synthetic", "ocr", "tool-caller"}
    assert models["smollm2"]["default"] and models["smollm2"]["ready"]
    # The benchmark and test models are marked so.
    assert {n for n, m in models.items() if m["purpose"] == "development"} == {"synthetic", "tool-caller"}
    assert models["minilm"]["capabilities"] == ["embeddings"]
    assert models["ocr"]["capabilities"] == ["vision"] and models["ocr"]["ready"]
    assert models["tool-caller"]["capabilities"] == ["chat", "tools"] and models["tool-caller"]["ready"]
