"""The chart's monitoring objects: PodMonitors, the PrometheusRule, the Grafana dashboard and the
prometheus-adapter rule, rendered by Helm's engine (production values turn them all on).

prometheus-operator's kinds have no official schema here, so their shape is checked field by
field against what the programs expose (ports, labels, metric names); the rules go through
Debian's promtool: `check rules`, then unit tests of the alerts (`test rules`).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from kubechat.core import metrics as api_metrics
from kubechat.core.resources import AutoscalingSpec, load_chat_models_from_dir
from kubechat.operator import manifests
from kubechat.operator import metrics as operator_metrics
from tests.chart.rendering import CHART, NAMESPACE, RELEASE, ROOT, Manifest, Rendered, render_values, rendered
from tests.prometheus import binary

# Triton's own series that the dashboard and the adapter rule read.
TRITON_METRICS = {"nv_inference_pending_request_count", "nv_trt_llm_request_metrics"}


def _families() -> set[str]:
    names = set()
    for registry in (api_metrics.REGISTRY, operator_metrics.REGISTRY):
        names |= {family.name for family in registry.collect()}
    return names


def _known(series: str, families: set[str]) -> bool:
    for suffix in ("_bucket", "_count", "_sum", "_total", ""):
        if series.endswith(suffix) and series.removesuffix(suffix) in families:
            return True
    return series in TRITON_METRICS


def _container_port(deployment: Manifest, name: str) -> int:
    ports = [p for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
    (port,) = [p["containerPort"] for p in ports if p["name"] == name]
    return int(port)


def test_monitoring_objects_are_off_by_default() -> None:
    """They need prometheus-operator's CRDs (or Grafana, or prometheus-adapter): asked for, not assumed."""
    default = rendered("default")
    assert default.of_kind("PodMonitor") == [] and default.of_kind("PrometheusRule") == []
    assert default.find("ConfigMap", f"{RELEASE}-dashboard") is None
    assert default.find("ConfigMap", f"{RELEASE}-prometheus-adapter") is None


