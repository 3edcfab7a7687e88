"""The field's evaluation harnesses run live against any OpenAI-compatible endpoint, offline, case by case.

`run_lm_eval` runs EleutherAI's lm-evaluation-harness (`local-completions`, our task YAMLs from
`evals/data/lm_eval/`), `run_inspect` Inspect AI (`openai-api-completions`, `evals/data/inspect_tasks.py`),
`run_builtin` the library's own `run_cases`. All three send each case's reference prompt
(`Task.render`) with the task's generation settings and judge the output with the task's scorer, so
their results compare sample by sample: the same score from all three is a check that the harnesses
and the endpoint (engine, gateway, vLLM) agree, not a coincidence of metrics. Sample-identical runs
need `num_concurrent=1`: llama-server's temperature-0 output depends on which requests share a batch.

lm-eval and Inspect run as subprocesses from their own environment `.venv-evals` (`make evals`;
`LLMOPS_EVALS_VENV` overrides), with the library on PYTHONPATH for the scorer, hubs offline and
telemetry off (`tools_env`). Each run keeps its files (cases, harness logs, results) in one folder.

Explained in: book/chapters/05_quality/evaluation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from llmops_lib.bench.stats import Interval, bootstrap
from llmops_lib.config import REPO_ROOT, settings
from llmops_lib.errors import EngineError, SpecError
from llmops_lib.evals.run import Endpoint, run_cases
from llmops_lib.evals.tasks import Case, Task, load_task

_DATA = resources.files("llmops_lib.evals") / "data"


def tools_python() -> Path:
    """The Python of the evaluation-tools environment (`LLMOPS_EVALS_VENV`, default `<repo>/.venv-evals`)."""
    venv = Path(os.environ.get("LLMOPS_EVALS_VENV") or REPO_ROOT / ".venv-evals").expanduser()
    python = venv / "bin" / "python"
    if not python.is_file():
        raise SpecError(f"the evaluation-tools environment {venv} does not exist: run `make evals` to build it")
    return python


def tools_env(run_dir: Path | None = None) -> dict[str, str]:
    """The environment for a tool in `.venv-evals`: hubs offline, telemetry off, W&B offline (in `run_dir`)."""
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if run_dir is not None:
        env |= {"WANDB_DIR": str(run_dir), "HF_DATASETS_CACHE": str(run_dir / "hf_datasets")}
    return env


@dataclass(frozen=True)
class Sample:
    """One case as a harness saw it: the model's output and the task scorer's verdict (1.0 or 0.0)."""

    id: str
    output: str
    score: float


@dataclass(frozen=True)
class HarnessResult:
    """One harness run: the mean score with its bootstrap interval, the samples in case order, the wall time.

    `reported` holds the harness's own summary numbers (lm-eval's `score,none`, its stderr and its
    evaluation time without the process start-up; Inspect's accuracy and stderr); `score` is recomputed
    from the samples. `seconds` is the wall time of the whole run, start-up included.
    """

    harness: str
    task: str
    score: float
    n: int
    samples: tuple[Sample, ...]
    interval: Interval
    seconds: float
    output_dir: Path
    reported: dict[str, float] = field(default_factory=dict)

    @property
    def items_per_second(self) -> float:
        return self.n / self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "output_dir": str(self.output_dir), "items_per_second": self.items_per_second}


def _result(
    harness: str, task: Task, cases: list[Case], outputs: dict[str, tuple[str, float]], **rest
) -> HarnessResult:
    missing = [case.id for case in cases if case.id not in outputs]
    if missing:
        raise EngineError(f"{harness} returned no sample for {len(missing)} case(s), e.g. {missing[0]}")
    samples = tuple(Sample(case.id, *outputs[case.id]) for case in cases)
    scores = np.asarray([sample.score for sample in samples])
    return HarnessResult(
        harness, task.name, float(scores.mean()), len(samples), samples, bootstrap(scores, seed=0), **rest
    )


def base_of(url: str) -> str:
    """The server's root URL: `http://h:p`, `http://h:p/` and `http://h:p/v1` all name the same endpoint."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


def check_endpoint(url: str) -> str:
    """The endpoint's root URL, after checking it answers `/v1/models`; unreachable is bad input (`SpecError`)."""
    base = base_of(url)
    if not base.startswith(("http://", "https://")):
        raise SpecError(f"endpoint {url!r} is not an http(s) URL: give e.g. http://127.0.0.1:8080")
    try:
        response = httpx.get(f"{base}/v1/models", timeout=10)
    except httpx.HTTPError as exc:
        raise SpecError(
            f"endpoint {base} is unreachable ({type(exc).__name__}): start the engine or gateway, or fix --endpoint"
        ) from None
    if response.status_code != 200:
        raise SpecError(f"endpoint {base}/v1/models answered {response.status_code}: {response.text[:200]}")
    return base


