"""Atomic file writes: one way to write a file so an interruption never leaves half of it.

`atomic_path(target)` yields a temporary path beside the target (same filesystem, the writer's pid
in its name, so two writers never share one); on success the file (or folder) is fsynced and
renamed over the target, on any error it is removed and the target is left as it was.

Explained in: book/chapters/04_delivery/canary_release (state that survives a crash).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def _fsync(path: Path) -> None:
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                _fsync(child)
        return
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to `target` when the block ends without error.

    The temporary path may be written as a file or created as a folder. An existing target file is
    replaced; an existing target folder is replaced only after the new one is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.partial")
    _remove(temporary)
    try:
        yield temporary
        _fsync(temporary)
        if temporary.is_dir() and target.is_dir():
            _remove(target)
        os.replace(temporary, target)
    except BaseException:
        _remove(temporary)
        raise


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `target` atomically."""
    with atomic_path(target) as temporary:
        temporary.write_text(text)


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
