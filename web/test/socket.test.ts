import { describe, expect, it } from "vitest";
import { backoffDelay, ChatConnection, type ConnectionStatus, type Scheduler, type SocketLike } from "../src/api/socket";
import type { ServerEvent } from "../src/api/types";

class FakeSocket implements SocketLike {
  readyState = 0;
  sent: string[] = [];
  onopen: ((event: Event) => void) | null = null;
  onmessage: ((event: MessageEvent) => void) | null = null;
  onclose: ((event: CloseEvent) => void) | null = null;
  onerror: ((event: Event) => void) | null = null;
  constructor(readonly url: string) {}
  send(data: string) {
    this.sent.push(data);
  }
  close() {
    this.readyState = 3;
  }
  open() {
    this.readyState = 1;
    this.onopen?.(new Event("open"));
  }
  receive(data: unknown) {
    this.onmessage?.({ data } as MessageEvent);
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code } as CloseEvent);
  }
}

class FakeScheduler implements Scheduler {
  timers: { callback: () => void; ms: number; cancelled: boolean }[] = [];
  frames: (() => void)[] = [];
  setTimeout(callback: () => void, ms: number) {
    const timer = { callback, ms, cancelled: false };
    this.timers.push(timer);
    return timer;
  }
  clearTimeout(handle: unknown) {
    (handle as { cancelled: boolean }).cancelled = true;
  }
  frame(callback: () => void) {
    this.frames.push(callback);
  }
  fireTimer() {
    const timer = this.timers.find((t) => !t.cancelled);
    if (!timer) throw new Error("no timer");
    this.timers = this.timers.filter((t) => t !== timer);
    timer.callback();
  }
  fireFrame() {
    const frames = this.frames;
    this.frames = [];
    frames.forEach((f) => f());
  }
}

function setup() {
  const sockets: FakeSocket[] = [];
  const batches: ServerEvent[][] = [];
  const statuses: ConnectionStatus[] = [];
  const scheduler = new FakeScheduler();
  let token = "k1";
  const connection = new ChatConnection({
    url: () => `ws://h/ws/chat/s?token=${token}`,
    onEvents: (events) => batches.push(events),
    onStatus: (status) => statuses.push(status),
    createSocket: (url) => {
      const socket = new FakeSocket(url);
      sockets.push(socket);
      return socket;
    },
    scheduler,
    random: () => 0.5,
  });
  return { connection, sockets, batches, statuses, scheduler, setToken: (t: string) => (token = t) };
}
const historyFrame = JSON.stringify({ type: "history", session: { id: "s", title: "t", created_at: 0, updated_at: 0 }, messages: [] });
const tokenFrame = (seq: number) => JSON.stringify({ type: "token", message_id: "a", seq, delta: "x" });

describe("back-off", () => {
  it("doubles from the base up to the cap, with jitter in the upper half", () => {
    const max = (attempt: number) => backoffDelay(attempt, () => 1);
    const min = (attempt: number) => backoffDelay(attempt, () => 0);
    expect([0, 1, 2, 3, 4, 5, 6].map(max)).toEqual([500, 1000, 2000, 4000, 8000, 15000, 15000]);
    expect(min(0)).toBe(250);
    expect(min(10)).toBe(7500);
  });
});

describe("chat connection", () => {
  it("batches events per frame: one hand-over for a burst of tokens", () => {
    const { connection, sockets, batches, scheduler } = setup();
    connection.start();
    sockets[0]!.open();
    sockets[0]!.receive(historyFrame);
    for (let seq = 1; seq <= 50; seq++) sockets[0]!.receive(tokenFrame(seq));
    expect(batches).toHaveLength(0);
    scheduler.fireFrame();
    expect(batches).toHaveLength(1);
    expect(batches[0]!.map((e) => e.type)).toEqual(["history", ...Array(50).fill("token")]);
  });

  it("ignores frames that are not JSON text", () => {
    const { connection, sockets, batches, scheduler } = setup();
    connection.start();
    sockets[0]!.open();
    sockets[0]!.receive("{not json");
    sockets[0]!.receive(new ArrayBuffer(2));
    scheduler.fireFrame();
    expect(batches).toHaveLength(0);
  });

  it("reconnects with growing delays after drops, resets once history arrives, and reads the URL again", () => {
    const { connection, sockets, statuses, scheduler, setToken } = setup();
    connection.start();
    sockets[0]!.drop();
    expect(statuses.at(-1)).toEqual({ state: "waiting", attempt: 0, delayMs: 375 });
    scheduler.fireTimer();
    sockets[1]!.drop();
    expect(statuses.at(-1)).toEqual({ state: "waiting", attempt: 1, delayMs: 750 });
    setToken("k2");
    scheduler.fireTimer();
    expect(sockets[2]!.url).toContain("token=k2");
    sockets[2]!.open();
    sockets[2]!.receive(historyFrame);
    sockets[2]!.drop();
    expect(statuses.at(-1)).toEqual({ state: "waiting", attempt: 0, delayMs: 375 });
  });

  it("delivers what arrived before a drop", () => {
    const { connection, sockets, batches } = setup();
    connection.start();
    sockets[0]!.open();
    sockets[0]!.receive(tokenFrame(1));
    sockets[0]!.drop();
    expect(batches).toHaveLength(1);
  });

  it.each([
    [4401, "unauthenticated"],
    [4404, "not_found"],
  ])("does not retry close code %i", (code, state) => {
    const { connection, sockets, statuses, scheduler } = setup();
    connection.start();
    sockets[0]!.drop(code);
    expect(statuses.at(-1)).toEqual({ state });
    expect(scheduler.timers).toHaveLength(0);
  });

  it("sends only while open; close stops reconnecting", () => {
    const { connection, sockets, scheduler } = setup();
    connection.start();
    expect(connection.send({ type: "stop" })).toBe(false);
    sockets[0]!.open();
    expect(connection.send({ type: "stop" })).toBe(true);
    expect(sockets[0]!.sent).toEqual(['{"type":"stop"}']);
    connection.close();
    sockets[0]!.drop();
    expect(scheduler.timers.filter((t) => !t.cancelled)).toHaveLength(0);
  });

  it("retry reconnects at once", () => {
    const { connection, sockets } = setup();
    connection.start();
    sockets[0]!.drop();
    connection.retry();
    expect(sockets).toHaveLength(2);
  });
});
