"""Tests of the operator's pure renderers of a ChatModel's children (kubechat.operator.manifests).

Every rendered object is validated against the official Kubernetes 1.33 schemas (strict: unknown
fields fail); the rest checks what the schemas cannot: that the pieces fit together.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubechat.core.resources import AutoscalingSpec, ChatModel, load_chat_models, parse_chat_model
from kubechat.operator.manifests import (
    CHAT_MODEL_KEY,
    CONFIG_DIR,
    CONFIG_HASH_ANNOTATION,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    SPEC_HASH_LABEL,
    Children,
    cache_job_name,
    cache_name,
    config_map_items,
    grpc_endpoint,
    http_endpoint,
    pod_spec_hash,
    render_children,
    render_hpa,
    selector,
    selector_labels,
    service_name,
    spec_hash,
    triton_command,
)
from kubechat.operator.settings import OperatorSettings
from kubechat.triton.repository import (
    GPU_REPOSITORY_DIR,
    LLMAPI_MODEL_CODE,
    MODELS_ROOT,
    SCRATCH_DIR,
    SOURCE_PVC_DIR,
    TEXT_STREAM_CODE,
    TOKENIZER_DIR,
    WEIGHTS_DIR,
    llm_args,
    parse_model_config,
)

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.33"
SETTINGS = OperatorSettings(
    trtllm_image="nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3",
    cpu_image="ghcr.io/kubechat/triton-cpu:test",
    kubechat_image="ghcr.io/kubechat/kubechat:test",
    model_s3_endpoint="minio.storage.svc:9000",
    model_s3_secure=False,
)


def _document(name: str, namespace: str = "models", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubechat.io/v1alpha1",
        "kind": "ChatModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _gpu(name: str, **spec: Any) -> ChatModel:
    defaults: dict[str, Any] = {
        "engine": {"backend": "tensorrtllm"},
        "resources": {"gpus": 1},
        "source": {"huggingFace": {"repo": "meta-llama/Llama-3.1-8B-Instruct"}},
    }
    return parse_chat_model(_document(name, **{**defaults, **spec}))


def _table() -> dict[str, ChatModel]:
    models = {m.name: m for m in load_chat_models((ROOT / "examples" / "models").glob("*.yaml"))}
    models |= {m.name: m for m in load_chat_models((ROOT / "examples" / "cluster").glob("*.yaml"))}
    inline = [
        _gpu(
            "hf-autoscaled",
            source={
                "huggingFace": {"repo": "meta-llama/Llama-3.1-8B-Instruct", "tokenSecretRef": "hf-token"}
            },
            engine={"backend": "tensorrtllm", "dtype": "bfloat16", "maxBatchSize": 64},
            resources={"gpus": 1, "gpuType": "NVIDIA-H100-80GB-HBM3", "cpu": "8", "memory": "64Gi"},
            autoscaling={"minReplicas": 1, "maxReplicas": 4, "targetAverageValue": "2"},
            scheduling={
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "spot", "value": "true", "effect": "NoExecute", "tolerationSeconds": 60},
                ],
            },
        ),
        _gpu(
            "s3-weights",
            source={"s3": {"uri": "s3://models/llama/hf/", "credentialsSecretRef": "s3-creds"}},
            tokenizer={"s3": {"uri": "s3://models/tokenizers/llama/", "credentialsSecretRef": "s3-creds"}},
            replicas=3,
        ),
        _gpu(
            "tp2",
            engine={"backend": "tensorrtllm", "tensorParallelSize": 2, "quantization": "fp8"},
            resources={"gpus": 2},
            storage={"size": "200Gi", "storageClassName": "fast-nvme", "accessMode": "ReadWriteOnce"},
        ),
        _gpu("from-pvc", source={"pvc": {"claimName": "model-store", "path": "llama/hf"}}, replicas=0),
    ]
    return models | {m.name: m for m in inline}


MODELS = _table()
GPU_MODELS = sorted(n for n, m in MODELS.items() if m.spec.engine.backend == "tensorrtllm")
CPU_MODELS = sorted(n for n, m in MODELS.items() if m.spec.engine.backend != "tensorrtllm")


@pytest.fixture(scope="module")
def children() -> dict[str, Children]:
    return {name: render_children(model, SETTINGS) for name, model in MODELS.items()}


def _pod(children: Children) -> dict[str, Any]:
    spec: dict[str, Any] = children.deployment["spec"]["template"]["spec"]
    return spec


def _container(children: Children, name: str) -> dict[str, Any]:
    pod = _pod(children)
    found = [c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == name]
    assert len(found) == 1, f"no single container {name}"
    container: dict[str, Any] = found[0]
    return container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_the_table_covers_both_runtimes() -> None:
    """The table holds the example CPU models, and GPU models of every source kind."""
    assert {"smollm2", "minilm", "synthetic", "bge-base-en"} <= set(CPU_MODELS)
    assert {"hf-autoscaled", "s3-weights", "tp2", "from-pvc", "llama-3-1-8b-instruct"} <= set(GPU_MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_child_validates_against_the_kubernetes_schemas(
    children: dict[str, Children], name: str
) -> None:
    """Each rendered object is valid Kubernetes 1.33 (strict: no unknown fields) in the model's namespace."""
    for manifest in children[name].all():
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        assert manifest["metadata"]["namespace"] == MODELS[name].metadata.namespace
        assert "ownerReferences" not in manifest["metadata"]  # the operator adopts them


