"""Tests of the operator's pure renderers of a ChatModel's children (kubechat.operator.manifests).

Every rendered object is validated against the official Kubernetes 1.33 schemas (strict: unknown
fields fail); the rest checks what the schemas cannot: that the pieces fit together.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubechat.core.resources import AutoscalingSpec, ChatModel, load_chat_models, parse_chat_model
from kubechat.operator.manifests import (
    BUILD_SCRIPT_KEY,
    CHAT_MODEL_KEY,
    CONFIG_DIR,
    CONFIG_HASH_ANNOTATION,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    SPEC_HASH_LABEL,
    Children,
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
    ENGINE_DIR,
    REPOSITORY_DIR,
    SOURCE_PVC_DIR,
    TOKENIZER_DIR,
    WEIGHTS_DIR,
    parse_model_config,
    tensorrtllm_names,
)

ROOT = Path(__file__).resolve().parents[2]
BUILD_ENGINE_MODULE = ROOT / "kubechat" / "operator" / "scripts" / "build_engine.py"
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
            "prebuilt-s3",
            source={"s3": {"uri": "s3://models/engines/llama/", "credentialsSecretRef": "s3-creds"}},
            tokenizer={"s3": {"uri": "s3://models/tokenizers/llama/", "credentialsSecretRef": "s3-creds"}},
            engine={"backend": "tensorrtllm", "prebuilt": True},
            replicas=3,
        ),
        _gpu(
            "tp2",
            engine={"backend": "tensorrtllm", "tensorParallelSize": 2, "quantization": "fp8"},
            resources={"gpus": 2},
            storage={"size": "200Gi", "storageClassName": "fast-nvme"},
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
    assert {"hf-autoscaled", "prebuilt-s3", "tp2", "from-pvc", "llama-3-1-8b-instruct"} <= set(GPU_MODELS)


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
        scaled = manifest["kind"] not in ("ConfigMap", "Service")
        assert labels == {
            "app.kubernetes.io/name": "triton",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": "chat-model",
            "app.kubernetes.io/managed-by": "kubechat-operator",
            "kubechat.io/chat-model": name,
            SPEC_HASH_LABEL: spec_hash(model) if scaled else pod_spec_hash(model),
        }
    assert [m["kind"] for m in rendered.all()][:3] == ["ConfigMap", "Service", "Deployment"]


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
    """nvidia.com/gpu limits = resources.gpus on the build and serve containers; gpu type pins nodes."""
    model = MODELS[name]
    rendered = children[name]
    gpus = model.spec.resources.gpus
    for container_name in ("build-engine", "triton"):
        container = _container(rendered, container_name)
        assert container["image"] == SETTINGS.trtllm_image
        resources = container["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == str(gpus)
        assert resources["requests"]["nvidia.com/gpu"] == str(gpus)
        assert resources["limits"]["memory"] == resources["requests"]["memory"] == model.spec.resources.memory
        assert resources["requests"]["cpu"] == model.spec.resources.cpu
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    pod = _pod(rendered)
    if model.spec.resources.gpu_type:
        assert pod["nodeSelector"]["nvidia.com/gpu.product"] == model.spec.resources.gpu_type
    # GPUs are scarce: no surge pod waiting for a GPU only the old pod frees.
    assert rendered.deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


@pytest.mark.parametrize("name", CPU_MODELS)
def test_cpu_models_render_their_repository_in_the_cpu_image(
    children: dict[str, Children], name: str
) -> None:
    """CPU models: no GPUs, the CPU image, non-root, and kubechat's renderer as the init step."""
    model = MODELS[name]
    rendered = children[name]
    triton = _container(rendered, "triton")
    assert triton["image"] == SETTINGS.cpu_image
    assert "nvidia.com/gpu" not in triton["resources"]["limits"]
    assert triton["securityContext"]["runAsNonRoot"] is True
    assert "strategy" not in rendered.deployment["spec"]  # the default rolling update
    render = _container(rendered, "render-repository")
    assert render["image"] == SETTINGS.cpu_image
    assert render["command"][:3] == ["python", "-m", "kubechat.operator.render_repository"]
    assert render["command"][render["command"].index("--out") + 1] == REPOSITORY_DIR
    assert triton["command"][:2] == ["tritonserver", f"--model-repository={REPOSITORY_DIR}"]
    document = yaml.safe_load(rendered.config_map["data"][CHAT_MODEL_KEY])
    assert parse_chat_model(document).spec == model.spec.model_copy(
        update={"replicas": 1, "autoscaling": None}
    )
    if model.spec.source.package is not None or not model.spec.engine.backend.loads_weights:
        assert "--weights" not in render["command"]
        assert not any(c["name"] == "fetch-weights" for c in _pod(rendered)["initContainers"])


