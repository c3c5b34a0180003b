"""The weight fetcher a GPU or CPU model pod runs as its first init step.

    python -m kubechat.operator.fetch --source-json '{"s3": {"uri": "s3://models/llama/"}}' \\
        --dest /models/weights

Downloads a ChatModel's `huggingFace` or `s3` source into a folder of the pod's volume. It is
idempotent: a completion marker naming the source is written last, and a rerun with the same
source returns at once (a restarted pod keeps its volume); a different source empties the
folder first. An interrupted S3 download resumes: files already complete (same size) are kept.

S3: the `minio` client; endpoint from KUBECHAT_S3_ENDPOINT (host:port; empty means AWS S3),
KUBECHAT_S3_SECURE and KUBECHAT_S3_REGION; credentials from AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY (the Secret named in credentialsSecretRef), anonymous without them.
Hugging Face: `huggingface_hub.snapshot_download`, token from HF_TOKEN. Network is used here, at
deploy time, never when the API runs.

Progress (a GPU model's weight cache Job): with `--report-job NAME`, the bytes in `dest` so far
and the bytes to download in all are written every few seconds as the annotations
`kubechat.io/cache-bytes` / `kubechat.io/cache-total` of that Job in KUBECHAT_NAMESPACE, through
the Kubernetes API with the pod's service account token; the operator copies them into the
ChatModel's `status.cache`. Reporting is best effort: a failure is logged, never fatal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import ssl
import sys
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from minio import Minio
from minio.error import S3Error
from pydantic import ValidationError

from kubechat.core.resources import HuggingFaceSource, ModelSource, S3Source

logger = logging.getLogger(__name__)

# The annotations the weight cache's Job carries its progress in (kubechat.operator.manifests).
BYTES_ANNOTATION = "kubechat.io/cache-bytes"
TOTAL_ANNOTATION = "kubechat.io/cache-total"
ERROR_ANNOTATION = "kubechat.io/cache-error"  # why the fetch failed, for the ChatModel's condition
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MARKER = ".kubechat-fetched.json"  # the source that dest holds completely
STARTED = ".kubechat-fetching.json"  # the source a possibly interrupted fetch was getting
AWS_S3_ENDPOINT = "s3.amazonaws.com"


class FetchError(RuntimeError):
    """The source cannot be fetched; the message says why (never containing a credential)."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # no leading slash; empty for the whole bucket

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith("s3://"):
            raise FetchError(f"not an s3:// URI: {uri!r}")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise FetchError(f"no bucket in {uri!r}")
        return cls(bucket=bucket, prefix=prefix.strip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class S3Settings:
    endpoint: str = AWS_S3_ENDPOINT
    secure: bool = True
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Settings:
        secure = env.get("KUBECHAT_S3_SECURE", "true").strip().lower() not in ("false", "0", "no")
        return cls(
            endpoint=env.get("KUBECHAT_S3_ENDPOINT") or AWS_S3_ENDPOINT,
            secure=secure,
            region=env.get("KUBECHAT_S3_REGION") or env.get("AWS_REGION") or None,
            access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )


def _marker_text(source: ModelSource) -> str:
    return source.model_dump_json(by_alias=True, exclude_none=True)


def is_complete(source: ModelSource, dest: Path) -> bool:
    marker = dest / MARKER
    return marker.is_file() and marker.read_text() == _marker_text(source)


def _relative_path(key: str, prefix: str) -> PurePosixPath:
    relative = key[len(prefix) :].lstrip("/") if prefix else key
    path = PurePosixPath(relative)
    if not relative or path.is_absolute() or ".." in path.parts:
        raise FetchError(f"refusing object key {key!r}: it would land outside the destination")
    return path


def fetch_s3(
    source: S3Source, dest: Path, settings: S3Settings, on_total: Callable[[int], None] | None = None
) -> int:
    """Download every object under the URI's prefix (or the one object it names); return the count.
    `on_total` is told the bytes to download in all once the listing is known."""
    location = S3Location.parse(source.uri)
    # Keywords throughout: minio-py 8 takes no positional arguments (kubechat.stores.objects.minio_compat).
    client = Minio(
        endpoint=settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        session_token=settings.session_token,
        secure=settings.secure,
        region=settings.region,
    )
    try:
        if not client.bucket_exists(bucket_name=location.bucket):
            raise FetchError(f"bucket {location.bucket!r} does not exist at {settings.endpoint}")
        folder = f"{location.prefix}/" if location.prefix else ""
        objects = [
            o
            for o in client.list_objects(bucket_name=location.bucket, prefix=folder, recursive=True)
            if o.object_name is not None and not o.object_name.endswith("/")
        ]
        pairs: list[tuple[str, PurePosixPath, int | None]] = [
            (str(o.object_name), _relative_path(str(o.object_name), folder), o.size) for o in objects
        ]
        if not pairs and location.prefix:
            try:  # the URI may name a single object: it lands in dest under its base name
                stat = client.stat_object(bucket_name=location.bucket, object_name=location.prefix)
            except S3Error as exc:
                if exc.code not in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                    raise
            else:
                pairs = [(location.prefix, PurePosixPath(PurePosixPath(location.prefix).name), stat.size)]
        if not pairs:
            raise FetchError(f"no objects at {location} ({settings.endpoint})")
        if on_total is not None:
            on_total(sum(size or 0 for _, _, size in pairs))
        for key, relative, size in pairs:
            target = dest.joinpath(*relative.parts)
            if target.is_file() and size is not None and target.stat().st_size == size:
                continue  # finished by an earlier, interrupted run
            target.parent.mkdir(parents=True, exist_ok=True)
            logger.info("fetching s3://%s/%s (%s bytes)", location.bucket, key, size)
            # fget_object writes a temporary part file and renames it when complete.
            client.fget_object(bucket_name=location.bucket, object_name=key, file_path=str(target))
    except S3Error as exc:
        raise FetchError(
            f"cannot fetch {location} from {settings.endpoint}: {exc.code}: {exc.message}"
        ) from exc
    return len(pairs)


def hugging_face_total(source: HuggingFaceSource, token: str | None) -> int:
    """The bytes of the repository's files that a fetch downloads (0 where the Hub does not say)."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(source.repo, revision=source.revision, token=token, files_metadata=True)
    files = info.siblings or []
    return sum(f.size or 0 for f in files if not source.file or f.rfilename == source.file)


def fetch_hugging_face(
    source: HuggingFaceSource, dest: Path, token: str | None, on_total: Callable[[int], None] | None = None
) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    if on_total is not None:
        try:
            on_total(hugging_face_total(source, token))
        except Exception as exc:  # progress is best effort: the download itself says what fails
            logger.warning("cannot size %s: %s", source.repo, exc)

    logger.info(
        "fetching huggingface.co/%s@%s %s", source.repo, source.revision, source.file or "(all files)"
    )
    try:
        snapshot_download(
            source.repo,
            revision=source.revision,
            local_dir=dest,
            token=token,
            allow_patterns=[source.file] if source.file else None,
        )
    except HfHubHTTPError as exc:
        raise FetchError(f"cannot fetch {source.repo}@{source.revision} from Hugging Face: {exc}") from exc


def _empty(dest: Path) -> None:
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def fetch_source(
    source: ModelSource,
    dest: Path,
    env: Mapping[str, str] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> bool:
    """Fetch `source` into `dest` unless it is already there; return whether anything was fetched.
    `on_total` is told the bytes to download, when they are known."""
    env = os.environ if env is None else env
    if source.hugging_face is None and source.s3 is None:
        raise FetchError(
            "only huggingFace and s3 sources are fetched (a pvc is mounted, a package installed)"
        )
    if is_complete(source, dest):
        logger.info("%s already holds this source; nothing to fetch", dest)
        return False
    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / MARKER
    started = dest / STARTED
    text = _marker_text(source)
    resuming = started.is_file() and started.read_text() == text
    if not resuming and any(dest.iterdir()):  # what is there came from another source
        logger.info("%s holds another source; emptying it", dest)
        _empty(dest)
    started.write_text(text)
    if source.s3 is not None:
        count = fetch_s3(source.s3, dest, S3Settings.from_env(env), on_total)
        logger.info("fetched %d objects into %s", count, dest)
    elif source.hugging_face is not None:
        fetch_hugging_face(source.hugging_face, dest, env.get("HF_TOKEN") or None, on_total)
    # The marker is renamed into place last: its presence means the fetch completed.
    started.rename(marker)
    return True


# How a pre-quantized checkpoint declares its quantization: ModelOpt's hf_quant_config.json
# (`quantization.quant_algo`) or the config's `quantization_config.quant_method` (with
# `quant_algo` where ModelOpt writes one there). Each spec value and the names that satisfy it.
PREQUANTIZED_NAMES = {
    "fp8": {"fp8"},
    "nvfp4": {"nvfp4"},
    "int4_awq": {"w4a16_awq", "awq"},
}


def declared_quantization(folder: Path) -> set[str]:
    """The quantization names a checkpoint folder declares (lower case; empty: none)."""
    names: set[str] = set()
    for name, keys in (
        ("hf_quant_config.json", ("quantization",)),
        ("config.json", ("quantization_config",)),
    ):
        path = folder / name
        if not path.is_file():
            continue
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key in keys:
            section = document.get(key) if isinstance(document, dict) else None
            if isinstance(section, dict):
                for field in ("quant_algo", "quant_method"):
                    if isinstance(section.get(field), str):
                        names.add(section[field].lower())
    return names


def check_quantization(folder: Path, expected: str) -> None:
    """Fail unless the checkpoint is quantized as the spec says: serving an unquantized one would
    need calibration, which never runs in the pod."""
    wanted = PREQUANTIZED_NAMES.get(expected)
    if wanted is None:
        raise FetchError(f"quantization {expected!r} is not a pre-quantized format kubechat serves")
    declared = declared_quantization(folder)
    if not declared & wanted:
        found = ", ".join(sorted(declared)) or "none"
        raise FetchError(
            f"spec.engine.quantization is {expected} but the checkpoint declares {found} "
            "(hf_quant_config.json / config.json quantization_config): it would need calibration, which "
            f"kubechat never runs in the pod; point spec.source at a pre-quantized {expected} checkpoint"
        )


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (partial downloads included)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # renamed or removed meanwhile
                total += (Path(root) / name).stat().st_size
    return total


class JobProgress:
    """Writes a download's progress as annotations of its Job (a JSON merge patch), every
    `interval_s` from a thread of its own and once more at the end."""

    def __init__(
        self, api_url: str, namespace: str, job: str, folder: Path, token: str = "", ca_file: str = ""
    ) -> None:
        self.url = f"{api_url.rstrip('/')}/apis/batch/v1/namespaces/{namespace}/jobs/{job}"
        self.folder = folder
        self.token = token
        self.context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.total = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def in_cluster(cls, job: str, folder: Path, env: Mapping[str, str]) -> JobProgress:
        host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise FetchError("--report-job needs the in-cluster API (KUBERNETES_SERVICE_HOST)")
        token_file = SERVICE_ACCOUNT_DIR / "token"
        token = token_file.read_text().strip() if token_file.is_file() else ""
        ca = SERVICE_ACCOUNT_DIR / "ca.crt"
        namespace = env.get("KUBECHAT_NAMESPACE", "")
        return cls(f"https://{host}:{port}", namespace, job, folder, token, str(ca) if ca.is_file() else "")

    def set_total(self, total: int) -> None:
        self.total = total
        self.report()

    def report(self, error: str = "") -> None:
        annotations = {BYTES_ANNOTATION: str(folder_bytes(self.folder))}
        if self.total:
            annotations[TOTAL_ANNOTATION] = str(self.total)
        if error:
            annotations[ERROR_ANNOTATION] = error[:1000]
        body = json.dumps({"metadata": {"annotations": annotations}}).encode()
        headers = {"Content-Type": "application/merge-patch+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="PATCH")
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
                response.read()
        except OSError as exc:  # URLError and HTTPError included
            logger.warning("cannot report progress to %s: %s", self.url, exc)

    def start(self, interval_s: float = 5.0) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.report()

        self._thread = threading.Thread(target=loop, name="progress", daemon=True)
        self._thread.start()

    def stop(self, error: str = "") -> None:
        """Stop reporting; the last report carries `error`, the reason a failed fetch failed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.report(error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubechat.operator.fetch", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--source-json", required=True, help="spec.source of the ChatModel, as JSON")
    parser.add_argument("--dest", type=Path, required=True, help="folder to fetch into")
    parser.add_argument("--report-job", default="", help="Job whose annotations carry the progress")
    parser.add_argument(
        "--expect-quantization", default="", help="fail unless the checkpoint is pre-quantized so"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    progress: JobProgress | None = None
    try:
        source = ModelSource.model_validate_json(args.source_json)
        if args.report_job:
            progress = JobProgress.in_cluster(args.report_job, args.dest, os.environ)
            progress.start()
        fetch_source(source, args.dest, on_total=progress.set_total if progress else None)
        if args.expect_quantization:
            check_quantization(args.dest, args.expect_quantization)
    except ValidationError as exc:
        print(f"kubechat fetch: invalid --source-json: {exc}", file=sys.stderr)
        return 2
    except FetchError as exc:
        print(f"kubechat fetch: {exc}", file=sys.stderr)
        if progress is not None:
            progress.stop(str(exc))
            progress = None
        return 1
    finally:
        if progress is not None:
            progress.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