def test_schema_validation_is_strict() -> None:
    """The validator does reject an unknown field (so the test above means something)."""
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"bogus": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_names_and_labels(children: dict[str, Children], name: str) -> None:
    """Standard names and labels on every child; the spec hash labels them all."""
    model = MODELS[name]
    rendered = children[name]
    assert rendered.config_map["metadata"]["name"] == f"{name}-model-repository"
    for manifest in (rendered.deployment, rendered.service, rendered.pdb, rendered.hpa):
        if manifest is not None:
            assert manifest["metadata"]["name"] == f"{name}-triton"
    for manifest in rendered.all():
        labels = manifest["metadata"]["labels"]
        scaled = manifest["kind"] not in ("ConfigMap", "Service", "PersistentVolumeClaim", "Job")
        assert labels == {
            "app.kubernetes.io/name": "triton",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": "chat-model",
            "app.kubernetes.io/managed-by": "kubechat-operator",
            "kubechat.io/chat-model": name,
            SPEC_HASH_LABEL: spec_hash(model) if scaled else pod_spec_hash(model),
        }
    kinds = [m["kind"] for m in rendered.all() if m["kind"] not in ("PersistentVolumeClaim", "Job")]
    assert kinds[:3] == ["ConfigMap", "Service", "Deployment"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_selectors_match_the_pods(children: dict[str, Children], name: str) -> None:
    """The Deployment, Service and PDB select with the stable subset of the pod labels."""
    model = MODELS[name]
    rendered = children[name]
    wanted = selector_labels(model)
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert wanted.items() <= pod_labels.items()
    assert SPEC_HASH_LABEL not in pod_labels  # a changing label would orphan the pods
    assert rendered.deployment["spec"]["selector"] == {"matchLabels": wanted}
    assert rendered.service["spec"]["selector"] == wanted
    if rendered.pdb is not None:
        assert rendered.pdb["spec"]["selector"] == {"matchLabels": wanted}
    assert selector(model) == ",".join(f"{k}={v}" for k, v in sorted(wanted.items()))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_service_targets_the_named_container_ports(children: dict[str, Children], name: str) -> None:
    """ClusterIP Service: http 8000, grpc 8001, metrics 8002, each to a named port of Triton."""
    rendered = children[name]
    service = rendered.service["spec"]
    assert service["type"] == "ClusterIP"
    ports = {p["name"]: p for p in _container(rendered, "triton")["ports"]}
    assert {p["name"]: p["port"] for p in service["ports"]} == {
        "http": HTTP_PORT,
        "grpc": GRPC_PORT,
        "metrics": METRICS_PORT,
    }
    for port in service["ports"]:
        assert ports[port["targetPort"]]["containerPort"] == port["port"]
    model = MODELS[name]
    assert grpc_endpoint(model) == f"{name}-triton.{model.metadata.namespace}.svc:8001"
    assert http_endpoint(model) == f"{name}-triton.{model.metadata.namespace}.svc:8000"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_probes_hit_tritons_health_endpoints(children: dict[str, Children], name: str) -> None:
    """Startup and readiness on /v2/health/ready, liveness on /v2/health/live, all on the http port."""
    triton = _container(children[name], "triton")
    expected = {"startupProbe": "/v2/health/ready", "readinessProbe": "/v2/health/ready"}
    expected["livenessProbe"] = "/v2/health/live"
    for probe, path in expected.items():
        assert triton[probe]["httpGet"] == {"path": path, "port": "http"}
    startup = triton["startupProbe"]
    gpu = name in GPU_MODELS
    # Engine loading takes minutes: the startup probe's budget is generous.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= (1800 if gpu else 600)
    assert triton["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    grace = _pod(children[name])["terminationGracePeriodSeconds"]
    exit_timeout = int(
        next(a for a in triton["command"] if a.startswith("--exit-timeout-secs=")).split("=")[1]
    )
    assert grace > int(triton["lifecycle"]["preStop"]["exec"]["command"][1]) + exit_timeout


@pytest.mark.parametrize("name", GPU_MODELS)
def test_gpu_models_get_their_gpus_and_the_trtllm_image(children: dict[str, Children], name: str) -> None:
    """nvidia.com/gpu = resources.gpus on the one Triton container; no init step, no engine build."""
    model = MODELS[name]
    rendered = children[name]
    container = _container(rendered, "triton")
    assert container["image"] == SETTINGS.trtllm_image
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(model.spec.resources.gpus)
    assert "initContainers" not in _pod(rendered)


def test_a_chat_model_may_pin_its_own_image() -> None:
    pinned = "nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3"
    rendered = render_children(_gpu("pinned", engine={"backend": "tensorrtllm", "image": pinned}), SETTINGS)
    assert _container(rendered, "triton")["image"] == pinned


def test_cpu_model_from_hugging_face_is_fetched_then_rendered(children: dict[str, Children]) -> None:
    """bge-base-en: kubechat's image fetches the checkpoint, the CPU image renders from it."""
    pod = _pod(children["bge-base-en"])
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-weights", "render-repository"]
    render = _container(children["bge-base-en"], "render-repository")
    assert render["command"][render["command"].index("--weights") + 1] == WEIGHTS_DIR


def _job_container(children: Children, name: str) -> dict[str, Any]:
    assert children.cache_job is not None
    pod = children.cache_job["spec"]["template"]["spec"]
    found = [c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == name]
    assert len(found) == 1, f"no single container {name}"
    container: dict[str, Any] = found[0]
    return container


def test_hugging_face_weights_are_downloaded_once_into_the_weight_cache(
    children: dict[str, Children],
) -> None:
    """A Job fills the claim (kubechat's image, HF token from the Secret); every replica mounts
    the claim read-only, so no pod downloads anything."""
    rendered = children["hf-autoscaled"]
    assert rendered.cache_claim is not None and rendered.cache_job is not None
    name = cache_name(MODELS["hf-autoscaled"], SETTINGS)
    assert rendered.cache_claim["metadata"]["name"] == name
    assert rendered.cache_job["metadata"]["name"] == cache_job_name(MODELS["hf-autoscaled"], SETTINGS)
    fetch = _job_container(rendered, "fetch-weights")
    assert fetch["image"] == SETTINGS.kubechat_image
    assert fetch["securityContext"]["runAsNonRoot"] is True
    command = fetch["command"]
    assert command[:3] == ["python", "-m", "kubechat.operator.fetch"]
    assert command[command.index("--dest") + 1] == WEIGHTS_DIR
    source = MODELS["hf-autoscaled"].spec.source
    sent = yaml.safe_load(command[command.index("--source-json") + 1])
    assert (
        parse_chat_model(_document("x", source=sent, engine={"backend": "transformers"})).spec.source
        == source
    )
    assert _env(fetch)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}
    job_pod = rendered.cache_job["spec"]["template"]["spec"]
    assert job_pod["restartPolicy"] == "Never"
    assert job_pod["volumes"] == [{"name": "weights", "persistentVolumeClaim": {"claimName": name}}]
    pod = _pod(rendered)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["weights"]["persistentVolumeClaim"] == {"claimName": name, "readOnly": True}
    mounts = {m["name"]: m for m in _container(rendered, "triton")["volumeMounts"]}
    assert mounts["weights"] == {"name": "weights", "mountPath": MODELS_ROOT, "readOnly": True}
    assert rendered.cache_claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "storageClassName" not in rendered.cache_claim["spec"]  # the cluster's default class


def test_s3_weights_and_tokenizer_share_one_cache_job(children: dict[str, Children]) -> None:
    rendered = children["s3-weights"]
    assert rendered.cache_job is not None
    pod = rendered.cache_job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-weights"]
    assert [c["name"] for c in pod["containers"]] == ["fetch-tokenizer"]
    for name, dest in (("fetch-weights", WEIGHTS_DIR), ("fetch-tokenizer", TOKENIZER_DIR)):
        container = _job_container(rendered, name)
        assert container["command"][container["command"].index("--dest") + 1] == dest
        env = _env(container)
        assert env["KUBECHAT_S3_ENDPOINT"] == "minio.storage.svc:9000"
        assert env["KUBECHAT_S3_SECURE"] == "false"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key] == {"secretKeyRef": {"name": "s3-creds", "key": key}}


