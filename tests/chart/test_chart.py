"""The Helm chart, rendered by Helm's engine for the default, production-like and kind values.

Every rendered object is validated against the official Kubernetes schemas (strict: unknown
fields fail); the rest checks what schemas cannot: that the pieces fit each other and the code
(settings the programs read, labels the operator gives model pods, ports), and that every pod
runs locked down.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from kubechat.api.settings import Settings
from kubechat.core.resources import load_chat_models_from_dir, load_knowledge_bases_from_dir
from kubechat.mcp.config import load_mcp_servers
from kubechat.operator import manifests
from kubechat.operator.settings import OperatorSettings
from tests.chart.rendering import (
    CHART,
    NAMESPACE,
    RELEASE,
    ROOT,
    VALUES_FILES,
    Manifest,
    Rendered,
    render_values,
    rendered,
    values_of,
)

VALUE_SETS = sorted(VALUES_FILES)
# The chart's kubeVersion floor (CEL rules with reason/fieldPath) and a current release.
KUBERNETES_VERSIONS = ["1.28", "1.33"]
API = f"{RELEASE}-api"
OPERATOR = f"{RELEASE}-operator"
# Containers allowed a writable root filesystem, and why: Elasticsearch writes into its own
# config, logs and plugin folders at start (the dev store, never kubechat's own pods).
WRITABLE_ROOT = {("StatefulSet", f"{RELEASE}-elasticsearch", "elasticsearch")}


def _containers(pod: Manifest) -> list[Manifest]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _container(obj: Manifest, name: str) -> Manifest:
    (found,) = [c for c in _containers(obj["spec"]["template"]["spec"]) if c["name"] == name]
    return found


def _env(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- Helm's own checks ------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_finds_nothing(name: str) -> None:
    report = helm.lint(
        CHART, values_of(name), strict=True, namespace=NAMESPACE, kube_version="v1.33.0", quiet=False
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"api": {"replica": 3}}, "replica"),  # a typo'd key
        ({"ingres": {"enabled": True}}, "ingres"),
        ({"dev": {"minio": {"enable": True}}}, "enable"),
        ({"api": {"replicas": "three"}}, "replicas"),  # a wrong type
        ({"image": {"digest": "latest"}}, "digest"),  # not a digest
        ({"s3": {"endpoint": "https://minio:9000"}}, "endpoint"),  # host:port, no scheme
        ({"auth": {"apiKeys": "no-principal"}}, "apiKeys"),
    ],
)
def test_values_schema_refuses_mistakes(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=complaint):
        render_values(values)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"elasticsearch": {"url": "https://es:9200"}}, "S3 is not"),
        ({"dev": {"minio": {"enabled": True}}}, "Elasticsearch is not"),
        (
            {"dev": {"elasticsearch": {"enabled": True}}, "elasticsearch": {"url": "https://es:9200"}},
            "not both",
        ),
        (
            {"elasticsearch": {"url": "https://es:9200"}, "s3": {"endpoint": "minio:9000"}},
            "s3.existingSecret or both",
        ),
    ],
)
def test_inconsistent_stores_are_refused(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmError, match=complaint):
        render_values(values)


# --- Kubernetes schemas -----------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_is_valid_kubernetes(name: str, version: str) -> None:
    """prometheus-operator's kinds have no official schema: tests/chart/test_monitoring.py checks them."""
    objects = rendered(name).objects
    assert len(objects) > 15
    for obj in objects:
        if not obj["apiVersion"].startswith("monitoring.coreos.com/"):
            kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_is_strict() -> None:
    """The validator does reject an unknown field (so the test above means something)."""
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"bogus": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_namespaced_objects_go_to_the_release_namespace(name: str) -> None:
    cluster_scoped = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for obj in rendered(name).objects:
        assert ("namespace" in obj["metadata"]) == (obj["kind"] not in cluster_scoped), obj["metadata"]
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"]["namespace"] == NAMESPACE
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubechat"


