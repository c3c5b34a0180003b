"""The `kubechat` command: `serve` (embedded runtime), `render` (model repository only), `operator`."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from kubechat.api.settings import Settings
from kubechat.core.logs import configure_logging

if TYPE_CHECKING:
    from kubechat.embedded.launcher import TritonPorts


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
    serve_embedded(settings, args.host, args.port, ports, args.ready_timeout)


def _exit_gracefully(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def serve_embedded(settings: Settings, host: str, port: int, ports: TritonPorts, timeout: float) -> None:
    """`kubechat serve`: tritonserver (kubechat.embedded), supervised, and the API beside it.
    Ctrl-C or SIGTERM stops both, leaving no process behind."""
    import uvicorn

    from kubechat.api.app import create_app
    from kubechat.embedded.launcher import start_triton
    from kubechat.embedded.supervisor import TritonSupervisor

    # uvicorn shuts down on SIGTERM, then re-raises it with the previous handler in place: with
    # the default handler the process would die before stopping tritonserver below.
    signal.signal(signal.SIGTERM, _exit_gracefully)
    server = start_triton(settings.models_dir, settings.state_dir, ports, timeout)
    # From here on a tritonserver that dies is restarted (/ready reports it meanwhile).
    supervisor = TritonSupervisor(server, ready_timeout_s=timeout)
    supervisor.watch()
    try:
        settings = settings.model_copy(update={"triton_url": server.grpc_url})
        # uvicorn's own WebSocket message limit (ws_max_size) is left at its default, as the
        # chart and the image leave it: kubechat.api.settings.WS_TRANSPORT_MAX_BYTES.
        uvicorn.run(
            create_app(settings, supervised={"tritonserver": supervisor}),
            host=host,
            port=port,
            log_level="info",
            log_config=None,  # `kubechat serve` configured logging (kubechat.core.logs)
            ws_per_message_deflate=False,  # as the image and the chart (docs/design-decisions.md)
        )
    finally:
        supervisor.stop()


if __name__ == "__main__":
    main()
