"""Which deployment serves a request: a routing rule first, then weighted choice, then the fallback.

The table is changed at run time by the admin API (canary releases shift weights through it).
Explained in: book/chapters/04_delivery/canary_release.ipynb
"""

from __future__ import annotations

import random

from llmops_lib.gateway.config import Deployment, Route
from llmops_lib.gateway.protocol import ApiError


class RouteTable:
    """Routes by model name; every change is validated whole and applied at once."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = {route.model: route.model_copy(deep=True) for route in routes}
        self._random = random.Random()

    def route(self, model: str) -> Route:
        try:
            return self.routes[model]
        except KeyError:
            raise ApiError(
                404,
                f"unknown model {model!r}: GET /admin/routes lists {sorted(self.routes)}",
                param="model",
                code="model_not_found",
            ) from None

    def candidates(self, model: str, prompt: str, tag: str | None) -> list[Deployment]:
        """Deployments to try in order: the chosen one, then the fallback (if different)."""
        route = self.route(model)
        by_name = {d.name: d for d in route.deployments}
        rule = route.rule
        if rule and (
            (rule.tag is not None and tag == rule.tag)
            or (rule.max_prompt_chars is not None and len(prompt) <= rule.max_prompt_chars)
        ):
            first = by_name[rule.deployment]
        else:
            weighted = [d for d in route.deployments if d.weight > 0]
            if not weighted:
                raise ApiError(
                    503, f"model {model!r} has no deployment with weight > 0", type="server_error", code="no_deployment"
                )
            first = self._random.choices(weighted, weights=[d.weight for d in weighted])[0]
        order = [first]
        if route.fallback and route.fallback != first.name:
            order.append(by_name[route.fallback])
        return order

    def describe(self) -> dict:
        """The routes as `protocol.RoutesResponse` shows them."""
        return {
            "routes": [
                {
                    "model": r.model,
                    "deployments": [{"name": d.name, "url": d.url, "weight": d.weight} for d in r.deployments],
                    "fallback": r.fallback,
                }
                for r in self.routes.values()
            ]
        }

    def set_weights(self, model: str, weights: dict[str, int]) -> None:
        """Set some deployments' weights (each 0..100, checked by `protocol.WeightsUpdate`); the
        route's weights must then sum to 100."""
        route = self.route(model)
        names = {d.name for d in route.deployments}
        for name in weights:
            if name not in names:
                raise ApiError(
                    400, f"deployment {name!r} is not in route {model!r} (has {sorted(names)})", param=f"weights.{name}"
                )
        total = sum(weights.get(d.name, d.weight) for d in route.deployments)
        if total != 100:
            raise ApiError(400, f"weights must sum to 100, got {total}", param="weights")
        for d in route.deployments:
            if d.name in weights:
                d.weight = weights[d.name]

    def add_deployment(self, model: str, deployment: Deployment) -> Deployment:
        route = self.route(model)
        if any(d.name == deployment.name for d in route.deployments):
            raise ApiError(409, f"deployment {deployment.name!r} already exists in route {model!r}", param="name")
        added = Deployment.model_validate(deployment.model_dump())
        route.deployments.append(added)
        return added

    def remove_deployment(self, model: str, name: str) -> None:
        route = self.route(model)
        if not any(d.name == name for d in route.deployments):
            raise ApiError(404, f"deployment {name!r} is not in route {model!r}", param="name")
        if route.fallback == name or (route.rule and route.rule.deployment == name):
            raise ApiError(
                409,
                f"deployment {name!r} is the fallback or rule target of route {model!r}: change that first",
                param="name",
            )
        if len(route.deployments) == 1:
            raise ApiError(409, f"deployment {name!r} is the last of route {model!r}", param="name")
        route.deployments = [d for d in route.deployments if d.name != name]
