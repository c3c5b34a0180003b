"""Pure renderers of a ChatModel's Kubernetes children: spec in, plain dicts out, no I/O.

One ChatModel becomes a ConfigMap (its Triton model repository, or the recipe to render it),
a Deployment of Triton, a Service, and, when it can run more than one replica, a
PodDisruptionBudget and possibly a HorizontalPodAutoscaler. The operator adds the owner
references (`kopf.adopt`) and creates or patches them; the `kubechat.io/spec-hash` label on every
child tells it which children were rendered from an older spec (for the ConfigMap and the
Service, the spec without replicas and autoscaling: scaling leaves them untouched).

Pod layout (paths from `kubechat.triton.repository`):

* GPU (`tensorrtllm`, `spec.engine.image` or `settings.trtllm_image`): a huggingFace/s3 source
  is downloaded once per ChatModel into a weight cache, a PersistentVolumeClaim that a Job
  (`python -m kubechat.operator.fetch` in kubechat's image) fills; the Deployment is applied once
  the Job has succeeded, and every replica mounts the claim read-only, so a new pod starts
  without downloading (a pvc source is mounted read-only instead, and needs no cache). The
  ConfigMap is the model repository itself (config.pbtxt, kubechat's LLM API model.py, its
  text_stream.py and the model.yaml of LLM API arguments), mounted as is: no init step, no
  engine build. The main container runs `tritonserver` as the image's unprivileged user, with a
  writable scratch emptyDir for HF_HOME and compile caches.
* CPU (`transformers`, `sentence-transformers`, `synthetic`, `tesseract`, `settings.cpu_image`):
  the ConfigMap holds the ChatModel itself; init `render-repository` runs kubechat's own
  renderer (`python -m kubechat.operator.render_repository`) in the CPU image, after a fetch for
  non-package sources.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

import yaml

from kubechat.core.resources import Backend, ChatModel, ModelSource
from kubechat.operator.settings import OperatorSettings
from kubechat.triton.repository import (
    GPU_REPOSITORY_DIR,
    MODELS_ROOT,
    REPOSITORY_DIR,
    SCRATCH_DIR,
    SOURCE_PVC_DIR,
    STATE_DIR,
    TOKENIZER_DIR,
    TOKENIZER_PVC_DIR,
    WEIGHTS_DIR,
    RenderError,
    pod_source_dir,
    render_tensorrtllm_model,
)

Manifest = dict[str, Any]

HTTP_PORT: Final = 8000
GRPC_PORT: Final = 8001
METRICS_PORT: Final = 8002

SPEC_HASH_LABEL: Final = "kubechat.io/spec-hash"
CHAT_MODEL_LABEL: Final = "kubechat.io/chat-model"
# Every child carries it; the operator watches only children labelled so.
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "kubechat-operator"}
CONFIG_HASH_ANNOTATION: Final = "kubechat.io/config-hash"

CONFIG_DIR: Final = "/config"  # where the ConfigMap is mounted in init containers
CHAT_MODEL_KEY: Final = "chatmodel.yaml"
# Annotations the weight cache's Job carries with its download progress (bytes so far, bytes in
# all), copied into the ChatModel's status.cache.
CACHE_BYTES_ANNOTATION: Final = "kubechat.io/cache-bytes"
CACHE_TOTAL_ANNOTATION: Final = "kubechat.io/cache-total"
CACHE_ERROR_ANNOTATION: Final = "kubechat.io/cache-error"  # why the download failed

HF_HOME: Final = f"{MODELS_ROOT}/.cache/huggingface"

# Draining: the preStop pause lets endpoints controllers and ingress drop the pod before Triton
# sees SIGTERM; Triton then refuses new requests and waits up to the exit timeout for streams in
# flight; the grace period covers both, with a margin for unloading models.
PRE_STOP_SLEEP_S: Final = 10
EXIT_TIMEOUT_S: Final = 90
TERMINATION_GRACE_PERIOD_S: Final = PRE_STOP_SLEEP_S + EXIT_TIMEOUT_S + 20

# kubechat's own images (kubechat_image, cpu_image) run as this unprivileged user, and so does
# NVIDIA's Triton image (its `triton-server` user).
NON_ROOT_UID: Final = 1000

# Local disk a container may fill (logs, caches): requested so that the scheduler counts it and
# the kubelet evicts a pod that runs away with it rather than the node filling up.
EPHEMERAL_STORAGE: Final = "2Gi"
GPU_SCRATCH_SIZE: Final = "20Gi"  # HF_HOME, torch/triton compile caches of a GPU pod

_SELECTOR_KEYS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", CHAT_MODEL_LABEL)


def _digest(value: object, length: int = 16) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def spec_hash(model: ChatModel) -> str:
    """Short sha256 of the canonical spec JSON; metadata (labels, annotations) does not count."""
    return _digest(model.spec.model_dump(mode="json", by_alias=True))


def pod_spec_hash(model: ChatModel) -> str:
    """The spec without replicas and autoscaling: scaling a model must not restart its pods."""
    return _digest(model.spec.model_dump(mode="json", by_alias=True, exclude={"replicas", "autoscaling"}))


def _claim_spec(model: ChatModel, settings: OperatorSettings) -> Manifest:
    storage = model.spec.storage
    claim: Manifest = {
        "accessModes": [storage.access_mode or settings.cache_access_mode],
        "resources": {"requests": {"storage": storage.size}},
    }
    storage_class = storage.storage_class_name or settings.cache_storage_class
    if storage_class:
        claim["storageClassName"] = storage_class
    return claim


def _cache_key(model: ChatModel, settings: OperatorSettings) -> str:
    """What a weight cache holds and where: the sources and the claim. A claim's spec cannot be
    changed once made, so a new key is a new claim (and a new download); an unchanged one is kept
    across every other spec change (engine settings, replicas, image)."""
    spec = model.spec
    return _digest(
        {
            "source": spec.source.model_dump(mode="json", by_alias=True),
            "tokenizer": spec.tokenizer.model_dump(mode="json", by_alias=True) if spec.tokenizer else None,
            "claim": _claim_spec(model, settings),
        },
        8,
    )


def _dns_1035_label(name: str) -> str:
    """`name` if it is a valid Service name (≤ 63 characters, starts with a letter), else a
    shortened name with a hash suffix, still unique per input."""
    if len(name) <= 63 and name[0].isalpha():
        return name
    head = name if name[0].isalpha() else f"m-{name}"
    return f"{head[:54].rstrip('-')}-{_digest(name, 8)}"


def service_name(model: ChatModel) -> str:
    return _dns_1035_label(f"{model.name}-triton")


def deployment_name(model: ChatModel) -> str:
    return service_name(model)


def config_map_name(model: ChatModel) -> str:
    return f"{model.name}-model-repository"


def cache_name(model: ChatModel, settings: OperatorSettings) -> str:
    """The weight cache's PersistentVolumeClaim (its Job: `cache_job_name`)."""
    return f"{model.name[:44].rstrip('-')}-weights-{_cache_key(model, settings)}"


