"""Pure renderers of a ChatModel's Kubernetes children: spec in, plain dicts out, no I/O.

One ChatModel becomes a ConfigMap (its Triton model repository, or the recipe to render it),
a Deployment of Triton, a Service, and, when it can run more than one replica, a
PodDisruptionBudget and possibly a HorizontalPodAutoscaler. The operator adds the owner
references (`kopf.adopt`) and creates or patches them; the `kubechat.io/spec-hash` label on every
child tells it which children were rendered from an older spec (for the ConfigMap and the
Service, the spec without replicas and autoscaling: scaling leaves them untouched).

Pod layout (paths from `kubechat.triton.repository`):

* GPU (`tensorrtllm`, `settings.trtllm_image`): init `fetch-weights` (and `fetch-tokenizer`) run
  `python -m kubechat.operator.fetch` in kubechat's image and download a huggingFace/s3 source
  into the `models` volume (a pvc source is mounted read-only instead); init `build-engine` runs
  the ConfigMap's `build-engine.py` (kubechat.operator.scripts.build_engine, shipped as text) in
  the TensorRT-LLM image: it lays out the model repository (the four rendered config.pbtxt plus
  NVIDIA's preprocessing/postprocessing model.py from the image) and builds the engine with
  TensorRT-LLM's LLM API unless the volume already holds one for this spec. The main container
  runs `tritonserver`, under `mpirun` with one rank per GPU when tensorParallelSize > 1 (NVIDIA's
  launch_triton_server.py layout).
* CPU (`transformers`, `sentence-transformers`, `synthetic`, `tesseract`, `settings.cpu_image`):
  the ConfigMap holds the ChatModel itself; init `render-repository` runs kubechat's own
  renderer (`python -m kubechat.operator.render_repository`) in the CPU image, after a fetch for
  non-package sources.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
from dataclasses import dataclass
from typing import Any, Final

import yaml

from kubechat.core.resources import Backend, ChatModel, ModelSource
from kubechat.operator.settings import OperatorSettings
from kubechat.triton.repository import (
    MODELS_ROOT,
    REPOSITORY_DIR,
    SOURCE_PVC_DIR,
    STATE_DIR,
    TOKENIZER_DIR,
    TOKENIZER_PVC_DIR,
    WEIGHTS_DIR,
    RenderError,
    pod_source_dir,
    render_tensorrtllm_models,
    tensorrtllm_names,
    tensorrtllm_paths,
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
BUILD_SCRIPT_KEY: Final = "build-engine.py"
REPOSITORY_CONFIG_SUBDIR: Final = "repository"  # config.pbtxt tree inside the ConfigMap volume

HF_HOME: Final = f"{MODELS_ROOT}/.cache/huggingface"

# Draining: the preStop pause lets endpoints controllers and ingress drop the pod before Triton
# sees SIGTERM; Triton then refuses new requests and waits up to the exit timeout for streams in
# flight; the grace period covers both, with a margin for unloading models.
PRE_STOP_SLEEP_S: Final = 10
EXIT_TIMEOUT_S: Final = 90
TERMINATION_GRACE_PERIOD_S: Final = PRE_STOP_SLEEP_S + EXIT_TIMEOUT_S + 20

# kubechat's own images (kubechat_image, cpu_image) run as this unprivileged user.
NON_ROOT_UID: Final = 1000

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


def _engine_key(model: ChatModel) -> str:
    """What a built engine depends on: the weights, the engine settings and the GPU type."""
    spec = model.spec
    return _digest(
        {
            "source": spec.source.model_dump(mode="json", by_alias=True),
            "engine": spec.engine.model_dump(mode="json", by_alias=True),
            "gpuType": spec.resources.gpu_type,
        }
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


def _config_key(model_name: str) -> str:
    # ConfigMap keys cannot contain '/'; volume items map them back to <model>/config.pbtxt.
    return f"{model_name}__config.pbtxt"


def _pod_chat_model_yaml(model: ChatModel) -> str:
    """The ChatModel as the CPU pod's renderer reads it (without the fields a pod ignores)."""
    document = {
        "apiVersion": model.api_version,
        "kind": model.kind,
        "metadata": {"name": model.name, "namespace": model.metadata.namespace},
        "spec": model.spec.model_dump(mode="json", by_alias=True, exclude={"replicas", "autoscaling"}),
    }
    return yaml.safe_dump(document, sort_keys=True, allow_unicode=True)


