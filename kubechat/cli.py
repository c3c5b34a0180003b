"""The `kubechat` command: `serve` (embedded runtime), `render` (model repository only), `operator`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kubechat.api.settings import Settings
from kubechat.core.logs import configure_logging


def main(argv: list[str] | None = None) -> None:
    # Models and data load offline; nothing is fetched from a hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="kubechat")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run tritonserver and the API on this machine")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--triton-grpc-port", type=int, default=8001)
    serve.add_argument("--triton-http-port", type=int, default=8002)
    serve.add_argument("--triton-metrics-port", type=int, default=8003)
    serve.add_argument(
        "--metrics-port", type=int, default=9464, help="the API's Prometheus metrics (0: a free port)"
    )
    serve.add_argument("--ready-timeout", type=float, default=300.0)
    serve.add_argument("--knowledge-bases", type=Path, help="folder of KnowledgeBase YAML files")
    render = commands.add_parser("render", help="only render the local Triton model repository")
    for sub in (serve, render):
        sub.add_argument("--models", type=Path, help="folder of ChatModel YAML files")
        sub.add_argument("--state-dir", type=Path, help="where state and the repository live")
    operator = commands.add_parser("operator", help="run the Kubernetes operator (in its pod)")
    operator.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="kopf's liveness URL")
    args = parser.parse_args(argv)
    if args.command == "operator":
        from kubechat.operator.runner import main as run_operator

        run_operator(args.liveness)
        return
    overrides: dict[str, object] = {}
    if args.models:
        overrides["models_dir"] = args.models
    if args.state_dir:
        overrides["state_dir"] = args.state_dir
    if getattr(args, "knowledge_bases", None):
        overrides["knowledge_bases_dir"] = args.knowledge_bases
    if args.command == "serve":
        # Beside the API on the same address (loopback unless API keys are set), on its own port.
        overrides.update(metrics_port=args.metrics_port, metrics_host=args.host)
    settings = Settings(**overrides)  # type: ignore[arg-type]  # checked by pydantic
    configure_logging(settings.log_format, settings.log_level)

    from kubechat.embedded import launcher

    if args.command == "render":
        print(launcher.render_local_repository(settings.models_dir, settings.state_dir))
        return
    if args.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        parser.error("listening beyond loopback needs KUBECHAT_API_KEYS (no anonymous access)")
    ports = launcher.TritonPorts(args.triton_grpc_port, args.triton_http_port, args.triton_metrics_port)
    launcher.serve(settings, args.host, args.port, ports, args.ready_timeout)


if __name__ == "__main__":
    main()
