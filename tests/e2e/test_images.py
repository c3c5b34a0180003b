"""An image uploaded through the ingress is described by the OCR model's Triton pod, and the
text-only chat model answers from that description."""

from __future__ import annotations

import httpx

from tests.e2e.cluster import CHAT_MODEL, GREEDY, chatting, new_session, requires_cluster
from tests.images import text_image

pytestmark = requires_cluster

SECRET = "PELICAN"


async def test_an_uploaded_image_is_read_and_answered(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/images", files={"file": ("sign.png", text_image(["The secret word is", SECRET]), "image/png")}
    )
    assert response.status_code == 201, response.text
    image = response.json()
    try:
        session = await new_session(http)
        async with chatting(session) as chat:
            await chat.ask(
                "What is the secret word written in the image? Answer with the word only.",
                model=CHAT_MODEL, image_ids=[image["id"]], options=GREEDY,
            )  # fmt: skip
            turn = await chat.turn()
        assert turn.done is not None and turn.done["status"] == "complete", turn.errors
        assert turn.images is not None
        (described,) = turn.images["images"]
        assert described["id"] == image["id"] and SECRET in described["description"]
        assert SECRET.lower() in turn.text.lower()
    finally:
        await http.delete(f"/images/{image['id']}")
