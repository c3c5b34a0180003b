"""A real S3 endpoint for tests: moto's S3 server in a thread of the test process, on 127.0.0.1.

    with moto_s3_server() as s3:
        store = S3ObjectStore(s3.endpoint, s3.access_key, s3.secret_key, "my-bucket",
                              secure=s3.secure, region=s3.region)

moto keeps its state in process-wide backends: every server started here sees the same
buckets, and `moto.mock_aws` used elsewhere in the same process resets them. Give each test
its own bucket (`unique_bucket_name()`).
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from minio import Minio
from moto.server import ThreadedMotoServer


@dataclass(frozen=True)
class S3Endpoint:
    """Where the test S3 server listens and the dummy credentials it accepts (it checks none)."""

    endpoint: str  # host:port, as S3ObjectStore and the minio client take it
    access_key: str = "kubechat-test-access-key"
    secret_key: str = "kubechat-test-secret-key"
    region: str = "us-east-1"
    secure: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self) -> Minio:
        """A minio client of this server, to arrange or inspect what a test's code stored."""
        return Minio(
            endpoint=self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=self.secure,
            region=self.region,
        )


def unique_bucket_name(prefix: str = "kubechat-test") -> str:
    """A fresh, valid bucket name (3-63 lower-case characters)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@contextmanager
def moto_s3_server() -> Iterator[S3Endpoint]:
    """Run moto's S3 server on a free port of 127.0.0.1 for the duration of the block."""
    # werkzeug logs every request at INFO; a failing test's captured log should show ours.
    werkzeug_logger = logging.getLogger("werkzeug")
    previous_level = werkzeug_logger.level
    werkzeug_logger.setLevel(logging.WARNING)
    # Port 0: the OS picks a free port when the server binds, so no other process can take
    # it in between. start() returns once the socket listens, so no readiness poll is needed.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Endpoint(endpoint=f"{host}:{port}")
    finally:
        server.stop()
        werkzeug_logger.setLevel(previous_level)


class KeywordOnlyMinio(Minio):
    """minio-py 8's calling convention (minio/minio.py after "Refactor for v8.0.0"): every
    argument of the calls kubechat makes is keyword-only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        assert not args, f"Minio() given positional arguments {args!r}"
        super().__init__(**kwargs)

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name in _MINIO_CALLS:

            def keywords_only(*args: Any, **kwargs: Any) -> Any:
                # Only kubechat's calls: minio 7.2 calls itself positionally (fget_object → stat_object).
                if sys._getframe(1).f_globals.get("__name__", "").startswith("kubechat."):
                    assert not args, f"Minio.{name} given positional arguments {args!r}"
                return attribute(*args, **kwargs)

            return keywords_only
        return attribute


_MINIO_CALLS = frozenset({
    "bucket_exists", "make_bucket", "put_object", "get_object", "stat_object", "remove_object",
    "list_objects", "fget_object",
})  # fmt: skip
