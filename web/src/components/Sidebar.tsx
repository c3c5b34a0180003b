import { useState, type FormEvent, type MouseEvent } from "react";
import type { SessionOut } from "../api/types";
import { pathOfSession } from "../route";
import { PencilIcon, TrashIcon } from "./Icons";

interface Props {
  sessions: SessionOut[];
  current: string | null;
  hasMore: boolean;
  loading: boolean;
  onOpen: (id: string | null) => void;
  onMore: () => void;
  onRename: (id: string, title: string) => Promise<void>;
  onDelete: (id: string) => Promise<void>;
}

export function Sidebar({ sessions, current, hasMore, loading, onOpen, onMore, onRename, onDelete }: Props) {
  const follow = (id: string | null) => (event: MouseEvent<HTMLAnchorElement>) => {
    // Plain clicks route in the page; modified ones (new tab, say) go to the browser.
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    onOpen(id);
  };
  return (
    <nav className="sidebar-nav" aria-label="Chats">
      <a className="button primary new-chat" href="/" onClick={follow(null)}>
        + New chat
      </a>
      <h2 className="visually-hidden">Your chats</h2>
      {sessions.length === 0 && !loading && <p className="meta">No chats yet.</p>}
      <ul className="session-list">
        {sessions.map((session) => (
          <SessionItem
            key={session.id}
            session={session}
            current={session.id === current}
            onFollow={follow(session.id)}
            onRename={onRename}
            onDelete={onDelete}
          />
        ))}
      </ul>
      {hasMore && (
        <button type="button" className="secondary" onClick={onMore} disabled={loading}>
          {loading ? "Loading…" : "Older chats"}
        </button>
      )}
    </nav>
  );
}

function SessionItem({
  session,
  current,
  onFollow,
  onRename,
  onDelete,
}: {
  session: SessionOut;
  current: boolean;
  onFollow: (event: MouseEvent<HTMLAnchorElement>) => void;
  onRename: (id: string, title: string) => Promise<void>;
  onDelete: (id: string) => Promise<void>;
}) {
  const [editing, setEditing] = useState(false);
  const [title, setTitle] = useState(session.title);
  const [confirming, setConfirming] = useState(false);

  const save = async (event: FormEvent) => {
    event.preventDefault();
    const trimmed = title.trim();
    if (trimmed && trimmed !== session.title) await onRename(session.id, trimmed);
    setEditing(false);
  };

  if (editing) {
    return (
      <li className="session editing">
        <form onSubmit={save} className="rename-form">
          <label className="visually-hidden" htmlFor={`rename-${session.id}`}>
            Chat title
          </label>
          <input
            id={`rename-${session.id}`}
            value={title}
            maxLength={200}
            autoFocus
            onChange={(event) => setTitle(event.target.value)}
            onKeyDown={(event) => event.key === "Escape" && setEditing(false)}
          />
          <button type="submit" className="secondary small">
            Save
          </button>
          <button type="button" className="link-button small" onClick={() => setEditing(false)}>
            Cancel
          </button>
        </form>
      </li>
    );
  }
  return (
    <li className={`session${current ? " current" : ""}`}>
      <a href={pathOfSession(session.id)} aria-current={current ? "page" : undefined} onClick={onFollow} title={session.title}>
        {session.title}
      </a>
      <span className="session-actions">
        <button
          type="button"
          className="icon-button"
          aria-label={`Rename ${session.title}`}
          onClick={() => {
            setTitle(session.title);
            setEditing(true);
          }}
        >
          <PencilIcon />
        </button>
        {confirming ? (
          <>
            <button type="button" className="danger small" onClick={() => void onDelete(session.id)} autoFocus>
              Delete
            </button>
            <button type="button" className="link-button small" onClick={() => setConfirming(false)}>
              Keep
            </button>
          </>
        ) : (
          <button type="button" className="icon-button" aria-label={`Delete ${session.title}`} onClick={() => setConfirming(true)}>
            <TrashIcon />
          </button>
        )}
      </span>
    </li>
  );
}
