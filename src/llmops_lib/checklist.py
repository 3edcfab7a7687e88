"""The production checklist, gathered from the sources rather than copied: every page's Lessons, the
runbooks' gates and the Prometheus alert rules.

A checklist typed by hand drifts from the book the day a page changes. This module reads what the
book already says, in `_toc.yml` order: the ```` ```{admonition} Lessons ```` block of each page
(Markdown cells of a notebook, or a `.md` file), each runbook's title, purpose, parameters and its
`gate(...)`/`gate_true(...)` calls (parsed with `ast`, never executed or imported), and the alert
rules of `deploy/alerts.yml`. A page without a Lessons block is reported by name; a toc entry
without a file, an unclosed block, an alert rule without a name or a gate without a literal name is
refused with a `ChecklistError` that says where and what to do.

Explained in: book/chapters/09_outlook/production_checklist.ipynb
"""

from __future__ import annotations

import ast
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml

from llmops_lib.errors import SpecError

LESSONS_TITLE = "Lessons"
_FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{admonition\}\s*(?P<title>.*?)\s*$")
_ITEM = re.compile(r"^(?:[-*+]|\d+[.)])\s+(?P<text>.*)$")
_HEADING = re.compile(r"^#\s+(?P<title>.+?)\s*$", re.MULTILINE)
_DOC_ROLE = re.compile(r"\{doc\}`(?P<body>[^`]+)`")
_TEMPLATE = re.compile(r"\{\{\s*(?P<field>.*?)\s*\}\}")
_GATES = ("gate", "gate_true")


class ChecklistError(SpecError):
    """The book's sources cannot be gathered into a checklist (the message names the file)."""


@dataclass(frozen=True)
class Page:
    """One page of the table of contents and the lessons its Lessons block lists."""

    part: str
    file: str  # as in _toc.yml, relative to the book folder, without suffix
    path: Path
    title: str
    lessons: tuple[str, ...]
    has_lessons: bool


@dataclass(frozen=True)
class Gate:
    """A `gate(...)` (a number with a limit) or `gate_true(...)` (a condition) in a runbook."""

    name: str
    kind: str  # "at_most", "at_least" or "true"
    value: str  # the expression gated, as written
    bound: str | None = None  # the limit as written (often a parameter name)
    default: str | None = None  # the parameter's default when the limit is a parameter

    def describe(self) -> str:
        """`p95_e2el_ms <= p95_threshold_ms (default 3000.0)` or `promoted holds`."""
        if self.kind == "true":
            return f"{self.name} holds"
        sign = "<=" if self.kind == "at_most" else ">="
        default = f" (default {self.default})" if self.default is not None else ""
        return f"{self.name} {sign} {self.bound}{default}"


@dataclass(frozen=True)
class Runbook:
    name: str
    title: str
    purpose: str
    parameters: dict[str, str]  # name -> default, as written
    gates: tuple[Gate, ...]

    @property
    def command(self) -> str:
        return f"llmops runbook run {self.name}"


@dataclass(frozen=True)
class AlertRule:
    name: str
    group: str
    severity: str
    wait: str  # the rule's `for:` duration ("0s" when absent)
    summary: str


@dataclass(frozen=True)
class Checklist:
    pages: tuple[Page, ...]
    runbooks: tuple[Runbook, ...]
    alerts: tuple[AlertRule, ...]
    parts: tuple[str, ...] = field(default=())

    @property
    def without_lessons(self) -> list[str]:
        """The toc entries of pages that have no Lessons block."""
        return [page.file for page in self.pages if not page.has_lessons]

    def by_part(self) -> dict[str, list[Page]]:
        """Pages with lessons, grouped by part in toc order."""
        grouped: dict[str, list[Page]] = {part: [] for part in self.parts}
        for page in self.pages:
            if page.has_lessons:
                grouped.setdefault(page.part, []).append(page)
        return {part: pages for part, pages in grouped.items() if pages}

    @property
    def gates(self) -> list[tuple[Runbook, Gate]]:
        return [(runbook, gate) for runbook in self.runbooks for gate in runbook.gates]


# --- the table of contents and the pages ---------------------------------------------------------


def toc_entries(toc_path: Path) -> list[tuple[str, str]]:
    """(part caption, file) for every page of a jb-book `_toc.yml`, in reading order.

    The root page belongs to the first part with the caption "" (the book's front).
    """
    toc = _load_yaml(toc_path)
    if not isinstance(toc, dict) or not isinstance(toc.get("root"), str):
        raise ChecklistError(f"{toc_path}: not a jb-book table of contents (no 'root: <page>'); fix the file")
    entries = [("", toc["root"])]
    parts = toc.get("parts")
    if parts is None:
        parts = [{"caption": "", "chapters": toc.get("chapters", [])}]
    if not isinstance(parts, list):
        raise ChecklistError(f"{toc_path}: 'parts' must be a list of {{caption, chapters}}")
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("chapters"), list):
            raise ChecklistError(f"{toc_path}: parts.{index} has no list of 'chapters'")
        caption = str(part.get("caption", ""))
        entries += [(caption, file) for file in _files(part["chapters"], f"{toc_path}: parts.{index}")]
    return entries


