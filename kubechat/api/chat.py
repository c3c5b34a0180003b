"""One chat turn, end to end: store the question, build the prompt, stream, store the answer.

The user message is stored before generation starts; the answer is checkpointed while it
streams and always finalized, whether the turn completes, is stopped, loses its client or its
model, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from kubechat.api.errors import error_body
from kubechat.api.events import (
    DoneEvent,
    ErrorEvent,
    GenerationOptions,
    ImagesEvent,
    SourcesEvent,
    StartEvent,
    Timings,
    ToolActivity,
    ToolCallEvent,
    ToolResultEvent,
    Usage,
    UserMessage,
    token_frame,
)
from kubechat.api.settings import Settings
from kubechat.catalog import CatalogEntry, ChatTurn, ModelCatalog, Prompt
from kubechat.core.errors import (
    InvalidRequestError,
    KubechatError,
    MessageTooLargeError,
    ToolRoundsExceededError,
)
from kubechat.core.resources import Capability
from kubechat.images.vision import Attachment, ImageDescription, VisionService, image_refs, with_images
from kubechat.knowledge.retrieval import Citation, sources_prompt
from kubechat.knowledge.service import KnowledgeService
from kubechat.stores.history import HistoryStore, MessageStatus
from kubechat.tools.formats import (
    ToolCallParser,
    assistant_tool_call_text,
    tool_results_turn,
    tools_system_prompt,
)
from kubechat.tools.types import MalformedToolCall, Toolbox, ToolCall, ToolResult, ToolSpec
from kubechat.triton.client import SamplingParams, TritonInference

logger = logging.getLogger(__name__)

# Sends one ready-made JSON text frame to the client.
Emit = Callable[[str], Awaitable[None]]
CHECKPOINT_INTERVAL_S = 1.0


def sampling_params(entry: CatalogEntry, options: GenerationOptions) -> SamplingParams:
    """Request options over the ChatModel's defaults, bounded by its engine limits."""
    defaults = entry.model.spec.defaults
    limit = entry.model.spec.engine.max_output_tokens
    max_tokens = options.max_tokens or defaults.max_tokens
    if max_tokens > limit:
        raise InvalidRequestError(f"max_tokens {max_tokens} exceeds model {entry.name}'s limit {limit}")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=defaults.temperature if options.temperature is None else options.temperature,
        top_p=defaults.top_p if options.top_p is None else options.top_p,
        top_k=defaults.top_k if options.top_k is None else options.top_k,
        repetition_penalty=(
            defaults.repetition_penalty if options.repetition_penalty is None else options.repetition_penalty
        ),
        stop=tuple(defaults.stop if options.stop is None else options.stop),
        seed=options.seed,
    )


@dataclass
class TurnControl:
    """How a running turn is asked to stop, and with which status its answer is stored.

    A task cancelled before its first step never runs its `finally`, so a turn is only
    cancelled while it streams; before that, a stop request is a flag it checks.
    STOPPED (the user asked) still ends with a done event; INTERRUPTED means the client left.
    """

    stop_status: MessageStatus = MessageStatus.INTERRUPTED
    stop_requested: bool = False
    streaming: bool = False

    def request_stop(self, task: asyncio.Task[None], status: MessageStatus) -> None:
        self.stop_status = status
        if self.streaming:
            task.cancel()
        else:
            self.stop_requested = True


