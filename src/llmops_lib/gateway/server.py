"""Running the gateway: `run_gateway` in the foreground (the CLI), `GatewayServer` in a child process.

A child process keeps the gateway's event loop and CPU apart from the caller's (tests, notebooks,
the overhead benchmark measures its CPU with psutil).
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Self

import httpx

from llmops_lib.engines.server import HOST, free_port
from llmops_lib.errors import EngineError
from llmops_lib.gateway.config import GatewayConfig


def run_gateway(config: GatewayConfig, host: str = HOST, port: int = 8000) -> None:
    """Serve the gateway until interrupted (uvloop + httptools; access log off: it would log every request)."""
    import uvicorn

    from llmops_lib.gateway.app import create_app

    uvicorn.run(create_app(config), host=host, port=port, log_level="warning", access_log=False, loop="uvloop", http="httptools")


class GatewayServer:
    """`with GatewayServer(config) as gw:` a gateway on 127.0.0.1 at `gw.base_url` (without /v1)."""

    def __init__(self, config: GatewayConfig, port: int | None = None, start_timeout_s: float = 30.0) -> None:
        self.config = config
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.process: multiprocessing.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> Self:
        self.process = multiprocessing.get_context("spawn").Process(target=run_gateway, args=(self.config, HOST, self.port), daemon=True)
        self.process.start()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if not self.process.is_alive():
                raise EngineError(f"the gateway exited at start (code {self.process.exitcode}): check its configuration")
            try:
                if httpx.get(self.base_url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise EngineError(f"the gateway did not answer /health within {self.start_timeout_s:.0f} s")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: uvicorn finishes, the request log is flushed), then for sure."""
        if self.process is None:
            return
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
