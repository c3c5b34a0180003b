"""The init steps of a model pod, run here for real: the weight fetcher against moto's S3 server
(kubechat.operator.fetch) and the CPU repository renderer (kubechat.operator.render_repository)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubechat.core.resources import ModelSource, parse_chat_model
from kubechat.operator import fetch, render_repository
from kubechat.operator.fetch import MARKER, FetchError, S3Settings, fetch_source
from kubechat.triton.repository import parse_model_config
from tests.s3_server import KeywordOnlyMinio, S3Endpoint, moto_s3_server, unique_bucket_name

ROOT = Path(__file__).resolve().parents[2]

FILES = {
    "config.json": b'{"architectures": ["LlamaForCausalLM"]}',
    "tokenizer.json": b'{"version": "1.0"}',
    "nested/dir/model-00001.safetensors": os.urandom(300_000),
}


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_s3_server() as endpoint:
        yield endpoint


def _env(s3: S3Endpoint) -> dict[str, str]:
    return {
        "KUBECHAT_S3_ENDPOINT": s3.endpoint,
        "KUBECHAT_S3_SECURE": "false",
        "KUBECHAT_S3_REGION": s3.region,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
    }


@pytest.fixture
def bucket(s3: S3Endpoint) -> str:
    """A bucket with a model under models/llama/, and neighbours the fetch must not take."""
    name = unique_bucket_name()
    client = s3.client()
    client.make_bucket(bucket_name=name)
    objects = {f"models/llama/{k}": v for k, v in FILES.items()}
    objects |= {"models/llama-v2/config.json": b"{}", "models/other/x.bin": b"x", "models/llama/folder/": b""}
    objects |= {"single/model.gguf": b"GGUF" + os.urandom(1000)}
    for key, data in objects.items():
        client.put_object(bucket_name=name, object_name=key, data=io.BytesIO(data), length=len(data))
    return name


def _s3_source(uri: str) -> ModelSource:
    return ModelSource.model_validate({"s3": {"uri": uri}})


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".kubechat")
    }


def test_s3_prefix_is_fetched_with_its_folders(s3: S3Endpoint, bucket: str, tmp_path: Path) -> None:
    """Every object under the prefix lands under dest at its relative path, and nothing else."""
    dest = tmp_path / "weights"
    assert fetch_source(_s3_source(f"s3://{bucket}/models/llama/"), dest, _env(s3)) is True
    assert _tree(dest) == FILES
    assert (dest / MARKER).is_file()
    # Without the trailing slash the URI means the same folder (not models/llama-v2).
    other = tmp_path / "other"
    fetch_source(_s3_source(f"s3://{bucket}/models/llama"), other, _env(s3))
    assert _tree(other) == FILES


def test_fetch_is_idempotent(s3: S3Endpoint, bucket: str, tmp_path: Path) -> None:
    """A second run with the same source touches nothing: the marker says the folder is complete."""
    dest = tmp_path / "weights"
    source = _s3_source(f"s3://{bucket}/models/llama/")
    fetch_source(source, dest, _env(s3))
    weights = dest / "nested/dir/model-00001.safetensors"
    before = weights.stat().st_mtime_ns
    assert fetch_source(source, dest, _env(s3)) is False
    assert weights.stat().st_mtime_ns == before
    # Even unreachable S3 does not matter once the folder is complete (a restarted pod).
    assert fetch_source(source, dest, {"KUBECHAT_S3_ENDPOINT": "127.0.0.1:9"}) is False


def test_interrupted_fetch_resumes_and_keeps_finished_files(
    s3: S3Endpoint, bucket: str, tmp_path: Path
) -> None:
    """A crash before the marker: the rerun fetches what is missing and keeps complete files."""
    dest = tmp_path / "weights"
    source = _s3_source(f"s3://{bucket}/models/llama/")
    fetch_source(source, dest, _env(s3))
    (dest / MARKER).rename(dest / fetch.STARTED)  # as if the run had died before the end
    (dest / "tokenizer.json").unlink()
    kept = dest / "nested/dir/model-00001.safetensors"
    before = kept.stat().st_mtime_ns
    assert fetch_source(source, dest, _env(s3)) is True
    assert _tree(dest) == FILES
    assert kept.stat().st_mtime_ns == before


def test_another_source_replaces_the_folder(s3: S3Endpoint, bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    fetch_source(_s3_source(f"s3://{bucket}/models/llama/"), dest, _env(s3))
    fetch_source(_s3_source(f"s3://{bucket}/single/model.gguf"), dest, _env(s3))
    assert sorted(_tree(dest)) == ["model.gguf"]  # a URI naming one object fetches that file


def test_missing_objects_give_a_clear_error(s3: S3Endpoint, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=rf"no objects at s3://{bucket}/models/nothing-here"):
        fetch_source(_s3_source(f"s3://{bucket}/models/nothing-here/"), tmp_path / "w", _env(s3))
    with pytest.raises(FetchError, match="bucket 'no-such-bucket-kubechat' does not exist"):
        fetch_source(_s3_source("s3://no-such-bucket-kubechat/models/"), tmp_path / "w", _env(s3))
    assert not (tmp_path / "w" / MARKER).exists()


def test_command_line_reports_errors_without_a_traceback(
    s3: S3Endpoint,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The init container's command: exit 0 on success, 1 with the reason, 2 for a bad source."""
    for key, value in _env(s3).items():
        monkeypatch.setenv(key, value)
    source = json.dumps({"s3": {"uri": f"s3://{bucket}/models/llama/"}})
    assert fetch.main(["--source-json", source, "--dest", str(tmp_path / "ok")]) == 0
    assert _tree(tmp_path / "ok") == FILES
    missing = json.dumps({"s3": {"uri": f"s3://{bucket}/absent/"}})
    assert fetch.main(["--source-json", missing, "--dest", str(tmp_path / "missing")]) == 1
    assert "no objects at" in capsys.readouterr().err
    assert fetch.main(["--source-json", '{"s3": {"uri": "https://x"}}', "--dest", str(tmp_path / "bad")]) == 2
    assert fetch.main(["--source-json", '{"pvc": {"claimName": "c"}}', "--dest", str(tmp_path / "pvc")]) == 1
    assert "only huggingFace and s3" in capsys.readouterr().err


