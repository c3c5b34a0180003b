"""Document parsing for knowledge-base ingestion: detect an upload's format, extract its text.

Uploads are untrusted: the extension picks the format and the first bytes must agree with
it, and any failure of a parser library on a broken file becomes a CorruptDocumentError, so
the API can answer with one error code per problem. Every parser returns Sections: text
with the page (PDF) or the nearest heading (DOCX, HTML, Markdown) it came from, which the
chunker carries into citations.

Markdown sections keep their original source (inline and block syntax as written, code
blocks included): chunk text then quotes the file exactly, and LLMs read markdown well.

Everything here is synchronous and pure; the API runs it in a worker thread.
"""

from __future__ import annotations

import codecs
import io
import logging
import os
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

import pypdf
from bs4 import BeautifulSoup
from bs4.element import CData, NavigableString, PageElement, Tag
from docx import Document
from docx.table import Table
from docx.text.paragraph import Paragraph
from markdown_it import MarkdownIt
from markdown_it.token import Token

logger = logging.getLogger(__name__)


class DocumentFormat(StrEnum):
    PDF = "pdf"
    DOCX = "docx"
    HTML = "html"
    MARKDOWN = "markdown"
    TEXT = "text"
    # Images are normalized at upload (kubechat.images) and described by a vision model at
    # ingestion (OCR text and what it sees): the text parsed here never comes from them.
    IMAGE = "image"


EXTENSIONS: dict[str, DocumentFormat] = {
    ".pdf": DocumentFormat.PDF,
    ".docx": DocumentFormat.DOCX,
    ".html": DocumentFormat.HTML,
    ".htm": DocumentFormat.HTML,
    ".md": DocumentFormat.MARKDOWN,
    ".markdown": DocumentFormat.MARKDOWN,
    ".txt": DocumentFormat.TEXT,
    ".text": DocumentFormat.TEXT,
    ".png": DocumentFormat.IMAGE,
    ".jpg": DocumentFormat.IMAGE,
    ".jpeg": DocumentFormat.IMAGE,
    ".webp": DocumentFormat.IMAGE,
    ".gif": DocumentFormat.IMAGE,
}

CONTENT_TYPES: dict[DocumentFormat, str] = {
    DocumentFormat.PDF: "application/pdf",
    DocumentFormat.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    DocumentFormat.HTML: "text/html",
    DocumentFormat.MARKDOWN: "text/markdown",
    DocumentFormat.TEXT: "text/plain",
    DocumentFormat.IMAGE: "image/png",  # stored normalized, whatever the upload's format
}

TEXT_FORMATS = frozenset({DocumentFormat.HTML, DocumentFormat.MARKDOWN, DocumentFormat.TEXT})
_PDF_MAGIC = b"%PDF-"
# Readers (Acrobat included) accept a PDF header anywhere in the first KiB.
_PDF_MAGIC_WINDOW = 1024
_ZIP_MAGIC = b"PK\x03\x04"
_IMAGE_MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


class DocumentError(Exception):
    """A document cannot be ingested; `code` names the reason for API clients."""

    code: ClassVar[str] = "document_error"


class UnsupportedDocumentError(DocumentError):
    """The file type is not one we ingest, or the content is not what the extension says."""

    code: ClassVar[str] = "unsupported_media_type"


class CorruptDocumentError(DocumentError):
    """The file claims a supported format but cannot be read as one."""

    code: ClassVar[str] = "corrupt_document"


class EmptyDocumentError(DocumentError):
    """The file is empty or has no extractable text."""

    code: ClassVar[str] = "empty_document"


@dataclass(frozen=True)
class Section:
    """A run of document text from one place: a PDF page, or the body under one heading."""

    text: str
    page: int | None = None
    heading: str = ""


def _allowed_extensions() -> str:
    return ", ".join(sorted(EXTENSIONS))


