"""A GPU model's weight cache against kmock: the claim and the Job that fills it, the status
through the Job's lifecycle (Pending -> Downloading -> Ready, and a failed download), and the
Deployment that waits for it. kmock runs no controllers: the tests write the Job's status as the
Job controller would, and its progress annotations as the fetch step does."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from kubechat.core.resources import ModelSource, parse_chat_model
from kubechat.operator.fetch import FetchError, JobProgress, check_quantization, fetch_source
from kubechat.operator.fetch import main as fetch_main
from kubechat.operator.kube import Kube
from kubechat.operator.manifests import (
    CACHE_BYTES_ANNOTATION,
    CACHE_TOTAL_ANNOTATION,
    cache_job_name,
    cache_name,
)
from kubechat.operator.settings import OperatorSettings
from tests.operator.conftest import NAMESPACE, Cluster
from tests.polling import eventually
from tests.s3_server import S3Endpoint, unique_bucket_name

NAME = "mistral"
TRITON = f"{NAME}-triton"
MERGE = "application/merge-patch+json"
# Each step is a chain of watch events through kopf; on a loaded machine it can take longer than
# the polling default.
WAIT_S = 30.0

DOCUMENT: dict[str, Any] = {
    "apiVersion": "kubechat.io/v1alpha1",
    "kind": "ChatModel",
    "metadata": {"name": NAME, "namespace": NAMESPACE},
    "spec": {
        "source": {"huggingFace": {"repo": "mistralai/Mistral-7B-Instruct-v0.3"}},
        "engine": {"backend": "tensorrtllm"},
        "resources": {"gpus": 1},
        "storage": {"size": "40Gi", "storageClassName": "nfs-client"},
    },
}
CACHE = cache_name(parse_chat_model(DOCUMENT), OperatorSettings())  # the claim


def job_name(document: dict[str, Any]) -> str:
    """The Job's name, as the operator of these tests (default images and S3 settings) names it."""
    return cache_job_name(parse_chat_model(document), OperatorSettings())


JOB = job_name(DOCUMENT)


