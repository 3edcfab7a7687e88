"""A real browser draws the built book's figures and math, fetching nothing from the internet.

test_book_html.py checks what the pages reference; this opens every page of the table of contents
(_toc.yml: the root page, every chapter and part index in every sub-folder, the labs, the reference
pages and the general index) in headless Debian chromium, served over HTTP from 127.0.0.1 the way a
reader's browser gets them, with every other host unresolvable, and checks what the scripts actually
did (plotly drew every figure, MathJax typeset every formula, a framed report drew itself), what each
page requested (nothing but the site), and that every reference and link on it leads somewhere.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from bs4 import BeautifulSoup
from test_book_html import RAW_ROLE  # a MyST role left as text: one definition for both book tests
from test_book_map import toc_pages  # the pages of _toc.yml, in reading order

pytestmark = [pytest.mark.browser, pytest.mark.book]

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "book" / "_build" / "html"  # make book builds with --path-output book/
FIGURE_DIV = "div.plotly-graph-div"
# What plotly.js draws for a trace inside its svg.main-svg: a group per trace (scatter, bar,
# histogram: `g.trace`), a heatmap's image group (`g.hm`), a table (`g.table`). An empty figure, or
# one whose data failed to draw, has the axes but none of these.
DRAWN_TRACE = "g.trace, g.hm, g.table"
MATH = ".math"
# A frame showing a file of the site (the drift report of quality_assurance, drawn by its own scripts).
FRAME = "iframe[src]"
# Sphinx's own pages outside the table of contents, and index.html, which only redirects to the root page.
GENERATED_PAGES = {"index.html", "genindex.html", "search.html", "py-modindex.html"}
# The initiator chromium logs for its own calls (updates, accounts); a page's requests carry its origin.
BROWSER_OWN = "not an origin"
# Where a reader could see a MyST role left as text: not in code, math or scripts, which hold braces.
NOT_PROSE = "pre, code, script, style, div.cell_input, .math, mjx-container"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    # Chromium itself still calls home (updates, accounts); resolve no host but the local server,
    # so nothing leaves the machine. Those calls are the browser's, not the page's: not counted.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--window-size=1280,1600",
    "--virtual-time-budget=10000",  # let scripts, fonts and MathJax finish before the dump
]


@dataclass
class Visit:
    """What chromium made of one page."""

    dom: BeautifulSoup  # the DOM after the page's scripts ran
    screenshot: Path
    requests: list[str]  # every URL the page asked for (from chromium's network log)


Opener = Callable[[str], Visit]  # the `visit` fixture: page path -> Visit
Recorder = Callable[[str, object], None]  # pytest's `record_property`


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output for failures, not for every file served."""


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        reason = "install chromium: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The built book over HTTP on 127.0.0.1, on a free port."""
    if not (HTML / "index.html").is_file():
        pytest.fail(f"build the book first: make book (no {HTML / 'index.html'})")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@functools.cache
def book_pages() -> list[str]:
    """Every page a reader can open (paths relative to the HTML root): each page of the table of
    contents, which the build must have written, then any other page it wrote in any sub-folder (not
    Sphinx's generated pages, nor the theme's folders `_static`, `_sources`, ...)."""
    toc = [f"{page}.html" for page in toc_pages()]
    missing = [page for page in toc if not (HTML / page).is_file()]
    assert not missing, f"pages of _toc.yml the build did not write (rebuild the book): {missing}"
    built = [page.relative_to(HTML).as_posix() for page in sorted(HTML.rglob("*.html"))]
    others = [
        p for p in built if p not in GENERATED_PAGES and p not in toc and not any(s[0] == "_" for s in p.split("/"))
    ]
    pages = toc + others
    nested = [page for page in pages if page.startswith("chapters/") and page.count("/") >= 2]
    assert nested, f"no chapter page in a sub-folder of {HTML / 'chapters'}: is the book built?"
    return pages


@functools.cache  # every test reads the same built pages; none changes them
def static_html(page: str) -> BeautifulSoup:
    """The page as built, before any script ran."""
    return BeautifulSoup((HTML / page).read_text(encoding="utf-8"), "html.parser")


def pages_with(selector: str) -> list[str]:
    """Every book page whose static HTML has `selector`; at least one, or the check would be vacuous."""
    found = [page for page in book_pages() if static_html(page).select_one(selector)]
    if not found:
        pytest.fail(f"no built page has {selector!r} to check in a browser")
    return found


