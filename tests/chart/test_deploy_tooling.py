"""skaffold.yaml, hack/kind.yaml and scripts/e2e.sh, checked without Docker or a cluster.

The e2e script runs for real against stand-ins for kind, kubectl, skaffold and the rest (small
shell scripts that answer what a cluster would and record every call): it must refuse every
context but its own local kind cluster before touching anything, and otherwise run its steps in
order against that context only.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubechat.core.resources import ChatModel, KnowledgeBase, parse_resource
from tests.chart.rendering import CHART, ROOT, render_values

SKAFFOLD = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
SCRIPT = ROOT / "scripts" / "e2e.sh"
CONTEXT = "kind-kubechat-e2e"


# --- skaffold -------------------------------------------------------------------------------------


def _artifact_key(image: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", image)


def _has_path(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_skaffold_builds_both_images_from_their_dockerfiles() -> None:
    assert SKAFFOLD["apiVersion"].startswith("skaffold/v4beta")
    artifacts = {a["image"]: a for a in SKAFFOLD["build"]["artifacts"]}
    assert set(artifacts) == {"kubechat", "triton-cpu"}
    for artifact in artifacts.values():
        assert (ROOT / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    assert "inputDigest" in SKAFFOLD["build"]["tagPolicy"]  # rebuilt images get new tags


def test_skaffold_sets_the_charts_image_values_to_what_it_built() -> None:
    (release,) = SKAFFOLD["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"]).resolve() == CHART
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    templates: dict[str, str] = dict(release["setValueTemplates"])
    for profile in SKAFFOLD["profiles"]:
        for patch in profile["patches"]:
            if "/setValueTemplates/" in patch["path"]:
                templates[patch["path"].rsplit("/", 1)[1]] = patch["value"]
    keys = {_artifact_key(a["image"]) for a in SKAFFOLD["build"]["artifacts"]}
    for path, template in templates.items():
        assert _has_path(defaults, path), f"{path} is not a chart value"
        for variable in re.findall(r"\{\{\.IMAGE_\w+?_(kubechat|triton_cpu)\}\}", template):
            assert variable in keys
    assert templates["image.repository"] == "{{.IMAGE_REPO_kubechat}}"
    assert templates["models.cpuImage.repository"] == "{{.IMAGE_REPO_triton_cpu}}"


@pytest.mark.parametrize("profile", ["kind", "gpu"])
def test_each_profile_renders_a_valid_release(profile: str) -> None:
    """The chart with the profile's values files and skaffold's image values filled in."""
    (spec,) = [p for p in SKAFFOLD["profiles"] if p["name"] == profile]
    values: dict[str, Any] = {}
    for patch in spec["patches"]:
        if patch["path"].endswith("/valuesFiles"):
            for file in patch["value"]:
                values.update(yaml.safe_load((ROOT / file).read_text()))
    values.setdefault("image", {}).update(repository="kubechat", tag="abc123")
    values.setdefault("models", {}).setdefault("cpuImage", {}).update(repository="triton-cpu", tag="def456")
    if profile == "gpu":  # what the profile takes from the environment
        values.setdefault("elasticsearch", {})["url"] = "https://es.example.com:9200"
        values.setdefault("s3", {})["endpoint"] = "s3.example.com:443"
        values.setdefault("ingress", {})["host"] = "chat.example.com"
    objects = render_values(values).objects
    for obj in objects:
        kubernetes_validate.validate(obj, "1.33", strict=True)
    images = {
        c["image"]
        for o in objects
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert "kubechat:abc123" in images


def test_the_kind_profile_keeps_images_local() -> None:
    (kind,) = [p for p in SKAFFOLD["profiles"] if p["name"] == "kind"]
    patches = {p["path"]: p["value"] for p in kind["patches"]}
    assert patches["/build/local/push"] is False
    assert patches["/deploy/helm/releases/0/valuesFiles"] == ["charts/kubechat/values-kind.yaml"]
    (gpu,) = [p for p in SKAFFOLD["profiles"] if p["name"] == "gpu"]
    assert {p["path"]: p["value"] for p in gpu["patches"]}["/build/local/push"] is True


def test_the_kind_cluster_runs_the_ingress_on_the_hosts_loopback() -> None:
    kind = yaml.safe_load((ROOT / "hack" / "kind.yaml").read_text())
    (node,) = kind["nodes"]
    assert re.fullmatch(r"kindest/node:v1\.(2[89]|3\d)\.\d+", node["image"])  # CEL rules need ≥ 1.28
    assert "ingress-ready=true" in node["kubeadmConfigPatches"][0]
    ports = {(m["containerPort"], m["hostPort"], m["listenAddress"]) for m in node["extraPortMappings"]}
    assert ports == {(80, 80, "127.0.0.1"), (443, 443, "127.0.0.1")}


# --- scripts/e2e.sh against stand-ins --------------------------------------------------------------

_STUB = """#!/bin/sh
# Records the call, answers what a cluster would.
printf '%s\\n' "$(basename "$0") $*" >> "$E2E_CALLS"
case "$(basename "$0") $*" in
  "kubectl config current-context"*) echo "$FAKE_CONTEXT" ;;
  "kubectl config view"*) echo "$FAKE_SERVER" ;;
  "kind get clusters"*) echo kubechat-e2e ;;
  "kubectl --context "*" apply -f -") cat > "$E2E_APPLIED" ;;
