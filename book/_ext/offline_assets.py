"""Serve the book's browser code from the built site: plotly.js, MathJax, require.js, widget manager.

By default the pages load MathJax and the Jupyter widget manager from CDNs, and plotly figures
need plotly.js from somewhere: offline (or behind a strict proxy) a reader would get raw TeX and
empty figures. This extension copies each asset into `_static/offline/` of the HTML output and
points the pages at it:

- plotly.min.js from the installed `plotly` package (so it matches the Python side), on pages
  with a figure, before any other script. plotly.js up to 2.x registers itself as an AMD module
  when require.js is already on the page, and `window.Plotly`, which the figures' inline scripts
  call, stays undefined; the 4.x build in plotly 7 sets it either way, so first is simply safe.
- MathJax 3 (`tex-chtml.js`, its fonts and lazily loaded components), require.js and
  `@jupyter-widgets/html-manager` from `book/_vendor/`, installed by scripts/vendor_web_assets.sh
  at the versions locked in book/package-lock.json. The build stops early if they are missing.

Nothing goes into `book/_static/`: jupyter-book adds every script there to every page, and
plotly.min.js (4+ MB) does not belong in git.

Reports that chapters write while they run (Evidently's drift report, 4 MB of inlined scripts)
go to `book/_reports/` (ignored by git, not a source of the book) and are copied to
`_static/reports/` once every page has run; the page shows one in an `<iframe src=...>`. Inlined
in the page instead (`srcdoc`), the report made the page 30 times heavier for every reader and test.
"""

from __future__ import annotations

import json
import shutil
from importlib.resources import files
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError

VENDOR_URL = "offline"  # under the output's _static/ (pydata-sphinx-theme owns _static/vendor/)
REPORTS = "_reports"  # under book/: what chapters wrote; under the output's _static/: `reports`
PLOTLY_JS = Path(str(files("plotly") / "package_data" / "plotly.min.js"))
PLOTLY_DIV_CLASS = "plotly-graph-div"  # class of the div `fig.to_html` writes
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"  # myst-nb's script tag for a widget
MATHJAX_ENTRY = "tex-chtml.js"
# plotly.js follows window resizes only, but the text column also changes width when the page's
# scrollbar appears (after the first figures were drawn) or a sidebar is toggled: without this,
# figures overflow their output box and get a horizontal scrollbar.
FOLLOW_COLUMN_WIDTH_JS = """window.addEventListener("load", () => {
  const observer = new ResizeObserver((entries) => entries.forEach((entry) => Plotly.Plots.resize(entry.target)));
  document.querySelectorAll(".js-plotly-plot").forEach((figure) => observer.observe(figure));
});"""


def _assets(app: Sphinx) -> dict[str, Path]:
    """Map each name under `_static/offline/` to its source file or folder."""
    node_modules = Path(app.srcdir) / "_vendor" / "node_modules"
    return {
        "plotly.min.js": PLOTLY_JS,
        "require.js": node_modules / "requirejs" / "require.js",
        "mathjax": node_modules / "mathjax" / "es5",
        "html-manager": node_modules / "@jupyter-widgets" / "html-manager" / "dist",
    }


def point_config_at_local_assets(app: Sphinx, config: Config) -> None:
    """Replace the CDN URLs of MathJax and the widget manager by local paths (relative to _static)."""
    config.mathjax_path = f"{VENDOR_URL}/mathjax/{MATHJAX_ENTRY}"
    config.nb_ipywidgets_js = {
        f"{VENDOR_URL}/require.js": {},
        # Widgets that are not bundled in embed-amd.js would be fetched from this base URL (a CDN by
        # default); a page-relative base keeps such a request on this site, where it fails visibly.
        f"{VENDOR_URL}/html-manager/embed-amd.js": {"data-jupyter-widgets-cdn": "./"},
    }


def copy_assets(app: Sphinx) -> None:
    """Fail early (before notebooks run) if an asset is missing, else copy all into the output."""
    if app.builder.format != "html":
        return
    missing = [str(source) for source in _assets(app).values() if not source.exists()]
    if missing:
        raise ExtensionError(
            "offline browser assets are missing: "
            + ", ".join(missing)
            + ". Run `bash scripts/vendor_web_assets.sh` from the repository root (plotly.min.js"
            " comes from the `plotly` Python package)."
        )
    target = Path(app.outdir) / "_static" / VENDOR_URL
    for name, source in _assets(app).items():
        if source.is_dir():
            # Source maps and the non-AMD bundles are never loaded by the pages.
            ignore = shutil.ignore_patterns("*.map", "embed.js", "libembed-amd.js")
            shutil.copytree(source, target / name, ignore=ignore, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def add_page_assets(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    """Load plotly.js on pages with a figure, and point the widget manager at its own files."""
    body = context.get("body", "")
    if PLOTLY_DIV_CLASS in body:
        app.add_js_file(f"{VENDOR_URL}/plotly.min.js", priority=100)  # first: see the module docstring
        app.add_js_file(None, body=FOLLOW_COLUMN_WIDTH_JS)
    if WIDGET_VIEW_MIME in body:
        # embed-amd.js fetches its icon fonts next to the URL of its AMD module id, which require.js
        # would otherwise resolve against the page's folder (404). require.js takes a global `require`
        # defined before it loads as its configuration.
        manager = context["pathto"](f"_static/{VENDOR_URL}/html-manager", 1)
        config = json.dumps({"paths": {"@jupyter-widgets/html-manager/dist": manager}})
        app.add_js_file(None, body=f"var require = {config};", priority=499)  # require.js: 500


def copy_reports(app: Sphinx, exception: Exception | None) -> None:
    """Copy the reports the chapters wrote into the output's `_static/reports/`."""
    reports = Path(app.srcdir) / REPORTS
    if exception is None and app.builder.format == "html" and reports.is_dir():
        shutil.copytree(reports, Path(app.outdir) / "_static" / "reports", dirs_exist_ok=True)


def resolve_toc_from_working_dir(app: Sphinx, config: Config) -> None:
    """Make `--toc _toc.yml` mean the file in the working directory, as jupyter-book's CLI checks.

    Not an asset, but the same build command needs it: jupyter-book 1.x passes a relative `--toc`
    on unchanged, and sphinx-external-toc then looks for it in the source folder (book/).
    """
    toc = Path(config.external_toc_path)
    if not toc.is_absolute() and not (Path(app.srcdir) / toc).exists() and toc.exists():
        config.external_toc_path = toc.resolve().as_posix()


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", resolve_toc_from_working_dir, priority=800)  # sphinx-external-toc reads it at 900
    # After myst-nb and sphinx.ext.mathjax have registered their config values, before they use them.
    app.connect("config-inited", point_config_at_local_assets, priority=900)
    app.connect("builder-inited", copy_assets)
    app.connect("html-page-context", add_page_assets)
    app.connect("build-finished", copy_reports)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