@functools.cache
def build_engine_script() -> str:
    """The GPU pod's init step (kubechat.operator.scripts.build_engine) as the ConfigMap ships it:
    the TensorRT-LLM image runs it with its own python3, where kubechat is not installed."""
    return importlib.resources.files("kubechat.operator.scripts").joinpath("build_engine.py").read_text()


def config_map_data(model: ChatModel) -> dict[str, str]:
    if not _is_gpu(model):
        return {CHAT_MODEL_KEY: _pod_chat_model_yaml(model)}
    data = {_config_key(m.name): m.config_pbtxt for m in render_tensorrtllm_models(model)}
    data[BUILD_SCRIPT_KEY] = build_engine_script()
    return data


def config_map_items(model: ChatModel) -> list[Manifest]:
    """Volume items: how the ConfigMap's keys appear as files under CONFIG_DIR."""
    if not _is_gpu(model):
        return [{"key": CHAT_MODEL_KEY, "path": CHAT_MODEL_KEY}]
    items = [
        {"key": _config_key(name), "path": f"{REPOSITORY_CONFIG_SUBDIR}/{name}/config.pbtxt"}
        for name in tensorrtllm_names(model).all()
    ]
    return [*items, {"key": BUILD_SCRIPT_KEY, "path": BUILD_SCRIPT_KEY}]


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
        "command": ["python", "-m", "kubechat.operator.fetch", "--source-json", source_json, "--dest", dest],
        "env": env,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "volumeMounts": mounts,
        "securityContext": _security_context(non_root=True),
    }


def _resources(model: ChatModel) -> Manifest:
    spec = model.spec.resources
    requests: dict[str, Any] = {"cpu": spec.cpu, "memory": spec.memory}
    limits: dict[str, Any] = {"memory": spec.memory}
    if spec.gpus > 0:
        # Extended resources: request = limit, and the device plugin hands out whole GPUs. A
        # quantity is a string, as the API server returns it: an int would look like drift.
        requests["nvidia.com/gpu"] = str(spec.gpus)
        limits["nvidia.com/gpu"] = str(spec.gpus)
    return {"requests": requests, "limits": limits}


def _tritonserver_args(model: ChatModel, *, rank: int = 0) -> list[str]:
    args = [
        "tritonserver",
        f"--model-repository={REPOSITORY_DIR}",
        f"--grpc-port={GRPC_PORT}",
        f"--http-port={HTTP_PORT}",
        f"--metrics-port={METRICS_PORT}",
        f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
    ]
    if _is_gpu(model):
        args.append("--disable-auto-complete-config")
    if rank > 0:
        # Other ranks load only the engine; they join rank 0's executor and serve no requests.
        args += ["--model-control-mode=explicit", f"--load-model={tensorrtllm_names(model).trtllm}"]
    if model.spec.engine.tensor_parallel_size > 1:
        args.append(f"--backend-config=python,shm-region-prefix-name=prefix{rank}_")
    return args


def triton_command(model: ChatModel) -> list[str]:
    """The main container's command.

    TensorRT-LLM needs an MPI world of one rank per GPU for tensor parallelism: like NVIDIA's
    launch_triton_server.py, one `mpirun` starts a tritonserver per rank; rank 0 serves the ports
    and the others load only the engine. (That script cannot be PID 1 itself: it starts mpirun in
    the background and exits.) mpirun forwards SIGTERM to the ranks.
    """
    tp = model.spec.engine.tensor_parallel_size
    if not _is_gpu(model) or tp == 1:
        return _tritonserver_args(model)
    command = ["mpirun", "--allow-run-as-root"]
    for rank in range(tp):
        if rank:
            command.append(":")
        command += ["-n", "1", *_tritonserver_args(model, rank=rank)]
    return command