def test_the_cache_claim_follows_the_spec_then_the_operator_settings(children: dict[str, Children]) -> None:
    claim = children["tp2"].cache_claim
    assert claim is not None
    assert claim["spec"]["storageClassName"] == "fast-nvme"
    assert claim["spec"]["resources"]["requests"]["storage"] == "200Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    settings = SETTINGS.model_copy(
        update={"cache_storage_class": "nfs", "cache_access_mode": "ReadWriteMany"}
    )
    claim = render_children(MODELS["hf-autoscaled"], settings).cache_claim
    assert claim is not None
    assert (claim["spec"]["storageClassName"], claim["spec"]["accessModes"]) == ("nfs", ["ReadWriteMany"])


def test_the_cache_is_reused_across_engine_changes_and_renewed_for_a_new_source() -> None:
    """Its name follows what it holds: tuning the engine keeps the download, a new source does not."""
    base = _gpu("c")
    tuned = _gpu("c", engine={"backend": "tensorrtllm", "maxBatchSize": 64})
    moved = _gpu("c", source={"huggingFace": {"repo": "meta-llama/Llama-3.2-3B-Instruct"}})
    assert cache_name(tuned, SETTINGS) == cache_name(base, SETTINGS) != cache_name(moved, SETTINGS)
    # The operator's default class is part of the claim: another default is another claim.
    elsewhere = SETTINGS.model_copy(update={"cache_storage_class": "nfs"})
    assert cache_name(base, elsewhere) != cache_name(base, SETTINGS)
    job = render_children(base, SETTINGS).cache_job
    assert job is not None
    assert render_children(tuned, SETTINGS).cache_job["spec"] == job["spec"]  # type: ignore[index]


