"""The chat page while a long answer streams: does the browser keep up, and is only the streamed
answer rendered again?

A session already holds earlier turns; the page (Debian's Chromium, driven by Playwright) opens it
and streams a 2,000-token answer from the synthetic model, once as fast as Triton emits tokens
("burst") and once paced like a real model ("paced", syntheticTokenDelayMs). Measured in the
page, from sending until the answer's `done` is rendered:

* long tasks (PerformanceObserver `longtask`: main-thread work over 50 ms): count, total, longest;
* frames (requestAnimationFrame callbacks) and frames per second;
* renders of the streamed answer's component, and of every other message's (0 means the
  transcript was not re-rendered per token), Markdown renders, event batches (the socket
  hands events over at most once per frame).

Prints a table and writes benchmarks/results/browser-<time>.json.

    make bench
    python -m benchmarks.browser --tokens 500 --turns 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from playwright.sync_api import Page, sync_playwright
from websockets.asyncio.client import connect

from benchmarks.streaming import machine, write_report
from kubechat.api.web import BUILT_PAGE
from kubechat.embedded.launcher import TritonPorts, start_triton
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import ApiProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "examples" / "models" / "synthetic.yaml"
PACED_DELAY_MS = 10.0  # 100 tokens/s: a fast real model


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    tokens: int


@dataclass
class Measurement:
    scenario: str
    tokens: int
    earlier_messages: int
    stream_s: float
    tokens_per_s: float
    frames: int
    fps: float
    long_tasks: int
    long_task_ms: float
    longest_task_ms: float
    answer_renders: int
    question_renders: int
    other_message_renders: int
    markdown_renders: int
    event_batches: int
    events: int


def models_dir(folder: Path, max_tokens: int) -> Path:
    """The synthetic model as shipped, and a paced copy of it."""
    spec = yaml.safe_load(SYNTHETIC.read_text())
    spec["spec"]["engine"]["maxOutputTokens"] = max(max_tokens, spec["spec"]["engine"]["maxOutputTokens"])
    (folder / "synthetic.yaml").write_text(yaml.safe_dump(spec))
    paced = yaml.safe_load(yaml.safe_dump(spec))
    paced["metadata"]["name"] = "synthetic-paced"
    paced["spec"]["displayName"] = "Synthetic tokens, paced"
    paced["spec"]["engine"]["syntheticTokenDelayMs"] = PACED_DELAY_MS
    (folder / "synthetic-paced.yaml").write_text(yaml.safe_dump(paced))
    return folder


async def fill_session(api: ApiProcess, turns: int) -> str:
    """A session with `turns` earlier questions and answers, as a transcript to leave alone."""
    async with httpx.AsyncClient(base_url=api.url) as http:
        session = str((await http.post("/sessions", json={"title": "bench"})).json()["id"])
    async with connect(f"{api.ws_url}/ws/chat/{session}", max_size=None) as ws:
        await ws.recv()  # history
        for i in range(turns):
            question = f"Earlier question {i}: explain `code`, lists and [links](https://example.com)."
            options = {"max_tokens": 200}
            await ws.send(json.dumps({"type": "message", "content": question, "options": options}))
            while json.loads(await ws.recv())["type"] != "done":
                pass
    return session


# Installed before the question is typed; COLLECT waits for the answer's `done` and reads it all.
SETUP = """
() => {
  const stats = window.__kubechatStats;
  const bench = window.__bench = {
    before: {...stats.messageRenders}, markdown: stats.markdownRenders, batches: stats.eventBatches,
    events: stats.events, longTasks: [], frames: 0, counting: true,
    answers: document.querySelectorAll("article.answer").length, started: performance.now(),
  };
  bench.observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) bench.longTasks.push(entry.duration);
  });
  bench.observer.observe({type: "longtask"});
  const tick = () => { if (bench.counting) { bench.frames += 1; requestAnimationFrame(tick); } };
  requestAnimationFrame(tick);
}
"""
COLLECT = """
async () => {
  const bench = window.__bench, stats = window.__kubechatStats;
  const answers = () => [...document.querySelectorAll("article.answer")];
  await new Promise((resolve) => {
    const done = () => answers().length > bench.answers && answers().at(-1).dataset.status === "complete";
    const poll = () => (done() ? resolve() : setTimeout(poll, 5));
    poll();
  });
  const elapsed = performance.now() - bench.started;
  bench.counting = false;
  await new Promise((resolve) => setTimeout(resolve, 200));  // long tasks are reported late
  bench.observer.disconnect();
  const answerId = answers().at(-1).dataset.messageId;
  let answerRenders = 0, otherRenders = 0, question = 0;
  for (const [id, n] of Object.entries(stats.messageRenders)) {
    const added = n - (bench.before[id] ?? 0);
    if (id === answerId) answerRenders += added;
    else if (!(id in bench.before)) question += added;  // the new question (local, then stored id)
    else otherRenders += added;
  }
  return {
    elapsed, frames: bench.frames, longTasks: bench.longTasks, answerRenders, otherRenders, question,
    markdown: stats.markdownRenders - bench.markdown, batches: stats.eventBatches - bench.batches,
    events: stats.events - bench.events,
  };
}
"""


def measure(page: Page, scenario: Scenario, earlier: int) -> Measurement:
    page.get_by_label("Model", exact=True).select_option(scenario.model)
    page.get_by_role("form", name="Ask").locator("summary", has_text="Options").click()
    page.get_by_label("Max tokens").fill(str(scenario.tokens))
    page.get_by_role("form", name="Ask").locator("summary", has_text="Options").click()
    page.evaluate(SETUP)
    box = page.get_by_label("Message")
    box.fill("Stream a long answer, please.")
    box.press("Enter")
    raw: dict[str, Any] = page.evaluate(COLLECT)
    seconds = raw["elapsed"] / 1000
    tasks: list[float] = raw["longTasks"]
    return Measurement(
        scenario=scenario.name, tokens=scenario.tokens, earlier_messages=earlier, stream_s=seconds,
        tokens_per_s=scenario.tokens / seconds, frames=raw["frames"], fps=raw["frames"] / seconds,
        long_tasks=len(tasks), long_task_ms=sum(tasks), longest_task_ms=max(tasks, default=0.0),
        answer_renders=raw["answerRenders"], question_renders=raw["question"],
        other_message_renders=raw["otherRenders"],
        markdown_renders=raw["markdown"], event_batches=raw["batches"], events=raw["events"],
    )  # fmt: skip


HEADER = (
    f"{'scenario':<8} {'tokens':>6} {'earlier':>7} {'stream s':>8} {'tok/s':>6} {'frames':>6} {'fps':>5} "
    f"{'long tasks':>10} {'long ms':>8} {'max ms':>7} {'answer renders':>14} {'others':>6} "
    f"{'md renders':>10} {'batches':>7}"
)


def print_row(m: Measurement) -> None:
    print(
        f"{m.scenario:<8} {m.tokens:>6} {m.earlier_messages:>7} {m.stream_s:>8.2f} {m.tokens_per_s:>6.0f} "
        f"{m.frames:>6} {m.fps:>5.0f} {m.long_tasks:>10} {m.long_task_ms:>8.0f} {m.longest_task_ms:>7.0f} "
        f"{m.answer_renders:>14} {m.other_message_renders:>6} {m.markdown_renders:>10} {m.event_batches:>7}",
        flush=True,
    )


def benchmark(args: argparse.Namespace) -> dict[str, object]:
    if not (BUILT_PAGE / "index.html").is_file():
        sys.exit(f"the chat page is not built ({BUILT_PAGE}): run `make install`")
    state = Path(tempfile.mkdtemp(prefix="kubechat-bench-browser-"))
    models = models_dir(Path(tempfile.mkdtemp(prefix="kubechat-bench-models-")), args.tokens)
    no_knowledge_bases = Path(tempfile.mkdtemp(prefix="kubechat-bench-kb-"))
    triton = start_triton(models, state, TritonPorts(free_port(), free_port(), free_port()), timeout=300)
    api = ApiProcess(
        {
            "KUBECHAT_TRITON_URL": triton.grpc_url,
            "KUBECHAT_MODELS_DIR": str(models),
            "KUBECHAT_STATE_DIR": str(state),
            "KUBECHAT_KNOWLEDGE_BASES_DIR": str(no_knowledge_bases),
            "KUBECHAT_DEFAULT_MODEL": "synthetic",
        },
        state / "api.log",
    )
    rows: list[Measurement] = []
    try:
        api.start()
        scenarios = [
            Scenario("burst", "synthetic", args.tokens),
            Scenario("paced", "synthetic-paced", args.tokens),
        ]
        # Before the browser: Playwright's sync API runs an event loop of its own in this thread.
        sessions = [asyncio.run(fill_session(api, args.turns)) for _ in scenarios]
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            for scenario, session in zip(scenarios, sessions, strict=True):
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                page.set_default_timeout(300_000)
                page.goto(f"{api.url}/chat/{session}")
                page.locator("article.answer").nth(args.turns - 1).wait_for()
                rows.append(measure(page, scenario, 2 * args.turns))
                print_row(rows[-1])
                page.close()
            browser.close()
    finally:
        api.stop()
        triton.stop()
    return {
        "benchmark": "browser",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "browser": "Debian chromium, headless",
        "paced_delay_ms": PACED_DELAY_MS,
        "results": [asdict(r) for r in rows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=2000, help="answer length (synthetic tokens)")
    parser.add_argument(
        "--turns", type=int, default=10, help="earlier question-and-answer turns in the session"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(HEADER, flush=True)
    write_report(args.out, "browser", benchmark(args))


if __name__ == "__main__":
    main()
