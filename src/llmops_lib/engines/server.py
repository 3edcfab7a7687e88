"""Run an HTTP server as a child process: start, wait for health, stop, keep the log.

`ChildServer` is the one way the library runs a server (engines and the gateway alike). Every
server the library starts, it stops (context manager, and an `atexit` guard for the interactive
case), with every process it started in turn (vLLM runs its engine core as a child); its log is
kept under `LLMOPS_HOME/logs/`. Memory is counted over that process tree. `ServerEngine` adds what
an engine has: its spec, an OpenAI client, timed completions and `/metrics`.

Explained in: book/chapters/01_mlops_to_llmops (serving the model).
"""

from __future__ import annotations

import atexit
import contextlib
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from typing import Self

import httpx
import psutil

from llmops_lib.config import settings
from llmops_lib.engines.base import Completion
from llmops_lib.engines.client import OpenAIClient
from llmops_lib.engines.spec import EngineSpec
from llmops_lib.errors import EngineError
from llmops_lib.models import check_gguf

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_model_file(path: Path) -> None:
    """Refuse a missing, non-GGUF or damaged model before spending seconds starting an engine on it
    (`models.check_gguf`, the one check of a model file)."""
    check_gguf(path)


class ChildServer(ABC):
    """An HTTP server the library runs as a child process on 127.0.0.1, as a context manager.

    The one place that starts and stops children: a port that is free (or refused when taken), a
    log under `LLMOPS_HOME/logs/<log_folder>/` whose tail goes into every error, a wait for the
    health endpoint, an `atexit` guard, and a stop that terminates the process, waits
    `stop_timeout_s`, then kills it and every process it started (psutil's process tree).
    Subclasses say how to launch it (`command`), what to check first (`prepare`), where it reports
    health (`health_path`) and where its log goes (`log_folder`).
    """

    name = "server"
    health_path = "/health"
    log_folder = "engines"
    stop_timeout_s = 10.0

    def __init__(self, *, port: int | None = None, start_timeout_s: float = 120.0) -> None:
        self.port = port
        self.start_timeout_s = start_timeout_s
        self.log_path: Path | None = None
        self._process: subprocess.Popen | None = None

    @abstractmethod
    def command(self, port: int) -> list[str]:
        """The argv that starts the server on `port`."""

    def prepare(self, stem: Path) -> None:  # noqa: B027 (a hook, not abstract: a child may need nothing first)
        """Check or write what the server needs before it is launched; `stem` is its log's path
        without the suffix, for files kept beside the log. A refusal here leaves no log behind."""

    @property
    def base_url(self) -> str:
        if self._process is None:
            raise EngineError(f"{self.name} is not running: use it inside `with` or call start()")
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> Self:
        """Launch the server and return once its health endpoint answers 200.

        Raises:
            EngineError: the port is taken, the program is missing, or the server exited or was not
                healthy in time (the message carries the end of its log).
        """
        if self.port is None:
            self.port = free_port()
        elif port_in_use(self.port):
            raise EngineError(f"port {self.port} on {HOST} is in use: stop what listens there or choose another port")
        log_dir = settings().logs_dir / self.log_folder
        log_dir.mkdir(parents=True, exist_ok=True)
        stem = log_dir / f"{self.name}-{datetime.now():%Y%m%d-%H%M%S}-{self.port}"
        self.prepare(stem)
        self.log_path = stem.with_name(f"{stem.name}.log")
        with self.log_path.open("wb") as log:
            try:
                self._process = subprocess.Popen(
                    self.command(self.port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            except FileNotFoundError as exc:
                raise EngineError(
                    f"cannot start {self.name}: {exc.filename} not found; run make to install it"
                ) from exc
        atexit.register(self.stop)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        url = f"http://{HOST}:{self.port}{self.health_path}"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise EngineError(
                    f"{self.name} exited with code {code} while starting: {self.log_tail()} (log: {self.log_path})"
                )
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise EngineError(
            f"{self.name} was not healthy after {self.start_timeout_s:.0f} s: {self.log_tail()} (log: {self.log_path})"
        )

    def log_tail(self, lines: int = 3) -> str:
        """The last lines of the server's log, joined on one line, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return "no log"
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:]) or "empty log"

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def require_running(self) -> None:
        """Raise `EngineError` with the log's tail if the server is not (or no longer) running."""
        if not self.running():
            raise EngineError(f"{self.name} is not running (log: {self.log_path}): {self.log_tail()}")

    def processes(self) -> list[psutil.Process]:
        """The server's process followed by all its descendants (empty when it is not running)."""
        if self._process is None:
            return []
        try:
            root = psutil.Process(self._process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss_bytes(self) -> int:
        """Resident memory of the server's whole process tree, in bytes (0 when not running)."""
        total = 0
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):  # a child that ended while we counted holds no memory
                total += process.memory_info().rss
        return total

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `stop_timeout_s`) and whatever it started.
        Safe to call twice."""
        children = self.processes()[1:]
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        _kill(children)

    def kill(self) -> None:
        """Kill the server and its children at once (SIGKILL), as a crash would: for failure drills and tests."""
        children = self.processes()[1:]
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        _kill(children)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class ServerEngine(ChildServer):
    """An OpenAI-compatible engine server on 127.0.0.1, as a context manager.

    Subclasses say how to launch it (`command`) and where it reports health (`health_path`).
    """

    def __init__(self, spec: EngineSpec, *, port: int | None = None, start_timeout_s: float = 120.0) -> None:
        super().__init__(port=port, start_timeout_s=start_timeout_s)
        self.spec = spec
        self._client: OpenAIClient | None = None

    def prepare(self, stem: Path) -> None:
        check_model_file(self.spec.model)

    @property
    def client(self) -> OpenAIClient:
        if self._client is None:
            self._client = OpenAIClient(self.base_url)
        return self._client

    def stop(self) -> None:
        """Close the client, then stop the server and whatever it started (see `ChildServer.stop`)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        super().stop()

    def complete(self, prompt: str, **kwargs) -> Completion:
        """One timed completion over HTTP (see `OpenAIClient.complete`)."""
        self.require_running()
        return self.client.complete(prompt, **kwargs)

    def metrics_text(self) -> str:
        """The server's Prometheus exposition text (`/metrics`)."""
        response = self.client.get("/metrics")
        if response.status_code != 200:
            raise EngineError(f"{self.name} has no metrics endpoint (HTTP {response.status_code})")
        return response.text


def _kill(processes: list[psutil.Process], timeout_s: float = 10.0) -> None:
    """Kill processes that outlived their parent's stop, and wait until they are gone."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=timeout_s)
