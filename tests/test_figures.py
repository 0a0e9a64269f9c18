"""Chart building for large data: what is drawn, and box/lasso selecting every point inside."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import pytest

from ui.figures import drawn_rows, map_figure, points_in_polygon, rows_from_event, rows_in_shapes


def test_all_points_are_drawn_up_to_the_limit():
    x = np.arange(50, dtype=np.float32)
    built = map_figure(x, x, colour=pd.Series(["a", "b"] * 25), colour_name="c", max_points=50)
    assert not built.sampled and built.n_drawn == 50 and built.caption().startswith("All 50 points")
    assert sum(len(t.x) for t in built.figure.data) == 50


def test_above_the_limit_a_fixed_sample_is_drawn_with_the_selection_first():
    selected = np.zeros(1000, dtype=bool)
    selected[[3, 500, 999]] = True
    drawn = drawn_rows(1000, 100, selected)
    assert drawn.sum() == 100 and drawn[[3, 500, 999]].all()
    np.testing.assert_array_equal(drawn, drawn_rows(1000, 100, selected))  # same on every rerun
    assert not (drawn_rows(1000, 100) ^ drawn).sum() > 10  # the rest follows one fixed order
    rng = np.random.default_rng(0)
    x, y = rng.random(1000).astype(np.float32), rng.random(1000).astype(np.float32)
    built = map_figure(x, y, colour=pd.Series(rng.random(1000)), colour_name="score", selected=selected,
                       max_points=100)
    assert built.sampled and built.n_drawn == 100 and "Showing 100 of 1,000 points" in built.caption()
    assert sum(len(t.x) for t in built.figure.data) == 100
    assert sum(len(t.selectedpoints) for t in built.figure.data if t.selectedpoints is not None) == 3


def test_point_in_polygon_matches_geometry():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-1, 1, 20000), rng.uniform(-1, 1, 20000)
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    inside = points_in_polygon(x, y, 0.5 * np.cos(angles), 0.5 * np.sin(angles))
    radius = np.hypot(x, y)
    clear = np.abs(radius - 0.5) > 0.002  # away from the polygon's chords
    np.testing.assert_array_equal(inside[clear], radius[clear] < 0.5)
    # a concave L shape: the notch is outside
    lx, ly = np.array([0, 2, 2, 1, 1, 0.0]), np.array([0, 0, 1, 1, 2, 2.0])
    got = points_in_polygon(np.array([0.5, 1.5, 1.5, 0.5]), np.array([0.5, 0.5, 1.5, 1.5]), lx, ly)
    np.testing.assert_array_equal(got, [True, True, False, True])


def test_a_lasso_on_a_sampled_chart_selects_every_point_inside_it_drawn_or_not():
    rng = np.random.default_rng(2)
    x, y = rng.random(5000).astype(np.float32), rng.random(5000).astype(np.float32)
    visible = np.ones(5000, dtype=bool)
    visible[:100] = False  # filtered out points are never selected
    built = map_figure(x, y, colour=pd.Series(["a"] * 5000), colour_name="c", visible=visible, max_points=500)
    box = rows_in_shapes({"box": [{"x": [0.2, 0.6], "y": [0.1, 0.3]}]}, built)
    expected = np.flatnonzero(visible & (x >= 0.2) & (x <= 0.6) & (y >= 0.1) & (y <= 0.3))
    np.testing.assert_array_equal(box, expected)
    assert len(box) > 5 * len(np.intersect1d(box, np.concatenate([r for r in built.trace_rows if r is not None])))
    triangle = rows_in_shapes({"lasso": [{"x": [0, 1, 0], "y": [0, 0, 1]}]}, built)
    np.testing.assert_array_equal(triangle, np.flatnonzero(visible & (x + y < 1)))
    both = rows_in_shapes({"box": [{"x": [0.2, 0.6], "y": [0.1, 0.3]}], "lasso": [{"x": [0, 1, 0], "y": [0, 0, 1]}]}, built)
    np.testing.assert_array_equal(both, np.union1d(box, triangle))
    assert rows_in_shapes({"points": []}, built) is None
    # a click still picks the drawn point it hit
    curve = next(i for i, rows in enumerate(built.trace_rows) if rows is not None)
    assert rows_from_event([{"curve_number": curve, "point_index": 0}], built.trace_rows)[0] == built.trace_rows[curve][0]


# The patterns remark-gfm (mdast-util-gfm-autolink-literal) links in text Streamlit renders.
GFM_URL = re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.IGNORECASE)
GFM_EMAIL = re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)")


@pytest.mark.parametrize("text", [
    "see https://evil.example/path?q=1 now",
    "HTTP://EVIL.EXAMPLE",
    "visit www.evil.example today",
    "mail bob@evil.example or mailto:eve@evil.example",
    "ftp://files.example and xmpp:alice@chat.example",
])
def test_urls_in_user_text_are_plain_text_not_links(text):
    from markdown_it import MarkdownIt

    from ui.figures import WORD_JOINER, escape_markdown

    rendered = html.unescape(re.sub(r"<[^>]+>", "", MarkdownIt("commonmark").render(escape_markdown(text))))
    assert rendered.strip().replace(WORD_JOINER, "") == text  # reads the same
    assert not GFM_URL.search(rendered) and not GFM_EMAIL.search(rendered)  # nothing left to autolink
    assert "<a" not in MarkdownIt("commonmark").render(escape_markdown(f"<a href='{text}'>x</a>"))
