"""Applying children: create once, then leave alone, whatever the API server hands back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from kubechat.core.resources import ChatModel, load_resources
from kubechat.operator.kube import Applied, Kube
from kubechat.operator.manifests import render_children
from kubechat.operator.settings import OperatorSettings
from tests.kube import install_cluster

ROOT = Path(__file__).resolve().parents[2]
MODELS = load_resources(
    ChatModel, [*ROOT.glob("examples/models/*.yaml"), *ROOT.glob("examples/cluster/*.yaml")]
)


@pytest.mark.parametrize("model", MODELS, ids=[m.name for m in MODELS])
async def test_a_second_apply_changes_nothing(kmock: Any, model: ChatModel) -> None:
    """Rendered values must read back identical through the typed client (e.g. quantities as
    strings), or every resync would patch every child of every model."""
    api = client.ApiClient(client.Configuration(host=install_cluster(kmock)))
    try:
        kube = Kube(api)
        children = render_children(model, OperatorSettings()).all()
        assert [(await kube.apply(m))[0] for m in children] == [Applied.CREATED] * len(children)
        assert [(await kube.apply(m))[0] for m in children] == [Applied.UNCHANGED] * len(children)
        # A hand edit of a rendered field is drift and is patched back.
        drifted = yaml.safe_load(yaml.safe_dump(children[0]))
        drifted["metadata"]["labels"]["kubechat.io/spec-hash"] = "edited"
        await kube.apply(drifted)
        assert (await kube.apply(children[0]))[0] is Applied.PATCHED
    finally:
        await api.close()


async def test_apply_returns_the_object_as_written(kmock: Any) -> None:
    """The status the operator computes must describe the object after its write: the created
    object, then the patched one, never the state before."""
    api = client.ApiClient(client.Configuration(host=install_cluster(kmock)))
    try:
        kube = Kube(api)
        deployment = render_children(MODELS[0], OperatorSettings()).deployment
        outcome, written = await kube.apply(deployment)
        assert outcome is Applied.CREATED and written is not None
        assert written["spec"]["replicas"] == deployment["spec"]["replicas"]
        scaled = yaml.safe_load(yaml.safe_dump(deployment))
        scaled["spec"]["replicas"] = 3
        outcome, written = await kube.apply(scaled)
        assert outcome is Applied.PATCHED and written is not None and written["spec"]["replicas"] == 3
    finally:
        await api.close()
