import { useCallback, useEffect, useId, useState } from "react";
import { apiKey, setApiKey } from "./api/auth";
import { ApiError, api, onUnauthenticated } from "./api/client";
import type { Citation, KnowledgeBaseOut, ModelOut, SessionOut, UserMessage } from "./api/types";
import { ChatView } from "./components/ChatView";
import { CitationDialog } from "./components/CitationDialog";
import type { ComposerSettings } from "./components/Composer";
import { MenuIcon } from "./components/Icons";
import { KnowledgePanel } from "./components/KnowledgePanel";
import { Sidebar } from "./components/Sidebar";
import { SignIn } from "./components/SignIn";
import { useSessionRoute } from "./route";

type Auth = { state: "checking" } | { state: "ready" } | { state: "sign-in"; error: string | null };

const TITLE_CHARS = 60;

export function App() {
  const [auth, setAuth] = useState<Auth>({ state: "checking" });
  const [fatal, setFatal] = useState<ApiError | null>(null);
  const [models, setModels] = useState<ModelOut[]>([]);
  const [modelName, setModelName] = useState("");
  const [knowledgeBases, setKnowledgeBases] = useState<KnowledgeBaseOut[]>([]);
  const [sessions, setSessions] = useState<SessionOut[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loadingSessions, setLoadingSessions] = useState(false);
  const [sessionId, navigate] = useSessionRoute();
  const [pending, setPending] = useState<{ session: string; message: UserMessage } | null>(null);
  const [settings, setSettings] = useState<ComposerSettings>({ knowledgeBases: [], temperature: "", maxTokens: "", tools: true });
  const [citation, setCitation] = useState<Citation | null>(null);
  const [knowledgeOpen, setKnowledgeOpen] = useState(false);
  const [sidebarOpen, setSidebarOpen] = useState(false);
  const ids = useId();

  // Any 401 (REST or socket) asks for a key; a key we sent that was refused says so.
  const needKey = useCallback((refused: boolean) => {
    setApiKey(null);
    setAuth((current) => {
      const error = refused ? "That API key was not accepted (unauthenticated)." : null;
      // Several requests fail together: the first one that sent a key has the say.
      if (current.state === "sign-in" && current.error && !error) return current;
      return { state: "sign-in", error };
    });
  }, []);
  useEffect(() => onUnauthenticated((error) => needKey(error.withKey)), [needKey]);
  const socketRefused = useCallback(() => needKey(apiKey() !== null), [needKey]);

  const loadKnowledgeBases = useCallback(async () => {
    try {
      setKnowledgeBases(await api.knowledgeBases());
    } catch {
      // shown where it matters (the panel); chat works without knowledge bases
    }
  }, []);

  const load = useCallback(async () => {
    try {
      const [models, page] = await Promise.all([api.models(), api.sessions()]);
      setModels(models);
      const offered = models.filter(chatCapable);
      const first = offered.find((m) => m.default) ?? offered.find((m) => m.purpose === "general") ?? offered[0];
      setModelName((current) => current || first?.name || "");
      setSessions(page.items);
      setCursor(page.next_cursor);
      setFatal(null);
      setAuth({ state: "ready" });
      void loadKnowledgeBases();
    } catch (error) {
      if (error instanceof ApiError && error.unauthenticated) return; // needKey has run
      setFatal(error instanceof ApiError ? error : new ApiError(0, "network_error", String(error)));
      setAuth({ state: "ready" });
    }
  }, [loadKnowledgeBases]);
  useEffect(() => void load(), [load]);

  const signIn = async (key: string) => {
    setApiKey(key);
    await load();
  };
  const signOut = () => {
    setApiKey(null);
    setSessions([]);
    setAuth({ state: "sign-in", error: null });
    navigate(null);
  };

  const moreSessions = async () => {
    setLoadingSessions(true);
    try {
      const page = await api.sessions(cursor);
      setSessions((list) => [...list, ...page.items.filter((s) => !list.some((o) => o.id === s.id))]);
      setCursor(page.next_cursor);
    } finally {
      setLoadingSessions(false);
    }
  };
  const open = useCallback(
    (id: string | null) => {
      setSidebarOpen(false);
      navigate(id);
    },
    [navigate],
  );
  const rename = async (id: string, title: string) => {
    const session = await api.renameSession(id, title);
    setSessions((list) => list.map((s) => (s.id === id ? session : s)));
  };
  const remove = async (id: string) => {
    await api.deleteSession(id);
    setSessions((list) => list.filter((s) => s.id !== id));
    if (id === sessionId) navigate(null, true);
  };
  const create = useCallback(
    async (content: string, message: UserMessage) => {
      const title = content.replace(/\s+/g, " ").trim().slice(0, TITLE_CHARS) || "New chat";
      const session = await api.createSession(title);
      setSessions((list) => [session, ...list]);
      setPending({ session: session.id, message });
      navigate(session.id);
    },
    [navigate],
  );
  const sessionChanged = useCallback((session: SessionOut) => {
    setSessions((list) => {
      const known = list.find((s) => s.id === session.id);
      if (known && known.updated_at === session.updated_at && known.title === session.title) return list;
      // Newest first, as the API lists them.
      return [session, ...list.filter((s) => s.id !== session.id)].sort((a, b) => b.updated_at - a.updated_at);
    });
  }, []);
  const initialSent = useCallback(() => setPending(null), []);
  const closeCitation = useCallback(() => setCitation(null), []);

  if (auth.state === "checking") return <main className="loading" aria-busy="true">Loading kubechat…</main>;
  if (auth.state === "sign-in") return <SignIn error={auth.error} onSubmit={signIn} />;

  const model = models.find((m) => m.name === modelName);
  const chatModels = models.filter(chatCapable);
  // Benchmark and test models (purpose "development") stay callable, apart from the ones to chat with.
  const forPeople = chatModels.filter((m) => m.purpose === "general");
  const forDevelopment = chatModels.filter((m) => m.purpose !== "general");
  const option = (m: ModelOut) => (
    <option key={m.name} value={m.name}>
      {m.display_name}
      {m.ready ? "" : " (not ready)"}
    </option>
  );
  return (
    <div className={`app${sidebarOpen ? " sidebar-open" : ""}`}>
      <a className="skip-link" href="#composer">
        Skip to the message box
      </a>
      <aside className="sidebar" id={`${ids}-sidebar`}>
        <Sidebar
          sessions={sessions}
          current={sessionId}
          hasMore={cursor !== null}
          loading={loadingSessions}
          onOpen={open}
          onMore={moreSessions}
          onRename={rename}
          onDelete={remove}
        />
      </aside>
      <div className="main">
        <header className="topbar">
          <button
            type="button"
            className="icon-button sidebar-toggle"
            aria-expanded={sidebarOpen}
            aria-controls={`${ids}-sidebar`}
            onClick={() => setSidebarOpen(!sidebarOpen)}
          >
            <MenuIcon />
            <span className="visually-hidden">Chats</span>
          </button>
          <h1 className="brand">kubechat</h1>
          <label className="visually-hidden" htmlFor={`${ids}-model`}>
            Model
          </label>
          <select id={`${ids}-model`} className="model-picker" value={modelName} onChange={(event) => setModelName(event.target.value)}>
            {forPeople.map(option)}
            {forDevelopment.length > 0 && <optgroup label="For development and benchmarks">{forDevelopment.map(option)}</optgroup>}
          </select>
          {model && (
            <span className="model-info" aria-label={`${model.display_name}: ${model.ready ? "ready" : "not ready"}`}>
              <span className={`dot ${model.ready ? "ready" : "not-ready"}`} aria-hidden="true" />
              {model.capabilities.map((c) => (
                <span key={c} className="badge">
                  {c}
                </span>
              ))}
            </span>
          )}
          <span className="spacer" />
          <button type="button" className="secondary" onClick={() => setKnowledgeOpen(true)}>
            Documents
          </button>
          {apiKey() && (
            <button type="button" className="link-button" onClick={signOut}>
              Sign out
            </button>
          )}
        </header>
        {model && !model.ready && (
          <div className="banner warning" role="status">
            {model.display_name} is not ready{model.reason ? `: ${model.reason}` : ""}. {model.message}
          </div>
        )}
        {fatal && (
          <div className="banner error" role="alert">
            {fatal.message} <code className="error-code">{fatal.code}</code>{" "}
            <button type="button" className="link-button" onClick={() => void load()}>
              Retry
            </button>
          </div>
        )}
        <main id="composer" className="chat-main">
          <ChatView
            key={sessionId ?? "new"}
            sessionId={sessionId}
            model={model}
            knowledgeBases={knowledgeBases}
            settings={settings}
            onSettings={setSettings}
            initialMessage={pending && pending.session === sessionId ? pending.message : null}
            onInitialSent={initialSent}
            onCreate={create}
            onSessionChanged={sessionChanged}
            onUnauthenticated={socketRefused}
            onCite={setCitation}
          />
        </main>
      </div>
      <CitationDialog citation={citation} onClose={closeCitation} />
      <KnowledgePanel
        open={knowledgeOpen}
        knowledgeBases={knowledgeBases}
        onClose={() => setKnowledgeOpen(false)}
        onChanged={loadKnowledgeBases}
      />
    </div>
  );
}

/** Models a person can chat with (an embedder or a describer alone cannot answer). */
function chatCapable(model: ModelOut): boolean {
  return model.capabilities.includes("chat");
}