def selector_labels(model: ChatModel) -> dict[str, str]:
    """The stable labels that select a model's pods (never change over its lifetime)."""
    return {
        "app.kubernetes.io/name": "triton",
        "app.kubernetes.io/instance": model.name,
        CHAT_MODEL_LABEL: model.name,
    }


def selector(model: ChatModel) -> str:
    """The label selector string of the pods, as the scale subresource reports it."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(model).items()))


def pod_labels(model: ChatModel) -> dict[str, str]:
    return {
        **selector_labels(model),
        "app.kubernetes.io/component": "chat-model",
        **MANAGED_BY,
    }


def child_labels(model: ChatModel, *, scaled: bool = True) -> dict[str, str]:
    """Labels of a child. Its spec hash covers what it is rendered from: the whole spec, or,
    for children that scaling leaves alone (`scaled` False: ConfigMap, Service), the spec
    without replicas and autoscaling, so that scaling a model does not patch them."""
    digest = spec_hash(model) if scaled else pod_spec_hash(model)
    return {**pod_labels(model), SPEC_HASH_LABEL: digest}


def grpc_endpoint(model: ChatModel) -> str:
    return f"{service_name(model)}.{model.metadata.namespace}.svc:{GRPC_PORT}"


def http_endpoint(model: ChatModel) -> str:
    return f"{service_name(model)}.{model.metadata.namespace}.svc:{HTTP_PORT}"


def _metadata(model: ChatModel, name: str, *, scaled: bool = True) -> Manifest:
    return {
        "name": name,
        "namespace": model.metadata.namespace,
        "labels": child_labels(model, scaled=scaled),
    }


def _is_gpu(model: ChatModel) -> bool:
    return model.spec.engine.backend is Backend.TENSORRTLLM


# --- ConfigMap ----------------------------------------------------------------------------------


def _pod_chat_model_yaml(model: ChatModel) -> str:
    """The ChatModel as the CPU pod's renderer reads it (without the fields a pod ignores)."""
    document = {
        "apiVersion": model.api_version,
        "kind": model.kind,
        "metadata": {"name": model.name, "namespace": model.metadata.namespace},
        "spec": model.spec.model_dump(mode="json", by_alias=True, exclude={"replicas", "autoscaling"}),
    }
    return yaml.safe_dump(document, sort_keys=True, allow_unicode=True)


