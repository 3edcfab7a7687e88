"""The cited-facts files shipped in `llmops_lib/data/` (the ecosystem's tools, the distributed engines): YAML
validated by a pydantic model, and an error that names the bad row by its `name`, so the fix is one look away.

Explained in: book/chapters/07_ecosystem/tools and book/chapters/10_scale/beyond_one_machine.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from llmops_lib.errors import SpecError

Model = TypeVar("Model", bound=BaseModel)


def shipped(name: str) -> Path:
    """The path of `llmops_lib/data/<name>`."""
    return Path(str(resources.files("llmops_lib") / "data" / name))


def load(path: str | Path, model: type[Model], what: str) -> Model:
    """Read `path` and validate it as `model`; `what` names the file in errors ("the ecosystem file").

    Raises:
        SpecError: the file is missing, not YAML, or a row breaks the schema (the message names the row).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read {what} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise SpecError(
            f"{path}: {where(data, error['loc'])}: {error['msg']} (fix that row; see the file's header)"
        ) from None


def where(data: object, loc: tuple) -> str:
    """`tools[3] (SGLang).sources` for a pydantic error location: a list's row named by its `name`."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    if len(loc) > 1 and isinstance(loc[1], int) and isinstance(data, dict):
        rows = data.get(loc[0])
        row = rows[loc[1]] if isinstance(rows, list) and loc[1] < len(rows) else None
        if isinstance(row, dict) and "name" in row:
            text = text.replace(f"{loc[0]}[{loc[1]}]", f"{loc[0]}[{loc[1]}] ({row['name']})", 1)
    return text or "top level"