def _probe(path: str, *, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _main_container(model: ChatModel, settings: OperatorSettings, mounts: list[Manifest]) -> Manifest:
    gpu = _is_gpu(model)
    env = [
        _env("HF_HUB_OFFLINE", "1"),
        _env("TRANSFORMERS_OFFLINE", "1"),
        # Its own cache: the GPU container is root without capabilities, and cannot write into
        # folders that the fetch step's user owns.
        _env("HF_HOME", f"{MODELS_ROOT}/.cache/triton"),
    ]
    if gpu and model.spec.engine.tensor_parallel_size > 1:
        env += _MPI_ENV
    return {
        "name": "triton",
        "image": settings.trtllm_image if gpu else settings.cpu_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": triton_command(model),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": _resources(model),
        # Loading a large engine takes minutes: the startup probe allows 30 (GPU) or 10 (CPU).
        "startupProbe": _probe("/v2/health/ready", period=10, failures=180 if gpu else 60),
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=3),
        "livenessProbe": _probe("/v2/health/live", period=15, failures=4),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SLEEP_S)]}}},
        "volumeMounts": mounts,
        # NVIDIA's TensorRT-LLM image runs as root (its MPI and backends expect it), so the GPU
        # container keeps root but can gain nothing: no capabilities, no escalation.
        "securityContext": _security_context(non_root=not gpu),
    }


# Open MPI refuses root without these; the single-copy (CMA) transport needs ptrace, which a
# container without capabilities lacks, so it is turned off (NCCL carries the tensors anyway).
_MPI_ENV = [
    _env("OMPI_ALLOW_RUN_AS_ROOT", "1"),
    _env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
    _env("OMPI_MCA_btl_vader_single_copy_mechanism", "none"),
]


