"""Copy the tokenizers of the CPU image's embedded models into the API's tokenizers folder.

    python /opt/kubechat/export_tokenizers.py --models /app/examples/models \\
        --out /var/lib/kubechat-tokenizers --model smollm2 --model minilm

The API in cluster mode reads `KUBECHAT_TOKENIZERS_DIR/<model name>/` (tokenizer.json and the
chat template) for chat templates, token counts and, for an embedder, chunking. The kind profile
of the chart runs this in an init container of the API pod: the packages are installed in this
image only. A GGUF model's tokenizer is exported with the same code `make serve` uses.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from kubechat.core.resources import Backend, load_chat_models_from_dir
from kubechat.triton.artifacts import prepare_artifacts

# What a Hugging Face tokenizer folder holds (not the weights beside it).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.txt",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export_tokenizers.py")
    parser.add_argument("--models", type=Path, required=True, help="folder of ChatModel YAML files")
    parser.add_argument("--out", type=Path, required=True, help="one folder per model name goes here")
    parser.add_argument("--model", action="append", default=[], help="only these models (repeatable)")
    args = parser.parse_args(argv)
    models = {m.name: m for m in load_chat_models_from_dir(args.models)}
    wanted = args.model or sorted(models)
    missing = sorted(set(wanted) - set(models))
    if missing:
        print(f"export_tokenizers: no ChatModel named {', '.join(missing)} in {args.models}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as state:
        for name in wanted:
            model = models[name]
            backend = model.spec.engine.backend
            if backend not in (Backend.TRANSFORMERS, Backend.SENTENCE_TRANSFORMERS):
                print(f"export_tokenizers: {name} ({backend}) has no tokenizer, skipped")
                continue
            artifacts = prepare_artifacts(model, Path(state))
            source = Path(artifacts.tokenizer_dir or artifacts.checkpoint_dir)
            if not (source / "tokenizer.json").is_file():
                print(f"export_tokenizers: {name}: no tokenizer.json in {source}", file=sys.stderr)
                return 1
            target = args.out / name
            target.mkdir(parents=True, exist_ok=True)
            for file in TOKENIZER_FILES:
                if (source / file).is_file():
                    shutil.copyfile(source / file, target / file)
            print(f"export_tokenizers: {name} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
