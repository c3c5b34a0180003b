"""Knowledge bases end to end: uploads through the API, ingestion with the real parsers and the
real MiniLM embedder in Triton, the embedded stores, hybrid retrieval and cited answers."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from reportlab.pdfgen import canvas

from tests.conftest import ALICE_KEY, BOB_KEY, ApiProcess, auth
from tests.integration.conftest import chatting, new_session

HANDBOOK = "/knowledge-bases/handbook"

RUNBOOK_MD = b"""# Operations runbook

## Ports
The kubechat gateway listens on port 8000 and Triton's gRPC endpoint on port 8001.

## Backups
Chat history is backed up every night at 02:00 UTC to the object store.
"""


def pdf(*pages: str) -> bytes:
    buffer = io.BytesIO()
    document = canvas.Canvas(buffer)
    for text in pages:
        document.drawString(72, 720, text)
        document.showPage()
    document.save()
    return buffer.getvalue()


RELEASE_PDF = pdf(
    "Release notes: the scheduler now batches requests.",
    "The codename of the autumn release is Blue Heron.",
)


async def upload(http: httpx.AsyncClient, kb: str, *files: tuple[str, bytes]) -> httpx.Response:
    return await http.post(f"/knowledge-bases/{kb}/documents", files=[("files", f) for f in files])


async def settled(
    http: httpx.AsyncClient, kb: str, document_id: str, within_s: float = 180
) -> dict[str, Any]:
    """Poll a document until ingestion ends (indexed or failed), with a deadline."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        response = await http.get(f"/knowledge-bases/{kb}/documents/{document_id}")
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        if document["status"] in ("indexed", "failed"):
            return document
        await asyncio.sleep(0.2)
    raise TimeoutError(f"document {document_id} still {document['status']} after {within_s:.0f}s")


async def indexed(http: httpx.AsyncClient, kb: str, *files: tuple[str, bytes]) -> list[dict[str, Any]]:
    response = await upload(http, kb, *files)
    assert response.status_code == 202, response.text
    documents = [await settled(http, kb, d["id"]) for d in response.json()["documents"]]
    assert all(d["status"] == "indexed" for d in documents), documents
    return documents


@pytest.fixture(scope="module")
async def handbook(api: ApiProcess) -> dict[str, dict[str, Any]]:
    """The runbook and the release notes, indexed once for the module."""
    async with httpx.AsyncClient(base_url=api.url, headers=auth(), timeout=120) as http:
        runbook, notes = await indexed(
            http, "handbook", ("runbook.md", RUNBOOK_MD), ("notes.pdf", RELEASE_PDF)
        )
    return {"runbook": runbook, "notes": notes}


async def test_upload_is_ingested(http: httpx.AsyncClient, handbook: dict[str, dict[str, Any]]) -> None:
    notes = handbook["notes"]
    assert notes["format"] == "pdf" and notes["content_type"] == "application/pdf"
    assert notes["pages"] == 2
    assert notes["chunks"] == notes["chunks_indexed"] >= 2
    assert notes["uploaded_by"] == "alice" and notes["indexed_at"] >= notes["created_at"]
    listing = (await http.get(f"{HANDBOOK}/documents", params={"status": "indexed"})).json()
    assert {d["id"] for d in listing["items"]} >= {notes["id"], handbook["runbook"]["id"]}
    kb = (await http.get(HANDBOOK)).json()
    assert kb["ready"] and kb["writable"] and kb["dimensions"] == 384
    assert kb["chunks"] >= notes["chunks"] + handbook["runbook"]["chunks"]


async def test_same_bytes_are_stored_once(
    api: ApiProcess, http: httpx.AsyncClient, handbook: dict[str, dict[str, Any]]
) -> None:
    response = await upload(http, "handbook", ("copy-of-runbook.md", RUNBOOK_MD))
    assert response.status_code == 202
    (again,) = response.json()["documents"]
    assert again["duplicate"] is True
    assert again["id"] == handbook["runbook"]["id"] and again["name"] == "runbook.md"
    # One object for the bytes, whatever names they were uploaded under.
    stored = [
        p for p in (Path(api.env["KUBECHAT_STATE_DIR"]) / "documents" / "objects").rglob("*") if p.is_file()
    ]
    assert len([p for p in stored if again["sha256"] in p.name]) == 1