def page_requests(netlog: Path) -> list[str]:
    """URLs the page requested: its own load, every frame it loaded and every request any origin
    initiated (the page's, a frame's); only chromium's own calls are left out."""
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start_job
        and "url" in event.get("params", {})
        and (
            event["params"].get("initiator") != BROWSER_OWN
            or event["params"].get("request_type") in ("main frame", "sub frame")
        )
    ]


@pytest.fixture(scope="module")
def visit(chromium: str, site: str, tmp_path_factory: pytest.TempPathFactory) -> Opener:
    """Open a page in chromium (once per page) and return what it drew and requested.

    The visits share one browser profile, as a reader's tabs do: plotly.js (4+ MB) and MathJax are
    compiled once and then come from chromium's caches, which still log every request the page makes.
    """
    out = tmp_path_factory.mktemp("browser")
    visits: dict[str, Visit] = {}

    def open_page(page: str) -> Visit:
        if page not in visits:
            name = page.replace("/", "_").removesuffix(".html")
            screenshot, netlog = out / f"{name}.png", out / f"{name}.netlog.json"
            done = subprocess.run(
                [
                    chromium,
                    *CHROMIUM_FLAGS,
                    f"--user-data-dir={out / 'profile'}",
                    f"--log-net-log={netlog}",
                    f"--screenshot={screenshot}",
                    "--dump-dom",
                    f"{site}/{page}",
                ],
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert done.returncode == 0 and screenshot.is_file(), f"chromium failed on {page}:\n{done.stderr[-3000:]}"
            visits[page] = Visit(BeautifulSoup(done.stdout, "html.parser"), screenshot, page_requests(netlog))
        return visits[page]

    return open_page


def test_plotly_draws_every_figure_of_every_page(visit: Opener, record_property: Recorder) -> None:
    problems = []
    for page in pages_with(FIGURE_DIV):
        seen = visit(page)
        record_property(f"screenshot {page}", str(seen.screenshot))
        built = [figure["id"] for figure in static_html(page).select(FIGURE_DIV)]
        in_browser = {figure.get("id"): figure for figure in seen.dom.select(FIGURE_DIV)}
        for figure_id in built:
            # plotly.js fills the built page's empty div with svg.main-svg and a group per trace.
            svg = in_browser[figure_id].select_one("svg.main-svg") if figure_id in in_browser else None
            if svg is None or not svg.select_one(DRAWN_TRACE):
                problems.append(f"{page}: figure {figure_id} not drawn (screenshot: {seen.screenshot})")
    assert not problems, "figures a real browser did not draw:\n" + "\n".join(problems)


def test_mathjax_typesets_every_formula_of_every_page(visit: Opener, record_property: Recorder) -> None:
    problems = []
    for page in pages_with(MATH):
        seen = visit(page)
        record_property(f"screenshot {page}", str(seen.screenshot))
        formulas = seen.dom.select(MATH)
        if not formulas or not all(f.select_one("mjx-container") for f in formulas):
            problems.append(f"{page}: MathJax did not typeset every formula (screenshot: {seen.screenshot})")
        if seen.dom.select("mjx-merror"):
            problems.append(f"{page}: MathJax reported a TeX error (screenshot: {seen.screenshot})")
    assert not problems, "\n".join(problems)


def visible_text(page: BeautifulSoup) -> str:
    """What a reader can read on the page: its text outside scripts and styles."""
    page = BeautifulSoup(str(page), "html.parser")
    for code in page.select("script, style, noscript, template"):
        code.decompose()
    return " ".join(page.get_text(" ").split())


def test_every_frame_loads_its_report_from_the_site_and_the_report_draws(visit: Opener, site: str) -> None:
    """A framed report (Evidently's) ships as a file of the site whose built HTML has no text at all: its
    scripts draw everything. The page must request it from the site, and opened on its own it must draw."""
    problems = []
    for page in pages_with(FRAME):
        for frame in static_html(page).select(FRAME):
            report = posixpath.normpath(posixpath.join(posixpath.dirname(page), frame["src"]))
            if f"{site}/{report}" not in visit(page).requests:
                problems.append(f"{page}: the frame's {report} was never requested from the site")
            elif not (HTML / report).is_file() or not visible_text(visit(report).dom):
                problems.append(f"{page}: the frame's {report} drew nothing (screenshot: {visit(report).screenshot})")
    assert not problems, "\n".join(problems)


def test_every_page_fetches_everything_from_the_site(visit: Opener, site: str) -> None:
    """No page asks any host but the site's (other hosts do not resolve: such a request would fail)."""
    external = {}
    for page in book_pages():
        requests = visit(page).requests
        assert f"{site}/{page}" in requests, f"{page}: its own load is not in the network log: {requests}"
        if outside := [url for url in requests if not url.startswith(f"{site}/")]:
            external[page] = outside
    assert not external, f"pages requested from outside the site: {external}"


def anchors(root: BeautifulSoup) -> set[str]:
    """The fragments a link can jump to on a page: its ids and named anchors."""
    return {tag["id"] for tag in root.find_all(id=True)} | {
        tag["name"] for tag in root.find_all("a", attrs={"name": True})
    }


@functools.cache
def built_anchors(page: str) -> set[str]:
    return anchors(static_html(page))


def link_target(page: str, href: str) -> tuple[str, str] | None:
    """The site file and fragment a link of `page` points at (None: a link out of the site, the
    reader's to follow, never fetched by the page)."""
    parts = urlsplit(href)
    if parts.scheme or parts.netloc:
        return None
    path = posixpath.normpath(posixpath.join(posixpath.dirname(page), unquote(parts.path))) if parts.path else page
    return path, unquote(parts.fragment)


def prose_text(root: BeautifulSoup) -> str:
    """What a reader reads in `root`: its text outside code, math and scripts (which hold braces)."""
    hidden = {id(tag) for tag in root.select(NOT_PROSE)}
    return " ".join(text for text in root.find_all(string=True) if not any(id(p) in hidden for p in text.parents))


def test_every_reference_on_every_page_resolves(visit: Opener) -> None:
    """What a reader meets after the scripts ran: a cross-reference Sphinx could not resolve stays
    classed `xref` outside any link; a MyST role it did not parse stays as text ({ref}`...`, read on
    the built page: scripts do not write roles); a link (in the text, the sidebar, the general index)
    may point at a file or an anchor the build did not write."""
    problems = []
    for page in book_pages():
        seen = visit(page).dom
        main = static_html(page).select_one("main") or static_html(page)
        problems += [f"{page}: MyST role left as text: {role!r}" for role in RAW_ROLE.findall(prose_text(main))]
        for xref in seen.select(".xref"):
            if xref.name != "a" and xref.find_parent("a") is None:  # the link itself, or inside one
                problems.append(f"{page}: unresolved {' '.join(xref.get('class', []))} {xref.get_text()!r}")
        here: set[str] | None = None  # the anchors of the page as drawn, collected on first use
        for link in seen.select("a[href]"):
            if (target := link_target(page, link["href"])) is None:
                continue
            path, fragment = target
            text = link.get_text(" ", strip=True)[:40]
            if path.startswith("..") or not (HTML / path).exists():
                problems.append(f"{page}: link {text!r} leads to {link['href']}, not a file of the site")
            elif fragment and path.endswith(".html"):
                if path == page and here is None:
                    here = anchors(seen) | built_anchors(page)
                if fragment not in (here if path == page else built_anchors(path)):
                    problems.append(f"{page}: link {text!r} leads to {link['href']}: no #{fragment} on {path}")
    assert not problems, "unresolved references and dead links on built pages:\n" + "\n".join(problems)


def test_every_image_draws_from_the_site(visit: Opener, site: str) -> None:
    """An <img> (a cell's PNG output, a logo) is a file of the site that the page requested."""
    images = [(page, img["src"]) for page in book_pages() for img in visit(page).dom.select("main img[src]")]
    if not images:
        pytest.skip("no page of this build has an image (the figures are plotly's, checked above)")
    problems = []
    for page, src in images:
        if src.startswith("data:image/"):
            continue  # inline: drawn from the page itself
        path = posixpath.normpath(posixpath.join(posixpath.dirname(page), unquote(urlsplit(src).path)))
        requested = {url.split("?")[0] for url in visit(page).requests}
        if f"{site}/{path}" not in requested or not (HTML / path).is_file() or not (HTML / path).stat().st_size:
            problems.append(f"{page}: image {src} not loaded from the site (screenshot: {visit(page).screenshot})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("selector, asset", [(FIGURE_DIV, "/plotly.min.js"), (MATH, "/fonts/woff-v2/")])
def test_figure_and_math_assets_come_from_the_site(visit: Opener, site: str, selector: str, asset: str) -> None:
    """The pages did load plotly.js and MathJax's fonts, from the site: the checks above are not vacuous."""
    for page in pages_with(selector):
        requests = visit(page).requests
        assert any(url.startswith(f"{site}/") and asset in url for url in requests), (
            f"{page} never requested {asset} from the site: {requests}"
        )
