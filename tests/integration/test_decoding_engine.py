"""The CPU chat engine (what the smollm2 Triton model runs), in process with the real SmolLM2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from kubechat.catalog import load_catalog
from kubechat.core.resources import Capability
from kubechat.engines.generation import ENGINE_THREADS, CausalLmGenerator, GenerationRequest
from kubechat.triton.artifacts import prepare_artifacts
from tests.conftest import EXAMPLE_MODELS


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CausalLmGenerator]:
    state = tmp_path_factory.mktemp("state")
    entry = load_catalog(EXAMPLE_MODELS, state).get("smollm2", Capability.CHAT)
    artifacts = prepare_artifacts(entry.model, Path(state))
    threads = torch.get_num_threads()
    yield CausalLmGenerator(
        artifacts.checkpoint_dir, artifacts.checkpoint_file, artifacts.tokenizer_dir,
        entry.model.spec.engine.max_input_tokens,
    )  # fmt: skip
    torch.set_num_threads(threads)


def test_the_engine_decodes_on_its_own_thread_count(generator: CausalLmGenerator) -> None:
    assert generator.threads == ENGINE_THREADS == 1  # KUBECHAT_ENGINE_THREADS is unset in tests
    torch.set_num_threads(2)  # as torch starts: one per core
    during: list[int] = []

    def cancelled() -> bool:  # asked before every step
        during.append(torch.get_num_threads())
        return False

    request = GenerationRequest(
        prompt="<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n", max_tokens=6
    )
    text = "".join(d if isinstance(d, str) else d.text for d in generator.generate(request, cancelled))
    assert text.strip() and len(during) >= 2
    assert set(during) == {1}  # every step ran single-threaded
