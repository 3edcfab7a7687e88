"""Show figures and tables so they render in the built book, offline, and in JupyterLab.

plotly's default renderer emits only `application/vnd.plotly.v1+json`, a type the book builder
(myst-nb) does not render by itself. `show` adds the figure as HTML beside it, and
`BookPlotlyRenderer` teaches myst-nb the plotly type, so a figure reaches the page either way.

The figure builders (`lines`, `scatter`, `bars`, `heatmap`, composed with `overlay` and
`side_by_side`) draw the chart shapes the chapters keep coming back to, so a chapter cell is one
call that says what is plotted against what, as `observe.dashboards.figure()` does for panels.

Explained in: book/chapters/01_mlops_to_llmops.ipynb (and every chapter's figures)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
import plotly.io as pio
from IPython.display import display
from plotly.subplots import make_subplots

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
    text = "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in [list(columns), *rows]
    )
    html = f'<table class="llmops-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    display({"text/html": html, "text/plain": text}, raw=True)


def rows(records: Sequence[Mapping[str, Any]]) -> None:
    """Display rows of dicts as a table, one column per key of the first row (floats to 4
    significant digits, None as "—"; "(none)" when there are no rows)."""
    if not records:
        print("(none)")
        return

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else "—" if value is None else str(value)

    header = list(records[0])
    grid(header, [[cell(record.get(k)) for k in header] for record in records])


# --- figure builders ---------------------------------------------------------------------------

Numbers = Sequence[float]


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, height: int | None, **more: Any) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, **({"height": height} if height else {}))
    fig.update_layout(**more)
    return fig


def lines(
    x: Sequence[Any],
    series: Mapping[str, Numbers],
    *,
    title: str,
    x_title: str,
    y_title: str,
    dashed: Iterable[str] = (),
    markers: bool = True,
    log_x: bool = False,
    height: int | None = None,
) -> go.Figure:
    """One line per named series over the same `x` (a quantity against concurrency, context length …).

    Series named in `dashed` are drawn dashed and without markers: references such as "perfect scaling".
    """
    dashed = set(dashed)
    fig = go.Figure()
    for name, y in series.items():
        reference = name in dashed
        fig.add_scatter(
            x=list(x),
            y=list(y),
            name=name,
            mode="lines" if reference or not markers else "lines+markers",
            line={"dash": "dash"} if reference else {},
        )
    if log_x:
        fig.update_xaxes(type="log", tickvals=list(x))
    return _layout(fig, title, x_title, y_title, height)


def scatter(
    groups: Mapping[str, tuple[Numbers, Numbers, Sequence[str]]],
    *,
    title: str,
    x_title: str,
    y_title: str,
    colour: Numbers | None = None,
    colour_title: str = "",
    log_y: bool = False,
    percent_x: bool = False,
    reference_y: tuple[float, str] | None = None,
    height: int | None = None,
) -> go.Figure:
    """Labelled points, one trace per group: `{name: (xs, ys, labels)}`.

    Args:
        colour: one value per point of a single group, drawn as a colour scale (a third quantity).
        reference_y: a dashed horizontal line at `(y, label)`, e.g. `(1, "no speedup")`.
        percent_x: the x axis is a share (0–1), shown as percent.
    """
    if colour is not None and len(groups) != 1:
        raise ValueError("a colour scale colours the points of one group; draw several groups without it")
    fig = go.Figure()
    for name, (xs, ys, labels) in groups.items():
        marker: dict[str, Any] = {"size": 14}
        if colour is not None:
            marker |= {"color": list(colour), "colorscale": "Viridis", "showscale": True}
            marker |= {"colorbar": {"title": colour_title}}
        fig.add_scatter(
            x=list(xs),
            y=list(ys),
            name=name,
            mode="markers+text",
            text=list(labels),
            textposition="top center",
            marker=marker,
        )
    if reference_y is not None:
        fig.add_hline(y=reference_y[0], line_dash="dash", annotation_text=reference_y[1])
    if log_y:
        fig.update_yaxes(type="log")
    if percent_x:
        fig.update_xaxes(tickformat=".0%")
    return _layout(fig, title, x_title, y_title, height, showlegend=len(groups) > 1)


def bars(
    categories: Sequence[Any],
    series: Mapping[str, Numbers],
    *,
    title: str,
    x_title: str = "",
    y_title: str = "",
    horizontal: bool = False,
    errors: Mapping[str, tuple[Numbers, Numbers]] | None = None,
    height: int | None = None,
) -> go.Figure:
    """Grouped bars: one bar per series in each category (horizontal: categories on the y axis).

    `errors` gives a series its interval as `(lows, highs)`, drawn as error bars around each value.
    """
    fig = go.Figure()
    labels = [str(c) for c in categories]
    for name, values in series.items():
        values = list(values)
        error: dict[str, Any] = {}
        if errors and name in errors:
            lows, highs = errors[name]
            above = [high - value for value, high in zip(values, highs, strict=True)]
            below = [value - low for value, low in zip(values, lows, strict=True)]
            bar = {"type": "data", "symmetric": False, "array": above, "arrayminus": below}
            error = {"error_x" if horizontal else "error_y": bar}
        if horizontal:
            fig.add_bar(x=values, y=labels, name=name, orientation="h", **error)
        else:
            fig.add_bar(x=labels, y=values, name=name, **error)
    return _layout(fig, title, x_title, y_title, height, barmode="group", showlegend=len(series) > 1)


def heatmap(
    x: Sequence[Any],
    y: Sequence[Any],
    z: Sequence[Numbers],
    *,
    title: str,
    x_title: str,
    y_title: str,
    text: Sequence[Sequence[str]] | None = None,
    colour_title: str = "",
    height: int | None = None,
) -> go.Figure:
    """A grid of values, `z[row][column]` for `y[row]` and `x[column]`, each cell labelled by `text`."""
    trace = go.Heatmap(
        x=[str(v) for v in x],
        y=[str(v) for v in y],
        z=[list(row) for row in z],
        colorscale="Blues",
        colorbar={"title": colour_title},
        **({"text": [list(row) for row in text], "texttemplate": "%{text}"} if text is not None else {}),
    )
    return _layout(go.Figure(trace), title, x_title, y_title, height)


def overlay(base: go.Figure, *others: go.Figure) -> go.Figure:
    """`base` with the traces of `others` drawn on it (a fit over measured points, a bound over a curve)."""
    for other in others:
        base.add_traces(list(other.data))
    return base.update_layout(showlegend=len(base.data) > 1)


def side_by_side(*figures: go.Figure, title: str, height: int | None = None) -> go.Figure:
    """Figures as panels of one row, each keeping its traces, title and axis titles."""
    fig = make_subplots(rows=1, cols=len(figures), subplot_titles=[f.layout.title.text or "" for f in figures])
    for col, part in enumerate(figures, start=1):
        for trace in part.data:
            fig.add_trace(trace, row=1, col=col)
        # the panel's own axis settings (titles, log scale, ticks); the subplot keeps its place
        fig.update_xaxes(part.layout.xaxis.to_plotly_json(), row=1, col=col)
        fig.update_yaxes(part.layout.yaxis.to_plotly_json(), row=1, col=col)
    fig.update_layout(title=title, barmode="group", **({"height": height} if height else {}))
    return fig
