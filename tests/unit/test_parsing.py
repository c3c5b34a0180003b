"""Tests of kubechat.knowledge.parsing: format detection and text extraction from real files."""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Sequence

import docx
import pypdf
import pytest
from docx.enum.text import WD_BREAK
from reportlab.pdfgen import canvas

from kubechat.knowledge.parsing import (
    CONTENT_TYPES,
    EXTENSIONS,
    CorruptDocumentError,
    DecompressionBombError,
    DocumentError,
    DocumentFormat,
    EmptyDocumentError,
    Section,
    UnsupportedDocumentError,
    check_archive,
    check_text,
    detect_format,
    parse_document,
)

UNICODE_TEXT = "Café crème, naïve façade — Straße.\nParty 🎉 time 👩‍👩‍👧!\n你好，世界！日本語のテキスト。"  # noqa: RUF001 (fullwidth punctuation on purpose)


def _pdf(pages: Sequence[Sequence[str]]) -> bytes:
    """A PDF with one page per item, each line drawn as text (an empty page has no text)."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    for lines in pages:
        y = 800
        for line in lines:
            pdf.drawString(72, y, line)
            y -= 16
        if not lines:
            pdf.rect(72, 600, 200, 100, fill=1)  # a "scanned" page: marks, no text layer
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def _encrypted(data: bytes, user_password: str) -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="AES-256")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _docx() -> bytes:
    document = docx.Document()
    document.add_paragraph("Preface before any heading.")
    document.add_heading("Handbook", level=0)  # the Title style
    document.add_paragraph("Welcome to the handbook.")
    document.add_heading("Holidays", level=1)
    document.add_paragraph("Employees get 25 days.")
    document.add_paragraph("Unused days expire in March.").add_run().add_break(WD_BREAK.LINE)
    document.add_heading("", level=2)  # an empty heading changes nothing
    table = document.add_table(rows=3, cols=3)
    for row, values in zip(table.rows, [("Region", "Days", "Notes"), ("EU", "25", "")], strict=False):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    merged = table.cell(2, 0).merge(table.cell(2, 2))
    merged.text = "Spans three columns"
    document.add_heading("Sick leave", level=2)
    document.add_paragraph("Report sick days to your manager.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _headings_and_texts(sections: Sequence[Section]) -> list[tuple[str, str]]:
    return [(section.heading, section.text) for section in sections]


def test_every_format_has_extensions_and_a_content_type() -> None:
    assert set(EXTENSIONS.values()) == set(DocumentFormat)
    assert set(CONTENT_TYPES) == set(DocumentFormat)
    assert all(extension == extension.lower() and extension.startswith(".") for extension in EXTENSIONS)
    assert CONTENT_TYPES[DocumentFormat.PDF] == "application/pdf"


@pytest.mark.parametrize(
    ("filename", "head", "expected"),
    [
        ("report.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", DocumentFormat.PDF),
        ("REPORT.PDF", b"%PDF-1.4\n", DocumentFormat.PDF),
        ("policy.docx", b"PK\x03\x04\x14\x00\x06\x00", DocumentFormat.DOCX),
        ("page.html", b"<!doctype html><title>x</title>", DocumentFormat.HTML),
        ("Page.HTM", b"<p>x</p>", DocumentFormat.HTML),
        ("notes.md", b"# Notes\n", DocumentFormat.MARKDOWN),
        ("notes.markdown", b"text", DocumentFormat.MARKDOWN),
        ("notes.txt", "\ufeffCafé 🎉".encode(), DocumentFormat.TEXT),
        ("dir/sub/notes.txt", b"plain", DocumentFormat.TEXT),
        ("C:\\Users\\me\\notes.txt", b"plain", DocumentFormat.TEXT),
        # A head cut in the middle of a multi-byte character is still UTF-8.
        ("cut.txt", "ééé".encode()[:-1], DocumentFormat.TEXT),
        # Images are told by their signature; any of the four under any image extension.
        ("photo.png", b"\x89PNG\r\n\x1a\n\x00\x00", DocumentFormat.IMAGE),
        ("scan.JPG", b"\xff\xd8\xff\xe0\x00\x10JFIF", DocumentFormat.IMAGE),
        ("board.webp", b"RIFF\x24\x00\x00\x00WEBPVP8 ", DocumentFormat.IMAGE),
        ("anim.gif", b"GIF89a\x01\x00", DocumentFormat.IMAGE),
        ("mislabelled.jpeg", b"\x89PNG\r\n\x1a\n", DocumentFormat.IMAGE),
    ],
)
def test_detect_format(filename: str, head: bytes, expected: DocumentFormat) -> None:
    assert detect_format(filename, head) is expected


@pytest.mark.parametrize("filename", ["setup.exe", "photo.bmp", "README", "archive.tar.gz", "slides.pptx"])
def test_detect_format_rejects_unsupported_extensions(filename: str) -> None:
    with pytest.raises(UnsupportedDocumentError) as raised:
        detect_format(filename, b"MZ\x90\x00 some bytes")
    assert raised.value.code == "unsupported_media_type"
    assert ".pdf" in str(raised.value)
    assert ".docx" in str(raised.value)


@pytest.mark.parametrize(
    ("filename", "head", "problem"),
    [
        ("report.pdf", b"Just some text pretending to be a PDF", "not a PDF"),
        ("report.pdf", b"PK\x03\x04\x14\x00", "not a PDF"),
        ("policy.docx", b"%PDF-1.7\n", "not a Word document"),
        ("policy.docx", b"plain text", "not a Word document"),
        ("notes.txt", b"text\x00with\x00NUL bytes", "NUL"),
        ("page.html", "<html>".encode("utf-16-le"), "NUL"),
        ("image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL"),
        ("latin1.txt", "Café au lait".encode("latin-1"), "not UTF-8"),
        ("photo.png", b"MZ\x90\x00 an executable", "not a PNG, JPEG, WebP or GIF"),
        ("photo.webp", b"RIFF\x24\x00\x00\x00WAVEfmt ", "not a PNG, JPEG, WebP or GIF"),
        ("photo.gif", b"BM\x36\x00", "not a PNG, JPEG, WebP or GIF"),
    ],
)
def test_detect_format_rejects_content_that_contradicts_the_extension(
    filename: str, head: bytes, problem: str
) -> None:
    with pytest.raises(UnsupportedDocumentError, match=problem):
        detect_format(filename, head)


def test_detect_format_rejects_empty_files() -> None:
    with pytest.raises(EmptyDocumentError) as raised:
        detect_format("notes.txt", b"")
    assert raised.value.code == "empty_document"


def test_pdf_sections_are_pages() -> None:
    data = _pdf([["Alpha page one.", "Second line of one."], ["Beta page two."], ["Gamma page three."]])
    assert detect_format("doc.pdf", data[:4096]) is DocumentFormat.PDF

    sections = parse_document(data, DocumentFormat.PDF)

    assert [section.page for section in sections] == [1, 2, 3]
    assert sections[0].text == "Alpha page one.\nSecond line of one."
    assert sections[1].text == "Beta page two."
    assert sections[2].text == "Gamma page three."
    assert all(section.heading == "" for section in sections)


def test_pdf_pages_without_text_are_left_out() -> None:
    sections = parse_document(_pdf([["First."], [], ["Third."]]), DocumentFormat.PDF)

    assert [(section.page, section.text) for section in sections] == [(1, "First."), (3, "Third.")]


def test_pdf_without_a_text_layer_is_empty() -> None:
    with pytest.raises(EmptyDocumentError, match="no extractable text") as raised:
        parse_document(_pdf([[], []]), DocumentFormat.PDF)
    assert raised.value.code == "empty_document"


def _truncated_pdf() -> bytes:
    data = _pdf([[f"Page {page} line {line}" for line in range(20)] for page in range(4)])
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.7\n" + random.Random(7).randbytes(4000),
        b"%PDF-1.7\n" + b"this is not a PDF body " * 50,
        _truncated_pdf(),
        b"Just text in a file named .pdf",
    ],
    ids=["garbage", "text-body", "cut-in-half", "text"],
)
def test_broken_pdfs_are_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptDocumentError, match="PDF could not be read") as raised:
        parse_document(data, DocumentFormat.PDF)
    assert raised.value.code == "corrupt_document"


def test_password_protected_pdf_is_corrupt() -> None:
    data = _encrypted(_pdf([["Secret text."]]), user_password="open-sesame")

    with pytest.raises(CorruptDocumentError, match="password"):
        parse_document(data, DocumentFormat.PDF)


def test_pdf_encrypted_with_only_an_owner_password_is_read() -> None:
    # Permission-only encryption (empty user password) opens without a password in any viewer.
    data = _encrypted(_pdf([["Readable text."]]), user_password="")

    assert parse_document(data, DocumentFormat.PDF) == [Section(text="Readable text.", page=1)]


def test_docx_sections_follow_headings_and_include_tables() -> None:
    data = _docx()
    assert detect_format("handbook.docx", data[:4096]) is DocumentFormat.DOCX

    sections = parse_document(data, DocumentFormat.DOCX)

    assert _headings_and_texts(sections) == [
        ("", "Preface before any heading."),
        ("Handbook", "Welcome to the handbook."),
        (
            "Holidays",
            "Employees get 25 days.\n\nUnused days expire in March.\n\n"
            "Region | Days | Notes\nEU | 25 |\nSpans three columns",
        ),
        ("Sick leave", "Report sick days to your manager."),
    ]
    assert all(section.page is None for section in sections)


@pytest.mark.parametrize(
    "data",
    [
        b"PK\x03\x04" + b"\x00" * 100,
        _zip({"hello.txt": b"a zip, but not a Word document"}),
        _zip({"[Content_Types].xml": b"<not-xml", "word/document.xml": b"<<<"}),
        b"not even a zip",
    ],
    ids=["zip-header-only", "other-zip", "broken-xml", "text"],
)
def test_broken_docx_is_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptDocumentError, match="Word document could not be read"):
        parse_document(data, DocumentFormat.DOCX)


HTML = """<!DOCTYPE html>
<html>
<head>
  <title>Travel   Policy</title>
  <meta charset="utf-8"><style>body { color: red; }</style>
  <script>var tracking = "do not index";</script>
