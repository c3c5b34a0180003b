"""Every listing answers one shape, `{items, next_cursor}`, page by page; the schema says so."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from tests.api.conftest import InProcessApi

# Every GET that lists something, and a path parameter filled in where it needs one.
LISTINGS = {
    "/sessions": "/sessions",
    "/sessions/{session_id}/messages": None,  # filled with a real session below
    "/models": "/models",
    "/knowledge-bases": "/knowledge-bases",
    "/knowledge-bases/{name}/documents": "/knowledge-bases/handbook/documents",
    "/images": "/images",
}


def identity(item: dict[str, Any]) -> str:
    """What names a listed item: its id, or the name of a model or knowledge base."""
    key = item.get("id", item.get("name"))
    assert isinstance(key, str), item
    return key


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, "PNG")
    return out.getvalue()


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_the_schema_gives_every_listing_the_page_shape(api: InProcessApi) -> None:
    schema = api.client.get("/openapi.json").json()
    paged = set()
    for path, operations in schema["paths"].items():
        get = operations.get("get")
        if get is None:
            continue
        body = get["responses"]["200"].get("content", {}).get("application/json", {}).get("schema", {})
        body = resolve(schema, body)
        # No route answers a bare JSON array.
        assert body.get("type") != "array", path
        if path.startswith("/v1/"):
            continue  # OpenAI's shapes, which its clients expect
        parameters = {p["name"] for p in get.get("parameters", []) if p["in"] == "query"}
        if "cursor" in parameters:
            assert {"limit", "cursor"} <= parameters, path
            assert set(body["required"]) == {"items", "next_cursor"}, path
            assert body["properties"]["items"]["type"] == "array", path
            assert body["title"].endswith("Page"), path
            paged.add(path)
    assert paged == set(LISTINGS)


def test_every_listing_pages_the_same_way(api: InProcessApi) -> None:
    session = api.session()
    api.client.post("/sessions", json={"title": "another"})
    for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255)):
        response = api.client.post("/images", files={"file": ("c.png", png(colour), "image/png")})
        assert response.status_code == 201, response.text
    api.client.post(
        "/knowledge-bases/handbook/documents",
        files=[("files", (f"n{i}.txt", f"note {i}".encode())) for i in range(3)],
    )
    for template, path in LISTINGS.items():
        path = path or template.replace("{session_id}", session)
        whole = api.client.get(path, params={"limit": 200})
        assert whole.status_code == 200, (path, whole.text)
        assert set(whole.json()) == {"items", "next_cursor"} and whole.json()["next_cursor"] is None
        everything = whole.json()["items"]
        # One item a page: the same items in the same order, and no empty last page.
        walked, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
            page = api.client.get(path, params=params).json()
            walked += page["items"]
            if not (cursor := page["next_cursor"]):
                break
        # Compared by identity: a document's ingestion state (its embedder is unreachable here,
        # so it retries) and a model's readiness may change between one request and the next.
        assert [identity(i) for i in walked] == [identity(i) for i in everything], path
        if template != "/sessions/{session_id}/messages":  # a new session has no messages yet
            assert len(everything) >= 2, path