def test_pvc_source_is_mounted_read_only_and_needs_no_cache(children: dict[str, Children]) -> None:
    rendered = children["from-pvc"]
    assert rendered.cache_claim is None and rendered.cache_job is None
    pod = _pod(rendered)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["source"]["persistentVolumeClaim"] == {"claimName": "model-store", "readOnly": True}
    mounts = {m["name"]: m for m in _container(rendered, "triton")["volumeMounts"]}
    assert mounts["source"] == {"name": "source", "mountPath": SOURCE_PVC_DIR, "readOnly": True}
    args = yaml.safe_load(rendered.config_map["data"]["from-pvc__1__model.yaml"])
    assert args["model"] == f"{SOURCE_PVC_DIR}/llama/hf"


def test_gpu_pods_run_unprivileged_with_a_writable_scratch(children: dict[str, Children]) -> None:
    """Non-root, nothing to escalate; HF_HOME and the compile caches on an emptyDir, as the weights
    are read-only; ephemeral storage requested."""
    rendered = children["hf-autoscaled"]
    triton = _container(rendered, "triton")
    context = triton["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 1000
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
    env = _env(triton)
    for key in ("HOME", "HF_HOME", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        assert str(env[key]).startswith(SCRATCH_DIR), key
    mounts = {m["mountPath"]: m for m in triton["volumeMounts"]}
    assert not mounts[SCRATCH_DIR].get("readOnly")
    assert triton["resources"]["requests"]["ephemeral-storage"]
    assert _pod(rendered)["securityContext"]["fsGroup"] == 1000


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_container_requests_ephemeral_storage(children: dict[str, Children], name: str) -> None:
    rendered = children[name]
    pods = [_pod(rendered)]
    if rendered.cache_job is not None:
        pods.append(rendered.cache_job["spec"]["template"]["spec"])
    for pod in pods:
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            assert "ephemeral-storage" in container["resources"]["requests"], container["name"]


def test_gpu_taint_is_tolerated_by_default() -> None:
    assert _pod(render_children(_gpu("t"), SETTINGS))["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_a_gpu_rollout_keeps_the_old_pod_serving(children: dict[str, Children]) -> None:
    """maxSurge 1, maxUnavailable 0: the old pod serves until the new one (on a spare GPU) is ready."""
    strategy = children["hf-autoscaled"].deployment["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_tensor_parallel_model_runs_one_tritonserver(children: dict[str, Children]) -> None:
    """tp=2: one tritonserver; the LLM API starts a worker per GPU itself."""
    model = MODELS["tp2"]
    command = _container(children["tp2"], "triton")["command"]
    assert command == triton_command(model)
    assert command[0] == "tritonserver" and "mpirun" not in command
    assert f"--model-repository={GPU_REPOSITORY_DIR}" in command
    args = yaml.safe_load(children["tp2"].config_map["data"]["tp2__1__model.yaml"])
    assert args["tensor_parallel_size"] == 2
    single = _container(children["hf-autoscaled"], "triton")["command"]
    assert f"--grpc-port={GRPC_PORT}" in single and f"--http-port={HTTP_PORT}" in single
    assert f"--metrics-port={METRICS_PORT}" in single


def test_cpu_storage_volume_follows_the_spec() -> None:
    """CPU: an emptyDir of spec.storage.size, or a generic ephemeral volume of the storage class."""
    (smollm2,) = load_chat_models([ROOT / "examples" / "models" / "smollm2.yaml"])
    volumes = {v["name"]: v for v in _pod(render_children(smollm2, SETTINGS))["volumes"]}
    assert volumes["models"] == {"name": "models", "emptyDir": {"sizeLimit": "50Gi"}}
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    storage = smollm2.spec.storage.model_copy(update={"storage_class_name": "fast-nvme", "size": "200Gi"})
    classed = smollm2.model_copy(update={"spec": smollm2.spec.model_copy(update={"storage": storage})})
    claim = {v["name"]: v for v in _pod(render_children(classed, SETTINGS))["volumes"]}["models"][
        "ephemeral"
    ]["volumeClaimTemplate"]
    assert claim["spec"]["storageClassName"] == "fast-nvme"
    assert claim["spec"]["resources"]["requests"]["storage"] == "200Gi"


def test_scheduling_and_pod_metadata(children: dict[str, Children]) -> None:
    model = MODELS["hf-autoscaled"]
    rendered = children["hf-autoscaled"]
    pod = _pod(rendered)
    assert pod["nodeSelector"] == {"pool": "gpu", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute", "tolerationSeconds": 60},
    ]
    annotations = rendered.deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations[SPEC_HASH_LABEL] == pod_spec_hash(model)
    assert re.fullmatch(r"[0-9a-f]{16}", annotations[CONFIG_HASH_ANNOTATION])


def test_replicas_pdb_and_hpa(children: dict[str, Children]) -> None:
    """The HPA owns replicas when autoscaling is on; a PDB only where more than one replica can run."""
    autoscaled = children["hf-autoscaled"]
    assert "replicas" not in autoscaled.deployment["spec"]
    assert autoscaled.hpa is not None and autoscaled.pdb is not None
    hpa = autoscaled.hpa["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "hf-autoscaled-triton",
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 4)
    # The model's queue: one Triton model per ChatModel, the GPU one included.
    assert hpa["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {
                    "name": "kubechat_triton_queued_requests",
                    "selector": {"matchLabels": {"model": "hf-autoscaled"}},
                },
                "target": {"type": "AverageValue", "averageValue": "2"},
            },
        }
    ]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert autoscaled.pdb["spec"]["maxUnavailable"] == 1

    fixed = children["s3-weights"]
    assert fixed.deployment["spec"]["replicas"] == 3
    assert fixed.hpa is None and fixed.pdb is not None
    single = children["smollm2"]
    assert single.deployment["spec"]["replicas"] == 1
    assert single.pdb is None and single.hpa is None
    assert children["from-pvc"].deployment["spec"]["replicas"] == 0
    one_max = render_children(_gpu("one", autoscaling={"minReplicas": 1, "maxReplicas": 1}), SETTINGS)
    assert one_max.hpa is not None and one_max.pdb is None
    assert [m["kind"] for m in one_max.all()] == [
        "ConfigMap",
        "Service",
        "PersistentVolumeClaim",
        "Job",
        "Deployment",
        "HorizontalPodAutoscaler",
    ]


def test_a_cpu_model_scales_on_its_own_triton_model() -> None:
    (minilm,) = load_chat_models([ROOT / "examples" / "models" / "minilm.yaml"])
    model = minilm.model_copy(
        update={"spec": minilm.spec.model_copy(update={"autoscaling": AutoscalingSpec(max_replicas=3)})}
    )
    hpa = render_hpa(model)
    assert hpa is not None
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["selector"] == {"matchLabels": {"model": "minilm"}}


def test_spec_hash_follows_the_spec_not_the_metadata() -> None:
    """A spec change changes the hash; labels and annotations do not; scaling does not roll pods."""
    document = _document(
        "h",
        engine={"backend": "tensorrtllm"},
        resources={"gpus": 1},
        source={"huggingFace": {"repo": "x/y"}},
    )
    base = parse_chat_model(document)
    relabelled = parse_chat_model(
        {**document, "metadata": {**document["metadata"], "labels": {"team": "ml"}}}
    )
    assert spec_hash(relabelled) == spec_hash(base)
    assert re.fullmatch(r"[0-9a-f]{16}", spec_hash(base))
    engine = {"backend": "tensorrtllm", "maxBatchSize": 16}
    bigger = parse_chat_model({**document, "spec": {**document["spec"], "engine": engine}})
    assert spec_hash(bigger) != spec_hash(base)
    assert pod_spec_hash(bigger) != pod_spec_hash(base)
    scaled = parse_chat_model({**document, "spec": {**document["spec"], "replicas": 5}})
    assert spec_hash(scaled) != spec_hash(base)
    assert pod_spec_hash(scaled) == pod_spec_hash(base)
    template = render_children(base, SETTINGS).deployment["spec"]["template"]
    assert render_children(scaled, SETTINGS).deployment["spec"]["template"] == template
    assert render_children(bigger, SETTINGS).deployment["spec"]["template"] != template


def test_long_names_still_give_valid_service_names() -> None:
    """A 63-character model name gives a ≤ 63-character Service name, as does a leading digit."""
    for name in ("a" * 63, "7b-chat"):
        model = _gpu(name)
        rendered = render_children(model, SETTINGS)
        service = service_name(model)
        assert len(service) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", service), service
        for manifest in rendered.all():
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        assert rendered.hpa is None
    assert service_name(_gpu("a" * 63)) != service_name(_gpu("a" * 62))


@pytest.mark.parametrize("name", GPU_MODELS)
def test_config_map_is_the_model_repository(children: dict[str, Children], name: str) -> None:
    """config.pbtxt (parsable, named after the model), kubechat's LLM API model.py and its
    text_stream.py byte for byte, and model.yaml; every key a valid ConfigMap key."""
    model = MODELS[name]
    data = children[name].config_map["data"]
    assert set(data) == {
        f"{name}__config.pbtxt",
        f"{name}__1__model.py",
        f"{name}__1__text_stream.py",
        f"{name}__1__model.yaml",
    }
    assert parse_model_config(data[f"{name}__config.pbtxt"]).name == name
    assert data[f"{name}__1__model.py"] == LLMAPI_MODEL_CODE.read_text()
    assert data[f"{name}__1__text_stream.py"] == TEXT_STREAM_CODE.read_text()
    assert yaml.safe_load(data[f"{name}__1__model.yaml"]) == llm_args(model)
    for key in data:
        assert re.fullmatch(r"[-._a-zA-Z0-9]+", key)


def _materialize_config_map(data: dict[str, str], items: list[dict[str, Any]], mount: Path) -> None:
    """Lay out a ConfigMap volume as the kubelet does: files in a timestamped folder behind symlinks."""
    stamp = mount / "..2026_01_01_00_00_00.000000001"
    for item in items:
        target = stamp / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[item["key"]])
    (mount / "..data").symlink_to(stamp.name)
    for top in {item["path"].split("/")[0] for item in items}:
        (mount / top).symlink_to(f"..data/{top}")


