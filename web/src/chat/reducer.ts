// The one place socket events change the page's state: a pure (state, action) → state function,
// unit-tested without a browser (test/reducer.test.ts). Streaming replaces only the answer being
// streamed: every other message keeps its identity, so memoized message components skip them.
import type {
  Citation,
  ErrorBody,
  ImageDescription,
  MessageRecord,
  ServerEvent,
  SessionOut,
  Timings,
  ToolActivity,
  Usage,
} from "../api/types";

export interface ChatMessage {
  id: string;
  seq: number | null; // null until the server has stored it
  role: string;
  content: string;
  /** complete | streaming | stopped | interrupted | failed; `sending` and `rejected` exist only here. */
  status: string;
  model: string;
  errorCode: string;
  error: ErrorBody | null;
  sources: Citation[];
  images: ImageDescription[];
  toolCalls: ToolActivity[];
  promptTokens: number;
  completionTokens: number;
  usage: Usage | null;
  timings: Timings | null;
  turnsDropped: number;
  lastSeq: number; // the last token's sequence number (a repeated one is ignored)
}

export interface ChatState {
  session: SessionOut | null;
  messages: ChatMessage[];
  streamingId: string | null; // the answer being streamed
  sending: boolean; // a message went out and its `start` has not come yet
  error: ErrorBody | null; // the last error that concerns no answer (a rejected message, say)
  loaded: boolean; // the first history has arrived
}

export type ChatAction =
  | { type: "events"; events: ServerEvent[] }
  | { type: "sent"; localId: string; content: string; model: string; images: ImageDescription[] }
  | { type: "earlier"; messages: MessageRecord[] }
  | { type: "dismiss_error" };

export const initialChatState: ChatState = {
  session: null,
  messages: [],
  streamingId: null,
  sending: false,
  error: null,
  loaded: false,
};

export function messageOf(m: MessageRecord): ChatMessage {
  return {
    id: m.id,
    seq: m.seq,
    role: m.role,
    content: m.content,
    status: m.status,
    model: m.model,
    errorCode: m.error_code,
    error: null,
    sources: m.sources ?? [],
    // REST pages may leave defaulted fields out; the socket always sends them.
    images: (m.images ?? []).map((i) => ({ ...i, description: i.description ?? "" })),
    toolCalls: (m.tool_calls ?? []).map((t) => ({
      id: t.id,
      name: t.name,
      arguments: t.arguments ?? {},
      ok: t.ok ?? null,
      content: t.content ?? "",
      error_code: t.error_code ?? "",
      truncated: t.truncated ?? false,
    })),
    promptTokens: m.prompt_tokens,
    completionTokens: m.completion_tokens,
    usage: null,
    timings: null,
    turnsDropped: 0,
    lastSeq: 0,
  };
}

function blank(id: string, role: string, status: string, model: string): ChatMessage {
  return {
    id, seq: null, role, content: "", status, model, errorCode: "", error: null, sources: [], images: [],
    toolCalls: [], promptTokens: 0, completionTokens: 0, usage: null, timings: null, turnsDropped: 0, lastSeq: 0,
  };
}

/** A copy of the list with message `id` changed by `change`; the last message is looked at first. */
function update(messages: ChatMessage[], id: string, change: (m: ChatMessage) => ChatMessage): ChatMessage[] {
  let index = messages.length - 1;
  if (messages[index]?.id !== id) index = messages.findIndex((m) => m.id === id);
  const current = messages[index];
  if (current === undefined) return messages;
  const next = messages.slice();
  next[index] = change(current);
  return next;
}

