// The API key of this tab: kept in sessionStorage (gone when the tab closes, never in localStorage
// or a cookie), sent as a Bearer header on REST calls and as `?token=` on the socket (browsers
// cannot set headers on a WebSocket). In local mode (no API keys on the server) there is none.
const STORAGE_KEY = "kubechat.apiKey";

export function apiKey(): string | null {
  try {
    return sessionStorage.getItem(STORAGE_KEY);
  } catch {
    return null; // storage disabled: the key lives as long as the page
  }
}

export function setApiKey(key: string | null): void {
  try {
    if (key) sessionStorage.setItem(STORAGE_KEY, key);
    else sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    // storage disabled
  }
}

export function authHeaders(): Record<string, string> {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** The chat socket's URL for a session, on the page's own origin (ws: or wss: like the page). */
export function socketUrl(sessionId: string, location: Location = window.location): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const key = apiKey();
  const query = key ? `?token=${encodeURIComponent(key)}` : "";
  return `${scheme}//${location.host}/ws/chat/${encodeURIComponent(sessionId)}${query}`;
}
