"""Where two greedy outputs of one model part, and how close the model's choice was there.

Speculative decoding verifies a batch of drafted tokens in one pass; the same logits computed in
another order can round differently, and where the top two tokens are nearly tied greedy decoding
can tip the other way. Whether that is what happened is a measurement: the plain model's top-2
logit margin at the first token where the outputs part, against its margins at every other token
of the same output. A margin among the smallest is a near-tie (numerical); a large one is a bug.

Explained in: book/chapters/02_optimization/speculative_decoding.ipynb
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmops_lib.engines.llamacpp import InProcessEngine
from llmops_lib.engines.spec import EngineSpec
from llmops_lib.errors import SpecError


@dataclass(frozen=True)
class Divergence:
    """The first token where two outputs of the same prompt differ, seen by the plain model."""

    position: int
    """Index of the first differing token in the outputs (0: the first generated token)."""
    plain_token: str
    other_token: str
    margin: float
    """The plain model's top-1 minus top-2 logit at that position (recomputed in process)."""
    margins: tuple[float, ...]
    """The same margin at every position of the plain output, for comparison."""

    @property
    def rank(self) -> float:
        """Share of the plain output's positions with a smaller margin than this one (0: the closest call)."""
        return float(np.mean(np.asarray(self.margins) < self.margin))


def _top2_margin(logits: np.ndarray) -> float:
    top2 = np.partition(logits, -2)[-2:]
    return float(top2[1] - top2[0])


def first_divergence(spec: EngineSpec, prompt: str, plain_text: str, other_text: str) -> Divergence | None:
    """Tokenize both outputs with the model's tokenizer, find where they part (None if they do not),
    and replay the plain output through the model in process, one token at a time, reading its logits.

    Args:
        spec: the plain engine's spec (model and threads; speculation is not used here).
        prompt: the prompt both outputs continue.
        plain_text, other_text: the output without and with speculation.
    """
    import llama_cpp

    plain = EngineSpec(model=spec.model, n_ctx=spec.n_ctx, threads=spec.threads, batch_size=spec.batch_size)
    with InProcessEngine(plain) as engine:
        llama = engine.llama
        prompt_ids = llama.tokenize(prompt.encode(), add_bos=True)
        plain_ids = llama.tokenize(plain_text.encode(), add_bos=False, special=True)
        other_ids = llama.tokenize(other_text.encode(), add_bos=False, special=True)
        position = next((i for i, (a, b) in enumerate(zip(plain_ids, other_ids, strict=False)) if a != b), None)
        if position is None:
            if len(plain_ids) == len(other_ids):
                return None
            position = min(len(plain_ids), len(other_ids))  # one output is a prefix of the other
        if len(prompt_ids) + len(plain_ids) > llama.n_ctx():
            raise SpecError(f"prompt and output take more than n_ctx={llama.n_ctx()} tokens: use a larger n_ctx")
        llama.reset()
        llama.eval(prompt_ids)
        margins = []
        for token in plain_ids:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.ctx, -1), shape=(llama.n_vocab(),))
            margins.append(_top2_margin(logits))
            llama.eval([token])

        def piece(ids: list[int]) -> str:
            return (
                llama.detokenize(ids[position : position + 1]).decode(errors="replace")
                if position < len(ids)
                else "(end)"
            )

        plain_token, other_token = piece(plain_ids), piece(other_ids)
    margin = margins[position] if position < len(margins) else float("nan")
    return Divergence(position, plain_token, other_token, margin, tuple(margins))
