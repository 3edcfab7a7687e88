"""Published memory bandwidth of current accelerators, cited and never measured here, and the
generation roofline each implies for a model.

The roofline (`bench/roofline.py`) needs only a bandwidth and the model's bytes read per token, so a
vendor's published bandwidth turns into an upper bound on one stream's tokens/s for *our* model on
hardware this book cannot run on. Every row of `data/accelerators.yml` carries the https page it
comes from; a row without one is refused, so a figure cannot lose its source.

Explained in: book/chapters/09_outlook/future_trends.ipynb
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmops_lib.bench.roofline import bytes_read_per_token
from llmops_lib.errors import SpecError
from llmops_lib.models import GGUFInfo


class Accelerator(BaseModel):
    """One device's published figures (per device, vendor peak)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: str
    memory_gb: float = Field(gt=0)
    bandwidth_gb_s: float = Field(gt=0)
    source: str
    note: str = ""

    @field_validator("source")
    @classmethod
    def _https(cls, source: str) -> str:
        if not source.startswith("https://"):
            raise ValueError("must be the https address of the page the figures come from")
        return source


def accelerators_file() -> Path:
    return Path(str(files("llmops_lib") / "data" / "accelerators.yml"))


def load_accelerators(path: Path | None = None) -> list[Accelerator]:
    """The cited devices, in file order; a bad row is named by its index and field."""
    path = path or accelerators_file()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read the accelerator figures ({exc})") from None
    rows = data.get("accelerators") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise SpecError(f"{path}: expected a non-empty list under 'accelerators'")
    found = []
    for index, row in enumerate(rows):
        try:
            found.append(Accelerator.model_validate(row))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise SpecError(f"{path}: accelerators.{index}.{where}: {error['msg']}; fix that row") from None
    return found


def implied_rooflines(info: GGUFInfo, accelerators: list[Accelerator]) -> list[dict[str, object]]:
    """For each device: its cited bandwidth, the tokens/s bound it implies for this model, and
    whether the model file fits in the device's memory at all."""
    per_token = bytes_read_per_token(info)
    return [
        {
            "device": device.name,
            "kind": device.kind,
            "bandwidth (GB/s, cited)": device.bandwidth_gb_s,
            "roofline (tokens/s)": device.bandwidth_gb_s * 1e9 / per_token,
            "model fits in memory": device.memory_gb * 1e9 >= info.file_size,
            "source": device.source,
        }
        for device in accelerators
    ]