def test_cpu_model_from_hugging_face_is_fetched_then_rendered(children: dict[str, Children]) -> None:
    """bge-base-en: kubechat's image fetches the checkpoint, the CPU image renders from it."""
    pod = _pod(children["bge-base-en"])
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-weights", "render-repository"]
    render = _container(children["bge-base-en"], "render-repository")
    assert render["command"][render["command"].index("--weights") + 1] == WEIGHTS_DIR


def test_init_steps_of_a_hugging_face_gpu_model(children: dict[str, Children]) -> None:
    """Fetch (kubechat image, HF token from the Secret), then build the engine (TRT-LLM image)."""
    rendered = children["hf-autoscaled"]
    assert [c["name"] for c in _pod(rendered)["initContainers"]] == ["fetch-weights", "build-engine"]
    fetch = _container(rendered, "fetch-weights")
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
    env = _env(fetch)
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}
    build = _env(_container(rendered, "build-engine"))
    assert build["KUBECHAT_CHECKPOINT_DIR"] == WEIGHTS_DIR
    assert build["KUBECHAT_ENGINE_DIR"] == ENGINE_DIR
    assert build["KUBECHAT_PREBUILT"] == "false"
    assert build["KUBECHAT_MAX_BATCH_SIZE"] == "64"
    assert build["KUBECHAT_MAX_SEQ_LEN"] == str(2048 + 512)
    assert build["KUBECHAT_TEMPLATES_DIR"] == SETTINGS.trtllm_model_templates_dir


def test_init_steps_of_a_prebuilt_s3_engine(children: dict[str, Children]) -> None:
    """Weights and tokenizer come from S3 with the Secret's credentials; the engine is not built."""
    rendered = children["prebuilt-s3"]
    assert [c["name"] for c in _pod(rendered)["initContainers"]] == [
        "fetch-weights",
        "fetch-tokenizer",
        "build-engine",
    ]
    for name, dest in (("fetch-weights", WEIGHTS_DIR), ("fetch-tokenizer", TOKENIZER_DIR)):
        container = _container(rendered, name)
        assert container["command"][container["command"].index("--dest") + 1] == dest
        env = _env(container)
        assert env["KUBECHAT_S3_ENDPOINT"] == "minio.storage.svc:9000"
        assert env["KUBECHAT_S3_SECURE"] == "false"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key] == {"secretKeyRef": {"name": "s3-creds", "key": key}}
    build = _env(_container(rendered, "build-engine"))
    assert build["KUBECHAT_PREBUILT"] == "true"
    assert build["KUBECHAT_ENGINE_DIR"] == WEIGHTS_DIR
    # Even a prebuilt engine gets the tokenizer info guided decoding reads, from its own tokenizer.
    assert build["KUBECHAT_TOKENIZER_DIR"] == TOKENIZER_DIR
    assert build["KUBECHAT_XGRAMMAR_TOKENIZER_INFO"] == "/models/xgrammar/xgrammar_tokenizer_info.json"


