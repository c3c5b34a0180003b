"""Cluster mode: the API's ChatModels and KnowledgeBases, discovered through the Kubernetes API.

One list-then-watch loop per kind (an informer, as client-go calls it) over the custom
resources of one namespace: list and replace what is known, then watch from the list's
resourceVersion and apply each event. When a watch ends (the server's timeout) it is resumed
from the last resourceVersion seen; 410 Gone re-lists at once, any other failure re-lists after
a capped back-off. Nothing here raises into the API: failures are logged, shown by /ready and
retried, and a resource that does not parse is skipped (the API keeps what it had for it).

A ChatModel becomes a catalog entry, and its status.endpoint the Triton its requests go to; a
KnowledgeBase becomes one the knowledge service serves. A resource being deleted (deletion
timestamp set) is treated as gone: it takes no new requests while its finalizers run.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from kubechat.catalog import ModelCatalog, cluster_entry
from kubechat.core.backoff import Backoff
from kubechat.core.resources import GROUP, VERSION, ChatModel, KnowledgeBase, ResourceError, parse_resource
from kubechat.knowledge.service import KnowledgeService
from kubechat.remote.router import ModelRouter, remote_model

logger = logging.getLogger(__name__)

WATCH_TIMEOUT_S = 300  # asked of the server; the watch is then resumed where it was
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # before re-listing after a failure; then every 30 s
SHORT_WATCH_S = 1.0  # a watch that ends sooner than this is backed off like a failure
LIST_TIMEOUT_S = 60.0


async def load_kubernetes_configuration() -> client.Configuration:
    """The pod's service account when running in a pod, else the kubeconfig (KUBECONFIG, else
    ~/.kube/config) and its current context."""
    configuration = client.Configuration()
    load_incluster: Callable[..., None] = config.load_incluster_config  # the library leaves it untyped
    try:
        load_incluster(client_configuration=configuration)
        return configuration
    except config.ConfigException:
        pass
    kubeconfig = os.environ.get("KUBECONFIG") or None  # read now: the library reads it at import
    await config.load_kube_config(
        config_file=kubeconfig, client_configuration=configuration, persist_config=False
    )
    return configuration


class _Kind(Protocol):
    """What the informer of one kind keeps up to date."""

    kind: str

    def names(self) -> set[str]: ...

    async def apply(self, document: dict[str, Any]) -> None: ...

    async def forget(self, name: str) -> None: ...


class _ChatModels:
    kind = "ChatModel"

    def __init__(
        self,
        catalog: ModelCatalog,
        router: ModelRouter,
        knowledge: KnowledgeService,
        tokenizers_dir: Path,
        core: client.CoreV1Api | None = None,
    ) -> None:
        self.catalog = catalog
        self.router = router
        self.knowledge = knowledge
        self.tokenizers_dir = tokenizers_dir
        self.core = core  # reads the API keys of remote models from their Secrets

    async def api_key(self, model: ChatModel) -> str | None:
        """The key in the Secret spec.endpoint.apiKeySecretRef names, read on every event of the
        model (a rotated key is used from the model's next event: the operator's probe writes
        its status at every resync)."""
        ref = model.spec.endpoint.api_key_secret_ref if model.spec.endpoint else None
        if ref is None or self.core is None:
            return None
        try:
            secret = await self.core.read_namespaced_secret(ref.name, model.metadata.namespace)
        except ApiException as exc:
            logger.warning("ChatModel %s: cannot read Secret %s: HTTP %s", model.name, ref.name, exc.status)
            return None
        value = (secret.data or {}).get(ref.key)
        if value is None:
            logger.warning("ChatModel %s: Secret %s has no key %s", model.name, ref.name, ref.key)
            return None
        return base64.b64decode(value).decode("utf-8").strip()

    def names(self) -> set[str]:
        return {entry.name for entry in self.catalog if entry.cluster}

    async def apply(self, document: dict[str, Any]) -> None:
        model = parse_resource(ChatModel, document)
        current = self.catalog.find(model.name)
        if current is not None and current.cluster and current.model.spec == model.spec:
            self.catalog.put(current.with_model(model))  # a status update: nothing to reload
            spec_changed = False
        else:
            self.catalog.put(await asyncio.to_thread(cluster_entry, model, self.tokenizers_dir))
            spec_changed = True
            logger.info("ChatModel %s %s", model.name, "updated" if current else "added")
        await self.router.set_endpoint(model.name, model.status.endpoint or None)
        remote = remote_model(model, await self.api_key(model)) if model.spec.endpoint else None
        await self.router.set_remote(model.name, remote)
        if spec_changed:
            await self.knowledge.reopen_embedder_users(model.name)

    async def forget(self, name: str) -> None:
        if self.catalog.remove(name) is None:
            return
        logger.info("ChatModel %s removed", name)
        await self.router.set_endpoint(name, None)
        await self.router.set_remote(name, None)
        await self.knowledge.reopen_embedder_users(name)


class _KnowledgeBases:
    kind = "KnowledgeBase"

    def __init__(self, knowledge: KnowledgeService) -> None:
        self.knowledge = knowledge

    def names(self) -> set[str]:
        return set(self.knowledge.names())

    async def apply(self, document: dict[str, Any]) -> None:
        kb = parse_resource(KnowledgeBase, document)
        known = kb.name in self.knowledge.names()
        await self.knowledge.put(kb)
        if not known:
            logger.info("KnowledgeBase %s added", kb.name)

    async def forget(self, name: str) -> None:
        if name in self.knowledge.names():
            logger.info("KnowledgeBase %s removed", name)
            await self.knowledge.remove(name)


@dataclass
class InformerState:
    """How one kind's list and watch are doing (reported by /ready)."""

    synced: bool = False  # the first list is in; stays true while later ones are retried
    error: str = ""  # the last failure, cleared by the next successful list or watch event


