"""Running the gateway: `run_gateway` in the foreground (the CLI), `GatewayServer` as a child process.

`GatewayServer` starts `llmops gateway` itself, as an operator would, on a copy of the configuration:
its event loop and CPU stay apart from the caller's (tests, notebooks; the overhead benchmark reads
its CPU time), it works from any script or notebook, and its log is kept under
`LLMOPS_HOME/logs/gateway/`. Starting and stopping it is `engines.server.ChildServer`'s, as for an engine.

Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

from llmops_lib.engines.server import HOST, ChildServer
from llmops_lib.gateway.config import GatewayConfig


def run_gateway(config: GatewayConfig, host: str = HOST, port: int = 8000) -> None:
    """Serve the gateway until interrupted (uvloop + httptools; access log off: it would log every request)."""
    import uvicorn

    from llmops_lib.gateway.app import create_app

    uvicorn.run(
        create_app(config), host=host, port=port, log_level="warning", access_log=False, loop="uvloop", http="httptools"
    )


class GatewayServer(ChildServer):
    """`with GatewayServer(config) as gw:` a gateway on 127.0.0.1 at `gw.base_url` (without /v1).

    A `ChildServer`: port check, log and its tail in errors, health wait, `atexit` guard, and a stop
    that gives uvicorn `stop_timeout_s` to finish (the request log is flushed) before killing it.
    """

    name = "gateway"
    log_folder = "gateway"
    stop_timeout_s = 30.0

    def __init__(self, config: GatewayConfig, port: int | None = None, start_timeout_s: float = 120.0) -> None:
        super().__init__(port=port, start_timeout_s=start_timeout_s)
        self.config = config
        self.config_path: Path | None = None
        """The copy of the configuration the child reads, beside its log (None before `start`)."""

    def prepare(self, stem: Path) -> None:
        self.config_path = stem.with_name(f"{stem.name}.json")
        self.config_path.write_text(self.config.model_dump_json(indent=2))  # JSON is YAML: `llmops gateway` reads it

    def command(self, port: int) -> list[str]:
        gateway = [sys.executable, "-m", "llmops_lib", "gateway", "--config", str(self.config_path)]
        return [*gateway, "--host", HOST, "--port", str(port)]
