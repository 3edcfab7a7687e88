"""A full disk gives one clear line and leaves nothing half-written (real tmpfs of a fixed size,
the `small_disk` fixture of conftest.py)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmops_lib.errors import ModelError
from llmops_lib.models import default_model
from llmops_lib.runbooks import ExitCode

ROOT = Path(__file__).resolve().parents[1]


def fill(disk: Path) -> None:
    """Write a filler file, unbuffered, in ever smaller pieces until not one byte fits."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for piece in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * piece)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_model_assembly_on_a_full_disk_is_one_clear_error(small_disk, monkeypatch):
    disk = small_disk(50)
    monkeypatch.setenv("LLMOPS_HOME", str(disk))
    with pytest.raises(ModelError, match="no space left .* free space or point LLMOPS_HOME elsewhere"):
        default_model()
    assert not [p for p in (disk / "models").iterdir()], "no partial model left behind"


@pytest.mark.engine
def test_runbook_on_a_full_disk_exits_4_and_keeps_nothing_half_written(small_disk, model_path):
    disk = small_disk(model_path.stat().st_size // 2**20 + 8)
    (disk / "models").mkdir()
    shutil.copyfile(model_path, disk / "models" / model_path.name)
    (disk / "runs").mkdir()
    fill(disk)
    result = subprocess.run(
        [sys.executable, "-m", "llmops_lib", "runbook", "run", "health_check", "-p", "requests=1", "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ | {"LLMOPS_HOME": str(disk)},
    )
    assert result.returncode == ExitCode.INFRASTRUCTURE, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "free space" in last, result.stderr
    assert list((disk / "runs").iterdir()) == [], "no run, complete or not, is left in the archive"
