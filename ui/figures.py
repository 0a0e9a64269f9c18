"""Plotly figures built from arrays (no Streamlit here, so they can be timed and tested alone)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sequential

HOVER_TEXT_MAX_POINTS = 25_000  # above this, hover shows label and row only (payload budget)
# Above this, a chart draws a fixed random sample (selected points first): 1M points would send
# 40 MB to the browser on every recolour. Box and lasso still select every point inside them.
DRAW_MAX_POINTS = 200_000
MAX_CATEGORIES = 20
PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Alphabet
COLOUR_SCALE = tuple(sequential.Viridis)  # numeric colours, low to high (Plotly's "Viridis")
OTHER_COLOUR = "#7f7f7f"
FILTERED_OUT = "filtered out"


@dataclass(frozen=True, eq=False)
class MapFigure:
    figure: go.Figure
    trace_rows: list[np.ndarray | None]  # curve number -> row indices (None: not selectable)
    hover_text: bool
    n_total: int = 0
    n_drawn: int = 0
    x: np.ndarray | None = None  # every point's coordinates (drawn or not), for box/lasso geometry
    y: np.ndarray | None = None
    selectable: np.ndarray | None = None  # (n,) bool: points a box or lasso may select

    @property
    def sampled(self) -> bool:
        """True when only some of the points are drawn."""
        return self.n_drawn < self.n_total

    def caption(self) -> str:
        """What the chart shows, for the page to say on screen."""
        if not self.sampled:
            return f"All {self.n_total:,} points drawn (WebGL)."
        return (f"Showing {self.n_drawn:,} of {self.n_total:,} points: a fixed random sample, with the "
                "selected points first. A box or lasso selects every point inside it, drawn or not.")


@dataclass(frozen=True, eq=False)
class ColourChannel:
    """A column as a chart colours it: categories, or numbers on :data:`COLOUR_SCALE`.

    Categories: ``codes`` (n,) index ``names`` and ``colours``: the ``MAX_CATEGORIES`` most
    frequent values in natural order, then one "other (k values)" for the rest. Numbers:
    ``values`` (n,) float32 (NaN: missing) between ``low`` and ``high``.
    """

    title: str
    codes: np.ndarray | None = None
    names: tuple[str, ...] = ()
    colours: tuple[str, ...] = ()
    values: np.ndarray | None = None
    low: float = 0.0
    high: float = 0.0

    @property
    def numeric(self) -> bool:
        return self.values is not None


_FIRST_ROWS = 10_000  # rows that usually settle whether a numeric column has many distinct values


def is_numeric_colour(values: pd.Series) -> bool:
    """Whether a column is coloured on a scale (numbers with more than ``MAX_CATEGORIES``
    distinct values) rather than by category."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    # enough distinct values among the first rows settles it (counting a million floats: 47 ms)
    return values.iloc[:_FIRST_ROWS].nunique(dropna=True) > MAX_CATEGORIES \
        or values.nunique(dropna=True) > MAX_CATEGORIES


def category_codes(values: pd.Series) -> tuple[np.ndarray, list, int]:
    """``(codes, top, distinct)``: each value's index in ``top`` (the ``MAX_CATEGORIES`` most
    frequent values, numeric-looking ones in numeric order, missing values as "(missing)"), -1
    for the rest; ``distinct`` counts every value (as text: values written alike are one)."""
    values = values.reset_index(drop=True)
    if values.dtype == object:  # mixed Python objects (1 and True are one key to a hash): as text
        values = values.astype("string")
    elif pd.api.types.is_float_dtype(values):
        values = values + 0.0  # -0.0 is 0.0
    # codes of the distinct values first, then text for each distinct value only: turning a
    # million values into text took 0.1-0.5 s a column
    codes, uniques = pd.factorize(values)
    labels = pd.Index(uniques).astype("string")
    missing = codes < 0
    if missing.any():  # "(missing)" takes its place in the order of first appearance (for ties)
        first = int(missing.argmax())
        at = int(codes[:first].max()) + 1 if first else 0
        labels = labels[:at].append(pd.Index(["(missing)"], dtype="string")).append(labels[at:])
        codes = np.where(missing, at, codes + (codes >= at))
    merged, texts = pd.factorize(labels)  # two values written alike (1 and "1") are one category
    codes = merged[codes]
    counts = np.bincount(codes, minlength=len(texts))
    by_count = np.argsort(-counts, kind="stable")  # ties in order of first appearance
    top = _natural_order([texts[i] for i in by_count[:MAX_CATEGORIES]])
    return pd.Index(top).get_indexer(texts)[codes], top, len(texts)


