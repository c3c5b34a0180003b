"""LlamaIndex's OpenAI-like LLM pointed at /v1: unchanged client code, only the base URL and key.

`llama-index-llms-openai` (which `OpenAILike` is built on) requires openai<3 while kubechat uses
openai 3, so `make install` installs LlamaIndex apart (into .venv/llamaindex) and the client runs
as a process of its own with only that folder before the interpreter's packages, the way a
framework user's application would run beside kubechat.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ALICE_KEY, ApiProcess

pytestmark = pytest.mark.triton

LLAMAINDEX = Path(sys.prefix) / "llamaindex"
CLIENT = Path(__file__).with_name("llamaindex_client.py")


def test_llamaindex_openai_like_chats_and_streams(api: ApiProcess) -> None:
    assert LLAMAINDEX.is_dir(), f"make install installs LlamaIndex into {LLAMAINDEX}"
    done = subprocess.run(
        [sys.executable, str(CLIENT), f"{api.url}/v1", ALICE_KEY],
        env={**os.environ, "PYTHONPATH": str(LLAMAINDEX)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert answers["chat"]
    assert answers["stream_chat"] == answers["chat"]
    assert answers["complete"] == answers["chat"]