def _gpu_files(model: ChatModel) -> dict[str, str]:
    """The GPU model repository, file by file: path inside the repository -> text."""
    rendered = render_tensorrtllm_model(model)
    files = {f"{rendered.name}/config.pbtxt": rendered.config_pbtxt}
    files |= {f"{rendered.name}/{path}": source.read_text() for path, source in rendered.files.items()}
    files |= {f"{rendered.name}/{path}": text for path, text in rendered.texts.items()}
    return files


def _key(path: str) -> str:
    # ConfigMap keys cannot contain '/'; volume items map them back to the path.
    return path.replace("/", "__")


def config_map_data(model: ChatModel) -> dict[str, str]:
    if not _is_gpu(model):
        return {CHAT_MODEL_KEY: _pod_chat_model_yaml(model)}
    return {_key(path): text for path, text in _gpu_files(model).items()}


def config_map_items(model: ChatModel) -> list[Manifest]:
    """Volume items: how the ConfigMap's keys appear as files where it is mounted."""
    if not _is_gpu(model):
        return [{"key": CHAT_MODEL_KEY, "path": CHAT_MODEL_KEY}]
    return [{"key": _key(path), "path": path} for path in _gpu_files(model)]


def render_config_map(model: ChatModel) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(model, config_map_name(model), scaled=False),
        "data": config_map_data(model),
    }


# --- Deployment ---------------------------------------------------------------------------------


def _env(name: str, value: str) -> Manifest:
    return {"name": name, "value": value}


def _secret_env(name: str, secret: str, key: str) -> Manifest:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _security_context(*, non_root: bool) -> Manifest:
    context: Manifest = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if non_root:
        context.update(runAsNonRoot=True, runAsUser=NON_ROOT_UID, runAsGroup=NON_ROOT_UID)
    return context


def _downloads(source: ModelSource | None) -> bool:
    return source is not None and (source.hugging_face is not None or source.s3 is not None)


def _fetch_container(
    name: str, source: ModelSource, dest: str, settings: OperatorSettings, mounts: list[Manifest]
) -> Manifest:
    env = [_env("HF_HOME", HF_HOME), _env("HF_HUB_DISABLE_TELEMETRY", "1")]
    if source.hugging_face is not None and source.hugging_face.token_secret_ref:
        env.append(_secret_env("HF_TOKEN", source.hugging_face.token_secret_ref, "HF_TOKEN"))
    if source.s3 is not None:
        env += [
            _env("KUBECHAT_S3_ENDPOINT", settings.model_s3_endpoint),
            _env("KUBECHAT_S3_SECURE", "true" if settings.model_s3_secure else "false"),
            _env("KUBECHAT_S3_REGION", settings.model_s3_region),
        ]
        if source.s3.credentials_secret_ref:
            secret = source.s3.credentials_secret_ref
            env += [
                _secret_env("AWS_ACCESS_KEY_ID", secret, "AWS_ACCESS_KEY_ID"),
                _secret_env("AWS_SECRET_ACCESS_KEY", secret, "AWS_SECRET_ACCESS_KEY"),
            ]
    source_json = source.model_dump_json(by_alias=True, exclude_none=True)
    return {
        "name": name,
        "image": settings.kubechat_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [
            "python",
            "-m",
            "kubechat.operator.fetch",
            "--source-json",
            source_json,
            "--dest",
            dest,
        ],
        "env": env,
        "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": EPHEMERAL_STORAGE},
            "limits": {"memory": "2Gi"},
        },
        "volumeMounts": mounts,
        "securityContext": _security_context(non_root=True),
    }


