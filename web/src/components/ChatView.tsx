import { useCallback, useEffect, useLayoutEffect, useReducer, useRef, useState } from "react";
import { api } from "../api/client";
import { socketUrl } from "../api/auth";
import { ChatConnection, type ConnectionStatus } from "../api/socket";
import type { Citation, GenerationOptions, ModelOut, SessionOut, UserMessage } from "../api/types";
import { chatReducer, hasEarlier, initialChatState } from "../chat/reducer";
import { stats } from "../stats";
import { Composer, type ComposerSettings, type Draft } from "./Composer";
import { MessageView } from "./MessageView";
import type { KnowledgeBaseOut } from "../api/types";

interface Props {
  sessionId: string | null;
  model: ModelOut | undefined;
  knowledgeBases: KnowledgeBaseOut[];
  settings: ComposerSettings;
  onSettings: (settings: ComposerSettings) => void;
  /** A message typed before the session existed: sent once the socket is open. */
  initialMessage: UserMessage | null;
  onInitialSent: () => void;
  onCreate: (title: string, message: UserMessage, draft: Draft) => Promise<void>;
  onSessionChanged: (session: SessionOut) => void;
  onUnauthenticated: () => void;
  onCite: (citation: Citation) => void;
}

function messageOf(draft: Draft, model: ModelOut | undefined, settings: ComposerSettings): UserMessage {
  const options: GenerationOptions = {};
  const temperature = Number.parseFloat(settings.temperature);
  const maxTokens = Number.parseInt(settings.maxTokens, 10);
  if (Number.isFinite(temperature)) options.temperature = temperature;
  if (Number.isFinite(maxTokens) && maxTokens > 0) options.max_tokens = maxTokens;
  return {
    type: "message",
    content: draft.content,
    model: model?.name ?? null,
    knowledge_bases: settings.knowledgeBases,
    image_ids: draft.images.map((image) => image.id),
    tools: settings.tools && (model?.capabilities.includes("tools") ?? false),
    options,
  };
}