def colour_channel(values: pd.Series, title: str) -> ColourChannel:
    """The colours of a column: categories (colours fixed by the whole column, so a category
    keeps its colour while filtering) or numbers on a scale."""
    if is_numeric_colour(values):
        numbers = values.to_numpy(dtype=np.float32, na_value=np.nan)
        finite = numbers[np.isfinite(numbers)]
        low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 0.0)
        return ColourChannel(title=title, values=numbers, low=low, high=high)
    codes, top, distinct = category_codes(values)
    names = [str(name) for name in top]
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(top))]
    if (codes < 0).any():
        codes = np.where(codes < 0, len(top), codes)
        names.append(f"other ({distinct - len(top)} values)")
        colours.append(OTHER_COLOUR)
    return ColourChannel(title=title, codes=codes, names=tuple(names), colours=tuple(colours))


def drawn_rows(n: int, max_points: int | None, selected: np.ndarray | None = None) -> np.ndarray:
    """(n,) bool: which points a chart draws. All of them up to ``max_points``; above it the
    selected points first, then the same seeded random order on every rerun."""
    if max_points is None or n <= max_points:
        return np.ones(n, dtype=bool)
    priority = np.empty(n, dtype=np.int64)
    priority[np.random.default_rng(0).permutation(n)] = np.arange(n)
    if selected is not None:
        priority[selected] -= n
    drawn = np.zeros(n, dtype=bool)
    drawn[np.argpartition(priority, max_points - 1)[:max_points]] = True
    return drawn


def rows_in_shapes(selection: dict, built: MapFigure) -> np.ndarray | None:
    """Rows of every selectable point (drawn or not) inside the event's boxes and lassos, or
    None when the event has no box or lasso."""
    shapes = [("box", shape) for shape in selection.get("box") or []] + \
             [("lasso", shape) for shape in selection.get("lasso") or []]
    if not shapes or built.x is None:
        return None
    candidates = np.flatnonzero(built.selectable & np.isfinite(built.x) & np.isfinite(built.y))
    x, y = built.x[candidates], built.y[candidates]
    inside = np.zeros(len(candidates), dtype=bool)
    for kind, shape in shapes:
        xs, ys = np.asarray(shape.get("x", []), float), np.asarray(shape.get("y", []), float)
        if kind == "box" and len(xs) >= 2 and len(ys) >= 2:
            inside |= (x >= xs.min()) & (x <= xs.max()) & (y >= ys.min()) & (y <= ys.max())
        elif kind == "lasso" and len(xs) >= 3 and len(xs) == len(ys):
            inside |= points_in_polygon(x, y, xs, ys)
    return candidates[inside]


