"""`llmops eval …`: score an endpoint (engine, gateway, vLLM) on a shipped task with the field's harnesses.

Exit codes: 0 done · 1 the harness failed while running (its log is named) · 2 bad input, nothing run
(an unknown task, split or harness, a bad limit, an endpoint that does not answer, no `.venv-evals`).

Explained in: book/chapters/05_quality/evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from llmops_lib.errors import ExitCode, LLMOpsError, SpecError, fail

eval_app = typer.Typer(
    help=(
        "Evaluate a live endpoint (llama-server, vLLM, the gateway) on a shipped task with EleutherAI's "
        "lm-evaluation-harness, Inspect AI or the built-in runner: same reference prompt, same scorer, offline."
    ),
    no_args_is_help=True,
)


@eval_app.command("tasks")
def tasks_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the shipped tasks: what each asks, its scorer, and its cases per split."""
    from llmops_lib.evals.tasks import SPLITS, TASKS, load_task

    rows = []
    for name in TASKS:
        task = load_task(name)
        sizes = {split: len(task.split(split)) for split in SPLITS}
        rows.append({"task": name, "description": task.description, "scorer": task.scorer, **sizes})
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        sizes = " ".join(f"{split} {row[split]}" for split in SPLITS)
        typer.echo(f"{row['task']:<11} {row['description']:<55} {row['scorer']:<12} {sizes}")


@eval_app.command("run")
def run_command(
    task: Annotated[str, typer.Option("--task", help="A shipped task (see `llmops eval tasks`).")],
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="The server's URL, e.g. http://127.0.0.1:8080 (a trailing /v1 is fine).")
    ],
    model: Annotated[
        str, typer.Option("--model", help="The model name sent: a gateway route; llama-server ignores it.")
    ] = "default",
    harness: Annotated[str, typer.Option("--harness", help="lm-eval, inspect or builtin.")] = "lm-eval",
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N cases of the split.")] = None,
    split: Annotated[str, typer.Option("--split", help="train, dev or test.")] = "test",
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            help="Requests in flight at once. 1 makes reruns sample-identical (llama-server's output depends on "
            "which requests share a batch).",
        ),
    ] = 4,
    wandb_project: Annotated[
        str | None,
        typer.Option(
            "--wandb-project", help="lm-eval only: also log to Weights & Biases (offline, in the run folder)."
        ),
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Run folder. Default: LLMOPS_HOME/evals/harness/<stamp>-…")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result (with every sample) as JSON.")] = False,
) -> None:
    """Run one harness on a task's split against an endpoint; print score, 95 % interval, n and seconds.

    Every harness sends each case's reference prompt at temperature 0 and judges the output with the
    task's own scorer, so two harnesses (or two endpoints) can be compared sample by sample; the run
    folder keeps the cases, the harness's log and its own result files. Progress shows on stderr.
    """
    from llmops_lib.evals.harness import run_harness

    try:
        result = run_harness(
            harness,
            task,
            endpoint,
            model,
            split=split,
            limit=limit,
            num_concurrent=concurrency,
            output_dir=output_dir,
            wandb_project=wandb_project,
            progress=True,
        )
    except LLMOpsError as exc:
        raise fail(exc, ExitCode.BAD_PARAMETERS if isinstance(exc, SpecError) else ExitCode.ERROR) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    typer.echo(
        f"{result.task} via {result.harness}: score {result.interval:.3f} (95 % interval), n {result.n}, "
        f"{result.seconds:.1f} s ({result.items_per_second:.2f} items/s); files in {result.output_dir}"
    )
