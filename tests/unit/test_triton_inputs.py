"""The chat request's tensors (kubechat.triton.client.chat_inputs) at the edges of their types,
and the request models' bounds against those types: a number the API accepts always fits the
tensor it becomes, and one that does not fit is an error, never a value numpy wraps."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kubechat.chat.request import GenerationOptions
from kubechat.triton import contract
from kubechat.triton.client import Guide, SamplingParams, chat_inputs

# The integer inputs and the range of their Triton types.
INTEGER_TENSORS: dict[str, tuple[str, np.iinfo[Any]]] = {
    "max_tokens": (contract.MAX_TOKENS, np.iinfo(np.int32)),
    "top_k": (contract.TOP_K, np.iinfo(np.int32)),
    "seed": (contract.RANDOM_SEED, np.iinfo(np.uint64)),
}


def tensors(params: SamplingParams) -> dict[str, Any]:
    return {t.name(): t for t in chat_inputs("hi", params)}


def values(tensor: Any, dtype: type[np.generic]) -> list[int]:
    # The raw bytes the request carries (tritonclient has no public getter for them).
    return list(np.frombuffer(tensor._get_content(), dtype=dtype).tolist())


def test_the_largest_values_become_exact_tensors() -> None:
    params = SamplingParams(max_tokens=contract.INT32_MAX, top_k=contract.INT32_MAX, seed=contract.UINT64_MAX)
    built = tensors(params)
    assert built[contract.RANDOM_SEED].datatype() == "UINT64"
    assert values(built[contract.RANDOM_SEED], np.uint64) == [contract.UINT64_MAX]
    assert values(built[contract.TOP_K], np.int32) == [contract.INT32_MAX]
    assert values(built[contract.MAX_TOKENS], np.int32) == [contract.INT32_MAX]


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_tokens=1, seed=2**64),
        SamplingParams(max_tokens=1, seed=-1),  # numpy 1.26 would wrap it to 2**64 - 1
        SamplingParams(max_tokens=1, top_k=2**31),  # and this to -2**31
        SamplingParams(max_tokens=1, top_k=-1),
        SamplingParams(max_tokens=2**31),
    ],
)
def test_a_value_outside_its_type_is_an_error_not_a_wrapped_value(params: SamplingParams) -> None:
    with pytest.raises(ValueError, match="outside"):
        chat_inputs("hi", params)


@pytest.mark.parametrize("option", sorted(INTEGER_TENSORS))
def test_every_integer_option_the_api_accepts_fits_its_tensor(option: str) -> None:
    schema = GenerationOptions.model_json_schema()["properties"][option]["anyOf"][0]
    _, limits = INTEGER_TENSORS[option]
    assert limits.min <= schema["minimum"] and schema["maximum"] <= limits.max


def test_a_guide_travels_as_tensorrt_llms_guided_decoding_inputs() -> None:
    schema = '{"type": "object"}'
    built = tensors(SamplingParams(max_tokens=1, guide=Guide(contract.GUIDE_JSON_SCHEMA, schema)))
    # BYTES elements: a 4-byte little-endian length, then the bytes.
    assert built[contract.GUIDED_DECODING_GUIDE_TYPE]._get_content()[4:] == b"json_schema"
    assert built[contract.GUIDED_DECODING_GUIDE]._get_content()[4:] == schema.encode()
    plain_json = tensors(SamplingParams(max_tokens=1, guide=Guide(contract.GUIDE_JSON)))
    assert contract.GUIDED_DECODING_GUIDE not in plain_json  # "json" has no guide text
    unguided = tensors(SamplingParams(max_tokens=1))
    assert contract.GUIDED_DECODING_GUIDE_TYPE not in unguided