def detect_format(filename: str, head: bytes) -> DocumentFormat:
    """The format of an upload from its file name, checked against its first bytes (`head`)."""
    basename = filename.replace("\\", "/").rsplit("/", 1)[-1]
    extension = os.path.splitext(basename)[1].lower()
    if not extension:
        raise UnsupportedDocumentError(
            f"the file name {basename!r} has no extension; supported: {_allowed_extensions()}"
        )
    fmt = EXTENSIONS.get(extension)
    if fmt is None:
        raise UnsupportedDocumentError(
            f"{extension!r} files are not supported; supported: {_allowed_extensions()}"
        )
    if not head:
        raise EmptyDocumentError(f"{basename!r} is empty")
    if fmt is DocumentFormat.PDF and _PDF_MAGIC not in head[:_PDF_MAGIC_WINDOW]:
        raise UnsupportedDocumentError(f"{basename!r} is not a PDF (no %PDF- header)")
    if fmt is DocumentFormat.DOCX and not head.startswith(_ZIP_MAGIC):
        raise UnsupportedDocumentError(f"{basename!r} is not a Word document (.docx files are ZIP archives)")
    if fmt is DocumentFormat.IMAGE and not _is_image(head):
        raise UnsupportedDocumentError(f"{basename!r} is not a PNG, JPEG, WebP or GIF image")
    if fmt in TEXT_FORMATS:
        # Not complete: `head` may end in the middle of a multi-byte character.
        _check_text(basename, head, complete=False)
    return fmt


def check_text(filename: str, data: bytes) -> None:
    """A whole text document (`.txt`, `.md`, `.html`) is UTF-8 without NUL bytes, else an
    UnsupportedDocumentError: what detect_format saw of its head, checked to the end."""
    _check_text(filename.replace("\\", "/").rsplit("/", 1)[-1], data, complete=True)


def _check_text(basename: str, data: bytes, *, complete: bool) -> None:
    if b"\x00" in data:
        raise UnsupportedDocumentError(f"{basename!r} contains NUL bytes: binary data, not text")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=complete)
    except UnicodeDecodeError as error:
        raise UnsupportedDocumentError(
            f"{basename!r} is not UTF-8 text (invalid byte at offset {error.start})"
        ) from None


def _is_image(head: bytes) -> bool:
    webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    return webp or head.startswith(_IMAGE_MAGICS)


def parse_document(data: bytes, fmt: DocumentFormat) -> list[Section]:
    """The text of a document as sections; whitespace-only sections are left out."""
    if not data:
        raise EmptyDocumentError("the document is empty")
    match fmt:
        case DocumentFormat.IMAGE:
            raise UnsupportedDocumentError("images are described by a vision model, not parsed")
        case DocumentFormat.PDF:
            sections = _parse_pdf(data)
        case DocumentFormat.DOCX:
            sections = _parse_docx(data)
        case DocumentFormat.HTML:
            sections = _parse_html(_decode_text(data))
        case DocumentFormat.MARKDOWN:
            sections = _parse_markdown(_decode_text(data))
        case DocumentFormat.TEXT:
            sections = [Section(text=_decode_text(data).strip())]
    sections = [section for section in sections if section.text.strip()]
    if not sections:
        hint = " (a scanned PDF needs OCR first)" if fmt is DocumentFormat.PDF else ""
        raise EmptyDocumentError(f"no extractable text was found in the document{hint}")
    return sections


