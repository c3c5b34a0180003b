"""The operator run in-process with kopf against kmock's Kubernetes emulator.

kmock stores objects and streams watch events like an API server, but runs no controllers:
Deployments get no status unless a test writes one, and nothing garbage-collects children.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from kubechat.core.resources import GROUP, VERSION
from kubechat.operator.crds import PLURALS
from kubechat.operator.knowledge_bases import KnowledgeStores
from kubechat.operator.kube import Kube
from kubechat.operator.runner import run
from kubechat.operator.settings import OperatorSettings
from kubechat.stores.objects.s3 import S3ObjectStore
from kubechat.stores.sqlite.chunks import SQLiteChunkStore
from kubechat.stores.sqlite.documents import SQLiteDocumentCatalog
from tests.kube import install_cluster
from tests.s3_server import S3Endpoint, moto_s3_server, unique_bucket_name

NAMESPACE = "team-a"


@dataclass
class Cluster:
    """A client of the emulated API server, with shortcuts for kubechat's resources."""

    api: client.ApiClient
    kmock: Any

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    async def create(self, document: dict[str, Any]) -> dict[str, Any]:
        """Create a custom resource as `kubectl apply` would (the emulator sets no uid/generation)."""
        meta = document.setdefault("metadata", {})
        meta.setdefault("namespace", NAMESPACE)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta.setdefault("resourceVersion", "1")  # kopf tests it in its patches; kmock never bumps it
        await self.custom.create_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], PLURALS[document["kind"]], document
        )
        return document

    async def get(self, kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        return await Kube(self.api).read_custom(kind, namespace, name)

    async def patch_spec(self, kind: str, name: str, spec: dict[str, Any], generation: int) -> None:
        await self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NAMESPACE,
            PLURALS[kind],
            name,
            {"metadata": {"generation": generation}, "spec": spec},
        )

    async def delete(self, kind: str, name: str) -> None:
        await self.custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURALS[kind], name)

    async def status(self, kind: str, name: str) -> dict[str, Any]:
        found = await self.get(kind, name)
        return dict((found or {}).get("status") or {})

    async def condition(self, kind: str, name: str, type_: str) -> dict[str, Any] | None:
        conditions = (await self.status(kind, name)).get("conditions") or []
        return next((c for c in conditions if c.get("type") == type_), None)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
async def stores(tmp_path: Path, s3: S3Endpoint) -> AsyncIterator[KnowledgeStores]:
    objects = S3ObjectStore(
        s3.endpoint, s3.access_key, s3.secret_key, unique_bucket_name(), secure=s3.secure, region=s3.region
    )
    await objects.ensure_bucket()
    yield KnowledgeStores(
        chunks=await SQLiteChunkStore.open(tmp_path / "chunks.sqlite3"),
        objects=objects,
        documents=await SQLiteDocumentCatalog.open(tmp_path / "documents.sqlite3"),
    )


@pytest.fixture
def operator_settings() -> OperatorSettings:
    # A short resync so drift correction shows within a test; counts likewise.
    return OperatorSettings(resync_interval_s=0.5, count_interval_s=0.5)


@pytest.fixture
async def cluster(
    kmock: Any, stores: KnowledgeStores, operator_settings: OperatorSettings
) -> AsyncIterator[Cluster]:
    """kmock with the CRDs installed and the operator running against it."""
    server = install_cluster(kmock)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run(
            operator_settings,
            server=server,
            stores=stores,
            stop_flag=stop,
            ready_flag=ready,
            one_namespace=False,
        )
    )
    await asyncio.wait_for(ready.wait(), 30)
    api = client.ApiClient(client.Configuration(host=server))
    try:
        yield Cluster(api, kmock)
    finally:
        await api.close()
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