class _Informer:
    """List, then watch, one plural in one namespace, forever."""

    def __init__(self, api: client.CustomObjectsApi, namespace: str, plural: str, kind: _Kind) -> None:
        self.api = api
        self.namespace = namespace
        self.plural = plural
        self.kind = kind
        self.state = InformerState()

    async def run(self) -> None:
        # Replicas must not re-list in lock-step.
        backoff = Backoff(BACKOFF_S, jitter=0.2)
        while True:
            try:
                version = await self._list()
                backoff.reset()
                while True:
                    started = time.monotonic()
                    version = await self._watch(version)
                    if time.monotonic() - started >= SHORT_WATCH_S:
                        backoff.reset()
                    else:  # a server that ends every watch at once must not be hammered
                        await asyncio.sleep(backoff.next_delay())
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                self.state.error = f"HTTP {exc.status} {exc.reason or ''}".strip()
                if exc.status == 410:
                    logger.info("%s: resourceVersion expired; listing again", self.plural)
                    continue
                logger.warning("%s: list/watch failed (%s); listing again", self.plural, self.state.error)
            except Exception as exc:
                self.state.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                logger.warning("%s: list/watch failed (%s); listing again", self.plural, self.state.error)
            await asyncio.sleep(backoff.next_delay())

    async def _list(self) -> str:
        """Replace what is known with what the API server lists; return its resourceVersion."""
        listing = await self._objects(_request_timeout=LIST_TIMEOUT_S)
        items: list[dict[str, Any]] = listing.get("items") or []
        present = {_name(item) for item in items if not _deleting(item)}
        for name in self.kind.names() - present:
            await self._forget(name)
        for item in items:
            await self._event("ADDED", item)
        self.state.error = ""
        if not self.state.synced:
            logger.info("%s: %d listed in namespace %s", self.plural, len(items), self.namespace)
        self.state.synced = True
        return str((listing.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, version: str) -> str:
        """Apply events until the server ends the watch; return the resourceVersion to resume at."""
        stream = watch.Watch().stream(
            self._objects, resource_version=version or None, timeout_seconds=WATCH_TIMEOUT_S,
            allow_watch_bookmarks=True, _request_timeout=WATCH_TIMEOUT_S + 30,
        )  # fmt: skip
        async with stream:
            async for event in stream:
                kind, document = event.get("type"), event.get("raw_object")
                if kind in ("ADDED", "MODIFIED", "DELETED") and isinstance(document, dict):
                    await self._event(kind, document)
                    self.state.error = ""
            return str(stream.resource_version or version)

    async def _objects(self, **kwargs: Any) -> Any:
        """List (or, with watch=True, watch) the plural in the namespace.

        :rtype: object
        """
        # (The rtype line above tells kubernetes_asyncio's Watch to hand events over as dicts.)
        if kwargs.get("watch") is True:
            kwargs["watch"] = "true"  # the spelling kubectl and client-go send; not every server takes "True"
        response = await self.api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, self.plural, **kwargs
        )
        if kwargs.get("_preload_content", True) is False and not 200 <= response.status < 300:
            # Unread, a refused watch would look like one that ended with no events.
            reason = (await response.text())[:200]
            response.release()
            raise ApiException(status=response.status, reason=reason)
        return response

    async def _event(self, kind: str, document: dict[str, Any]) -> None:
        name = _name(document)
        try:
            if kind == "DELETED" or _deleting(document):
                await self._forget(name)
            else:
                await self.kind.apply(document)
        except ResourceError as exc:
            # The CRD's schema refuses most of these; what it cannot express lands here.
            logger.warning("skipping an invalid %s %s: %s", self.kind.kind, name, _problems(exc))
        except Exception:
            # One resource must never stop the others from being served.
            logger.exception("could not apply %s %s", self.kind.kind, name)

    async def _forget(self, name: str) -> None:
        try:
            await self.kind.forget(name)
        except Exception:
            logger.exception("could not remove %s %s", self.kind.kind, name)


