"""Metric-driven prompt search: instructions × bootstrapped demonstrations, chosen on dev, reported once on test.

The idea of DSPy's `BootstrapFewShot` and instruction proposal, small enough to read, on our own
evaluation sets and engines (DSPy's adapters need a model that follows its field markers; ours do not):

1. **Bootstrap demonstrations** from the task's `train` split: a teacher prompt (the question with a
   few labelled train examples, as DSPy's teacher is the program with labelled demos) answers each
   train case; a case becomes a demonstration only if that answer passes the task's scorer, and the
   demonstration shows the model's own passing answer (DSPy keeps the passing trace).
2. **Candidates** are every instruction (given, or `INSTRUCTIONS`) with every demonstration set
   (seeded draws of `shots` demos from the bootstrapped pool, none for zero-shot), sampled down to
   `max_candidates` (DSPy's random search) when the grid is larger.
3. **Select on dev only**: each candidate and the baseline are scored on the `dev` split; the winner
   is the best dev accuracy (fewer prompt tokens break a tie: the cheaper prompt).
4. **Report once on test**: the baseline and the winner answer the held-out `test` split, compared
   paired (exact McNemar and a paired bootstrap, `ab.compare_paired`). The test split is touched by
   these two runs only, after the choice; every run is kept in `OptimizationResult.runs` to show it.
5. **Register** the winner as a new version of a prompt with its scores as tags and in the commit
   message, alias `candidate`: an A/B test, not the optimizer, decides whether it becomes `production`.

Every output goes through `evals.run.run_cases` and its on-disk cache, so a rerun costs no model calls.
Templates are rendered by `template.PromptVersion`, the gateway's renderer: what was scored is what
the registered version serves. Text templates suit a base model (`/v1/completions`), chat templates
an instruction-tuned one (`/v1/chat/completions`, the server applies the model's chat template).

Explained in: book/chapters/prompts/version_control.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from tqdm.auto import tqdm

from llmops_lib.errors import SpecError
from llmops_lib.evals.run import Endpoint, EvalRun, run_cases
from llmops_lib.evals.tasks import Case, Task
from llmops_lib.prompts.ab import PairedComparison, compare_paired
from llmops_lib.prompts.template import PromptVersion, Template

if TYPE_CHECKING:
    from llmops_lib.prompts.registry import PromptRegistry

#: Instructions tried when none are given: none at all, and three common ways of asking for a short answer.
INSTRUCTIONS: tuple[str, ...] = (
    "",
    "Answer with the answer only, nothing else.",
    "Answer the question in as few words as possible.",
    "You are a knowledgeable assistant. Give the correct answer briefly.",
)
#: The alias a registered winner gets: a candidate for an A/B test, not production.
CANDIDATE_ALIAS = "candidate"


@dataclass(frozen=True)
class Demo:
    """A worked example shown in the prompt: one train case's inputs and the answer shown for it."""

    case_id: str
    inputs: dict[str, str] = field(hash=False)  # a dict does not hash; the case id stands for it
    answer: str = ""


@dataclass(frozen=True)
class Candidate:
    """One point of the search: an instruction and a set of demonstrations."""

    instruction: str
    demos: tuple[Demo, ...] = ()

    @property
    def label(self) -> str:
        """A short name for tables: the instruction's start and the number of demos."""
        text = self.instruction if len(self.instruction) <= 40 else self.instruction[:39] + "…"
        return f"{text or '(no instruction)'} · {len(self.demos)}-shot"

    def template(self, question: str, *, chat: bool) -> Template:
        """The prompt template: the instruction, the demos (questions filled in, answers after them),
        then `question` with its `{{variables}}` left for the case.

        Text: blocks separated by a blank line, each demo as its question followed by " " and its answer
        (so a question ending in "A:" reads "A: Paris"). Chat: the instruction as the system message,
        each demo as a user/assistant pair, the question as the last user message.
        """
        shown = [(PromptVersion("demo", 0, question).render(demo.inputs), demo.answer) for demo in self.demos]
        if chat:
            messages = [{"role": "system", "content": self.instruction}] if self.instruction else []
            for asked, answered in shown:
                messages += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
            return [*messages, {"role": "user", "content": question}]
        blocks = [self.instruction] if self.instruction else []
        blocks += [f"{asked} {answered}" for asked, answered in shown]
        return "\n\n".join([*blocks, question])