@pytest.mark.parametrize("name", ["s3-weights", "tp2"])
def test_config_map_items_lay_out_a_triton_repository(
    children: dict[str, Children], name: str, tmp_path: Path
) -> None:
    """Mounted as the kubelet mounts it, the ConfigMap is a Triton repository: one folder named after
    the model with its config.pbtxt and a version folder holding model.py beside what it imports."""
    model = MODELS[name]
    rendered = children[name]
    volume = _pod(rendered)["volumes"][0]
    assert volume["configMap"]["items"] == config_map_items(model)
    _materialize_config_map(rendered.config_map["data"], config_map_items(model), tmp_path)
    folder = tmp_path / name
    assert parse_model_config((folder / "config.pbtxt").read_text()).name == name
    assert {p.name for p in (folder / "1").iterdir()} == {"model.py", "text_stream.py", "model.yaml"}
    args = yaml.safe_load((folder / "1" / "model.yaml").read_text())
    assert args["backend"] == "pytorch"
    compile((folder / "1" / "model.py").read_text(), "model.py", "exec")


def test_cpu_config_map_mounts_the_chat_model(children: dict[str, Children]) -> None:
    """CPU models: the ConfigMap holds the ChatModel YAML where the render step reads it."""
    rendered = children["smollm2"]
    assert config_map_items(MODELS["smollm2"]) == [{"key": CHAT_MODEL_KEY, "path": CHAT_MODEL_KEY}]
    render = _container(rendered, "render-repository")
    assert render["command"][render["command"].index("--model") + 1] == f"{CONFIG_DIR}/{CHAT_MODEL_KEY}"
    mounts = {m["name"]: m["mountPath"] for m in render["volumeMounts"]}
    assert mounts["config"] == CONFIG_DIR


