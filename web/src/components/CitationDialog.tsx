import { useEffect, useRef } from "react";
import type { Citation } from "../api/types";

/** The source behind a [n]: document, page, section and the passage (all shown as plain text). */
export function CitationDialog({ citation, onClose }: { citation: Citation | null; onClose: () => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const el = dialog.current;
    if (!el) return;
    if (citation && !el.open) el.showModal();
    if (!citation && el.open) el.close();
  }, [citation]);
  return (
    <dialog ref={dialog} className="dialog citation-dialog" aria-labelledby="citation-title" onClose={onClose}>
      {citation && (
        <>
          <header className="dialog-head">
            <h2 id="citation-title">Source [{citation.n}]</h2>
            <button type="button" className="icon-button" aria-label="Close source" onClick={onClose}>
              ×
            </button>
          </header>
          <dl className="citation-meta">
            <dt>Document</dt>
            <dd className="citation-document">{citation.document_name}</dd>
            <dt>Knowledge base</dt>
            <dd>{citation.knowledge_base}</dd>
            {citation.page != null && (
              <>
                <dt>Page</dt>
                <dd>{citation.page}</dd>
              </>
            )}
            {citation.section && (
              <>
                <dt>Section</dt>
                <dd>{citation.section}</dd>
              </>
            )}
          </dl>
          <blockquote className="citation-text">{citation.text || citation.snippet}</blockquote>
        </>
      )}
    </dialog>
  );
}
