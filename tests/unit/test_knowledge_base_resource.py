"""The KnowledgeBase resource: validation, access rules and index names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubechat.core.resources import (
    KnowledgeBase,
    ResourceError,
    load_knowledge_bases_from_dir,
    parse_resource,
)

ROOT = Path(__file__).resolve().parents[2]


def document(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubechat.io/v1alpha1",
        "kind": "KnowledgeBase",
        "metadata": {"name": "docs", "namespace": "team-a"},
        "spec": {
            "embedding": {"model": "minilm", "dimensions": 384},
            "access": {"owners": ["alice"]},
            **spec,
        },
    }


def test_examples_load() -> None:
    (docs,) = load_knowledge_bases_from_dir(ROOT / "examples" / "knowledge-bases")
    assert docs.name == "docs" and docs.spec.embedding.dimensions == 384
    assert docs.spec.chunking.overlap < docs.spec.chunking.size


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"chunking": {"size": 100, "overlap": 100}}, "overlap"),
        ({"access": {"owners": []}}, "owners"),
        ({"embedding": {"model": "minilm", "dimensions": 0}}, "dimensions"),
        ({"index": {"similarity": "hamming"}}, "similarity"),
        ({"deletionPolicy": "Shred"}, "deletionPolicy"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_specs_are_refused(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ResourceError, match=fragment):
        parse_resource(KnowledgeBase, document(**spec))


def test_access_rules() -> None:
    kb = parse_resource(KnowledgeBase, document(access={"owners": ["alice"], "readers": ["bob"]}))
    assert kb.spec.access.can_write("alice") and kb.spec.access.can_read("alice")
    assert kb.spec.access.can_read("bob") and not kb.spec.access.can_write("bob")
    assert not kb.spec.access.can_read("carol")
    shared = parse_resource(KnowledgeBase, document(access={"owners": ["alice"], "readers": ["*"]}))
    assert shared.spec.access.can_read("carol") and not shared.spec.access.can_write("carol")


def test_index_names_cannot_collide() -> None:
    kb = parse_resource(KnowledgeBase, document())
    assert kb.index_alias == "kubechat-kb.team-a.docs"
    assert kb.generation_index(2) == "kubechat-kb.team-a.docs.000002"
    other = document()
    other["metadata"] = {"name": "docs-000002", "namespace": "team-a"}
    assert parse_resource(KnowledgeBase, other).index_alias != kb.generation_index(2)
    with pytest.raises(ValueError):
        kb.generation_index(0)
    assert kb.object_prefix == "knowledge-bases/team-a/docs/"
