"""What a request costs: a price per deployment, applied by the gateway as it logs each request.

Hosted APIs bill per token; a self-hosted engine costs per hour whether it is busy or not, so its
`per_hour_usd` is kept beside the token prices (the cost report spreads it over the requests).
Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llmops_lib.errors import SpecError


@dataclass(frozen=True)
class Price:
    """USD per 1,000 input and output tokens, and optionally per hour of the deployment running."""

    per_1k_input_usd: float
    per_1k_output_usd: float
    per_hour_usd: float | None = None

    def __post_init__(self) -> None:
        for name in ("per_1k_input_usd", "per_1k_output_usd", "per_hour_usd"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise SpecError(f"price {name}={value!r} must be a number >= 0 (USD)")


class PriceTable:
    """Prices by deployment name; `cost` raises KeyError for a deployment without a price."""

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self.prices: dict[str, Price] = dict(prices or {})

    def __contains__(self, deployment: object) -> bool:
        return deployment in self.prices

    def cost(self, deployment: str, input_tokens: int, output_tokens: int) -> float:
        """USD of one request of `input_tokens` in and `output_tokens` out on `deployment`."""
        price = self.prices[deployment]
        return (input_tokens * price.per_1k_input_usd + output_tokens * price.per_1k_output_usd) / 1000.0
