"""A ChatModel of backend openai against kmock: no children, and a Ready condition that follows a
probe of the real endpoint (llama.cpp's server) with the API key from a Secret."""

from __future__ import annotations

import base64
from typing import Any

from kubernetes_asyncio import client

from kubechat.operator.kube import Kube
from tests.llama_server import API_KEY, UPSTREAM_MODEL, LlamaServer
from tests.operator.conftest import NAMESPACE, Cluster
from tests.polling import eventually


def remote_chat_model(
    name: str, url: str, model: str = UPSTREAM_MODEL, secret: str = "llama-key"
) -> dict[str, Any]:
    return {
        "apiVersion": "kubechat.io/v1alpha1",
        "kind": "ChatModel",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "engine": {"backend": "openai"},
            "endpoint": {"url": url, "model": model, "apiKeySecretRef": {"name": secret, "key": "api-key"}},
            "capabilities": ["chat"],
        },
    }


async def put_secret(cluster: Cluster, name: str, key: str) -> None:
    body: Any = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": name},
        "data": {"api-key": base64.b64encode(key.encode()).decode()},
    }
    await client.CoreV1Api(cluster.api).create_namespaced_secret(NAMESPACE, body)


async def ready_condition(cluster: Cluster, name: str, status: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found = await cluster.condition("ChatModel", name, "Ready")
        return found if found and found["status"] == status else None

    found: dict[str, Any] = await eventually(check, f"ChatModel {name} Ready={status}", within_s=30)
    return found


async def test_a_remote_model_gets_no_pods_and_is_ready_when_its_endpoint_lists_it(
    cluster: Cluster, llama_server: LlamaServer
) -> None:
    await put_secret(cluster, "llama-key", API_KEY)
    await cluster.create(remote_chat_model("remote", llama_server.url))
    ready = await ready_condition(cluster, "remote", "True")
    assert ready["reason"] == "EndpointReady" and ready["observedGeneration"] == 1
    status = await cluster.status("ChatModel", "remote")
    assert status["phase"] == "Ready" and status["endpoint"] == llama_server.url
    kube = Kube(cluster.api)
    for api_version, kind, name in [
        ("apps/v1", "Deployment", "remote-triton"),
        ("v1", "Service", "remote-triton"),
        ("v1", "ConfigMap", "remote-model-repository"),
    ]:
        stub = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": NAMESPACE}}
        assert await kube.read(stub) is None, f"a remote model has no {kind}"


async def test_a_wrong_key_an_unlisted_model_and_a_missing_secret_are_not_ready(
    cluster: Cluster, llama_server: LlamaServer
) -> None:
    await put_secret(cluster, "wrong-key", "not-the-key")
    await put_secret(cluster, "right-key", API_KEY)
    await cluster.create(remote_chat_model("wrong-key", llama_server.url, secret="wrong-key"))
    await cluster.create(
        remote_chat_model("unlisted", llama_server.url, model="no-such-model", secret="right-key")
    )
    await cluster.create(remote_chat_model("no-secret", llama_server.url, secret="absent"))
    assert (await ready_condition(cluster, "wrong-key", "False"))["reason"] == "EndpointUnauthorized"
    unlisted = await ready_condition(cluster, "unlisted", "False")
    assert unlisted["reason"] == "ModelNotListed" and "no-such-model" in unlisted["message"]
    assert (await ready_condition(cluster, "no-secret", "False"))["reason"] == "SecretNotFound"
    assert (await cluster.status("ChatModel", "wrong-key"))["phase"] == "Degraded"


async def test_a_fixed_secret_makes_the_model_ready_at_the_next_resync(
    cluster: Cluster, llama_server: LlamaServer
) -> None:
    await cluster.create(remote_chat_model("late-key", llama_server.url, secret="late"))
    assert (await ready_condition(cluster, "late-key", "False"))["reason"] == "SecretNotFound"
    await put_secret(cluster, "late", API_KEY)
    await ready_condition(cluster, "late-key", "True")  # the resync probes again
