"""The distributed engines and forms of parallelism the handbook points to beyond one machine, as data.

The facts live in one cited file, `data/scale_engines.yml` (one source URL per row); `load` validates
it, so a row without a source, a rendered row without its render target or a documented row without
its reason is refused with the row named. `vllm_ray_device_key` asks the installed vLLM, not the file,
whether its platform can use the Ray executor that multi-node tensor/pipeline parallelism needs.

Explained in: book/chapters/10_scale/beyond_one_machine.ipynb
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from llmops_lib import datafile
from llmops_lib.config import settings
from llmops_lib.errors import SpecError

Here = Literal["live", "opt_in", "rendered", "documented"]


class Parallelism(BaseModel):
    """One way to spread a model's work over several devices or machines."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    splits: str = Field(min_length=10)
    when: str = Field(min_length=10)
    source: HttpUrl


class Engine(BaseModel):
    """One row of `engines`: what a distributed engine does, how it is deployed, what this book does with it."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    layer: Literal["runtime", "kubernetes", "router"]
    does: str = Field(min_length=10)
    deployed: str = Field(min_length=5)
    specify: str = Field(min_length=5)
    here: Here
    evidence: str | None = None  # live: a string a code cell of the page contains
    test: str | None = None  # opt_in: the test file that runs it
    target: str | None = None  # rendered: the `llmops render --target`
    why_not: str | None = None  # documented: why it does not run here
    probe: Literal["vllm_ray_device_key"] | None = None  # a claim the page checks on the installed software
    source: HttpUrl

    @model_validator(mode="after")
    def _claim_complete(self) -> Engine:
        needed = {"live": "evidence", "opt_in": "test", "rendered": "target", "documented": "why_not"}[self.here]
        if not getattr(self, needed):
            raise ValueError(f"here={self.here} needs `{needed}`")
        return self


class Catalog(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")
    parallelism: list[Parallelism] = Field(min_length=1)
    engines: list[Engine] = Field(min_length=1)

    def engine(self, name: str) -> Engine:
        """The row called `name`.

        Raises:
            SpecError: no such row.
        """
        for engine in self.engines:
            if engine.name == name:
                return engine
        raise SpecError(f"no engine {name!r} in the scale catalog: use one of {[e.name for e in self.engines]}")


def default_path() -> Path:
    """The shipped `llmops_lib/data/scale_engines.yml`."""
    return datafile.shipped("scale_engines.yml")


def load(path: str | Path | None = None) -> Catalog:
    """Read and validate the catalog (default: the shipped one).

    Raises:
        SpecError: the file is missing, not YAML, or a row breaks the schema (the message names the row).
    """
    return datafile.load(path if path is not None else default_path(), Catalog, "the scale catalog")


def vllm_ray_device_key(timeout_s: float = 120) -> tuple[str, str] | None:
    """(device name, Ray device key) of the platform the installed vLLM detects; None without vLLM's environment.

    vLLM's Ray executor, which multi-node tensor and pipeline parallelism run on, asks Ray for one
    bundle of this key per worker and refuses a platform whose key is empty.
    """
    python = settings().vllm_python
    if not python.is_file():
        return None
    probe = "from vllm.platforms import current_platform as p; print(p.device_name); print(p.ray_device_key)"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SpecError(f"{python} could not import vllm.platforms ({tail[0]}): check vLLM's environment")
    device, key = (done.stdout.splitlines() + ["", ""])[:2]
    return device, key
