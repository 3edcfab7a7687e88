"""`GatewayAdmin`: the admin API from Python (the release controller shifts canary weights with it)."""

from __future__ import annotations

import httpx

from llmops_lib.errors import LLMOpsError, SpecError


class GatewayAdmin:
    """Client of a running gateway's /admin API; errors raise SpecError (4xx) or LLMOpsError."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 10.0) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise LLMOpsError(
                f"gateway admin API at {self.base_url} unreachable ({type(exc).__name__}): is the gateway running?"
            ) from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            error = SpecError if response.status_code < 500 else LLMOpsError
            raise error(f"gateway admin {method} {path}: HTTP {response.status_code}: {message}")
        return response.json()

    def routes(self) -> list[dict]:
        """The routes: [{"model", "deployments": [{"name", "url", "weight"}], "fallback"}]."""
        return self._call("GET", "/admin/routes")["routes"]

    def set_weights(self, model: str, weights: dict[str, int]) -> list[dict]:
        return self._call("PUT", f"/admin/routes/{model}/weights", {"weights": weights})["routes"]

    def add_deployment(self, model: str, name: str, url: str, weight: int = 0) -> list[dict]:
        return self._call("POST", f"/admin/routes/{model}/deployments", {"name": name, "url": url, "weight": weight})[
            "routes"
        ]

    def remove_deployment(self, model: str, name: str) -> list[dict]:
        return self._call("DELETE", f"/admin/routes/{model}/deployments/{name}")["routes"]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GatewayAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
