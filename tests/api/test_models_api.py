"""/models and /v1/models say what each model is for and which one is the default."""

from __future__ import annotations

from tests.api.conftest import InProcessApi


def test_models_say_their_purpose_and_the_default(api: InProcessApi) -> None:
    models = {m["name"]: m for m in api.client.get("/models").json()["items"]}

    assert models["smollm2"]["purpose"] == "general"
    assert models["synthetic"]["purpose"] == models["tool-caller"]["purpose"] == "development"
    # The in-process API configures KUBECHAT_DEFAULT_MODEL=synthetic, and that is what it says.
    assert [name for name, m in models.items() if m["default"]] == ["synthetic"]


def test_openai_models_list_the_default_first_with_the_purpose(api: InProcessApi) -> None:
    response = api.client.get("/v1/models")
    assert response.status_code == 200, response.text
    cards = response.json()["data"]

    assert cards[0]["id"] == "synthetic" and cards[0]["default"] is True
    assert [c["id"] for c in cards if c["default"]] == ["synthetic"]
    purposes = {c["id"]: c["purpose"] for c in cards}
    # The embedders too, for /v1/embeddings (issue 22).
    assert purposes == {
        "smollm2": "general", "synthetic": "development", "tool-caller": "development", "minilm": "general",
    }  # fmt: skip
    assert all(c["object"] == "model" and c["owned_by"] == "kubechat" for c in cards)
