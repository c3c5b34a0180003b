"""Uploads are never lost: ingestion resumes after the API is killed mid-way, and in cluster
mode the original bytes live in S3 (moto's real S3 server, spoken to by the minio client)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kubechat.embedded.launcher import start_triton
from kubechat.embedded.tritonserver import TritonServer
from tests.conftest import EXAMPLE_MODELS, ApiProcess, api_env, auth, free_ports
from tests.integration.test_knowledge_bases import indexed, settled, upload
from tests.s3_server import S3Endpoint, moto_s3_server, unique_bucket_name


def long_document(topic: str, sentences: int) -> bytes:
    """Distinct sentences, so that every chunk is different text."""
    return "\n".join(
        f"Fact {i} about {topic}: the {topic} unit {i} reports value {i * 7 % 1000} at step {i}."
        for i in range(sentences)
    ).encode()


def own_api(triton: TritonServer, state: Path, **extra: str) -> ApiProcess:
    return ApiProcess({**api_env(triton, EXAMPLE_MODELS, state), **extra}, state / "api.log")


async def wait_for(http: httpx.AsyncClient, kb: str, document_id: str, predicate: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        document: dict[str, Any] = (await http.get(f"/knowledge-bases/{kb}/documents/{document_id}")).json()
        if predicate(document):
            return document
        await asyncio.sleep(0.02)
    raise TimeoutError(f"document {document_id} never reached the expected state")


async def test_killed_api_resumes_ingestion(triton: TritonServer, tmp_path: Path) -> None:
    api = own_api(triton, tmp_path)
    api.start()
    try:
        async with httpx.AsyncClient(base_url=api.url, headers=auth(), timeout=60) as http:
            response = await upload(
                http,
                "handbook",
                ("pumps.txt", long_document("pump", 2500)),
                ("fans.txt", long_document("fan", 2500)),
            )
            assert response.status_code == 202, response.text
            ids = [d["id"] for d in response.json()["documents"]]
            caught = await wait_for(
                http, "handbook", ids[0], lambda d: d["status"] == "embedding" and d["chunks_indexed"] > 0
            )
            assert caught["chunks_indexed"] < caught["chunks"]
            assert api.process is not None
            api.process.kill()  # no shutdown handler runs: a crash
            api.process.wait(30)
    finally:
        api.stop()

    api.start()  # same state directory
    try:
        async with httpx.AsyncClient(base_url=api.url, headers=auth(), timeout=60) as http:
            documents = [await settled(http, "handbook", i) for i in ids]
            assert [d["status"] for d in documents] == ["indexed", "indexed"], documents
            assert all(d["chunks_indexed"] == d["chunks"] > 100 for d in documents)
            kb = (await http.get("/knowledge-bases/handbook")).json()
            # Every chunk exactly once: the interrupted document was not indexed twice.
            assert kb["chunks"] == sum(d["chunks"] for d in documents)
            hits = (
                await http.post("/knowledge-bases/handbook/search", json={"query": "pump unit 1234"})
            ).json()
            assert hits["sources"][0]["document_name"] == "pumps.txt"
    finally:
        api.stop()


async def test_delete_while_ingesting_leaves_nothing_behind(triton: TritonServer, tmp_path: Path) -> None:
    api = own_api(triton, tmp_path)
    api.start()
    try:
        async with httpx.AsyncClient(base_url=api.url, headers=auth(), timeout=60) as http:
            response = await upload(http, "handbook", ("valves.txt", long_document("valve", 2500)))
            (document,) = response.json()["documents"]
            await wait_for(http, "handbook", document["id"], lambda d: d["chunks_indexed"] > 0)
            assert (
                await http.delete(f"/knowledge-bases/handbook/documents/{document['id']}")
            ).status_code == 204
            await asyncio.sleep(1)  # give a stray batch the chance to land, were ingestion not stopped
            kb = (await http.get("/knowledge-bases/handbook")).json()
            assert kb["chunks"] == 0 and kb["documents"] == {}
    finally:
        api.stop()


async def test_ingestion_waits_for_the_embedder(tmp_path: Path) -> None:
    """Triton down: the document stays queued with the reason, then is indexed once it is back."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "minilm.yaml").write_text((EXAMPLE_MODELS / "minilm.yaml").read_text())
    server = start_triton(models, tmp_path / "triton", free_ports(), timeout=300)
    api = ApiProcess(
        {**api_env(server, models, tmp_path / "api"), "KUBECHAT_DEFAULT_MODEL": ""}, tmp_path / "api.log"
    )
    try:
        api.start()
        server.stop()
        async with httpx.AsyncClient(base_url=api.url, headers=auth(), timeout=60) as http:
            response = await upload(
                http, "handbook", ("wait.txt", b"The patient heron waits for the embedder.")
            )
            assert response.status_code == 202, response.text  # the bytes are safe: acknowledged
            (document,) = response.json()["documents"]
            waiting = await wait_for(
                http, "handbook", document["id"], lambda d: d["error_code"] == "retrying"
            )
            assert waiting["status"] == "queued" and "unavailable" in waiting["error_message"].lower()
            server.start()
            server.wait_ready(120)
            done = await settled(http, "handbook", document["id"])
            assert done["status"] == "indexed" and done["error_code"] == "" and done["chunks"] == 1
    finally:
        api.stop()
        server.stop()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_s3_server() as endpoint:
        yield endpoint