def _resources(model: ChatModel) -> Manifest:
    spec = model.spec.resources
    requests: dict[str, Any] = {
        "cpu": spec.cpu,
        "memory": spec.memory,
        "ephemeral-storage": EPHEMERAL_STORAGE,
    }
    limits: dict[str, Any] = {"memory": spec.memory}
    if spec.gpus > 0:
        # Extended resources: request = limit, and the device plugin hands out whole GPUs. A
        # quantity is a string, as the API server returns it: an int would look like drift.
        requests["nvidia.com/gpu"] = str(spec.gpus)
        limits["nvidia.com/gpu"] = str(spec.gpus)
    return {"requests": requests, "limits": limits}


def triton_command(model: ChatModel) -> list[str]:
    """The main container's command: one tritonserver. With tensorParallelSize > 1 the LLM API
    starts its own worker per GPU (MPI), as upstream's llmapi model does on one node."""
    return [
        "tritonserver",
        f"--model-repository={GPU_REPOSITORY_DIR if _is_gpu(model) else REPOSITORY_DIR}",
        f"--grpc-port={GRPC_PORT}",
        f"--http-port={HTTP_PORT}",
        f"--metrics-port={METRICS_PORT}",
        f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        # The rendered config.pbtxt is complete: Triton must not ask model.py to fill it in.
        "--disable-auto-complete-config",
    ]


def _probe(path: str, *, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def trtllm_image(model: ChatModel, settings: OperatorSettings) -> str:
    return model.spec.engine.image or settings.trtllm_image


def _main_container(model: ChatModel, settings: OperatorSettings, mounts: list[Manifest]) -> Manifest:
    gpu = _is_gpu(model)
    env = [_env("HF_HUB_OFFLINE", "1"), _env("TRANSFORMERS_OFFLINE", "1")]
    if gpu:
        # The weights are read-only: every cache the LLM API, torch and triton write goes to the
        # scratch volume, which the unprivileged user owns (fsGroup).
        env += [
            _env("HOME", SCRATCH_DIR),
            _env("HF_HOME", f"{SCRATCH_DIR}/huggingface"),
            _env("XDG_CACHE_HOME", f"{SCRATCH_DIR}/cache"),
            _env("TRITON_CACHE_DIR", f"{SCRATCH_DIR}/triton"),
            _env("TORCHINDUCTOR_CACHE_DIR", f"{SCRATCH_DIR}/inductor"),
        ]
        if model.spec.engine.tensor_parallel_size > 1:
            # The single-copy (CMA) transport needs ptrace, which a container without capabilities
            # lacks; NCCL carries the tensors anyway.
            env.append(_env("OMPI_MCA_btl_vader_single_copy_mechanism", "none"))
    else:
        env.append(_env("HF_HOME", f"{MODELS_ROOT}/.cache/triton"))
    resources = _resources(model)
    if gpu:
        resources["requests"]["ephemeral-storage"] = GPU_SCRATCH_SIZE
    return {
        "name": "triton",
        "image": trtllm_image(model, settings) if gpu else settings.cpu_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": triton_command(model),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": resources,
        # Loading a large checkpoint takes minutes: the startup probe allows 30 (GPU) or 10 (CPU).
        "startupProbe": _probe("/v2/health/ready", period=10, failures=180 if gpu else 60),
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=3),
        "livenessProbe": _probe("/v2/health/live", period=15, failures=4),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SLEEP_S)]}}},
        "volumeMounts": mounts,
        # Unprivileged for GPU models too: NVIDIA's image has the `triton-server` user (1000),
        # and the LLM API needs neither root nor mpirun on one node.
        "securityContext": _security_context(non_root=True),
    }


def _render_repository_container(
    model: ChatModel, settings: OperatorSettings, mounts: list[Manifest]
) -> Manifest:
    spec = model.spec
    command = [
        "python",
        "-m",
        "kubechat.operator.render_repository",
        "--model",
        f"{CONFIG_DIR}/{CHAT_MODEL_KEY}",
        "--out",
        REPOSITORY_DIR,
        "--state",
        STATE_DIR,
    ]
    if spec.source.package is None and spec.engine.backend.loads_weights:
        command += ["--weights", pod_source_dir(spec.source, WEIGHTS_DIR, SOURCE_PVC_DIR)]
        if spec.tokenizer is not None and (_downloads(spec.tokenizer) or spec.tokenizer.pvc is not None):
            command += ["--tokenizer", pod_source_dir(spec.tokenizer, TOKENIZER_DIR, TOKENIZER_PVC_DIR)]
    return {
        "name": "render-repository",
        "image": settings.cpu_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "env": [_env("HF_HUB_OFFLINE", "1"), _env("TRANSFORMERS_OFFLINE", "1"), _env("HF_HOME", HF_HOME)],
        "resources": _resources(model),
        "volumeMounts": mounts,
        "securityContext": _security_context(non_root=True),
    }


