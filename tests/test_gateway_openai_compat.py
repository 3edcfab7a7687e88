"""The gateway as evaluation harnesses and OpenAI clients use it, through the official `openai` client
on the real engines (Gemma for completions; SmolLM2 for chat, as Gemma's GGUF has no chat template):
a list of prompts answered in one request (lm-eval's batches) with its usage summed, the route's
name as `model` in answers and in every streamed chunk, log-probabilities and constrained decoding
passed through, the review queue's confidence in the request log, and 400s naming the field."""

from __future__ import annotations

import json

import pytest
from openai import BadRequestError, OpenAI
from pydantic import ValidationError

from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.guards.pii import STRUCTURED
from llmops_lib.observe.request_log import RequestLogReader

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "Roses are red, violets are"]
GREEDY = {"temperature": 0, "max_tokens": 4}
#: Thresholds on either side of any confidence strictly between 0 and 1 that a greedy answer of
#: these prompts has (its tokens are not certain: the first one's top log-probability is about -1.7).
LOW, HIGH = 1e-9, 1 - 1e-9


@pytest.fixture(scope="module")
def gateway(server, chat_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("gw") / "requests.sqlite"

    def route(model: str, engine, review_below: float | None = None) -> Route:
        return Route(model=model, deployments=[Deployment(name=model, url=engine.base_url)], review_below=review_below)

    config = GatewayConfig(
        routes=[
            route("gemma", server),
            route("gemma-review-low", server, LOW),
            route("gemma-review-high", server, HIGH),
            route("smollm2", chat_server),
            route("smollm2-review-low", chat_server, LOW),
        ],
        request_log=str(log),
        capture_text=True,
        redact_entities=list(STRUCTURED),  # synthetic traffic: the countries asked about stay in the text
    )
    with GatewayServer(config) as gw:
        yield OpenAI(base_url=gw.base_url + "/v1", api_key="none", max_retries=0, timeout=120), log


def _row(log, request_id: str) -> dict:
    with RequestLogReader(log) as reader:
        return next(r for r in reader.rows_including({request_id}) if r["request_id"] == request_id)


def test_a_list_of_prompts_answers_each_as_its_own_request_would_in_one_log_row(gateway):
    client, log = gateway
    singles = [client.completions.create(model="gemma", prompt=p, **GREEDY).choices[0].text for p in PROMPTS]
    batch = client.completions.create(model="gemma", prompt=PROMPTS, **GREEDY)
    assert [c.index for c in batch.choices] == [0, 1, 2]
    assert [c.text for c in sorted(batch.choices, key=lambda c: c.index)] == singles
    row = _row(log, batch._request_id)
    assert row["prompt"] == '["The capital of France is", "1, 2, 3, 4,", "Roses are red, violets are"]'
    assert row["http_status"] == 200 and json.loads(row["completion"]) == [c.text for c in batch.choices]
    assert row["gen_ai_usage_output_tokens"] == batch.usage.completion_tokens


def test_a_lists_usage_and_logged_tokens_are_the_sums_of_its_prompts_sent_one_by_one(gateway):
    # llama-server's own usage for a list counts only the first prompt's tokens
    client, log = gateway
    prompts = ["The largest ocean on Earth is", "Water boils at", "A week has seven"]
    singles = [_row(log, client.completions.create(model="gemma", prompt=p, **GREEDY)._request_id) for p in prompts]
    tokens_in = sum(r["gen_ai_usage_input_tokens"] for r in singles)
    tokens_out = sum(r["gen_ai_usage_output_tokens"] for r in singles)
    assert min(r["gen_ai_usage_input_tokens"] for r in singles) > 0
    batch = client.completions.create(model="gemma", prompt=prompts, **GREEDY)
    row = _row(log, batch._request_id)
    assert (row["gen_ai_usage_input_tokens"], row["gen_ai_usage_output_tokens"]) == (tokens_in, tokens_out)
    usage = batch.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        tokens_in,
        tokens_out,
        tokens_in + tokens_out,
    )


def test_model_is_the_route_name_in_answers_and_every_streamed_chunk_the_log_keeps_the_engines(gateway):
    client, log = gateway
    answer = client.completions.create(model="gemma", prompt="Hello", **GREEDY)
    assert answer.model == "gemma"
    assert _row(log, answer._request_id)["gen_ai_response_model"].endswith(".gguf"), "the engine's own name"
    chat = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], **GREEDY)
    assert chat.model == "smollm2"
    with client.completions.with_streaming_response.create(
        model="gemma", prompt="Once upon a time", stream=True, **GREEDY
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    assert len(chunks) >= 2 and {c.model for c in chunks} == {"gemma"}
    row = _row(log, request_id)
    assert row["stream"] == 1 and row["gen_ai_response_model"].endswith(".gguf")
    streamed_chat = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hi"}], stream=True, **GREEDY
    )
    assert {c.model for c in streamed_chat} == {"smollm2"}


