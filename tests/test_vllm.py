"""vLLM, for real: the CPU build from `.venv-vllm` serving the default model exported to HF format.

A start is a minute or more of mostly one core (imports, two process spawns, the model load), so
the module's starts overlap: `vllm_starts` launches them (a plain server, an n-gram speculative one,
and two that must fail: Gemma 3 as a draft model, a bad flag) two at a time in the background, and
the health-check runbook, which starts its own server, runs first, beside them. Each test then
takes its start's outcome, as if it had started the server itself. The order of the tests matters:
every start has been waited for before a test points `LLMOPS_VLLM_PYTHON` elsewhere. Nothing here
asserts a speed: only what the server did (tokens, cache hits, accepted drafts, identical text).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import jsonschema
import psutil
import pytest

from llmops_lib.config import settings
from llmops_lib.engines import EngineSpec, VLLMEngine, make_engine
from llmops_lib.engines.hf_export import export_hf, hf_export_dir, vllm_python
from llmops_lib.engines.metrics import common_samples
from llmops_lib.engines.spec import VLLM_KV_CACHE_DTYPES, VLLM_QUANTIZATIONS
from llmops_lib.engines.vllm import speculative_config
from llmops_lib.errors import EngineError, ModelError, SpecError
from llmops_lib.evals.run import Endpoint
from llmops_lib.evals.structured import compare, without_demos
from llmops_lib.evals.tasks import PERSON_SCHEMA, load_task
from llmops_lib.runbooks import ExitCode, run_runbook

pytestmark = pytest.mark.engine

# A copy-heavy prompt: the continuation repeats text already in the prompt, where n-gram drafts hit.
COPY_PROMPT = (
    "Copy the list exactly.\n"
    "List: alpha-7 bravo-3 charlie-9 delta-1 echo-5 foxtrot-2 golf-8 hotel-4 india-6 juliet-0\n"
    "Copy: alpha-7 bravo-3 charlie-9 delta-1 echo-5 foxtrot-2 golf-8 hotel-4 india-6 juliet-0\n"
    "List: alpha-7 bravo-3 charlie-9 delta-1 echo-5 foxtrot-2 golf-8 hotel-4 india-6 juliet-0\n"
    "Copy:"
)


Start = tuple[VLLMEngine, Future]
"""An engine and its start running in the background (`Future.result()` waits; it raises what start() raised)."""


def start_specs(spec: EngineSpec, model_path: Path) -> dict[str, EngineSpec]:
    """The spec of each start, by the name of the fixture that hands it to its test."""
    return {
        "vllm_server": spec,  # the spec the llama.cpp tests run: one spec, both engines
        "ngram_start": EngineSpec(
            model=model_path, n_ctx=1024, threads=1, parallel=1, spec_type="ngram-simple", draft_max=4
        ),
        # vLLM refuses a draft with sliding-window and full attention layers (two KV-cache groups), as Gemma 3 has
        "gemma3_draft_start": EngineSpec(model=model_path, n_ctx=1024, threads=1, draft_model=model_path, draft_max=3),
        "bad_flag_start": EngineSpec(model=model_path, threads=1, extra_args=("--no-such-flag",)),
    }


@pytest.fixture(scope="module")
def vllm_starts(request, spec, model_path) -> Iterator[dict[str, Start]]:
    """Launch, two at a time in the background, the starts that the selected tests of this module
    take; every engine is stopped at the end of the module, after any start still running ended."""
    mine = [item for item in request.session.items if getattr(item, "module", None) is request.module]
    selected = {name for item in mine for name in item.fixturenames}
    specs = {name: s for name, s in start_specs(spec, model_path).items() if name in selected}
    export_hf(model_path)  # the starts share one export: made (or found) once, before any of them
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vllm-start")
    # Starts that share the cores take longer than one alone: more time to become healthy (not an assertion).
    engines = {name: VLLMEngine(s, start_timeout_s=1200) for name, s in specs.items()}
    try:
        yield {name: (engine, pool.submit(engine.start)) for name, engine in engines.items()}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for engine in engines.values():
            engine.stop()


@pytest.fixture
def vllm_server(vllm_starts) -> VLLMEngine:
    """The plain server, healthy (it lives for the module)."""
    server, started = vllm_starts["vllm_server"]
    started.result()
    return server


@pytest.fixture
def ngram_start(vllm_starts) -> Start:
    return vllm_starts["ngram_start"]


@pytest.fixture
def gemma3_draft_start(vllm_starts) -> Start:
    return vllm_starts["gemma3_draft_start"]


@pytest.fixture
def bad_flag_start(vllm_starts) -> Start:
    return vllm_starts["bad_flag_start"]


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def completion_request(server: VLLMEngine, prompt: str, max_tokens: int) -> dict:
    """A plain (non-streaming) greedy completion, as any OpenAI client sends it."""
    body = {"model": "default", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0}
    response = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.usefixtures("vllm_starts")  # first in the module: the module's own starts run meanwhile
def test_health_check_runbook_runs_on_vllm():
    result = run_runbook("health_check", {"engine": "vllm", "requests": 2, "max_tokens": 8})
    assert result.exit_code == ExitCode.OK, result.error
    assert result.records["engine"] == "vllm" and result.records["completed"] == 2


def test_spec_lists_match_the_installed_vllm():
    script = (
        "import json, typing\n"
        "from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS\n"
        "from vllm.config.cache import CacheDType\n"
        "print(json.dumps([QUANTIZATION_METHODS, list(typing.get_args(CacheDType))]))"
    )
    done = subprocess.run([str(vllm_python()), "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    quantizations, kv_dtypes = json.loads(done.stdout.strip().splitlines()[-1])
    assert tuple(quantizations) == VLLM_QUANTIZATIONS
    assert tuple(kv_dtypes) == VLLM_KV_CACHE_DTYPES


def test_export_is_cached_by_checksum_and_adds_bos(model_path):
    folder = export_hf(model_path)
    assert folder == hf_export_dir(model_path) and (folder / "model.safetensors").is_file()
    assert export_hf(model_path) == folder  # cached: same folder, nothing re-exported
    single = json.loads((folder / "tokenizer.json").read_text())["post_processor"]["single"]
    assert single[0] == {"SpecialToken": {"id": "<bos>", "type_id": 0}}, "every prompt starts with <bos>"
    assert not list(folder.parent.glob(".*.partial")), "no half-written export left"


def test_failed_export_leaves_no_folder(tmp_path):
    import gguf
    import numpy as np

    bad = tmp_path / "bad.gguf"  # a whole GGUF file (so it passes the structure check) with no model in it
    writer = gguf.GGUFWriter(str(bad), "llama")
    writer.add_token_list([f"tok{i}" for i in range(32)])
    writer.add_tensor("token_embd.weight", np.zeros((32, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelError, match="exporting bad.gguf to Hugging Face format failed"):
        export_hf(bad)
    target = hf_export_dir(bad)
    assert not target.exists() and not list(target.parent.glob(f".{target.name}.*")), "no half-written export"


def test_streamed_and_plain_completions_agree(vllm_server):
    prompt = "The three primary colors are"
    streamed = vllm_server.complete(prompt, max_tokens=16)
    plain = completion_request(vllm_server, prompt, 16)
    assert streamed.text and streamed.text == plain["choices"][0]["text"]
    assert streamed.completion_tokens == plain["usage"]["completion_tokens"]
    assert streamed.prompt_tokens == plain["usage"]["prompt_tokens"]
    assert len(streamed.itl_s) >= 1, "tokens arrived as a stream, not in one piece"


def test_the_served_tokenizer_adds_bos(vllm_server):
    response = httpx.post(f"{vllm_server.base_url}/tokenize", json={"model": "default", "prompt": "Hello"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["tokens"][0] == 2  # Gemma's <bos>, as llama.cpp adds it from the GGUF


def test_metrics_read_under_common_names(vllm_server):
    before = common_samples(vllm_server.metrics_text())
    done = vllm_server.complete("Write a sentence about rivers:", max_tokens=12, ignore_eos=True)
    after = common_samples(vllm_server.metrics_text())
    assert done.completion_tokens == 12
    assert after["generation_tokens_total"] - before["generation_tokens_total"] == 12
    assert after["prompt_tokens_total"] - before["prompt_tokens_total"] == done.prompt_tokens
    assert after["requests_finished_total"] - before["requests_finished_total"] == 1
    assert after["ttft_seconds_count"] - before["ttft_seconds_count"] == 1
    assert {"requests_running", "requests_waiting", "kv_cache_usage_ratio", "prefix_cache_hits_total"} <= after.keys()


def test_structured_outputs_keep_every_answer_schema_valid(vllm_server):
    """vLLM's structured outputs (`structured_outputs: {"json": schema}`) on the instruction-only prompt."""
    task = without_demos(load_task("extraction"))
    with Endpoint(vllm_server.base_url) as endpoint:
        free, constrained, _ = compare(endpoint, task, task.split("dev")[:3], engine="vllm", retries=0)
    validator = jsonschema.Draft202012Validator(PERSON_SCHEMA)
    for outcome in constrained.outcomes:
        assert validator.is_valid(json.loads(outcome.attempts[-1].text)), outcome.attempts[-1].text
    print(f"schema-valid on vLLM: free {free.validity.estimate:.2f}, constrained {constrained.validity.estimate:.2f}")


