"""The built book is self-contained: its pages load figures, math and widgets from the site itself.

A reader offline (or behind a strict proxy) must see every figure and equation, so no page may load
code or styles from the internet. These tests read the HTML that `make book` built; the browser
test (test_book_browser.py) checks that the same pages really draw.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup

from llmops_lib.viz import PLOTLY_MIME

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
# make book builds with --path-output book/, so the output sits in book/_build.
BUILD = ROOT / "book" / "_build"
HTML = BUILD / "html"
EXECUTED = BUILD / "jupyter_execute"  # the notebooks as the build ran them

FIGURE_DIV = "div.plotly-graph-div"
MATH = ".math"  # Sphinx's class for inline and display math, before MathJax typesets it
# <link rel=...> values that make the browser fetch the target.
FETCHING_LINK_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "preconnect", "dns-prefetch", "icon"}
# A URL in inline code that points at code or styles (a script, a stylesheet, a loader's base path).
CODE_URL = re.compile(r"""https?://[^\s"'`<>()]+?(?:\.m?js|\.css|/)(?=[\s"'`?#)<]|$)""")
# A MyST role the build left as text ({cite}`key` shows as "{cite}" beside the key in <code>).
RAW_ROLE = re.compile(r"\{(?:cite|term|ref|numref|doc|eq|glue|download|abbr)(?::[\w-]+)*\}")


