"""Render a CPU model's Triton repository inside its pod (the `render-repository` init step).

    python -m kubechat.operator.render_repository --model /config/chatmodel.yaml \\
        --out /models/repository --state /models/state [--weights DIR] [--tokenizer DIR]

The same renderer as the embedded launcher: artifacts prepared by
`kubechat.triton.artifacts.prepare_artifacts` for package sources (installed in the CPU
image), or found in the folder the fetch step filled (`--weights`) for huggingFace/s3/pvc
sources; then `render_python_model` and `write_model_repository`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kubechat.core.resources import Backend, ChatModel, ResourceError, load_chat_models
from kubechat.triton.artifacts import embedding_dimensions, export_gguf_tokenizer, prepare_artifacts
from kubechat.triton.repository import (
    ModelArtifacts,
    RenderedModel,
    RenderError,
    render_python_model,
    write_model_repository,
)

logger = logging.getLogger(__name__)


def _gguf_in(weights: Path, model: ChatModel) -> Path | None:
    """The single-file GGUF checkpoint in a fetched folder, if the model is one."""
    if weights.is_file():
        return weights if weights.suffix == ".gguf" else None
    hugging_face = model.spec.source.hugging_face
    if hugging_face is not None and hugging_face.file:
        named = weights / hugging_face.file
        return named if named.suffix == ".gguf" else None
    if (weights / "config.json").exists():
        return None
    found = sorted(weights.glob("*.gguf"))
    return found[0] if len(found) == 1 else None


def artifacts_from_weights(
    model: ChatModel, weights: Path, state_dir: Path, tokenizer: Path | None = None
) -> ModelArtifacts:
    """Artifacts of a model whose files were fetched (or mounted) rather than installed."""
    if not weights.exists():
        raise ResourceError(f"ChatModel {model.name}: weights folder {weights} does not exist")
    backend = model.spec.engine.backend
    if backend is Backend.SENTENCE_TRANSFORMERS:
        return ModelArtifacts(checkpoint_dir=str(weights), embedding_dimensions=embedding_dimensions(weights))
    if backend is not Backend.TRANSFORMERS:
        raise ResourceError(f"ChatModel {model.name}: backend {backend} takes no weights")
    gguf = _gguf_in(weights, model)
    if gguf is None:
        return ModelArtifacts(checkpoint_dir=str(weights), tokenizer_dir=str(tokenizer or weights))
    if tokenizer is None:
        tokenizer = state_dir / "tokenizers" / model.name
        if not (tokenizer / "tokenizer.json").exists():
            tokenizer.parent.mkdir(parents=True, exist_ok=True)
            export_gguf_tokenizer(gguf, tokenizer)
    return ModelArtifacts(
        checkpoint_dir=str(gguf.parent), checkpoint_file=gguf.name, tokenizer_dir=str(tokenizer)
    )


def render_repository(
    model_file: Path, out: Path, state_dir: Path, weights: Path | None = None, tokenizer: Path | None = None
) -> list[RenderedModel]:
    """Render the one ChatModel in `model_file` into the Triton repository `out`."""
    models = load_chat_models([model_file])
    if len(models) != 1:
        raise ResourceError(f"{model_file} must hold exactly one ChatModel, found {len(models)}")
    (model,) = models
    state_dir.mkdir(parents=True, exist_ok=True)
    if weights is None:
        artifacts = prepare_artifacts(model, state_dir)
    else:
        artifacts = artifacts_from_weights(model, weights, state_dir, tokenizer)
    rendered = [render_python_model(model, artifacts)]
    write_model_repository(rendered, out)
    logger.info("rendered ChatModel %s into %s", model.name, out)
    return rendered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubechat.operator.render_repository")
    parser.add_argument("--model", type=Path, required=True, help="ChatModel YAML file")
    parser.add_argument("--out", type=Path, required=True, help="Triton model repository to write")
    parser.add_argument("--state", type=Path, required=True, help="folder for prepared files")
    parser.add_argument("--weights", type=Path, help="fetched or mounted checkpoint (non-package sources)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder, when not the checkpoint's")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        render_repository(args.model, args.out, args.state, args.weights, args.tokenizer)
    except (ResourceError, RenderError) as exc:
        print(f"kubechat render-repository: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
