"""Every shell and Python example of the README and docs/ runs as written, against a served API.

The API runs as `make serve` runs it: local mode (no API keys), the example ChatModels and
KnowledgeBase, and the `demo` MCP server of examples/mcp/servers.yaml; the examples' address
(127.0.0.1:8000 or localhost:8000) is replaced by this API's. Blocks run in document order,
from the repository root: shell blocks under `bash -euo pipefail`, with curl failing on an HTTP
error status (`--fail-with-body`); `console` blocks run their `$ ` lines; Python blocks run as
scripts. A comment right above a block steers it:

    <!-- docs-test: skip (why: it needs a cluster, starts a server...) -->
    <!-- docs-test: expect TEXT -->      (the output must contain TEXT; may be repeated)

Only blocks that cannot run on one machine may be skipped; the reason is required.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubechat.embedded.tritonserver import TritonServer
from tests.conftest import EXAMPLE_MODELS, ROOT, ApiProcess, api_env

pytestmark = pytest.mark.triton

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("*/README.md"))]
RUN = {"bash": "shell", "sh": "shell", "shell": "shell", "console": "console", "python": "python"}
FENCE = re.compile(r"^```(\S*)\s*$")
DIRECTIVE = re.compile(r"^<!-- docs-test: (skip|expect) (.+?) -->$")
ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):8000")
TIMEOUT_S = 600  # a block may wait for ingestion or a CPU model's answer on a busy machine
VENV_BIN = str(Path(sys.executable).parent)
# curl as the examples call it, but failing on an HTTP error status (and showing the body).
CURL_FAILS = 'curl() { command curl --fail-with-body "$@"; }\n'


@dataclass
class Block:
    path: Path
    line: int
    language: str
    code: str
    skip: str | None = None
    expect: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(path: Path) -> Iterator[Block]:
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        language = opening.group(1)
        if language in RUN:
            block = Block(path, i + 1, RUN[language], "\n".join(lines[i + 1 : end]) + "\n")
            above = i - 1
            while above >= 0 and (directive := DIRECTIVE.match(lines[above].strip())):
                kind, text = directive.groups()
                if kind == "skip":
                    block.skip = text.strip("()")
                else:
                    block.expect.append(text)
                above -= 1
            yield block
        i = end + 1


BLOCKS = [block for path in DOCUMENTS for block in blocks_of(path)]


def console_commands(code: str) -> str:
    """The commands of a console transcript: `$ ` lines and their `\\` continuations."""
    commands, continued = [], False
    for line in code.splitlines():
        if line.startswith("$ ") or continued:
            commands.append(line.removeprefix("$ "))
            continued = line.endswith("\\")
    return "\n".join(commands) + "\n"


@pytest.fixture(scope="session")
def served(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """The API as `make serve` serves it (kubechat serve's defaults), on a port of its own."""
    state = tmp_path_factory.mktemp("docs-state")
    env = api_env(triton, EXAMPLE_MODELS, state)
    del env["KUBECHAT_API_KEYS"], env["KUBECHAT_DEFAULT_MODEL"]  # local mode; the catalog's default
    env |= {
        "KUBECHAT_KNOWLEDGE_BASES_DIR": str(ROOT / "examples" / "knowledge-bases"),
        "KUBECHAT_MCP_SERVERS": str(ROOT / "examples" / "mcp" / "servers.yaml"),
        # As `make serve` does: the venv first on PATH, where `command: python` is found.
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    process = ApiProcess(env, state / "api.log")
    process.start()
    yield process
    process.stop()


def test_the_examples_are_found_and_only_cluster_or_server_blocks_are_skipped() -> None:
    """The collection itself: a typo in a fence or a directive must not silently drop examples."""
    ids = {block.id for block in BLOCKS}
    assert any(i.startswith("README.md") for i in ids) and any(i.startswith("docs/mcp.md") for i in ids)
    assert sum(block.skip is None for block in BLOCKS) >= 8
    for block in BLOCKS:
        if block.skip is not None:
            assert block.skip, f"{block.id}: a skip needs its reason"
    for path in DOCUMENTS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("<!-- docs-test"):
                assert DIRECTIVE.match(line.strip()), f"{path.relative_to(ROOT)}:{number}: {line}"


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_example_runs_as_written(block: Block, served: ApiProcess, tmp_path: Path) -> None:
    if block.skip is not None:
        pytest.skip(block.skip)
    code = ADDRESS.sub(f"127.0.0.1:{served.port}", block.code)
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        # `kubechat render` and the like write here, not into the checkout's .kubechat.
        "KUBECHAT_STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("KUBECHAT_API_KEY", None)  # local mode: the examples need no key
    if block.language == "python":
        script = tmp_path / "example.py"
        script.write_text(code)
        command = [sys.executable, str(script)]
    else:
        body = console_commands(code) if block.language == "console" else code
        command = ["bash", "-euo", "pipefail", "-c", CURL_FAILS + body]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{block.id} exited with {done.returncode}:\n{code}\n---\n{output}"
    for text in block.expect:
        assert text in output, f"{block.id}: {text!r} not in the output:\n{output}"