async def test_search_cites_page_and_section(
    http: httpx.AsyncClient, handbook: dict[str, dict[str, Any]]
) -> None:
    response = await http.post(f"{HANDBOOK}/search", json={"query": "What is the release codename?", "k": 3})
    assert response.status_code == 200, response.text
    assert response.json()["nothing_found"] is False
    top = response.json()["sources"][0]
    assert top["n"] == 1 and top["document_name"] == "notes.pdf" and top["page"] == 2
    assert "Blue Heron" in top["text"] and top["chunk_id"].startswith(handbook["notes"]["id"])
    ports = (await http.post(f"{HANDBOOK}/search", json={"query": "which port does triton grpc use"})).json()
    assert ports["sources"][0]["section"] == "Ports"
    # A question both documents have something on; the filter keeps one. (A word only the other
    # document holds would find nothing: the runbook would be below the relevance floor.)
    both = {"query": "When are chat backups taken, and what is the release codename?"}
    found = (await http.post(f"{HANDBOOK}/search", json=both)).json()["sources"]
    # (Other tests of the session may have added documents to the handbook: both must be there.)
    assert {"runbook.md", "notes.pdf"} <= {s["document_name"] for s in found}
    only_runbook = await http.post(
        f"{HANDBOOK}/search", json={**both, "document_ids": [handbook["runbook"]["id"]]}
    )
    assert {s["document_name"] for s in only_runbook.json()["sources"]} == {"runbook.md"}


async def test_a_question_the_documents_do_not_answer_finds_nothing(
    api: ApiProcess, http: httpx.AsyncClient, handbook: Any
) -> None:
    question = "How many moons does Jupiter have?"
    found = (await http.post(f"{HANDBOOK}/search", json={"query": question})).json()
    assert (found["sources"], found["nothing_found"]) == ([], True)
    session = await new_session(http)
    async with chatting(api, session) as chat:
        await chat.ask(question, knowledge_bases=["handbook"])
        turn = await chat.turn()
    assert turn.sources is not None and turn.sources["nothing_found"] is True
    assert turn.sources["sources"] == []
    assert "knowledge base handbook holds nothing on this question" in turn.text
    assert turn.done is not None and turn.done["status"] == "complete"


async def test_chat_answers_from_sources(api: ApiProcess, http: httpx.AsyncClient, handbook: Any) -> None:
    session = await new_session(http)
    async with chatting(api, session) as chat:
        await chat.ask("What is the codename of the autumn release?", knowledge_bases=["handbook"])
        turn = await chat.turn()
    assert turn.done is not None and turn.done["status"] == "complete", turn
    assert turn.sources is not None and turn.sources["message_id"] == turn.start["message_id"]
    top = turn.sources["sources"][0]
    assert (top["document_name"], top["page"]) == ("notes.pdf", 2)
    assert "heron" in turn.text.lower()
    # The stored question is the user's, not the prompt with the sources pasted in.
    messages = (await http.get(f"/sessions/{session}/messages")).json()["items"]
    assert messages[0]["content"] == "What is the codename of the autumn release?"
    assert messages[1]["content"] == turn.text
    assert messages[1]["sources"] == turn.sources["sources"]  # citations are part of the history
    # Every sentence is attributed by the real MiniLM, whether or not the model wrote [n].
    attribution = turn.done["attribution"]
    given = {s["n"] for s in turn.sources["sources"]}
    assert attribution and all(0 <= a["start"] < a["end"] <= len(turn.text) for a in attribution)
    assert all(set(a["sources"]) <= given and set(a["cited"]) <= given for a in attribution)
    heron = [a for a in attribution if "heron" in turn.text[a["start"] : a["end"]].lower()]
    notes = {s["n"] for s in turn.sources["sources"] if s["document_name"] == "notes.pdf"}
    assert heron and all(set(a["sources"][:1]) <= notes for a in heron) and heron[0]["sources"]
    assert messages[1]["attribution"] == attribution


