// The chat socket of one session: reconnects with back-off when the connection drops (the server
// then sends the stored history again, partial answers included), and hands incoming events to the
// page in batches, at most one batch per animation frame, so a fast stream costs one render per
// frame rather than one per token. Components never parse frames: they get ServerEvent objects.
import type { ClientMessage, ServerEvent } from "./types";

/** Close codes the server uses for failures a reconnect cannot fix (docs/websocket.md). */
export const CLOSE_UNAUTHENTICATED = 4401;
export const CLOSE_NOT_FOUND = 4404;

export type ConnectionStatus =
  | { state: "connecting"; attempt: number }
  | { state: "open" }
  | { state: "waiting"; attempt: number; delayMs: number } // dropped; reconnecting after delayMs
  | { state: "unauthenticated" }
  | { state: "not_found" }
  | { state: "closed" };

/** Exponential back-off with jitter: attempt 0 waits about baseMs, each next one twice as long, up to capMs. */
export function backoffDelay(attempt: number, random: () => number = Math.random, baseMs = 500, capMs = 15_000): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt));
  // "Equal jitter": half fixed, half random, so clients that dropped together do not return together.
  return Math.round(ceiling / 2 + (ceiling / 2) * random());
}

/** The part of the browser's WebSocket the connection uses (tests pass a fake). */
export interface SocketLike {
  readonly readyState: number;
  onopen: ((event: Event) => void) | null;
  onmessage: ((event: MessageEvent) => void) | null;
  onclose: ((event: CloseEvent) => void) | null;
  onerror: ((event: Event) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface Scheduler {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  /** Runs callback soon, batching whatever arrived meanwhile (the next animation frame in a page). */
  frame(callback: () => void): void;
}

const OPEN = 1;

export const browserScheduler: Scheduler = {
  setTimeout: (callback, ms) => window.setTimeout(callback, ms),
  clearTimeout: (handle) => window.clearTimeout(handle as number),
  frame: (callback) => {
    // A hidden tab gets no animation frames: the timer flushes there instead.
    let ran = false;
    const run = () => {
      if (!ran) {
        ran = true;
        callback();
      }
    };
    window.requestAnimationFrame(run);
    window.setTimeout(run, 100);
  },
};

export interface ConnectionOptions {
  url: () => string; // read at each attempt: a new API key applies to the next one
  onEvents: (events: ServerEvent[]) => void;
  onStatus: (status: ConnectionStatus) => void;
  createSocket?: (url: string) => SocketLike;
  scheduler?: Scheduler;
  random?: () => number;
}

export class ChatConnection {
  private socket: SocketLike | null = null;
  private attempt = 0;
  private timer: unknown = null;
  private stopped = false;
  private queue: ServerEvent[] = [];
  private flushPending = false;
  private readonly createSocket: (url: string) => SocketLike;
  private readonly scheduler: Scheduler;

  constructor(private readonly options: ConnectionOptions) {
    this.createSocket = options.createSocket ?? ((url) => new WebSocket(url));
    this.scheduler = options.scheduler ?? browserScheduler;
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  /** Sends when the socket is open; false otherwise (the page keeps the draft). */
  send(message: ClientMessage): boolean {
    if (this.socket?.readyState !== OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  close(): void {
    this.stopped = true;
    if (this.timer !== null) this.scheduler.clearTimeout(this.timer);
    this.timer = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onclose = null;
      socket.onmessage = null;
      socket.close(1000, "page left the session");
    }
    this.options.onStatus({ state: "closed" });
  }

  /** Reconnect now (a user's "retry"), forgetting the back-off so far. */
  retry(): void {
    if (this.timer !== null) this.scheduler.clearTimeout(this.timer);
    this.timer = null;
    this.attempt = 0;
    this.stopped = false;
    if (this.socket === null) this.connect();
  }

  /** Open a new socket now, for a fresh history (an answer another connection is still writing). */
  refresh(): void {
    const socket = this.socket;
    if (socket === null) return;
    this.socket = null;
    socket.onclose = null;
    socket.onmessage = null;
    socket.close(1000, "refreshing the history");
    this.connect();
  }

  private connect(): void {
    this.timer = null;
    this.options.onStatus({ state: "connecting", attempt: this.attempt });
    let socket: SocketLike;
    try {
      socket = this.createSocket(this.options.url());
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onopen = () => this.options.onStatus({ state: "open" });
    socket.onmessage = (event: MessageEvent) => this.receive(event.data);
    socket.onerror = () => undefined; // onclose follows and decides
    socket.onclose = (event: CloseEvent) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.flush();
      if (this.stopped) return;
      if (event.code === CLOSE_UNAUTHENTICATED) this.options.onStatus({ state: "unauthenticated" });
      else if (event.code === CLOSE_NOT_FOUND) this.options.onStatus({ state: "not_found" });
      else this.scheduleReconnect();
    };
  }

  private receive(data: unknown): void {
    if (typeof data !== "string") return;
    let event: ServerEvent;
    try {
      event = JSON.parse(data) as ServerEvent;
    } catch {
      return; // the server only sends JSON text; anything else is not ours to show
    }
    if (event.type === "history") this.attempt = 0; // connected for real: the next drop starts over
    this.queue.push(event);
    if (!this.flushPending) {
      this.flushPending = true;
      this.scheduler.frame(() => this.flush());
    }
  }

  private flush(): void {
    this.flushPending = false;
    if (this.queue.length === 0) return;
    const events = this.queue;
    this.queue = [];
    this.options.onEvents(events);
  }

  private scheduleReconnect(): void {
    const delayMs = backoffDelay(this.attempt, this.options.random);
    this.options.onStatus({ state: "waiting", attempt: this.attempt, delayMs });
    this.attempt += 1;
    this.timer = this.scheduler.setTimeout(() => this.connect(), delayMs);
  }
}
