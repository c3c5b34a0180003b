"""The one upload guard (kubechat.api.uploads) as both routes that take files apply it: images
(one part named `file`) and knowledge-base documents (parts named `files`). In-process, on the
app of tests/api/test_knowledge_api.py; the real-process tests of the same refusals are in
tests/integration/test_images_api.py and test_knowledge_bases.py."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.api.test_knowledge_api import MAX_FILES, MAX_IMAGE_BYTES, KnowledgeApi, Mode, knowledge_api
from tests.conftest import auth

HANDBOOK_MAX_BYTES = 2 * 1024 * 1024  # spec.maxDocumentBytes of tests/data's handbook


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KnowledgeApi]:
    yield from knowledge_api(tmp_path, Mode())


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


# Each route: its path, its part name, a file it accepts, its 413 code, its largest file.
ROUTES = {
    "images": ("/images", "file", ("a.png", png()), "image_too_large", MAX_IMAGE_BYTES),
    "documents": (
        "/knowledge-bases/handbook/documents", "files", ("a.txt", b"plain words"), "document_too_large",
        HANDBOOK_MAX_BYTES,
    ),
}  # fmt: skip
routes = pytest.mark.parametrize("route", list(ROUTES))


def error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


@routes
def test_a_good_upload_passes(api: KnowledgeApi, route: str) -> None:
    path, field, file, _, _ = ROUTES[route]
    response = api.client.post(path, files=[(field, file)], headers=auth())
    assert response.status_code in (201, 202), response.text


@routes
def test_a_body_without_a_length_is_refused(api: KnowledgeApi, route: str) -> None:
    path, field, _, _, _ = ROUTES[route]

    part = f"--b\r\nContent-Disposition: form-data; name={field}; filename=a.txt\r\n\r\nhi\r\n--b--\r\n"
    chunked = iter([part.encode()])  # a stream of unknown length: sent chunked
    response = api.client.post(
        path, content=chunked, headers={**auth(), "content-type": "multipart/form-data; boundary=b"}
    )
    assert error(response) == (411, "length_required")


@routes
def test_a_declared_length_past_the_limit_is_refused_unread(api: KnowledgeApi, route: str) -> None:
    path, _, _, too_large, max_bytes = ROUTES[route]
    headers = {**auth(), "content-type": "multipart/form-data; boundary=b", "content-length": "1000000000"}
    response = api.client.post(path, content=b"--b--\r\n", headers=headers)
    assert error(response) == (413, too_large)
    assert "1000000000" in response.json()["error"]["message"]
    assert str(max_bytes) in response.json()["error"]["message"]


@routes
def test_a_file_past_its_limit_is_refused(api: KnowledgeApi, route: str) -> None:
    path, field, _, too_large, max_bytes = ROUTES[route]
    response = api.client.post(path, files=[(field, ("big.txt", b"a" * (max_bytes + 1)))], headers=auth())
    assert error(response) == (413, too_large)


@routes
def test_only_multipart_is_taken(api: KnowledgeApi, route: str) -> None:
    path, field, _, _, _ = ROUTES[route]
    response = api.client.post(path, json={field: ["x"]}, headers=auth())
    assert error(response) == (400, "invalid_request")
    assert f"`{field}`" in response.json()["error"]["message"]


@routes
def test_malformed_multipart_is_refused(api: KnowledgeApi, route: str) -> None:
    path, _, _, _, _ = ROUTES[route]
    headers = {**auth(), "content-type": "multipart/form-data"}  # no boundary
    response = api.client.post(path, content=b"--b\r\nnot a part", headers=headers)
    assert error(response) == (400, "invalid_request")
    assert "malformed upload" in response.json()["error"]["message"]


@routes
@pytest.mark.parametrize("case", ["none", "one-too-many", "far-too-many", "not-a-file", "other-name"])
def test_the_parts_are_counted_and_named(api: KnowledgeApi, route: str, case: str) -> None:
    path, field, file, _, _ = ROUTES[route]
    most = 1 if route == "images" else MAX_FILES
    files: list[tuple[str, tuple[str, bytes]]] = {
        "none": [],
        "one-too-many": [(field, file)] * (most + 1),
        "far-too-many": [(field, file)] * (most + 5),  # past Starlette's own limit
        "not-a-file": [],
        "other-name": [("attachment", file)],
    }[case]
    data = {field: "not a file"} if case == "not-a-file" else {"unrelated": "field"}
    response = api.client.post(path, files=files or [("unused", ("u.txt", b"u"))], data=data, headers=auth())
    assert error(response) == (400, "invalid_request"), response.text


def test_the_openapi_schema_describes_both_upload_bodies(api: KnowledgeApi) -> None:
    schema = api.client.get("/openapi.json").json()["paths"]
    image = schema["/images"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert image["properties"]["file"] == {"type": "string", "format": "binary"}
    documents = schema["/knowledge-bases/{name}/documents"]["post"]["requestBody"]
    listed = documents["content"]["multipart/form-data"]["schema"]["properties"]["files"]
    assert listed == {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1}


@routes
def test_a_part_named_with_filename_star_is_told_why_it_is_no_file(api: KnowledgeApi, route: str) -> None:
    """RFC 7578 forbids `filename*=` in forms; a client that sends it learns to use filename=."""
    path, field, (_, data), _, _ = ROUTES[route]
    body = (
        b"--b\r\n"
        + f"Content-Disposition: form-data; name=\"{field}\"; filename*=UTF-8''caf%C3%A9.png\r\n".encode()
        + b"Content-Type: application/octet-stream\r\n\r\n"
        + data
        + b"\r\n--b--\r\n"
    )
    headers = {**auth(), "content-type": "multipart/form-data; boundary=b"}
    response = api.client.post(path, content=body, headers=headers)
    assert error(response) == (400, "invalid_request")
    message = response.json()["error"]["message"]
    assert "filename*=" in message and 'filename="..."' in message


def test_a_text_file_that_stops_being_utf8_after_its_head_is_refused_at_upload(api: KnowledgeApi) -> None:
    """Issue 21 (9): only the first 8 KiB were checked; the rest failed later, in ingestion."""
    path = ROUTES["documents"][0]
    late = b"plain words\n" * 1000 + b"\xff\xfe not UTF-8"
    assert len(late) > 8192
    response = api.client.post(path, files=[("files", ("late.txt", late))], headers=auth())
    assert error(response) == (415, "unsupported_media_type")
    assert "not UTF-8" in response.json()["error"]["message"]
    assert api.client.get(path, headers=auth()).json()["items"] == []