async def test_documents_live_in_s3(triton: TritonServer, tmp_path: Path, s3: S3Endpoint) -> None:
    bucket = unique_bucket_name()
    api = own_api(
        triton, tmp_path,
        KUBECHAT_S3_ENDPOINT=s3.endpoint, KUBECHAT_S3_BUCKET=bucket, KUBECHAT_S3_SECURE="false",
        KUBECHAT_S3_ACCESS_KEY=s3.access_key, KUBECHAT_S3_SECRET_KEY=s3.secret_key,
        KUBECHAT_S3_REGION=s3.region,
    )  # fmt: skip
    api.start()
    try:
        async with httpx.AsyncClient(base_url=api.url, headers=auth(), timeout=60) as http:
            body = b"The S3 heron nests on bucket island."
            (document,) = await indexed(http, "handbook", ("heron.txt", body))
            minio = s3.client()
            keys = [o.object_name for o in minio.list_objects(bucket_name=bucket, recursive=True)]
            assert keys == [f"knowledge-bases/default/handbook/{document['sha256']}"]
            stored = minio.get_object(bucket_name=bucket, object_name=str(keys[0]))
            assert stored.read() == body
            assert not (tmp_path / "documents").exists()  # nothing kept on local disk
            hits = (await http.post("/knowledge-bases/handbook/search", json={"query": "heron"})).json()
            assert hits["sources"][0]["document_id"] == document["id"]
            assert (
                await http.delete(f"/knowledge-bases/handbook/documents/{document['id']}")
            ).status_code == 204
            assert list(minio.list_objects(bucket_name=bucket, recursive=True)) == []
    finally:
        api.stop()


async def test_unreachable_s3_stops_the_api_without_leaking_its_secret(
    triton: TritonServer, tmp_path: Path
) -> None:
    """An API that cannot store uploads does not start (and become ready) at all."""
    s3_down = "127.0.0.1:9"  # discard port: nothing listens
    secret = "s3-secret-that-must-not-leak"
    api = own_api(
        triton, tmp_path, KUBECHAT_S3_ENDPOINT=s3_down, KUBECHAT_S3_SECURE="false",
        KUBECHAT_S3_ACCESS_KEY="k", KUBECHAT_S3_SECRET_KEY=secret,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="exited"):
        api.start()  # the bucket cannot be ensured: the API refuses to start
    log = (tmp_path / "api.log").read_text()
    assert secret not in log
    assert "StoreUnavailableError" in log or "unavailable" in log.lower()
