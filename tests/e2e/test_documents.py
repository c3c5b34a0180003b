"""A document uploaded through the ingress is stored in MinIO, indexed in Elasticsearch by the
API with the minilm embedder, found by search, and cited in a chat answer."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.e2e.cluster import (
    CHAT_MODEL,
    DEADLINE_S,
    GREEDY,
    KNOWLEDGE_BASE,
    chatting,
    new_session,
    requires_cluster,
)
from tests.polling import eventually

pytestmark = requires_cluster


async def test_an_uploaded_document_is_indexed_searched_and_cited(http: httpx.AsyncClient) -> None:
    code = f"HERON-{uuid.uuid4().hex[:6].upper()}"
    name = f"e2e-runbook-{code.lower()}.md"
    text = (
        "# Release runbook\n\n"
        f"The launch code of the autumn release is {code}.\n\n"
        "Rollbacks are announced in the operations channel before they start.\n"
    )
    response = await http.post(
        f"/knowledge-bases/{KNOWLEDGE_BASE}/documents",
        files=[("files", (name, text.encode(), "text/markdown"))],
    )
    assert response.status_code == 202, response.text
    (document,) = response.json()["documents"]
    try:

        async def settled() -> dict[str, Any] | None:
            found = (await http.get(f"/knowledge-bases/{KNOWLEDGE_BASE}/documents/{document['id']}")).json()
            return found if found["status"] in ("indexed", "failed") else None

        indexed = await eventually(settled, f"{name} indexed", within_s=DEADLINE_S, interval_s=1.0)
        assert indexed["status"] == "indexed", indexed

        search = await http.post(
            f"/knowledge-bases/{KNOWLEDGE_BASE}/search",
            json={"query": "launch code of the autumn release", "k": 3},
        )
        assert search.status_code == 200, search.text
        hits = search.json()["sources"]
        assert any(hit["document_name"] == name and code in hit["text"] for hit in hits), hits

        session = await new_session(http)
        async with chatting(session) as chat:
            await chat.ask(
                "What is the launch code of the autumn release?",
                model=CHAT_MODEL, knowledge_bases=[KNOWLEDGE_BASE], options=GREEDY,
            )  # fmt: skip
            turn = await chat.turn()
        assert turn.done is not None and turn.done["status"] == "complete", turn.errors
        assert turn.sources is not None
        cited = [s for s in turn.sources["sources"] if s["document_name"] == name]
        assert cited and cited[0]["n"] >= 1 and code in cited[0]["text"]
        assert turn.text.strip()
        # The history keeps the citations with the answer.
        messages = (await http.get(f"/sessions/{session}/messages")).json()["items"]
        assert any(s["document_name"] == name for s in messages[1]["sources"])
    finally:
        await http.delete(f"/knowledge-bases/{KNOWLEDGE_BASE}/documents/{document['id']}")
