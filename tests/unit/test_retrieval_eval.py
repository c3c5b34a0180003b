"""The retrieval evaluation's data: pinned documents, and markers that find their passages."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from benchmarks import retrieval_eval
from benchmarks.streaming import ROOT
from kubechat.catalog import load_catalog
from kubechat.core.resources import Capability, KnowledgeBase


def test_documents_are_the_pinned_copies() -> None:
    table = (retrieval_eval.DATA / "SOURCES.md").read_text()
    pinned = dict(re.findall(r"^\| (\S+) \| \S+ \| [^|]+ \| ([0-9a-f]{64}) \|$", table, re.MULTILINE))
    found = {p.name for p in retrieval_eval.DATA.iterdir() if p.suffix in {".txt", ".html"}}
    assert set(pinned) == found
    for name, digest in pinned.items():
        assert hashlib.sha256((retrieval_eval.DATA / name).read_bytes()).hexdigest() == digest, name


def test_each_marker_is_in_its_document_only(tmp_path: Path) -> None:
    kb = KnowledgeBase.model_validate(retrieval_eval.KNOWLEDGE_BASE)
    catalog = load_catalog(ROOT / "examples" / "models", tmp_path)
    tokenizer = catalog.get(kb.spec.embedding.model, Capability.EMBEDDINGS).tokenizer
    assert tokenizer is not None
    documents = dict(retrieval_eval.corpus_records(kb, tokenizer))
    assert len(documents) == 6
    for question in retrieval_eval.QUESTIONS:
        holding = {
            name
            for name, records in documents.items()
            for r in records
            if retrieval_eval.holds(r.text, question.marker)
        }
        assert holding == {question.document}, question.text


def test_markers_match_across_whitespace() -> None:
    chunk = "a header of only two\n   bytes of data"
    assert retrieval_eval.holds(chunk, "two bytes  of")
    assert not retrieval_eval.holds(chunk, "two bytes of code")
