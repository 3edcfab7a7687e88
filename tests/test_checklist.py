"""The production checklist is gathered from the book's sources: literal oracles on a small temporary
book, then the real repository (every runbook, every alert rule), then malformed input."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import nbformat
import pytest
import yaml

from llmops_lib.checklist import ChecklistError, gather, lessons_in, lessons_markdown, read_alerts, read_runbooks

REPO = Path(__file__).resolve().parents[1]

LESSONS_MD = textwrap.dedent(
    """\
    (part-a)=
    # Part A

    Some prose.

    ```{admonition} Lessons
    :class: tip
    - Measure before you optimize.
    - Keep a quality number beside every
      speed-up.
    ```

    ```{admonition} Try it
    :class: note
    1. Not a lesson.
    ```
    """
)

NOTEBOOK_LESSONS = "```{admonition} Lessons\n:class: tip\n- Read {doc}`the other page <other>` first.\n```"

RUNBOOK_PARAMETERS = 'p95_ms: float = 2500.0  # the gate; range: 1..\nname: str = "x"  # a string'
RUNBOOK_BODY = (
    "from llmops_lib.runbooks import gate, gate_true\n"
    "%time x = 1\n"
    'gate("p95", 10.0, at_most=p95_ms)\n'
    'gate_true("served", True, detail="ok")\n'
)


def notebook(path: Path, *cells: tuple[str, str, list[str]]) -> None:
    nb = nbformat.v4.new_notebook()
    for kind, source, tags in cells:
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


ALERTS = {
    "groups": [
        {
            "name": "g",
            "rules": [
                {"record": "job:x:rate5m", "expr": "rate(x[5m])"},
                {
                    "alert": "TooSlow",
                    "expr": "x > 1",
                    "for": "5m",
                    "labels": {"severity": "page"},
                    "annotations": {"summary": "slow on {{ $labels.model }}"},
                },
            ],
        }
    ]
}


@pytest.fixture
def book(tmp_path: Path) -> Path:
    """A two-page book with known Lessons, a page without them, one runbook and one alert rule."""
    (tmp_path / "_toc.yml").write_text(
        yaml.safe_dump(
            {
                "format": "jb-book",
                "root": "intro",
                "parts": [
                    {"caption": "A", "chapters": [{"file": "a/index", "sections": [{"file": "a/page"}]}]},
                    {"caption": "Reference", "chapters": [{"file": "glossary"}]},
                ],
            }
        )
    )
    (tmp_path / "book" / "a").mkdir(parents=True)
    (tmp_path / "book" / "intro.md").write_text("# Intro\n\n```{admonition} Lessons\nOne paragraph lesson.\n```\n")
    (tmp_path / "book" / "a" / "index.md").write_text(LESSONS_MD)
    notebook(tmp_path / "book" / "a" / "page.ipynb", ("md", "# A page\n\nText.", []), ("md", NOTEBOOK_LESSONS, []))
    (tmp_path / "book" / "glossary.md").write_text("# Glossary\n\nNo lessons here.\n")
    notebook(
        tmp_path / "runbooks" / "check.ipynb",
        ("md", "# Runbook: check\n\nChecks the thing. Then more.", []),
        ("code", RUNBOOK_PARAMETERS, ["parameters"]),
        ("code", RUNBOOK_BODY, []),
    )
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "alerts.yml").write_text(yaml.safe_dump(ALERTS))
    return tmp_path


def test_known_lessons_become_exactly_those_items(book: Path) -> None:
    checklist = gather(book)
    lessons = {page.file: list(page.lessons) for page in checklist.pages if page.has_lessons}
    assert lessons == {
        "intro": ["One paragraph lesson."],
        "a/index": ["Measure before you optimize.", "Keep a quality number beside every speed-up."],
        "a/page": ["Read {doc}`the other page <other>` first."],
    }
    assert [page.title for page in checklist.pages] == ["Intro", "Part A", "A page", "Glossary"]
    assert [part for part in checklist.by_part()] == ["", "A"]


def test_a_page_without_lessons_is_reported_by_name(book: Path) -> None:
    assert gather(book).without_lessons == ["glossary"]


def test_runbook_gates_and_parameters_are_read_without_running_it(book: Path) -> None:
    (runbook,) = gather(book).runbooks
    assert (runbook.name, runbook.title, runbook.purpose) == ("check", "check", "Checks the thing.")
    assert runbook.parameters == {"p95_ms": "2500.0", "name": "'x'"}
    assert [gate.describe() for gate in runbook.gates] == ["p95 <= p95_ms (default 2500.0)", "served holds"]
    assert runbook.command == "llmops runbook run check"


def test_alert_rules_are_read_and_recording_rules_skipped(book: Path) -> None:
    (rule,) = gather(book).alerts
    assert (rule.name, rule.group, rule.severity, rule.wait) == ("TooSlow", "g", "page", "5m")
    assert rule.summary == "slow on <labels.model>"


def test_markdown_links_each_page_and_makes_relative_doc_targets_absolute(book: Path) -> None:
    text = lessons_markdown(gather(book), front="Front")
    assert "**Front**" in text and "**A**" in text
    assert "- {doc}`/a/page`" in text
    assert "{doc}`the other page </a/other>`" in text


def test_a_toc_page_without_a_file_is_a_clear_error(book: Path) -> None:
    (book / "book" / "a" / "page.ipynb").unlink()
    with pytest.raises(ChecklistError, match=r"_toc.yml lists 'a/page' but no a/page.ipynb or a/page.md exists"):
        gather(book)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("```{admonition} Lessons\n- never closed\n", "never closed"),
        ("```{admonition} Lessons\n:class: tip\n```\n", "Lessons admonition is empty"),
    ],
)
def test_malformed_lessons_are_refused(text: str, message: str) -> None:
    with pytest.raises(ChecklistError, match=message):
        lessons_in(text, "page.md")


def test_a_gate_without_a_literal_name_is_refused(book: Path) -> None:
    notebook(book / "runbooks" / "bad.ipynb", ("code", "gate(name, 1.0, at_most=2)", []))
    with pytest.raises(ChecklistError, match=r"bad.ipynb cell 0: gate\(\.\.\.\) at line 1 needs a literal name"):
        gather(book)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"rules": []}, "needs a list under 'groups'"),
        ({"groups": [{"name": "g", "rules": [{"expr": "x > 1"}]}]}, r"groups.0.rules.0 is neither"),
        ({"groups": [{"name": "g", "rules": [{"alert": "A"}]}]}, r"groups.0.rules.0 \(A\) has no 'expr'"),
    ],
)
def test_malformed_alert_rules_are_refused(tmp_path: Path, content: dict, message: str) -> None:
    path = tmp_path / "alerts.yml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ChecklistError, match=message):
        read_alerts(path)


def test_a_toc_without_root_is_refused(book: Path) -> None:
    (book / "_toc.yml").write_text("format: jb-book\nparts: []\n")
    with pytest.raises(ChecklistError, match="no 'root: <page>'"):
        gather(book)


# --- the real repository: every runbook and every alert rule appears ------------------------------


def test_every_runbook_of_the_repository_appears() -> None:
    runbooks = read_runbooks(REPO / "runbooks")
    on_disk = sorted(path.stem for path in (REPO / "runbooks").glob("*.ipynb"))
    assert on_disk and [runbook.name for runbook in runbooks] == on_disk
    # Every runbook that calls gate( or gate_true( in its source has those gates in the checklist.
    for path in (REPO / "runbooks").glob("*.ipynb"):
        source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        calls = len(re.findall(r"\bgate(?:_true)?\(", source)) - source.count("import gate")
        (runbook,) = [r for r in runbooks if r.name == path.stem]
        assert len(runbook.gates) >= min(calls, 1), path.name


def test_every_alert_name_in_deploy_alerts_appears() -> None:
    path = REPO / "deploy" / "alerts.yml"
    names = re.findall(r"^\s*-\s*alert:\s*(\S+)", path.read_text(), re.MULTILINE)
    assert names and [rule.name for rule in read_alerts(path)] == names


def test_every_page_of_the_toc_is_read_in_order() -> None:
    """The real book: every toc page exists and is read, in order (the checklist page shows them)."""
    toc = (REPO / "_toc.yml").read_text()
    files = ["intro", *re.findall(r"^\s*-\s*file:\s*(\S+)", toc, re.MULTILINE)]
    checklist = gather(REPO)
    assert [page.file for page in checklist.pages] == files
    assert len(checklist.runbooks) == len(list((REPO / "runbooks").glob("*.ipynb")))
