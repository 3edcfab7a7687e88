"""Prompt-lookup decoding in process: llama-cpp-python's `LlamaPromptLookupDecoding`, measured.

The same idea as llama-server's `ngram-*` speculation (draft what followed the last tokens when
they occurred before), run inside this Python process: llama-cpp-python passes each batch of
drafts to the model and keeps the prefix greedy sampling agrees with. Two costs the server does
not have: the engine needs logits for every evaluated token (`logits_all`), so prompt processing
computes and copies a 262k-vocabulary row per prompt token, and it keeps an `n_ctx` x vocabulary
float32 score buffer. `compare` in `speculative` measures it like the server path: decode speed,
acceptance, and whether greedy output is identical (verified batches may round differently).

Explained in: book/chapters/02_optimization/speculative_decoding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

from llmops_lib.engines.base import Completion
from llmops_lib.engines.llamacpp import InProcessEngine, ServerTimings
from llmops_lib.engines.spec import EngineSpec
from llmops_lib.errors import SpecError


class CountingPromptLookup(LlamaPromptLookupDecoding):
    """llama-cpp-python's prompt lookup, counting its calls and the tokens it drafted.

    Each call is followed by one verification pass, which yields the accepted drafts plus one
    token of the model's own; so accepted = generated tokens - 1 (from the prompt pass) - calls.
    """

    def __init__(self, max_ngram_size: int, num_pred_tokens: int) -> None:
        super().__init__(max_ngram_size=max_ngram_size, num_pred_tokens=num_pred_tokens)
        self.calls = 0
        self.drafted = 0

    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray:
        draft = super().__call__(input_ids, **kwargs)
        self.calls += 1
        self.drafted += len(draft)
        return draft


class PromptLookupEngine(InProcessEngine):
    """The in-process engine, drafting by prompt lookup (none when `num_pred_tokens` is 0).

    With `num_pred_tokens=0` it is the plain in-process engine, timed the same way: the baseline.
    `complete_with_timings` answers like `LlamaServer.complete_with_timings`, so
    `speculative.compare` and `AdaptiveServer` take either engine.
    """

    name = "in-process (prompt lookup)"

    def __init__(self, spec: EngineSpec, *, num_pred_tokens: int = 10, max_ngram_size: int = 2) -> None:
        if num_pred_tokens < 0 or max_ngram_size < 1:
            raise SpecError(
                "prompt lookup needs num_pred_tokens >= 0 and max_ngram_size >= 1; "
                f"got {num_pred_tokens}, {max_ngram_size}"
            )
        self.drafter = CountingPromptLookup(max_ngram_size, num_pred_tokens) if num_pred_tokens else None
        super().__init__(spec, draft_model=self.drafter)

    @property
    def speculative(self) -> bool:
        return self.drafter is not None

    @property
    def scores_bytes(self) -> int:
        """Bytes of the logits buffer prompt lookup forces (0 without drafting)."""
        return self.spec.n_ctx * self._loaded().n_vocab() * 4 if self.speculative else 0

    def complete_with_timings(self, prompt: str, **kwargs: Any) -> tuple[Completion, ServerTimings]:
        """One completion (as `complete`) and its timings in llama-server's terms, drafts included.

        Decode time is everything after the first token, so its speed is 1 / TPOT.
        """
        calls, drafted = (self.drafter.calls, self.drafter.drafted) if self.drafter else (0, 0)
        done = self.complete(prompt, **kwargs)
        draft_n = accepted = 0
        if self.drafter is not None:
            draft_n = self.drafter.drafted - drafted
            accepted = min(draft_n, max(0, done.completion_tokens - 1 - (self.drafter.calls - calls)))
        return done, ServerTimings(
            prompt_n=done.prompt_tokens,
            prompt_ms=done.ttft_s * 1000,
            predicted_n=max(0, done.completion_tokens - 1),
            predicted_ms=(done.latency_s - done.ttft_s) * 1000,
            draft_n=draft_n,
            draft_n_accepted=accepted,
        )
