import { memo, useMemo, type MouseEvent } from "react";
import { renderMarkdown } from "../markdown";
import { stats } from "../stats";

interface Props {
  text: string;
  citations: ReadonlySet<number>;
  onCite: (n: number) => void;
}

/** A model's Markdown, sanitized (markdown.ts); code blocks get a copy button, [n] opens source n. */
export const Markdown = memo(function Markdown({ text, citations, onCite }: Props) {
  const html = useMemo(() => {
    stats.markdownRenders += 1;
    return renderMarkdown(text, citations);
  }, [text, citations]);

  const onClick = (event: MouseEvent<HTMLDivElement>) => {
    const target = event.target as HTMLElement;
    const citation = target.closest<HTMLElement>("button.citation");
    if (citation) {
      onCite(Number(citation.dataset.cite));
      return;
    }
    const copy = target.closest<HTMLButtonElement>("button.copy-code");
    if (copy) {
      const code = copy.closest(".code-block")?.querySelector("code")?.textContent ?? "";
      void copyText(code).then((ok) => {
        copy.textContent = ok ? "Copied" : "Copy failed";
        window.setTimeout(() => (copy.textContent = "Copy"), 1500);
      });
    }
  };

  // The HTML comes from renderMarkdown: markdown-it without raw HTML, then DOMPurify.
  return <div className="markdown" onClick={onClick} dangerouslySetInnerHTML={{ __html: html }} />;
});

async function copyText(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No clipboard API (a page served over plain http beyond localhost): the old way.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}
