// Model output to HTML that is safe to put in the page. Model answers (and the documents and tool
// results they quote) are untrusted: markdown-it parses with raw HTML off, links are limited to
// http(s), mailto and same-origin paths, images are not rendered at all (a markdown image in an
// answer would make the browser fetch any URL a prompt injection chose, leaking the conversation
// in its query), and DOMPurify sanitizes the result anyway, as the second of two locks.
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import c from "highlight.js/lib/languages/c";
import cpp from "highlight.js/lib/languages/cpp";
import css from "highlight.js/lib/languages/css";
import diff from "highlight.js/lib/languages/diff";
import dockerfile from "highlight.js/lib/languages/dockerfile";
import go from "highlight.js/lib/languages/go";
import java from "highlight.js/lib/languages/java";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import markdown from "highlight.js/lib/languages/markdown";
import plaintext from "highlight.js/lib/languages/plaintext";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import shell from "highlight.js/lib/languages/shell";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";
import MarkdownIt from "markdown-it";
import type Token from "markdown-it/lib/token.mjs";

const languages = { bash, c, cpp, css, diff, dockerfile, go, java, javascript, json, markdown, plaintext, python, rust, shell, sql, typescript, xml, yaml };
for (const [name, language] of Object.entries(languages)) hljs.registerLanguage(name, language);

/** Links an answer may hold: web and mail addresses, fragments and paths on this origin. */
const SAFE_URL = /^(?:https?:|mailto:|#|\/(?!\/)|\.{0,2}\/)/i;
export function isSafeUrl(url: string): boolean {
  // Browsers ignore control characters and whitespace inside a scheme ("java\tscript:"): so do we.
  return SAFE_URL.test(url.replace(/[\u0000-\u0020\u007f-\u009f]/g, ""));
}

const md = new MarkdownIt({ html: false, linkify: true, typographer: false, breaks: false });
md.disable("image");
md.validateLink = isSafeUrl;

const escape = md.utils.escapeHtml;

md.renderer.rules.fence = (tokens, index) => {
  const token = tokens[index]!;
  const language = token.info.trim().split(/\s+/)[0]?.toLowerCase().replace(/[^a-z0-9+#-]/g, "") ?? "";
  const known = language !== "" && hljs.getLanguage(language) !== undefined;
  const body = known ? hljs.highlight(token.content, { language, ignoreIllegals: true }).value : escape(token.content);
  const label = language || "text";
  return (
    `<div class="code-block"><div class="code-head"><span class="code-lang">${escape(label)}</span>` +
    `<button type="button" class="copy-code" aria-label="Copy ${escape(label)} code">Copy</button></div>` +
    `<pre><code class="hljs${known ? ` language-${language}` : ""}">${body}</code></pre></div>`
  );
};

// Citations: "[n]" in an answer's text, for an n the answer was given as a source, becomes a
// button that opens that source. Never inside links or code.
interface Env {
  citations?: ReadonlySet<number>;
}
const CITATION = /\[(\d{1,3})\]/g;
const HAS_CITATION = /\[\d{1,3}\]/;
md.core.ruler.after("inline", "citations", (state) => {
  const citations = (state.env as Env).citations;
  if (!citations || citations.size === 0) return;
  for (const block of state.tokens) {
    if (block.type !== "inline" || !block.children) continue;
    const out: Token[] = [];
    let inLink = 0;
    for (const token of block.children) {
      if (token.type === "link_open") inLink += 1;
      if (token.type === "link_close") inLink -= 1;
      if (token.type !== "text" || inLink > 0 || !HAS_CITATION.test(token.content)) {
        out.push(token);
        continue;
      }
      let last = 0;
      for (const match of token.content.matchAll(CITATION)) {
        const n = Number(match[1]);
        if (!citations.has(n)) continue;
        if (match.index > last) out.push(textToken(state, token.content.slice(last, match.index)));
        const citation = new state.Token("citation", "", 0);
        citation.meta = { n };
        out.push(citation);
        last = match.index + match[0].length;
      }
      if (last < token.content.length) out.push(textToken(state, token.content.slice(last)));
    }
    block.children = out;
  }
});
function textToken(state: { Token: typeof Token }, content: string): Token {
  const token = new state.Token("text", "", 0);
  token.content = content;
  return token;
}
md.renderer.rules.citation = (tokens, index) => {
  const n = Number((tokens[index]!.meta as { n: number }).n);
  return `<button type="button" class="citation" data-cite="${n}" aria-label="Source ${n}">[${n}]</button>`;
};

md.renderer.rules.table_open = () => '<div class="table-scroll"><table>';
md.renderer.rules.table_close = () => "</table></div>";

const purify = DOMPurify();
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") ?? "";
    if (!isSafeUrl(href)) node.removeAttribute("href");
    node.setAttribute("rel", "noopener noreferrer nofollow");
    if (/^(?:https?:|mailto:)/i.test(href)) node.setAttribute("target", "_blank");
  }
});
const PURIFY_CONFIG = {
  ALLOWED_URI_REGEXP: SAFE_URL,
  FORBID_TAGS: ["style", "img", "svg", "math", "form", "input", "iframe", "object", "embed", "video", "audio", "source"],
  FORBID_ATTR: ["style", "srcset", "action", "formaction"],
  ADD_ATTR: ["target"],
};

/** Markdown → sanitized HTML. `citations`: the source numbers an answer was given. */
export function renderMarkdown(text: string, citations?: ReadonlySet<number>): string {
  const env: Env = { citations };
  return purify.sanitize(md.render(text, env), PURIFY_CONFIG) as string;
}
