// Render counters the browser tests and `make bench` read (window.__kubechatStats): how many times
// a message component rendered while an answer streamed shows that the transcript is not rebuilt
// per token. Two integer increments per render: cheap enough to keep in production builds.
export interface RenderStats {
  messageRenders: Record<string, number>; // per message id
  markdownRenders: number;
  eventBatches: number;
  events: number;
}

declare global {
  interface Window {
    __kubechatStats?: RenderStats;
  }
}

export const stats: RenderStats = { messageRenders: {}, markdownRenders: 0, eventBatches: 0, events: 0 };
if (typeof window !== "undefined") window.__kubechatStats = stats;

export function countMessageRender(id: string): void {
  stats.messageRenders[id] = (stats.messageRenders[id] ?? 0) + 1;
}