</head>
<body>
  <!-- a comment that is not content -->
  <nav>Home</nav>
  <p>Read this
     before   you <b>book</b> a trip.</p>
  <noscript>Please enable JavaScript.</noscript>
  <h1>Flights <small>and trains</small></h1>
  <div>Economy class only.<br>Book two weeks ahead.</div>
  <p>Use the portal.</p>
  <template><p>Template content</p></template>
  <h2>Expenses</h2>
  <table>
    <tr><th>Item</th><th>Limit</th></tr>
    <tr><td>Hotel</td><td>150 €</td></tr>
  </table>
  <pre>  total = nights * rate
    + taxes</pre>
  <ul><li>Keep receipts.</li><li>Submit within 30 days.</li></ul>
  <script>document.write("no")</script>
</body>
</html>
"""


def test_html_sections_follow_headings_without_noise() -> None:
    data = HTML.encode()
    assert detect_format("policy.html", data[:4096]) is DocumentFormat.HTML

    sections = parse_document(data, DocumentFormat.HTML)

    assert _headings_and_texts(sections) == [
        ("Travel Policy", "Home\n\nRead this before you book a trip."),
        ("Flights and trains", "Economy class only.\nBook two weeks ahead.\n\nUse the portal."),
        (
            "Expenses",
            "Item | Limit\nHotel | 150 €\n\n  total = nights * rate\n    + taxes\n\n"
            "Keep receipts.\n\nSubmit within 30 days.",
        ),
    ]
    text = "\n".join(section.text for section in sections)
    for noise in ("color: red", "tracking", "JavaScript", "Template content", "comment", "document.write"):
        assert noise not in text


def test_html_without_title_or_headings_is_one_section() -> None:
    sections = parse_document(b"<p>One</p><p>Two <i>three</i></p>", DocumentFormat.HTML)

    assert sections == [Section(text="One\n\nTwo three")]


def test_html_with_unclosed_head_keeps_the_body() -> None:
    sections = parse_document(b"<html><head><title>T</title><body><p>Body text</p>", DocumentFormat.HTML)

    assert sections == [Section(text="Body text", heading="T")]


def test_deeply_nested_html_is_parsed() -> None:
    sections = parse_document(b"<div>" * 20_000 + b"deep text", DocumentFormat.HTML)

    assert sections == [Section(text="deep text")]


MARKDOWN = """Intro before headings.