export function ChatView(props: Props) {
  const { sessionId, model, initialMessage, onInitialSent, onSessionChanged, onUnauthenticated } = props;
  const [state, dispatch] = useReducer(chatReducer, initialChatState);
  const [status, setStatus] = useState<ConnectionStatus>({ state: sessionId ? "connecting" : "closed", attempt: 0 } as ConnectionStatus);
  const connection = useRef<ChatConnection | null>(null);
  const initial = useRef(initialMessage);
  const scroller = useRef<HTMLDivElement>(null);
  const pinned = useRef(true);

  useEffect(() => {
    if (!sessionId) return;
    const socket = new ChatConnection({
      url: () => socketUrl(sessionId),
      onEvents: (events) => {
        stats.eventBatches += 1;
        stats.events += events.length;
        dispatch({ type: "events", events });
      },
      onStatus: setStatus,
    });
    connection.current = socket;
    socket.start();
    return () => {
      socket.close();
      connection.current = null;
    };
  }, [sessionId]);

  useEffect(() => {
    if (status.state === "unauthenticated") onUnauthenticated();
  }, [status.state, onUnauthenticated]);

  // The first history arrived: send what was typed before the session existed.
  useEffect(() => {
    const pending = initial.current;
    if (!state.loaded || !pending || !connection.current) return;
    initial.current = null;
    if (connection.current.send(pending)) {
      dispatch({ type: "sent", localId: `local-${Date.now()}`, content: pending.content, model: pending.model ?? "", images: (pending.image_ids ?? []).map((id) => ({ id, name: "", description: "" })) });
    }
    onInitialSent();
  }, [state.loaded, onInitialSent]);

  // An answer the history shows as still streaming, that this socket gets no tokens of (it was
  // cut by a dropped connection and is being stored as interrupted, or another tab is writing
  // it): ask again for the history until it has finished, a little less often each time.
  const last = state.messages.at(-1);
  const orphan = state.loaded && state.streamingId === null && !state.sending && last?.role === "assistant" && last.status === "streaming";
  const refreshes = useRef(0);
  useEffect(() => {
    if (!orphan) {
      refreshes.current = 0;
      return;
    }
    const delay = Math.min(8000, 1000 * 2 ** refreshes.current);
    const timer = window.setTimeout(() => {
      refreshes.current += 1;
      connection.current?.refresh();
    }, delay);
    return () => window.clearTimeout(timer);
  }, [orphan, state.messages]);

  // Keep the sidebar right (newest first): the history names the session, and a finished
  // answer makes it the most recently updated one.
  useEffect(() => {
    if (state.session) onSessionChanged(state.session);
  }, [state.session, onSessionChanged]);
  const wasStreaming = useRef(false);
  useEffect(() => {
    const streamingNow = state.streamingId !== null;
    if (wasStreaming.current && !streamingNow && state.session) {
      onSessionChanged({ ...state.session, updated_at: Date.now() / 1000 });
    }
    wasStreaming.current = streamingNow;
  }, [state.streamingId, state.session, onSessionChanged]);

  // Follow the stream while the reader is at the bottom; leave them be when they scrolled up.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && pinned.current) el.scrollTop = el.scrollHeight;
  }, [state.messages]);
  const onScroll = () => {
    const el = scroller.current;
    if (el) pinned.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  };

  const send = useCallback(
    async (draft: Draft): Promise<boolean> => {
      const message = messageOf(draft, model, props.settings);
      if (!sessionId) {
        await props.onCreate(draft.content, message, draft);
        return true;
      }
      if (!connection.current?.send(message)) return false;
      pinned.current = true;
      dispatch({ type: "sent", localId: `local-${Date.now()}`, content: draft.content, model: model?.name ?? "", images: draft.images });
      return true;
    },
    [sessionId, model, props],
  );
  const stop = useCallback(() => connection.current?.send({ type: "stop" }), []);

  const [loadingEarlier, setLoadingEarlier] = useState(false);
  const loadEarlier = async () => {
    if (!sessionId) return;
    setLoadingEarlier(true);
    try {
      // Messages page oldest first: read pages until the ones already shown.
      const first = state.messages.find((m) => m.seq !== null)?.seq ?? Number.POSITIVE_INFINITY;
      let cursor: string | null = null;
      const older = [];
      do {
        const page = await api.messages(sessionId, cursor);
        older.push(...page.items.filter((m) => m.seq < first));
        cursor = page.items.some((m) => m.seq >= first) ? null : page.next_cursor;
      } while (cursor);
      dispatch({ type: "earlier", messages: older });
    } finally {
      setLoadingEarlier(false);
    }
  };

  const streaming = state.streamingId !== null || state.sending;
  const connected = sessionId === null || status.state === "open";

  return (
    <div className="chat">
      <div className="transcript-scroll" ref={scroller} onScroll={onScroll}>
        <div className="transcript" role="log" aria-label="Conversation" aria-relevant="additions text">
          {!sessionId && <Welcome />}
          {sessionId && state.loaded && state.messages.length === 0 && !state.sending && (
            <p className="empty">No messages yet. Ask something below.</p>
          )}
          {hasEarlier(state) && (
            <button type="button" className="secondary earlier" onClick={loadEarlier} disabled={loadingEarlier}>
              {loadingEarlier ? "Loading…" : "Show earlier messages"}
            </button>
          )}
          {state.messages.map((message) => (
            <MessageView key={message.id} message={message} streaming={message.id === state.streamingId} onCite={props.onCite} />
          ))}
        </div>
      </div>
      <ConnectionBanner status={status} onRetry={() => connection.current?.retry()} />
      {state.error && (
        <div className="banner error" role="alert">
          <span>
            {state.error.message} <code className="error-code">{state.error.code}</code>
          </span>
          <button type="button" className="link-button" onClick={() => dispatch({ type: "dismiss_error" })}>
            Dismiss
          </button>
        </div>
      )}
      <Composer
        model={model}
        knowledgeBases={props.knowledgeBases}
        settings={props.settings}
        onSettings={props.onSettings}
        streaming={streaming}
        connected={connected}
        onSend={send}
        onStop={stop}
      />
    </div>
  );
}

function Welcome() {
  return (
    <div className="welcome">
      <h2>What can I help with?</h2>
      <p>
        Pick a model above, choose knowledge bases to answer from under <strong>Knowledge</strong>, attach an image, and ask.
      </p>
    </div>
  );
}

function ConnectionBanner({ status, onRetry }: { status: ConnectionStatus; onRetry: () => void }) {
  if (status.state === "waiting") {
    return (
      <div className="banner warning" role="status">
        <span>Connection lost. Reconnecting in {Math.ceil(status.delayMs / 1000)} s…</span>
        <button type="button" className="link-button" onClick={onRetry}>
          Retry now
        </button>
      </div>
    );
  }
  if (status.state === "connecting" && status.attempt > 0) {
    return (
      <div className="banner warning" role="status">
        Reconnecting…
      </div>
    );
  }
  if (status.state === "not_found") {
    return (
      <div className="banner error" role="alert">
        This chat does not exist, or belongs to someone else. <code className="error-code">session_not_found</code>{" "}
        <a href="/">Start a new chat</a>
      </div>
    );
  }
  if (status.state === "unauthenticated") {
    return (
      <div className="banner error" role="alert">
        The API key was not accepted. <code className="error-code">unauthenticated</code>
      </div>
    );
  }
  return null;
}
