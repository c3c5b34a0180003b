#!/usr/bin/env bash
# `make e2e`: kubechat end to end on a local kind cluster.
#
#   1. creates the kind cluster of hack/kind.yaml when it is missing (kind switches the current
#      context to it), and refuses to go on unless the current context is that kind cluster
#      (`kind-*`) and its API server is on this machine (127.0.0.1 / localhost);
#   2. installs ingress-nginx (a pinned manifest for kind);
#   3. `skaffold run -p kind`: builds the kubechat and triton-cpu images, loads them into the
#      node and installs the chart with charts/kubechat/values-kind.yaml (dev Elasticsearch and
#      MinIO, CPU models, ingress);
#   4. applies the embedded examples as cluster resources: ChatModels smollm2, minilm and ocr
#      (CPU backends; requests sized for a laptop) and the KnowledgeBase docs, and waits until
#      all are Ready;
#   5. runs tests/e2e through the ingress (the chat page in Chromium, WebSocket chat,
#      upload → indexed → cited answer, image → answer) and the Elasticsearch live suites against the dev Elasticsearch
#      (port-forwarded).
#
# Every kubectl/skaffold call names the context explicitly, so switching contexts in another
# terminal meanwhile cannot redirect it. The cluster is kept afterwards (`make e2e-clean`).
# Needs docker, kind (≥ 0.24), kubectl, helm (skaffold's Helm deployer runs it), skaffold (v2), curl,
# and the project venv (`make install`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${KIND_CLUSTER_NAME:-kubechat-e2e}
CONTEXT="kind-${CLUSTER}"
NAMESPACE=kubechat
RELEASE=kubechat  # skaffold.yaml's release; its objects are named kubechat-*
INGRESS_NGINX_VERSION=controller-v1.12.1
INGRESS_NGINX_MANIFEST="https://raw.githubusercontent.com/kubernetes/ingress-nginx/${INGRESS_NGINX_VERSION}/deploy/static/provider/kind/deploy.yaml"
PYTHON=${PYTHON:-"$ROOT/.venv/bin/python"}
E2E_URL=${KUBECHAT_E2E_URL:-http://127.0.0.1}
API_KEY=kind-e2e-key  # charts/kubechat/values-kind.yaml (development only)
ES_PORT=${E2E_ES_PORT:-19200}
READY_TIMEOUT=${E2E_READY_TIMEOUT:-1200s}

log() { printf '\n==> %s\n' "$*" >&2; }
die() {
    printf 'e2e: %s\n' "$*" >&2
    exit 1
}

# The context must be a kind cluster, ours, whose API server listens on this machine.
check_context() {
    local current server host
    current=$(kubectl config current-context 2>/dev/null) || die "no current kube context"
    case "$current" in
        kind-*) ;;
        *) die "refusing to run against kube context '$current': not a kind cluster (run: kubectl config use-context $CONTEXT)" ;;
    esac
    [[ "$current" == "$CONTEXT" ]] ||
        die "refusing: the current context is '$current', not this test's '$CONTEXT' (run: kubectl config use-context $CONTEXT)"
    server=$(kubectl config view --minify --context "$CONTEXT" -o jsonpath='{.clusters[0].cluster.server}')
    host=${server#*://}
    host=${host%%/*}
    host=${host%:*}
    case "$host" in
        127.0.0.1 | localhost | "[::1]") ;;
        *) die "refusing: context '$CONTEXT' points at $server, not a kind API server on this machine" ;;
    esac
}

diagnose() {
    log "diagnostics (namespace $NAMESPACE)"
    kubectl --context "$CONTEXT" -n "$NAMESPACE" get chatmodels,knowledgebases,deployments,statefulsets,pods,ingress -o wide || true
    kubectl --context "$CONTEXT" -n "$NAMESPACE" get events --sort-by=.lastTimestamp | tail -n 40 || true
    for component in operator api; do
        kubectl --context "$CONTEXT" -n "$NAMESPACE" logs "deployment/${RELEASE}-${component}" --all-containers --tail=80 || true
    done
}

# Poll `curl URL` until it answers 2xx, for at most $2 seconds.
wait_http() {
    local url=$1 seconds=$2 deadline
    deadline=$((SECONDS + seconds))
    until curl -fsS -o /dev/null "$url"; do
        ((SECONDS < deadline)) || die "no answer from $url after ${seconds}s"
        sleep 2
    done
}

for tool in docker kind kubectl helm skaffold curl; do
    command -v "$tool" >/dev/null || die "needs $tool on PATH"
done
[[ -x "$PYTHON" ]] || die "needs the project venv ($PYTHON): make install"

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    # Nothing is deployed before the check below; creating a kind cluster touches no other.
    log "creating kind cluster $CLUSTER (hack/kind.yaml)"
    kind create cluster --name "$CLUSTER" --config "$ROOT/hack/kind.yaml" --wait 180s
fi
check_context
trap diagnose ERR

log "installing ingress-nginx $INGRESS_NGINX_VERSION"
kubectl --context "$CONTEXT" apply -f "$INGRESS_NGINX_MANIFEST"
kubectl --context "$CONTEXT" -n ingress-nginx rollout status deployment/ingress-nginx-controller --timeout=300s

log "skaffold run -p kind (builds the images; the first build takes a while)"
(cd "$ROOT" && skaffold run --profile kind --kube-context "$CONTEXT" --status-check=true)

log "applying the example ChatModels (CPU backends) and KnowledgeBase"
# The examples' default requests (2 CPUs, 8Gi each) are sized for real nodes; a laptop's kind
# node gets what these small models need (memory is also the limit).
"$PYTHON" - "$ROOT" <<'PY' | kubectl --context "$CONTEXT" -n "$NAMESPACE" apply -f -
import sys
from pathlib import Path

import yaml

root = Path(sys.argv[1])
sizes = {"smollm2": "3Gi", "minilm": "2Gi", "ocr": "1Gi"}
documents = []
for name, memory in sizes.items():
    model = yaml.safe_load((root / "examples" / "models" / f"{name}.yaml").read_text())
    model["spec"]["resources"] = {"cpu": "250m", "memory": memory}
    documents.append(model)
documents.append(yaml.safe_load((root / "examples" / "knowledge-bases" / "docs.yaml").read_text()))
yaml.safe_dump_all(documents, sys.stdout, sort_keys=False)
PY
kubectl --context "$CONTEXT" -n "$NAMESPACE" wait --for=condition=Ready \
    chatmodel/smollm2 chatmodel/minilm chatmodel/ocr knowledgebase/docs --timeout="$READY_TIMEOUT"

log "waiting for the API through the ingress ($E2E_URL/ready)"
wait_http "$E2E_URL/ready" 300

log "port-forwarding the dev Elasticsearch to 127.0.0.1:$ES_PORT"
kubectl --context "$CONTEXT" -n "$NAMESPACE" port-forward "service/${RELEASE}-elasticsearch" "${ES_PORT}:9200" \
    >"${TMPDIR:-/tmp}/kubechat-e2e-port-forward.log" 2>&1 &
port_forward=$!
trap 'kill "$port_forward" 2>/dev/null || true' EXIT
wait_http "http://127.0.0.1:${ES_PORT}/" 60

log "running the e2e suite"
cd "$ROOT"
KUBECHAT_E2E_URL="$E2E_URL" \
    KUBECHAT_E2E_API_KEY="$API_KEY" \
    KUBECHAT_TEST_ES_URL="http://127.0.0.1:${ES_PORT}" \
    HF_HUB_OFFLINE=1 \
    "$PYTHON" -m pytest -v \
    tests/e2e \
    tests/integration/test_elasticsearch_live.py \
    tests/conformance/test_chunk_store.py \
    tests/conformance/test_document_catalog.py

log "e2e passed; the cluster stays up (make e2e-clean deletes it)"
