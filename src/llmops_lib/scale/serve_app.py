"""The Ray Serve application: one real `llama-server` per replica, behind an OpenAI-compatible ingress.

Each replica rebuilds the `EngineSpec` from the app's args and runs the argv `LlamaServer(spec).command(port)`
gives, the same the local engine runs, on a free port of its node's loopback. Serve asks `check_health`
(llama-server's `/health`) and replaces a replica whose engine died; the engine is stopped with its replica,
and dies with it when the replica's process is killed (parent-death signal). Every answer carries
`x-served-by: <node-ip>/<replica-id>`, so spreading can be counted from the client's side.

Imported inside Ray's worker processes: light imports only, and no `from __future__ import annotations`
(it turns FastAPI's `request: Request` in a class-based ingress into a query parameter).

Explained in: book/chapters/10_scale/beyond_one_machine.ipynb
"""

import shutil

import httpx
import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from ray import serve
from starlette.background import BackgroundTask

from llmops_lib.engines import EngineSpec, LlamaServer
from llmops_lib.scale.serve_config import DEPLOYMENT, SERVED_BY

# What goes back to the client of an engine's answer: its body's type (hop-by-hop headers stay behind).
KEPT_HEADERS = ("content-type",)

app = FastAPI(title="llmops llama-server replica")


class AppArgs(BaseModel):
    """The app's `args` in the Serve config: the engine spec's fields (`EngineSpec.as_dict()`)."""

    spec: dict


class ReplicaEngine(LlamaServer):
    """The spec's `llama-server`, killed by the kernel when the replica's process dies (`setpriv
    --pdeathsig`, where installed): a crashed or killed replica leaves no engine behind."""

    def command(self, port: int) -> list[str]:
        guard = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        return [*guard, *super().command(port)]


@serve.deployment(name=DEPLOYMENT)
@serve.ingress(app)
class LlamaServerReplica:
    """One replica: starts its engine in the constructor (Serve counts it RUNNING once that returns)."""

    def __init__(self, spec: dict) -> None:
        self.engine = ReplicaEngine(EngineSpec(**spec)).start()
        replica_id = serve.get_replica_context().replica_id.unique_id
        self.served_by = f"{ray.util.get_node_ip_address()}/{replica_id}"
        # no read timeout: a long generation is the client's to wait for (the gateway has its own timeout)
        self.client = httpx.AsyncClient(base_url=self.engine.base_url, timeout=httpx.Timeout(10.0, read=None))

    async def check_health(self) -> None:
        """Raise when the engine is gone or unhealthy: Serve then replaces this replica."""
        self.engine.require_running()
        response = await self.client.get("/health", timeout=5.0)
        if response.status_code != 200:
            raise RuntimeError(f"llama-server /health answered {response.status_code}")

    def __del__(self) -> None:
        self.engine.stop()

    async def _forward(self, request: Request, path: str) -> Response:
        upstream = self.client.build_request(
            request.method, path, content=await request.body(), headers={"content-type": "application/json"}
        )
        try:
            answer = await self.client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            # 502 like any proxy whose upstream is gone: the gateway's fallback takes the request
            message = f"the llama-server of replica {self.served_by} did not answer: {type(exc).__name__}"
            return JSONResponse(
                {"error": {"message": message, "type": "upstream_unavailable"}},
                status_code=502,
                headers={SERVED_BY: self.served_by},
            )
        headers = {name: answer.headers[name] for name in KEPT_HEADERS if name in answer.headers}
        headers[SERVED_BY] = self.served_by
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers=headers,
            background=BackgroundTask(answer.aclose),
        )

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._forward(request, "/v1/completions")

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._forward(request, "/v1/chat/completions")

    @app.get("/v1/models")
    async def models(self, request: Request) -> Response:
        return await self._forward(request, "/v1/models")

    @app.get("/health")
    async def health(self, request: Request) -> Response:
        return await self._forward(request, "/health")

    @app.get("/metrics")
    async def metrics(self, request: Request) -> Response:
        return await self._forward(request, "/metrics")


def build_app(args: AppArgs) -> serve.Application:
    """The app Serve builds from the config's `import_path` and `args` (see `serve_config.serve_config`)."""
    return LlamaServerReplica.bind(args.spec)