def test_logprobs_come_back_when_asked_and_only_then(gateway):
    client, _ = gateway
    asked = client.completions.create(model="gemma", prompt=PROMPTS[0], logprobs=1, **GREEDY).choices[0]
    assert asked.logprobs is not None
    not_asked = client.completions.create(model="gemma", prompt=PROMPTS[1], **GREEDY).choices[0]
    assert not_asked.logprobs is None
    chat = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hi"}], logprobs=True, top_logprobs=2, **GREEDY
    ).choices[0]
    assert len(chat.logprobs.content) >= 1 and len(chat.logprobs.content[0].top_logprobs) == 2


def test_constrained_decoding_fields_reach_the_engine(gateway):
    client, _ = gateway
    grammar = 'root ::= "yes" | "no"'
    answer = client.completions.create(model="gemma", prompt="Is water wet?", extra_body={"grammar": grammar}, **GREEDY)
    assert answer.choices[0].text in {"yes", "no"}
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    shaped = client.completions.create(
        model="gemma", prompt="JSON:", extra_body={"json_schema": schema}, temperature=0, max_tokens=8
    )
    assert shaped.choices[0].text.replace(" ", "") in {'{"ok":true}', '{"ok":false}'}


def test_the_review_queue_logs_confidence_and_needs_review_against_the_routes_threshold(gateway):
    client, log = gateway
    rows = {}
    for model in ("gemma-review-low", "gemma-review-high"):
        answer = client.completions.create(model=model, prompt=PROMPTS[0], **GREEDY)
        assert answer.choices[0].logprobs is None, "log-probabilities the client did not ask for are removed"
        rows[model] = _row(log, answer._request_id)
    low, high = rows["gemma-review-low"], rows["gemma-review-high"]
    assert 0 < low["confidence"] < 1 and low["confidence"] == high["confidence"]
    assert (low["needs_review"], high["needs_review"]) == (0, 1)
    again = client.completions.create(model="gemma-review-high", prompt=PROMPTS[0], **GREEDY)
    hit = _row(log, again._request_id)
    assert again.choices[0].logprobs is None and (hit["cache_hit"], hit["needs_review"]) == (1, 1)
    assert hit["confidence"] == high["confidence"], "a cache hit is reviewed like the answer it repeats"
    asked = client.completions.create(model="gemma-review-high", prompt=PROMPTS[1], logprobs=1, **GREEDY)
    assert asked.choices[0].logprobs is not None
    chat = client.chat.completions.create(
        model="smollm2-review-low", messages=[{"role": "user", "content": "Hi"}], **GREEDY
    )
    assert chat.choices[0].logprobs is None and _row(log, chat._request_id)["needs_review"] == 0
    unreviewed = _row(log, client.completions.create(model="gemma", prompt=PROMPTS[2], **GREEDY)._request_id)
    assert (unreviewed["confidence"], unreviewed["needs_review"]) == (None, None)
    with client.completions.with_streaming_response.create(
        model="gemma-review-high", prompt=PROMPTS[0], stream=True, **GREEDY
    ) as response:
        request_id = response.headers["x-request-id"]
        assert all(choice.logprobs is None for chunk in response.parse() for choice in chunk.choices)
    streamed = _row(log, request_id)
    assert streamed["needs_review"] == 1, "a stream is reviewed from the log-probabilities its chunks carried"
    assert streamed["confidence"] == pytest.approx(high["confidence"], rel=1e-3), "the same greedy tokens"
    with client.chat.completions.with_streaming_response.create(
        model="smollm2-review-low", messages=[{"role": "user", "content": "Hi"}], stream=True, **GREEDY
    ) as response:
        request_id = response.headers["x-request-id"]
        assert all(choice.logprobs is None for chunk in response.parse() for choice in chunk.choices)
    streamed_chat = _row(log, request_id)
    assert 0 < streamed_chat["confidence"] < 1 and streamed_chat["needs_review"] == 0


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"prompt": []}, "prompt"),
        ({"prompt": ["a", "b"], "stream": True}, "prompt"),
        ({"prompt": [1, 2]}, "prompt"),
        ({"prompt": "a", "logprobs": True}, "logprobs"),
        ({"prompt": "a", "extra_body": {"grammar": 5}}, "grammar"),
        ({"prompt": "a", "extra_body": {"response_format": {"type": "xml"}}}, "response_format.type"),
    ],
)
def test_bad_fields_are_400_naming_the_field(gateway, fields, param):
    client, _ = gateway
    with pytest.raises(BadRequestError) as refused:
        client.completions.create(model="gemma", max_tokens=2, **fields)
    assert refused.value.param == param, refused.value.message


def test_chat_top_logprobs_out_of_range_is_400_naming_it(gateway):
    client, _ = gateway
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Hi"}], logprobs=True, top_logprobs=21, max_tokens=2
        )
    assert refused.value.param == "top_logprobs", refused.value.message


def test_a_review_threshold_is_between_0_and_1():
    with pytest.raises(ValidationError, match="review_below"):
        Route(model="m", deployments=[Deployment(name="d", url="http://127.0.0.1:9")], review_below=1.0)
