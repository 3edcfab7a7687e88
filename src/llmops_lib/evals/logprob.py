"""Classification by log-probability: which label the model finds likeliest after the prompt.

A base model asked "Sentiment:" may continue with anything; its next-token distribution still ranks
" positive" against " negative". `LabelChooser` asks llama-server for the top `top_n` log-probabilities
(`/v1/completions` with `logprobs`, computed before sampling) after the tokenized prompt and after each
prefix of each label, sums each label's token log-probabilities, and answers the likeliest label. A
label token outside the top `top_n` counts as impossible (-inf); when every label is, the answer is ""
(scored wrong). The prompt and the labels are tokenized separately, as lm-evaluation-harness does.
The server's prompt cache is off for these requests: a prompt computed partly from cached KV (in
other batch shapes) gives log-probabilities a few hundredths apart, enough to flip a close choice
depending on what ran before.

Explained in: book/chapters/prompts/version_control.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from llmops_lib.errors import SpecError
from llmops_lib.evals.run import Endpoint, Generation


class LabelChooser:
    """A `complete` callable for `run_cases` that answers one of `labels` by log-probability.

    Args:
        endpoint: a llama-server (its `/tokenize` and token-id prompts are used).
        labels: the answers to choose from, as the scorer expects them ("positive", "negative").
        prefix: put before each label when scoring, usually the space that follows "Sentiment:".
        top_n: how many top log-probabilities to ask for at each position.
    """

    def __init__(self, endpoint: Endpoint, labels: Sequence[str], *, prefix: str = " ", top_n: int = 200) -> None:
        if len(set(labels)) < 2 or not all(labels):
            raise SpecError(f"need at least two distinct, non-empty labels, got {list(labels)}")
        if top_n < 1:
            raise SpecError(f"top_n must be at least 1, got {top_n}")
        self.endpoint, self.labels, self.prefix, self.top_n = endpoint, tuple(labels), prefix, top_n

    def cache_identity(self, call: str) -> dict[str, Any]:
        """What a choice depends on besides the prompt (`call` is always this object's own)."""
        identity = {"labels": self.labels, "prefix": self.prefix, "top_n": self.top_n}
        return {"served": self.endpoint.served(), "call": "logprob", **identity}

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return self.endpoint.request("POST", "/tokenize", {"content": text, "add_special": special})["tokens"]

    def _top(self, tokens: list[int]) -> dict[int, float]:
        """Log-probabilities of the `top_n` likeliest next tokens after `tokens`, by token id."""
        body = {"prompt": tokens, "max_tokens": 1, "temperature": 0.0, "logprobs": self.top_n, "cache_prompt": False}
        answer = self.endpoint.request("POST", "/v1/completions", body)
        top = answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        return {entry["id"]: entry["logprob"] for entry in top}

    def label_logprobs(self, prompt: str) -> tuple[dict[str, float], int]:
        """Each label's summed token log-probability after `prompt` (-inf outside the top `top_n`), and the
        prompt's token count. Requests are shared between labels with a common prefix."""
        head = self.tokenize(prompt, special=True)  # with <bos>: token-id prompts get none added
        asked: dict[tuple[int, ...], dict[int, float]] = {}
        totals = {}
        for label in self.labels:
            tokens, total = self.tokenize(self.prefix + label, special=False), 0.0
            for i, token in enumerate(tokens):
                context = tuple(head + tokens[:i])
                if context not in asked:
                    asked[context] = self._top(list(context))
                total += asked[context].get(token, -math.inf)
                if total == -math.inf:
                    break
            totals[label] = total
        return totals, len(head)

    def __call__(self, prompt: str) -> Generation:
        start = time.perf_counter()
        totals, prompt_tokens = self.label_logprobs(prompt)
        best = max(totals, key=totals.__getitem__)
        return Generation(best if totals[best] > -math.inf else "", prompt_tokens, 0, time.perf_counter() - start)
