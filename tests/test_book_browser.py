"""A real browser draws the built book's figures and math, fetching nothing from the internet.

test_book_html.py checks what the pages reference; this opens them in headless Debian chromium,
served over HTTP from 127.0.0.1 the way a reader's browser gets them, and checks what the scripts
actually did (plotly drew its SVG, MathJax typeset the math) and what the page requested.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "book" / "_build" / "html"  # make book builds with --path-output book/
FIGURE_DIV = "div.plotly-graph-div"
MATH = ".math"
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


def first_page_with(selector: str) -> str:
    """The first built chapter or page (chapters first) whose static HTML has `selector`."""
    pages = sorted(HTML.glob("chapters/*.html")) + sorted(HTML.glob("*.html"))
    for page in pages:
        if BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser").select_one(selector):
            return page.relative_to(HTML).as_posix()
    pytest.fail(f"no built page has {selector!r} to check in a browser")


def page_requests(netlog: Path, site: str) -> list[str]:
    """URLs the page requested: its own load and every request it initiated."""
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start_job
        and "url" in event.get("params", {})
        and (event["params"].get("initiator") == site or event["params"].get("request_type") == "main frame")
    ]


@pytest.fixture(scope="module")
def visit(chromium: str, site: str, tmp_path_factory: pytest.TempPathFactory) -> Opener:
    """Open a page in chromium (once per page) and return what it drew and requested."""
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
                    f"--user-data-dir={out / name}",
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
            visits[page] = Visit(BeautifulSoup(done.stdout, "html.parser"), screenshot, page_requests(netlog, site))
        return visits[page]

    return open_page


def test_plotly_draws_every_figure(visit: Opener, record_property: Recorder) -> None:
    page = first_page_with(FIGURE_DIV)
    seen = visit(page)
    record_property("screenshot", str(seen.screenshot))
    print(f"screenshot of {page}: {seen.screenshot}")
    figures = seen.dom.select(FIGURE_DIV)
    assert figures, f"{page}: no figure in the browser's DOM (screenshot: {seen.screenshot})"
    for figure in figures:
        # plotly.js creates svg.main-svg when it draws; the static HTML has an empty div.
        drawn = figure.select_one("svg.main-svg")
        assert drawn, f"{page}: figure {figure.get('id')} not drawn (screenshot: {seen.screenshot})"


def test_mathjax_typesets_every_formula(visit: Opener, record_property: Recorder) -> None:
    page = first_page_with(MATH)
    seen = visit(page)
    record_property("screenshot", str(seen.screenshot))
    formulas = seen.dom.select(MATH)
    assert formulas and all(f.select_one("mjx-container") for f in formulas), (
        f"{page}: MathJax did not typeset every formula (screenshot: {seen.screenshot})"
    )
    assert not seen.dom.select("mjx-merror"), f"{page}: MathJax reported a TeX error"


@pytest.mark.parametrize("selector", [FIGURE_DIV, MATH])
def test_pages_fetch_everything_from_the_site(visit: Opener, site: str, selector: str) -> None:
    page = first_page_with(selector)
    requests = visit(page).requests
    external = [url for url in requests if not url.startswith(f"{site}/")]
    assert not external, f"{page} requested from outside the site: {external}"
    # And the assets did come from the site (so the checks above were not vacuous).
    expected = "/plotly.min.js" if selector == FIGURE_DIV else "/fonts/woff-v2/"
    assert any(expected in url for url in requests), f"{page} never requested {expected} from the site: {requests}"
