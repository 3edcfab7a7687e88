"""Figure builders (viz): each draws the traces it was given, with the axes it was told."""

from __future__ import annotations

import pytest

from llmops_lib import viz


def test_lines_draw_one_trace_per_series_with_references_dashed():
    fig = viz.lines(
        [1, 2, 4],
        {"measured": [10, 18, 30], "perfect": [10, 20, 40]},
        dashed=["perfect"],
        log_x=True,
        title="t",
        x_title="x",
        y_title="y",
    )
    assert [t.name for t in fig.data] == ["measured", "perfect"]
    assert list(fig.data[0].y) == [10, 18, 30] and fig.data[0].mode == "lines+markers"
    assert fig.data[1].line.dash == "dash" and fig.data[1].mode == "lines"
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == [1, 2, 4]
    assert (fig.layout.title.text, fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("t", "x", "y")


def test_scatter_labels_points_and_colours_one_group_only():
    fig = viz.scatter(
        {"types": ([1.0, 2.0], [0.1, 0.01], ["Q8_0", "Q2_K"])},
        colour=[30.0, 40.0],
        colour_title="tok/s",
        log_y=True,
        reference_y=(1, "no speedup"),
        title="t",
        x_title="x",
        y_title="y",
    )
    (trace,) = fig.data
    assert list(trace.text) == ["Q8_0", "Q2_K"] and list(trace.marker.color) == [30.0, 40.0]
    assert fig.layout.yaxis.type == "log" and len(fig.layout.shapes) == 1
    with pytest.raises(ValueError, match="one group"):
        viz.scatter({"a": ([1], [1], ["a"]), "b": ([2], [2], ["b"])}, colour=[1, 2], title="", x_title="", y_title="")


def test_bars_group_series_by_category_and_turn_horizontal():
    fig = viz.bars([1, 8], {"req/s": [1.0, 3.0], "goodput": [1.0, 2.0]}, title="t")
    assert fig.layout.barmode == "group" and [list(t.x) for t in fig.data] == [["1", "8"], ["1", "8"]]
    side = viz.bars(["embd", "blk"], {"M": [170.0, 98.0]}, title="t", horizontal=True)
    assert side.data[0].orientation == "h" and list(side.data[0].y) == ["embd", "blk"]


def test_heatmap_keeps_rows_columns_and_cell_text():
    fig = viz.heatmap(
        [16, 64], [3, 6], [[1.5, 2.0], [1.2, 1.8]], text=[["a", "b"], ["c", "d"]], title="", x_title="", y_title=""
    )
    (trace,) = fig.data
    assert list(trace.x) == ["16", "64"] and list(trace.y) == ["3", "6"]
    assert [list(r) for r in trace.z] == [[1.5, 2.0], [1.2, 1.8]] and trace.texttemplate == "%{text}"


def test_overlay_and_side_by_side_keep_every_trace_and_each_panels_axes():
    left = viz.lines([1, 2], {"a": [1, 2]}, log_x=True, title="left", x_title="c", y_title="tok/s")
    right = viz.bars(["x"], {"b": [3]}, title="right", y_title="GiB")
    both = viz.side_by_side(left, right, title="both", height=300)
    assert [t.name for t in both.data] == ["a", "b"] and both.layout.height == 300
    assert [a.text for a in both.layout.annotations] == ["left", "right"]
    assert both.layout.xaxis.type == "log" and both.layout.yaxis2.title.text == "GiB"
    merged = viz.overlay(viz.lines([1, 2], {"fit": [1, 2]}, title="", x_title="", y_title=""), right)
    assert [t.name for t in merged.data] == ["fit", "b"]


def test_rows_says_none_for_no_rows(capsys):
    viz.rows([])
    assert capsys.readouterr().out == "(none)\n"