def _models_volume(model: ChatModel) -> Manifest:
    storage = model.spec.storage
    if not storage.storage_class_name:
        return {"name": "models", "emptyDir": {"sizeLimit": storage.size}}
    # A generic ephemeral volume: a PVC of that class, created and deleted with the pod.
    return {
        "name": "models",
        "ephemeral": {
            "volumeClaimTemplate": {
                "metadata": {"labels": selector_labels(model)},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": storage.storage_class_name,
                    "resources": {"requests": {"storage": storage.size}},
                },
            }
        },
    }


def _source_volumes(model: ChatModel) -> tuple[list[Manifest], list[Manifest]]:
    """pvc sources: their volumes and read-only mounts."""
    spec = model.spec
    volumes: list[Manifest] = []
    mounts: list[Manifest] = []
    for volume, source, mount_path in (
        ("source", spec.source, SOURCE_PVC_DIR),
        ("tokenizer", spec.tokenizer, TOKENIZER_PVC_DIR),
    ):
        if source is not None and source.pvc is not None:
            claim = {"claimName": source.pvc.claim_name, "readOnly": True}
            volumes.append({"name": volume, "persistentVolumeClaim": claim})
            mounts.append({"name": volume, "mountPath": mount_path, "readOnly": True})
    return volumes, mounts


def _scheduling(model: ChatModel) -> Manifest:
    spec = model.spec
    placement: Manifest = {}
    node_selector = dict(spec.scheduling.node_selector)
    if spec.resources.gpu_type:
        node_selector["nvidia.com/gpu.product"] = spec.resources.gpu_type
    if node_selector:
        placement["nodeSelector"] = node_selector
    if spec.scheduling.tolerations:
        placement["tolerations"] = [
            {k: v for k, v in t.model_dump(by_alias=True).items() if v not in ("", None)}
            for t in spec.scheduling.tolerations
        ]
    return placement


def _pod_security() -> Manifest:
    return {
        "fsGroup": NON_ROOT_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _gpu_pod_spec(model: ChatModel, settings: OperatorSettings) -> Manifest:
    volumes: list[Manifest] = [
        {
            "name": "repository",
            "configMap": {"name": config_map_name(model), "items": config_map_items(model)},
        },
        {"name": "scratch", "emptyDir": {"sizeLimit": GPU_SCRATCH_SIZE}},
        # Triton's python backend passes tensors through /dev/shm; the runtime default is 64 MiB.
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
    ]
    mounts: list[Manifest] = [
        {"name": "repository", "mountPath": GPU_REPOSITORY_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    if has_weight_cache(model):
        claim = {"claimName": cache_name(model, settings), "readOnly": True}
        volumes.append({"name": "weights", "persistentVolumeClaim": claim})
        mounts.append({"name": "weights", "mountPath": MODELS_ROOT, "readOnly": True})
    source_volumes, source_mounts = _source_volumes(model)
    return {
        "automountServiceAccountToken": False,  # Triton never talks to the Kubernetes API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_PERIOD_S,
        "securityContext": _pod_security(),
        "containers": [_main_container(model, settings, [*mounts, *source_mounts])],
        "volumes": [*volumes, *source_volumes],
        **_scheduling(model),
    }


def _pod_spec(model: ChatModel, settings: OperatorSettings) -> Manifest:
    if _is_gpu(model):
        return _gpu_pod_spec(model, settings)
    spec = model.spec
    volumes: list[Manifest] = [
        {"name": "config", "configMap": {"name": config_map_name(model), "items": config_map_items(model)}},
        _models_volume(model),
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "512Mi"}},
    ]
    models_mount: Manifest = {"name": "models", "mountPath": MODELS_ROOT}
    shm_mount: Manifest = {"name": "shm", "mountPath": "/dev/shm"}
    config_mount: Manifest = {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}
    source_volumes, source_mounts = _source_volumes(model)
    volumes += source_volumes

    init: list[Manifest] = []
    if _downloads(spec.source):
        init.append(_fetch_container("fetch-weights", spec.source, WEIGHTS_DIR, settings, [models_mount]))
    if spec.tokenizer is not None and _downloads(spec.tokenizer):
        init.append(
            _fetch_container("fetch-tokenizer", spec.tokenizer, TOKENIZER_DIR, settings, [models_mount])
        )
    init.append(_render_repository_container(model, settings, [config_mount, models_mount, *source_mounts]))
    main = _main_container(model, settings, [models_mount, shm_mount, *source_mounts])
    return {
        "automountServiceAccountToken": False,  # Triton never talks to the Kubernetes API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_PERIOD_S,
        "securityContext": _pod_security(),
        "initContainers": init,
        "containers": [main],
        "volumes": volumes,
        **_scheduling(model),
    }


# --- The weight cache (GPU) ---------------------------------------------------------------------


def has_weight_cache(model: ChatModel) -> bool:
    """A GPU model whose weights (or tokenizer) are downloaded: pvc sources are read in place."""
    spec = model.spec
    return _is_gpu(model) and (_downloads(spec.source) or _downloads(spec.tokenizer))


def render_cache_claim(model: ChatModel, settings: OperatorSettings) -> Manifest:
    """The claim the weights are downloaded into once and that every replica mounts read-only.

    ReadWriteMany (the default) lets replicas on any node mount it; with ReadWriteOnce the volume
    attaches to one node at a time, so every replica must be scheduled there (docs/operator.md).
    """
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(model, cache_name(model, settings), scaled=False),
        "spec": _claim_spec(model, settings),
    }


