"""The book covers the whole guide, and a reader can find every page and every lab.

book/guide_map.yml maps each item of the guide's eight sections to the pages that cover it; these
tests hold it against _toc.yml and the page sources (no build needed): every mapped page is in the
table of contents and exists, every page of the table of contents covers an item or says why not,
how_to_read shows every mapped page, and every lab is linked from a chapter page.
"""

from __future__ import annotations

import json
import posixpath
import re
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
SECTIONS = [f"{number:02d}" for number in range(1, 9)]  # the guide's eight sections, 01 to 08
# A {doc} role (`{doc}`target`` or `{doc}`title <target>``) or a Markdown link `[text](target)`.
DOC_ROLE = re.compile(r"\{doc\}`(?:[^`<]*<)?([^`<>]+)>?`")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def toc_pages(entries: list[dict] | None = None) -> list[str]:
    """Every `file:` of _toc.yml, the root first, in reading order."""
    if entries is None:
        toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
        return [toc["root"], *toc_pages([chapter for part in toc["parts"] for chapter in part["chapters"]])]
    pages = []
    for entry in entries:
        if "file" in entry:
            pages.append(entry["file"])
        pages += toc_pages(entry.get("sections", []))
    return pages


@cache
def guide_map() -> dict:
    return yaml.safe_load((BOOK / "guide_map.yml").read_text())


def mapped_pages() -> set[str]:
    return {page for section in guide_map()["sections"] for item in section["items"] for page in item["pages"]}


def source(page: str) -> Path | None:
    """The file of a toc page (book/<page>.md or .ipynb), or None."""
    return next((path for suffix in (".md", ".ipynb") if (path := BOOK / f"{page}{suffix}").is_file()), None)


def prose(page: str) -> str:
    """What a page's author wrote: a Markdown page whole, a notebook's Markdown cells."""
    path = source(page)
    assert path is not None, f"{page} has no source"
    if path.suffix == ".md":
        return path.read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")


def link_targets(page: str) -> set[str]:
    """The pages a page links to with {doc} roles and Markdown links, as toc names (no suffix)."""
    targets = set()
    for target in DOC_ROLE.findall(prose(page)) + MARKDOWN_LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):  # http:, mailto: ...
            continue
        target = target.split("#")[0].removesuffix(".ipynb").removesuffix(".md").removesuffix(".html")
        base = "" if target.startswith("/") else posixpath.dirname(page)
        targets.add(posixpath.normpath(posixpath.join(base, target.lstrip("/"))))
    return targets


def test_the_map_has_the_guide_s_eight_sections_in_order_each_with_items() -> None:
    sections = guide_map()["sections"]
    assert [section["section"][:2] for section in sections] == SECTIONS
    for section in sections:
        assert section["items"], f"section {section['section']} has no items"
        for item in section["items"]:
            assert item["item"].strip() and item["pages"], f"{section['section']}: an item without pages: {item}"


def test_every_mapped_page_is_in_the_table_of_contents_and_exists() -> None:
    toc = set(toc_pages())
    assert not mapped_pages() - toc, f"mapped pages missing from _toc.yml: {sorted(mapped_pages() - toc)}"
    missing = sorted(page for page in toc if source(page) is None)
    assert not missing, f"pages of _toc.yml with no book/<page>.md or .ipynb: {missing}"


def test_every_page_of_the_toc_covers_an_item_or_says_why_not() -> None:
    """A page is mapped, or front or back matter, or a part opener, or a lab; no stale entry either way."""
    toc = toc_pages()
    unmapped = {name: set(guide_map()[name] or []) for name in ("front_matter", "part_openers", "back_matter")}
    for name, pages in unmapped.items():
        assert pages <= set(toc), f"{name} lists pages not in _toc.yml: {sorted(pages - set(toc))}"
    explained = mapped_pages().union(*unmapped.values())
    orphans = [page for page in toc if page not in explained and not page.startswith("labs/")]
    assert not orphans, (
        f"pages of _toc.yml that cover no item of book/guide_map.yml and are not listed as matter: {orphans}"
    )


def test_how_to_read_links_every_mapped_page() -> None:
    """The reader sees the map: the guide's sections table on how_to_read links every page that covers an item."""
    shown = link_targets("how_to_read") | {"intro", "how_to_read"}  # {ref}`intro`, and the page itself
    assert not mapped_pages() - shown, f"how_to_read does not link {sorted(mapped_pages() - shown)}"


@pytest.mark.parametrize("lab", [page for page in toc_pages() if page.startswith("labs/")])
def test_every_lab_is_linked_from_a_chapter_page(lab: str) -> None:
    """A lab is reached from the page that motivates it, not only from the table of contents."""
    chapters = [page for page in toc_pages() if page.startswith("chapters/") and source(page) is not None]
    assert any(lab in link_targets(page) for page in chapters), f"no chapter page links {lab} (a {{doc}} link)"


@pytest.mark.parametrize(
    "text, page, expected",
    [
        ("see {doc}`/labs/a_lab`", "chapters/x/y", {"labs/a_lab"}),
        ("see {doc}`the lab </labs/a_lab>`", "chapters/x/y", {"labs/a_lab"}),
        ("see [the lab](../../labs/a_lab.ipynb)", "chapters/x/y", {"labs/a_lab"}),
        ("see {doc}`y` and [web](https://example.org/labs/a_lab)", "chapters/x/z", {"chapters/x/y"}),
    ],
)
def test_link_targets_reads_both_link_forms(
    monkeypatch: pytest.MonkeyPatch, text: str, page: str, expected: set[str]
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "prose", lambda _page: text)
    assert link_targets(page) == expected
