"""OpenAI-compatible /v1/embeddings: the models with the `embeddings` capability, for the
frameworks (LangChain's OpenAIEmbeddings, LlamaIndex) and clients that speak OpenAI's API."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, Strict

from kubechat.api.dependencies import PrincipalDep, ServicesDep
from kubechat.api.errors import error_responses
from kubechat.api.routing import ApiRoute
from kubechat.core.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    UnauthenticatedError,
    UnsupportedValueError,
)

router = APIRouter(prefix="/v1", tags=["openai"], route_class=ApiRoute)


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request; like the chat request, a field it does not define is refused."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1)]
    # Token arrays (OpenAI accepts them) are refused by `texts`: they would be ids of another
    # tokenizer than the embedder's (tiktoken's, as LangChain sends them).
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Strict(), Field(ge=1)] | None = None
    user: str | None = None  # an identifier: accepted, changes nothing

    def texts(self) -> list[str]:
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(item, str) for item in self.input):
            return [str(item) for item in self.input]
        if not self.input:
            return []
        raise UnsupportedValueError(
            "input must be text or a list of texts: token arrays are not supported (the embedder "
            "tokenizes with its own tokenizer)",
            param="input",
        )


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32s.")


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


EMBEDDING_ERRORS = error_responses(
    UnauthenticatedError, InvalidRequestError, UnsupportedValueError, ModelNotFoundError,
    ModelUnavailableError, validation_status=400,
)  # fmt: skip


@router.post("/embeddings", responses=EMBEDDING_ERRORS)
async def create_embeddings(
    body: EmbeddingRequest, services: ServicesDep, _principal: PrincipalDep
) -> EmbeddingList:
    """One vector per input, in input order. `encoding_format` base64 sends each vector as the
    base64 of its little-endian float32 bytes (what the official clients ask for by default)."""
    result = await services.embeddings.embed(body.model, body.texts(), body.dimensions)
    vectors = result.vectors.astype("<f4", copy=False)
    data = [
        Embedding(
            index=i,
            embedding=base64.b64encode(np.ascontiguousarray(v).tobytes()).decode("ascii")
            if body.encoding_format == "base64"
            else v.tolist(),
        )
        for i, v in enumerate(vectors)
    ]
    usage = EmbeddingUsage(prompt_tokens=result.tokens, total_tokens=result.tokens)
    return EmbeddingList(data=data, model=result.model, usage=usage)