def test_s3_settings_from_the_environment() -> None:
    """No endpoint means AWS S3 over HTTPS; credentials are optional (anonymous access)."""
    assert S3Settings.from_env({}) == S3Settings(endpoint="s3.amazonaws.com", secure=True)
    settings = S3Settings.from_env({"KUBECHAT_S3_ENDPOINT": "minio:9000", "KUBECHAT_S3_SECURE": "False"})
    assert (settings.endpoint, settings.secure, settings.access_key) == ("minio:9000", False, None)


@pytest.mark.parametrize("key", ["models/llama/../../etc/passwd", "models/llama/a/../../x", "models/llama/"])
def test_object_keys_cannot_escape_the_destination(key: str) -> None:
    """Keys are untrusted input: none may write outside dest (or onto dest itself)."""
    with pytest.raises(FetchError, match="refusing object key"):
        fetch._relative_path(key, "models/llama/")


def test_hugging_face_source_uses_snapshot_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Repo, revision, the single file and the token reach huggingface_hub; the marker follows."""
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        (Path(kwargs["local_dir"]) / "model.gguf").write_bytes(b"GGUF")
        return str(kwargs["local_dir"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    source = ModelSource.model_validate(
        {"huggingFace": {"repo": "org/model", "revision": "v1", "file": "model.gguf", "tokenSecretRef": "hf"}}
    )
    dest = tmp_path / "weights"
    assert fetch_source(source, dest, {"HF_TOKEN": "hf_secret"}) is True
    assert calls == [
        {
            "repo_id": "org/model",
            "revision": "v1",
            "local_dir": dest,
            "token": "hf_secret",
            "allow_patterns": ["model.gguf"],
        }
    ]
    assert fetch_source(source, dest, {}) is False
    assert len(calls) == 1


# --- render_repository --------------------------------------------------------------------------


def test_render_repository_writes_a_parsable_repository(tmp_path: Path) -> None:
    """The CPU pod's init step on examples/models/synthetic.yaml: a repository Triton can load."""
    out = tmp_path / "repository"
    code = render_repository.main(
        [
            "--model",
            str(ROOT / "examples" / "models" / "synthetic.yaml"),
            "--out",
            str(out),
            "--state",
            str(tmp_path / "state"),
        ]
    )
    assert code == 0
    config = parse_model_config((out / "synthetic" / "config.pbtxt").read_text())
    assert config.name == "synthetic"
    assert config.model_transaction_policy.decoupled
    assert (out / "synthetic" / "1" / "model.py").is_file()


def test_render_repository_rejects_a_file_without_one_chat_model(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("kind: KnowledgeBase\nmetadata: {name: kb}\n")
    args = ["--model", str(empty), "--out", str(tmp_path / "r"), "--state", str(tmp_path / "s")]
    assert render_repository.main(args) == 1


def _cpu_model(backend: str, **source: Any) -> Any:
    return parse_chat_model(
        {
            "apiVersion": "kubechat.io/v1alpha1",
            "kind": "ChatModel",
            "metadata": {"name": "m"},
            "spec": {"engine": {"backend": backend}, "source": source or {"huggingFace": {"repo": "org/m"}}},
        }
    )


def test_fetched_checkpoints_become_artifacts(tmp_path: Path) -> None:
    """Fetched folders: an embedder's dimensions are read from it, an LLM folder is its own tokenizer."""
    embedder = tmp_path / "bge"
    (embedder / "1_Pooling").mkdir(parents=True)
    (embedder / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 768}')
    artifacts = render_repository.artifacts_from_weights(
        _cpu_model("sentence-transformers"), embedder, tmp_path
    )
    assert (artifacts.checkpoint_dir, artifacts.embedding_dimensions) == (str(embedder), 768)
    llm = tmp_path / "llm"
    llm.mkdir()
    (llm / "config.json").write_text("{}")
    artifacts = render_repository.artifacts_from_weights(_cpu_model("transformers"), llm, tmp_path)
    assert (artifacts.checkpoint_dir, artifacts.checkpoint_file, artifacts.tokenizer_dir) == (
        str(llm),
        "",
        str(llm),
    )
    tokenizer = tmp_path / "tok"
    artifacts = render_repository.artifacts_from_weights(_cpu_model("transformers"), llm, tmp_path, tokenizer)
    assert artifacts.tokenizer_dir == str(tokenizer)
    with pytest.raises(ValueError, match="does not exist"):
        render_repository.artifacts_from_weights(_cpu_model("transformers"), tmp_path / "nope", tmp_path)


def test_fetch_calls_minio_with_keywords_only(
    s3: S3Endpoint, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """minio-py 8 takes keyword arguments only; so does every call the fetch makes."""
    monkeypatch.setattr(fetch, "Minio", KeywordOnlyMinio)

    assert fetch_source(_s3_source(f"s3://{bucket}/models/llama/"), tmp_path / "weights", _env(s3)) is True
    assert fetch_source(_s3_source(f"s3://{bucket}/single/model.gguf"), tmp_path / "single", _env(s3)) is True