esac
exit 0
"""
_PYTHON = """#!/bin/sh
# The real interpreter for the script's inline Python; pytest itself is only recorded.
if [ "$1" = "-m" ] && [ "$2" = "pytest" ]; then
  printf '%s\\n' "python $* E2E_URL=$KUBECHAT_E2E_URL ES_URL=$KUBECHAT_TEST_ES_URL" >> "$E2E_CALLS"
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


def _run_script(
    tmp_path: Path, context: str, server: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("docker", "kind", "kubectl", "helm", "skaffold", "curl"):
        (bin_dir / tool).write_text(_STUB)
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "python").write_text(_PYTHON)
    (bin_dir / "python").chmod(0o755 | stat.S_IXUSR)
    calls = tmp_path / "calls"
    calls.write_text("")
    system_path = ":".join(p for p in ("/usr/bin", "/bin") if Path(p).is_dir())
    env = {
        "PATH": f"{bin_dir}:{system_path}",
        "HOME": str(tmp_path),
        "PYTHON": str(bin_dir / "python"),
        "REAL_PYTHON": sys.executable,
        "E2E_CALLS": str(calls),
        "E2E_APPLIED": str(tmp_path / "applied.yaml"),
        "FAKE_CONTEXT": context,
        "FAKE_SERVER": server,
        "TMPDIR": str(tmp_path),
    }
    assert shutil.which("bash")
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return done, calls.read_text().splitlines()


@pytest.mark.parametrize(
    ("context", "server", "reason"),
    [
        ("production-eu", "https://10.0.0.1:6443", "not a kind cluster"),
        ("gke_project_zone_cluster", "https://34.1.2.3", "not a kind cluster"),
        ("kind-someone-else", "https://127.0.0.1:41234", "not this test's"),
        (CONTEXT, "https://10.20.30.40:6443", "not a kind API server on this machine"),
        (CONTEXT, "https://kind.example.com:6443", "not a kind API server on this machine"),
    ],
)
def test_e2e_refuses_any_other_cluster_before_touching_it(
    tmp_path: Path, context: str, server: str, reason: str
) -> None:
    done, calls = _run_script(tmp_path, context, server)
    assert done.returncode == 1, done.stderr
    assert "refusing" in done.stderr and reason in done.stderr
    # Only questions were asked: nothing applied, built, deployed or deleted.
    assert all(c.startswith(("kind get clusters", "kubectl config ")) for c in calls), calls


def test_e2e_runs_its_steps_against_the_kind_context_only(tmp_path: Path) -> None:
    done, calls = _run_script(tmp_path, CONTEXT, "https://127.0.0.1:41234")
    assert done.returncode == 0, done.stderr
    acting = [c for c in calls if not c.startswith(("kind get clusters", "kubectl config ", "curl "))]
    kubectl = f"kubectl --context {CONTEXT}"
    steps = [
        f"{kubectl} apply -f https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v",
        f"{kubectl} -n ingress-nginx rollout status deployment/ingress-nginx-controller",
        f"skaffold run --profile kind --kube-context {CONTEXT}",
        f"{kubectl} -n kubechat apply -f -",
        f"{kubectl} -n kubechat wait --for=condition=Ready "
        "chatmodel/smollm2 chatmodel/minilm chatmodel/ocr knowledgebase/docs",
        f"{kubectl} -n kubechat port-forward service/kubechat-elasticsearch 19200:9200",
        "python -m pytest -v tests/e2e tests/integration/test_elasticsearch_live.py",
    ]
    assert len(acting) == len(steps), acting
    for call, step in zip(acting, steps, strict=True):
        assert call.startswith(step), (call, step)
    assert "E2E_URL=http://127.0.0.1 " in acting[-1]
    assert "ES_URL=http://127.0.0.1:19200" in acting[-1]
    for call in calls:
        if call.startswith("kubectl") and not call.startswith("kubectl config current-context"):
            assert "--context kind-kubechat-e2e" in call, call

    # What it applied: the embedded examples, valid resources, sized for a laptop's kind node.
    applied = list(yaml.safe_load_all((tmp_path / "applied.yaml").read_text()))
    models = [parse_resource(ChatModel, d) for d in applied if d["kind"] == "ChatModel"]
    (kb,) = [parse_resource(KnowledgeBase, d) for d in applied if d["kind"] == "KnowledgeBase"]
    assert sorted(m.name for m in models) == ["minilm", "ocr", "smollm2"]
    assert all(not m.spec.engine.backend.value.startswith("tensorrt") for m in models)  # CPU backends
    assert kb.spec.embedding.model in {m.name for m in models}
    for model in models:
        assert model.spec.resources.cpu == "250m" and model.spec.resources.gpus == 0


def test_make_e2e_runs_the_script() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^e2e: .*\n\tPYTHON=\$\(BIN\)/python scripts/e2e.sh$", makefile, re.MULTILINE)
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