def test_names_fit_kubernetes_limits_with_a_long_release_name() -> None:
    long_release = "a" * 53  # Helm's own limit
    for obj in render_values(values_of("kind"), release=long_release).objects:
        name = obj["metadata"]["name"]
        limit = 52 if obj["kind"] == "StatefulSet" else 63  # pod names get "-<revision hash>"
        assert len(name) <= limit and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name), name


# --- CRDs ----------------------------------------------------------------------------------------


def test_crds_are_installed_and_kept_on_uninstall() -> None:
    crds = rendered("default").of_kind("CustomResourceDefinition")
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "chatmodels.kubechat.io",
        "knowledgebases.kubechat.io",
    ]
    for crd in crds:
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_crds_can_be_left_to_someone_else() -> None:
    assert render_values({"crds": {"enabled": False}}).of_kind("CustomResourceDefinition") == []


# --- Pod security ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_pod_runs_locked_down(name: str) -> None:
    writable: set[tuple[str, str, str]] = set()
    workloads = list(rendered(name).pod_templates())
    assert workloads
    for workload, pod in workloads:
        where = f"{workload['kind']} {workload['metadata']['name']}"
        pod_context = pod["securityContext"]
        assert pod_context["runAsNonRoot"] is True, where
        assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod_context["runAsUser"] > 0, where
        for container in _containers(pod):
            context = container["securityContext"]
            what = f"{where} / {container['name']}"
            assert context["allowPrivilegeEscalation"] is False, what
            assert context["capabilities"] == {"drop": ["ALL"]}, what
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, what
            assert context.get("privileged") in (None, False), what
            assert "resources" in container and container["resources"]["requests"], what
            if not context.get("readOnlyRootFilesystem"):
                writable.add((workload["kind"], workload["metadata"]["name"], container["name"]))
            else:
                # A read-only root needs its writable places as volumes.
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                assert "/tmp" in mounts or container["name"] == "elasticsearch", what
    assert writable <= WRITABLE_ROOT


@pytest.mark.parametrize("name", VALUE_SETS)
def test_kubechat_images_run_as_the_user_the_operator_expects(name: str) -> None:
    """The operator runs kubechat's images as manifests.NON_ROOT_UID; the chart does the same."""
    for deployment in (API, OPERATOR):
        pod = rendered(name).get("Deployment", deployment)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == manifests.NON_ROOT_UID
        assert pod["securityContext"]["fsGroup"] == manifests.NON_ROOT_UID


# --- The operator -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_operator_is_one_pod_replaced_not_rolled(name: str) -> None:
    deployment = rendered(name).get("Deployment", OPERATOR)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == OPERATOR
    (container,) = pod["containers"]
    assert container["command"] == ["kubechat", "operator", "--liveness", "http://0.0.0.0:8080/healthz"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]


def _environment(rendered_set: Rendered, container: Manifest) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then env, with
    Secret references replaced by placeholders (their values are not in the chart)."""
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        config_map = rendered_set.get("ConfigMap", source["configMapRef"]["name"])
        environment.update(config_map["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            environment[entry["name"]] = entry["value"]
        else:
            environment[entry["name"]] = f"secret-{entry['name'].lower()}=principal"
    return environment


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_operator_gets_settings_it_knows(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every KUBECHAT_OPERATOR_* variable is an OperatorSettings field, and they parse."""
    values = rendered(name)
    deployment = values.get("Deployment", OPERATOR)
    environment = _environment(values, _container(deployment, "operator"))
    fields = {f"KUBECHAT_OPERATOR_{f.upper()}" for f in OperatorSettings.model_fields}
    known_store_fields = {f"KUBECHAT_{f.upper()}" for f in Settings.model_fields}
    for variable in environment:
        if variable.startswith("KUBECHAT_OPERATOR_"):
            assert variable in fields, variable
        elif variable.startswith("KUBECHAT_"):
            assert variable in known_store_fields, variable
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    settings = OperatorSettings()
    assert settings.namespace == NAMESPACE  # one namespace per installation
    # The fetch step of model pods runs the operator's own image.
    assert settings.kubechat_image == _container(deployment, "operator")["image"]
    store_settings = Settings()
    if name == "default":
        assert store_settings.elasticsearch_url == "" and store_settings.s3_endpoint == ""
    else:
        assert store_settings.elasticsearch_url and store_settings.s3_endpoint


