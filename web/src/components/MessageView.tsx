import { memo, useMemo, useState } from "react";
import type { Citation, ToolActivity } from "../api/types";
import type { ChatMessage } from "../chat/reducer";
import { countMessageRender } from "../stats";
import { Markdown } from "./Markdown";
import { Thumbnail } from "./Thumbnail";

interface Props {
  message: ChatMessage;
  streaming: boolean;
  onCite: (citation: Citation) => void;
}

const STATUS_TEXT: Record<string, string> = {
  stopped: "Stopped",
  interrupted: "Interrupted: the connection dropped before the answer finished",
  failed: "Failed",
  rejected: "Not sent",
};

/** One message. Memoized: while an answer streams, only that answer's component renders. */
export const MessageView = memo(function MessageView({ message, streaming, onCite }: Props) {
  countMessageRender(message.id);
  return message.role === "user" ? (
    <Question message={message} />
  ) : (
    <Answer message={message} streaming={streaming} onCite={onCite} />
  );
});

function Question({ message }: { message: ChatMessage }) {
  return (
    <article className="message question" aria-label="You said" data-status={message.status}>
      {message.images.length > 0 && (
        <div className="attachments">
          {message.images.map((image) => (
            <figure key={image.id} className="attachment">
              <Thumbnail id={image.id} name={image.name} />
              <figcaption>{image.name}</figcaption>
            </figure>
          ))}
        </div>
      )}
      {/* Plain text: the user's own words are never parsed as Markdown or HTML. */}
      <p className="question-text">{message.content}</p>
      {message.images
        .filter((image) => image.description)
        .map((image) => (
          <details key={image.id} className="image-description">
            <summary>What the model was told about {image.name || "the image"}</summary>
            <pre>{image.description}</pre>
          </details>
        ))}
      {message.status === "sending" && <p className="meta">Sending…</p>}
      <StatusLine message={message} streaming={false} />
    </article>
  );
}

function Answer({ message, streaming, onCite }: Props) {
  const citations = useMemo(() => new Set(message.sources.map((s) => s.n)), [message.sources]);
  const cite = (n: number) => {
    const source = message.sources.find((s) => s.n === n);
    if (source) onCite(source);
  };
  return (
    <article
      className="message answer"
      aria-label={`Answer from ${message.model || "the model"}`}
      aria-busy={streaming}
      data-status={message.status}
      data-message-id={message.id}
    >
      <p className="answer-model">{message.model}</p>
      {message.toolCalls.map((call) => (
        <ToolCard key={call.id} call={call} />
      ))}
      {message.content ? (
        <Markdown text={message.content} citations={citations} onCite={cite} />
      ) : streaming ? (
        <p className="meta thinking">Thinking…</p>
      ) : null}
      {message.sources.length > 0 && (
        <div className="sources">
          <span className="sources-label">Sources</span>
          <ul>
            {message.sources.map((source) => (
              <li key={source.n}>
                <button type="button" className="source-chip" onClick={() => onCite(source)}>
                  <span className="source-n">[{source.n}]</span> {source.document_name}
                  {source.page != null && <span className="meta"> p. {source.page}</span>}
                </button>
              </li>
            ))}
          </ul>
        </div>
      )}
      <StatusLine message={message} streaming={streaming} />
      {!streaming && <Details message={message} />}
    </article>
  );
}

function StatusLine({ message, streaming }: { message: ChatMessage; streaming: boolean }) {
  // "streaming" in a stored history, with no tokens coming here: another connection has it.
  const text = message.status === "streaming" && !streaming ? "Still being written; refreshing…" : STATUS_TEXT[message.status];
  if (!text && !message.error && !message.errorCode) return null;
  const code = message.error?.code ?? message.errorCode;
  return (
    <p className={`status status-${message.status}`} role={message.status === "failed" || message.status === "rejected" ? "alert" : undefined}>
      {text ?? "Error"}
      {message.error?.message && <span>: {message.error.message}</span>}
      {code && (
        <>
          {" "}
          <code className="error-code">{code}</code>
        </>
      )}
    </p>
  );
}

function Details({ message }: { message: ChatMessage }) {
  const [open, setOpen] = useState(false);
  if (message.status === "sending" || message.status === "rejected") return null;
  const t = message.timings;
  return (
    <div className="details">
      <button type="button" className="link-button" aria-expanded={open} onClick={() => setOpen(!open)}>
        {open ? "Hide usage" : "Usage"}
      </button>
      {open && (
        <dl className="usage">
          <dt>Prompt tokens</dt>
          <dd>{message.promptTokens}</dd>
          <dt>Answer tokens</dt>
          <dd>{message.completionTokens}</dd>
          {message.turnsDropped > 0 && (
            <>
              <dt>Older turns left out</dt>
              <dd>{message.turnsDropped}</dd>
            </>
          )}
          {t && (
            <>
              <dt>First token</dt>
              <dd>{t.time_to_first_token_ms == null ? "—" : `${Math.round(t.time_to_first_token_ms)} ms`}</dd>
              <dt>Total</dt>
              <dd>{Math.round(t.total_ms)} ms</dd>
              <dt>Speed</dt>
              <dd>{t.tokens_per_second == null ? "—" : `${t.tokens_per_second.toFixed(1)} tokens/s`}</dd>
            </>
          )}
        </dl>
      )}
    </div>
  );
}

function ToolCard({ call }: { call: ToolActivity }) {
  const state = call.ok == null ? "running" : call.ok ? "ok" : "failed";
  const label = state === "running" ? "running…" : state === "ok" ? "done" : `failed (${call.error_code || "error"})`;
  return (
    <details className={`tool-card tool-${state}`}>
      <summary>
        Tool <code>{call.name}</code> <span className="tool-state">{label}</span>
      </summary>
      <div className="tool-body">
        <p className="tool-heading">Arguments</p>
        <pre>{JSON.stringify(call.arguments, null, 2)}</pre>
        {call.ok != null && (
          <>
            <p className="tool-heading">Result{call.truncated ? " (cut short)" : ""}</p>
            <pre>{call.content || "(empty)"}</pre>
          </>
        )}
      </div>
    </details>
  );
}