export function applyEvent(state: ChatState, event: ServerEvent): ChatState {
  switch (event.type) {
    case "history":
      return {
        ...state,
        session: event.session,
        messages: event.messages.map(messageOf),
        streamingId: null,
        sending: false,
        loaded: true,
      };
    case "start": {
      // The question was stored: the local copy takes its id; the answer starts empty.
      let messages = state.messages;
      const local = messages.findLastIndex((m) => m.status === "sending");
      if (local >= 0) {
        messages = messages.slice();
        messages[local] = { ...messages[local]!, id: event.user_message_id, status: "complete" };
      }
      const answer = { ...blank(event.message_id, "assistant", "streaming", event.model), turnsDropped: event.turns_dropped };
      return { ...state, messages: [...messages, answer], streamingId: event.message_id, sending: false };
    }
    case "images": {
      // The descriptions belong to the question, the message before the answer.
      const at = state.messages.findIndex((m) => m.id === event.message_id);
      const question = at > 0 ? state.messages[at - 1] : undefined;
      if (question === undefined || question.role !== "user") return state;
      return { ...state, messages: update(state.messages, question.id, (m) => ({ ...m, images: event.images })) };
    }
    case "sources":
      return { ...state, messages: update(state.messages, event.message_id, (m) => ({ ...m, sources: event.sources })) };
    case "tool_call":
      return {
        ...state,
        messages: update(state.messages, event.message_id, (m) => ({
          ...m,
          toolCalls: [
            ...m.toolCalls,
            { id: event.id, name: event.name, arguments: event.arguments, ok: null, content: "", error_code: "", truncated: false },
          ],
        })),
      };
    case "tool_result":
      return {
        ...state,
        messages: update(state.messages, event.message_id, (m) => {
          const result = { ok: event.ok, content: event.content, error_code: event.error_code, truncated: event.truncated };
          const known = m.toolCalls.some((call) => call.id === event.id);
          const toolCalls = known
            ? m.toolCalls.map((call) => (call.id === event.id ? { ...call, ...result } : call))
            : [...m.toolCalls, { id: event.id, name: event.name, arguments: {}, ...result }];
          return { ...m, toolCalls };
        }),
      };
    case "token":
      return {
        ...state,
        messages: update(state.messages, event.message_id, (m) =>
          event.seq <= m.lastSeq ? m : { ...m, content: m.content + event.delta, lastSeq: event.seq },
        ),
      };
    case "done":
      return {
        ...state,
        streamingId: state.streamingId === event.message_id ? null : state.streamingId,
        messages: update(state.messages, event.message_id, (m) => ({
          ...m,
          status: event.status,
          usage: event.usage,
          timings: event.timings,
          promptTokens: event.usage.prompt_tokens,
          completionTokens: event.usage.completion_tokens,
        })),
      };
    case "error": {
      if (event.message_id) {
        const id = event.message_id;
        return {
          ...state,
          messages: update(state.messages, id, (m) => ({ ...m, error: event.error, errorCode: event.error.code })),
        };
      }
      // Not about an answer: a message the server refused before starting (nothing was stored),
      // or a frame it could not read.
      let messages = state.messages;
      if (state.sending) {
        const local = messages.findLastIndex((m) => m.status === "sending");
        if (local >= 0) {
          messages = messages.slice();
          messages[local] = { ...messages[local]!, status: "rejected", error: event.error, errorCode: event.error.code };
        }
      }
      return { ...state, messages, sending: false, error: event.error };
    }
    case "pong":
      return state;
    default:
      return state;
  }
}

export function chatReducer(state: ChatState, action: ChatAction): ChatState {
  switch (action.type) {
    case "events":
      return action.events.reduce(applyEvent, state);
    case "sent": {
      const question = { ...blank(action.localId, "user", "sending", action.model), content: action.content, images: action.images };
      return { ...state, messages: [...state.messages, question], sending: true, error: null };
    }
    case "earlier": {
      const first = state.messages.find((m) => m.seq !== null)?.seq ?? Number.POSITIVE_INFINITY;
      const older = action.messages.filter((m) => m.seq < first).map(messageOf);
      return older.length ? { ...state, messages: [...older, ...state.messages] } : state;
    }
    case "dismiss_error":
      return { ...state, error: null };
  }
}

/** Whether messages older than the first one shown exist (the history event holds the most recent). */
export function hasEarlier(state: ChatState): boolean {
  const first = state.messages.find((m) => m.seq !== null);
  return first !== undefined && first.seq !== null && first.seq > 1;
}
