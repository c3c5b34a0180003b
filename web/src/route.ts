// The page's URLs: `/` (a new chat) and `/chat/<session id>`. History API routing, so reload and
// back/forward work; the API serves index.html for these paths (kubechat/api/web.py).
import { useCallback, useEffect, useState } from "react";

export function sessionOfPath(path: string): string | null {
  const match = /^\/chat\/([^/]+)\/?$/.exec(path);
  return match ? decodeURIComponent(match[1]!) : null;
}

export function pathOfSession(id: string | null): string {
  return id ? `/chat/${encodeURIComponent(id)}` : "/";
}

export function useSessionRoute(): [string | null, (id: string | null, replace?: boolean) => void] {
  const [session, setSession] = useState(() => sessionOfPath(window.location.pathname));
  useEffect(() => {
    const onPop = () => setSession(sessionOfPath(window.location.pathname));
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);
  const navigate = useCallback((id: string | null, replace = false) => {
    const path = pathOfSession(id);
    if (window.location.pathname !== path) {
      if (replace) window.history.replaceState(null, "", path);
      else window.history.pushState(null, "", path);
    }
    setSession(id);
  }, []);
  return [session, navigate];
}
