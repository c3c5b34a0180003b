"""Turning a stream of token ids into correct text deltas.

Decoding each token on its own loses the leading spaces of byte-level BPE and splits
multi-byte UTF-8 characters; instead we decode a sliding window and emit only the new, complete
suffix (the approach of Hugging Face TGI and vLLM).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Decoder(Protocol):
    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        # U+FFFD at the end means an incomplete UTF-8 sequence: wait for more tokens.
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return text[len(prefix) :]
        return ""

    def _decode(self, ids: Sequence[int]) -> str:
        return self._decoder.decode(ids, skip_special_tokens=True)


class StopSequenceFilter:
    """Cuts the text stream at the first stop sequence, holding back text that may begin one."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = [s for s in stop if s]
        self._pending = ""
        self.stopped = False

    def push(self, delta: str) -> str:
        if self.stopped:
            return ""
        self._pending += delta
        cut = min((i for i in (self._pending.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            emit, self._pending = self._pending[:cut], ""
            return emit
        hold = max((self._overlap(s) for s in self._stop), default=0)
        emit = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(emit) :]
        return emit

    def flush(self) -> str:
        emit, self._pending = ("" if self.stopped else self._pending), ""
        return emit

    def _overlap(self, stop: str) -> int:
        """Length of the longest suffix of pending text that is a proper prefix of `stop`."""
        for size in range(min(len(stop) - 1, len(self._pending)), 0, -1):
            if self._pending.endswith(stop[:size]):
                return size
        return 0


class TextStream:
    """Token ids in, stop-filtered text deltas out: what a streaming engine sends per response.

    It is the GPU path's detokenizer too: the rendered TensorRT-LLM model (kubechat.triton.
    llmapi_model) gets this file copied beside it and feeds it the new token ids of each LLM API
    output, so that every tokenizer (SentencePiece, byte-level BPE) streams exactly the text
    of a full decode. Standard library only, for that reason.
    """

    def __init__(self, decoder: Decoder, stop: Sequence[str] = ()) -> None:
        self._detokenizer = IncrementalDetokenizer(decoder)
        self._stop = StopSequenceFilter(stop)

    @property
    def stopped(self) -> bool:
        """A stop sequence was reached: the engine should stop generating."""
        return self._stop.stopped

    def push(self, token_ids: Sequence[int]) -> str:
        """Add the tokens generated since the last call; return the text they complete."""
        return self._stop.push("".join(self._detokenizer.push(t) for t in token_ids))

    def finish(self) -> str:
        """The text held back at the end of the stream (a prefix of a stop that never came)."""
        return self._stop.flush()
