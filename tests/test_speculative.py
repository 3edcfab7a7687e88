"""Speculative decoding: same greedy output, acceptance reported, and a policy that turns it off."""

from dataclasses import replace
from pathlib import Path

import pytest

from llmops_lib.engines import EngineSpec, LlamaServer
from llmops_lib.engines.llamacpp import ServerTimings
from llmops_lib.errors import SpecError
from llmops_lib.optimize.prompt_lookup import PromptLookupEngine
from llmops_lib.optimize.speculative import (
    WORKLOADS,
    AdaptiveServer,
    AdaptiveSpeculation,
    Comparison,
    NgramSetting,
    best_setting,
    compare,
    draft_model,
    generate,
    sweep_ngram,
    warm_up,
)

COPY_HEAVY = [w for w in WORKLOADS.values() if w.kind == "copy-heavy"]
# For checks refused before anything is loaded: no model needed (the file does not exist).
NO_MODEL = EngineSpec(model=Path("not-loaded.gguf"), threads=1)


def timings(tokens_per_s: float, drafted: int = 0, accepted: int = 0) -> ServerTimings:
    return ServerTimings(
        predicted_n=100, predicted_ms=100 / tokens_per_s * 1000, draft_n=drafted, draft_n_accepted=accepted
    )


def test_policy_measures_plain_then_speculation_then_keeps_the_faster():
    policy = AdaptiveSpeculation(samples=1, probe_every=10)
    assert policy.choose("chat") is False  # first a plain baseline
    policy.record("chat", False, timings(50))
    assert policy.choose("chat") is True  # then one speculative measurement
    policy.record("chat", True, timings(40, drafted=100, accepted=20))  # low acceptance: slower
    assert not policy.speculation_pays("chat")
    assert policy.choose("chat") is False
    assert policy.arms["chat"][True].acceptance_rate == pytest.approx(0.2)


def test_policy_keeps_speculation_where_it_wins_and_probes_the_other_way():
    policy = AdaptiveSpeculation(samples=1, probe_every=4)
    policy.record("edit", False, timings(50))
    policy.record("edit", True, timings(120, drafted=100, accepted=90))
    choices = [policy.choose("edit")]
    policy.record("edit", True, timings(120, drafted=100, accepted=90))
    choices.append(policy.choose("edit"))  # 4th request: a probe of plain decoding
    assert choices == [True, False]


def test_policy_needs_a_margin_and_keeps_workloads_apart():
    policy = AdaptiveSpeculation(samples=1, margin=0.05)
    policy.record("a", False, timings(100))
    policy.record("a", True, timings(103))  # 3 % faster: within noise, not worth it
    assert not policy.speculation_pays("a")
    assert policy.choose("b") is False and policy.arms["b"][True].requests == 0


def test_policy_settings_are_checked():
    with pytest.raises(SpecError, match="probe_every >= 2"):
        AdaptiveSpeculation(probe_every=1)


@pytest.fixture(scope="module")
def ngram_server(spec):
    with LlamaServer(replace(spec, parallel=1, spec_type="ngram-simple")) as engine:
        yield engine


@pytest.fixture(scope="module")
def draft_server(spec):
    with LlamaServer(replace(spec, parallel=1, draft_model=draft_model(), draft_max=8)) as engine:
        yield engine


@pytest.mark.engine
def test_ngram_speculation_keeps_greedy_output_and_reports_acceptance(server, ngram_server):
    rows = compare(server, ngram_server, COPY_HEAVY, max_tokens=96)
    for row in rows:
        assert row.identical, row.workload
        assert row.drafted > 0 and row.acceptance_rate > 0, row.workload


@pytest.mark.engine
def test_ngram_lookup_and_draft_length_reach_the_drafter(server, spec):
    # No 200-token run of the answer occurs earlier, so that lookup never drafts; 4 tokens do.
    never, short = sweep_ngram(
        server,
        replace(spec, parallel=1, spec_type="ngram-simple"),
        COPY_HEAVY[:1],
        lookups=(200, 4),
        drafts=(16,),
        max_tokens=48,
    )
    assert (never.lookup, never.draft_max, short.lookup) == (200, 16, 4)
    assert never.rows[0].drafted == 0 and short.rows[0].drafted > 0
    assert never.identical and short.identical


