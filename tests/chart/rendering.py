"""The chart rendered by Helm's own engine (helm-python-sdk: Helm v4 as a shared library).

Each values set is rendered once per test session (renders are cached) and split into the
Kubernetes objects a `helm install` would send, plus NOTES.txt.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubechat"
RELEASE = "kubechat"
NAMESPACE = "team-chat"

# The values sets the chart is tested with: the defaults, a production-like installation, kind.
VALUES_FILES: dict[str, Path | None] = {
    "default": None,
    "production": ROOT / "tests" / "chart" / "values-production.yaml",
    "kind": CHART / "values-kind.yaml",
}

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    objects: list[Manifest]
    notes: str
    templates: dict[str, str] = field(repr=False)

    def of_kind(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Manifest:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind} {name}: found {len(found)} (have {self.names(kind)})"
        return found[0]

    def find(self, kind: str, name: str) -> Manifest | None:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        return found[0] if found else None

    def names(self, kind: str) -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.of_kind(kind))

    def pod_templates(self) -> Iterator[tuple[Manifest, Manifest]]:
        """(workload, its pod spec) for every workload the chart renders."""
        for obj in self.objects:
            if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                yield obj, obj["spec"]["template"]["spec"]


def values_of(name: str) -> dict[str, Any]:
    path = VALUES_FILES[name]
    if path is None:
        return {}
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def render_values(values: dict[str, Any], namespace: str = NAMESPACE, release: str = RELEASE) -> Rendered:
    """Render the chart as `helm install RELEASE charts/kubechat -n NAMESPACE -f values` would."""
    with helm.Chart.load(CHART) as chart:
        templates = chart.render(values, name=release, namespace=namespace, is_install=True)
    objects: list[Manifest] = []
    for path, text in sorted(templates.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    notes = next((text for path, text in templates.items() if path.endswith("NOTES.txt")), "")
    return Rendered(objects, notes, templates)


@functools.cache
def rendered(name: str) -> Rendered:
    """A named values set, rendered once per session."""
    return render_values(values_of(name))