def test_cpu_model_from_a_pvc_with_a_fetched_tokenizer() -> None:
    """A CPU LLM read from a claim, with its tokenizer from Hugging Face: mount, fetch, render."""
    model = parse_chat_model(
        _document(
            "pvc-cpu",
            engine={"backend": "transformers"},
            source={"pvc": {"claimName": "models", "path": "/smollm2/"}},
            tokenizer={"huggingFace": {"repo": "HuggingFaceTB/SmolLM2-135M-Instruct"}},
        )
    )
    rendered = render_children(model, SETTINGS)
    for manifest in rendered.all():
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    assert [c["name"] for c in _pod(rendered)["initContainers"]] == ["fetch-tokenizer", "render-repository"]
    command = _container(rendered, "render-repository")["command"]
    assert command[command.index("--weights") + 1] == f"{SOURCE_PVC_DIR}/smollm2"
    assert command[command.index("--tokenizer") + 1] == TOKENIZER_DIR


@pytest.mark.parametrize("name", sorted(MODELS))
def test_scaling_leaves_the_config_map_and_service_alone(name: str) -> None:
    """A replicas or autoscaling change must not patch the model repository (tens of KB) or
    the Service: only what scaling is about changes."""
    model = MODELS[name]
    scaled = model.model_copy(
        update={"spec": model.spec.model_copy(update={"replicas": model.spec.replicas + 2})}
    )
    before, after = render_children(model, SETTINGS), render_children(scaled, SETTINGS)
    assert after.config_map == before.config_map and after.service == before.service
    assert after.deployment != before.deployment


