"""Speculative decoding, measured: acceptance, speedup, identical output, and when to turn it off.

A cheap drafter proposes the next tokens and the model verifies them in one batched pass; every
accepted draft token is a decoding step saved. Drafts come from the text so far (n-gram prompt
lookup: free, and right whenever the answer copies the prompt) or from a smaller draft model
(here the model itself quantized to fewer bits: same vocabulary, as speculative decoding needs).
With greedy decoding the output is the model's own either way, so only the speed changes, and
it can get worse: verification costs more than one step, and rejected drafts buy nothing. So
`AdaptiveSpeculation` measures both ways per workload and keeps the faster one. The comparison
takes llama-server processes or, in process, `prompt_lookup.PromptLookupEngine`s.

Explained in: book/chapters/02_optimization/speculative_decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from statistics import median
from typing import Any, Protocol

from llmops_lib.atomic import atomic_path
from llmops_lib.config import settings
from llmops_lib.engines.base import Completion
from llmops_lib.engines.llamacpp import LlamaServer, ServerTimings
from llmops_lib.engines.spec import EngineSpec
from llmops_lib.errors import SpecError
from llmops_lib.optimize.quantize import llama_quantize

_CODE = '''def process_orders(orders, inventory):
    """Process a list of orders against the inventory."""
    results = []
    for order in orders:
        item = order["item"]
        quantity = order["quantity"]
        if inventory.get(item, 0) >= quantity:
            inventory[item] -= quantity
            results.append({"order": order["id"], "status": "shipped"})
        else:
            results.append({"order": order["id"], "status": "backordered"})
    return results
'''
_TEXT = (
    "Our on-call engineers rotate every week. When an alert fires, the engineer on call "
    "acknowledges it within five minutes, opens an incident channel, and posts a first status "
    "update within fifteen minutes. If the incident affects customers, the support team is told "
    "at once and a public status page is updated every thirty minutes until the incident is resolved."
)


@dataclass(frozen=True)
class SpeculationTask:
    """A prompt and what kind of answer it asks for (`copy-heavy` answers repeat the prompt).

    `stop` ends the answer where the task ends (the closing code fence of an edit), so a
    copy-heavy measurement is not diluted by whatever a base model rambles on with afterwards.
    """

    name: str
    kind: str
    prompt: str
    stop: tuple[str, ...] = ()


WORKLOADS: dict[str, SpeculationTask] = {
    w.name: w
    for w in (
        SpeculationTask(
            "edit code",
            "copy-heavy",
            "Rename the variable `results` to `outcomes` in this code.\n\n"
            f"Original:\n```python\n{_CODE}```\n\nRewritten:\n```python\n",
            stop=("```",),
        ),
        SpeculationTask(
            "edit text",
            "copy-heavy",
            f"Fix the punctuation of this paragraph.\n\nOriginal:\n{_TEXT}\n\nCorrected:\n",
            stop=("\n\n",),
        ),
        SpeculationTask(
            "free text",
            "free text",
            "Write a short story about a lighthouse keeper who finds a message in a bottle.\n\n",
        ),
        SpeculationTask("explain", "free text", "The three most common causes of latency in a web service are"),
    )
}


def draft_model(file_type: str = "Q4_0") -> Path:
    """A draft model for `draft-simple`: the default model quantized to `file_type`, made once.

    Q4_0 with Q4_0 token embeddings is the smallest and fastest variant llama.cpp makes of this
    model (the tied embedding is most of it). Written through `atomic_path`, so an interruption
    never leaves a half file under the final name.
    """
    import llama_cpp

    from llmops_lib.models import default_model

    known = (f"LLAMA_FTYPE_MOSTLY_{file_type.upper()}", f"GGML_TYPE_{file_type.upper()}")
    if not all(hasattr(llama_cpp, name) for name in known):
        raise SpecError(f"unknown draft quantization {file_type!r}; use e.g. Q4_0, Q4_1, Q5_0 or Q8_0")
    source = default_model()
    target = settings().models_dir / f"{source.stem}-draft-{file_type.lower()}.gguf"
    if target.exists():
        return target
    with atomic_path(target) as partial:
        # the source is already Q4_K_M, hence allow_requantize
        llama_quantize(source, partial, file_type.upper(), embedding=file_type.upper(), allow_requantize=True)
    return target


class TimedEngine(Protocol):
    """An engine that reports speculative drafts with each completion: `LlamaServer`, or
    `prompt_lookup.PromptLookupEngine` (in process)."""

    spec: EngineSpec

    def complete(self, prompt: str, **kwargs: Any) -> Completion: ...

    def complete_with_timings(self, prompt: str, **kwargs: Any) -> tuple[Completion, ServerTimings]: ...


@dataclass(frozen=True)
class Generation:
    """One greedy completion of a workload, with the server's decode speed and drafts."""

    workload: str
    text: str
    timings: ServerTimings
    speculative: bool

    @property
    def tokens_per_s(self) -> float:
        return self.timings.generation_tokens_per_s