def test_pvc_source_is_mounted_read_only_not_fetched(children: dict[str, Children]) -> None:
    rendered = children["from-pvc"]
    pod = _pod(rendered)
    assert [c["name"] for c in pod["initContainers"]] == ["build-engine"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["source"]["persistentVolumeClaim"] == {"claimName": "model-store", "readOnly": True}
    for name in ("build-engine", "triton"):
        mounts = {m["name"]: m for m in _container(rendered, name)["volumeMounts"]}
        assert mounts["source"] == {"name": "source", "mountPath": SOURCE_PVC_DIR, "readOnly": True}
    assert (
        _env(_container(rendered, "build-engine"))["KUBECHAT_CHECKPOINT_DIR"] == f"{SOURCE_PVC_DIR}/llama/hf"
    )


def test_tensor_parallel_model_runs_one_mpi_rank_per_gpu(children: dict[str, Children]) -> None:
    """tp=2: mpirun starts two tritonservers; rank 1 loads only the engine model."""
    model = MODELS["tp2"]
    command = _container(children["tp2"], "triton")["command"]
    assert command == triton_command(model)
    assert command[:2] == ["mpirun", "--allow-run-as-root"]
    ranks = " ".join(command[2:]).split(" : ")
    assert len(ranks) == 2
    assert all(r.startswith("-n 1 tritonserver ") for r in ranks)
    assert "--load-model" not in ranks[0]
    assert f"--load-model={tensorrtllm_names(model).trtllm}" in ranks[1]
    assert "shm-region-prefix-name=prefix0_" in ranks[0]
    assert "shm-region-prefix-name=prefix1_" in ranks[1]
    single = _container(children["hf-autoscaled"], "triton")["command"]
    assert single[0] == "tritonserver"
    assert f"--grpc-port={GRPC_PORT}" in single and f"--http-port={HTTP_PORT}" in single
    assert f"--metrics-port={METRICS_PORT}" in single


def test_storage_volume_follows_the_spec(children: dict[str, Children]) -> None:
    """emptyDir of spec.storage.size, or a generic ephemeral volume of the storage class; shm in memory."""
    volumes = {v["name"]: v for v in _pod(children["hf-autoscaled"])["volumes"]}
    assert volumes["models"] == {"name": "models", "emptyDir": {"sizeLimit": "50Gi"}}
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    claim = {v["name"]: v for v in _pod(children["tp2"])["volumes"]}["models"]["ephemeral"][
        "volumeClaimTemplate"
    ]
    assert claim["spec"]["storageClassName"] == "fast-nvme"
    assert claim["spec"]["resources"]["requests"]["storage"] == "200Gi"
    mounts = {m["mountPath"] for m in _container(children["tp2"], "triton")["volumeMounts"]}
    assert {"/models", "/dev/shm"} <= mounts


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
    # The engine's queue alone, not a sum over the ensemble's four Triton models.
    assert hpa["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {
                    "name": "kubechat_triton_queued_requests",
                    "selector": {"matchLabels": {"model": "hf-autoscaled-trtllm"}},
                },
                "target": {"type": "AverageValue", "averageValue": "2"},
            },
        }
    ]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert autoscaled.pdb["spec"]["maxUnavailable"] == 1

    fixed = children["prebuilt-s3"]
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
def test_config_map_holds_parsable_configs(children: dict[str, Children], name: str) -> None:
    """The four config.pbtxt parse into Triton's ModelConfig, each named as its key says."""
    model = MODELS[name]
    data = children[name].config_map["data"]
    names = tensorrtllm_names(model)
    assert set(data) == {f"{n}__config.pbtxt" for n in names.all()} | {BUILD_SCRIPT_KEY}
    for key, text in data.items():
        if key.endswith("__config.pbtxt"):
            assert parse_model_config(text).name == key.removesuffix("__config.pbtxt")
        assert re.fullmatch(r"[-._a-zA-Z0-9]+", key)  # what a ConfigMap key may be
    compile(data[BUILD_SCRIPT_KEY], BUILD_SCRIPT_KEY, "exec")


@pytest.mark.parametrize("name", GPU_MODELS)
def test_config_map_ships_the_build_engine_module_verbatim(children: dict[str, Children], name: str) -> None:
    """What the GPU pod runs is the module that ruff, mypy and these tests check, byte for byte."""
    assert children[name].config_map["data"][BUILD_SCRIPT_KEY] == BUILD_ENGINE_MODULE.read_text()