class ClusterDiscovery:
    """Keeps the model catalog, the Triton routes and the knowledge bases in step with the
    ChatModel and KnowledgeBase resources of one namespace."""

    def __init__(
        self,
        configuration: client.Configuration,
        namespace: str,
        catalog: ModelCatalog,
        router: ModelRouter,
        knowledge: KnowledgeService,
        tokenizers_dir: Path,
    ) -> None:
        """`configuration`: from load_kubernetes_configuration()."""
        self.namespace = namespace
        self._api_client = client.ApiClient(configuration)
        api = client.CustomObjectsApi(self._api_client)
        self._informers = [
            _Informer(
                api,
                namespace,
                ChatModel.PLURAL,
                _ChatModels(catalog, router, knowledge, tokenizers_dir, client.CoreV1Api(self._api_client)),
            ),
            _Informer(api, namespace, KnowledgeBase.PLURAL, _KnowledgeBases(knowledge)),
        ]
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def synced(self) -> bool:
        """Every kind has been listed once: the API serves what the namespace declares."""
        return all(informer.state.synced for informer in self._informers)

    def states(self) -> dict[str, InformerState]:
        return {informer.plural: informer.state for informer in self._informers}

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(informer.run(), name=f"discovery-{informer.plural}")
            for informer in self._informers
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._api_client.close()


def _name(document: dict[str, Any]) -> str:
    return str((document.get("metadata") or {}).get("name") or "")


def _problems(exc: ResourceError) -> str:
    """What is wrong, without the offending values (they can be a whole spec)."""
    cause = exc.__cause__
    if not isinstance(cause, ValidationError):
        return str(exc)
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'document'}: {error['msg']}"
        for error in cause.errors(include_input=False, include_url=False)
    )


def _deleting(document: dict[str, Any]) -> bool:
    return bool((document.get("metadata") or {}).get("deletionTimestamp"))