def points_in_polygon(x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """(len(x),) bool: whether each point lies inside the closed polygon (px, py), by the
    even-odd rule (a ray to the right crosses the boundary an odd number of times). Points
    outside the polygon's bounding box are ruled out first; the rest take one vectorised
    pass per edge."""
    result = np.zeros(len(x), dtype=bool)
    box = np.flatnonzero((x >= px.min()) & (x <= px.max()) & (y >= py.min()) & (y <= py.max()))
    bx, by = x[box].astype(np.float64), y[box].astype(np.float64)
    inside = np.zeros(len(box), dtype=bool)
    for x1, y1, x2, y2 in zip(px, py, np.roll(px, -1), np.roll(py, -1)):
        if y1 == y2:
            continue
        crosses = (y1 > by) != (y2 > by)
        at = x1 + (by - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (bx < at)
    result[box] = inside
    return result


def escape(text: object) -> str:
    """Escape dataset text for Plotly, which renders a subset of HTML in labels and hovers."""
    return html.escape(str(text), quote=False)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")
# What GitHub-flavoured markdown turns into a link by itself (Streamlit renders with remark-gfm):
# "scheme://", "www." and the "@" of an e-mail address. A word joiner (U+2060, invisible, no
# width) inside each breaks the match; the text still reads the same.
_AUTOLINK_TRIGGER = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)", re.IGNORECASE)
WORD_JOINER = "\u2060"


def plain_urls(text: object) -> str:
    """``text`` with every would-be autolink (``https://…``, ``www.…``, ``name@host``) broken
    by an invisible word joiner, so markdown shows it as plain text, not as a link."""
    return _AUTOLINK_TRIGGER.sub(WORD_JOINER, str(text))


def escape_markdown(text: object) -> str:
    """Dataset or user text made inert for Streamlit markdown (st.caption, st.subheader…): no
    links (URLs and e-mail addresses show as plain text), images, emphasis or HTML come from it."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", plain_urls(text))


def hover_previews(ids: pd.Series, texts: pd.Series | None, *, width: int = 60) -> np.ndarray:
    """Short escaped previews: ``id`` and the start of the text, one line."""
    preview = ids.astype(str).str.slice(0, 40)
    if texts is not None:
        snippet = texts.astype(str).str.replace(r"\s+", " ", regex=True).str.slice(0, width)
        preview = preview + ": " + snippet
    return preview.map(escape).to_numpy(dtype=object)


def map_figure(
    x: np.ndarray,
    y: np.ndarray,
    *,
    colour: pd.Series,
    colour_name: str,
    visible: np.ndarray | None = None,
    selected: np.ndarray | None = None,
    hover: np.ndarray | None = None,
    size: float = 4.0,
    opacity: float = 0.8,
    uirevision: str = "map",
    height: int = 640,
    axis_titles: tuple[str, str] | None = None,
    max_points: int | None = DRAW_MAX_POINTS,
) -> MapFigure:
    """A WebGL scatter of every point, coloured by ``colour``.

    Categorical colours get one trace per value (the ``MAX_CATEGORIES`` most frequent, the rest
    as "other"), numeric ones a colour scale. Points outside ``visible`` are drawn faint and
    cannot be selected; ``selected`` (the shared selection) is highlighted with Plotly's
    selected/unselected styling. Each point's row index travels as ``customdata``. With
    ``axis_titles`` the axes are labelled and free (a chart of two scores, not a map). Above
    ``max_points`` points only a sample is drawn (:func:`drawn_rows`); the figure's
    ``caption()`` says so.
    """
    n = len(x)
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    visible = np.ones(n, dtype=bool) if visible is None else np.asarray(visible, dtype=bool)
    selectable = visible
    drawn = drawn_rows(n, max_points, selected if selected is not None and selected.any() else None)
    visible = visible & drawn
    traces = _MapTraces(x=x, y=y, size=size, opacity=opacity, hover=hover, selected=selected)
    hidden = np.flatnonzero(~selectable & drawn)
    if len(hidden):
        traces.add(hidden, FILTERED_OUT, dict(color="#bbbbbb"), selectable=False)
    channel = colour_channel(colour.reset_index(drop=True), colour_name)
    if channel.numeric:
        _add_numeric_traces(traces, channel, visible)
    else:
        _add_category_traces(traces, channel, visible)
    figure = go.Figure(traces.traces)
    figure.update_layout(**_map_layout(colour_name, axis_titles=axis_titles, height=height, uirevision=uirevision))
    return MapFigure(figure=figure, trace_rows=traces.trace_rows, hover_text=hover is not None, n_total=n,
                     n_drawn=int(drawn.sum()), x=x, y=y, selectable=selectable)


@dataclass(eq=False)
class _MapTraces:
    """The traces of a :func:`map_figure` being built, with the rows each one draws."""

    x: np.ndarray
    y: np.ndarray
    size: float
    opacity: float
    hover: np.ndarray | None
    selected: np.ndarray | None
    traces: list[go.Scattergl] = field(default_factory=list)
    trace_rows: list[np.ndarray | None] = field(default_factory=list)  # None: not selectable

    def add(self, rows: np.ndarray, name: str, marker: dict, *, selectable: bool = True,
            legend: bool = True) -> go.Scattergl:
        """Add a trace of the points ``rows``; one that is not ``selectable`` is drawn faint."""
        rows = rows.astype(np.int32)
        size, hover, selected = self.size, self.hover, self.selected
        trace = go.Scattergl(
            x=self.x[rows], y=self.y[rows], mode="markers", name=escape(name), customdata=rows,
            marker=dict(size=size, opacity=self.opacity, **marker), showlegend=legend,
            selected=dict(marker=dict(opacity=1.0)), unselected=dict(marker=dict(opacity=0.12)),
        )
        if not selectable:
            trace.update(hoverinfo="skip", marker=dict(opacity=0.12, size=max(size * 0.6, 1.5)))
        elif hover is not None:
            trace.update(hovertext=hover[rows], hovertemplate="%{hovertext}<extra>%{fullData.name}</extra>")
        else:
            trace.update(hovertemplate="row %{customdata}<extra>%{fullData.name}</extra>")
        if selectable and selected is not None and selected.any():
            # a plain list: plotly.js does not decode a typed array here (selectedpoints is "any")
            trace.update(selectedpoints=np.flatnonzero(selected[rows]).tolist())
        self.traces.append(trace)
        self.trace_rows.append(rows if selectable else None)
        return trace


def _add_numeric_traces(traces: _MapTraces, channel: ColourChannel, visible: np.ndarray) -> None:
    """One trace of the ``visible`` points with a number, on the colour scale, and one of those
    without."""
    finite = np.isfinite(channel.values)
    shown = np.flatnonzero(visible & finite)
    trace = traces.add(shown, channel.title, dict(color=channel.values[shown], colorscale="Viridis", showscale=True,
                                                  colorbar=dict(title=dict(text=escape(channel.title)),
                                                                thickness=12)),
                       legend=False)
    if traces.hover is None:
        trace.update(hovertemplate=f"row %{{customdata}}<br>{escape(channel.title)} "
                                   "%{marker.color:.4g}<extra></extra>")
    missing = np.flatnonzero(visible & ~finite)
    if len(missing):
        traces.add(missing, "missing", dict(color="#999999"))


def _add_category_traces(traces: _MapTraces, channel: ColourChannel, visible: np.ndarray) -> None:
    """One trace per category with ``visible`` points. The colours are fixed by the whole column
    (:func:`colour_channel`), not by what the filters leave visible, so a category keeps its colour
    while filtering; the most frequent values get their own."""
    for code, (name, colour) in enumerate(zip(channel.names, channel.colours)):
        rows = np.flatnonzero(visible & (channel.codes == code))
        if len(rows):
            traces.add(rows, name, dict(color=colour))


def _map_layout(colour_name: str, *, axis_titles: tuple[str, str] | None, height: int, uirevision: str) -> dict:
    """The layout of :func:`map_figure`: labelled, free axes for a chart of two scores
    (``axis_titles``), else a map's bare axes at one scale."""
    common = dict(height=height, margin=dict(l=0, r=0, t=10, b=0), dragmode="lasso", uirevision=uirevision,
                  plot_bgcolor="white", legend=dict(title=dict(text=escape(colour_name)), itemsizing="constant"))
    if axis_titles:
        return dict(common,
                    xaxis=dict(title=escape(axis_titles[0]), gridcolor="#eeeeee", zeroline=False),
                    yaxis=dict(title=escape(axis_titles[1]), gridcolor="#eeeeee", zeroline=False))
    return dict(common,
                xaxis=dict(showticklabels=False, showgrid=False, zeroline=False, title=None),
                yaxis=dict(showticklabels=False, showgrid=False, zeroline=False, title=None,
                           scaleanchor="x", scaleratio=1),
                hoverlabel=dict(namelength=30))


def _natural_order(values: list) -> list:
    """Numeric-looking values in numeric order, others alphabetically."""
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
    if numbers.notna().all():
        return [v for _, v in sorted(zip(numbers, values))]
    return sorted(values, key=str)


def rows_from_event(points: list[dict], trace_rows: list[np.ndarray | None]) -> np.ndarray:
    """Row indices of the points in a Plotly selection event (curve number + point index)."""
    rows = []
    for point in points:
        curve = point.get("curve_number")
        index = point.get("point_index", point.get("point_number"))
        if curve is None or index is None or curve >= len(trace_rows) or trace_rows[curve] is None:
            continue
        if index < len(trace_rows[curve]):
            rows.append(int(trace_rows[curve][index]))
    return np.unique(np.asarray(rows, dtype=np.int64))
