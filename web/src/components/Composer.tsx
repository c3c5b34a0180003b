import { useEffect, useId, useRef, useState, type ClipboardEvent, type DragEvent, type FormEvent, type KeyboardEvent } from "react";
import { ApiError, api } from "../api/client";
import type { ImageDescription, KnowledgeBaseOut, ModelOut } from "../api/types";

export interface Draft {
  content: string;
  images: ImageDescription[];
}

export interface ComposerSettings {
  knowledgeBases: string[];
  temperature: string; // "" = the model's default
  maxTokens: string;
  tools: boolean;
}

interface Attachment {
  key: string;
  file: File;
  preview: string;
  progress: number;
  id: string | null;
  error: string | null;
}

interface Props {
  model: ModelOut | undefined;
  knowledgeBases: KnowledgeBaseOut[];
  settings: ComposerSettings;
  onSettings: (settings: ComposerSettings) => void;
  streaming: boolean;
  connected: boolean;
  onSend: (draft: Draft) => Promise<boolean>;
  onStop: () => void;
}

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"];

export function Composer({ model, knowledgeBases, settings, onSettings, streaming, connected, onSend, onStop }: Props) {
  const [text, setText] = useState("");
  const [attachments, setAttachments] = useState<Attachment[]>([]);
  const [dragging, setDragging] = useState(false);
  const fileInput = useRef<HTMLInputElement>(null);
  const textarea = useRef<HTMLTextAreaElement>(null);
  const ids = useId();

  useEffect(() => textarea.current?.focus(), []);
  // Previews are blob: URLs: free those still held when the composer goes away.
  const previews = useRef<Attachment[]>([]);
  previews.current = attachments;
  useEffect(() => () => previews.current.forEach((a) => URL.revokeObjectURL(a.preview)), []);

  const uploading = attachments.some((a) => a.id === null && a.error === null);
  const canSend = connected && !streaming && !uploading && text.trim() !== "";

  const attach = (files: Iterable<File>) => {
    for (const file of files) {
      if (!IMAGE_TYPES.includes(file.type)) continue;
      const key = `${Date.now()}-${Math.random()}`;
      const entry: Attachment = { key, file, preview: URL.createObjectURL(file), progress: 0, id: null, error: null };
      setAttachments((list) => [...list, entry]);
      const change = (patch: Partial<Attachment>) =>
        setAttachments((list) => list.map((a) => (a.key === key ? { ...a, ...patch } : a)));
      api
        .uploadImage(file, (progress) => change({ progress }))
        .then((image) => change({ id: image.id, progress: 1 }))
        .catch((error: unknown) =>
          change({ error: error instanceof ApiError ? `${error.message} (${error.code})` : "upload failed" }),
        );
    }
  };

  const remove = (key: string) =>
    setAttachments((list) => {
      const gone = list.find((a) => a.key === key);
      if (gone) URL.revokeObjectURL(gone.preview);
      return list.filter((a) => a.key !== key);
    });

  const submit = async (event?: FormEvent) => {
    event?.preventDefault();
    if (!canSend) return;
    const ready = attachments.filter((a) => a.id !== null);
    const draft = { content: text, images: ready.map((a) => ({ id: a.id!, name: a.file.name, description: "" })) };
    if (await onSend(draft)) {
      setText("");
      attachments.forEach((a) => URL.revokeObjectURL(a.preview));
      setAttachments([]);
    }
  };

  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    // Enter sends, Shift+Enter is a newline; an IME composing text keeps its Enter.
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      void submit();
    }
  };
  const onPaste = (event: ClipboardEvent<HTMLTextAreaElement>) => {
    const files = [...event.clipboardData.files].filter((f) => IMAGE_TYPES.includes(f.type));
    if (files.length) {
      event.preventDefault();
      attach(files);
    }
  };
  const onDrop = (event: DragEvent<HTMLFormElement>) => {
    event.preventDefault();
    setDragging(false);
    attach(event.dataTransfer.files);
  };

  const tools = model?.capabilities.includes("tools") ?? false;
  const readyBases = knowledgeBases.filter((kb) => kb.ready);
  const toggleBase = (name: string, on: boolean) =>
    onSettings({
      ...settings,
      knowledgeBases: on ? [...settings.knowledgeBases, name] : settings.knowledgeBases.filter((n) => n !== name),
    });

  return (
    <form
      className={`composer${dragging ? " dragging" : ""}`}
      onSubmit={submit}
      onDragOver={(event) => {
        event.preventDefault();
        setDragging(true);
      }}
      onDragLeave={() => setDragging(false)}
      onDrop={onDrop}
      aria-label="Ask"
    >
      {attachments.length > 0 && (
        <ul className="composer-attachments" aria-label="Attached images">
          {attachments.map((a) => (
            <li key={a.key} className="composer-attachment">
              <img src={a.preview} alt={a.file.name} />
              {a.error ? (
                <span className="attachment-error" role="alert">
                  {a.error}
                </span>
              ) : a.id === null ? (
                <progress max={1} value={a.progress} aria-label={`Uploading ${a.file.name}`} />
              ) : (
                <span className="meta">ready</span>
              )}
              <button type="button" className="icon-button" aria-label={`Remove ${a.file.name}`} onClick={() => remove(a.key)}>
                ×
              </button>
            </li>
          ))}
        </ul>
      )}
      <label htmlFor={`${ids}-text`} className="visually-hidden">
        Message
      </label>
      <textarea
        id={`${ids}-text`}
        ref={textarea}
        className="composer-input"
        rows={2}
        placeholder="Ask anything (Enter sends, Shift+Enter for a new line; paste or drop an image)"
        value={text}
        onChange={(event) => setText(event.target.value)}
        onKeyDown={onKeyDown}
        onPaste={onPaste}
      />
      <div className="composer-bar">
        <input
          ref={fileInput}
          id={`${ids}-file`}
          type="file"
          accept={IMAGE_TYPES.join(",")}
          multiple
          className="visually-hidden"
          tabIndex={-1}
          aria-hidden="true"
          onChange={(event) => {
            attach(event.target.files ?? []);
            event.target.value = "";
          }}
        />
        <button type="button" className="secondary" onClick={() => fileInput.current?.click()}>
          Attach image
        </button>
        <details className="popover">
          <summary>
            Knowledge{settings.knowledgeBases.length ? ` (${settings.knowledgeBases.length})` : ""}
          </summary>
          <fieldset className="popover-body">
            <legend>Answer from these knowledge bases</legend>
            {knowledgeBases.length === 0 && <p className="meta">No knowledge bases are readable by you.</p>}
            {knowledgeBases.map((kb) => (
              <label key={kb.name} className="check">
                <input
                  type="checkbox"
                  checked={settings.knowledgeBases.includes(kb.name)}
                  disabled={!kb.ready}
                  onChange={(event) => toggleBase(kb.name, event.target.checked)}
                />
                {kb.display_name}
                {!kb.ready && <span className="meta"> (unavailable: {kb.reason})</span>}
              </label>
            ))}
            {readyBases.length > 0 && <p className="meta">Answers cite their sources as [n].</p>}
          </fieldset>
        </details>
        <details className="popover">
          <summary>Options</summary>
          <fieldset className="popover-body">
            <legend>For the next messages</legend>
            <label className="field">
              Temperature
              <input
                type="number"
                min={0}
                max={2}
                step={0.1}
                placeholder="model default"
                value={settings.temperature}
                onChange={(event) => onSettings({ ...settings, temperature: event.target.value })}
              />
            </label>
            <label className="field">
              Max tokens
              <input
                type="number"
                min={1}
                max={model?.max_output_tokens}
                step={1}
                placeholder="model default"
                value={settings.maxTokens}
                onChange={(event) => onSettings({ ...settings, maxTokens: event.target.value })}
              />
            </label>
            {tools && (
              <label className="check">
                <input
                  type="checkbox"
                  checked={settings.tools}
                  onChange={(event) => onSettings({ ...settings, tools: event.target.checked })}
                />
                Let the model call tools
              </label>
            )}
          </fieldset>
        </details>
        <span className="spacer" />
        {streaming ? (
          <button type="button" className="stop" onClick={onStop}>
            Stop
          </button>
        ) : (
          <button type="submit" className="primary" disabled={!canSend}>
            Send
          </button>
        )}
      </div>
    </form>
  );
}
