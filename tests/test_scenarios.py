"""Application scenarios (`bench/scenarios.py`): the passage store, retrieval, scoring rules, and the
dialogue, Q&A and style runs on the real models (small runs, one engine thread, session servers)."""

from __future__ import annotations

import json

import pytest

from llmops_lib.bench.scenarios import (
    STYLE_EXAMPLES,
    STYLE_RULES,
    PassageStore,
    Question,
    answer_matches,
    chat_prompt,
    load_knowledge,
    qa_prompt,
    run_dialogue,
    run_qa,
    run_style,
    style_messages,
    style_violations,
)
from llmops_lib.errors import SpecError
from llmops_lib.models import inspect_gguf
from llmops_lib.optimize import kv_cache_bytes


@pytest.fixture(scope="module")
def knowledge():
    return load_knowledge()


@pytest.fixture(scope="module")
def store(knowledge):
    return PassageStore(knowledge.passages)


def test_shipped_store_holds_every_gold_answer_in_its_passage(knowledge):
    texts = {p.id: p.text for p in knowledge.passages}
    assert len(knowledge.passages) == 40 and len(knowledge.questions) == 40
    assert len({q.question for q in knowledge.questions}) == 40
    for question in knowledge.questions:
        assert question.answer.lower() in texts[question.passage].lower(), question.id
    assert knowledge.licence and "invented" in knowledge.source


@pytest.mark.parametrize(
    ("query", "passage", "literal"),
    [
        ("Which port does the dispatch service listen on?", "p01", "7431"),
        ("Who leads the support quality team?", "p31", "Dario Lindqvist"),
        ("What do Brightwater engineers call the charger scheduler?", "p19", "juicebox"),
        ("What is the drivers' mobile app called?", "p32", "Lanternfish"),
    ],
)
def test_retrieval_returns_the_passage_holding_the_answer(store, query, passage, literal):
    best = store.search(query, k=1)[0]
    assert best.id == passage and literal in best.text
    assert [p.id for p in store.search(query, k=3)][0] == passage