def render_cache_job(model: ChatModel, settings: OperatorSettings) -> Manifest:
    """The Job that fills the weight cache (`kubechat.operator.fetch`, idempotent: a rerun over a
    complete download returns at once).

    A Job's pod template cannot be changed once created, so the Job is named after its template
    (`cache_job_name`): a new template (another image, the quantization to check, the S3
    endpoint) is a new Job, which finds the download complete and succeeds at once.
    """
    spec = model.spec
    mount: Manifest = {"name": "weights", "mountPath": MODELS_ROOT}
    containers: list[Manifest] = []
    if _downloads(spec.source):
        weights = _fetch_container("fetch-weights", spec.source, WEIGHTS_DIR, settings, [mount])
        if spec.engine.quantization != "none":  # a pre-quantized checkpoint, checked once fetched
            weights["command"] += ["--expect-quantization", spec.engine.quantization]
        containers.append(weights)
    if spec.tokenizer is not None and _downloads(spec.tokenizer):
        containers.append(
            _fetch_container("fetch-tokenizer", spec.tokenizer, TOKENIZER_DIR, settings, [mount])
        )
    account = settings.cache_service_account
    pod: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": bool(account),
        "enableServiceLinks": False,
        "securityContext": _pod_security(),
        "containers": containers[-1:],
        "volumes": [{"name": "weights", "persistentVolumeClaim": {"claimName": cache_name(model, settings)}}],
    }
    if containers[:-1]:
        pod["initContainers"] = containers[:-1]
    name = f"{model.name[:44].rstrip('-')}-fetch-{_digest(pod, 8)}"
    if account:
        # The first download (the weights', or the tokenizer's when the weights are on a pvc)
        # writes the progress on this Job, with the chart's account that may annotate Jobs.
        pod["serviceAccountName"] = account
        reporter = containers[0]
        reporter["command"] += ["--report-job", name]
        namespace = {"fieldRef": {"fieldPath": "metadata.namespace"}}
        reporter["env"].append({"name": "KUBECHAT_NAMESPACE", "valueFrom": namespace})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(model, name, scaled=False),
        "spec": {
            "backoffLimit": 4,
            "template": {"metadata": {"labels": pod_labels(model)}, "spec": pod},
        },
    }


def cache_job_name(model: ChatModel, settings: OperatorSettings) -> str:
    return str(render_cache_job(model, settings)["metadata"]["name"])