async def test_openai_endpoint_takes_knowledge_bases(api: ApiProcess, handbook: Any) -> None:
    client = AsyncOpenAI(base_url=f"{api.url}/v1", api_key=ALICE_KEY)
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": "When are chat backups taken?"}]
    completion = await client.chat.completions.create(
        model="smollm2", messages=question, max_tokens=40, extra_body={"knowledge_bases": ["handbook"]}
    )
    sources = completion.model_extra["sources"] if completion.model_extra else []
    assert sources[0]["document_name"] == "runbook.md" and sources[0]["section"] == "Backups"
    assert completion.model_extra is not None and completion.model_extra["nothing_found"] is False
    attribution = completion.model_extra["attribution"]
    text = completion.choices[0].message.content or ""
    assert isinstance(attribution, list) and all(a["end"] <= len(text) for a in attribution)
    stream = await client.chat.completions.create(
        model="smollm2", messages=question, max_tokens=5, stream=True,
        extra_body={"knowledge_bases": ["handbook"]},
    )  # fmt: skip
    first = await anext(aiter(stream))
    assert first.model_extra and first.model_extra["sources"][0]["document_name"] == "runbook.md"
    async for _ in stream:
        pass


async def test_readers_search_but_cannot_write(api: ApiProcess, handbook: Any) -> None:
    async with httpx.AsyncClient(base_url=api.url, headers=auth(BOB_KEY), timeout=60) as bob:
        assert (await bob.post(f"{HANDBOOK}/search", json={"query": "codename"})).status_code == 200
        refused = await upload(bob, "handbook", ("x.txt", b"bob was here"))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        assert (await bob.delete(f"{HANDBOOK}/documents/{handbook['notes']['id']}")).status_code == 403
        names = {kb["name"] for kb in (await bob.get("/knowledge-bases")).json()["items"]}
        assert names == {"handbook", "private"}


async def test_other_principals_knowledge_base_is_invisible(http: httpx.AsyncClient) -> None:
    for response in (
        await http.get("/knowledge-bases/private"),
        await upload(http, "private", ("a.txt", b"alice")),
        await http.post("/knowledge-bases/private/search", json={"query": "x"}),
        await http.get("/knowledge-bases/nope/documents"),
    ):
        assert response.status_code == 404 and response.json()["error"]["code"] == "knowledge_base_not_found"
    assert "private" not in {kb["name"] for kb in (await http.get("/knowledge-bases")).json()["items"]}


@pytest.mark.parametrize(
    ("files", "status", "code"),
    [
        ([("empty.txt", b"")], 400, "empty_document"),
        ([("tool.exe", b"MZ\x90\x00")], 415, "unsupported_media_type"),
        ([("noext", b"plain words")], 415, "unsupported_media_type"),
        ([("fake.pdf", b"just text, not a PDF")], 415, "unsupported_media_type"),
        ([("fake.docx", b"not a zip archive")], 415, "unsupported_media_type"),
        ([("nul.txt", b"text\x00with a NUL")], 415, "unsupported_media_type"),
        ([("big.txt", b"a" * (2 * 1024 * 1024 + 1))], 413, "document_too_large"),
        ([("n" * 300 + ".txt", b"a name longer than a file system allows")], 400, "invalid_request"),
        # One bad file refuses the whole request: the good one is not stored either.
        ([("good.txt", b"fine words"), ("bad.exe", b"MZ")], 415, "unsupported_media_type"),
        ([(f"f{i}.txt", f"file {i}".encode()) for i in range(21)], 400, "invalid_request"),
        (
            [(f"f{i}.txt", f"file {i}".encode()) for i in range(30)],
            400,
            "invalid_request",
        ),  # multipart's own limit
        ([("dir/inner.txt", b"path in the name")], 400, "invalid_request"),
    ],
)
async def test_bad_uploads_are_refused_and_store_nothing(
    http: httpx.AsyncClient, files: list[tuple[str, bytes]], status: int, code: str
) -> None:
    before = (await http.get(HANDBOOK)).json()["documents"]
    response = await upload(http, "handbook", *files)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert (await http.get(HANDBOOK)).json()["documents"] == before