def is_external(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") or url.startswith("//")


@pytest.fixture(scope="session")
def pages() -> dict[str, BeautifulSoup]:
    """Every built page by its path relative to the HTML root (theme template fragments excluded)."""
    if not (HTML / "index.html").is_file():
        pytest.fail(f"build the book first: make book (no {HTML / 'index.html'})")
    return {
        path.relative_to(HTML).as_posix(): BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
        for path in sorted(HTML.rglob("*.html"))
        if path.relative_to(HTML).parts[0] not in ("_static", "_sources")
    }


def chapter_pages(pages: dict[str, BeautifulSoup]) -> dict[str, BeautifulSoup]:
    return {name: page for name, page in pages.items() if name.startswith("chapters/")}


def script_srcs(page: BeautifulSoup) -> list[str]:
    return [script["src"] for script in page.find_all("script", src=True)]


def local_target(page_name: str, url: str) -> Path:
    """The file a relative URL on `page_name` points at."""
    return (HTML / page_name).parent / urlsplit(url).path


def figure_outputs(notebook: Path) -> int:
    """How many outputs of an executed notebook are plotly figures (shown, not removed by a tag)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return sum(
        PLOTLY_MIME in data or "plotly-graph-div" in "".join(data.get("text/html", ""))
        for cell in cells
        if not {"remove-output", "remove-cell"} & set(cell.get("metadata", {}).get("tags", []))
        for data in (output.get("data", {}) for output in cell.get("outputs", []))
    )


def test_every_figure_of_every_chapter_is_on_its_page(pages: dict[str, BeautifulSoup]) -> None:
    for name, page in chapter_pages(pages).items():
        notebook = EXECUTED / Path(name).with_suffix(".ipynb")
        if notebook.is_file():
            expected = figure_outputs(notebook)
            drawn = len(page.select(FIGURE_DIV))
            assert drawn == expected, f"{name}: {expected} figures in the executed notebook, {drawn} on the page"


def test_figure_pages_load_plotly_from_the_site_before_require_js(pages: dict[str, BeautifulSoup]) -> None:
    figure_pages = {name: page for name, page in pages.items() if page.select(FIGURE_DIV)}
    assert figure_pages, "no page has a plotly figure: the book's figures are missing"
    for name, page in figure_pages.items():
        srcs = script_srcs(page)
        plotly = [i for i, src in enumerate(srcs) if Path(urlsplit(src).path).name.startswith("plotly")]
        assert len(plotly) == 1, f"{name} loads plotly.js {len(plotly)} times: {srcs}"
        src = srcs[plotly[0]]
        assert not is_external(src) and local_target(name, src).is_file(), f"{name}: plotly.js not on the site: {src}"
        # After require.js, plotly.js registers as an AMD module and window.Plotly stays undefined.
        require = [i for i, src in enumerate(srcs) if "require" in Path(urlsplit(src).path).name]
        assert all(plotly[0] < i for i in require), f"{name}: require.js is loaded before plotly.js: {srcs}"
        for figure in page.select(FIGURE_DIV):
            drawing = figure.find_next("script")
            assert drawing and figure["id"] in drawing.text, f"{name}: figure {figure['id']} has no drawing script"


def test_no_page_loads_code_or_styles_from_the_internet(pages: dict[str, BeautifulSoup]) -> None:
    problems = []
    for name, page in pages.items():
        for tag in page.find_all(["script", "img", "iframe"], src=True):
            if is_external(tag["src"]):
                problems.append(f"{name}: <{tag.name} src={tag['src']}>")
        for link in page.find_all("link", href=True):
            if FETCHING_LINK_RELS & set(link.get("rel", [])) and is_external(link["href"]):
                problems.append(f"{name}: <link rel={' '.join(link['rel'])} href={link['href']}>")
        for inline in page.find_all(["script", "style"], src=False):
            if "json" not in inline.get("type", ""):  # data, not code
                problems += [f"{name}: inline <{inline.name}> loads {url}" for url in CODE_URL.findall(inline.text)]
    assert not problems, "pages reach the internet:\n" + "\n".join(problems)


@pytest.mark.usefixtures("pages")  # the build exists
def test_no_stylesheet_imports_from_the_internet() -> None:
    """Theme CSS could pull web fonts (Google Fonts and the like) with @import or url()."""
    remote = re.compile(r"""(?:@import\s*(?:url\()?|url\()\s*["']?(?:https?:)?//""")
    offenders = [
        css.relative_to(HTML).as_posix() for css in sorted(HTML.rglob("*.css")) if remote.search(css.read_text())
    ]
    assert not offenders, f"stylesheets that fetch from the internet: {offenders}"


def test_math_pages_load_the_local_mathjax_with_its_fonts(pages: dict[str, BeautifulSoup]) -> None:
    math_pages = {name: page for name, page in pages.items() if page.select(MATH)}
    assert math_pages, "no page has math: the MathJax checks need one (book/intro.md defines TPOT)"
    for name, page in math_pages.items():
        mathjax = [src for src in script_srcs(page) if "mathjax" in src.lower()]
        assert len(mathjax) == 1, f"{name} loads MathJax {len(mathjax)} times: {mathjax}"
        entry = local_target(name, mathjax[0])
        assert not is_external(mathjax[0]) and entry.is_file(), f"{name}: MathJax not served locally: {mathjax[0]}"
        # tex-chtml.js fetches its fonts relative to its own location.
        assert (entry.parent / "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff").is_file()


def test_tables_printed_by_cells_are_real_tables(pages):
    """A Markdown table a cell prints stays text in the book (CommonMark outputs): use viz.grid."""
    for name, page in chapter_pages(pages).items():
        raw = [
            p.get_text()[:80]
            for p in page.select("div.cell_output p")
            if sum(line.startswith("|") and line.rstrip().endswith("|") for line in p.get_text().splitlines()) >= 2
        ]
        assert not raw, f"{name}: a cell printed a Markdown table that was not rendered: {raw[0]!r}"


def test_no_page_shows_a_raw_role_or_an_unresolved_reference(pages: dict[str, BeautifulSoup]) -> None:
    """The build's -W -n should refuse these; this reads what a reader would see, whatever the build said.

    Sphinx leaves a cross-reference it could not resolve ({term}, {ref}, {numref}, {doc}) as its bare
    text, still classed `xref`, outside any link; sphinxcontrib-bibtex drops a citation key it cannot
    find, leaving a `bibtex-citation` with no link in it.
    """
    problems = []
    for name, page in pages.items():
        body = page.select_one("main") or page
        prose = BeautifulSoup(str(body), "html.parser")
        for code in prose.select("pre, script, style, div.cell_input, .math"):  # code and math hold braces legitimately
            code.decompose()
        problems += [f"{name}: raw role {match!r} in the text" for match in RAW_ROLE.findall(prose.get_text(" "))]
        for xref in body.select(".xref"):
            if xref.name != "a" and xref.find_parent("a") is None:  # the link itself, or inside one
                problems.append(f"{name}: unresolved {' '.join(xref.get('class', []))} {xref.get_text()!r}")
        for citation in body.select(".bibtex-citation"):
            if citation.find("a") is None:
                problems.append(f"{name}: unresolved citation {citation.get_text()!r}")
    assert not problems, "unresolved roles on built pages:\n" + "\n".join(problems)
