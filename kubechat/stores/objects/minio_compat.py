"""What differs between the minio-py majors kubechat runs on (7.2 and 8), in one place.

minio-py 8 (upstream commit "Refactor for v8.0.0", minio/minio.py) makes every argument
keyword-only; callers here and in kubechat.operator.fetch name theirs, which 7.2 accepts as well.
Beyond the calling convention two things changed that kubechat uses:

* put_object's user metadata: 7.2 takes `metadata=` (headers, prefixed or not); 8 takes
  `headers=` (and `user_metadata=`). Both prefix keys that are not `x-amz-*` or a standard header.
* stat_object's answer: 7.2 returns `minio.datatypes.Object` whose `metadata` holds every response
  header; 8 returns `HeadObjectResponse` with `user_metadata` (the `x-amz-meta-` headers, prefix
  removed). Both have `size` and `content_type`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

from minio import Minio

_META_PREFIX = "x-amz-meta-"


@functools.cache
def put_metadata_argument() -> str:
    """The keyword put_object takes user metadata headers by, in the installed minio."""
    parameters = inspect.signature(Minio.put_object).parameters
    return "metadata" if "metadata" in parameters else "headers"


def user_metadata(result: Any) -> dict[str, str]:
    """The user metadata of a stat_object answer, keys lower-case and without `x-amz-meta-`."""
    found: Mapping[str, str] | None = getattr(result, "user_metadata", None)
    if found is not None:  # minio 8
        return {str(name).lower(): str(value) for name, value in found.items()}
    headers: Mapping[str, str] = getattr(result, "metadata", None) or {}
    return {
        name.lower().removeprefix(_META_PREFIX): str(value)
        for name, value in headers.items()
        if name.lower().startswith(_META_PREFIX)
    }