def _prepare(
    harness: str,
    task: str | Task,
    base_url: str,
    split: str,
    limit: int | None,
    num_concurrent: int,
    output_dir: Path | None,
) -> tuple[Task, list[Case], str, Path]:
    """Check the inputs and the endpoint, then make the run folder holding the chosen cases as JSONL.

    Returns the task, its cases, the endpoint's root URL and the run folder. One flat row per case
    (id, task, target and the template variables): what lm-eval's `json` dataset and Inspect read.
    """
    loaded = load_task(task) if isinstance(task, str) else task
    if limit is not None and limit < 1:
        raise SpecError(f"limit must be at least 1, got {limit}")
    if num_concurrent < 1:
        raise SpecError(f"num_concurrent must be at least 1, got {num_concurrent}")
    cases = loaded.split(split)[:limit]
    if not cases:
        raise SpecError(f"task {loaded.name!r} has no cases in split {split!r}")
    base = check_endpoint(base_url)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    run_dir = (output_dir or settings().home / "evals" / "harness" / f"{stamp}-{harness}-{loaded.name}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = ({"id": case.id, "task": loaded.name, "target": _target(case), **case.inputs} for case in cases)
    (run_dir / f"llmops_{loaded.name}.jsonl").write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
    )
    return loaded, cases, base, run_dir


def _target(case: Case) -> str:
    """The expected answer as text (shown by the harnesses; the scorer reads the case itself)."""
    return case.expected if isinstance(case.expected, str) else json.dumps(case.expected, ensure_ascii=False)


def _library_path(run_dir: Path) -> str:
    """A PYTHONPATH entry holding only this library (a link), never the project's site-packages."""
    folder = run_dir / "pythonpath"
    folder.mkdir(exist_ok=True)
    link = folder / "llmops_lib"
    if not link.exists():
        link.symlink_to(Path(__file__).resolve().parents[1], target_is_directory=True)
    return str(folder)


def _run_tool(command: list[str], run_dir: Path, name: str, progress: bool, env: dict[str, str] | None = None) -> float:
    """Run a harness command in `run_dir`; its output goes to `<name>.log` (stderr on screen with `progress`)."""
    env = tools_env(run_dir) | {"PYTHONPATH": _library_path(run_dir)} | (env or {})
    log = run_dir / f"{name}.log"
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, cwd=run_dir, env=env, stdout=out, stderr=None if progress else out)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        raise EngineError(f"{name} exited with {done.returncode}: {lines[-1] if lines else 'no output'} (log: {log})")
    return seconds


def run_lm_eval(
    task: str | Task,
    base_url: str,
    model: str = "default",
    *,
    split: str = "test",
    limit: int | None = None,
    num_concurrent: int = 4,
    batch_size: int = 1,
    output_dir: Path | None = None,
    wandb_project: str | None = None,
    progress: bool = False,
) -> HarnessResult:
    """lm-evaluation-harness (`local-completions`) on a task's split against an endpoint.

    `batch_size` > 1 sends prompt lists (llama-server and vLLM take them); `num_concurrent` requests are
    in flight at once. `wandb_project` also logs the run to Weights & Biases, offline, in the run folder.
    """
    python = tools_python()
    if batch_size < 1:
        raise SpecError(f"batch_size must be at least 1, got {batch_size}")
    loaded, cases, base, run_dir = _prepare("lm-eval", task, base_url, split, limit, num_concurrent, output_dir)
    for file in (f"llmops_{loaded.name}.yaml", "llmops_scoring.py", "run_lm_eval.py"):
        shutil.copyfile(str(_DATA / "lm_eval" / file), run_dir / file)
    model_args = (
        f"model={model},base_url={base}/v1/completions,tokenizer_backend=None,tokenized_requests=False,"
        f"num_concurrent={num_concurrent}"
    )
    command = [str(python), "run_lm_eval.py", "--task", f"llmops_{loaded.name}", "--include-path", str(run_dir)]
    command += ["--model-args", model_args, "--output-path", str(run_dir / "lm_eval"), "--batch-size", str(batch_size)]
    command += ["--wandb-project", wandb_project] if wandb_project else []
    seconds = _run_tool(command, run_dir, "lm-eval", progress)
    results = json.loads(_newest(run_dir / "lm_eval", "results_*.json").read_text())
    summary = results["results"][f"llmops_{loaded.name}"]
    outputs = {}
    for line in _newest(run_dir / "lm_eval", f"samples_llmops_{loaded.name}_*.jsonl").read_text().splitlines():
        sample = json.loads(line)
        outputs[sample["doc"]["id"]] = (sample["filtered_resps"][0], float(sample["score"]))
    reported = {
        "score": summary["score,none"],
        "stderr": summary["score_stderr,none"],
        "evaluation_seconds": float(results["total_evaluation_time_seconds"]),  # without start-up
    }
    return _result("lm-eval", loaded, cases, outputs, seconds=seconds, output_dir=run_dir, reported=reported)


def _newest(folder: Path, pattern: str) -> Path:
    found = sorted(folder.rglob(pattern), key=lambda path: path.stat().st_mtime)
    if not found:
        raise EngineError(f"the harness wrote no {pattern} under {folder}")
    return found[-1]


