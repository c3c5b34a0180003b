import { useId, useState, type FormEvent } from "react";

/** Asked for when the API has API keys (a 401): the key is kept in this tab's sessionStorage only. */
export function SignIn({ error, onSubmit }: { error: string | null; onSubmit: (key: string) => Promise<void> }) {
  const [key, setKey] = useState("");
  const [busy, setBusy] = useState(false);
  const id = useId();
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (!key.trim()) return;
    setBusy(true);
    try {
      await onSubmit(key.trim());
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="sign-in">
      <form onSubmit={submit} className="sign-in-form" aria-labelledby={`${id}-title`}>
        <h1 id={`${id}-title`}>Sign in to kubechat</h1>
        <p>This kubechat needs an API key. Your administrator gives you one.</p>
        <label htmlFor={`${id}-key`}>API key</label>
        <input
          id={`${id}-key`}
          type="password"
          autoComplete="current-password"
          value={key}
          onChange={(event) => setKey(event.target.value)}
          aria-describedby={error ? `${id}-error` : undefined}
          aria-invalid={error ? true : undefined}
          autoFocus
        />
        {error && (
          <p id={`${id}-error`} className="form-error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy || !key.trim()}>
          {busy ? "Checking…" : "Sign in"}
        </button>
        <p className="meta">The key stays in this browser tab only, until you close it.</p>
      </form>
    </main>
  );
}