def warm_up(*servers: TimedEngine) -> None:
    """One short request each: a fresh server's first request pays for page faults, not decoding."""
    for server in servers:
        server.complete("Warm up.", max_tokens=4)


def generate(engine: TimedEngine, workload: SpeculationTask, max_tokens: int) -> Generation:
    """Greedy, up to `max_tokens` tokens or the workload's stop (never an early end-of-text)."""
    done, timings = engine.complete_with_timings(
        workload.prompt, max_tokens=max_tokens, ignore_eos=True, stop=list(workload.stop) or None
    )
    # llama-server speculates per process (its spec says how); the in-process engine per drafter
    speculative = getattr(engine, "speculative", engine.spec.spec_type is not None)
    return Generation(workload.name, done.text, timings, speculative)


@dataclass(frozen=True)
class Comparison:
    """The same workload without and with speculation: speedup, acceptance, same output or not.

    Drafts are those of the first run (greedy runs repeat them); the prompt times show what a
    side pays before decoding (llama-server reuses a repeated prompt from its cache, the
    in-process engine starts cold, so the cost of computing every token's logits shows there).
    """

    workload: str
    kind: str
    plain_tokens_per_s: float
    speculative_tokens_per_s: float
    drafted: int
    accepted: int
    identical: bool
    plain_prompt_s: float = 0.0
    speculative_prompt_s: float = 0.0

    @property
    def speedup(self) -> float:
        return self.speculative_tokens_per_s / self.plain_tokens_per_s if self.plain_tokens_per_s else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"speedup": self.speedup, "acceptance_rate": self.acceptance_rate}


def compare(
    plain: TimedEngine,
    speculative: TimedEngine,
    workloads: Sequence[SpeculationTask],
    *,
    max_tokens: int = 160,
    repeats: int = 1,
) -> list[Comparison]:
    """Run each workload on both engines (warmed up once) and compare speed and text.

    The engines are two llama-servers, or two `prompt_lookup.PromptLookupEngine`s in process.
    With `repeats` > 1 each workload runs that many times on each engine, alternating, and each
    side keeps its median speed: on a shared machine the load moves more between two single runs
    than speculation does. The output counts as identical only if it was in every repetition.
    """
    if repeats < 1:
        raise SpecError(f"compare needs repeats >= 1, got {repeats}")
    warm_up(plain, speculative)
    rows = []
    for workload in workloads:
        pairs = [
            (generate(plain, workload, max_tokens), generate(speculative, workload, max_tokens)) for _ in range(repeats)
        ]
        base, fast = [b for b, _ in pairs], [f for _, f in pairs]
        rows.append(
            Comparison(
                workload.name,
                workload.kind,
                median(g.tokens_per_s for g in base),
                median(g.tokens_per_s for g in fast),
                fast[0].timings.draft_n,
                fast[0].timings.draft_n_accepted,
                all(b.text == f.text for b, f in pairs),
                median(g.timings.prompt_ms for g in base) / 1000,
                median(g.timings.prompt_ms for g in fast) / 1000,
            )
        )
    return rows


@dataclass(frozen=True)
class NgramSetting:
    """One lookup and draft length of an n-gram drafter, and how it did on each workload."""

    lookup: int
    draft_max: int
    rows: tuple[Comparison, ...]

    @property
    def speedup(self) -> float:
        """The lowest speedup over the workloads: a setting is as good as its weakest case."""
        return min(r.speedup for r in self.rows)

    @property
    def identical(self) -> bool:
        return all(r.identical for r in self.rows)


