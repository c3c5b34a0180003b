"""A chat request on its way to the model: checked (`Plan`), then grounded (`Grounding`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from kubechat.catalog import CatalogEntry, ChatTurn, Prompt
from kubechat.core.errors import KubechatError
from kubechat.images.vision import Attachment, ImageDescription
from kubechat.knowledge.retrieval import Citation
from kubechat.tools.types import Toolbox, ToolSpec
from kubechat.triton.client import SamplingParams


@dataclass(frozen=True)
class Plan:
    """A request that passed every check and has nothing slow left to resolve but its grounding.

    Nothing is stored yet: a request refused while planning leaves no trace.
    """

    principal: str
    entry: CatalogEntry
    params: SamplingParams
    tools: list[ToolSpec]  # offered to the model; none means its output is not parsed for calls
    runs_tools: bool  # the tools are MCP tools run here; else the client's, whose calls are handed back
    turns: list[ChatTurn]  # the conversation, its last turn the question, before grounding
    attachments: dict[int, list[Attachment]]  # the images of turns, by index in `turns`
    describer: CatalogEntry | None  # the vision model that describes the images for a text-only one
    knowledge_bases: list[str]
    question: str  # the question as the user wrote it (what is stored and searched for)
    received: float  # time.perf_counter() when the request came in
    # Runs the offered tools: the MCP toolbox, plus the answer's specialists and native tools.
    toolbox: Toolbox | None = None

    @cached_property
    def prompt(self) -> Prompt:
        """The prompt without grounding: what a stored question is counted with before it."""
        return self.entry.build_prompt(self.turns)

    @property
    def question_attachments(self) -> list[Attachment]:
        return self.attachments.get(len(self.turns) - 1, [])

    @property
    def image(self) -> bytes | None:
        """The image a vision model sees itself (it takes one; describer_for made sure)."""
        if self.describer is not None:
            return None
        return next((a[0].png for a in self.attachments.values() if a), None)


@dataclass(frozen=True)
class Grounding:
    """A plan with what the model is told besides the conversation: image descriptions and sources.

    A failure to describe or retrieve is kept, not raised: a stored turn has already stored its
    question and ends its answer with the failure; a stateless completion refuses the request.
    """

    plan: Plan
    turns: list[ChatTurn]  # as the model sees them, descriptions and sources in
    prompt: Prompt
    images: list[ImageDescription]  # the question's images as the model knows them
    described: bool  # `images` carry a vision model's descriptions
    sources: list[Citation] | None  # None when no knowledge base was named
    failure: KubechatError | None
    nothing_found: bool = False  # knowledge bases were searched and none held anything on the question
