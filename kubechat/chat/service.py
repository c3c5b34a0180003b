"""The chat service: prepare, ground and generate an answer, for a stored turn or a completion.

The stored turn (the WebSocket) keeps the rules of DESIGN.md: the question is stored before
generation starts; the answer is checkpointed while it streams and always finalized, whether
it completes, is stopped, loses its client or its model, so nothing is lost. The stateless
completion (/v1) stores nothing and refuses, before its answer starts, everything it can.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, Protocol

from opentelemetry import trace

from kubechat.catalog import CatalogEntry, ChatTurn, ModelCatalog
from kubechat.chat.agents import (
    DESCRIBE_SCHEMA,
    PROMPT_SCHEMA,
    SEARCH_SCHEMA,
    NativeTool,
    TurnToolbox,
    string_argument,
)
from kubechat.chat.checkpoints import Checkpoints
from kubechat.chat.coalesce import coalesced
from kubechat.chat.events import ChatEvent, Done, Failure, Started, Timings, Token, ToolReturned, Usage
from kubechat.chat.generation import Generation, TurnControl, failure_of
from kubechat.chat.plan import Grounding, Plan
from kubechat.chat.prompts import cited_prompt, sampling_params, tool_system_turns
from kubechat.chat.request import ChatMessage, ChatRequest, ImageRef, InlineImage
from kubechat.core.errors import InvalidRequestError, KubechatError, MessageTooLargeError
from kubechat.core.resources import BuiltinTool, Capability
from kubechat.core.tracing import tracer
from kubechat.images.vision import (
    TRANSCRIBE_PROMPT,
    Attachment,
    ImageDescription,
    VisionService,
    image_refs,
    inline_attachment,
    with_images,
)
from kubechat.knowledge.attribution import SentenceSources
from kubechat.knowledge.retrieval import Citation
from kubechat.stores.history import HistoryStore, MessageStatus
from kubechat.tools.formats import assistant_tool_call_text, tool_results_turn
from kubechat.tools.types import Toolbox, ToolCall, ToolResult, ToolSpec
from kubechat.triton.client import TritonInference

logger = logging.getLogger(__name__)

# Hands one event of the answer `message_id` to the client; raises ClientGone when it cannot.
TurnSink = Callable[[str, ChatEvent], Awaitable[None]]


class ClientGone(Exception):
    """A TurnSink's client can no longer receive (its socket closed): the turn stores the answer
    as interrupted and ends without reporting to anyone."""


@dataclass(frozen=True, slots=True)
class ChatConfig:
    """The limits and sizes the chat service works with (from the API's settings)."""

    max_message_chars: int
    history_turns: int  # stored turns a new question is asked with
    retrieval_sources: int  # sources given to the model
    retrieval_candidates: int  # candidates each retriever ranks before fusion
    tool_timeout_s: float  # an MCP tool call's default limit
    metrics: bool = True  # observe answers (time to first token, tokens…); off only to measure its cost


class Knowledge(Protocol):
    """What chat needs of the knowledge bases (kubechat.knowledge.service.KnowledgeService)."""

    def get(self, name: str, principal: str) -> object:
        """The knowledge base if the principal may read it, else KnowledgeBaseNotFoundError."""
        ...

    async def search(
        self, principal: str, kb_names: Sequence[str], query: str, *, limit: int, candidates: int
    ) -> list[Citation]: ...

    async def attribute(
        self, principal: str, answer: str, sources: Sequence[Citation]
    ) -> list[SentenceSources]:
        """Each sentence of the answer with the sources that support it."""
        ...

    def names_readable(self, principal: str) -> list[str]:
        """The knowledge bases the principal may read (offered to the search tool)."""
        ...


class ChatService:
    """Answers chat requests: `run_turn` for a stored session, `complete` for a stateless client."""

    def __init__(
        self,
        config: ChatConfig,
        catalog: ModelCatalog,
        store: HistoryStore,
        triton: TritonInference,
        knowledge: Knowledge,
        vision: VisionService,
        tools: Toolbox | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.store = store
        self.checkpoints = Checkpoints(store)
        self.triton = triton
        self.knowledge = knowledge
        self.vision = vision
        self.tools = tools

    def check_message(self, content: str) -> None:
        limit = self.config.max_message_chars
        if len(content) > limit:
            raise MessageTooLargeError(f"message has {len(content)} characters; the limit is {limit}")

    # -- the one path: prepare, ground, generate ---------------------------------------------

    async def prepare(self, principal: str, request: ChatRequest) -> Plan:
        """Check everything that can be checked before anything is stored or takes long: the
        messages' size, the model and its readiness, the sampling options, the tools, access to
        the knowledge bases, the images and who describes them."""
        received = time.perf_counter()
        if not request.messages:
            raise InvalidRequestError("a request needs at least one message")
        for message in request.messages:
            self.check_message(message.content)
        entry = self.catalog.get(request.model)
        entry.check_ready()
        params = sampling_params(entry, request.options, request.guide, request.logprobs)
        toolbox = self.turn_toolbox(entry, principal, request) if request.mcp_tools else None
        tools = self.offered_tools(entry, request, toolbox)
        for name in request.knowledge_bases:
            self.knowledge.get(name, principal)
        question = request.messages[-1]
        if request.knowledge_bases and question.role != "user":
            raise InvalidRequestError("knowledge_bases needs the conversation to end with a user message")
        images = [await self._attachments(principal, m.images) for m in request.messages]
        describer = self.vision.describer_for(entry, [a for per_message in images for a in per_message])
        said = list(zip(_turns(entry, request.messages), images, strict=True))
        system: list[ChatTurn] = []
        if tools:
            # One system turn: the client's system messages (or the model's prompt), then the offer.
            text = "\n\n".join(t.content for t, _ in said if t.role == "system")
            system = tool_system_turns(entry, tools, text)
            said = [(t, a) for t, a in said if t.role != "system"]
        turns = [*system, *request.history, *(t for t, _ in said)]
        first = len(system) + len(request.history)
        return Plan(
            principal=principal, entry=entry, params=params, tools=tools,
            runs_tools=request.mcp_tools, turns=turns,
            attachments={first + i: a for i, (_, a) in enumerate(said) if a}, describer=describer,
            knowledge_bases=list(request.knowledge_bases), question=question.content, received=received,
            toolbox=toolbox,
        )  # fmt: skip

    def offered_tools(
        self, entry: CatalogEntry, request: ChatRequest, toolbox: Toolbox | None = None
    ) -> list[ToolSpec]:
        """The tools `entry` may call: the client's, or when the request asked for them, the MCP
        tools its ChatModel allows, its specialists and kubechat's own tools it names. Tools for a
        model without the `tools` capability, or none to offer, are an error (never silently
        ignored)."""
        if not request.client_tools and not request.mcp_tools:
            return []
        if not entry.model.has(Capability.TOOLS):
            raise InvalidRequestError(f"model {entry.name} does not call tools (no `tools` capability)")
        if request.client_tools:
            return list(request.client_tools)
        toolbox = toolbox if toolbox is not None else self.tools
        offered = toolbox.tools(entry.model.spec.tools.allow) if toolbox is not None else []
        if not offered:
            raise InvalidRequestError(f"no MCP tools are available to model {entry.name}")
        return offered

    # -- specialists and native tools (kubechat.chat.agents) ---------------------------------

    def turn_toolbox(self, entry: CatalogEntry, principal: str, request: ChatRequest) -> TurnToolbox:
        """The tools of one answer of `entry` for `principal`: its specialists and the native
        tools its ChatModel names, then the MCP toolbox's."""
        spec = entry.model.spec.tools
        left = spec.max_depth if request.delegation_left is None else request.delegation_left
        native = [
            NativeTool(
                ToolSpec(specialist.name, specialist.description, PROMPT_SCHEMA),
                functools.partial(self._ask_specialist, principal, specialist.name, left - 1),
                specialist.timeout_seconds,
            )
            for specialist in spec.models
            if specialist.name != entry.name and specialist.name in self.catalog
        ]
        if BuiltinTool.SEARCH_KNOWLEDGE_BASE in spec.builtin:
            readable = ", ".join(self.knowledge.names_readable(principal)) or "none"
            description = f"Search a knowledge base for passages about a query. Knowledge bases: {readable}."
            native.append(
                NativeTool(
                    ToolSpec(BuiltinTool.SEARCH_KNOWLEDGE_BASE.value, description, SEARCH_SCHEMA),
                    functools.partial(self._search_tool, principal),
                )
            )
        if BuiltinTool.DESCRIBE_IMAGE in spec.builtin:
            native.append(
                NativeTool(
                    ToolSpec(
                        BuiltinTool.DESCRIBE_IMAGE.value,
                        "Describe or read an image the user uploaded, answering a question about it.",
                        DESCRIBE_SCHEMA,
                    ),
                    functools.partial(self._describe_tool, principal),
                )
            )
        return TurnToolbox(self.tools, native)

    async def _ask_specialist(
        self, principal: str, model: str, left: int, arguments: dict[str, Any]
    ) -> ToolResult:
        """The specialist's whole answer to the call's prompt: a stateless completion, with its
        own tools only while the delegation depth allows."""
        try:
            prompt = string_argument(arguments, "prompt")
        except ValueError as exc:
            return ToolResult(False, str(exc), "invalid_arguments")
        entry = self.catalog.find(model)
        uses_tools = entry is not None and left > 0 and entry.model.has(Capability.TOOLS)
        request = ChatRequest(
            messages=[ChatMessage("user", prompt)], model=model, mcp_tools=uses_tools, delegation_left=left
        )
        try:
            generation = await self.complete(principal, request, f"specialist-{uuid.uuid4().hex[:12]}")
            failure: KubechatError | None = None
            async with aclosing(generation.events()) as events:
                async for event in events:
                    if isinstance(event, Failure):
                        failure = event.error
        except KubechatError as exc:
            failure = exc
        if failure is not None:
            return ToolResult(False, f"{model} failed: {failure.message}", failure.code)
        return ToolResult(True, generation.text)

    async def _search_tool(self, principal: str, arguments: dict[str, Any]) -> ToolResult:
        try:
            name, query = string_argument(arguments, "knowledge_base"), string_argument(arguments, "query")
            k = arguments.get("k", 5)
            if not isinstance(k, int) or not 1 <= k <= 20:
                raise ValueError("argument 'k' must be an integer from 1 to 20")
        except ValueError as exc:
            return ToolResult(False, str(exc), "invalid_arguments")
        try:
            found = await self.knowledge.search(
                principal, [name], query, limit=k, candidates=max(k, self.config.retrieval_candidates)
            )
        except KubechatError as exc:
            return ToolResult(False, exc.message, exc.code)
        text = "\n\n".join(f"[{c.n}] {c.document_name}: {c.text}" for c in found)
        return ToolResult(True, text or f"Nothing in {name} matches the query.")

    async def _describe_tool(self, principal: str, arguments: dict[str, Any]) -> ToolResult:
        try:
            image_id = string_argument(arguments, "image_id")
            question = string_argument(arguments, "question", "")
        except ValueError as exc:
            return ToolResult(False, str(exc), "invalid_arguments")
        try:
            attachments = await self.vision.attachments(principal, [image_id])
            describer = self.vision.describer()
            describer.check_ready()
            (described,) = await self.vision.describe(describer, attachments, question or TRANSCRIBE_PROMPT)
        except KubechatError as exc:
            return ToolResult(False, exc.message, exc.code)
        return ToolResult(True, described.description)

    async def ground(self, plan: Plan) -> Grounding:
        """Describe the images for a text-only model, retrieve the sources, cite them in the
        prompt. A failure is kept in the grounding (see Grounding), not raised."""
        turns = list(plan.turns)
        failure: KubechatError | None = None
        described = plan.describer is not None
        question_index = len(turns) - 1
        images = [ImageDescription(id=a.record.id, name=a.record.name) for a in plan.question_attachments]
        if plan.describer is not None:
            with tracer.start_as_current_span(
                "chat.describe_images", attributes={"kubechat.model": plan.describer.name}
            ) as span:
                try:
                    for index, attachments in plan.attachments.items():
                        turn = turns[index]
                        descriptions = await self.vision.describe(plan.describer, attachments, turn.content)
                        turns[index] = ChatTurn(turn.role, with_images(turn.content, descriptions))
                        if index == question_index:
                            images = descriptions
                except KubechatError as exc:
                    span.set_status(trace.StatusCode.ERROR, exc.code)
                    failure, described, images, turns = exc, False, [], list(plan.turns)
        sources = None
        nothing_found = False
        if plan.knowledge_bases:
            sources, retrieval_failure = await self._retrieve(plan)
            failure = failure or retrieval_failure
            nothing_found = retrieval_failure is None and not sources
        prompt = plan.prompt
        if sources is not None or plan.describer is not None:
            prompt, turns, cited = cited_prompt(plan.entry, turns, sources or [])
            sources = None if sources is None else cited
        return Grounding(plan, turns, prompt, images, described, sources, failure, nothing_found)

    def generate(
        self,
        grounding: Grounding,
        message_id: str,
        control: TurnControl | None = None,
        user_message_id: str | None = None,
        span: trace.Span | None = None,
    ) -> Generation:
        """The answer to a grounded request; `message_id` names it (and its Triton requests).
        `span`: the answer's root span, ended by the generation when the answer ends."""
        toolbox = grounding.plan.toolbox or self.tools
        return Generation(
            grounding, message_id, self.triton, toolbox, self.config.tool_timeout_s, control,
            user_message_id, self.knowledge.attribute, observe=self.config.metrics, span=span,
        )  # fmt: skip

    async def _attachments(self, principal: str, refs: Sequence[ImageRef]) -> list[Attachment]:
        """The principal's uploads by id and inline images (checked like uploads), in order; an
        image named twice counts once. Another principal's upload is not found."""
        loaded: list[Attachment] = []
        for ref in dict.fromkeys(refs):
            if isinstance(ref, InlineImage):
                loaded.append(await inline_attachment(ref.data_url, self.vision.images.limits))
            else:
                loaded += await self.vision.attachments(principal, [ref])
        return loaded

    async def _retrieve(self, plan: Plan) -> tuple[list[Citation], KubechatError | None]:
        with tracer.start_as_current_span("knowledge.retrieve") as span:
            span.set_attribute("kubechat.knowledge_bases", plan.knowledge_bases)
            try:
                sources = await self.knowledge.search(
                    plan.principal, plan.knowledge_bases, plan.question,
                    limit=self.config.retrieval_sources, candidates=self.config.retrieval_candidates,
                )  # fmt: skip
            except KubechatError as exc:
                span.set_status(trace.StatusCode.ERROR, exc.code)
                return [], exc
            span.set_attribute("kubechat.sources", len(sources))
            return sources, None

    # -- the two users ----------------------------------------------------------------------

    async def complete(self, principal: str, request: ChatRequest, completion_id: str) -> Generation:
        """A stateless completion (OpenAI's): nothing is stored, and whatever can fail before
        the model is asked (describing, retrieval included) raises here, before it starts."""
        # The span outlives this call: a streamed answer is read by the response's own task, and
        # the generation ends the span when the answer ends.
        span = tracer.start_span("chat.completion", attributes={"kubechat.request_id": completion_id})
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False):
                plan = await self.prepare(principal, request)
                span.set_attribute("kubechat.model", plan.entry.name)
                grounding = await self.ground(plan)
            if grounding.failure is not None:
                raise grounding.failure
        except BaseException as exc:
            span.set_status(trace.StatusCode.ERROR, getattr(exc, "code", type(exc).__name__))
            span.end()
            raise
        return self.generate(grounding, completion_id, span=span)

    async def run_turn(
        self,
        principal: str,
        session_id: str,
        request: ChatRequest,
        sink: TurnSink,
        control: TurnControl,
    ) -> None:
        """One stored turn: store the question, ground it, stream the answer to `sink` and store
        it whatever happens. Refusals raise before anything is stored; once the question is
        stored, every failure ends the answer with a Failure then Done (status failed), after a
        Started if the failure came before it. Only a client that is gone (`ClientGone` from the
        sink) or cancelled ends the turn without its Done."""
        with tracer.start_as_current_span(
            "chat.turn", attributes={"kubechat.session_id": session_id}
        ) as span:
            await self._run_turn(principal, session_id, request, sink, control, span)

    async def _run_turn(
        self,
        principal: str,
        session_id: str,
        request: ChatRequest,
        sink: TurnSink,
        control: TurnControl,
        span: trace.Span,
    ) -> None:
        history = await self.store.recent_messages(principal, session_id, self.config.history_turns)
        past = [ChatTurn(m.role, with_images(m.content, m.images)) for m in history if m.content]
        plan = await self.prepare(principal, replace(request, history=past))
        # Stored before anything can fail or take long (describing and retrieval included).
        user, reply = await self.store.start_exchange(
            principal, session_id, plan.question, model=plan.entry.name, prompt_tokens=plan.prompt.tokens,
            images=image_refs(plan.question_attachments),
        )  # fmt: skip
        span.set_attributes({"kubechat.model": plan.entry.name, "kubechat.message_id": reply.id})
        generation: Generation | None = None
        started = False  # the sink has the answer's Started event
        sent = 0  # tokens the sink has taken
        done: Done | None = None
        error: KubechatError | None = None
        status = MessageStatus.COMPLETE
        try:
            grounding = await self.ground(plan)
            if grounding.described:
                await self.store.set_images(user.id, [i.model_dump() for i in grounding.images])
            if plan.knowledge_bases or plan.describer is not None:
                sources = [s.model_dump() for s in grounding.sources or []]
                await self.store.set_context(reply.id, grounding.prompt.tokens, sources)
            generation = self.generate(grounding, reply.id, control, user.id)
            self.checkpoints.streaming(reply.id, generation)  # about every second, with the others
            # Read ahead: the tokens that arrive while the sink writes go out as one (coalesce.py).
            async with aclosing(coalesced(generation.events())) as events:
                async for event in events:
                    if type(event) is Token:  # the hot path first
                        await sink(reply.id, event)
                        sent = event.seq
                    elif isinstance(event, Failure):
                        error = event.error  # sent once the answer is stored, right before done
                    elif isinstance(event, Done):
                        done, status = event, event.status
                        if event.attribution:
                            attribution = [a.model_dump() for a in event.attribution]
                            await self.store.set_attribution(reply.id, attribution)
                    else:
                        if isinstance(event, ToolReturned):
                            await self.store.set_tool_calls(reply.id, _dumped(generation))
                        await sink(reply.id, event)
                        started = True  # Started is the first event of every answer
        except asyncio.CancelledError:
            status = control.stop_status
            if status is not MessageStatus.STOPPED:
                raise  # the client is gone: store, then let the cancellation finish the task
            # A user's stop ends generation, not the turn: it still gets its done event.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except ClientGone:
            status = MessageStatus.INTERRUPTED  # nobody is left to tell: store, then end the task
            raise
        except Exception as exc:
            # The one guard of a stored turn (the answer's own failures arrive as its Failure):
            # grounding, the store, anything unforeseen ends the answer failed, and says so.
            status, error, done = MessageStatus.FAILED, failure_of(exc, f"answer {reply.id}"), None
        finally:
            control.streaming = False  # from here on a stop must not cancel the bookkeeping
            if generation is not None:
                generation.keep(sent)  # a stop may have cut a token's delivery short
            if done is None:
                done = generation.done(status) if generation is not None else _unanswered(plan, status)
            completion_tokens = done.usage.completion_tokens
            # Shielded: a second cancellation must not lose the answer (nor its tool calls), and
            # its last checkpoint is written before its final state.
            await asyncio.shield(self.checkpoints.ended(reply.id))
            if generation is not None and generation.tool_calls:
                await asyncio.shield(self.store.set_tool_calls(reply.id, _dumped(generation)))
            await asyncio.shield(
                self.store.update_message(
                    reply.id, generation.text if generation is not None else "", status,
                    completion_tokens=completion_tokens, error_code=error.code if error else "",
                )
            )  # fmt: skip
            logger.info(
                "turn %s %s: %d tokens in %.0f ms", reply.id, status, completion_tokens,
                (time.perf_counter() - plan.received) * 1000,
            )  # fmt: skip
            span.set_attribute("kubechat.status", str(status))
            if error is not None or status is MessageStatus.FAILED:
                span.set_status(trace.StatusCode.ERROR, error.code if error else "failed")
        if not started:
            prompt = plan.prompt
            await sink(reply.id, Started(plan.entry.name, prompt.tokens, prompt.turns_dropped, user.id))
        if error is not None:
            await sink(reply.id, Failure(error))
        await sink(reply.id, done)


def _unanswered(plan: Plan, status: MessageStatus) -> Done:
    """How an answer ends that failed before its model was asked: no tokens, no first token."""
    tokens = plan.prompt.tokens
    total_ms = (time.perf_counter() - plan.received) * 1000
    return Done(
        status=status,
        usage=Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens),
        timings=Timings(time_to_first_token_ms=None, total_ms=total_ms, tokens_per_second=None),
        finish_reason="stop",
    )


def _turns(entry: CatalogEntry, messages: Sequence[ChatMessage]) -> list[ChatTurn]:
    """The messages as turns of the model's conversation: an assistant's calls of the client's
    tools and the results sent back are written in the model's tool-call format."""
    fmt = entry.model.spec.tools.format
    names: dict[str, str] = {}  # tool call id -> name, for the results that answer it
    turns = []
    for message in messages:
        role, text = message.role, message.content
        if message.tool_calls:
            names.update((c.id, c.name) for c in message.tool_calls)
            text += assistant_tool_call_text(fmt, message.tool_calls)
        if role == "tool":
            call = ToolCall(message.tool_call_id, names.get(message.tool_call_id, "tool"), {})
            role, text = tool_results_turn(fmt, [(call, text)])
        turns.append(ChatTurn(role, text))
    return turns


def _dumped(generation: Generation) -> list[dict[str, object]]:
    return [a.model_dump() for a in generation.tool_calls]
