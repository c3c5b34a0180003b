"""The chart's CRDs are the repository's crds/, byte for byte, plus the keep policy.

`make crds` writes both copies; these tests fail when one was regenerated without the other.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubechat.operator.crds import all_crds, crd_file_name
from tests.chart.rendering import CHART, ROOT, rendered

CRDS = ROOT / "crds"
CHART_CRDS = CHART / "files" / "crds"


def test_the_chart_ships_every_crd_and_nothing_else() -> None:
    assert sorted(p.name for p in CHART_CRDS.glob("*.yaml")) == sorted(p.name for p in CRDS.glob("*.yaml"))
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(crd_file_name(c) for c in all_crds())


@pytest.mark.parametrize("path", sorted(CRDS.glob("*.yaml")), ids=lambda p: p.name)
def test_chart_crd_files_equal_crds(path: Path) -> None:
    assert (CHART_CRDS / path.name).read_bytes() == path.read_bytes(), (
        f"charts/kubechat/files/crds/{path.name} differs from crds/{path.name}: run `make crds`"
    )


@pytest.mark.parametrize("path", sorted(CRDS.glob("*.yaml")), ids=lambda p: p.name)
def test_rendered_crds_are_the_crds_with_the_keep_policy(path: Path) -> None:
    """What Helm sends is the crds/ document, with one annotation added, and nothing changed
    (a YAML round trip through Helm could have turned integers into floats)."""
    expected = yaml.safe_load(path.read_text())
    assert "annotations" not in expected["metadata"]  # the template splices them in as text
    expected["metadata"]["annotations"] = {"helm.sh/resource-policy": "keep"}
    found = rendered("default").get("CustomResourceDefinition", expected["metadata"]["name"])
    assert found == expected