def demo_sets(pool: Sequence[Demo], shots: Sequence[int], sets_per_size: int, seed: int = 0) -> list[tuple[Demo, ...]]:
    """Seeded draws of demonstrations: for each size in `shots`, `sets_per_size` distinct sets of that
    many demos from `pool` (one empty set for 0; a size larger than the pool is skipped).

    Raises:
        SpecError: a negative size or `sets_per_size` below 1.
    """
    if sets_per_size < 1 or any(k < 0 for k in shots):
        raise SpecError(f"shots must be ≥ 0 and sets_per_size ≥ 1, got {list(shots)} and {sets_per_size}")
    rng = random.Random(seed)
    sets: list[tuple[Demo, ...]] = []
    for k in dict.fromkeys(shots):
        if k == 0:
            sets.append(())
            continue
        if k > len(pool):
            continue
        drawn: list[tuple[Demo, ...]] = []
        for _ in range(sets_per_size * 10):  # a small pool may not hold sets_per_size distinct sets
            demos = tuple(sorted(rng.sample(list(pool), k), key=lambda demo: demo.case_id))
            if demos not in drawn:
                drawn.append(demos)
            if len(drawn) == sets_per_size:
                break
        sets += drawn
    return sets


def candidates(
    instructions: Sequence[str], sets: Sequence[tuple[Demo, ...]], max_candidates: int, seed: int = 0
) -> list[Candidate]:
    """Every instruction with every demonstration set, in that order; a seeded sample of `max_candidates`
    of them (in grid order) when the grid is larger.

    Raises:
        SpecError: no instruction, no demonstration set, or `max_candidates` below 1.
    """
    if not instructions or not sets or max_candidates < 1:
        raise SpecError(
            f"need at least one instruction, one demo set and max_candidates ≥ 1, "
            f"got {len(instructions)}, {len(sets)}, {max_candidates}"
        )
    grid = [Candidate(instruction, demos) for instruction in dict.fromkeys(instructions) for demos in sets]
    if len(grid) <= max_candidates:
        return grid
    keep = sorted(random.Random(seed).sample(range(len(grid)), max_candidates))
    return [grid[i] for i in keep]


@dataclass(frozen=True)
class RunRecord:
    """One evaluation the search made: what was evaluated, on which split, and its rows."""

    label: str
    split: Literal["train", "dev", "test"]
    run: EvalRun


@dataclass(frozen=True)
class Scored:
    """A candidate (or the baseline) with its template and its dev run."""

    label: str
    template: Template
    dev: EvalRun
    candidate: Candidate | None = None  # None: the baseline

    @property
    def prompt_tokens(self) -> float:
        return self.dev.cost()["prompt_tokens"]


@dataclass(frozen=True)
class OptimizationResult:
    """What the search tried, what it chose on dev, and how the choice fared once on test."""

    task: str
    baseline: Scored
    scored: tuple[Scored, ...]  # candidates, in search order
    winner: Scored
    test: PairedComparison  # A = baseline, B = winner, on the test split
    demo_pool: tuple[Demo, ...]
    runs: tuple[RunRecord, ...]  # every evaluation, in the order made
    registered: PromptVersion | None = None
    model_config: dict[str, Any] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        """The baseline and every candidate, best dev accuracy first: dev accuracy and prompt tokens."""
        ordered = sorted(self.scored, key=lambda s: (-s.dev.accuracy, s.prompt_tokens))
        return [
            {
                "prompt": s.label,
                "dev accuracy": round(s.dev.accuracy, 3),
                "prompt tokens": round(s.prompt_tokens, 1),
                "chosen": "✓" if s is self.winner else "",
            }
            for s in (self.baseline, *ordered)
        ]

    def summary(self) -> dict[str, Any]:
        """The numbers a reader (or a tag) needs: dev and test accuracies, the paired test on test."""
        test = self.test
        return {
            "task": self.task,
            "candidates": len(self.scored),
            "demo_pool": len(self.demo_pool),
            "baseline_dev": self.baseline.dev.accuracy,
            "winner_dev": self.winner.dev.accuracy,
            "baseline_test": test.a.successes / test.a.n,
            "winner_test": test.b.successes / test.b.n,
            "test_n": test.a.n,
            "baseline_only": test.a_only,
            "winner_only": test.b_only,
            "mcnemar_p": test.p_value,
            "difference": [test.difference.estimate, test.difference.low, test.difference.high],
            "baseline_prompt_tokens": test.a.prompt_tokens,
            "winner_prompt_tokens": test.b.prompt_tokens,
        }


