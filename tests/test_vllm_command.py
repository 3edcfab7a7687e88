"""The vLLM command as a dry run (VLLMEngine.command_for): no vLLM, no export, no process needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmops_lib.engines import EngineSpec, VLLMEngine
from llmops_lib.engines.hf_export import hf_export_dir
from llmops_lib.engines.vllm import installed_vllm, vllm_source_version

CPU_ONLY = {"--enforce-eager", "--kv-cache-memory-bytes", "VLLM_CPU_OMP_THREADS_BIND=nobind"}


def test_gpu_dry_run_drops_the_cpu_settings_and_names_the_export(tmp_path: Path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"not read as a model: only its checksum names the export folder")
    engine = VLLMEngine(EngineSpec(model=model, n_ctx=8192, parallel=256, quantization="fp8", tensor_parallel_size=2))
    gpu = engine.command_for(gpu=True)
    assert not CPU_ONLY & set(gpu)
    assert gpu[gpu.index("--model") + 1] == str(hf_export_dir(model))
    assert gpu[gpu.index("--port") + 1] == "8000" and gpu[gpu.index("--max-num-seqs") + 1] == "256"
    assert gpu[gpu.index("--quantization") + 1] == "fp8" and gpu[gpu.index("--tensor-parallel-size") + 1] == "2"
    cpu = engine.command_for(gpu=False, port=9000)
    assert set(cpu) >= CPU_ONLY and "OMP_NUM_THREADS=" + str(engine.spec.threads) in cpu
    assert cpu[cpu.index("--port") + 1] == "9000"
    assert engine.port is None and engine.model_dir is None, "a dry run starts and exports nothing"


@pytest.mark.engine
def test_the_repackaged_cpu_build_names_the_upstream_vllm_it_carries():
    package, version = installed_vllm()
    upstream = vllm_source_version()
    assert package in ("vllm", "vllm-cpu") and version
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", upstream), upstream