def test_the_cache_job_reports_progress_with_the_charts_service_account() -> None:
    """With the chart's account the weights' fetch annotates its own Job; without, no token at all."""
    model = MODELS["s3-weights"]
    plain = render_children(model, SETTINGS).cache_job
    assert plain is not None
    pod = plain["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    settings = SETTINGS.model_copy(update={"cache_service_account": "kubechat-weight-cache"})
    rendered = render_children(model, settings)
    assert rendered.cache_job is not None
    pod = rendered.cache_job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kubechat-weight-cache"
    assert pod["automountServiceAccountToken"] is True
    weights = _job_container(rendered, "fetch-weights")
    command = weights["command"]
    assert command[command.index("--report-job") + 1] == rendered.cache_job["metadata"]["name"]
    assert _env(weights)["KUBECHAT_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "--report-job" not in _job_container(rendered, "fetch-tokenizer")["command"]
    kubernetes_validate.validate(rendered.cache_job, KUBERNETES_VERSION, strict=True)


def test_a_new_job_template_is_a_new_job() -> None:
    """Job templates are immutable: what changes the template changes the Job's name (the download
    is complete, so the new Job succeeds at once); what does not keeps it."""
    model = MODELS["hf-autoscaled"]
    name = cache_job_name(model, SETTINGS)
    assert cache_job_name(model, SETTINGS.model_copy(update={"kubechat_image": "kubechat:next"})) != name
    fp8 = _gpu("hf-autoscaled", engine={"backend": "tensorrtllm", "quantization": "fp8"})
    assert cache_job_name(fp8, SETTINGS) != cache_job_name(_gpu("hf-autoscaled"), SETTINGS)
    tuned = _gpu("hf-autoscaled", engine={"backend": "tensorrtllm", "maxBatchSize": 128})
    assert cache_job_name(tuned, SETTINGS) == cache_job_name(_gpu("hf-autoscaled"), SETTINGS)
    assert len(cache_job_name(_gpu("a" * 63), SETTINGS)) <= 63