def shown_answer(case: Case) -> str:
    """A case's expected answer as a demo shows it: text as it is, a dict as JSON (never Python's repr)."""
    return json.dumps(case.expected) if isinstance(case.expected, dict) else str(case.expected)


def _caller(endpoint: Endpoint, chat: bool):  # noqa: ANN202 - the bound method run_cases calls
    return endpoint.chat if chat else endpoint.complete


def _evaluate(
    task: Task, cases: Sequence[Case], template: Template, endpoint: Endpoint, chat: bool, cache: Any
) -> EvalRun:
    version = PromptVersion(task.name, 0, template)  # the registry's renderer, not a second one
    return run_cases(
        task, cases, lambda case: version.render(case.inputs), _caller(endpoint, chat), cache=cache, progress=False
    )


def bootstrap_demos(
    task: Task,
    question: str,
    endpoint: Endpoint,
    *,
    chat: bool,
    teacher_shots: int = 3,
    max_bootstrap: int | None = None,
    seed: int = 0,
    cache: Any = True,
) -> tuple[tuple[Demo, ...], RunRecord]:
    """BootstrapFewShot's demo search on the train split: a teacher prompt (the question with
    `teacher_shots` labelled train examples other than the case itself) answers each train case, and
    the cases whose answer passes the task's scorer become demos showing that answer.

    Returns:
        the demos (in the order asked) and the record of the run that found them.
    """
    train = task.split("train")
    if len(train) <= teacher_shots:
        raise SpecError(
            f"task {task.name!r} has {len(train)} train cases: need more than teacher_shots={teacher_shots}"
        )
    rng = random.Random(seed)
    asked = train if max_bootstrap is None else rng.sample(train, min(max_bootstrap, len(train)))
    labelled = {case.id: Demo(case.id, case.inputs, shown_answer(case)) for case in train}
    teachers: dict[str, Template] = {}
    for case in asked:
        others = [labelled[c.id] for c in train if c.id != case.id]
        teachers[case.id] = Candidate(
            "", tuple(random.Random(f"{seed}:{case.id}").sample(others, teacher_shots))
        ).template(question, chat=chat)
    versions = {case_id: PromptVersion(task.name, 0, template) for case_id, template in teachers.items()}
    run = run_cases(
        task,
        asked,
        lambda case: versions[case.id].render(case.inputs),
        _caller(endpoint, chat),
        cache=cache,
        progress=False,
    )
    by_id = {case.id: case for case in asked}
    demos = tuple(
        Demo(row.case_id, by_id[row.case_id].inputs, row.output.strip())
        for row in run.rows
        if row.score >= 1.0 and row.output.strip()
    )
    return demos, RunRecord("bootstrap (teacher on train)", "train", run)