def _decode_text(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CorruptDocumentError(f"the document is not valid UTF-8 (at byte {error.start})") from None
    if "\x00" in text:
        raise CorruptDocumentError("the document contains NUL bytes: binary data, not text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


_TRAILING_SPACE = re.compile(r"[ \t\f\v]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")


def _tidy(text: str) -> str:
    """Extracted text with line ends unified, trailing spaces and blank-line runs removed."""
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return _BLANK_LINES.sub("\n\n", _TRAILING_SPACE.sub("\n", text)).strip()


def _parse_pdf(data: bytes) -> list[Section]:
    # pypdf raises many exception types on broken files (its own, but also ValueError,
    # KeyError, zlib.error, RecursionError...): any failure here means "unreadable".
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == pypdf.PasswordType.NOT_DECRYPTED:
            raise CorruptDocumentError("the PDF could not be read: it is password-protected")
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            sections.append(Section(text=_tidy(page.extract_text()), page=number))
    except DocumentError:
        raise
    except Exception as error:
        logger.debug("unreadable PDF: %s: %s", type(error).__name__, error)
        raise CorruptDocumentError("the PDF could not be read: the file is damaged or incomplete") from error
    return sections


_DOCX_HEADING_STYLES = ("heading", "title")


# A .docx is a ZIP archive: its declared sizes are checked before anything is inflated, so a
# small upload cannot expand into gigabytes (a decompression bomb). Real documents stay far
# below both limits; the ratio of text-heavy XML rarely exceeds 20.
MAX_DOCX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
MAX_DOCX_COMPRESSION_RATIO = 200


class DecompressionBombError(CorruptDocumentError):
    code = "decompression_bomb"


def check_archive(data: bytes) -> None:
    """Refuse a .docx whose declared sizes make it a decompression bomb (nothing inflated)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as error:
        raise CorruptDocumentError(
            "the Word document could not be read: it is not a valid ZIP archive"
        ) from error
    inflated = sum(entry.file_size for entry in entries)
    packed = sum(entry.compress_size for entry in entries)
    if inflated > MAX_DOCX_UNCOMPRESSED_BYTES or inflated > MAX_DOCX_COMPRESSION_RATIO * max(packed, 1):
        raise DecompressionBombError(
            f"the Word document would inflate to {inflated} bytes from {packed} "
            f"(limits: {MAX_DOCX_UNCOMPRESSED_BYTES} bytes, ratio {MAX_DOCX_COMPRESSION_RATIO}): "
            "refused as a possible decompression bomb"
        )


def _parse_docx(data: bytes) -> list[Section]:
    check_archive(data)
    try:
        document = Document(io.BytesIO(data))
        return list(_docx_sections(document.iter_inner_content()))
    except Exception as error:
        # python-docx fails with BadZipFile, KeyError, ValueError or lxml errors on broken files.
        logger.debug("unreadable DOCX: %s: %s", type(error).__name__, error)
        raise CorruptDocumentError(
            "the Word document could not be read: the file is damaged or not a .docx"
        ) from error


def _docx_sections(blocks: Iterable[Paragraph | Table]) -> Iterator[Section]:
    heading = ""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Table):
            body.append(_docx_table_text(block))
            continue
        text = block.text
        if not text.strip():
            continue
        style = block.style
        style_name = (style.name or "") if style is not None else ""
        if style_name.lower().startswith(_DOCX_HEADING_STYLES):
            yield Section(text=_tidy("\n\n".join(body)), heading=heading)
            heading, body = " ".join(text.split()), []
        else:
            body.append(text)
    yield Section(text=_tidy("\n\n".join(body)), heading=heading)


def _docx_table_text(table: Table) -> str:
    """A table as one line per row, cells separated by " | " (nested content flattened)."""
    lines = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            # A cell spanning several grid columns comes back once per column.
            if cell is previous:
                continue
            previous = cell
            parts = [
                _docx_table_text(item) if isinstance(item, Table) else item.text
                for item in cell.iter_inner_content()
            ]
            cells.append(" ".join(" ".join(parts).split()))
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


# <head> itself is walked: html.parser nests the body inside it when </head> is missing.
_HTML_DROPPED = frozenset({"script", "style", "noscript", "template", "title", "meta", "link"})
_HTML_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# Elements that start and end a paragraph of their own in rendered HTML.
_HTML_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog",
        "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr",
        "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot",
        "thead", "ul",
    }
)  # fmt: skip
_HTML_CELLS = frozenset({"td", "th"})
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class _Break:
    """A line break (`newlines` 1) or paragraph break (2) between runs of HTML text."""

    newlines: int


@dataclass(frozen=True)
class _HtmlText:
    text: str
    preformatted: bool


_LINE_BREAK = _Break(1)
_PARAGRAPH_BREAK = _Break(2)
# Table rows become lines of " | "-separated cells.
_CELL_SEPARATOR = _HtmlText(" | ", preformatted=True)


def _parse_html(html: str) -> list[Section]:
    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ") if soup.title is not None else ""
    sections: list[Section] = []
    heading = " ".join(title.split())
    pieces: list[_HtmlText | _Break] = []
    # An explicit stack, not recursion: unclosed tags can nest thousands deep.
    stack: list[tuple[PageElement | _HtmlText | _Break, bool]] = [(soup, False)]
    while stack:
        node, preformatted = stack.pop()
        if isinstance(node, _Break | _HtmlText):
            pieces.append(node)
        elif isinstance(node, Tag):
            name = node.name
            if name in _HTML_DROPPED:
                continue
            if name in _HTML_HEADINGS:
                sections.append(Section(text=_join_html_pieces(pieces), heading=heading))
                heading, pieces = " ".join(node.get_text(" ").split()), []
                continue
            if name == "br":
                pieces.append(_LINE_BREAK)
                continue
            if name in _HTML_BLOCKS:
                pieces.append(_PARAGRAPH_BREAK)
                stack.append((_PARAGRAPH_BREAK, preformatted))
            elif name == "tr":
                pieces.append(_LINE_BREAK)
                stack.append((_LINE_BREAK, preformatted))
            elif name in _HTML_CELLS and node.find_previous_sibling(list(_HTML_CELLS)) is not None:
                pieces.append(_CELL_SEPARATOR)
            preformatted = preformatted or name in ("pre", "textarea")
            stack.extend((child, preformatted) for child in reversed(node.contents))
        # Comments, doctypes and processing instructions are NavigableString subclasses too.
        elif type(node) in (NavigableString, CData):
            pieces.append(_HtmlText(str(node), preformatted))
    sections.append(Section(text=_join_html_pieces(pieces), heading=heading))
    return sections


def _join_html_pieces(pieces: Iterable[_HtmlText | _Break]) -> str:
    """Rendered-looking text: whitespace collapsed (except in <pre>), blocks as paragraphs."""
    out: list[str] = []
    pending = 0  # newlines owed before the next text
    for piece in pieces:
        if isinstance(piece, _Break):
            pending = max(pending, piece.newlines)
            continue
        text = piece.text
        if not piece.preformatted:
            text = _WHITESPACE.sub(" ", text)
            if pending or not out or out[-1].endswith((" ", "\n")):
                text = text.lstrip(" ")
        if not text:
            continue
        if pending and out:
            out[-1] = out[-1].rstrip(" ")
            out.append("\n" * pending)
        pending = 0
        out.append(text)
    return _tidy("".join(out))


def _parse_markdown(source: str) -> list[Section]:
    parser = MarkdownIt("commonmark").enable("table")
    tokens = parser.parse(source)
    lines = source.split("\n")
    sections: list[Section] = []
    heading = ""
    body_start = 0
    for index, token in enumerate(tokens):
        # Only top-level headings split sections; "# x" inside a quote or list item is body.
        if token.type != "heading_open" or token.level != 0 or token.map is None:
            continue
        start, end = token.map
        sections.append(Section(text="\n".join(lines[body_start:start]).strip(), heading=heading))
        heading = _markdown_inline_text(tokens[index + 1]) if index + 1 < len(tokens) else ""
        body_start = end
    sections.append(Section(text="\n".join(lines[body_start:]).strip(), heading=heading))
    return sections


def _markdown_inline_text(inline: Token) -> str:
    """The plain text of an inline token (a heading's), markup removed."""
    parts = []
    for child in inline.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(_markdown_inline_text(child))
    return " ".join("".join(parts).split())