@dataclass
class _Answer:
    message_id: str
    pieces: list[str] = field(default_factory=list)
    last_checkpoint: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    tool_calls: list[ToolActivity] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class ChatService:
    def __init__(
        self,
        settings: Settings,
        catalog: ModelCatalog,
        store: HistoryStore,
        triton: TritonInference,
        knowledge: KnowledgeService,
        vision: VisionService,
        tools: Toolbox | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.triton = triton
        self.knowledge = knowledge
        self.vision = vision
        self.tools = tools

    def check_message(self, content: str) -> None:
        if len(content) > self.settings.max_message_chars:
            raise MessageTooLargeError(
                f"message has {len(content)} characters; the limit is {self.settings.max_message_chars}"
            )

    def offered_tools(self, entry: CatalogEntry, use_tools: bool) -> list[ToolSpec]:
        """The MCP tools `entry` may call in this turn: none unless the message asked for tools;
        asking a model without the `tools` capability, or with no tool it may call, is an error
        (never silently ignored)."""
        if not use_tools:
            return []
        if not entry.model.has(Capability.TOOLS):
            raise InvalidRequestError(f"model {entry.name} does not call tools (no `tools` capability)")
        offered = self.tools.tools(entry.model.spec.tools.allow) if self.tools is not None else []
        if not offered:
            raise InvalidRequestError(f"no MCP tools are available to model {entry.name}")
        return offered

    async def run_turn(
        self,
        principal: str,
        session_id: str,
        message: UserMessage,
        emit: Emit,
        control: TurnControl,
    ) -> None:
        started = time.perf_counter()
        # Validate everything before storing anything: a rejected message leaves no trace.
        self.check_message(message.content)
        entry = self.catalog.get(message.model)
        entry.check_ready()
        params = sampling_params(entry, message.options)
        tools = self.offered_tools(entry, message.tools)
        system = tool_system_turns(entry, tools)
        for name in message.knowledge_bases:
            self.knowledge.get(name, principal)
        attachments = await self.vision.attachments(principal, message.image_ids)
        describer = self.vision.describer_for(entry, attachments)
        history = await self.store.recent_messages(principal, session_id, self.settings.history_turns)
        past = [ChatTurn(m.role, with_images(m.content, m.images)) for m in history if m.content]
        prompt, _ = cited_prompt(entry, past, message.content, [], system)

        # Stored before anything can fail or take long (describing and retrieval included).
        user, reply = await self.store.start_exchange(
            principal, session_id, message.content, model=entry.name, prompt_tokens=prompt.tokens,
            images=image_refs(attachments),
        )  # fmt: skip
        answer = _Answer(reply.id)
        status, error = MessageStatus.COMPLETE, None
        try:
            images, failure = await self.describe(describer, attachments, user.id, message.content)
            # A vision model sees the image itself; a text-only one is given the descriptions.
            question = message.content if describer is None else with_images(message.content, images)
            sources, retrieval_error = await self.retrieve(
                principal, message.knowledge_bases, message.content
            )
            failure = failure or retrieval_error
            if message.knowledge_bases or describer is not None:
                prompt, sources = cited_prompt(entry, past, question, sources, system)
                await self.store.set_context(reply.id, prompt.tokens, [s.model_dump() for s in sources])
            await emit(
                StartEvent(
                    message_id=reply.id, user_message_id=user.id, model=entry.name,
                    turns_dropped=prompt.turns_dropped,
                ).model_dump_json()
            )  # fmt: skip
            if images:
                await emit(ImagesEvent(message_id=reply.id, images=images).model_dump_json())
            if message.knowledge_bases:
                await emit(SourcesEvent(message_id=reply.id, sources=sources).model_dump_json())
            if failure is not None:
                raise failure
            if control.stop_requested:
                status = control.stop_status
            else:
                control.streaming = True
                image = attachments[0].png if attachments and describer is None else None
                if tools:
                    turns = [*past, ChatTurn("user", sources_prompt(sources, question))]
                    await self._answer_with_tools(entry, system, turns, params, tools, answer, emit, image)
                else:
                    deltas = self.triton.stream_text(entry.name, prompt.text, params, reply.id, image=image)
                    async for delta in deltas:
                        await self._token(answer, delta, emit)
        except KubechatError as exc:
            status, error = MessageStatus.FAILED, exc
        except asyncio.CancelledError:
            status = control.stop_status
            if status is not MessageStatus.STOPPED:
                raise  # the client is gone: store, then let the cancellation finish the task
            # A user's stop ends generation, not the turn: it still gets its done event.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception:
            status = MessageStatus.INTERRUPTED  # e.g. the socket closed under emit()
            raise
        finally:
            control.streaming = False  # from here on a stop must not cancel the bookkeeping
            completion_tokens = entry.counter.count(answer.text)
            # Shielded: a second cancellation must not lose the answer (nor its tool calls).
            if answer.tool_calls:
                calls = [a.model_dump() for a in answer.tool_calls]
                await asyncio.shield(self.store.set_tool_calls(reply.id, calls))
            await asyncio.shield(
                self.store.update_message(
                    reply.id, answer.text, status,
                    completion_tokens=completion_tokens,
                    error_code=error.code if error else "",
                )
            )  # fmt: skip
            logger.info(
                "turn %s %s: %d tokens in %.0f ms", reply.id, status, completion_tokens,
                (time.perf_counter() - started) * 1000,
            )  # fmt: skip
        if error is not None:
            await emit(ErrorEvent(error=error_body(error), message_id=reply.id).model_dump_json())
        await emit(_done(reply.id, status, prompt.tokens, completion_tokens, started, answer.first_token_at))

    async def describe(
        self,
        describer: CatalogEntry | None,
        attachments: list[Attachment],
        message_id: str,
        question: str,
    ) -> tuple[list[ImageDescription], KubechatError | None]:
        """The attached images as the answering model will know them. For a text-only model,
        a vision model's descriptions, stored with the user message; a failure does not reject
        the message: it is stored, and its answer fails with the reason."""
        if describer is None:
            return [ImageDescription(id=a.record.id, name=a.record.name) for a in attachments], None
        try:
            described = await self.vision.describe(describer, attachments, question)
        except KubechatError as exc:
            return [], exc
        await self.store.set_images(message_id, [d.model_dump() for d in described])
        return described, None

    async def retrieve(
        self, principal: str, knowledge_bases: list[str], question: str
    ) -> tuple[list[Citation], KubechatError | None]:
        """Sources for a question. A failure does not reject the message: it is stored, and
        its answer fails with the reason."""
        if not knowledge_bases:
            return [], None
        try:
            sources = await self.knowledge.search(
                principal, knowledge_bases, question,
                limit=self.settings.retrieval_sources, candidates=self.settings.retrieval_candidates,
            )  # fmt: skip
        except KubechatError as exc:
            return [], exc
        return sources, None

    async def _token(self, answer: _Answer, delta: str, emit: Emit) -> None:
        if answer.first_token_at is None:
            answer.first_token_at = time.perf_counter()
        answer.pieces.append(delta)
        await emit(token_frame(answer.message_id, len(answer.pieces), delta))
        await self._checkpoint(answer)

    async def _answer_with_tools(
        self,
        entry: CatalogEntry,
        system: list[ChatTurn],
        turns: list[ChatTurn],
        params: SamplingParams,
        tools: list[ToolSpec],
        answer: _Answer,
        emit: Emit,
        image: bytes | None = None,
    ) -> None:
        """Model, tools, model…: each round streams the model's text as tokens and collects the
        tool calls it makes; the calls run concurrently, their results go back to the model,
        until it answers without calling (or `maxRounds` is spent). A vision model is given the
        message's image in every round: it belongs to the question."""
        spec = entry.model.spec.tools
        offered = {t.name for t in tools}
        for round_ in range(spec.max_rounds + 1):
            prompt = entry.build_prompt([*system, *turns])
            parser = ToolCallParser(spec.format)
            calls: list[ToolCall] = []
            malformed: list[MalformedToolCall] = []

            request_id = f"{answer.message_id}-{round_}"
            deltas = self.triton.stream_text(entry.name, prompt.text, params, request_id, image=image)
            async for delta in deltas:
                await self._take(parser.feed(delta), calls, malformed, answer, emit)
            await self._take(parser.finish(), calls, malformed, answer, emit)
            if not calls and not malformed:
                return
            if round_ == spec.max_rounds:
                raise ToolRoundsExceededError(
                    f"model {entry.name} still called tools after {spec.max_rounds} rounds"
                )
            results = await self._run_tools(calls, malformed, offered, spec.max_result_chars, answer, emit)
            await self.store.set_tool_calls(answer.message_id, [a.model_dump() for a in answer.tool_calls])
            said = assistant_tool_call_text(spec.format, calls) + "".join(m.raw for m in malformed)
            role, content = tool_results_turn(spec.format, results)
            turns = [*turns, ChatTurn("assistant", said), ChatTurn(role, content)]

    async def _take(
        self,
        items: list[str | ToolCall | MalformedToolCall],
        calls: list[ToolCall],
        malformed: list[MalformedToolCall],
        answer: _Answer,
        emit: Emit,
    ) -> None:
        """Parsed model output: text is streamed, calls announced and collected."""
        for item in items:
            if isinstance(item, str):
                if item:
                    await self._token(answer, item, emit)
            elif isinstance(item, ToolCall):
                calls.append(item)
                answer.tool_calls.append(ToolActivity(id=item.id, name=item.name, arguments=item.arguments))
                event = ToolCallEvent(
                    message_id=answer.message_id, id=item.id, name=item.name, arguments=item.arguments
                )
                await emit(event.model_dump_json())
            else:
                malformed.append(item)

    async def _run_tools(
        self,
        calls: list[ToolCall],
        malformed: list[MalformedToolCall],
        offered: set[str],
        max_chars: int,
        answer: _Answer,
        emit: Emit,
    ) -> list[tuple[ToolCall, str]]:
        """Run the calls concurrently (a tool the model was not offered is never called); report
        and record each result, cut to `max_chars`; return what goes back to the model."""
        assert self.tools is not None
        toolbox = self.tools
        timeout = self.settings.mcp_tool_timeout_s

        async def run(call: ToolCall) -> ToolResult:
            if call.name not in offered:
                return ToolResult(False, f"tool {call.name} is not available", "unknown_tool")
            return await toolbox.call(call.name, call.arguments, timeout_s=timeout)

        outcomes = list(await asyncio.gather(*(run(c) for c in calls)))
        for bad in malformed:
            # No name or arguments to report: the model is told what was wrong instead.
            calls = [*calls, ToolCall(f"call_{uuid.uuid4().hex[:12]}", "invalid_tool_call", {})]
            outcomes.append(ToolResult(False, f"malformed tool call: {bad.error}", "malformed_tool_call"))
        fed_back = []
        for call, result in zip(calls, outcomes, strict=True):
            content = result.content[:max_chars]
            truncated = len(result.content) > max_chars
            activity = ToolActivity(
                id=call.id, name=call.name, arguments=call.arguments, ok=result.ok, content=content,
                error_code=result.error_code, truncated=truncated,
            )  # fmt: skip
            known = [i for i, a in enumerate(answer.tool_calls) if a.id == call.id]
            if known:
                answer.tool_calls[known[0]] = activity
            else:
                answer.tool_calls.append(activity)
            event = ToolResultEvent(
                message_id=answer.message_id, id=call.id, name=call.name, ok=result.ok, content=content,
                error_code=result.error_code, truncated=truncated,
            )  # fmt: skip
            await emit(event.model_dump_json())
            fed_back.append((call, content if result.ok else f"error ({result.error_code}): {content}"))
        return fed_back

    async def _checkpoint(self, answer: _Answer) -> None:
        now = time.monotonic()
        if now - answer.last_checkpoint >= CHECKPOINT_INTERVAL_S:
            answer.last_checkpoint = now
            await self.store.update_message(answer.message_id, answer.text, MessageStatus.STREAMING)


def cited_prompt(
    entry: CatalogEntry,
    past: list[ChatTurn],
    question: str,
    sources: list[Citation],
    system: Sequence[ChatTurn] = (),
) -> tuple[Prompt, list[Citation]]:
    """The prompt with as many of the best sources as fit engine.maxInputTokens.

    Older turns are dropped first (build_prompt), then the lowest-ranked sources: the question
    and the instruction must never be cut. Returns the sources actually given to the model.
    """
    budget = entry.model.spec.engine.max_input_tokens
    while True:
        prompt = entry.build_prompt([*system, *past, ChatTurn("user", sources_prompt(sources, question))])
        if prompt.tokens <= budget or not sources:
            return prompt, sources
        sources = sources[:-1]


def tool_system_turns(entry: CatalogEntry, tools: Sequence[ToolSpec], system: str = "") -> list[ChatTurn]:
    """The system turn that offers `tools` in the model's format, after the model's own system
    prompt (or `system`, a client's); none without tools."""
    if not tools:
        return []
    base = system or entry.model.spec.system_prompt
    offer = tools_system_prompt(entry.model.spec.tools.format, tools)
    return [ChatTurn("system", f"{base}\n\n{offer}" if base else offer)]


def _done(
    message_id: str,
    status: MessageStatus,
    prompt_tokens: int,
    completion_tokens: int,
    started: float,
    first_token_at: float | None,
) -> str:
    now = time.perf_counter()
    generating = now - first_token_at if first_token_at is not None else 0.0
    return DoneEvent(
        message_id=message_id,
        status=status,
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        timings=Timings(
            time_to_first_token_ms=(first_token_at - started) * 1000 if first_token_at else None,
            total_ms=(now - started) * 1000,
            tokens_per_second=completion_tokens / generating if generating > 0 else None,
        ),
    ).model_dump_json()