def test_repeated_long_prefix_hits_the_prefix_cache(vllm_server):
    words = " ".join(f"w{uuid.uuid4().hex[:6]}" for _ in range(120))  # unique: no earlier request shares it
    prompt = f"Notes: {words}\nSummary:"
    hits = []
    for _ in range(2):
        before = common_samples(vllm_server.metrics_text())
        done = vllm_server.complete(prompt, max_tokens=4)
        after = common_samples(vllm_server.metrics_text())
        hits.append(after["prefix_cache_hits_total"] - before["prefix_cache_hits_total"])
    block = int(re.search(r'vllm:cache_config_info\{[^}]*\bblock_size="(\d+)"', vllm_server.metrics_text())[1])
    assert done.prompt_tokens > 2 * block
    assert hits[0] == 0, "a new prefix cannot hit"
    # The repeat is served from every full cached block; the last token is always computed again.
    assert hits[1] == (done.prompt_tokens - 1) // block * block


def test_vllm_command_serves_and_benchmarks_from_its_environment(vllm_server, tmp_path):
    """vLLM's own `vllm serve` / `vllm bench serve` work in `.venv-vllm` (the CPU build needs the `vllm`
    alias distribution of scripts/setup_vllm.sh): the benchmark drives our vLLM server for real."""
    vllm = Path(vllm_python()).parent / "vllm"
    offline = os.environ | {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
    serve = subprocess.run([vllm, "serve", "--help"], capture_output=True, text=True, env=offline, timeout=600)
    assert serve.returncode == 0, serve.stderr[-2000:]
    assert "usage: vllm serve" in serve.stdout
    # fmt: off
    bench = subprocess.run(
        [
            vllm, "bench", "serve", "--backend", "openai", "--base-url", vllm_server.base_url,
            "--model", "default", "--tokenizer", str(vllm_server.model_dir),
            "--dataset-name", "random", "--random-input-len", "16", "--random-output-len", "4", "--num-prompts", "2",
            "--ignore-eos", "--disable-tqdm", "--save-result", "--result-dir", str(tmp_path),
            "--result-filename", "bench.json",
        ],
        capture_output=True, text=True, env=offline, timeout=600,
    )
    # fmt: on
    assert bench.returncode == 0, bench.stderr[-2000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["completed"] == 2 and result["total_output_tokens"] == 8


def test_ngram_speculation_keeps_greedy_output_and_stops_cleanly(vllm_server, ngram_start):
    plain = vllm_server.complete(COPY_PROMPT, max_tokens=40)
    speculative, started = ngram_start
    started.result()
    tree = speculative.processes()
    assert len(tree) >= 2 and speculative.rss_bytes() > 0  # API server + engine core
    drafted = speculative.complete(COPY_PROMPT, max_tokens=40)
    metrics = speculative.metrics_text()
    speculative.stop()
    assert drafted.text == plain.text and len(plain.text) > 20
    accepted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("vllm:spec_decode_num_accepted_tokens_total")
    )
    assert accepted > 0, "the copy-heavy prompt should have accepted drafts"
    assert not [p for p in tree if alive(p)], "processes left behind"


def test_gemma3_as_draft_model_is_refused_by_vllm_with_its_cause(gemma3_draft_start):
    # The draft-model path reaches vLLM, which refuses a draft with sliding-window and full
    # attention layers (two KV-cache groups), as Gemma 3 has; the error leads with that cause.
    engine, started = gemma3_draft_start
    with pytest.raises(EngineError, match="same kv cache group"):
        started.result()
    assert not engine.running()
    assert "--speculative-config" in engine.command(engine.port)


def test_server_dying_at_start_is_reported_with_its_log(bad_flag_start):
    engine, started = bad_flag_start
    with pytest.raises(EngineError, match="exited with code .*no-such-flag"):
        started.result()
    assert not engine.running()
    assert engine.log_path.parent == settings().logs_dir / "engines"
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(engine.port) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, "nothing of the failed server keeps running"


def test_speculative_config_is_vllm_json(tmp_path):
    ngram = EngineSpec(model=Path("m.gguf"), spec_type="ngram-simple", draft_max=6)
    assert speculative_config(ngram) == {"method": "ngram", "num_speculative_tokens": 6}
    assert speculative_config(replace(ngram, ngram_lookup=3)) == {
        "method": "ngram",
        "num_speculative_tokens": 6,
        "prompt_lookup_min": 3,
        "prompt_lookup_max": 3,
    }
    draft = EngineSpec(model=Path("m.gguf"), draft_model=tmp_path / "d.gguf")
    assert speculative_config(draft, tmp_path / "d-hf") == {
        "method": "draft_model",
        "num_speculative_tokens": 4,
        "model": str(tmp_path / "d-hf"),
    }
    engine = VLLMEngine(
        EngineSpec(model=Path("m.gguf"), quantization="fp8", tensor_parallel_size=2, prefix_caching=False)
    )
    argv = engine.command(8000)
    assert argv[argv.index("--quantization") + 1] == "fp8"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert "--no-enable-prefix-caching" in argv and "vllm.entrypoints.openai.api_server" in argv
    assert {"--enforce-eager", "--kv-cache-memory-bytes", "VLLM_CPU_OMP_THREADS_BIND=nobind"} <= set(argv)
    engine.cpu = False  # what a GPU installation runs: CUDA graphs, vLLM's own KV-cache sizing
    assert not {"--enforce-eager", "--kv-cache-memory-bytes", "VLLM_CPU_OMP_THREADS_BIND=nobind"} & set(
        engine.command(8000)
    )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"quantization": "q4_k_m"}, "not a vLLM quantization method"),
        ({"kv_cache_dtype": "q8_0"}, "not a vLLM KV-cache dtype"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size must be at least 1"),
    ],
)
def test_bad_vllm_spec_values_are_refused_at_construction(options, message):
    with pytest.raises(SpecError, match=message):
        EngineSpec(model=Path("m.gguf"), **options)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"cache_type_k": "q8_0"}, "no llama.cpp KV-cache types"),
        ({"spec_type": "ngram-cache"}, "no counterpart of spec_type='ngram-cache'"),
        ({"draft_model": Path("d.gguf"), "draft_min": 1}, "leave draft_min unset"),
        ({"spec_type": "ngram-simple", "draft_max": 0}, "draft_max of at least 1"),
    ],
)
def test_what_vllm_cannot_do_is_refused_before_starting(options, message):
    with pytest.raises(SpecError, match=message):
        make_engine("vllm", EngineSpec(model=Path("m.gguf"), **options))


