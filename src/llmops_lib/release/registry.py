"""The model registry: versions of a model with their artifact, checksum, engine spec, metrics and aliases.

It is MLflow's model registry, not a hand-written one: by default the embedded SQLite store at
`LLMOPS_HOME/mlflow.db` (`LLMOPS_REGISTRY_URI` or `tracking_uri=` point it at any MLflow tracking
URI, a server included). What we add is what operators need from it:

- **Registering verifies** a GGUF's whole structure (`models.inspect_gguf`), the artifact's
  sha256 (against the expected one when given) and that the engine really loads it (llama.cpp
  for a GGUF); only then is the version written, in one call, so a failed registration leaves
  no half entry.
- **Every start re-checks the sha256** (`ModelRecord.verify`, called by whatever starts a
  version): a weight byte flipped inside a structurally valid file is invisible to any
  structural check, but not to the hash recorded at registration.
- **Every alias move is an event** (who, when, why, from which version to which), kept in the
  registry itself as a tag of the registered model, so `history()` is the audit of `stable`.

MLflow is imported on first use: its import takes seconds and must stay off the gateway's path.
Explained in: book/chapters/04_delivery/canary_release
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmops_lib import audit
from llmops_lib.engines.spec import EngineSpec
from llmops_lib.errors import LLMOpsError, ModelError, SpecError
from llmops_lib.mlflow_store import AliasEvent, Store, alias_event, events_in, require_reason
from llmops_lib.models import inspect_gguf, sha256_file

TAG = "llmops."  # prefix of our tags on model versions


def artifact_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder (HF format): the hash of each file's relative path and sha256."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}\0{sha256_file(item)}\n".encode())
    return digest.hexdigest()


def load_with_llama_cpp(spec: EngineSpec) -> None:
    """Load the GGUF with llama.cpp and generate one token: proof the engine can serve it."""
    from llmops_lib.engines import InProcessEngine

    small = EngineSpec(model=spec.model, n_ctx=min(spec.n_ctx, 256), threads=1, batch_size=64)
    with InProcessEngine(small) as engine:
        engine.complete("Hello", max_tokens=1)


def check_hf_folder(path: Path) -> None:
    """A Hugging Face folder must hold config.json and weights (vLLM loads it; pass load_check= to do so)."""
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise ModelError(f"{path} is not a Hugging Face model folder (config.json and *.safetensors expected)")


@dataclass(frozen=True)
class ModelRecord:
    """One registered version, as the release controller needs it."""

    name: str
    version: str
    path: str
    format: str
    sha256: str
    engine_spec: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    description: str = ""
    created_at: float = 0.0

    def spec(self, **overrides: Any) -> EngineSpec:
        """The registered engine spec (GGUF), with `overrides` (e.g. a port-independent threads=1)."""
        return EngineSpec(**(self.engine_spec | overrides))

    def verify(self) -> ModelRecord:
        """Refuse to serve an artifact that changed or vanished since it was registered (its sha256 is
        computed again and compared with the one recorded at registration). Call it at every start."""
        path = Path(self.path)
        if not path.exists():
            raise ModelError(
                f"{self.name} v{self.version}: artifact {path} is gone: restore it or register another version"
            )
        actual = artifact_sha256(path)
        if actual != self.sha256:
            raise ModelError(
                f"{self.name} v{self.version}: {path} has sha256 {actual[:16]}…, registered {self.sha256[:16]}…: "
                "it was changed since; restore the registered file, or register this one as a new version"
            )
        return self


def _spec_dict(spec: EngineSpec) -> dict[str, Any]:
    return {
        k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in asdict(spec).items()
    }


class Registry(Store):
    """Model versions and aliases in MLflow's registry (see the module docstring)."""

    # --- writing ---------------------------------------------------------------------------

    def register(
        self,
        name: str,
        artifact: str | Path,
        *,
        spec: EngineSpec | None = None,
        expected_sha256: str | None = None,
        metrics: Mapping[str, float] | None = None,
        description: str = "",
        load_check: Callable[[Path], None] | None = None,
    ) -> ModelRecord:
        """Verify `artifact` (checksum, real engine load) and register it as the next version of `name`.

        Registering the same file with the same engine spec again returns the existing version.

        Args:
            spec: how to serve it (GGUF); default: the artifact with n_ctx 1024, one thread.
            expected_sha256: refuse the artifact unless its checksum is this.
            metrics: evaluation results to keep with the version (e.g. perplexity).
            load_check: how to prove the engine loads it; default llama.cpp for a GGUF file, a
                folder check for a Hugging Face folder (give vLLM's load here to check that too).

        Raises:
            ModelError: missing artifact, damaged GGUF structure, wrong checksum, or the engine
                cannot load it (nothing registered).
        """
        path = Path(artifact).expanduser().resolve()
        if not path.exists():
            raise ModelError(f"cannot register {name}: artifact {path} does not exist")
        fmt = "gguf" if path.is_file() else "hf"
        if fmt == "gguf":
            try:  # a damaged structure is refused before anything is hashed, loaded or written
                inspect_gguf(path)
            except ModelError as exc:
                raise ModelError(f"cannot register {name}: {exc}") from None
        sha = artifact_sha256(path)
        if expected_sha256 is not None and sha != expected_sha256.lower():
            raise ModelError(
                f"cannot register {name}: {path} has sha256 {sha[:16]}…, expected {expected_sha256[:16]}…: "
                "the file is not the one you meant"
            )
        if fmt == "gguf":
            spec = spec or EngineSpec(model=path, n_ctx=1024, threads=1)
            if Path(spec.model).resolve() != path:
                raise SpecError(
                    f"the engine spec serves {spec.model}, not the artifact {path}: give a spec for this file"
                )
        spec_json = json.dumps(_spec_dict(spec) if spec else {})
        for existing in self.versions(name):  # the same artifact served the same way is the same version
            if existing.sha256 == sha and json.dumps(existing.engine_spec) == spec_json and existing.path == str(path):
                return existing
        if fmt == "gguf":
            try:
                (load_check or (lambda p: load_with_llama_cpp(spec)))(path)
            except LLMOpsError as exc:
                raise ModelError(f"cannot register {name}: the engine could not load {path.name}: {exc}") from exc
        else:
            (load_check or check_hf_folder)(path)
        tags = {
            f"{TAG}sha256": sha,
            f"{TAG}format": fmt,
            f"{TAG}path": str(path),
            f"{TAG}engine_spec": spec_json,
            **{f"{TAG}metric.{k}": repr(float(v)) for k, v in (metrics or {}).items()},
        }
        created_model = self._ensure_model(name)
        try:  # one call writes the version and all its tags: nothing half-registered survives a failure
            version = self.client.create_model_version(name, source=path.as_uri(), tags=tags, description=description)
        except Exception as exc:
            if created_model:
                self.client.delete_registered_model(name)
            raise LLMOpsError(f"the registry at {self.uri} refused version of {name}: {exc}") from exc
        return self.get(name, str(version.version))

    def _ensure_model(self, name: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
            return False
        except MlflowException:
            self.client.create_registered_model(name, description="registered by llmops")
            return True

    def log_metrics(self, name: str, version: str, metrics: Mapping[str, float]) -> ModelRecord:
        """Keep evaluation results with a version (each metric a version tag)."""
        self.get(name, version)
        for key, value in metrics.items():
            self.client.set_model_version_tag(name, str(version), f"{TAG}metric.{key}", repr(float(value)))
        return self.get(name, version)

    def set_alias(self, name: str, alias: str, version: str, *, why: str, who: str | None = None) -> AliasEvent | None:
        """Point `alias` at `version`, recording who/when/why; None (no event) if it already points there."""
        require_reason(why)
        target = self.get(name, str(version))
        current = self.aliases(name).get(alias)
        if current == target.version:
            return None
        self.client.set_registered_model_alias(name, alias, target.version)
        return self._event(name, alias, current, target.version, why, who)

    def remove_alias(self, name: str, alias: str, *, why: str, who: str | None = None) -> AliasEvent | None:
        """Remove `alias` (recorded as an event); None if it does not exist."""
        current = self.aliases(name).get(alias)
        if current is None:
            return None
        self.client.delete_registered_model_alias(name, alias)
        return self._event(name, alias, current, None, why, who)

    def _event(
        self, name: str, alias: str, before: str | None, after: str | None, why: str, who: str | None
    ) -> AliasEvent:
        key, value, event = alias_event(alias, before, after, why, who)
        self.client.set_registered_model_tag(name, key, value)
        audit.record("model.alias", model=name, registry=self.uri, **asdict(event))
        return event

    # --- reading ---------------------------------------------------------------------------

    def get(self, name: str, version_or_alias: str) -> ModelRecord:
        """A version by number (`"3"`) or alias (`"stable"`).

        Raises:
            SpecError: no such model, version or alias (the message lists what exists).
        """
        from mlflow.exceptions import MlflowException

        key = str(version_or_alias)
        try:
            found = (
                self.client.get_model_version(name, key)
                if key.isdigit()
                else self.client.get_model_version_by_alias(name, key)
            )
        except MlflowException:
            known = (
                ", ".join(
                    f"v{r.version}" + (f" ({', '.join(r.aliases)})" if r.aliases else "") for r in self.versions(name)
                )
                or "none"
            )
            raise SpecError(
                f"model {name!r} has no version or alias {key!r} in the registry; registered: {known}"
            ) from None
        return self._record(found)

    def versions(self, name: str) -> list[ModelRecord]:
        """Every version of `name`, oldest first (empty if the model is not registered)."""
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted((self._record(v) for v in found), key=lambda r: int(r.version))

    def aliases(self, name: str) -> dict[str, str]:
        """alias → version of `name` (empty if the model is not registered)."""
        from mlflow.exceptions import MlflowException

        try:
            return {alias: str(v) for alias, v in self.client.get_registered_model(name).aliases.items()}
        except MlflowException:
            return {}

    def history(self, name: str) -> list[AliasEvent]:
        """Every alias move of `name`, oldest first."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(name).tags
        except MlflowException:
            raise SpecError(f"model {name!r} is not in the registry at {self.uri}: register a version first") from None
        return events_in(tags)

    def _record(self, version: Any) -> ModelRecord:
        tags = version.tags or {}
        metrics = {k[len(TAG) + 7 :]: float(v) for k, v in tags.items() if k.startswith(f"{TAG}metric.")}
        return ModelRecord(
            name=version.name,
            version=str(version.version),
            path=tags.get(f"{TAG}path", ""),
            format=tags.get(f"{TAG}format", ""),
            sha256=tags.get(f"{TAG}sha256", ""),
            engine_spec=json.loads(tags.get(f"{TAG}engine_spec", "{}")),
            metrics=metrics,
            aliases=tuple(getattr(version, "aliases", ()) or ()),
            description=version.description or "",
            created_at=(version.creation_timestamp or 0) / 1000,
        )
