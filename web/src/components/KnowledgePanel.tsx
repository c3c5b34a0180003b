import { useCallback, useEffect, useId, useRef, useState, type DragEvent } from "react";
import { ApiError, api } from "../api/client";
import type { DocumentOut, KnowledgeBaseOut } from "../api/types";
import { TrashIcon } from "./Icons";

const PENDING = new Set(["queued", "parsing", "embedding", "deleting"]);
const POLL_MS = 1000;

interface Props {
  open: boolean;
  knowledgeBases: KnowledgeBaseOut[];
  onClose: () => void;
  onChanged: () => void; // document counts changed: reload the knowledge bases
}

/** Upload documents to a knowledge base (several at once), watch their ingestion, delete them. */
export function KnowledgePanel({ open, knowledgeBases, onClose, onChanged }: Props) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [selected, setSelected] = useState<string>("");
  const [documents, setDocuments] = useState<DocumentOut[]>([]);
  const [progress, setProgress] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [confirm, setConfirm] = useState<string | null>(null);
  const ids = useId();
  const kb = knowledgeBases.find((k) => k.name === selected) ?? knowledgeBases[0];

  useEffect(() => {
    const el = dialog.current;
    if (!el) return;
    if (open && !el.open) el.showModal();
    if (!open && el.open) el.close();
  }, [open]);

  const refresh = useCallback(async () => {
    if (!kb) return;
    try {
      const documents: DocumentOut[] = [];
      let cursor: string | null = null;
      do {
        const page = await api.documents(kb.name, cursor);
        documents.push(...page.items);
        cursor = page.next_cursor;
      } while (cursor && documents.length < 1000);
      setDocuments(documents);
    } catch (e) {
      setError(describe(e));
    }
  }, [kb]);

  useEffect(() => {
    if (open) void refresh();
  }, [open, refresh]);

  // Live ingestion status: poll while anything is on its way.
  const pending = documents.some((d) => PENDING.has(d.status));
  useEffect(() => {
    if (!open || !pending) return;
    const timer = window.setTimeout(async () => {
      await refresh();
      onChanged();
    }, POLL_MS);
    return () => window.clearTimeout(timer);
  }, [open, pending, documents, refresh, onChanged]);

  const upload = async (files: File[]) => {
    if (!kb || files.length === 0) return;
    setError(null);
    setProgress(0);
    try {
      await api.uploadDocuments(kb.name, files, setProgress);
      await refresh();
      onChanged();
    } catch (e) {
      setError(describe(e));
    } finally {
      setProgress(null);
    }
  };
  const remove = async (document: DocumentOut) => {
    if (!kb) return;
    setConfirm(null);
    try {
      await api.deleteDocument(kb.name, document.id);
      await refresh();
      onChanged();
    } catch (e) {
      setError(describe(e));
    }
  };
  const onDrop = (event: DragEvent<HTMLDivElement>) => {
    event.preventDefault();
    void upload([...event.dataTransfer.files]);
  };

  return (
    <dialog ref={dialog} className="dialog knowledge-dialog" aria-labelledby={`${ids}-title`} onClose={onClose}>
      <header className="dialog-head">
        <h2 id={`${ids}-title`}>Knowledge bases</h2>
        <button type="button" className="icon-button" aria-label="Close knowledge bases" onClick={onClose}>
          ×
        </button>
      </header>
      {knowledgeBases.length === 0 ? (
        <p>No knowledge bases are readable by you.</p>
      ) : (
        <>
          <label className="field" htmlFor={`${ids}-kb`}>
            Knowledge base
          </label>
          <select id={`${ids}-kb`} value={kb?.name ?? ""} onChange={(event) => setSelected(event.target.value)}>
            {knowledgeBases.map((k) => (
              <option key={k.name} value={k.name}>
                {k.display_name}
              </option>
            ))}
          </select>
          {kb && (
            <p className="meta kb-summary">
              {kb.description && <>{kb.description} · </>}
              {kb.ready ? "ready" : `unavailable: ${kb.reason}`} · {kb.chunks ?? "?"} chunks · embedder {kb.embedding_model}
            </p>
          )}
          {kb?.writable ? (
            <div className="dropzone" onDragOver={(event) => event.preventDefault()} onDrop={onDrop}>
              <label htmlFor={`${ids}-files`}>Upload documents (PDF, DOCX, HTML, Markdown, text, images)</label>
              <input
                id={`${ids}-files`}
                type="file"
                multiple
                disabled={progress !== null || !kb.ready}
                onChange={(event) => {
                  void upload([...(event.target.files ?? [])]);
                  event.target.value = "";
                }}
              />
              <span className="meta">or drop files here</span>
              {progress !== null && <progress max={1} value={progress} aria-label="Uploading documents" />}
            </div>
          ) : (
            kb && <p className="meta">You can read this knowledge base but not add to it.</p>
          )}
          {error && (
            <p className="form-error" role="alert">
              {error}
            </p>
          )}
          <table className="documents">
            <caption className="visually-hidden">Documents of {kb?.display_name}</caption>
            <thead>
              <tr>
                <th scope="col">Document</th>
                <th scope="col">Status</th>
                <th scope="col">Size</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {documents.length === 0 && (
                <tr>
                  <td colSpan={4} className="meta">
                    No documents yet.
                  </td>
                </tr>
              )}
              {documents.map((d) => (
                <tr key={d.id} data-document={d.name}>
                  <td className="document-name">{d.name}</td>
                  <td>
                    <span className={`doc-status doc-${d.status}`}>{d.status}</span>
                    {PENDING.has(d.status) && d.chunks > 0 && (
                      <progress max={d.chunks} value={d.chunks_indexed} aria-label={`Indexing ${d.name}`} />
                    )}
                    {d.status === "failed" && (
                      <span className="meta">
                        {" "}
                        {d.error_message} <code className="error-code">{d.error_code}</code>
                      </span>
                    )}
                    {d.status === "indexed" && <span className="meta"> {d.chunks} chunks</span>}
                  </td>
                  <td>{formatBytes(d.size)}</td>
                  <td>
                    {kb?.writable &&
                      (confirm === d.id ? (
                        <button type="button" className="danger small" onClick={() => void remove(d)} autoFocus>
                          Delete
                        </button>
                      ) : (
                        <button type="button" className="icon-button" aria-label={`Delete ${d.name}`} onClick={() => setConfirm(d.id)}>
                          <TrashIcon />
                        </button>
                      ))}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </dialog>
  );
}

function describe(error: unknown): string {
  return error instanceof ApiError ? `${error.message} (${error.code})` : "something went wrong";
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
