// REST calls to the API on the page's own origin. Every failure becomes an ApiError carrying the
// API's stable error code (the one error shape: {"error": {code, message, type}}).
import { authHeaders } from "./auth";
import type {
  DocumentOut,
  DocumentPage,
  KnowledgeBaseOut,
  MessagePage,
  ModelOut,
  SessionOut,
  SessionPage,
  UploadedImage,
  UploadResponse,
} from "./types";

/** The one shape of every REST listing, as the generated SessionPage, DocumentPage… spell it. */
type Page<T> = { items: T[]; next_cursor: string | null };

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Whether the request carried an API key (a 401 then means that key was refused). */
    readonly withKey = false,
  ) {
    super(message);
    this.name = "ApiError";
  }

  get unauthenticated(): boolean {
    return this.status === 401;
  }
}

type Listener = (error: ApiError) => void;
const unauthenticatedListeners = new Set<Listener>();

/** Called whenever the API answers 401: the page then asks for a key. */
export function onUnauthenticated(listener: Listener): () => void {
  unauthenticatedListeners.add(listener);
  return () => unauthenticatedListeners.delete(listener);
}

function report(error: ApiError): ApiError {
  if (error.unauthenticated) unauthenticatedListeners.forEach((listener) => listener(error));
  return error;
}

export function errorOf(status: number, body: string, withKey: boolean): ApiError {
  try {
    const parsed = JSON.parse(body) as { error?: { code?: string; message?: string } };
    if (parsed.error?.code) return new ApiError(status, parsed.error.code, parsed.error.message ?? "", withKey);
  } catch {
    // not the API's JSON: a proxy's page, say
  }
  return new ApiError(status, `http_${status}`, `the server answered ${status}`, withKey);
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers = authHeaders();
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers: {
        Accept: "application/json",
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network_error", "the API cannot be reached");
  }
  if (!response.ok) throw report(errorOf(response.status, await response.text(), "Authorization" in headers));
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

const q = (params: Record<string, string | number | null | undefined>): string => {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value != null) search.set(key, String(value));
  const text = search.toString();
  return text ? `?${text}` : "";
};
const seg = encodeURIComponent;

/** Every item of a short listing (models, knowledge bases), following `next_cursor`. */
async function everything<T>(path: string, max = 1000): Promise<T[]> {
  const items: T[] = [];
  let cursor: string | null = null;
  do {
    const page: Page<T> = await request<Page<T>>("GET", `${path}${q({ limit: 200, cursor })}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

export const api = {
  models: () => everything<ModelOut>("/models"),
  sessions: (cursor?: string | null, limit = 30) => request<SessionPage>("GET", `/sessions${q({ limit, cursor })}`),
  createSession: (title: string) => request<SessionOut>("POST", "/sessions", { title }),
  renameSession: (id: string, title: string) => request<SessionOut>("PATCH", `/sessions/${seg(id)}`, { title }),
  deleteSession: (id: string) => request<void>("DELETE", `/sessions/${seg(id)}`),
  messages: (id: string, cursor?: string | null, limit = 200) =>
    request<MessagePage>("GET", `/sessions/${seg(id)}/messages${q({ limit, cursor })}`),
  knowledgeBases: () => everything<KnowledgeBaseOut>("/knowledge-bases"),
  documents: (kb: string, cursor?: string | null, limit = 100) =>
    request<DocumentPage>("GET", `/knowledge-bases/${seg(kb)}/documents${q({ limit, cursor })}`),
  deleteDocument: (kb: string, id: string) => request<void>("DELETE", `/knowledge-bases/${seg(kb)}/documents/${seg(id)}`),
  uploadDocuments: (kb: string, files: File[], onProgress: (fraction: number) => void) => {
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    return upload<UploadResponse>(`/knowledge-bases/${seg(kb)}/documents`, form, onProgress);
  },
  uploadImage: (file: File, onProgress: (fraction: number) => void) => {
    const form = new FormData();
    form.append("file", file, file.name || "pasted-image.png");
    return upload<UploadedImage>("/images", form, onProgress);
  },
  /** An image's thumbnail as a blob: URL (an <img src> could not send the Bearer header). */
  thumbnail: async (id: string): Promise<string> => {
    const headers = authHeaders();
    const response = await fetch(`/images/${seg(id)}/thumbnail`, { headers });
    if (!response.ok) throw report(errorOf(response.status, await response.text(), "Authorization" in headers));
    return URL.createObjectURL(await response.blob());
  },
};

/** A multipart upload with progress (fetch reports none for request bodies). */
function upload<T>(path: string, form: FormData, onProgress: (fraction: number) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    const headers = authHeaders();
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable && event.total > 0) onProgress(event.loaded / event.total);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(JSON.parse(xhr.responseText) as T);
      } else {
        reject(report(errorOf(xhr.status, xhr.responseText, "Authorization" in headers)));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "network_error", "the upload did not reach the API"));
    xhr.send(form);
  });
}

export type { DocumentOut };
