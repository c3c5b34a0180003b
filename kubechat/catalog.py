"""The models the API can route to: ChatModel resources plus what it needs to build prompts.

Prompt assembly happens here, in the gateway, because Triton's chat models (the GPU LLM API
model and the CPU ones) take raw `text_input`: the chat template comes from the ChatModel
(spec.chatTemplate) or from the tokenizer folder the model is served with, as in vLLM and TGI.

The catalog is loaded once from YAML files (files mode) or kept up to date from the
Kubernetes API by `kubechat.discovery` (cluster mode), which adds, replaces and removes
entries while requests use it.
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
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from kubechat.core.errors import ModelNotFoundError, ModelUnavailableError
from kubechat.core.resources import Capability, ChatModel, ModelPurpose, load_chat_models_from_dir
from kubechat.triton.artifacts import tokenizer_dir

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
    # The turns `text` renders (the system prompt added, the oldest dropped), for an engine that
    # applies its own chat template: a remote endpoint is sent these as messages.
    turns: tuple[ChatTurn, ...] = ()

    def messages(self) -> list[tuple[str, str]]:
        return [(t.role, t.content) for t in self.turns]


@dataclass(frozen=True)
class Readiness:
    """Whether a model can serve now, and if not, why (from its ChatModel's Ready condition)."""

    ready: bool
    reason: str = ""
    message: str = ""


def cluster_readiness(model: ChatModel) -> Readiness:
    """Readiness as the operator reports it in the ChatModel's status."""
    condition = model.status.condition("Ready")
    if condition is None:
        return Readiness(
            False, model.status.phase.value, "the operator has not reported this model ready yet"
        )
    if condition.status == "True":
        return Readiness(True)
    return Readiness(False, condition.reason or "NotReady", condition.message)


class CatalogEntry:
    def __init__(
        self,
        model: ChatModel,
        template: str,
        counter: TokenCounter,
        special: dict[str, str],
        tokenizer: Tokenizer | None = None,
        *,
        cluster: bool = False,
    ):
        self.model = model
        self.counter = counter
        self.tokenizer = tokenizer  # the model's own, for chunking text it will embed
        # A ChatModel custom resource: its status, written by the operator, says if it serves.
        self.cluster = cluster
        self.template_source = template
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template: Template = env.from_string(template)
        self._special = special

    @property
    def name(self) -> str:
        return self.model.name

    def with_model(self, model: ChatModel) -> CatalogEntry:
        """The same prompt machinery for a newer version of the resource whose spec is unchanged
        (a status update): the tokenizer is not read again."""
        return CatalogEntry(
            model, self.template_source, self.counter, self._special, self.tokenizer, cluster=self.cluster
        )

    def readiness(self) -> Readiness | None:
        """The ChatModel's readiness in cluster mode; None for a model from a file, whose
        readiness is Triton's (asked when needed)."""
        return cluster_readiness(self.model) if self.cluster else None

    def check_ready(self) -> None:
        """Refuse, with a stable code, to chat with a cluster model the operator says is not Ready."""
        readiness = self.readiness()
        if readiness is not None and not readiness.ready:
            detail = f": {readiness.message}" if readiness.message else ""
            raise ModelUnavailableError(f"model {self.name} is not ready ({readiness.reason}){detail}")

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
                return Prompt(text=text, tokens=tokens, turns_dropped=dropped, turns=(*system, *dialogue))
            # Drop a whole exchange so the dialogue still starts with a user turn.
            cut = 2 if len(dialogue) > 2 and dialogue[1].role == "assistant" else 1
            dialogue = dialogue[cut:]
            dropped += cut


class ModelCatalog:
    """The models by name. Mutable at run time (cluster discovery); readers get snapshots, so a
    change while a request iterates is never seen half-way."""

    def __init__(self, entries: Sequence[CatalogEntry], default_model: str = "") -> None:
        self._entries = {e.name: e for e in entries}
        self._configured_default = default_model

    @property
    def default_model(self) -> str:
        """KUBECHAT_DEFAULT_MODEL if set, else the first chat model (in file or listing order) whose
        purpose is general, else the first chat model of any purpose."""
        if self._configured_default:
            return self._configured_default
        chat = [e.model for e in self._entries.values() if e.model.has(Capability.CHAT)]
        for_people = [m for m in chat if m.spec.purpose is ModelPurpose.GENERAL]
        return (for_people or chat)[0].name if chat else ""

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(list(self._entries.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def chat_models(self) -> list[CatalogEntry]:
        return [e for e in self._entries.values() if e.model.has(Capability.CHAT)]

    def find(self, name: str) -> CatalogEntry | None:
        return self._entries.get(name)

    def put(self, entry: CatalogEntry) -> CatalogEntry | None:
        """Add the entry, or replace the one of the same name (keeping its place); returns the
        replaced one."""
        previous = self._entries.get(entry.name)
        self._entries[entry.name] = entry
        return previous

    def remove(self, name: str) -> CatalogEntry | None:
        return self._entries.pop(name, None)

    def get(self, name: str | None, capability: Capability = Capability.CHAT) -> CatalogEntry:
        name = name or self.default_model
        entry = self._entries.get(name)
        if entry is None or not entry.model.has(capability):
            known = ", ".join(e.name for e in self._entries.values() if e.model.has(capability))
            raise ModelNotFoundError(
                f"unknown {capability} model {name!r} (known: {known or 'none'})", param="model"
            )
        return entry


def load_catalog(models_dir: Path, state_dir: Path, default_model: str = "") -> ModelCatalog:
    """Build the catalog from ChatModel YAML files and the tokenizers the launcher exported."""
    entries = []
    for model in load_chat_models_from_dir(models_dir):
        folder = tokenizer_dir(model, state_dir)
        if folder is not None and not (folder / "tokenizer.json").exists():
            logger.warning("no tokenizer for %s in %s: counting words", model.name, folder)
        entries.append(_entry(model, folder))
    return ModelCatalog(entries, default_model)


def cluster_entry(model: ChatModel, tokenizers_dir: Path) -> CatalogEntry:
    """The entry of a ChatModel custom resource.

    The template is spec.chatTemplate, else the one in the tokenizer folder
    `tokenizers_dir/<model name>` (the layout of a Hugging Face checkpoint's tokenizer files),
    else ChatML; tokens are counted with that folder's tokenizer, else one per word. Blocking
    (it reads files): run it off the event loop.
    """
    folder = tokenizers_dir / model.name
    if not (folder / "tokenizer.json").exists():
        if model.spec.chat_template:
            logger.warning("no tokenizer for %s in %s: counting words", model.name, folder)
        else:
            logger.warning(
                "no chatTemplate and no tokenizer for %s in %s: using ChatML and counting words",
                model.name, folder,
            )  # fmt: skip
    return _entry(model, folder, cluster=True)


def _entry(model: ChatModel, folder: Path | None, *, cluster: bool = False) -> CatalogEntry:
    template, counter, special, tokenizer = model.spec.chat_template, None, {}, None
    if folder is not None and (folder / "tokenizer.json").exists():
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # Count and chunk whole texts: the model's own truncation applies at inference.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        counter = TokenizerCounter(tokenizer)
        template = template or _tokenizer_template(folder)
        special = _special_tokens(folder)
    elif model.spec.engine.backend.is_remote:
        # A remote endpoint's tokenizer is its own: chunk (embedders) and count words and
        # punctuation instead; the endpoint's usage gives exact counts where it reports them.
        tokenizer = word_tokenizer()
        counter = TokenizerCounter(tokenizer)
    return CatalogEntry(
        model, template or DEFAULT_CHAT_TEMPLATE, counter or WhitespaceCounter(), special, tokenizer,
        cluster=cluster,
    )  # fmt: skip


def word_tokenizer() -> Tokenizer:
    """A tokenizer whose tokens are words and punctuation marks (with character offsets, as the
    chunker needs), for models kubechat has no tokenizer of."""
    tokenizer = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    return tokenizer


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
