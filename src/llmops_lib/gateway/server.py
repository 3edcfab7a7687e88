"""Running the gateway: `run_gateway` in the foreground (the CLI), `GatewayServer` as a child process.

`GatewayServer` starts `llmops gateway` itself, as an operator would, on a copy of the configuration:
its event loop and CPU stay apart from the caller's (tests, notebooks; the overhead benchmark reads
its CPU time), it works from any script or notebook, and its log is kept under
`LLMOPS_HOME/logs/gateway/`.
Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from __future__ import annotations

import atexit
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Self

import httpx

from llmops_lib.config import settings
from llmops_lib.engines.server import HOST, free_port
from llmops_lib.errors import EngineError
from llmops_lib.gateway.config import GatewayConfig


def run_gateway(config: GatewayConfig, host: str = HOST, port: int = 8000) -> None:
    """Serve the gateway until interrupted (uvloop + httptools; access log off: it would log every request)."""
    import uvicorn

    from llmops_lib.gateway.app import create_app

    uvicorn.run(
        create_app(config), host=host, port=port, log_level="warning", access_log=False, loop="uvloop", http="httptools"
    )


class GatewayServer:
    """`with GatewayServer(config) as gw:` a gateway on 127.0.0.1 at `gw.base_url` (without /v1)."""

    def __init__(self, config: GatewayConfig, port: int | None = None, start_timeout_s: float = 30.0) -> None:
        self.config = config
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.log_path: Path | None = None
        self._process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> Self:
        folder = settings().logs_dir / "gateway"
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"gateway-{datetime.now():%Y%m%d-%H%M%S}-{self.port}"
        config_path, self.log_path = stem.with_suffix(".json"), stem.with_suffix(".log")
        config_path.write_text(self.config.model_dump_json(indent=2))  # JSON is YAML: `llmops gateway` reads it
        command = [
            sys.executable,
            "-m",
            "llmops_lib",
            "gateway",
            "--config",
            str(config_path),
            "--host",
            HOST,
            "--port",
            str(self.port),
        ]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        atexit.register(self.stop)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code, self._process = self._process.returncode, None
                raise EngineError(
                    f"the gateway exited at start (code {code}): {self._log_tail()} (log: {self.log_path})"
                )
            try:
                if httpx.get(self.base_url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise EngineError(
            f"the gateway did not answer /health within {self.start_timeout_s:.0f} s: {self._log_tail()} (log: {self.log_path})"
        )

    def _log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines() if self.log_path else []
        return " | ".join(lines[-3:]) or "empty log"

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: uvicorn finishes, the request log is flushed), then for sure."""
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