async def test_upload_must_be_multipart(http: httpx.AsyncClient) -> None:
    response = await http.post(f"{HANDBOOK}/documents", json={"files": ["x"]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"


async def test_upload_without_a_length_is_refused(http: httpx.AsyncClient) -> None:
    """A chunked body could only be bounded after spooling it: it needs a Content-Length."""

    async def body() -> AsyncIterator[bytes]:
        yield b"--b\r\nContent-Disposition: form-data; name=files; filename=a.txt\r\n\r\nhi\r\n--b--\r\n"

    response = await http.post(
        f"{HANDBOOK}/documents", content=body(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 411 and response.json()["error"]["code"] == "length_required"


async def test_corrupt_pdf_fails_with_a_reason(http: httpx.AsyncClient) -> None:
    response = await upload(http, "handbook", ("broken.pdf", RELEASE_PDF[: len(RELEASE_PDF) // 3]))
    assert response.status_code == 202, response.text
    document = await settled(http, "handbook", response.json()["documents"][0]["id"])
    assert document["status"] == "failed" and document["error_code"] == "corrupt_document"
    assert document["error_message"]


async def test_dimension_mismatch_fails_with_a_reason(http: httpx.AsyncClient) -> None:
    response = await upload(http, "misdeclared", ("a.txt", b"The embedder makes 384 numbers."))
    assert response.status_code == 202, response.text
    document = await settled(http, "misdeclared", response.json()["documents"][0]["id"])
    assert document["status"] == "failed" and document["error_code"] == "embedding_mismatch"
    assert "384" in document["error_message"] and "512" in document["error_message"]


async def test_delete_removes_chunks_and_bytes(http: httpx.AsyncClient, api: ApiProcess) -> None:
    (document,) = await indexed(http, "handbook", ("ephemeral.txt", b"The ephemeral marmot guide."))
    hits = (await http.post(f"{HANDBOOK}/search", json={"query": "marmot"})).json()["sources"]
    assert hits and hits[0]["document_id"] == document["id"]
    assert (await http.delete(f"{HANDBOOK}/documents/{document['id']}")).status_code == 204
    assert (await http.get(f"{HANDBOOK}/documents/{document['id']}")).status_code == 404
    hits = (await http.post(f"{HANDBOOK}/search", json={"query": "marmot"})).json()["sources"]
    assert document["id"] not in {h["document_id"] for h in hits}
    objects = Path(api.env["KUBECHAT_STATE_DIR"]) / "documents"
    assert not [p for p in objects.rglob("*") if document["sha256"] in str(p)]
    # Deleted bytes can be uploaded again as a new document.
    (again,) = await indexed(http, "handbook", ("ephemeral.txt", b"The ephemeral marmot guide."))
    assert again["id"] != document["id"]


async def test_reindex_document_and_knowledge_base(
    http: httpx.AsyncClient, handbook: dict[str, dict[str, Any]]
) -> None:
    notes = handbook["notes"]
    response = await http.post(f"{HANDBOOK}/documents/{notes['id']}/reindex")
    assert response.status_code == 202, response.text
    assert (await settled(http, "handbook", notes["id"]))["chunks"] == notes["chunks"]
    response = await http.post(f"{HANDBOOK}/reindex")
    assert response.status_code == 202 and response.json()["documents_queued"] >= 2
    for document in (await http.get(f"{HANDBOOK}/documents", params={"limit": 200})).json()["items"]:
        await settled(http, "handbook", document["id"])
    kb = (await http.get(HANDBOOK)).json()
    assert kb["ready"] and kb["documents"].get("queued", 0) == 0
    top = (await http.post(f"{HANDBOOK}/search", json={"query": "release codename"})).json()["sources"][0]
    assert top["document_id"] == notes["id"]
    # Nothing indexed twice across generations.
    indexed_docs = (await http.get(f"{HANDBOOK}/documents", params={"status": "indexed"})).json()["items"]
    assert kb["chunks"] == sum(d["chunks"] for d in indexed_docs)


@pytest.mark.parametrize(
    "body",
    [{"query": ""}, {"query": "x", "k": 0}, {"query": "x", "document_ids": [str(i) for i in range(101)]}, {}],
)
async def test_bad_searches_are_refused(http: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await http.post(f"{HANDBOOK}/search", json=body)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


async def test_docx_decompression_bomb_is_refused_before_storing(http: httpx.AsyncClient) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", b"<Types/>")
        archive.writestr("word/document.xml", b"\x00" * (64 * 1024 * 1024))  # ~64 KB deflated
    before = (await http.get(HANDBOOK)).json()["documents"]
    response = await upload(http, "handbook", ("bomb.docx", buffer.getvalue()))
    assert response.status_code == 413 and response.json()["error"]["code"] == "decompression_bomb"
    assert (await http.get(HANDBOOK)).json()["documents"] == before
