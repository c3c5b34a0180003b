"""Images in chat, end to end: uploaded to /images, described by the real Tesseract model in
the session's tritonserver for the text-only SmolLM2, or seen directly by a vision model."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from kubechat.embedded.tritonserver import TritonServer
from tests.conftest import BOB_KEY, EXAMPLE_MODELS, ApiProcess, api_env, auth
from tests.images import text_image
from tests.integration.conftest import ChatSocket, chatting, new_session, open_socket
from tests.integration.test_knowledge_bases import indexed

pytestmark = pytest.mark.triton

SECRET = "PELICAN"
SIGN = text_image(["The secret word is", SECRET])
GREEDY = {"temperature": 0, "max_tokens": 30, "repetition_penalty": 1.0}


async def upload_image(http: httpx.AsyncClient, data: bytes, name: str = "sign.png") -> dict[str, Any]:
    response = await http.post("/images", files={"file": (name, data, "image/png")})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_a_text_only_model_answers_with_the_text_in_the_image(
    api: ApiProcess, http: httpx.AsyncClient
) -> None:
    image = await upload_image(http, SIGN)
    session = await new_session(http)
    async with chatting(api, session) as chat:
        await chat.ask(
            "What is the secret word written in the image? Answer with the word only.",
            image_ids=[image["id"]], options=GREEDY,
        )  # fmt: skip
        turn = await chat.turn()

    assert turn.done is not None and turn.done["status"] == "complete", turn.errors
    (described,) = turn.images["images"] if turn.images else []
    assert described["id"] == image["id"] and described["name"] == "sign.png"
    assert SECRET in described["description"]
    assert SECRET.lower() in turn.text.lower()
    # What the model was told is kept with the question, for later turns and for the user.
    user, _ = (await http.get(f"/sessions/{session}/messages")).json()["items"]
    assert user["images"] == [described]
    assert turn.done["usage"]["prompt_tokens"] > 20


async def test_later_turns_keep_the_description(api: ApiProcess, http: httpx.AsyncClient) -> None:
    image = await upload_image(http, SIGN)
    session = await new_session(http)
    async with chatting(api, session) as chat:
        await chat.ask("Read the image.", image_ids=[image["id"]], options=GREEDY)
        first = await chat.turn()
        await chat.ask("And the word again?", options=GREEDY)
        second = await chat.turn()
    assert first.done is not None and second.done is not None
    assert second.images is None  # nothing described again
    # The second prompt holds the whole first one (description included), its answer and more.
    before = first.done["usage"]
    assert second.done["usage"]["prompt_tokens"] > before["prompt_tokens"] + before["completion_tokens"]


async def test_someone_elses_image_is_not_found_and_nothing_is_stored(
    api: ApiProcess, http: httpx.AsyncClient
) -> None:
    image = await upload_image(http, SIGN)
    async with httpx.AsyncClient(base_url=api.url, headers=auth(BOB_KEY), timeout=60) as bob:
        session = await new_session(bob)
        async with open_socket(api, session, key=BOB_KEY) as connection:
            chat = ChatSocket(connection)
            assert (await chat.event())["type"] == "history"
            await chat.ask("What does it say?", image_ids=[image["id"]])
            error = await chat.event()
        assert error["type"] == "error" and error["error"]["code"] == "image_not_found"
        assert (await bob.get(f"/sessions/{session}/messages")).json()["items"] == []


async def test_openai_clients_send_images_by_reference_or_inline(http: httpx.AsyncClient) -> None:
    image = await upload_image(http, SIGN)
    question = {"type": "text", "text": "What is the secret word in the image? Answer with the word only."}
    for url in (
        f"kubechat://images/{image['id']}",
        "data:image/png;base64," + base64.b64encode(SIGN).decode(),
    ):
        content = [question, {"type": "image_url", "image_url": {"url": url}}]
        body = {
            "model": "smollm2", "temperature": 0, "max_tokens": 30,
            "messages": [{"role": "user", "content": content}],
        }  # fmt: skip
        response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert SECRET.lower() in response.json()["choices"][0]["message"]["content"].lower()

    remote = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    body = {"model": "smollm2", "messages": [{"role": "user", "content": [question, remote]}]}
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert "does not fetch remote URLs" in response.json()["error"]["message"]


async def test_an_image_in_a_knowledge_base_is_searchable_by_its_text(http: httpx.AsyncClient) -> None:
    (document,) = await indexed(
        http, "handbook", ("whiteboard.png", text_image(["Deploy freeze", "starts FRIDAY"]))
    )
    assert document["format"] == "image" and document["content_type"] == "image/png"
    response = await http.post(
        "/knowledge-bases/handbook/search", json={"query": "when does the deploy freeze start"}
    )
    sources = response.json()["sources"]
    assert sources[0]["document_name"] == "whiteboard.png"
    assert "FRIDAY" in sources[0]["text"]


@pytest.fixture(scope="module")
def seeing_api(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """An API whose catalog declares the Tesseract model a chat model with vision, so the image
    goes to it directly (the vision contract) on the same tritonserver."""
    models = tmp_path_factory.mktemp("seeing-models")
    for path in EXAMPLE_MODELS.glob("*.yaml"):
        shutil.copy(path, models / path.name)
    declared = yaml.safe_load((models / "ocr.yaml").read_text())
    declared["spec"]["capabilities"] = ["chat", "vision"]
    (models / "ocr.yaml").write_text(yaml.safe_dump(declared))
    state = tmp_path_factory.mktemp("seeing-state")
    process = ApiProcess(api_env(triton, models, state), state / "api.log")
    process.start()
    yield process
    process.stop()


async def test_a_vision_model_sees_the_image_itself(seeing_api: ApiProcess) -> None:
    async with httpx.AsyncClient(base_url=seeing_api.url, headers=auth(), timeout=120) as http:
        image = await upload_image(http, SIGN)
        session = await new_session(http)
        async with chatting(seeing_api, session) as chat:
            await chat.ask("What does the sign say?", model="ocr", image_ids=[image["id"]])
            turn = await chat.turn()
            await chat.ask(
                "Two images?",
                model="ocr",
                image_ids=[image["id"], (await upload_image(http, _blank()))["id"]],
            )
            refused = await chat.event()
    assert turn.done is not None and turn.done["status"] == "complete", turn.errors
    assert turn.images is not None and turn.images["images"][0]["description"] == ""
    assert SECRET in turn.text
    assert refused["type"] == "error" and "one image per message" in refused["error"]["message"]


def _blank() -> bytes:
    return text_image([])


def _bomb() -> bytes:
    """A real one-colour 20000 x 20000 PNG: some 400 KB that decode to 1.2 GB of pixels."""
    buffer = io.BytesIO()
    Image.new("L", (20_000, 20_000), 255).save(buffer, "PNG")
    return buffer.getvalue()


async def test_knowledge_base_images_are_checked_and_stored_without_metadata(
    http: httpx.AsyncClient, state_dir: Path
) -> None:
    before = (await http.get("/knowledge-bases/handbook/documents")).json()["items"]
    response = await http.post("/knowledge-bases/handbook/documents", files=[("files", ("big.png", _bomb()))])
    assert response.status_code == 413 and response.json()["error"]["code"] == "decompression_bomb"
    cut = text_image(["truncated"])[:2000]
    response = await http.post("/knowledge-bases/handbook/documents", files=[("files", ("cut.png", cut))])
    assert response.status_code == 400 and response.json()["error"]["code"] == "corrupt_image"
    assert (await http.get("/knowledge-bases/handbook/documents")).json()["items"] == before

    exif = Image.Exif()
    exif[0x010E] = "GPS 48.8584 N 2.2945 E secret-marker"  # ImageDescription
    photo = io.BytesIO()
    Image.open(io.BytesIO(text_image(["Quarterly review"]))).save(photo, "JPEG", exif=exif)
    assert b"secret-marker" in photo.getvalue()
    (document,) = await indexed(http, "handbook", ("review.jpg", photo.getvalue()))
    (stored,) = [p for p in (state_dir / "documents").rglob(document["sha256"]) if p.is_file()]
    data = stored.read_bytes()
    assert data.startswith(b"\x89PNG") and b"secret-marker" not in data
    assert not Image.open(io.BytesIO(data)).getexif()