def optimize(
    task: Task,
    endpoint: Endpoint,
    *,
    question: str,
    baseline: Template | None = None,
    chat: bool = False,
    instructions: Sequence[str] = INSTRUCTIONS,
    shots: Sequence[int] = (0, 3, 5),
    sets_per_size: int = 2,
    max_candidates: int = 12,
    teacher_shots: int = 3,
    max_bootstrap: int | None = None,
    seed: int = 0,
    cache: Any = True,
    registry: PromptRegistry | None = None,
    register_as: str | None = None,
    model_config: dict[str, Any] | None = None,
    progress: bool = True,
) -> OptimizationResult:
    """Search instructions × bootstrapped demos on dev, report the winner once on test against the baseline.

    Args:
        question: one case's question as a template with the task's input variables, e.g.
            "Q: What is the capital of {{country}}?\\nA:" (text) or "What is the capital of {{country}}?" (chat).
        baseline: the prompt to beat (e.g. the version in production); default: `question` alone.
        chat: build chat templates and call `endpoint.chat` (instruction-tuned model), else text templates
            and `endpoint.complete` (base model).
        instructions, shots, sets_per_size, max_candidates: the search space and its budget (see `candidates`).
        teacher_shots, max_bootstrap: the teacher's labelled demos and how many train cases it answers.
        cache: passed to `run_cases` (True: the shared on-disk cache of outputs).
        registry, register_as: register the winner as a new version of this prompt name with alias
            `candidate` (both or neither).
        model_config: the registered version's generation defaults; default the endpoint's max_tokens,
            temperature and stop.

    Raises:
        SpecError: a split is empty, the budget or search space is empty, or only one of
            registry/register_as is given.
    """
    if (registry is None) != (register_as is None):
        raise SpecError("give both registry and register_as to register the winner, or neither")
    dev, test = task.split("dev"), task.split("test")
    if not dev or not test:
        raise SpecError(f"task {task.name!r} needs dev and test cases, has {len(dev)} and {len(test)}")
    baseline_template = question if baseline is None else baseline
    PromptVersion(task.name, 0, baseline_template)  # a malformed template fails here, before any model call
    if chat:
        baseline_template = (
            [{"role": "user", "content": baseline_template}]
            if isinstance(baseline_template, str)
            else baseline_template
        )
    pool, record = bootstrap_demos(
        task,
        question,
        endpoint,
        chat=chat,
        teacher_shots=teacher_shots,
        max_bootstrap=max_bootstrap,
        seed=seed,
        cache=cache,
    )
    runs = [record]
    grid = candidates(instructions, demo_sets(pool, shots, sets_per_size, seed), max_candidates, seed)

    scored: list[Scored] = []
    bar = tqdm(total=len(grid) + 1, desc=f"{task.name}: candidates on dev", unit="prompt", disable=not progress)
    with bar:
        base_dev = _evaluate(task, dev, baseline_template, endpoint, chat, cache)
        runs.append(RunRecord("baseline", "dev", base_dev))
        base = Scored("baseline", baseline_template, base_dev)
        bar.update()
        for candidate in grid:
            template = candidate.template(question, chat=chat)
            run = _evaluate(task, dev, template, endpoint, chat, cache)
            runs.append(RunRecord(candidate.label, "dev", run))
            scored.append(Scored(candidate.label, template, run, candidate))
            bar.update()
    winner = max(scored, key=lambda s: (s.dev.accuracy, -s.prompt_tokens))  # first of equals: max is stable

    # The one look at test, after the choice.
    base_test = _evaluate(task, test, baseline_template, endpoint, chat, cache)
    winner_test = _evaluate(task, test, winner.template, endpoint, chat, cache)
    runs += [RunRecord("baseline", "test", base_test), RunRecord(winner.label, "test", winner_test)]
    comparison = compare_paired(base_test, winner_test)

    config = model_config if model_config is not None else _config_of(endpoint)
    result = OptimizationResult(
        task.name, base, tuple(scored), winner, comparison, pool, tuple(runs), model_config=config
    )
    if registry is not None and register_as is not None:
        result = _register(result, registry, register_as)
    return result


def _config_of(endpoint: Endpoint) -> dict[str, Any]:
    params = endpoint.params()
    return {key: params[key] for key in ("temperature", "max_tokens", "stop") if params[key] not in (None, [])}


def _register(result: OptimizationResult, registry: PromptRegistry, name: str) -> OptimizationResult:
    """Register the winner with its scores (tags and commit message) and point `candidate` at it."""
    s = result.summary()
    message = (
        f"optimized on {s['task']}: {result.winner.label}; chosen on dev from {s['candidates']} candidates "
        f"({s['winner_dev']:.2f} vs baseline {s['baseline_dev']:.2f}); test {s['winner_test']:.2f} vs "
        f"{s['baseline_test']:.2f} (n={s['test_n']}, McNemar p={s['mcnemar_p']:.2g})"
    )
    tags = {
        "optimizer": "bootstrap-few-shot+instructions",
        "task": s["task"],
        "dev_accuracy": f"{s['winner_dev']:.4f}",
        "baseline_dev_accuracy": f"{s['baseline_dev']:.4f}",
        "test_accuracy": f"{s['winner_test']:.4f}",
        "baseline_test_accuracy": f"{s['baseline_test']:.4f}",
        "test_mcnemar_p": f"{s['mcnemar_p']:.6g}",
        "test_n": str(s["test_n"]),
    }
    version = registry.register(
        name, result.winner.template, commit_message=message, model_config=result.model_config, tags=tags
    )
    registry.set_alias(name, CANDIDATE_ALIAS, version.version, why=message)
    return replace(result, registered=version)
