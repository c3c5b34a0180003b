"""BM25 for the embedded chunk store: one tantivy index per chunk index, derived from SQLite.

FTS5 ranks by computing bm25() for every row that matches any query word and sorting them:
at 100k chunks a question of common words matches most of the corpus and took 100-200 ms.
tantivy (Lucene's design in Rust) keeps per-block score bounds in its postings and finds the
top k with block-max WAND, skipping blocks that cannot reach them: 2-5 ms on the same corpus
(docs/design-decisions.md has the comparison). Its BM25 is Lucene's (k1 1.2, b 0.75, the same
idf), so scores mean what Elasticsearch's do.

The chunks table stays the source of truth; the tantivy index holds only what ranking needs
(the text's terms, the chunk's table id and its document id) and can always be rebuilt from it.
The store marks an index's text side stale in the same SQLite transaction as a write and fresh
after the tantivy commit, so a crash between the two costs a rebuild at the next open, never a
missing or stale hit.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import tantivy

# Lucene's English stop words, as Elasticsearch's `english` analyzer drops them from queries.
ENGLISH_STOP_WORDS: Final = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
])  # fmt: skip

_ANALYZER = "kubechat"
_WORD = re.compile(r"\w+", re.UNICODE)
# The writer's memory budget before it flushes a segment; tantivy wants at least 15 MB a thread.
WRITER_HEAP_BYTES: Final = 32_000_000


def _analyzer(stemming: bool, stop_words: bool) -> tantivy.TextAnalyzer:
    """Unicode word boundaries, lower case, accents folded (as FTS5's unicode61 with
    remove_diacritics did), Lucene's English stop words dropped for the `english` analyzer (as
    Elasticsearch's drops them, from chunks and queries), and the Snowball English stemmer when
    the analyzer stems."""
    builder = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
    )
    if stop_words:
        builder = builder.filter(tantivy.Filter.custom_stopword(sorted(ENGLISH_STOP_WORDS)))
    if stemming:
        builder = builder.filter(tantivy.Filter.stemmer("english"))
    return builder.build()


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("text", tokenizer_name=_ANALYZER, index_option="freq")
    builder.add_integer_field("id", indexed=True, fast=True)  # the chunks table's id
    builder.add_text_field("document", tokenizer_name="raw")  # for filters and deletes
    return builder.build()


def query_words(text: str, analyzer: str) -> list[str]:
    """The words of free text that a search looks for: any word may match, none is an operator.

    With the `english` analyzer its stop words are dropped, unless the text has nothing else
    ("to be or not to be" still searches for them rather than nothing)."""
    words = _WORD.findall(text)
    if analyzer == "english":
        words = [w for w in words if w.lower() not in ENGLISH_STOP_WORDS] or words
    return words


class TextIndex:
    """The BM25 side of one chunk index: a tantivy index in `folder` (in memory when None).

    Used from the chunk store's database thread only. Writes go to a writer opened on first use
    and become searchable at `commit`, which also closes the writer (and its lock and memory).
    """

    def __init__(
        self, folder: Path | None, *, stemming: bool, stop_words: bool = False, fresh: bool = False
    ) -> None:
        self.folder = folder
        self._schema = _schema()
        self._analyzer = _analyzer(stemming, stop_words)
        if folder is not None and fresh:
            shutil.rmtree(folder, ignore_errors=True)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        path = None if folder is None else str(folder)
        self._index = tantivy.Index(self._schema, path=path, reuse=True)
        self._index.register_tokenizer(_ANALYZER, self._analyzer)
        self._writer: tantivy.IndexWriter | None = None

    def _writing(self) -> tantivy.IndexWriter:
        if self._writer is None:
            self._writer = self._index.writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
        return self._writer

    def add(self, rows: Iterable[tuple[int, str, str]]) -> None:
        """Index chunks given as (chunks table id, document id, text)."""
        writer = self._writing()
        for chunk_id, document_id, text in rows:
            writer.add_document(tantivy.Document(id=chunk_id, document=document_id, text=text))

    def delete(self, chunk_ids: Iterable[int]) -> None:
        writer = self._writing()
        for chunk_id in chunk_ids:
            writer.delete_documents_by_term("id", chunk_id)

    def delete_document(self, document_id: str) -> None:
        self._writing().delete_documents_by_term("document", document_id)

    def commit(self) -> None:
        """Make every write so far searchable and durable; close the writer."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        writer.commit()
        writer.wait_merging_threads()  # consumes the writer: its lock and memory go with it
        self._index.reload()

    def rollback(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.rollback()
            writer.wait_merging_threads()

    @property
    def count(self) -> int:
        """Chunks searchable now (committed)."""
        return int(self._index.searcher().num_docs)

    def search(
        self, words: Sequence[str], k: int, document_ids: Sequence[str] | None = None
    ) -> list[tuple[int, float]]:
        """The `k` best (chunks table id, BM25 score) for any of `words`, best first.

        A document filter restricts the hits without changing their scores (corpus statistics
        stay the whole index's, as in Elasticsearch's filtered queries)."""
        terms = list(dict.fromkeys(token for token in self._analyzer.analyze(" ".join(words))))
        if not terms or k <= 0 or document_ids == []:
            return []
        should = tantivy.Occur.Should
        query = tantivy.Query.boolean_query(
            [
                (should, tantivy.Query.term_query(self._schema, "text", term, index_option="freq"))
                for term in terms
            ]
        )
        if document_ids is not None:
            only = tantivy.Query.term_set_query(self._schema, "document", list(document_ids))
            must = tantivy.Occur.Must
            query = tantivy.Query.boolean_query(
                [(must, query), (must, tantivy.Query.const_score_query(only, 0.0))]
            )
        searcher = self._index.searcher()
        hits = searcher.search(query, k, count=False).hits
        ids = searcher.fast_field_values("id", [address for _, address in hits])
        return [(int(chunk_id or 0), float(score)) for (score, _), chunk_id in zip(hits, ids, strict=True)]

    def close(self) -> None:
        self.rollback()

    def destroy(self) -> None:
        """Close and remove the files (the index was dropped)."""
        self.close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