def _build_engine_container(model: ChatModel, settings: OperatorSettings, mounts: list[Manifest]) -> Manifest:
    spec = model.spec
    engine = spec.engine
    names = tensorrtllm_names(model)
    paths = tensorrtllm_paths(model)
    env = [
        _env("KUBECHAT_REPOSITORY_SOURCE", f"{CONFIG_DIR}/{REPOSITORY_CONFIG_SUBDIR}"),
        _env("KUBECHAT_REPOSITORY_DIR", REPOSITORY_DIR),
        _env("KUBECHAT_TEMPLATES_DIR", settings.trtllm_model_templates_dir),
        _env("KUBECHAT_PREPROCESSING_MODEL", names.preprocessing),
        _env("KUBECHAT_POSTPROCESSING_MODEL", names.postprocessing),
        _env("KUBECHAT_PREBUILT", "true" if engine.prebuilt else "false"),
        _env("KUBECHAT_CHECKPOINT_DIR", paths.checkpoint_dir),
        _env("KUBECHAT_ENGINE_DIR", paths.engine_dir),
        _env("KUBECHAT_ENGINE_KEY", _engine_key(model)),
        _env("KUBECHAT_TOKENIZER_DIR", paths.tokenizer_dir),
        _env("KUBECHAT_XGRAMMAR_TOKENIZER_INFO", paths.xgrammar_tokenizer_info),
        _env("KUBECHAT_TENSOR_PARALLEL_SIZE", str(engine.tensor_parallel_size)),
        _env("KUBECHAT_DTYPE", engine.dtype),
        _env("KUBECHAT_QUANTIZATION", engine.quantization),
        _env("KUBECHAT_MAX_BATCH_SIZE", str(engine.max_batch_size)),
        _env("KUBECHAT_MAX_INPUT_LEN", str(engine.max_input_tokens)),
        _env("KUBECHAT_MAX_SEQ_LEN", str(engine.max_input_tokens + engine.max_output_tokens)),
        _env("HF_HUB_OFFLINE", "1"),
        # Its own cache: files the fetch step wrote belong to another user.
        _env("HF_HOME", f"{MODELS_ROOT}/.cache/build"),
        *_MPI_ENV,  # the LLM API spawns one MPI worker per GPU
    ]
    return {
        "name": "build-engine",
        "image": settings.trtllm_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python3", f"{CONFIG_DIR}/{BUILD_SCRIPT_KEY}"],
        "env": env,
        # Building loads the whole checkpoint: the same GPUs and memory as serving it.
        "resources": _resources(model),
        "volumeMounts": mounts,
        "securityContext": _security_context(non_root=False),
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


def _pod_spec(model: ChatModel, settings: OperatorSettings) -> Manifest:
    spec = model.spec
    gpu = _is_gpu(model)
    volumes: list[Manifest] = [
        {"name": "config", "configMap": {"name": config_map_name(model), "items": config_map_items(model)}},
        _models_volume(model),
        # Triton's python backend passes tensors through /dev/shm; the runtime default is 64 MiB.
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi" if gpu else "512Mi"}},
    ]
    models_mount: Manifest = {"name": "models", "mountPath": MODELS_ROOT}
    shm_mount: Manifest = {"name": "shm", "mountPath": "/dev/shm"}
    config_mount: Manifest = {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}
    source_mounts: list[Manifest] = []
    for volume, source, mount_path in (
        ("source", spec.source, SOURCE_PVC_DIR),
        ("tokenizer", spec.tokenizer, TOKENIZER_PVC_DIR),
    ):
        if source is not None and source.pvc is not None:
            claim = {"claimName": source.pvc.claim_name, "readOnly": True}
            volumes.append({"name": volume, "persistentVolumeClaim": claim})
            source_mounts.append({"name": volume, "mountPath": mount_path, "readOnly": True})

    init: list[Manifest] = []
    if _downloads(spec.source):
        init.append(_fetch_container("fetch-weights", spec.source, WEIGHTS_DIR, settings, [models_mount]))
    if spec.tokenizer is not None and _downloads(spec.tokenizer):
        init.append(
            _fetch_container("fetch-tokenizer", spec.tokenizer, TOKENIZER_DIR, settings, [models_mount])
        )
    if gpu:
        mounts = [config_mount, models_mount, shm_mount, *source_mounts]
        init.append(_build_engine_container(model, settings, mounts))
    else:
        init.append(
            _render_repository_container(model, settings, [config_mount, models_mount, *source_mounts])
        )
    main = _main_container(model, settings, [models_mount, shm_mount, *source_mounts])

    node_selector = dict(spec.scheduling.node_selector)
    if spec.resources.gpu_type:
        node_selector["nvidia.com/gpu.product"] = spec.resources.gpu_type
    pod: Manifest = {
        "automountServiceAccountToken": False,  # Triton never talks to the Kubernetes API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_PERIOD_S,
        "securityContext": {
            "fsGroup": NON_ROOT_UID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": init,
        "containers": [main],
        "volumes": volumes,
    }
    if node_selector:
        pod["nodeSelector"] = node_selector
    if spec.scheduling.tolerations:
        pod["tolerations"] = [
            {k: v for k, v in t.model_dump(by_alias=True).items() if v not in ("", None)}
            for t in spec.scheduling.tolerations
        ]
    return pod


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
        # GPUs are scarce: a surge pod would wait for a GPU that only the old pod frees, and
        # the rollout would hang. Replace one pod at a time instead.
        deployment_spec["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
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
    """The Triton model whose queue says how loaded a ChatModel's pod is.

    A TensorRT-LLM ChatModel is an ensemble of four Triton models in each pod: its requests wait
    in the engine's own queue (`<name>-trtllm`), and per-pod sums over the ensemble count one
    request up to four times. Every other backend is one Triton model named after the ChatModel.
    """
    return tensorrtllm_names(model).trtllm if _is_gpu(model) else model.name


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

    def all(self) -> list[Manifest]:
        """The present children in apply order (the ConfigMap before the pods that mount it)."""
        ordered = (self.config_map, self.service, self.deployment, self.pdb, self.hpa)
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
    )