def test_best_setting_is_the_fastest_that_kept_the_output():
    def setting(lookup: int, speedups: list[float], identical: bool = True) -> NgramSetting:
        rows = tuple(Comparison("w", "copy-heavy", 10.0, 10.0 * x, 10, 9, identical) for x in speedups)
        return NgramSetting(lookup, 16, rows)

    found = [setting(3, [3.0, 1.1]), setting(6, [2.0, 1.8]), setting(9, [4.0, 4.0], identical=False)]
    assert best_setting(found).lookup == 6  # the weakest workload decides; a changed output disqualifies
    assert best_setting(found[2:]).lookup == 9
    with pytest.raises(SpecError, match="n-gram spec_type"):
        sweep_ngram(None, NO_MODEL, COPY_HEAVY)  # spec without speculation: refused before anything starts


@pytest.mark.engine
def test_draft_model_speculation_keeps_greedy_output(server, draft_server):
    (row,) = compare(server, draft_server, COPY_HEAVY[:1], max_tokens=48)
    assert row.identical and row.accepted > 0


@pytest.mark.engine
def test_adaptive_policy_serves_the_way_it_measured_faster(server, draft_server):
    # Which way wins is a speed, so it depends on the machine; what the policy does with the speeds
    # does not: measure plain, then speculative, then serve the faster one (margin 0).
    warm_up(server, draft_server)
    adaptive = AdaptiveServer(server, draft_server, AdaptiveSpeculation(samples=1, margin=0.0))
    free_text = WORKLOADS["free text"]
    served = [adaptive.generate(free_text, max_tokens=32) for _ in range(3)]
    plain, speculative, third = served
    assert (plain.speculative, speculative.speculative) == (False, True), "one measurement of each way first"
    assert third.speculative == (speculative.tokens_per_s > plain.tokens_per_s)
    stats = adaptive.policy.arms[free_text.name]
    assert (stats[False].requests, stats[True].requests) == (2 - third.speculative, 1 + third.speculative)


def test_prompt_lookup_and_repeat_settings_are_checked():
    with pytest.raises(SpecError, match="num_pred_tokens >= 0"):
        PromptLookupEngine(NO_MODEL, num_pred_tokens=-1)
    with pytest.raises(SpecError, match="repeats >= 1"):
        compare(None, None, COPY_HEAVY, repeats=0)


@pytest.fixture(scope="module")
def lookup_pair(spec):
    """The in-process engine plain (no drafter) and with llama-cpp-python's prompt lookup."""
    with PromptLookupEngine(spec, num_pred_tokens=0) as plain, PromptLookupEngine(spec, num_pred_tokens=10) as lookup:
        yield plain, lookup


@pytest.mark.engine
def test_in_process_prompt_lookup_reports_speed_acceptance_and_identity(spec, in_process, lookup_pair):
    plain, lookup = lookup_pair
    assert not plain.speculative and plain.scores_bytes == 0
    assert lookup.speculative and lookup.scores_bytes == spec.n_ctx * lookup.llama.n_vocab() * 4
    edit, free = WORKLOADS["edit code"], WORKLOADS["free text"]
    rows = {r.workload: r for r in compare(plain, lookup, [edit, free], max_tokens=48)}

    # the baseline is the library's plain in-process engine: same greedy text
    reference = in_process.complete(edit.prompt, max_tokens=48, ignore_eos=True, stop=list(edit.stop))
    assert generate(plain, edit, 48).text == reference.text
    for row in rows.values():
        assert row.plain_tokens_per_s > 0 and row.speculative_tokens_per_s > 0
        assert 0 <= row.accepted <= row.drafted
    # copying the prompt's code: drafts found and accepted, greedy text unchanged
    assert rows["edit code"].drafted > 0 and rows["edit code"].accepted > 0
    assert rows["edit code"].identical
    assert generate(lookup, edit, 48).speculative and not generate(plain, free, 8).speculative
