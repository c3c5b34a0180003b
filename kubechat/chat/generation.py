"""The one generation loop: stream from Triton, split tool calls out, run tools, report events.

Tool calls are parsed here and only here. MCP tools (`Plan.runs_tools`) run in rounds, model,
tools, model…, until the model answers without calling or spec.tools.maxRounds is spent; a
client's tools (/v1) are handed back as `ToolCalled` events after one round.

Observed here, once for both transports (kubechat.core.metrics): the time to first token, the
gaps between tokens, the streams in flight, and each answer's tokens and status. Each tool call
is a span (`tool.call`) of the turn's trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from kubechat.catalog import ChatTurn, Prompt
from kubechat.chat.events import (
    ChatEvent,
    Done,
    Failure,
    FinishReason,
    Images,
    Sources,
    Started,
    Timings,
    Token,
    ToolActivity,
    ToolCalled,
    ToolReturned,
    Usage,
)
from kubechat.chat.plan import Grounding
from kubechat.core import metrics
from kubechat.core.errors import (
    KubechatError,
    StorageUnavailableError,
    ToolRoundsExceededError,
    as_kubechat_error,
)
from kubechat.core.tracing import tracer
from kubechat.knowledge.attribution import SentenceSources
from kubechat.knowledge.retrieval import Citation
from kubechat.stores.errors import StoreError
from kubechat.stores.history import MessageStatus
from kubechat.tools.formats import (
    ParsedOutput,
    ToolCallParser,
    assistant_tool_call_text,
    new_call_id,
    tool_results_turn,
)
from kubechat.tools.types import MalformedToolCall, Toolbox, ToolCall, ToolResult
from kubechat.triton.client import ReportedUsage, TritonInference

logger = logging.getLogger(__name__)


def failure_of(exc: Exception, what: str) -> KubechatError:
    """What a chat failure `exc` is reported as: a domain error as it is, a store's failure as
    storage_unavailable, anything else as an InternalError, logged with its traceback (the
    client is not shown internals). `what` names what failed, for the log."""
    if isinstance(exc, StoreError):
        logger.warning("%s: a store failed: %s", what, exc)
        return StorageUnavailableError(f"a store failed: {exc}")
    error = as_kubechat_error(exc)
    if error is not exc:
        logger.error("%s failed unexpectedly", what, exc_info=exc)
    return error


Attributor = Callable[[str, str, list[Citation]], Awaitable[list[SentenceSources]]]


def nothing_found_answer(knowledge_bases: Sequence[str]) -> str:
    """The answer to a question no named knowledge base holds anything on (above its floor)."""
    names = ", ".join(knowledge_bases)
    which = f"knowledge base {names} holds" if len(knowledge_bases) == 1 else f"knowledge bases {names} hold"
    return (
        f"The {which} nothing on this question, so I cannot answer it from them. "
        "Try rephrasing it, or ask without knowledge bases."
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


class Generation:
    """One answer generated from a grounding: its events, and what it has said so far.

    `events()` is iterated once. Whoever iterates it may read `text` and `tool_calls` at any
    time, also after a cancellation cut the iteration short, and ask for `done(status)`.
    """

    def __init__(
        self,
        grounding: Grounding,
        message_id: str,
        triton: TritonInference,
        toolbox: Toolbox | None,
        tool_timeout_s: float,
        control: TurnControl | None = None,
        user_message_id: str | None = None,
        attributor: Attributor | None = None,
        *,
        observe: bool = True,
        span: trace.Span | None = None,
    ) -> None:
        """`observe`: record the answer's metrics. `span`: the answer's root span, which the
        generation ends (a /v1 completion's: its stream outlives the request handler); without
        it the Triton stream and tool calls are children of the span current now."""
        self.grounding = grounding
        self.attributor = attributor
        self.message_id = message_id  # also the Triton request id
        self.user_message_id = user_message_id
        self.triton = triton
        self.toolbox = toolbox
        self.tool_timeout_s = tool_timeout_s
        self.control = control
        self.pieces: list[str] = []
        # The tokens' log probabilities (OpenAI's entries), when the request asked for them:
        # each Token's entries are here before it is yielded.
        self.logprobs: list[dict[str, Any]] | None = (
            [] if grounding.plan.params.logprobs is not None else None
        )
        self.tool_calls: list[ToolActivity] = []
        self.first_token_at: float | None = None
        self.last_token_at = 0.0
        self.handed_back = False  # calls of the client's tools ended the answer
        # What the engine counted, round by round (a remote endpoint's usage; Triton's is empty).
        self.reported: list[ReportedUsage] = []
        self.observe = observe
        self.span = span
        # The spans of the Triton stream and the tool calls hang under the turn's span, whatever
        # task iterates the events (a /v1 stream is iterated by the response's own task).
        self.trace_context = (
            trace.set_span_in_context(span) if span is not None else otel_context.get_current()
        )
        self._gaps = metrics.INTER_TOKEN_LATENCY.new_counts() if observe else []
        self._recorded = False

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def keep(self, tokens: int) -> None:
        """Forget the text after the first `tokens` tokens: the iteration was cut short (a stop
        cancels the turn wherever it waits) after a token was generated but before its client
        received it, and what is stored must be what the client was sent."""
        del self.pieces[tokens:]

    async def events(self) -> AsyncGenerator[ChatEvent, None]:
        grounding, control = self.grounding, self.control
        prompt = grounding.prompt
        yield Started(grounding.plan.entry.name, prompt.tokens, prompt.turns_dropped, self.user_message_id)
        if grounding.images:
            yield Images(grounding.images)
        if grounding.sources is not None:
            yield Sources(grounding.sources, grounding.nothing_found)
        status, error = MessageStatus.COMPLETE, None
        model = grounding.plan.entry.name
        attached = otel_context.attach(self.trace_context)
        streams = metrics.ACTIVE_STREAMS.labels(model) if self.observe else None
        counted = False  # in kubechat_active_streams
        try:
            if grounding.failure is not None:
                raise grounding.failure
            if control is not None and control.stop_requested:
                status = control.stop_status
            else:
                if control is not None:
                    control.streaming = True
                if streams is not None:
                    streams.inc()
                    counted = True
                if grounding.nothing_found:
                    # Not the model's to answer: a small one invents what the sources lack.
                    yield self._token(nothing_found_answer(grounding.plan.knowledge_bases))
                elif grounding.plan.tools:
                    async with aclosing(self._with_tools()) as events:
                        async for event in events:
                            yield event
                elif streams is None:
                    # The hot path: one event per token, nothing in between (_token, inlined).
                    pieces = self.pieces
                    async with aclosing(self._stream(prompt, self.message_id)) as deltas:
                        async for delta in deltas:
                            if self.first_token_at is None:
                                self.first_token_at = time.perf_counter()
                            pieces.append(delta)
                            yield Token(len(pieces), delta)
                else:
                    # The same, observed: a clock read and a bisect per token (see TokenGapHistogram).
                    pieces, gaps, bucket = self.pieces, self._gaps, metrics.INTER_TOKEN_LATENCY.bucket
                    last = 0.0
                    async with aclosing(self._stream(prompt, self.message_id)) as deltas:
                        async for delta in deltas:
                            now = time.perf_counter()
                            if self.first_token_at is None:
                                self._first_token(now)
                            else:
                                gaps[bucket(now - last)] += 1
                            last = self.last_token_at = now
                            pieces.append(delta)
                            yield Token(len(pieces), delta)
        except Exception as exc:
            # The one guard of an answer: whatever fails (the model, a tool round, a bug) ends it
            # with a Failure and Done, never with an exception its transport might not report.
            status, error = MessageStatus.FAILED, failure_of(exc, f"answer {self.message_id}")
        except BaseException:
            # Cut short (cancelled, or closed by its consumer): a stored turn ends the answer with
            # done(status) itself; a stateless completion has nobody else to.
            if control is None:
                self.done(MessageStatus.INTERRUPTED)
            raise
        finally:
            if control is not None:
                control.streaming = False  # from here on a stop must not cancel the bookkeeping
            if streams is not None and counted:
                streams.dec()
            otel_context.detach(attached)
        done = self.done(status)  # before Failure: a consumer may stop reading there
        if status is MessageStatus.COMPLETE and grounding.sources and self.text.strip():
            done = replace(done, attribution=await self._attribution(grounding.sources))
        if error is not None:
            yield Failure(error)
        yield done

    async def _attribution(self, sources: list[Citation]) -> list[SentenceSources]:
        """The answer's sentences with their supporting sources; none when that fails (the answer
        stands without them, and its sources were sent already)."""
        if self.attributor is None:
            return []
        try:
            return await self.attributor(self.grounding.plan.principal, self.text, sources)
        except Exception as exc:  # a missing embedder must not fail a finished answer
            logger.warning("answer %s: attributing sentences to sources failed: %s", self.message_id, exc)
            return []

    def done(self, status: MessageStatus) -> Done:
        """How the answer ended: usage, timings (from the request's arrival) and finish reason."""
        now = time.perf_counter()
        plan = self.grounding.plan
        prompt_tokens = self.grounding.prompt.tokens
        completion_tokens = plan.entry.counter.count(self.text)
        reported = self.reported
        if reported and all(
            r.prompt_tokens is not None and r.completion_tokens is not None for r in reported
        ):
            # The engine's own counts (a remote endpoint's usage): the first round's prompt, and
            # what every round generated.
            prompt_tokens = reported[0].prompt_tokens or 0
            completion_tokens = sum(r.completion_tokens or 0 for r in reported)
        first = self.first_token_at
        generating = now - first if first is not None else 0.0
        reason: FinishReason = "tool_calls" if self.handed_back else "stop"
        if not self.handed_back and completion_tokens >= plan.params.max_tokens:
            reason = "length"
        if not self._recorded:
            self._recorded = True
            self._record(status, prompt_tokens, completion_tokens)
        return Done(
            status=status,
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
            timings=Timings(
                time_to_first_token_ms=(first - plan.received) * 1000 if first is not None else None,
                total_ms=(now - plan.received) * 1000,
                tokens_per_second=completion_tokens / generating if generating > 0 else None,
            ),
            finish_reason=reason,
        )

    def _first_token(self, now: float) -> None:
        self.first_token_at = now
        if self.observe:
            ttft = now - self.grounding.plan.received
            metrics.TIME_TO_FIRST_TOKEN.labels(self.grounding.plan.entry.name).observe(ttft)

    def _record(self, status: MessageStatus, prompt_tokens: int, completion_tokens: int) -> None:
        """The answer's metrics, once, when it ends; and the end of its root span, if it owns one."""
        if self.observe:
            model = self.grounding.plan.entry.name
            metrics.ANSWERS.labels(model, status).inc()
            metrics.PROMPT_TOKENS.labels(model).inc(prompt_tokens)
            if completion_tokens:
                metrics.GENERATED_TOKENS.labels(model).inc(completion_tokens)
            if self.first_token_at is not None:
                spread = self.last_token_at - self.first_token_at if self.last_token_at else 0.0
                metrics.INTER_TOKEN_LATENCY.merge(model, self._gaps, spread)
        if self.span is not None:
            self.span.set_attribute("kubechat.status", str(status))
            self.span.set_attribute("kubechat.completion_tokens", completion_tokens)
            if status is MessageStatus.FAILED:
                self.span.set_status(trace.StatusCode.ERROR)
            self.span.end()

    def _stream(self, prompt: Prompt, request_id: str) -> AsyncGenerator[str, None]:
        plan = self.grounding.plan
        usage = ReportedUsage()
        self.reported.append(usage)
        return self.triton.stream_text(
            plan.entry.name, prompt.text, plan.params, request_id, image=plan.image,
            logprobs=self.logprobs, turns=prompt.messages(), usage=usage,
        )  # fmt: skip

    def _token(self, text: str) -> Token:
        now = time.perf_counter()
        if self.first_token_at is None:
            self._first_token(now)
        elif self.observe:
            self._gaps[metrics.INTER_TOKEN_LATENCY.bucket(now - self.last_token_at)] += 1
        self.last_token_at = now
        self.pieces.append(text)
        return Token(len(self.pieces), text)

    async def _parsed(self, prompt: Prompt, request_id: str) -> AsyncGenerator[ParsedOutput, None]:
        """The model's output split into text and tool calls, in order: the one place it is parsed."""
        parser = ToolCallParser(self.grounding.plan.entry.model.spec.tools.format)
        async with aclosing(self._stream(prompt, request_id)) as deltas:
            async for delta in deltas:
                for item in parser.feed(delta):
                    yield item
        for item in parser.finish():
            yield item

    async def _with_tools(self) -> AsyncGenerator[ChatEvent, None]:
        """Each round streams the model's text as tokens and collects the calls it makes. MCP
        calls run concurrently and their results go back to the model for another round; a
        client's are handed back. A vision model is given the question's image in every round:
        it belongs to the question."""
        plan = self.grounding.plan
        spec = plan.entry.model.spec.tools
        turns, prompt = self.grounding.turns, self.grounding.prompt
        for round_ in range(spec.max_rounds + 1):
            if round_:
                prompt = plan.entry.build_prompt(turns)
            calls: list[ToolCall] = []
            malformed: list[MalformedToolCall] = []
            request_id = f"{self.message_id}-{round_}" if round_ else self.message_id
            async with aclosing(self._parsed(prompt, request_id)) as output:
                async for item in output:
                    if isinstance(item, str):
                        if item:
                            yield self._token(item)
                    elif isinstance(item, ToolCall):
                        calls.append(item)
                        called = ToolActivity(id=item.id, name=item.name, arguments=item.arguments)
                        self.tool_calls.append(called)
                        yield ToolCalled(item)
                    elif plan.runs_tools:
                        malformed.append(item)
                    else:
                        yield self._token(item.raw)  # the client is shown what the model wrote
            if not plan.runs_tools:
                self.handed_back = bool(calls)
                return
            if not calls and not malformed:
                return
            if round_ == spec.max_rounds:
                raise ToolRoundsExceededError(
                    f"model {plan.entry.name} still called tools after {spec.max_rounds} rounds"
                )
            fed_back = []
            for call, result in await self._run_tools(calls, malformed):
                yield ToolReturned(result)
                content = result.content
                fed_back.append((call, content if result.ok else f"error ({result.error_code}): {content}"))
            said = assistant_tool_call_text(spec.format, calls) + "".join(m.raw for m in malformed)
            role, content = tool_results_turn(spec.format, fed_back)
            turns = [*turns, ChatTurn("assistant", said), ChatTurn(role, content)]

    async def _run_tools(
        self, calls: list[ToolCall], malformed: list[MalformedToolCall]
    ) -> list[tuple[ToolCall, ToolActivity]]:
        """Run the calls concurrently (a tool the model was not offered is never called) and
        record each result, cut to maxResultChars, with the answer's tool calls."""
        assert self.toolbox is not None, "MCP tools are offered only with a toolbox"
        toolbox, timeout = self.toolbox, self.tool_timeout_s
        plan = self.grounding.plan
        offered = {t.name for t in plan.tools}
        max_chars = plan.entry.model.spec.tools.max_result_chars

        async def run(call: ToolCall) -> ToolResult:
            with tracer.start_as_current_span("tool.call", attributes={"kubechat.tool": call.name}) as span:
                if call.name not in offered:
                    result = ToolResult(False, f"tool {call.name} is not available", "unknown_tool")
                else:
                    result = await toolbox.call(call.name, call.arguments, timeout_s=timeout)
                span.set_attribute("kubechat.tool.outcome", "ok" if result.ok else result.error_code)
                if not result.ok:
                    span.set_status(trace.StatusCode.ERROR, result.error_code)
                return result

        outcomes = list(await asyncio.gather(*(run(c) for c in calls)))
        for bad in malformed:
            # No name or arguments to report: the model is told what was wrong instead.
            calls = [*calls, ToolCall(new_call_id(), "invalid_tool_call", {})]
            outcomes.append(ToolResult(False, f"malformed tool call: {bad.error}", "malformed_tool_call"))
        results = []
        for call, outcome in zip(calls, outcomes, strict=True):
            activity = ToolActivity(
                id=call.id, name=call.name, arguments=call.arguments, ok=outcome.ok,
                content=outcome.content[:max_chars], error_code=outcome.error_code,
                truncated=len(outcome.content) > max_chars,
            )  # fmt: skip
            known = [i for i, a in enumerate(self.tool_calls) if a.id == call.id]
            if known:
                self.tool_calls[known[0]] = activity
            else:
                self.tool_calls.append(activity)
            results.append((call, activity))
        return results
