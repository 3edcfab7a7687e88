"""Show figures and tables so they render in the built book, offline, and in JupyterLab.

plotly's default renderer emits only `application/vnd.plotly.v1+json`, a type the book builder
(myst-nb) does not render by itself. `show` adds the figure as HTML beside it, and
`BookPlotlyRenderer` teaches myst-nb the plotly type, so a figure reaches the page either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
import plotly.io as pio
from IPython.display import display

if TYPE_CHECKING:
    from docutils import nodes
    from myst_nb.core.render import MimeData, NbElementRenderer

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _figure_div(fig: go.Figure | dict[str, Any]) -> str:
    """The figure's div and the script that draws it, without plotly.js (each page loads it once)."""
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, validate=False)


def show(fig: go.Figure) -> None:
    """Display `fig` as one output that both the book and JupyterLab render.

    The bundle holds two representations of the same figure:

    - `text/html`: the figure's div and drawing script, *without* plotly.js. The book loads
      plotly.js from its own static files (see `book/_ext/offline_assets.py`), so pages stay small
      and need no internet.
    - `application/vnd.plotly.v1+json`: the figure as data, which JupyterLab and VS Code prefer
      over `text/html` and draw with their own interactive renderer.

    Args:
        fig: the figure to display.
    """
    display({"text/html": _figure_div(fig), PLOTLY_MIME: json.loads(fig.to_json())}, raw=True)


class BookPlotlyRenderer:
    """myst-nb plugin for plotly figure data, registered in pyproject.toml (`myst_nb.mime_renderers`).

    myst-nb renders every type in an output before it picks one, and warns about each type it does
    not know, which fails the `-W` book build even when the output also has `text/html`. This draws
    the plotly type as the same HTML as `show`, ranked just after `text/html`: outputs of `show` keep
    their `text/html`, and a plain `fig.show()` still appears in the book instead of vanishing.
    """

    mime_priority_overrides = [("html", PLOTLY_MIME, 35)]  # myst-nb ranks text/html at 30

    @staticmethod
    def handle_mime(renderer: NbElementRenderer, data: MimeData, inline: bool) -> list[nodes.Element] | None:
        if data.mime_type != PLOTLY_MIME:
            return None  # myst-nb renders every other type itself
        from docutils import nodes  # only the book build has (and needs) docutils

        return [nodes.raw("", _figure_div(data.content), format="html")]


def table(rows: dict[str, object]) -> None:
    """Display a two-column key/value table as HTML (a Markdown table with no header row is not
    parsed as a table by myst-nb), with a plain-text form for terminals."""
    from html import escape

    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in rows.items())
    width = max((len(str(k)) for k in rows), default=0)
    text = "\n".join(f"{k!s:<{width}}  {v}" for k, v in rows.items())
    display({"text/html": f'<table class="llmops-table">{body}</table>', "text/plain": text}, raw=True)


def grid(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Display a table with a header row as HTML, with a plain-text form for terminals.

    A Markdown table printed by a cell does not become a table in the book: myst-nb renders
    Markdown *outputs* as CommonMark, which has no tables.
    """
    from html import escape

    rows = [[str(cell) for cell in row] for row in rows]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    widths = [max(len(str(c)), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    text = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in [list(columns), *rows])
    html = f'<table class="llmops-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    display({"text/html": html, "text/plain": text}, raw=True)