def render_deployment(model: ChatModel, settings: OperatorSettings, config_hash: str) -> Manifest:
    spec = model.spec
    gpu = _is_gpu(model)
    deployment_spec: Manifest = {
        "revisionHistoryLimit": 3,
        # Init containers download and build before a pod is Ready: give rollouts an hour
        # before the Deployment reports ProgressDeadlineExceeded.
        "progressDeadlineSeconds": 3600 if gpu else 900,
        "selector": {"matchLabels": selector_labels(model)},
        "template": {
            "metadata": {
                "labels": pod_labels(model),
                "annotations": {
                    SPEC_HASH_LABEL: pod_spec_hash(model),
                    CONFIG_HASH_ANNOTATION: config_hash,
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(METRICS_PORT),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": _pod_spec(model, settings),
        },
    }
    if spec.autoscaling is None:
        deployment_spec["replicas"] = spec.replicas  # with autoscaling, the HPA owns replicas
    if gpu:
        # Keep serving through a rollout: the new pod starts beside the old one (it needs a spare
        # GPU) and the old one goes only once the new one is ready. Without a spare GPU the new
        # pod stays Pending, the old one keeps serving, and the Deployment reports
        # ProgressDeadlineExceeded (docs/operator.md, Rollouts).
        deployment_spec["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(model, deployment_name(model)),
        "spec": deployment_spec,
    }


# --- Service, PDB, HPA --------------------------------------------------------------------------


def render_service(model: ChatModel) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(model, service_name(model), scaled=False),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(model),
            "ports": [
                {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
                for name, port in (("http", HTTP_PORT), ("grpc", GRPC_PORT), ("metrics", METRICS_PORT))
            ],
        },
    }


def max_replicas(model: ChatModel) -> int:
    autoscaling = model.spec.autoscaling
    return autoscaling.max_replicas if autoscaling is not None else model.spec.replicas


def render_pdb(model: ChatModel) -> Manifest | None:
    if max_replicas(model) <= 1:
        return None  # a PDB on a single replica would block every node drain
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(model, deployment_name(model)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(model)},
            # A pod that is not ready (still building its engine) may always be evicted.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def queue_model(model: ChatModel) -> str:
    """The Triton model whose queue says how loaded a ChatModel's pod is: every backend, the GPU
    one included, is one Triton model named after the ChatModel."""
    return model.name


def render_hpa(model: ChatModel) -> Manifest | None:
    """An autoscaling/v2 HPA on a Pods metric, by default `kubechat_triton_queued_requests`: the
    custom metric the chart's prometheus-adapter rule serves (charts/kubechat/files/
    prometheus-adapter-rules.yaml), read for one Triton model through the metric selector
    `model` (queue_model). See docs/operator.md, Autoscaling."""
    autoscaling = model.spec.autoscaling
    if autoscaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(model, deployment_name(model)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(model)},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {
                            "name": autoscaling.metric,
                            "selector": {"matchLabels": {"model": queue_model(model)}},
                        },
                        "target": {"type": "AverageValue", "averageValue": autoscaling.target_average_value},
                    },
                }
            ],
            "behavior": {
                # A new GPU pod takes minutes to fetch and load: do not give one back on a
                # short lull, and remove at most one at a time.
                "scaleDown": {
                    "stabilizationWindowSeconds": 600,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
                },
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
                },
            },
        },
    }


@dataclass(frozen=True)
class Children:
    config_map: Manifest
    deployment: Manifest
    service: Manifest
    pdb: Manifest | None
    hpa: Manifest | None
    cache_claim: Manifest | None = None
    cache_job: Manifest | None = None

    def all(self) -> list[Manifest]:
        """The present children in apply order (the ConfigMap and the weight cache before the pods
        that mount them)."""
        ordered = (
            self.config_map,
            self.service,
            self.cache_claim,
            self.cache_job,
            self.deployment,
            self.pdb,
            self.hpa,
        )
        return [m for m in ordered if m is not None]


def render_children(model: ChatModel, settings: OperatorSettings) -> Children:
    """Every Kubernetes object a ChatModel needs; raises RenderError for a spec that cannot run.
    A remote model (backend openai) needs none: its endpoint serves it."""
    if model.spec.engine.backend.is_remote:
        url = model.spec.endpoint.url if model.spec.endpoint else ""
        raise RenderError(f"ChatModel {model.name} is served by {url}: it has no children")
    config_map = render_config_map(model)
    return Children(
        config_map=config_map,
        deployment=render_deployment(model, settings, _digest(config_map["data"])),
        service=render_service(model),
        pdb=render_pdb(model),
        hpa=render_hpa(model),
        cache_claim=render_cache_claim(model, settings) if has_weight_cache(model) else None,
        cache_job=render_cache_job(model, settings) if has_weight_cache(model) else None,
    )
