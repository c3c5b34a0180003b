import { describe, expect, it } from "vitest";
import type { MessageOut, ServerEvent } from "../src/api/types";
import { chatReducer, hasEarlier, initialChatState, type ChatState } from "../src/chat/reducer";

const session = { id: "s1", title: "t", created_at: 1, updated_at: 2 };
function stored(id: string, seq: number, role: string, content: string, extra: Partial<MessageOut> = {}): MessageOut {
  return {
    id, seq, role, content, status: "complete", model: "m", created_at: seq, prompt_tokens: 0, completion_tokens: 0,
    error_code: "", sources: [], images: [], tool_calls: [], ...extra,
  };
}
const run = (state: ChatState, ...events: ServerEvent[]) => chatReducer(state, { type: "events", events });
const history = (...messages: MessageOut[]): ServerEvent => ({ type: "history", session, messages });
const usage = { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 };
const timings = { time_to_first_token_ms: 12, total_ms: 40, tokens_per_second: 50 };

function asked(state: ChatState = run(initialChatState, history())): ChatState {
  return chatReducer(state, { type: "sent", localId: "local-1", content: "hi", model: "m", images: [] });
}

describe("chat reducer", () => {
  it("history replaces the transcript", () => {
    const state = run(asked(), history(stored("a", 1, "user", "q"), stored("b", 2, "assistant", "x")));
    expect(state.messages.map((m) => m.id)).toEqual(["a", "b"]);
    expect(state.loaded).toBe(true);
    expect(state.sending).toBe(false);
  });

  it("a turn: start names the question, tokens append, done closes it", () => {
    let state = asked();
    expect(state.sending).toBe(true);
    state = run(state, { type: "start", message_id: "ans", user_message_id: "q1", model: "m", turns_dropped: 0, request_id: null });
    expect(state.messages.map((m) => [m.id, m.status])).toEqual([["q1", "complete"], ["ans", "streaming"]]);
    expect(state.streamingId).toBe("ans");
    state = run(
      state,
      { type: "token", message_id: "ans", seq: 1, delta: "Hel" },
      { type: "token", message_id: "ans", seq: 2, delta: "lo" },
      { type: "done", message_id: "ans", status: "complete", usage, timings },
    );
    const answer = state.messages.at(-1)!;
    expect(answer.content).toBe("Hello");
    expect(answer.status).toBe("complete");
    expect(answer.usage).toEqual(usage);
    expect(answer.timings).toEqual(timings);
    expect(state.streamingId).toBeNull();
  });

  it("a token changes only the streamed answer: every other message keeps its identity", () => {
    let state = run(initialChatState, history(stored("a", 1, "user", "q"), stored("b", 2, "assistant", "x")));
    state = run(asked(state), { type: "start", message_id: "ans", user_message_id: "q2", model: "m", turns_dropped: 0, request_id: null });
    const before = state.messages;
    const after = run(state, { type: "token", message_id: "ans", seq: 1, delta: "a" }).messages;
    expect(after).not.toBe(before);
    expect(after.slice(0, -1).every((m, i) => m === before[i])).toBe(true);
    expect(after.at(-1)).not.toBe(before.at(-1));
  });

  it("a repeated token sequence number is ignored", () => {
    let state = run(asked(), { type: "start", message_id: "ans", user_message_id: "q", model: "m", turns_dropped: 0, request_id: null });
    state = run(state, { type: "token", message_id: "ans", seq: 1, delta: "a" }, { type: "token", message_id: "ans", seq: 1, delta: "a" });
    expect(state.messages.at(-1)!.content).toBe("a");
  });

  it("stopped and failed answers keep their status and error code", () => {
    let state = run(asked(), { type: "start", message_id: "ans", user_message_id: "q", model: "m", turns_dropped: 0, request_id: null });
    state = run(
      state,
      { type: "error", message_id: "ans", error: { code: "model_unavailable", message: "down", type: "server_error", param: null } },
      { type: "done", message_id: "ans", status: "failed", usage, timings },
    );
    const answer = state.messages.at(-1)!;
    expect([answer.status, answer.errorCode, answer.error?.message]).toEqual(["failed", "model_unavailable", "down"]);
  });

  it("an error before start marks the question rejected and is shown", () => {
    const error = { code: "knowledge_base_not_found", message: "no such", type: "invalid_request_error", param: null };
    const state = run(asked(), { type: "error", message_id: null, error });
    expect(state.messages.at(-1)!.status).toBe("rejected");
    expect(state.messages.at(-1)!.errorCode).toBe("knowledge_base_not_found");
    expect(state.error).toEqual(error);
    expect(state.sending).toBe(false);
    expect(chatReducer(state, { type: "dismiss_error" }).error).toBeNull();
  });

  it("images describe the question, sources and tools belong to the answer", () => {
    let state = run(asked(), { type: "start", message_id: "ans", user_message_id: "q", model: "m", turns_dropped: 1, request_id: null });
    const source = { n: 1, knowledge_base: "kb", document_id: "d", document_name: "doc.md", chunk_id: "c", page: 2, section: "S", score: 0.1, snippet: "s", text: "t" };
    state = run(
      state,
      { type: "images", message_id: "ans", images: [{ id: "img", name: "a.png", description: "Text (OCR): 42" }] },
      { type: "sources", message_id: "ans", sources: [source] },
      { type: "tool_call", message_id: "ans", id: "c1", name: "demo__add", arguments: { a: 1 } },
    );
    expect(state.messages.at(-1)!.toolCalls[0]!.ok).toBeNull();
    state = run(state, { type: "tool_result", message_id: "ans", id: "c1", name: "demo__add", ok: true, content: "5", error_code: "", truncated: false });
    const [question, answer] = state.messages;
    expect(question!.images[0]!.description).toBe("Text (OCR): 42");
    expect(answer!.sources).toEqual([source]);
    expect(answer!.toolCalls).toEqual([{ id: "c1", name: "demo__add", arguments: { a: 1 }, ok: true, content: "5", error_code: "", truncated: false }]);
    expect(answer!.turnsDropped).toBe(1);
  });

  it("a reconnect's history replaces a half-streamed answer with the stored one", () => {
    let state = run(asked(), { type: "start", message_id: "ans", user_message_id: "q", model: "m", turns_dropped: 0, request_id: null });
    state = run(state, { type: "token", message_id: "ans", seq: 1, delta: "par" });
    state = run(state, history(stored("q", 1, "user", "hi"), stored("ans", 2, "assistant", "par", { status: "interrupted" })));
    expect(state.streamingId).toBeNull();
    expect(state.messages.at(-1)!.status).toBe("interrupted");
  });

  it("earlier messages go before the ones shown, without duplicates", () => {
    let state = run(initialChatState, history(stored("c", 3, "user", "q"), stored("d", 4, "assistant", "a")));
    expect(hasEarlier(state)).toBe(true);
    state = chatReducer(state, { type: "earlier", messages: [stored("a", 1, "user", "x"), stored("b", 2, "assistant", "y"), stored("c", 3, "user", "q")] });
    expect(state.messages.map((m) => m.id)).toEqual(["a", "b", "c", "d"]);
    expect(hasEarlier(state)).toBe(false);
  });

  it("events for unknown messages and pongs change nothing", () => {
    const state = run(initialChatState, history());
    expect(run(state, { type: "token", message_id: "nope", seq: 1, delta: "x" }, { type: "pong" }).messages).toBe(state.messages);
  });
});