def test_missing_model_fails_fast_without_a_process(tmp_path):
    engine = VLLMEngine(EngineSpec(model=tmp_path / "missing.gguf", threads=1))
    with pytest.raises(ModelError, match="model file not found"):
        engine.start()
    assert not engine.running() and engine.log_path is None


def test_missing_vllm_environment_fails_fast(model_path, monkeypatch, tmp_path):
    monkeypatch.setenv("LLMOPS_VLLM_PYTHON", str(tmp_path / "no-venv" / "bin" / "python"))
    engine = VLLMEngine(EngineSpec(model=model_path, threads=1))
    with pytest.raises(EngineError, match="make vllm"):
        engine.start()
    assert not engine.running() and engine.log_path is None


def test_vllm_teacher_gives_the_llama_cpp_labels(vllm_server, model_path):
    """Distillation's teacher through vLLM (HF export, fp32 torch) vs llama.cpp in-process (Q4_K_M):
    the same 8-shot prompt, the label words' log-probs. 40 snippets from the cached dev split; the
    benchmark holds the 97 % goal on 200 — here a looser bound (at most 4 of 40 near-ties flip
    between a quantized and an unquantized model) keeps a small, fast sample honest."""
    from llmops_lib.optimize.distill import LabelWordTeacher, agreement, load_snippets, split, teacher_over_http

    texts = [s.text for s in split(load_snippets()).dev[:40]]
    with LabelWordTeacher(model_path, threads=1) as teacher:
        local = teacher.probabilities(texts)
    remote = teacher_over_http(vllm_server.base_url, "default")(texts)
    assert agreement(remote, local) >= 0.9