def test_bad_inputs_are_refused_with_what_to_do(store, tmp_path):
    with pytest.raises(SpecError, match="non-empty query"):
        store.search("   ")
    with pytest.raises(SpecError, match="between 1 and 40"):
        store.search("port", k=0)
    with pytest.raises(SpecError, match="between 1 and 40"):
        store.search("port", k=41)
    with pytest.raises(SpecError, match="cannot read the passage store"):
        load_knowledge(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text(
        json.dumps(
            {
                "source": "s",
                "licence": "l",
                "passages": [{"id": "p1", "title": "t", "text": "x"}],
                "questions": [{"id": "q1", "passage": "p9", "question": "?", "answer": "x"}],
            }
        )
    )
    with pytest.raises(SpecError, match="not in it: p9"):
        load_knowledge(broken)
    with pytest.raises(SpecError, match="at least one passage"):
        PassageStore([])
    with pytest.raises(SpecError, match="shots must be between 0 and 3"):
        style_messages("X: y", shots=4)


def test_answer_matching_ignores_case_punctuation_and_articles_but_not_digits():
    question = Question("q", "p", "?", "Port Ellery", ())
    assert answer_matches("Port Ellery.", question)
    assert answer_matches("the port ellery warehouse\nmore text", question)
    assert not answer_matches("Port\nEllery", question)  # only the first line is the answer
    assert answer_matches("17 of them", Question("q", "p", "?", "17", ("seventeen",)))
    assert not answer_matches("170", Question("q", "p", "?", "17", ()))
    assert answer_matches("Seventeen.", Question("q", "p", "?", "17", ("seventeen",)))
    assert answer_matches("The 'hands'.", Question("q", "p", "?", "hands", ()))
    assert answer_matches("#pager-baton", Question("q", "p", "?", "#pager-baton", ()))


def test_qa_prompt_has_passages_only_when_given():
    closed = qa_prompt("Who?")
    assert "Passage:" not in closed and closed.endswith("Question: Who?\nAnswer:")
    open_book = qa_prompt("Who?", ["Alpha is here.", "Beta is there."])
    assert "Passage: Alpha is here.\nPassage: Beta is there.\nQuestion: Who?\nAnswer:" in open_book


def test_style_rules_are_checked_one_by_one():
    product = "Swift Crate: next-day delivery"
    assert style_violations("Swift Crate gets it there tomorrow!", product) == []
    assert style_violations("  swift crate gets it there tomorrow!\n", product) == []
    assert style_violations("The Swift Crate is here.", product) == [STYLE_RULES[0], STYLE_RULES[2]]
    sixteen = "Swift Crate " + " ".join(["word"] * 13) + " end!"
    assert len(sixteen.split()) == 16 and style_violations(sixteen, product) == [STYLE_RULES[1]]
    assert style_violations("Swift Crate is fast #delivery!", product) == [STYLE_RULES[3]]
    assert style_violations("Swift Crate is fast \U0001f69a!", product) == [STYLE_RULES[3]]


def test_style_messages_add_one_user_and_assistant_turn_per_example():
    zero, three = style_messages("X: y", shots=0), style_messages("X: y", shots=3)
    assert [m["role"] for m in zero] == ["system", "user"]
    assert [m["role"] for m in three] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert three[2]["content"] == STYLE_EXAMPLES[0][1] and three[-1]["content"] == "Product: X: y"


def test_dialogue_grows_by_the_header_formula_and_reuses_the_cache(chat_server, chat_model_path):
    info = inspect_gguf(chat_model_path)
    # SmolLM2-135M's header, read by hand: 30 layers, 3 KV heads of 64 dimensions, every layer full attention;
    # K and V in f16 (2 bytes): 30 * 3 * 64 * 2 * 2 = 23,040 bytes per token.
    assert (info.block_count, info.head_count_kv, info.head_dim) == (30, 3, 64)
    turns = run_dialogue(chat_server, ["Hello.", "Where is my parcel?", "Thank you."], max_tokens=8)
    assert [t.turn for t in turns] == [1, 2, 3]
    for earlier, later in zip(turns, turns[1:], strict=False):
        assert later.prompt_tokens > earlier.context_tokens > earlier.prompt_tokens
        # the previous prompt (at least) came from the cache, the previous answer maybe not token for token
        assert earlier.prompt_tokens <= later.cached_tokens <= earlier.context_tokens
    for turn in turns:
        assert turn.cold_prompt_tokens > turn.prompt_tokens and turn.cold_cached_tokens <= 3
        assert kv_cache_bytes(info, turn.context_tokens) == turn.context_tokens * 23_040


def test_chat_prompt_is_the_models_own_template(chat_server):
    text = chat_prompt(chat_server, [{"role": "user", "content": "Hi there"}])
    assert text.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")


def test_retrieved_passage_costs_tokens_and_gives_the_answer(server, store, knowledge):
    questions = [q for q in knowledge.questions if q.id in ("q01", "q03")]
    answered = run_qa(server, store, questions, ks=(0, 1))
    closed, retrieved = answered[0], answered[1]
    for c, r in zip(closed, retrieved, strict=True):
        assert (c.k, c.retrieved, c.hit) == (0, (), False)
        assert r.hit and len(r.retrieved) == 1
        assert r.prompt_tokens > c.prompt_tokens + 20
    assert [r.output for r in retrieved] == ["7431", "ledgerstone"]
    assert all(r.correct for r in retrieved)
    for ks in ((), (1, -1)):
        with pytest.raises(SpecError, match="ks must be one or more passage counts"):
            run_qa(server, store, questions, ks=ks)


def test_style_examples_cost_prompt_tokens(chat_server):
    products = ["Swift Crate: next-day delivery for small businesses"]
    plain, shown = (
        run_style(chat_server, products, shots=0, max_tokens=16),
        run_style(chat_server, products, shots=3, max_tokens=16),
    )
    assert shown[0].prompt_tokens > plain[0].prompt_tokens + 3 * 10
    assert plain[0].text and shown[0].text and (plain[0].shots, shown[0].shots) == (0, 3)