def sweep_ngram(
    plain: TimedEngine,
    spec: EngineSpec,
    workloads: Sequence[SpeculationTask],
    *,
    lookups: Sequence[int] = (3, 6, 12),
    drafts: Sequence[int] = (16, 64),
    max_tokens: int = 96,
    repeats: int = 1,
) -> list[NgramSetting]:
    """Compare every lookup × draft length of `spec`'s n-gram drafter with the plain server.

    A short lookup resumes drafting soon after the answer departs from the prompt (an edit) but
    matches by accident more often; a long draft saves more steps when it is right and wastes a
    longer verification when it is not. Which balance wins depends on the workload and the
    machine, so it is measured: one speculating llama-server per setting, started in turn.
    """
    if spec.spec_type is None or not spec.spec_type.startswith("ngram"):
        raise SpecError(f"sweep_ngram needs an n-gram spec_type, got {spec.spec_type!r}")
    found = []
    for lookup in lookups:
        for draft in drafts:
            with LlamaServer(replace(spec, ngram_lookup=lookup, draft_max=draft)) as server:
                rows = compare(plain, server, workloads, max_tokens=max_tokens, repeats=repeats)
            found.append(NgramSetting(lookup, draft, tuple(rows)))
    return found


def best_setting(found: Sequence[NgramSetting]) -> NgramSetting:
    """The fastest setting that kept every output identical (the fastest of all if none did)."""
    same = [s for s in found if s.identical] or list(found)
    return max(same, key=lambda s: s.speedup)


@dataclass
class ArmStats:
    """Server timings of the requests served one way (with or without speculation)."""

    runs: list[ServerTimings] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.runs)

    @property
    def tokens_per_s(self) -> float:
        seconds = sum(r.predicted_ms for r in self.runs) / 1000
        return sum(r.predicted_n for r in self.runs) / seconds if seconds > 0 else 0.0

    @property
    def acceptance_rate(self) -> float:
        drafted = sum(r.draft_n for r in self.runs)
        return sum(r.draft_n_accepted for r in self.runs) / drafted if drafted else 0.0


@dataclass
class AdaptiveSpeculation:
    """Per workload, speculate only while it measures faster than not speculating.

    The first `samples` requests of a workload are served plainly, the next `samples` with
    speculation; from then on the faster measured way wins (speculation must beat plain decoding
    by `margin`), and every `probe_every`-th request tries the other way, so a change of workload
    (or of load) is noticed. A loss is therefore bounded: `samples` requests at first, then one in
    `probe_every`.
    """

    samples: int = 1
    probe_every: int = 10
    margin: float = 0.02
    arms: dict[str, dict[bool, ArmStats]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.samples < 1 or self.probe_every < 2 or self.margin < 0:
            raise SpecError(
                f"AdaptiveSpeculation needs samples >= 1, probe_every >= 2 and margin >= 0; got "
                f"{self.samples}, {self.probe_every}, {self.margin}"
            )

    def _stats(self, workload: str) -> dict[bool, ArmStats]:
        return self.arms.setdefault(workload, {False: ArmStats(), True: ArmStats()})

    def speculation_pays(self, workload: str) -> bool:
        """Whether measured speed with speculation beats plain decoding by the margin."""
        stats = self._stats(workload)
        return stats[True].tokens_per_s > stats[False].tokens_per_s * (1 + self.margin)

    def choose(self, workload: str) -> bool:
        """True: serve the next request of `workload` with speculation."""
        stats = self._stats(workload)
        if stats[False].requests < self.samples:
            return False
        if stats[True].requests < self.samples:
            return True
        best = self.speculation_pays(workload)
        next_request = stats[False].requests + stats[True].requests + 1
        return (not best) if next_request % self.probe_every == 0 else best

    def record(self, workload: str, speculative: bool, timings: ServerTimings) -> None:
        """Add one served request's server timings to the workload's statistics."""
        self._stats(workload)[speculative].runs.append(timings)


@dataclass
class AdaptiveServer:
    """Serve each request from a plain or a speculative llama-server, as the policy chooses.

    llama-server fixes speculation per process, so the switch is between two servers of the same
    model (the weights are memory-mapped: the second costs its KV cache, not another copy).
    """

    plain: TimedEngine
    speculative: TimedEngine
    policy: AdaptiveSpeculation = field(default_factory=AdaptiveSpeculation)

    def generate(self, workload: SpeculationTask, max_tokens: int) -> Generation:
        use = self.policy.choose(workload.name)
        done = generate(self.speculative if use else self.plain, workload, max_tokens)
        self.policy.record(workload.name, use, done.timings)
        return done