def _files(items: list[Any], where: str) -> Iterator[str]:
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("file"), str):
            raise ChecklistError(f"{where}.chapters.{index}: an entry without 'file: <page>'")
        yield item["file"]
        sections = item.get("sections") or []
        if not isinstance(sections, list):
            raise ChecklistError(f"{where}.chapters.{index}: 'sections' must be a list of {{file: <page>}}")
        yield from _files(sections, f"{where}.chapters.{index}.sections")


def page_source(book_dir: Path, file: str) -> Path:
    """The source of a toc entry: `<file>.ipynb` or `<file>.md` under the book folder."""
    candidates = [book_dir / file] if Path(file).suffix in (".md", ".ipynb") else []
    candidates += [book_dir / f"{file}.ipynb", book_dir / f"{file}.md"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ChecklistError(
        f"_toc.yml lists {file!r} but no {file}.ipynb or {file}.md exists under {book_dir}: "
        "write the page or remove it from the table of contents"
    )


def markdown_of(path: Path) -> list[str]:
    """The Markdown of a page: a `.md` file whole, or each Markdown cell of a notebook."""
    if path.suffix == ".md":
        return [path.read_text(encoding="utf-8")]
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several types for a damaged file
        raise ChecklistError(f"{path}: not a readable notebook ({exc}); repair or regenerate it") from None
    return [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]


def lessons_in(text: str, where: str) -> list[str] | None:
    """The items of the first Lessons admonition in `text` (None: there is none).

    Bullets (`-`, `*`, `1.`) start items, indented lines continue them; a block without bullets
    gives one item per paragraph.
    """
    lines = text.splitlines()
    for start, line in enumerate(lines):
        opening = _FENCE.match(line.strip())
        if not opening or opening.group("title") != LESSONS_TITLE:
            continue
        fence = opening.group("fence")
        for end in range(start + 1, len(lines)):
            if lines[end].strip() == fence:
                return _items(lines[start + 1 : end], where)
        raise ChecklistError(f"{where}: the Lessons admonition opened with {fence} is never closed; close it")
    return None


def _items(body: list[str], where: str) -> list[str]:
    while body and (not body[0].strip() or body[0].strip().startswith(":")):  # options such as :class: tip
        body = body[1:]
    bulleted = any(_ITEM.match(line) for line in body)
    items: list[list[str]] = []
    for line in body:
        stripped = line.strip()
        match = _ITEM.match(line) if bulleted else None
        if match:
            items.append([match.group("text")])
        elif not stripped:
            if not bulleted:
                items.append([])
        elif items:
            items[-1].append(stripped)
        else:
            items.append([stripped])
    found = [" ".join(words) for words in items if words]
    if not found:
        raise ChecklistError(f"{where}: the Lessons admonition is empty; write the page's lessons in it")
    return found


def read_page(book_dir: Path, part: str, file: str) -> Page:
    path = page_source(book_dir, file)
    sources = markdown_of(path)
    heading = next((m.group("title") for text in sources if (m := _HEADING.search(text))), file)
    lessons: list[str] | None = None
    for text in sources:
        lessons = lessons_in(text, str(path))
        if lessons is not None:
            break
    return Page(part, file, path, heading, tuple(lessons or ()), lessons is not None)


# --- runbooks ------------------------------------------------------------------------------------


def read_runbook(path: Path) -> Runbook:
    """A runbook's title, purpose, parameters and gates, read from the notebook without running it."""
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as exc:
        raise ChecklistError(f"{path}: not a readable notebook ({exc}); repair or regenerate it") from None
    markdown = [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]
    title, purpose = path.stem, ""
    if markdown:
        paragraphs = [p.strip() for p in markdown[0].split("\n\n") if p.strip()]
        if paragraphs and (m := _HEADING.match(paragraphs[0])):
            title = m.group("title").removeprefix("Runbook:").strip()
            paragraphs = paragraphs[1:]
        if paragraphs:
            purpose = _first_sentence(" ".join(paragraphs[0].split()))
    parameters: dict[str, str] = {}
    gates: list[Gate] = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        tree = _parse(cell.source, f"{path} cell {index}")
        if "parameters" in cell.metadata.get("tags", []):
            parameters.update(_parameters(tree))
        gates += _gates(tree, f"{path} cell {index}")
    gates = [
        Gate(g.name, g.kind, g.value, g.bound, parameters.get(g.bound)) if g.bound in parameters else g for g in gates
    ]
    return Runbook(path.stem, title, purpose, parameters, tuple(gates))


def _first_sentence(text: str) -> str:
    """The first sentence as plain text ("e.g." does not end one: the next word must start a sentence)."""
    text = text.replace("**", "").replace("`", "")
    match = re.match(r"(.+?[.!?])(?=\s+[A-Z(]|$)", text)
    return match.group(1) if match else text


def _parse(source: str, where: str) -> ast.Module:
    # IPython magics and shell lines are not Python; they never hold a gate.
    python = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        return ast.parse(python)
    except SyntaxError as exc:
        raise ChecklistError(f"{where}: not valid Python (line {exc.lineno}: {exc.msg}); fix the cell") from None


def _parameters(tree: ast.Module) -> dict[str, str]:
    return {
        node.target.id: ast.unparse(node.value)
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None
    }


def _gates(tree: ast.Module, where: str) -> list[Gate]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name not in _GATES:
            continue
        if len(node.args) < 2 or not (isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            raise ChecklistError(
                f"{where}: {name}(...) at line {node.lineno} needs a literal name and a value, "
                f'as in {name}("p95_ms", value, ...); write its name as a string'
            )
        gate_name, value = node.args[0].value, ast.unparse(node.args[1])
        if name == "gate_true":
            found.append(Gate(gate_name, "true", value))
            continue
        bounds = {k.arg: ast.unparse(k.value) for k in node.keywords if k.arg in ("at_most", "at_least")}
        if not bounds:
            raise ChecklistError(f"{where}: gate({gate_name!r}, ...) has no at_most= or at_least=; give it a limit")
        found += [Gate(gate_name, kind, value, bound) for kind, bound in bounds.items()]
    return found


# --- alert rules ---------------------------------------------------------------------------------


def read_alerts(path: Path) -> list[AlertRule]:
    """The alerting rules of a Prometheus rule file (recording rules are skipped)."""
    rules = _load_yaml(path)
    if not isinstance(rules, dict) or not isinstance(rules.get("groups"), list):
        raise ChecklistError(f"{path}: a Prometheus rule file needs a list under 'groups'")
    found = []
    for g, group in enumerate(rules["groups"]):
        if not isinstance(group, dict) or not isinstance(group.get("rules"), list):
            raise ChecklistError(f"{path}: groups.{g} has no list of 'rules'")
        for r, rule in enumerate(group["rules"]):
            if not isinstance(rule, dict) or ("alert" not in rule and "record" not in rule):
                raise ChecklistError(f"{path}: groups.{g}.rules.{r} is neither an 'alert' nor a 'record' rule")
            if "record" in rule:
                continue
            if "expr" not in rule:
                raise ChecklistError(f"{path}: groups.{g}.rules.{r} ({rule['alert']}) has no 'expr'")
            summary = str((rule.get("annotations") or {}).get("summary", ""))
            found.append(
                AlertRule(
                    name=str(rule["alert"]),
                    group=str(group.get("name", f"groups.{g}")),
                    severity=str((rule.get("labels") or {}).get("severity", "")),
                    wait=str(rule.get("for", "0s")),
                    summary=_TEMPLATE.sub(lambda m: f"<{m.group('field').lstrip('$')}>", summary),
                )
            )
    return found


def _load_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ChecklistError(f"{path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ChecklistError(f"{path}: not valid YAML ({exc}); fix the file") from None


# --- the whole checklist -------------------------------------------------------------------------


def find_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: the working directory) holding `_toc.yml`."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    raise ChecklistError(f"no _toc.yml in {here} or above it: run from inside the book's repository")


def gather(
    root: Path | None = None,
    *,
    toc: str = "_toc.yml",
    book: str = "book",
    runbooks: str = "runbooks",
    alerts: str = "deploy/alerts.yml",
) -> Checklist:
    """Everything a release must satisfy, read from the repository at `root` (default: `find_root()`)."""
    root = root or find_root()
    book_dir = root / book
    entries = toc_entries(root / toc)
    pages = tuple(read_page(book_dir, part, file) for part, file in entries)
    parts = tuple(dict.fromkeys(part for part, _ in entries))
    return Checklist(pages, tuple(read_runbooks(root / runbooks)), tuple(read_alerts(root / alerts)), parts)


def read_runbooks(folder: Path) -> list[Runbook]:
    """Every runbook notebook in `folder`, by name."""
    if not folder.is_dir():
        raise ChecklistError(f"{folder} is not a folder of runbook notebooks")
    return [read_runbook(path) for path in sorted(folder.glob("*.ipynb"))]


def lessons_markdown(checklist: Checklist, *, front: str = "Introduction") -> str:
    """The lessons as MyST Markdown, one list per part, each page's title a link to the page.

    Relative `{doc}` targets are made absolute, so the roles resolve from whichever page shows them.
    """
    blocks = []
    for part, pages in checklist.by_part().items():
        lines = [f"**{part or front}**", ""]
        for page in pages:
            lines.append(f"- {{doc}}`/{page.file}`")
            lines += [f"  - {_absolute_docs(item, page.file)}" for item in page.lessons]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _absolute_docs(text: str, file: str) -> str:
    folder = posixpath.dirname(file)

    def absolute(match: re.Match[str]) -> str:
        body = match.group("body")
        inner = re.match(r"(?P<label>.*)<(?P<target>[^>]+)>\s*$", body, re.DOTALL)
        target = inner.group("target") if inner else body
        if target.startswith("/"):
            return match.group(0)
        fixed = "/" + posixpath.normpath(posixpath.join(folder, target))
        return f"{{doc}}`{inner.group('label')}<{fixed}>`" if inner else f"{{doc}}`{fixed}`"

    return _DOC_ROLE.sub(absolute, text)
