import { useEffect, useState } from "react";
import { api } from "../api/client";

// Thumbnails are fetched with the API key (an <img src> cannot send it) and kept as blob: URLs.
const cache = new Map<string, Promise<string>>();

export function Thumbnail({ id, name }: { id: string; name: string }) {
  const [url, setUrl] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    let pending = cache.get(id);
    if (!pending) {
      pending = api.thumbnail(id);
      cache.set(id, pending);
      pending.catch(() => cache.delete(id));
    }
    pending.then((u) => live && setUrl(u)).catch(() => undefined);
    return () => {
      live = false;
    };
  }, [id]);
  return url ? (
    <img className="thumbnail" src={url} alt={name || "attached image"} />
  ) : (
    <span className="thumbnail placeholder" role="img" aria-label={name || "attached image"} />
  );
}
