"""The models the API can route to: ChatModel resources plus what it needs to build prompts.

Prompt assembly happens here, in the gateway, because the TensorRT-LLM ensemble takes raw
`text_input`: the chat template comes from the ChatModel (spec.chatTemplate) or from the
tokenizer folder the model is served with, as in vLLM and TGI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from jinja2 import Template
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from kubechat.api.errors import ModelNotFoundError
from kubechat.embedded.artifacts import tokenizer_dir
from kubechat.resources import Capability, ChatModel, load_chat_models_from_dir

logger = logging.getLogger(__name__)

# ChatML, for models whose tokenizer carries no template (the synthetic benchmark model).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class ChatTurn:
    role: str
    content: str


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...


class TokenizerCounter:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


class WhitespaceCounter:
    """For models without a tokenizer (synthetic): one token per word, as they emit."""

    def count(self, text: str) -> int:
        return len(text.split())


@dataclass(frozen=True)
class Prompt:
    text: str
    tokens: int
    turns_dropped: int


class CatalogEntry:
    def __init__(
        self,
        model: ChatModel,
        template: str,
        counter: TokenCounter,
        special: dict[str, str],
        tokenizer: Tokenizer | None = None,
    ):
        self.model = model
        self.counter = counter
        self.tokenizer = tokenizer  # the model's own, for chunking text it will embed
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template: Template = env.from_string(template)
        self._special = special

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def batch_size(self) -> int:
        return self.model.spec.engine.max_batch_size

    def render(self, turns: Sequence[ChatTurn]) -> str:
        messages = [{"role": t.role, "content": t.content} for t in turns]
        return self._template.render(messages=messages, add_generation_prompt=True, **self._special)

    def build_prompt(self, turns: Sequence[ChatTurn]) -> Prompt:
        """Render the conversation, dropping the oldest turns until it fits the context window.

        The budget is engine.maxInputTokens (TensorRT-LLM's max_input_len; the answer has its own,
        maxOutputTokens). System turns and the newest turn are always kept; if the newest alone
        is too long the CPU model truncates from the left (TensorRT-LLM would reject it).
        """
        engine = self.model.spec.engine
        budget = engine.max_input_tokens
        system = [t for t in turns if t.role == "system"]
        if self.model.spec.system_prompt and not system:
            system = [ChatTurn("system", self.model.spec.system_prompt)]
        dialogue = [t for t in turns if t.role != "system"]
        dropped = 0
        while True:
            text = self.render([*system, *dialogue])
            tokens = self.counter.count(text)
            if tokens <= budget or len(dialogue) <= 1:
                return Prompt(text=text, tokens=tokens, turns_dropped=dropped)
            # Drop a whole exchange so the dialogue still starts with a user turn.
            cut = 2 if len(dialogue) > 2 and dialogue[1].role == "assistant" else 1
            dialogue = dialogue[cut:]
            dropped += cut


class ModelCatalog:
    def __init__(self, entries: Sequence[CatalogEntry], default_model: str = "") -> None:
        self._entries = {e.name: e for e in entries}
        chat = [e.name for e in entries if e.model.has(Capability.CHAT)]
        self.default_model = default_model or (chat[0] if chat else "")

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        return list(self._entries)

    def chat_models(self) -> list[CatalogEntry]:
        return [e for e in self._entries.values() if e.model.has(Capability.CHAT)]

    def get(self, name: str | None, capability: Capability = Capability.CHAT) -> CatalogEntry:
        name = name or self.default_model
        entry = self._entries.get(name)
        if entry is None or not entry.model.has(capability):
            known = ", ".join(e.name for e in self._entries.values() if e.model.has(capability))
            raise ModelNotFoundError(f"unknown {capability} model {name!r} (known: {known or 'none'})")
        return entry


def load_catalog(models_dir: Path, state_dir: Path, default_model: str = "") -> ModelCatalog:
    """Build the catalog from ChatModel YAML files and the tokenizers the launcher exported."""
    entries = []
    for model in load_chat_models_from_dir(models_dir):
        template, counter, special, tokenizer = model.spec.chat_template, None, {}, None
        folder = tokenizer_dir(model, state_dir)
        if folder is not None and (folder / "tokenizer.json").exists():
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            # Count and chunk whole texts: the model's own truncation applies at inference.
            tokenizer.no_truncation()
            tokenizer.no_padding()
            counter = TokenizerCounter(tokenizer)
            template = template or _tokenizer_template(folder)
            special = _special_tokens(folder)
        elif folder is not None:
            logger.warning("no tokenizer for %s in %s: counting words", model.name, folder)
        entries.append(
            CatalogEntry(
                model, template or DEFAULT_CHAT_TEMPLATE, counter or WhitespaceCounter(), special, tokenizer
            )
        )
    return ModelCatalog(entries, default_model)


def _tokenizer_template(folder: Path) -> str:
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text()
    config = folder / "tokenizer_config.json"
    if config.exists():
        value = json.loads(config.read_text()).get("chat_template", "")
        return value if isinstance(value, str) else ""
    return ""


def _special_tokens(folder: Path) -> dict[str, str]:
    config = folder / "tokenizer_config.json"
    if not config.exists():
        return {}
    data = json.loads(config.read_text())
    tokens = {}
    for key in ("bos_token", "eos_token"):
        value = data.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            tokens[key] = value
    return tokens