def test_image_references() -> None:
    default = rendered("default").get("Deployment", OPERATOR)
    env = _env(_container(default, "operator"))
    assert _container(default, "operator")["image"] == "ghcr.io/kubechat/kubechat:0.1.0"
    assert env["KUBECHAT_OPERATOR_CPU_IMAGE"] == "ghcr.io/kubechat/triton-cpu:0.1.0"
    assert env["KUBECHAT_OPERATOR_TRTLLM_IMAGE"] == OperatorSettings().trtllm_image
    production = rendered("production").get("Deployment", OPERATOR)
    digest = values_of("production")["image"]["digest"]
    assert (
        _container(production, "operator")["image"]
        == f"registry.example.com/kubechat/kubechat:0.1.0@{digest}"
    )
    assert _env(_container(production, "operator"))["KUBECHAT_OPERATOR_KUBECHAT_IMAGE"].endswith(digest)


# --- The API ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_api_gets_settings_it_knows(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every KUBECHAT_* variable of the API is a Settings field, they parse, and the folders the
    settings name are volumes."""
    values = rendered(name)
    deployment = values.get("Deployment", API)
    container = _container(deployment, "api")
    environment = _environment(values, container)
    fields = {f"KUBECHAT_{f.upper()}" for f in Settings.model_fields}
    assert {v for v in environment if v.startswith("KUBECHAT_")} <= fields
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    settings = Settings()
    assert settings.discovery == "kubernetes"
    assert settings.namespace() == NAMESPACE
    assert settings.principals_by_key()  # never an API without keys
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert str(settings.state_dir) in mounts and not mounts[str(settings.state_dir)].get("readOnly")
    assert str(settings.cluster_tokenizers_dir()) in mounts
    if settings.elasticsearch_ca_certs:
        assert any(settings.elasticsearch_ca_certs.startswith(path) for path in mounts)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_api_serves_the_app_factory_with_probes(name: str) -> None:
    deployment = rendered(name).get("Deployment", API)
    container = _container(deployment, "api")
    command = container["command"]
    assert command[:3] == ["uvicorn", "--factory", "kubechat.api.app:create_app"]
    assert command[command.index("--port") + 1] == "8000"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    pod = deployment["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    assert int(command[command.index("--timeout-graceful-shutdown") + 1]) < grace
    assert pod["serviceAccountName"] == API
    service = rendered(name).get("Service", API)
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_replicas_autoscaling_and_disruption_budget() -> None:
    default = rendered("default")
    assert default.get("Deployment", API)["spec"]["replicas"] == 1
    assert default.of_kind("HorizontalPodAutoscaler") == []
    assert default.of_kind("PodDisruptionBudget") == []  # one replica: a PDB would block drains
    production = rendered("production")
    deployment = production.get("Deployment", API)
    assert "replicas" not in deployment["spec"]  # the HPA owns them
    hpa = production.get("HorizontalPodAutoscaler", API)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": API}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    pdb = production.get("PodDisruptionBudget", API)
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    three = render_values({"api": {"replicas": 3}})
    assert three.get("Deployment", API)["spec"]["replicas"] == 3
    assert three.find("PodDisruptionBudget", API) is not None


def test_the_kind_api_exports_the_cpu_models_tokenizers() -> None:
    deployment = rendered("kind").get("Deployment", API)
    init = _container(deployment, "export-tokenizers")
    operator_env = _env(_container(rendered("kind").get("Deployment", OPERATOR), "operator"))
    assert init["image"] == operator_env["KUBECHAT_OPERATOR_CPU_IMAGE"]
    assert init["command"][:2] == ["python", "/opt/kubechat/export_tokenizers.py"]
    models = [init["command"][i + 1] for i, arg in enumerate(init["command"]) if arg == "--model"]
    assert models == ["smollm2", "minilm"]
    # The knowledge base of the e2e test embeds with a model whose tokenizer is exported.
    (kb,) = load_knowledge_bases_from_dir(ROOT / "examples" / "knowledge-bases")
    assert kb.spec.embedding.model in models
    out = init["command"][init["command"].index("--out") + 1]
    assert _env(_container(deployment, "api"))["KUBECHAT_TOKENIZERS_DIR"] == out


# --- Secrets and stores -------------------------------------------------------------------------


def test_default_install_generates_an_api_key() -> None:
    secret = rendered("default").get("Secret", RELEASE)
    import base64

    keys = base64.b64decode(secret["data"]["KUBECHAT_API_KEYS"]).decode()
    key, principal = keys.split("=")
    assert len(key) == 40 and principal == "admin"
    assert "KUBECHAT_API_KEYS" in rendered("default").notes


def test_production_takes_every_credential_from_existing_secrets() -> None:
    production = rendered("production")
    assert production.find("Secret", RELEASE) is None  # nothing secret in the values
    for deployment in (API, OPERATOR):
        container = production.get("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e
        }
        assert refs["KUBECHAT_ELASTICSEARCH_PASSWORD"] == "kubechat-elasticsearch"
        assert refs["KUBECHAT_S3_SECRET_KEY"] == "kubechat-s3"
        if deployment == API:
            assert refs["KUBECHAT_API_KEYS"] == "kubechat-api-keys"
        else:
            assert "KUBECHAT_API_KEYS" not in refs  # the operator serves nobody


def test_kind_wires_the_dev_stores() -> None:
    kind = rendered("kind")
    stores = kind.get("ConfigMap", f"{RELEASE}-stores")["data"]
    assert stores["KUBECHAT_ELASTICSEARCH_URL"] == f"http://{RELEASE}-elasticsearch.{NAMESPACE}.svc:9200"
    assert stores["KUBECHAT_S3_ENDPOINT"] == f"{RELEASE}-minio.{NAMESPACE}.svc:9000"
    assert stores["KUBECHAT_S3_SECURE"] == "false"
    minio = kind.get("Secret", f"{RELEASE}-minio")
    assert set(minio["data"]) == {"root-user", "root-password"}
    env = _container(kind.get("Deployment", API), "api")["env"]
    (secret_key,) = [e for e in env if e["name"] == "KUBECHAT_S3_SECRET_KEY"]
    assert secret_key["valueFrom"]["secretKeyRef"] == {"name": f"{RELEASE}-minio", "key": "root-password"}
    elasticsearch = kind.get("StatefulSet", f"{RELEASE}-elasticsearch")
    es_env = _env(_container(elasticsearch, "elasticsearch"))
    assert es_env["discovery.type"] == "single-node"
    assert es_env["action.auto_create_index"] == "-kubechat-*,+*"  # docs/knowledge-bases.md
    assert kind.get("Service", f"{RELEASE}-elasticsearch")["spec"]["ports"][0]["port"] == 9200


# --- Ingress ------------------------------------------------------------------------------------


def _bytes(size: str) -> int:
    number, unit = re.fullmatch(r"([0-9]+)([kmgKMG]?)", size).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


@pytest.mark.parametrize("name", ["production", "kind"])
def test_the_ingress_keeps_streams_open_and_takes_uploads(name: str) -> None:
    ingress = rendered(name).get("Ingress", API)
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"  # SSE streams as it comes
    # One upload: up to max_upload_files documents of the examples' largest maxDocumentBytes.
    settings = Settings()
    largest = max(
        kb.spec.max_document_bytes
        for kb in load_knowledge_bases_from_dir(ROOT / "examples" / "knowledge-bases")
    )
    body = _bytes(annotations["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert body >= settings.max_upload_files * largest and body >= settings.max_image_bytes
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": API, "port": {"name": "http"}}
    assert ingress["spec"]["ingressClassName"] == "nginx"


@pytest.mark.parametrize("name", ["production", "kind"])
def test_the_ingress_serves_the_chat_page_from_the_api(name: str) -> None:
    """The API pods serve the chat page at / (kubechat/api/web.py): the ingress sends the whole
    host to them, so the page and the API share one origin (no CORS)."""
    values = rendered(name)
    (path,) = values.get("Ingress", API)["spec"]["rules"][0]["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    assert "Chat page:" in values.notes


def test_production_ingress_has_tls_for_its_host() -> None:
    ingress = rendered("production").get("Ingress", API)
    assert ingress["spec"]["rules"][0]["host"] == "chat.example.com"
    assert ingress["spec"]["tls"] == [{"secretName": "chat-example-com-tls", "hosts": ["chat.example.com"]}]
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert "https://chat.example.com" in rendered("production").notes
    assert rendered("default").find("Ingress", API) is None
    assert "port-forward service/kubechat-api" in rendered("default").notes


# --- NetworkPolicies ----------------------------------------------------------------------------


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


# networkPolicy.metricsFrom's default: Prometheus pods, in any namespace.
DEFAULT_SCRAPERS = [
    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
]


def _port(deployment: Manifest, name: str) -> int:
    ports = [p for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
    (port,) = [p["containerPort"] for p in ports if p["name"] == name]
    return int(port)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_network_policies_fit_the_pods_they_guard(name: str) -> None:
    values = rendered(name)
    policies = {p["metadata"]["name"]: p["spec"] for p in values.of_kind("NetworkPolicy")}
    api_labels = values.get("Deployment", API)["spec"]["template"]["metadata"]["labels"]
    operator_labels = values.get("Deployment", OPERATOR)["spec"]["template"]["metadata"]["labels"]

    api = policies[API]
    assert _selects(api["podSelector"]["matchLabels"], api_labels)
    assert api["ingress"][0]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert api["ingress"][0]["from"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
    }
    assert _selects(policies[OPERATOR]["podSelector"]["matchLabels"], operator_labels)
    # Only Prometheus reaches the operator, on its metrics port; the API's metrics port likewise.
    scrapers = values_of(name).get("networkPolicy", {}).get("metricsFrom", DEFAULT_SCRAPERS)
    metrics_port = [{"port": _port(values.get("Deployment", OPERATOR), "metrics"), "protocol": "TCP"}]
    assert policies[OPERATOR]["ingress"] == [{"from": scrapers, "ports": metrics_port}]
    assert api["ingress"][1] == {"from": scrapers, "ports": metrics_port}
    assert metrics_port[0]["port"] == _port(values.get("Deployment", API), "metrics")

    # The model pods the operator creates: every example model's pod labels are selected, and
    # only the API reaches their gRPC port, the one the API egresses to.
    models = policies[f"{RELEASE}-models"]
    for model in load_chat_models_from_dir(ROOT / "examples" / "models"):
        assert _selects(models["podSelector"]["matchLabels"], manifests.pod_labels(model))
    grpc = models["ingress"][0]
    assert grpc["ports"] == [{"port": manifests.GRPC_PORT, "protocol": "TCP"}]
    # Prometheus scrapes Triton's metrics (8002), which the ChatModel autoscalers read: by default.
    assert models["ingress"][1] == {
        "from": scrapers,
        "ports": [{"port": manifests.METRICS_PORT, "protocol": "TCP"}],
    }
    assert _selects(grpc["from"][0]["podSelector"]["matchLabels"], api_labels)
    model_egress = [
        r for r in api["egress"] if r.get("to", [{}])[0].get("podSelector") == models["podSelector"]
    ]
    assert model_egress and model_egress[0]["ports"] == grpc["ports"]

    dns = api["egress"][0]
    assert {p["port"] for p in dns["ports"]} == {53}
    for store, port in (("elasticsearch", 9200), ("minio", 9000)):
        policy = policies.get(f"{RELEASE}-{store}")
        if name == "kind":
            assert policy is not None
            (rule,) = policy["ingress"]
            assert rule["ports"] == [{"port": port, "protocol": "TCP"}]
            assert any(_selects(p["podSelector"]["matchLabels"], api_labels) for p in rule["from"])
            assert any(_selects(p["podSelector"]["matchLabels"], operator_labels) for p in rule["from"])
        else:
            assert policy is None


def test_production_egress_is_narrowed_to_the_given_peers() -> None:
    api = rendered("production").get("NetworkPolicy", API)["spec"]
    peers = [rule.get("to") for rule in api["egress"]]
    assert [{"ipBlock": {"cidr": "10.40.0.0/16"}}] in peers
    assert [{"ipBlock": {"cidr": "10.0.0.1/32"}}, {"ipBlock": {"cidr": "172.20.0.10/32"}}] in peers
    models = rendered("production").get("NetworkPolicy", f"{RELEASE}-models")["spec"]
    assert models["ingress"][1]["ports"] == [{"port": manifests.METRICS_PORT, "protocol": "TCP"}]
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert models["ingress"][1]["from"] == [monitoring]


def test_the_legacy_model_metrics_value_still_narrows_the_triton_pods() -> None:
    """networkPolicy.modelMetricsFrom (older than metricsFrom) still rules Triton pods; [] shuts them."""
    shut = render_values({"networkPolicy": {"modelMetricsFrom": []}})
    models = shut.get("NetworkPolicy", f"{RELEASE}-models")["spec"]
    assert [rule["ports"][0]["port"] for rule in models["ingress"]] == [manifests.GRPC_PORT]
    api = shut.get("NetworkPolicy", API)["spec"]
    assert api["ingress"][1]["from"] == DEFAULT_SCRAPERS


def test_network_policies_can_be_turned_off() -> None:
    assert render_values({"networkPolicy": {"enabled": False}}).of_kind("NetworkPolicy") == []


def test_config_changes_roll_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = render_values(values).get("Deployment", API)
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["kubechat.io/config-checksum"])

    assert checksum({}) == checksum({})  # a generated key does not count
    assert checksum({}) != checksum({"auth": {"apiKeys": "k=p"}})


def test_mcp_servers_come_from_values_and_their_secrets_from_secrets(tmp_path: Any) -> None:
    production = rendered("production")
    config = production.get("ConfigMap", f"{RELEASE}-mcp")["data"]["servers.yaml"]
    (tmp_path / "servers.yaml").write_text(config)
    servers = load_mcp_servers(str(tmp_path / "servers.yaml"))  # what the API will read
    assert [(s.name, s.transport) for s in servers] == [("github", "http"), ("time", "stdio")]
    assert servers[0].headers_from_env == {"Authorization": "GITHUB_MCP_AUTH"}
    api = production.get("Deployment", API)
    container = _container(api, "api")
    env = _env(container)
    assert env["KUBECHAT_MCP_SERVERS"] == "/etc/kubechat/mcp/servers.yaml"
    assert env["GITHUB_MCP_AUTH"] == {"secretKeyRef": {"name": "github-mcp", "key": "authorization"}}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "mcp"]
    assert mount["mountPath"] == "/etc/kubechat/mcp" and mount["readOnly"]
    (volume,) = [v for v in api["spec"]["template"]["spec"]["volumes"] if v["name"] == "mcp"]
    assert volume["configMap"]["name"] == f"{RELEASE}-mcp"
    # Without servers: no file, no variable; /mcp is served either way.
    default = rendered("default")
    assert default.find("ConfigMap", f"{RELEASE}-mcp") is None
    default_env = _env(_container(default.get("Deployment", API), "api"))
    assert "KUBECHAT_MCP_SERVERS" not in default_env
    assert default_env["KUBECHAT_MCP_SERVER_ENABLED"] == "true"


def test_remote_models_secrets_and_egress() -> None:
    """models.remoteSecrets: the API and the operator may get those Secrets by name, and no other;
    networkPolicy.egress.remoteModels: both may reach the endpoints."""
    plain = render_values({})
    for name in (API, OPERATOR):
        rules = plain.get("Role", name)["rules"]
        assert not any("secrets" in r["resources"] for r in rules), "no Secret access without remote models"
    egress = [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 8000, "protocol": "TCP"}]}]
    chart = render_values(
        {
            "models": {"remoteSecrets": ["vllm-key", "openai"]},
            "networkPolicy": {"egress": {"remoteModels": egress}},
        }
    )
    for name in (API, OPERATOR):
        (rule,) = [r for r in chart.get("Role", name)["rules"] if "secrets" in r["resources"]]
        assert rule == {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["vllm-key", "openai"],
            "verbs": ["get"],
        }
        assert egress[0] in chart.get("NetworkPolicy", name)["spec"]["egress"]