def test_pod_monitors_select_the_pods_and_ports_that_serve_metrics() -> None:
    production = rendered("production")
    monitors = {m["metadata"]["name"]: m for m in production.of_kind("PodMonitor")}
    assert set(monitors) == {f"{RELEASE}-api", f"{RELEASE}-operator", f"{RELEASE}-models"}
    for monitor in monitors.values():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"  # kube-prometheus-stack picks it
        assert set(monitor["spec"]) == {"selector", "podMetricsEndpoints"}  # this namespace only
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
        assert set(endpoint) <= {"port", "path", "interval", "honorLabels", "relabelings"}
    for component in ("api", "operator"):
        deployment = production.get("Deployment", f"{RELEASE}-{component}")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = monitors[f"{RELEASE}-{component}"]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()
        assert _container_port(deployment, "metrics") == 9464
    # The operator's gauges name the resource's namespace themselves.
    assert monitors[f"{RELEASE}-operator"]["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True
    models = monitors[f"{RELEASE}-models"]["spec"]
    for model in load_chat_models_from_dir(ROOT / "examples" / "models"):
        assert models["selector"]["matchLabels"].items() <= manifests.pod_labels(model).items()
        pod = manifests.render_children(model, _operator_settings()).deployment["spec"]["template"]
        triton = next(c for c in pod["spec"]["containers"] if c["name"] == "triton")
        assert {"name": "metrics", "containerPort": manifests.METRICS_PORT, "protocol": "TCP"} in triton[
            "ports"
        ]
    (relabeling,) = models["podMetricsEndpoints"][0]["relabelings"]
    label = manifests.CHAT_MODEL_LABEL.replace(".", "_").replace("/", "_").replace("-", "_")
    assert relabeling == {
        "sourceLabels": [f"__meta_kubernetes_pod_label_{label}"],
        "targetLabel": "chat_model",
    }


def _operator_settings() -> Any:
    from kubechat.operator.settings import OperatorSettings

    return OperatorSettings()


def _rules(values: Rendered) -> dict[str, Any]:
    rule = values.get("PrometheusRule", RELEASE)
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    return {"groups": rule["spec"]["groups"]}


def test_promtool_accepts_the_rendered_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(_rules(rendered("production"))))
    result = subprocess.run([binary("promtool"), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_every_alert_reads_series_kubechat_exports_in_this_namespace() -> None:
    families = _families()
    alerts = [rule for group in _rules(rendered("production"))["groups"] for rule in group["rules"]]
    assert {a["alert"] for a in alerts} == {
        "KubechatModelNotReady", "KubechatTimeToFirstTokenHigh", "KubechatHttpErrorRatioHigh",
        "KubechatAnswerFailureRatioHigh", "KubechatIngestionFailures", "KubechatIngestionQueueStuck",
        "KubechatOperatorReconcileFailing",
    }  # fmt: skip
    for alert in alerts:
        series = re.findall(r"\b(kubechat_\w+)\{([^}]*)\}", alert["expr"])
        assert series, alert["alert"]
        for name, matchers in series:
            assert _known(name, families), (alert["alert"], name)
            assert f'namespace="{NAMESPACE}"' in matchers, (alert["alert"], name)
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    thresholds = {a["alert"]: a["expr"] for a in alerts}
    assert thresholds["KubechatTimeToFirstTokenHigh"].endswith("> 3")  # production's ttftP95Seconds


# Alert unit tests (promtool test rules): series in, alerts out. The annotations are left out
# of the copy under test (promtool compares them verbatim; `check rules` validated their templates).
ALERT_TESTS = Path(__file__).with_name("alert-tests.yaml")


def test_the_alerts_fire_when_they_should(tmp_path: Path) -> None:
    rules = _rules(rendered("production"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests.yaml").write_text(ALERT_TESTS.read_text())
    result = subprocess.run(
        [binary("promtool"), "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "files" / "dashboards" / "kubechat.json").read_text())
    return loaded


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_the_dashboard_is_a_labelled_config_map_of_known_series() -> None:
    config_map = rendered("production").get("ConfigMap", f"{RELEASE}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["kubechat.json"]) == dashboard()
    families = _families()
    queries = dashboard_queries()
    assert len(queries) >= 15
    for query in queries:
        for name in re.findall(r"\b((?:kubechat|nv)_\w+)\{", query):
            assert _known(name, families), (name, query)
    # Every API metric is on the dashboard.
    shown = {n for q in queries for n in re.findall(r"\b(kubechat_\w+)\{", q)}
    for family in api_metrics.REGISTRY.collect():
        if family.name.startswith("kubechat_"):
            assert any(_known(s, {family.name}) for s in shown), family.name


def adapter_rules(values: Rendered | None = None) -> dict[str, Any]:
    config_map = (values or rendered("production")).get("ConfigMap", f"{RELEASE}-prometheus-adapter")
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return loaded


def test_the_adapter_rule_serves_the_metric_the_autoscalers_ask_for() -> None:
    (rule,) = adapter_rules()["rules"]
    assert rule["name"]["as"] == AutoscalingSpec().metric
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    for placeholder in ("<<.GroupBy>>", "<<.LabelMatchers>>"):
        assert placeholder in rule["metricsQuery"]
    elsewhere = render_values(
        {"monitoring": {"prometheusAdapter": {"enabled": True, "namespace": "monitoring"}}}
    )
    assert (
        elsewhere.get("ConfigMap", f"{RELEASE}-prometheus-adapter")["metadata"]["namespace"] == "monitoring"
    )


def adapter_query(namespace: str, pods: list[str], model: str) -> str:
    """The PromQL prometheus-adapter sends for the HPA of one ChatModel (its metricsQuery with the
    namespace, the pods and the HPA's metric selector filled in, as the adapter does)."""
    (rule,) = adapter_rules()["rules"]
    matchers = f'namespace="{namespace}",pod=~"{"|".join(pods)}",model="{model}"'
    query: str = rule["metricsQuery"].replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod")
    return query


def test_the_docs_list_every_metric_and_alert_with_its_threshold() -> None:
    """docs/observability.md is the reference: a metric or an alert missing there fails here."""
    docs = (ROOT / "docs" / "observability.md").read_text()
    for family in _families():
        if family.startswith("kubechat_"):
            documented = family if f"`{family}`" in docs else f"{family}_total"
            assert f"`{documented}`" in docs, family
    thresholds = {
        "KubechatModelNotReady": "modelNotReadyFor",
        "KubechatTimeToFirstTokenHigh": "ttftP95Seconds",
        "KubechatHttpErrorRatioHigh": "httpErrorRatio",
        "KubechatAnswerFailureRatioHigh": "answerFailureRatio",
        "KubechatIngestionFailures": "ingestionFailures",
        "KubechatIngestionQueueStuck": "stuckQueueFor",
    }
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["prometheusRule"]
    for group in _rules(rendered("production"))["groups"]:
        for rule in group["rules"]:
            (row,) = [line for line in docs.splitlines() if line.startswith(f"| `{rule['alert']}`")]
            if rule["alert"] in thresholds:
                value = thresholds[rule["alert"]]
                assert f"`{value}` ({defaults[value]})" in row, row