def test_build_engine_module_needs_only_the_standard_library_and_tensorrt_llms_image() -> None:
    """It runs under the TensorRT-LLM image's python3, where kubechat is not installed; its
    TensorRT-LLM imports are lazy, so the subprocess runs below cannot catch a stray import."""
    tree = ast.parse(BUILD_ENGINE_MODULE.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    top_level = {name.partition(".")[0] for name in imported}
    # transformers is TensorRT-LLM's own dependency, in the same image (the tokenizer loader of
    # NVIDIA's generate_xgrammar_tokenizer_info.py, which write_xgrammar_tokenizer_info follows).
    assert top_level - set(sys.stdlib_module_names) == {"tensorrt_llm", "transformers"}


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


def _fake_templates(root: Path) -> Path:
    for role in ("preprocessing", "postprocessing"):
        code = root / role / "1" / "model.py"
        code.parent.mkdir(parents=True)
        code.write_text(f"# NVIDIA's {role} model\n")
    return root


def _run_build_script(
    children: Children, tmp_path: Path, **overrides: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the build-engine step against a kubelet-style ConfigMap volume under tmp_path."""
    mount = tmp_path / "config"
    mount.mkdir()
    data = children.config_map["data"]
    volume = next(v for v in _pod(children)["volumes"] if v["name"] == "config")
    _materialize_config_map(data, volume["configMap"]["items"], mount)
    env = _env(_container(children, "build-engine"))
    repository = tmp_path / "repository"
    # Pretend the volume holds the tokenizer info of this spec (writing it needs TensorRT-LLM).
    tokenizer_info = tmp_path / "xgrammar_tokenizer_info.json"
    tokenizer_info.write_text("{}")
    tokenizer_info.with_name(tokenizer_info.name + ".key").write_text(str(env["KUBECHAT_ENGINE_KEY"]))
    env |= {
        "KUBECHAT_REPOSITORY_SOURCE": str(
            mount / env["KUBECHAT_REPOSITORY_SOURCE"].removeprefix(CONFIG_DIR + "/")
        ),
        "KUBECHAT_REPOSITORY_DIR": str(repository),
        "KUBECHAT_TEMPLATES_DIR": str(_fake_templates(tmp_path / "templates")),
        "KUBECHAT_ENGINE_DIR": str(tmp_path / "engine"),
        "KUBECHAT_XGRAMMAR_TOKENIZER_INFO": str(tokenizer_info),
        **overrides,
    }
    script = mount / BUILD_SCRIPT_KEY
    result = subprocess.run(
        [sys.executable, "-S", str(script)],  # no site-packages: kubechat is not in the image either
        env={"PATH": os.environ["PATH"], **{k: v for k, v in env.items() if isinstance(v, str)}},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, repository


@pytest.mark.parametrize("name", ["prebuilt-s3", "tp2"])
def test_config_map_items_lay_out_a_triton_repository(
    children: dict[str, Children], name: str, tmp_path: Path
) -> None:
    """The ConfigMap's items, copied by the build step, plus NVIDIA's model.py form a repository:
    one folder per model with its config.pbtxt and a version folder, python models with code."""
    model = MODELS[name]
    rendered = children[name]
    assert _pod(rendered)["volumes"][0]["configMap"]["items"] == config_map_items(model)
    if not model.spec.engine.prebuilt:  # pretend the engine of this spec is on the volume
        engine = tmp_path / "engine"
        engine.mkdir()
        key = _env(_container(rendered, "build-engine"))["KUBECHAT_ENGINE_KEY"]
        (engine / ".kubechat-engine-key").write_text(key)
    result, repository = _run_build_script(rendered, tmp_path)
    assert result.returncode == 0, result.stderr
    names = tensorrtllm_names(model)
    assert sorted(p.name for p in repository.iterdir()) == sorted(names.all())
    for folder in repository.iterdir():
        config = parse_model_config((folder / "config.pbtxt").read_text())
        assert config.name == folder.name
        assert (folder / "1").is_dir()
        assert not (folder / "config.pbtxt").is_symlink()
    for python_model in (names.preprocessing, names.postprocessing):
        assert (repository / python_model / "1" / "model.py").read_text().startswith("# NVIDIA's")
    if not model.spec.engine.prebuilt:
        assert "already built" in result.stdout


def test_build_step_names_the_setting_when_nvidias_models_are_missing(
    children: dict[str, Children], tmp_path: Path
) -> None:
    """An image without NVIDIA's model.py fails the init step with a message that says what to set."""
    result, _ = _run_build_script(
        children["prebuilt-s3"], tmp_path, KUBECHAT_TEMPLATES_DIR=str(tmp_path / "nope")
    )
    assert result.returncode != 0
    assert "KUBECHAT_OPERATOR_TRTLLM_MODEL_TEMPLATES_DIR" in result.stderr


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
