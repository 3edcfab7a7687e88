"""What a request costs: a price per deployment, applied by the gateway as it logs each request.

Hosted APIs bill per token; a self-hosted engine costs per hour whether it is busy or not, so its
`per_hour_usd` is kept beside the token prices (the cost report spreads it over the requests).
Prices are validated once, here: unknown keys and negative amounts are refused wherever a table
comes from (the gateway's YAML through `gateway.config.load_config`, or Python).
Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, RootModel

from llmops_lib.errors import SpecError

#: An amount of US dollars: a finite number, never negative.
USD = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Price(BaseModel):
    """USD per 1,000 input and output tokens, and optionally per hour of the deployment running."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_1k_input_usd: USD
    per_1k_output_usd: USD
    per_hour_usd: USD | None = None


class PriceTable(RootModel[dict[str, Price]]):
    """Prices by deployment name: `PriceTable({"stable": {"per_1k_input_usd": 0.1, ...}})`."""

    root: dict[str, Price] = {}

    def __contains__(self, deployment: object) -> bool:
        return deployment in self.root

    def cost(self, deployment: str, input_tokens: int, output_tokens: int) -> float:
        """USD of one request of `input_tokens` in and `output_tokens` out on `deployment`.

        Raises:
            SpecError: `deployment` has no price (the message lists those that have one).
        """
        price = self.root.get(deployment)
        if price is None:
            raise SpecError(
                f"no price for deployment {deployment!r}: the price table has {sorted(self.root)}; "
                "give the price table the gateway was configured with"
            )
        return (input_tokens * price.per_1k_input_usd + output_tokens * price.per_1k_output_usd) / 1000.0
