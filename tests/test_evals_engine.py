"""Evaluation runs on the real default model (Gemma 3 270M on llama-server): a few-shot prompt beats
zero-shot on capitals, a rerun is served from the cache without a request, log-probability scoring
chooses labels as the server's own text-prompt log-probabilities say."""

from __future__ import annotations

import pytest

from llmops_lib.bench.prometheus import OUTPUT_TOKENS, PROMPT_TOKENS, scrape
from llmops_lib.errors import EngineError, SpecError
from llmops_lib.evals.logprob import LabelChooser
from llmops_lib.evals.run import Endpoint, OutputCache, run_cases
from llmops_lib.evals.tasks import load_task

CAPITALS = load_task("capitals")
SENTIMENT = load_task("sentiment")


def question(case) -> str:
    return f"Q: What is the capital of {case.inputs['country']}?\nA:"


def three_shot(case) -> str:
    demos = CAPITALS.split("train")[:3]
    return "".join(f"{question(demo)} {demo.expected}\n" for demo in demos) + question(case)


def review(case) -> str:
    return f"Review: {case.inputs['review']}\nSentiment:"


def two_shot_review(case) -> str:
    train = SENTIMENT.split("train")
    demos = [next(c for c in train if c.expected == label) for label in SENTIMENT.labels]
    return "".join(f"{review(demo)} {demo.expected}\n\n" for demo in demos) + review(case)


@pytest.fixture
def endpoint(server):
    with Endpoint(server.client.base_url, max_tokens=8, stop=["\n"]) as endpoint:
        yield endpoint


def test_three_shot_beats_zero_shot_and_a_rerun_is_served_from_the_cache(server, endpoint, tmp_path):
    cases = CAPITALS.split("dev")[:10]
    cache = OutputCache(tmp_path / "cache.sqlite")
    zero = run_cases(CAPITALS, cases, question, endpoint.complete, cache=cache, workers=2)  # both slots
    few = run_cases(CAPITALS, cases, three_shot, endpoint.complete, cache=cache)
    assert [row.case_id for row in zero.rows] == [row.case_id for row in few.rows] == [case.id for case in cases]
    assert not any(row.cached for row in zero.rows + few.rows)
    # measured by hand: the base model rambles zero-shot (0/10) and answers 8/10 given three examples
    assert zero.accuracy <= 0.2 and few.accuracy >= 0.7
    assert few.cost()["prompt_tokens"] > 2 * zero.cost()["prompt_tokens"]  # the examples are paid in tokens

    before = scrape(server.client)
    again = run_cases(CAPITALS, cases, three_shot, endpoint.complete, cache=cache)
    after = scrape(server.client)
    assert all(row.cached for row in again.rows)
    assert [row.output for row in again.rows] == [row.output for row in few.rows]
    assert before.increase(after, PROMPT_TOKENS) == before.increase(after, OUTPUT_TOKENS) == 0

    # other generation parameters are another key: asked again, not taken from the cache
    with Endpoint(server.client.base_url, max_tokens=4, stop=["\n"]) as shorter:
        assert not any(
            row.cached for row in run_cases(CAPITALS, cases[:2], three_shot, shorter.complete, cache=cache).rows
        )


def test_logprob_choice_agrees_with_the_servers_text_prompt_logprobs(endpoint):
    chooser = LabelChooser(endpoint, SENTIMENT.labels, top_n=200)
    for case in SENTIMENT.split("dev")[:4]:
        text = two_shot_review(case)
        totals, prompt_tokens = chooser.label_logprobs(text)
        # independent path: the text prompt (the server tokenizes and adds <bos> itself)
        answer = endpoint.request(
            "POST",
            "/v1/completions",
            {"prompt": text, "max_tokens": 1, "temperature": 0, "logprobs": 200, "cache_prompt": False},
        )
        top = {
            entry["token"]: entry["logprob"] for entry in answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        }
        assert totals == pytest.approx({label: top[" " + label] for label in SENTIMENT.labels}, abs=1e-3)
        assert prompt_tokens == answer["usage"]["prompt_tokens"]


def test_logprob_scoring_picks_the_right_label(endpoint):
    cases = SENTIMENT.split("dev")[:12]
    chooser = LabelChooser(endpoint, SENTIMENT.labels)
    few = run_cases(SENTIMENT, cases, two_shot_review, chooser, cache=False)
    assert few.accuracy == 1.0  # checked by hand: two examples, every one of these 12 right
    zero = run_cases(SENTIMENT, cases, review, chooser, cache=False)
    # checked by hand: without examples the model prefers " positive" on three negative reviews
    wrong = [row.case_id for row in zero.rows if row.score == 0]
    assert wrong == ["sentiment-010", "sentiment-011", "sentiment-014"]


def test_logprob_scores_multi_token_labels(endpoint):
    # capitals as labels: several tokens each ("Phnom Penh"); three examples make the right one likeliest
    for case in CAPITALS.split("dev")[:6]:
        other = "Ouagadougou" if case.expected != "Ouagadougou" else "Nairobi"
        chooser = LabelChooser(endpoint, [other, case.expected])
        assert chooser(three_shot(case)).text == case.expected, case.id


def test_bad_endpoint_and_uncacheable_callables_are_refused(endpoint):
    with pytest.raises(SpecError, match="cache_identity"):
        run_cases(CAPITALS, CAPITALS.split("dev")[:1], question, lambda prompt: ("x", 1, 1, 0.1))
    with pytest.raises(SpecError, match="labels"):
        LabelChooser(endpoint, ["positive"])
    with Endpoint("http://127.0.0.1:9", max_tokens=4) as nowhere, pytest.raises(EngineError, match="is it running"):
        nowhere.complete("hello")


def test_chat_prompts_go_through_the_models_chat_template_and_are_cached(chat_server, tmp_path):
    cases = CAPITALS.split("dev")[:4]

    def messages(case):
        return [{"role": "user", "content": f"What is the capital of {case.inputs['country']}?"}]

    cache = OutputCache(tmp_path / "cache.sqlite")
    with Endpoint(chat_server.client.base_url, max_tokens=16) as endpoint:
        chat = run_cases(CAPITALS, cases, messages, endpoint.chat, cache=cache)
        plain = run_cases(CAPITALS, cases, lambda case: messages(case)[0]["content"], endpoint.complete, cache=cache)
        again = run_cases(CAPITALS, cases, messages, endpoint.chat, cache=cache)
    # the template wraps the question in role markers: more prompt tokens than the bare text
    assert all(c.prompt_tokens > p.prompt_tokens + 3 for c, p in zip(chat.rows, plain.rows, strict=True))
    # measured by hand: SmolLM2 answers "The capital of Afghanistan is Kabul." and misses Algeria and Bahamas
    assert chat.scores[0] == 1.0 and chat.accuracy < 1.0
    assert all(row.cached for row in again.rows) and again.scores == chat.scores
