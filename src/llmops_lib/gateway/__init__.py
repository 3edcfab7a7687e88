"""The OpenAI-compatible gateway in front of the engines (routing, priority, cache, validation, log).

Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from llmops_lib.gateway.admin import GatewayAdmin
from llmops_lib.gateway.config import Deployment, GatewayConfig, Route, Rule, Weight, load_config
from llmops_lib.gateway.server import GatewayServer, run_gateway


def create_app(config: GatewayConfig):  # noqa: ANN201 - lazy: importing FastAPI is only needed to serve
    """The ASGI app of `config` (see `llmops_lib.gateway.app.create_app`)."""
    from llmops_lib.gateway.app import create_app as build

    return build(config)


__all__ = [
    "Deployment",
    "GatewayAdmin",
    "GatewayConfig",
    "GatewayServer",
    "Route",
    "Rule",
    "Weight",
    "create_app",
    "load_config",
    "run_gateway",
]
