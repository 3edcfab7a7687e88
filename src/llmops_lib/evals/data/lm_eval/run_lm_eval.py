"""Run lm-evaluation-harness on one llmops task through its Python API, as its `lm_eval` command would.

    python run_lm_eval.py --task llmops_capitals --include-path DIR --model-args ARGS --output-path OUT \
        [--batch-size N] [--wandb-project P]

does what

    lm_eval --model local-completions --model_args ARGS --tasks llmops_capitals --include_path DIR \
        --output_path OUT --log_samples [--batch_size N] [--wandb_args project=P]

does (same evaluator, same results and samples files, same W&B run), except that the command first
indexes every one of lm-eval's thousands of built-in task configs, which takes about a minute on a busy
two-core machine; here the task manager reads only DIR (`include_defaults=False`, lm-eval's documented
way for external tasks). Runs inside `.venv-evals` (`llmops_lib.evals.harness.run_lm_eval` starts it).

Explained in: book/chapters/05_quality/evaluation.
"""

from __future__ import annotations

import argparse

from lm_eval import simple_evaluate
from lm_eval.loggers import EvaluationTracker, WandbLogger
from lm_eval.tasks import TaskManager
from lm_eval.utils import make_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--include-path", required=True)
    parser.add_argument("--model-args", required=True)
    parser.add_argument("--output-path", required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--wandb-project")
    args = parser.parse_args()

    wandb = WandbLogger({"project": args.wandb_project, "name": args.task}) if args.wandb_project else None
    tracker = EvaluationTracker(output_path=args.output_path)
    results = simple_evaluate(
        model="local-completions",
        model_args=args.model_args,
        tasks=[args.task],
        batch_size=args.batch_size,
        log_samples=True,
        evaluation_tracker=tracker,
        task_manager=TaskManager(include_path=args.include_path, include_defaults=False),
    )
    samples = results.pop("samples")
    if wandb:
        wandb.post_init(results)
        wandb.log_eval_result()
        wandb.log_eval_samples(samples)
        wandb.run.finish()
    tracker.save_results_aggregated(results=results, samples=samples)
    for name in results["configs"]:
        tracker.save_results_samples(task_name=name, samples=samples[name])
    print(make_table(results))


if __name__ == "__main__":
    main()
