"""Structured outputs enforced by constrained decoding on the real SmolLM2 (xgrammar in its
decoding loop), asked for through the official `openai` client, streamed and not."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.conftest import ALICE_KEY, ApiProcess

pytestmark = pytest.mark.triton

THINGS = [
    "an apple", "a banana", "a cat", "a dog", "the sea", "a lemon", "a fire truck", "grass",
    "the sky at noon", "snow", "a carrot", "a crow", "a flamingo", "a frog", "coal", "a tomato",
    "a pumpkin", "a polar bear", "a plum", "an orange",
]  # fmt: skip
assert len(THINGS) == 20

# Bounded, so that no sampled answer can run past max_tokens: a name of at most 20 characters
# (4 tokens each at worst), a colour from a list, legs 0 to 8.
THING = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "colour": {
            "type": "string",
            "enum": ["red", "yellow", "green", "blue", "white", "black", "orange", "pink"],
        },
        "legs": {"type": "integer", "minimum": 0, "maximum": 8},
    },
    "required": ["name", "colour", "legs"],
    "additionalProperties": False,
}


@pytest.fixture
def client(api: ApiProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=ALICE_KEY, max_retries=0, timeout=600)


def answer(client: openai.OpenAI, stream: bool, **request: Any) -> tuple[str, str | None]:
    """The text and finish reason of one completion, streamed or not."""
    if not stream:
        reply = client.chat.completions.create(model="smollm2", **request)
        return reply.choices[0].message.content or "", reply.choices[0].finish_reason
    pieces, finish = [], None
    for chunk in client.chat.completions.create(model="smollm2", stream=True, **request):
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return "".join(pieces), finish


def test_json_mode_answers_a_json_object_20_of_20(client: openai.OpenAI) -> None:
    for index, thing in enumerate(THINGS):
        question = f"Describe {thing} as a JSON object with the keys name and colour."
        text, finish = answer(
            client, stream=index % 2 == 1, max_tokens=100, temperature=0,
            messages=[{"role": "user", "content": question}], response_format={"type": "json_object"},
        )  # fmt: skip
        assert finish == "stop", (thing, text)
        assert isinstance(json.loads(text), dict), (thing, text)


def test_a_strict_json_schema_is_followed_20_of_20(client: openai.OpenAI) -> None:
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": THING, "strict": True},
    }
    for index, thing in enumerate(THINGS):
        # Sampled with a different seed each time: every path the model may take is constrained.
        text, finish = answer(
            client, stream=index % 2 == 0, max_tokens=120, temperature=0.8, seed=index,
            messages=[{"role": "user", "content": f"Describe {thing}."}], response_format=response_format,
        )  # fmt: skip
        assert finish == "stop", (thing, text)
        jsonschema.validate(json.loads(text), THING)


def test_without_a_response_format_the_same_model_answers_in_prose(client: openai.OpenAI) -> None:
    """The control: the constraint, not the prompt, makes the answers JSON."""
    text, _ = answer(
        client, stream=False, max_tokens=40, temperature=0,
        messages=[{"role": "user", "content": f"Describe {THINGS[2]}."}],
    )  # fmt: skip
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