# Getting *started*

Install with `pip install kubechat`.

```bash
# this is a shell comment, not a heading
kubechat serve
```

Configuration
-------------

> # A heading inside a quote
> stays in the body.

## Limits

| Setting | Default |
|---------|---------|
| size    | 256     |
"""


def test_markdown_sections_follow_headings() -> None:
    sections = parse_document(MARKDOWN.encode(), DocumentFormat.MARKDOWN)

    # Headings are plain text; bodies keep the markdown source as written.
    assert _headings_and_texts(sections) == [
        ("", "Intro before headings."),
        (
            "Getting started",
            "Install with `pip install kubechat`.\n\n"
            "```bash\n# this is a shell comment, not a heading\nkubechat serve\n```",
        ),
        ("Configuration", "> # A heading inside a quote\n> stays in the body."),
        ("Limits", "| Setting | Default |\n|---------|---------|\n| size    | 256     |"),
    ]


def test_markdown_with_crlf_line_ends() -> None:
    data = MARKDOWN.replace("\n", "\r\n").encode()

    assert parse_document(data, DocumentFormat.MARKDOWN) == parse_document(
        MARKDOWN.encode(), DocumentFormat.MARKDOWN
    )


def test_text_is_one_section_with_unicode_intact() -> None:
    data = b"\xef\xbb\xbf" + UNICODE_TEXT.replace("\n", "\r\n").encode()
    assert detect_format("notes.txt", data[:10]) is DocumentFormat.TEXT

    assert parse_document(data, DocumentFormat.TEXT) == [Section(text=UNICODE_TEXT)]


@pytest.mark.parametrize("fmt", [DocumentFormat.TEXT, DocumentFormat.MARKDOWN, DocumentFormat.HTML])
def test_invalid_utf8_is_corrupt(fmt: DocumentFormat) -> None:
    with pytest.raises(CorruptDocumentError, match="not valid UTF-8"):
        parse_document("Café ".encode() + b"\xff\xfe broken", fmt)


def test_text_with_nul_bytes_is_corrupt() -> None:
    with pytest.raises(CorruptDocumentError, match="NUL"):
        parse_document(b"looks like text\x00\x01\x02 but is binary", DocumentFormat.TEXT)


@pytest.mark.parametrize("fmt", list(DocumentFormat))
def test_empty_data_is_empty(fmt: DocumentFormat) -> None:
    with pytest.raises(EmptyDocumentError):
        parse_document(b"", fmt)


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"  \n\t\r\n ", DocumentFormat.TEXT),
        (b"\n\n#  \n", DocumentFormat.MARKDOWN),
        (b"<html><head><script>x()</script></head><body>  </body></html>", DocumentFormat.HTML),
    ],
)
def test_whitespace_only_documents_are_empty(data: bytes, fmt: DocumentFormat) -> None:
    with pytest.raises(EmptyDocumentError, match="no extractable text"):
        parse_document(data, fmt)


def test_errors_are_document_errors_with_distinct_codes() -> None:
    errors = [UnsupportedDocumentError, CorruptDocumentError, EmptyDocumentError]

    assert all(issubclass(error, DocumentError) for error in errors)
    assert len({error.code for error in errors}) == len(errors)


def test_docx_decompression_bomb_is_refused_before_inflating() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", b"<Types/>")
        archive.writestr("word/document.xml", b"\x00" * (64 * 1024 * 1024))  # deflates ~1000:1
    bomb = buffer.getvalue()
    assert len(bomb) < 200_000
    with pytest.raises(DecompressionBombError, match="decompression bomb"):
        parse_document(bomb, DocumentFormat.DOCX)
    check_archive(_docx())  # a real document passes


def test_a_text_document_is_checked_to_its_end() -> None:
    """detect_format sees the head; check_text the whole file (uploads run both)."""
    late = b"plain words\n" * 1000 + b"\xff not UTF-8"
    assert detect_format("late.txt", late[:8192]) is DocumentFormat.TEXT
    with pytest.raises(UnsupportedDocumentError, match=r"not UTF-8 text \(invalid byte at offset 12000\)"):
        check_text("late.txt", late)
    with pytest.raises(UnsupportedDocumentError, match="NUL"):
        check_text("dir/late.md", late[:9000] + b"\x00")
    check_text("whole.txt", "ééé 🎉".encode() * 3000)  # multi-byte characters across any boundary