async def read(cluster: Cluster, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
    stub = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": NAMESPACE}}
    return await Kube(cluster.api).read(stub)


async def cache_status(cluster: Cluster, phase: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status = await cluster.status("ChatModel", NAME)
        cache = status.get("cache") or {}
        return status if cache.get("phase") == phase else None

    found: dict[str, Any] = await eventually(check, within_s=WAIT_S, what=f"cache phase {phase}")
    return found


async def set_job(
    cluster: Cluster, status: dict[str, Any], annotations: dict[str, str] | None = None
) -> None:
    batch: Any = client.BatchV1Api(cluster.api)  # the stubs lack _content_type
    if annotations:
        await batch.patch_namespaced_job(
            JOB, NAMESPACE, {"metadata": {"annotations": annotations}}, _content_type=MERGE
        )
    await batch.patch_namespaced_job_status(JOB, NAMESPACE, {"status": status}, _content_type=MERGE)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


async def test_the_cache_is_downloaded_before_any_pod_starts(cluster: Cluster) -> None:
    await cluster.create(DOCUMENT)
    claim = await eventually(
        lambda: read(cluster, "v1", "PersistentVolumeClaim", CACHE), within_s=WAIT_S, what="the claim"
    )
    assert claim["spec"]["storageClassName"] == "nfs-client"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    job = await eventually(lambda: read(cluster, "batch/v1", "Job", JOB), within_s=WAIT_S, what="the Job")
    assert job["metadata"]["ownerReferences"][0]["name"] == NAME

    # Pending: the Job has no running pod yet; no Deployment, so no pod tries to load nothing.
    status = await cache_status(cluster, "Pending")
    assert status["phase"] == "Pending"
    assert conditions(status)["Ready"]["reason"] == "DownloadPending"
    assert conditions(status)["WeightsCached"]["status"] == "False"
    assert await read(cluster, "apps/v1", "Deployment", TRITON) is None

    # Downloading, with the progress the fetch step writes on its Job.
    total = 14_496_000_000
    await set_job(
        cluster, {"active": 1}, {CACHE_BYTES_ANNOTATION: "1000000", CACHE_TOTAL_ANNOTATION: str(total)}
    )
    status = await cache_status(cluster, "Downloading")
    assert status["cache"] == {"phase": "Downloading", "bytes": 1_000_000, "total": total}
    assert status["phase"] == "Progressing"
    assert conditions(status)["Progressing"]["reason"] == "Downloading"
    assert await read(cluster, "apps/v1", "Deployment", TRITON) is None

    # Ready: the Deployment is made, mounting the cache read-only.
    await set_job(cluster, {"active": 0, "succeeded": 1}, {CACHE_BYTES_ANNOTATION: str(total)})
    status = await cache_status(cluster, "Ready")
    assert status["cache"] == {"phase": "Ready", "bytes": total, "total": total}
    assert conditions(status)["WeightsCached"]["status"] == "True"
    deployment = await eventually(
        lambda: read(cluster, "apps/v1", "Deployment", TRITON), within_s=WAIT_S, what="the Deployment"
    )
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["weights"]["persistentVolumeClaim"] == {"claimName": CACHE, "readOnly": True}


async def test_a_failed_download_says_why(cluster: Cluster) -> None:
    await cluster.create(DOCUMENT)
    await eventually(lambda: read(cluster, "batch/v1", "Job", JOB), within_s=WAIT_S, what="the Job")
    message = "Job has reached the specified backoff limit"
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": message}
    await set_job(cluster, {"active": 0, "failed": 5, "conditions": [failed]})
    status = await cache_status(cluster, "Failed")
    assert status["phase"] == "Failed"
    ready = conditions(status)["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "WeightsDownloadFailed"
    assert message in ready["message"]
    assert conditions(status)["Degraded"]["status"] == "True"
    assert await read(cluster, "apps/v1", "Deployment", TRITON) is None


async def test_the_fetch_step_reports_its_progress_on_its_job(
    cluster: Cluster, s3: S3Endpoint, tmp_path: Path
) -> None:
    """The real fetch (from moto's S3) writes bytes and total on the Job as it goes; the operator
    copies them into status.cache: the whole chain but the in-cluster token."""
    bucket = unique_bucket_name()
    minio = s3.client()
    minio.make_bucket(bucket_name=bucket)
    files = {"config.json": b"{}", "model-00001.safetensors": os.urandom(200_000), "tokenizer.json": b"{}"}
    for key, data in files.items():
        minio.put_object(bucket_name=bucket, object_name=f"m/{key}", data=io.BytesIO(data), length=len(data))
    document = copy.deepcopy(DOCUMENT)
    document["spec"]["source"] = {"s3": {"uri": f"s3://{bucket}/m/"}}
    name = job_name(document)
    await cluster.create(document)
    await eventually(lambda: read(cluster, "batch/v1", "Job", name), within_s=WAIT_S, what="the Job")

    env = {
        "KUBECHAT_S3_ENDPOINT": s3.endpoint,
        "KUBECHAT_S3_SECURE": "false",
        "KUBECHAT_S3_REGION": s3.region,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
    }
    server = str(cluster.api.configuration.host)
    progress = JobProgress(server, NAMESPACE, name, tmp_path / "weights")
    source = ModelSource.model_validate(document["spec"]["source"])
    await asyncio.to_thread(fetch_source, source, tmp_path / "weights", env, progress.set_total)
    await asyncio.to_thread(progress.stop)

    total = sum(len(data) for data in files.values())
    job = await read(cluster, "batch/v1", "Job", name)
    assert job is not None
    annotations = job["metadata"]["annotations"]
    assert int(annotations[CACHE_TOTAL_ANNOTATION]) == total
    assert int(annotations[CACHE_BYTES_ANNOTATION]) >= total  # the completion marker counts too

    async def reported() -> dict[str, Any] | None:
        cache = (await cluster.status("ChatModel", NAME)).get("cache") or {}
        return cache if cache.get("total") == total else None

    cache = await eventually(reported, within_s=WAIT_S, what="the progress in status.cache")
    assert cache["phase"] == "Pending"  # kmock runs no Job controller: no pod, never "active"


def test_progress_reporting_is_best_effort(tmp_path: Path) -> None:
    """An API that cannot be reached is logged, never fatal to the download."""
    progress = JobProgress("http://127.0.0.1:9", NAMESPACE, "nowhere", tmp_path)
    progress.set_total(10)
    progress.stop()


def _checkpoint(folder: Path, **files: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, document in files.items():
        (folder / f"{name}.json").write_text(json.dumps(document))
    return folder


def test_pre_quantized_checkpoints_are_recognised(tmp_path: Path) -> None:
    """ModelOpt's hf_quant_config.json and a config's quantization_config, as the hub's FP8,
    NVFP4 and AWQ checkpoints declare themselves."""
    fp8 = _checkpoint(tmp_path / "fp8", hf_quant_config={"quantization": {"quant_algo": "FP8"}})
    nvfp4 = _checkpoint(tmp_path / "nvfp4", hf_quant_config={"quantization": {"quant_algo": "NVFP4"}})
    awq = _checkpoint(tmp_path / "awq", config={"quantization_config": {"quant_method": "awq", "bits": 4}})
    check_quantization(fp8, "fp8")
    check_quantization(nvfp4, "nvfp4")
    check_quantization(awq, "int4_awq")
    plain = _checkpoint(tmp_path / "bf16", config={"torch_dtype": "bfloat16"})
    with pytest.raises(FetchError, match="would need calibration"):
        check_quantization(plain, "fp8")
    with pytest.raises(FetchError, match="declares fp8"):
        check_quantization(fp8, "nvfp4")


async def test_an_unquantized_checkpoint_fails_the_cache_with_the_reason(
    cluster: Cluster, s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spec fp8, checkpoint bf16: the fetch step fails and says why on its Job, and the ChatModel's
    condition carries that reason rather than the Job controller's."""
    bucket = unique_bucket_name()
    minio = s3.client()
    minio.make_bucket(bucket_name=bucket)
    config = json.dumps({"torch_dtype": "bfloat16"}).encode()
    minio.put_object(
        bucket_name=bucket, object_name="m/config.json", data=io.BytesIO(config), length=len(config)
    )
    document = copy.deepcopy(DOCUMENT)
    document["spec"]["source"] = {"s3": {"uri": f"s3://{bucket}/m/"}}
    document["spec"]["engine"]["quantization"] = "fp8"
    name = job_name(document)
    await cluster.create(document)
    job = await eventually(lambda: read(cluster, "batch/v1", "Job", name), within_s=WAIT_S, what="the Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    argv = container["command"][3:]  # what `python -m kubechat.operator.fetch` gets
    assert argv[argv.index("--expect-quantization") + 1] == "fp8"

    # Run that command line here, reporting to the emulated API as it would in the cluster.
    server = str(cluster.api.configuration.host)
    monkeypatch.setattr(
        JobProgress,
        "in_cluster",
        classmethod(lambda cls, job, folder, env: cls(server, NAMESPACE, job, folder)),
    )
    for key, value in {
        "KUBECHAT_S3_ENDPOINT": s3.endpoint,
        "KUBECHAT_S3_SECURE": "false",
        "KUBECHAT_S3_REGION": s3.region,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
    }.items():
        monkeypatch.setenv(key, value)
    dest = tmp_path / "weights"
    argv[argv.index("--dest") + 1] = str(dest)
    code = await asyncio.to_thread(fetch_main, [*argv, "--report-job", name])
    assert code == 1

    failed = {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "backoff limit",
    }
    await set_job_named(cluster, name, {"failed": 5, "conditions": [failed]})

    async def refused() -> dict[str, Any] | None:
        status = await cluster.status("ChatModel", NAME)
        ready = conditions(status).get("Ready") or {}
        return ready if ready.get("reason") == "WeightsDownloadFailed" else None

    ready = await eventually(refused, within_s=WAIT_S, what="WeightsDownloadFailed")
    assert "would need calibration" in ready["message"] and "declares none" in ready["message"]


async def set_job_named(cluster: Cluster, name: str, status: dict[str, Any]) -> None:
    batch: Any = client.BatchV1Api(cluster.api)
    await batch.patch_namespaced_job_status(name, NAMESPACE, {"status": status}, _content_type=MERGE)


async def test_a_quantization_that_needs_calibration_is_refused_with_a_condition(cluster: Cluster) -> None:
    document = copy.deepcopy(DOCUMENT)
    document["spec"]["engine"]["quantization"] = "int8"
    await cluster.create(document)

    async def invalid() -> dict[str, Any] | None:
        ready = conditions(await cluster.status("ChatModel", NAME)).get("Ready") or {}
        return ready if ready.get("reason") == "InvalidSpec" else None

    ready = await eventually(invalid, within_s=WAIT_S, what="InvalidSpec")
    assert "needs calibration" in ready["message"]
    assert await read(cluster, "batch/v1", "Job", JOB) is None


async def test_a_new_source_downloads_while_the_old_pods_keep_serving(cluster: Cluster) -> None:
    """A changed source is a new cache: until it is Ready the Deployment keeps its old claim and
    the model stays Ready; then the pods roll onto the new one."""
    await cluster.create(DOCUMENT)
    await eventually(lambda: read(cluster, "batch/v1", "Job", JOB), within_s=WAIT_S, what="the Job")
    await set_job(cluster, {"succeeded": 1})
    await eventually(
        lambda: read(cluster, "apps/v1", "Deployment", TRITON), within_s=WAIT_S, what="the Deployment"
    )
    apps: Any = client.AppsV1Api(cluster.api)
    ready = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}
    await apps.patch_namespaced_deployment_status(TRITON, NAMESPACE, {"status": ready}, _content_type=MERGE)

    source = {"huggingFace": {"repo": "mistralai/Mistral-7B-Instruct-v0.3", "revision": "v2"}}
    await cluster.patch_spec("ChatModel", NAME, {"source": source}, generation=2)
    moved = copy.deepcopy(DOCUMENT)
    moved["spec"]["source"] = source
    new_claim = cache_name(parse_chat_model(moved), OperatorSettings())
    await eventually(
        lambda: read(cluster, "batch/v1", "Job", job_name(moved)), within_s=WAIT_S, what="the new Job"
    )

    async def downloading_while_serving() -> dict[str, Any] | None:
        status = await cluster.status("ChatModel", NAME)
        return status if status.get("observedGeneration") == 2 else None

    status = await eventually(downloading_while_serving, within_s=WAIT_S, what="generation 2 observed")
    assert status["cache"]["phase"] == "Pending"
    assert conditions(status)["Ready"]["status"] == "True"  # the old pods still answer
    assert conditions(status)["WeightsCached"]["status"] == "False"
    deployment = await read(cluster, "apps/v1", "Deployment", TRITON)
    assert deployment is not None
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["weights"]["persistentVolumeClaim"]["claimName"] == CACHE

    batch: Any = client.BatchV1Api(cluster.api)
    await batch.patch_namespaced_job_status(
        job_name(moved), NAMESPACE, {"status": {"succeeded": 1}}, _content_type=MERGE
    )

    async def rolled() -> bool:
        live = await read(cluster, "apps/v1", "Deployment", TRITON)
        claims = {v["name"]: v for v in (live or {})["spec"]["template"]["spec"]["volumes"]}
        return bool(claims["weights"]["persistentVolumeClaim"]["claimName"] == new_claim)

    await eventually(rolled, within_s=WAIT_S, what="the Deployment on the new cache")