def run_inspect(
    task: str | Task,
    base_url: str,
    model: str = "default",
    *,
    split: str = "test",
    limit: int | None = None,
    num_concurrent: int = 4,
    output_dir: Path | None = None,
    progress: bool = False,
) -> HarnessResult:
    """Inspect AI (`openai-api-completions/llmops/<model>`) on a task's split against an endpoint."""
    python = tools_python()
    loaded, cases, base, run_dir = _prepare("inspect", task, base_url, split, limit, num_concurrent, output_dir)
    shutil.copyfile(str(_DATA / "inspect_tasks.py"), run_dir / "inspect_tasks.py")
    command = [str(python.parent / "inspect"), "eval", "inspect_tasks.py@llmops", "-T", f"task={loaded.name}"]
    command += [
        "-T",
        f"cases={run_dir / f'llmops_{loaded.name}.jsonl'}",
        "--model",
        f"openai-api-completions/llmops/{model}",
    ]
    command += ["--model-base-url", f"{base}/v1", "--max-connections", str(num_concurrent)]
    command += [
        "--log-dir",
        str(run_dir / "inspect"),
        "--log-format",
        "json",
        "--display",
        "plain" if progress else "none",
    ]
    # Inspect wants a key for the service `llmops` (LLMOPS_API_KEY); an endpoint without keys ignores it
    seconds = _run_tool(
        command, run_dir, "inspect", progress, {"LLMOPS_API_KEY": os.environ.get("LLMOPS_API_KEY", "none")}
    )
    log = json.loads(_newest(run_dir / "inspect", "*.json").read_text())
    if log.get("status") != "success":
        raise EngineError(f"inspect ended with status {log.get('status')}: {log.get('error', {}).get('message', '')}")
    metrics = log["results"]["scores"][0]["metrics"]
    outputs = {
        str(sample["id"]): (sample["output"]["completion"], float(next(iter(sample["scores"].values()))["value"]))
        for sample in log["samples"]
    }
    reported = {name: metric["value"] for name, metric in metrics.items()}
    return _result("inspect", loaded, cases, outputs, seconds=seconds, output_dir=run_dir, reported=reported)


def run_builtin(
    task: str | Task,
    base_url: str,
    model: str = "default",
    *,
    split: str = "test",
    limit: int | None = None,
    num_concurrent: int = 4,
    output_dir: Path | None = None,
    cache: bool = False,
    progress: bool = False,
) -> HarnessResult:
    """The library's `run_cases` with the reference prompt (no output cache by default: a fair comparison)."""
    loaded, cases, base, run_dir = _prepare("builtin", task, base_url, split, limit, num_concurrent, output_dir)
    reference = loaded.reference
    start = time.perf_counter()
    with Endpoint(base, model, reference.max_tokens, 0.0, reference.stop) as endpoint:
        run = run_cases(
            loaded, cases, loaded.render, endpoint.complete, cache=cache, workers=num_concurrent, progress=progress
        )
    seconds = time.perf_counter() - start
    outputs = {row.case_id: (row.output, row.score) for row in run.rows}
    (run_dir / "samples.jsonl").write_text(
        "".join(
            json.dumps({"id": k, "output": o, "score": s}, ensure_ascii=False) + "\n" for k, (o, s) in outputs.items()
        ),
        encoding="utf-8",
    )
    return _result("builtin", loaded, cases, outputs, seconds=seconds, output_dir=run_dir)


def wandb_summary(result: HarnessResult) -> dict[str, Any]:
    """The summary of the offline W&B run an lm-eval run logged (`wandb_project`), read back locally.

    W&B 0.31 has no Python reader for offline runs; its own `wandb leet inspect --summary --json`
    reads the run's transaction log without a server.
    """
    run = result.output_dir / "wandb" / "latest-run"
    if not run.exists():
        raise SpecError(f"{result.output_dir} holds no W&B run: pass wandb_project to run_lm_eval")
    done = subprocess.run(
        [str(tools_python().parent / "wandb"), "leet", "inspect", "--summary", "--json", str(run)],
        capture_output=True,
        text=True,
        env=tools_env(result.output_dir),
    )
    if done.returncode != 0:
        raise EngineError(f"wandb leet inspect failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)["summary"]


HARNESSES: dict[str, Callable[..., HarnessResult]] = {
    "lm-eval": run_lm_eval,
    "inspect": run_inspect,
    "builtin": run_builtin,
}


def run_harness(harness: str, task: str, base_url: str, model: str = "default", **options: Any) -> HarnessResult:
    """The harness named `harness` (`HARNESSES`); options it does not take are refused as bad input."""
    if harness not in HARNESSES:
        raise SpecError(f"unknown harness {harness!r}: choose one of {', '.join(HARNESSES)}")
    if options.get("wandb_project") and harness != "lm-eval":
        raise SpecError("--wandb-project works with --harness lm-eval only (lm-eval's W&B logger)")
    if harness != "lm-eval":
        options.pop("wandb_project", None)
    return HARNESSES[harness](task, base_url, model, **options)
