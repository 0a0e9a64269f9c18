"""The Map's scatter, drawn in the browser: a Streamlit component that keeps the points.

Every point is drawn with regl-scatterplot (WebGL; ``frontend/``, shipped built in
``frontend/build``). The server hands the browser binary columns, each by a content address
(Streamlit's media files): the coordinates and the label codes once per run and layout, the
colour column when it changes (inside the render message of the run that changes it:
:func:`sent_once`), the filter and the selection as bitsets. A rerun that changes
nothing of a column sends its address again, a few dozen bytes, and the browser keeps what it
fetched. Recolouring, size, opacity, the filter, zoom, pan and hover happen in the browser; a
box, lasso or click selection is computed there over every point, and only its rows come back
(:mod:`ui.scatter.encoding`), read by :func:`scatter_event`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.components.v1 import declare_component

from ui.figures import COLOUR_SCALE, colour_channel
from ui.scatter.bundle import BUILD_DIR
from ui.scatter.encoding import RowEncodingError, code_dtype, column_bytes, decode_rows, pack_mask, quantise_values
from ui.selection import MODES

__all__ = ["ColourChoice", "ScatterEvent", "ScatterPoints", "colour_choice", "hover_lines", "point_size", "scatter_event",
           "scatter_map", "sent_once"]

KINDS = ("box", "lasso", "click")


@dataclass(frozen=True, eq=False)
class ScatterPoints:
    """The points of one run in one layout: what the browser fetches once and keeps.

    ``key`` names this run and layout (e.g. the run folder, its manifest stamp and "UMAP"): the
    encoded columns are kept under it, so the same key must always come with the same columns.
    ``hover`` builds the one line of text shown on hovering each point (called once per key; the
    browser fetches the lines on its first hover). ``rows_key`` names the rows whatever their
    layout (the run folder and its stamp): colour columns are kept under it, so that a second
    layout of the same rows reuses them (default: ``key``).
    """

    x: np.ndarray
    y: np.ndarray
    key: tuple
    labels: pd.Series | None = None
    hover: Callable[[], Sequence[str]] | None = None
    rows_key: tuple | None = None

    @property
    def n(self) -> int:
        return len(self.x)


@dataclass(frozen=True, eq=False)
class ColourChoice:
    """A column the map's own colour menu offers: its ``name``, the function that gives its
    values (called only when it has not been encoded yet), and ``key``, which tells apart
    colourings of one column that differ (e.g. clusters shown with their current names)."""

    name: str
    column: Callable[[], pd.Series]
    key: tuple = ()


@dataclass(frozen=True)
class ScatterEvent:
    """A selection made in the browser: its rows (sorted indices into the points), the tool
    ("box", "lasso" or "click") and the mode it was made in."""

    nonce: str
    kind: str
    mode: str
    rows: np.ndarray


# Encoded columns, by (points key, column): the coordinates of 1M points are 8 MB, their ids
# 10 MB, and joining the ids takes about 0.4 s; bounded by bytes, least recently used out first.
# Every column of the colour menu is kept (a million rows: about 6 MB per score with its exact
# values, 1 MB per category column; 135 MB for a run of 25 columns), so the bound holds three
# such runs before one is encoded again.
_ENCODED_MAX_BYTES = 512 * 2**20


@dataclass(frozen=True, eq=False)
class _Encoded:
    data: bytes
    digest: str
    meta: dict | None = None  # what the browser needs to read the column (names of codes, a range)

    @property
    def nbytes(self) -> int:
        """Its bytes, with those of a column it carries in ``meta`` (the exact values)."""
        exact = (self.meta or {}).get("exact")
        return len(self.data) + (exact.nbytes if isinstance(exact, _Encoded) else 0)


_encoded: OrderedDict[tuple, _Encoded] = OrderedDict()
_encoded_lock = threading.Lock()


def _encode(data: bytes, meta: dict | None = None) -> _Encoded:
    return _Encoded(data, hashlib.blake2b(data, digest_size=16).hexdigest(), meta)


def _encoded_column(cache_key: tuple, build: Callable[[], _Encoded]) -> _Encoded:
    """A column encoded by ``build``, once per ``cache_key``."""
    with _encoded_lock:
        if cache_key in _encoded:
            _encoded.move_to_end(cache_key)
            return _encoded[cache_key]
    entry = build()
    with _encoded_lock:
        _encoded[cache_key] = entry
        while sum(e.nbytes for e in _encoded.values()) > _ENCODED_MAX_BYTES and len(_encoded) > 1:
            _encoded.popitem(last=False)
    return entry


def _blob(component_key: str, name: str, encoded: _Encoded, dtype: str, length: int) -> dict:
    """A column served to this session as a media file, addressed by its content."""
    from streamlit import runtime

    url = ""
    if runtime.exists():
        # Streamlit names media files by a hash of only parts of files over 1 MiB; our own full
        # digest in the name keeps two columns of equal length apart.
        url = runtime.get_instance().media_file_mgr.add(
            encoded.data, "application/octet-stream", f"scatter.{component_key}.{name}",
            file_name=f"{encoded.digest}.bin")
    return {"url": url, "dtype": dtype, "length": int(length), "bytes": len(encoded.data)}


def _mask_blob(component_key: str, name: str, mask: np.ndarray) -> dict:
    data = pack_mask(mask)
    return _blob(component_key, name, _encode(data), "uint8", len(data))


def hover_lines(ids: pd.Series, texts: pd.Series | None = None, *, width: int = 60) -> list[str]:
    """One line per example for hovering: its id, and with ``texts`` the start of its text
    (whitespace collapsed). Plain text: the browser shows it as text, never as HTML."""
    lines = ids.astype(str)
    if texts is not None:
        lines = lines + ": " + texts.astype(str).str.replace(r"\s+", " ", regex=True).str.slice(0, width)
    return lines.tolist()


def _colour_args(component_key: str, points: ScatterPoints, colour: pd.Series | Callable[[], pd.Series], title: str,
                 identity: tuple, name: str = "colour") -> tuple[dict, _Encoded]:
    """The colour column (or the function that gives it), built and encoded once per rows,
    column and ``identity``: its arguments, and its encoded column, served to this session
    under ``name`` (one name per column served at once)."""

    def build() -> _Encoded:
        channel = colour_channel(colour() if callable(colour) else colour, title)
        if channel.numeric:  # uint16 codes to draw; the exact float32 values for hovering
            meta = {"kind": "values", "title": title, "min": channel.low, "max": channel.high,
                    "scale": list(COLOUR_SCALE), "missing": bool((~np.isfinite(channel.values)).any()),
                    "field": "values", "dtype": "uint16",
                    "exact": _encode(column_bytes(channel.values, "float32"))}
            return _encode(column_bytes(quantise_values(channel.values, channel.low, channel.high), "uint16"), meta)
        meta = {"kind": "categories", "title": title, "names": list(channel.names),
                "colours": list(channel.colours), "field": "codes", "dtype": code_dtype(len(channel.names))}
        return _encode(column_bytes(channel.codes, meta["dtype"]), meta)

    encoded = _encoded_column((*(points.rows_key or points.key), "colour", title, *identity), build)
    args = {k: v for k, v in encoded.meta.items() if k not in ("field", "dtype", "exact")}
    args[encoded.meta["field"]] = _blob(component_key, name, encoded, encoded.meta["dtype"], points.n)
    if "exact" in encoded.meta:
        args["exact"] = _blob(component_key, f"{name}.exact", encoded.meta["exact"], "float32", points.n)
    return args, encoded


def _colour_options_arg(component_key: str, points: ScatterPoints, choices: Sequence[ColourChoice]) -> list[dict]:
    """Every column of the map's own colour menu, encoded once per rows and column and served by
    its address: choosing one in the browser fetches and draws it there, with no rerun (the
    browser then tells the server, :func:`colour_choice`). Each carries ``digest``, which the
    browser sends back so that the server does not send the same bytes again."""
    options = []
    for choice in choices:
        args, encoded = _colour_args(component_key, points, choice.column, choice.name, tuple(choice.key),
                                     name=f"option.{len(options)}")
        options.append({**args, "digest": encoded.digest})
    return options


def _colour_sent(key: str) -> str:
    """The session-state name under which :func:`sent_once` keeps the digest of the colour
    column the browser of scatter ``key`` has."""
    return f"{key}__colour_sent"


def colour_choice(key: str, options: Sequence[str]) -> str | None:
    """The column last chosen in the scatter ``key``'s own colour menu, once (None when there is
    no new choice, or it is not among ``options``). Read it before the page's own "Colour by"
    control is drawn, and set that control to it: the browser has already drawn the colours."""
    value = st.session_state.get(key)
    if not isinstance(value, dict) or value.get("kind") != "colour":
        return None
    memory = f"{key}__colour_choice"
    if st.session_state.get(memory) == value.get("nonce"):
        return None
    st.session_state[memory] = value.get("nonce")
    chosen = value.get("colour")
    if not isinstance(chosen, str) or chosen not in options:
        return None
    if isinstance(value.get("digest"), str):  # the browser has these colours: not sent again
        st.session_state[_colour_sent(key)] = value["digest"]
    return chosen


def _labels_arg(component_key: str, points: ScatterPoints) -> dict | None:
    """The points' label names and codes, encoded once per points; None without labels."""
    if points.labels is None:
        return None
    labels = points.labels

    def label_codes() -> _Encoded:  # every distinct label, not only the most frequent
        codes, uniques = pd.factorize(labels.astype("string").fillna("(missing)"))
        return _encode(column_bytes(codes, code_dtype(len(uniques))), {"names": [str(u) for u in uniques]})

    encoded = _encoded_column((*points.key, "labels"), label_codes)
    names = encoded.meta["names"]
    return {"names": names, "codes": _blob(component_key, "labels", encoded, code_dtype(len(names)), points.n)}


def _hover_arg(component_key: str, points: ScatterPoints) -> dict | None:
    """The points' hover lines, built and encoded once per points; None without them."""
    if points.hover is None:
        return None
    hover = points.hover
    encoded = _encoded_column((*points.key, "hover"), lambda: _encode("\n".join(hover()).encode("utf-8")))
    return _blob(component_key, "hover", encoded, "utf8", points.n)


def sent_once(memory: MutableMapping, name: str, encoded: _Encoded) -> bytes | None:
    """``encoded``'s bytes if the last run did not send them under ``name`` (kept in ``memory``,
    the session's state), else None.

    A new colour column travels inside the render message that needs it, not fetched after it:
    on a busy server the fetch waits for the script's run to finish (the server answers it in
    the thread the script shares the interpreter with). A browser that has not got it (a Map
    opened again: a new frame) fetches it by its address."""
    if memory.get(name) == encoded.digest:
        return None
    memory[name] = encoded.digest
    return encoded.data


def point_size(n: int, base: float = 4.0) -> float:
    """The default size of a point (CSS pixels) for a map of ``n`` points: larger for a small map,
    ``base`` up to 300,000 points, at most 3 above. A million points of 4 px cover a 960 × 640
    canvas 26 times over; with software WebGL each frame then takes 0.87 s, against 0.44 s at
    3 px (headless Chromium, 2 cores), and the map shows the same shapes."""
    if n <= 20_000:
        return base + 2.0
    return base if n <= 300_000 else min(base, 3.0)


def scatter_map(
    points: ScatterPoints,
    *,
    key: str,
    colour: pd.Series | Callable[[], pd.Series],
    colour_name: str,
    colour_key: tuple = (),
    colour_options: Sequence[ColourChoice] = (),
    visible: np.ndarray | None = None,
    selected: np.ndarray | None = None,
    size: float = 4.0,
    opacity: float = 0.8,
    mode: str = "Replace",
    height: int = 640,
    axes: tuple[str, str] | None = None,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    lines: Sequence[dict] = (),
    annotations: Sequence[dict] = (),
) -> None:
    """Draw every point in the browser, coloured by ``colour`` (a column, or the function that
    gives it, called only when not yet encoded; categories, or numbers on a scale:
    :func:`ui.figures.colour_channel`), built once per rows and ``colour_name``
    (``colour_key`` tells apart colourings of one column that differ, such as renamed clusters).
    ``colour_options`` fill the map's own colour menu: every one is encoded (once per rows) and
    served, so that choosing it redraws the map in the browser without a rerun; the page reads
    the choice with :func:`colour_choice`.

    Points outside ``visible`` (the filters) are drawn grey and small and cannot be selected;
    ``selected`` (the shared selection) is highlighted. ``mode`` is what a new selection does
    (Replace, Add, Remove), shown at once in the browser; the server applies it when it reads
    the event (:func:`scatter_event`). With ``axes`` (two titles) the chart has axes and each
    its own scale (two scores against each other; ``x_range``/``y_range`` fix their ranges),
    ``lines`` (dicts of x0, y0, x1, y1) and ``annotations`` (x, y, text, dy in pixels) are drawn
    in data coordinates; without, it is a map with one unit on both axes.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    n = points.n
    xy_key = (*points.key, "xy")

    def interleaved() -> _Encoded:
        xy = np.empty((n, 2), dtype=np.float32)
        xy[:, 0], xy[:, 1] = points.x, points.y
        return _encode(column_bytes(xy, "float32"))

    args: dict = {
        "n": n,
        "layout": repr(points.key),
        "points": _blob(key, "points", _encoded_column(xy_key, interleaved), "float32", 2 * n),
        "colour": None,
        "visible": None if visible is None or visible.all() else _mask_blob(key, "visible", visible),
        "selected": None if selected is None or not selected.any() else _mask_blob(key, "selected", selected),
        "size": float(size), "opacity": float(opacity), "mode": mode, "height": int(height),
        "axes": None if axes is None else {"x": axes[0], "y": axes[1], "x_range": x_range, "y_range": y_range},
        "lines": list(lines), "annotations": list(annotations),
        "labels": _labels_arg(key, points), "hover": _hover_arg(key, points),
        "colour_options": _colour_options_arg(key, points, colour_options),
    }
    # declared on every call: it registers with the runtime running this script (AppTest makes one per test)
    args["colour"], encoded_colour = _colour_args(key, points, colour, colour_name, tuple(colour_key))
    inline = sent_once(st.session_state, _colour_sent(key), encoded_colour)
    args["colour"][encoded_colour.meta["field"]]["inline"] = inline is not None
    component = declare_component("scatter", path=str(BUILD_DIR))
    component(key=key, default=None, colour_bytes=inline, **args)


def scatter_event(key: str, n: int) -> ScatterEvent | None:
    """The last selection the browser sent from the scatter ``key`` (None before the first, or
    when it was made on another map of a different size). Read it before drawing the scatter,
    so that the chart drawn in the same run already shows the new selection."""
    value = st.session_state.get(key)
    if not isinstance(value, dict) or value.get("kind") not in KINDS or value.get("mode") not in MODES:
        return None
    try:
        rows = decode_rows(value.get("rows"), n=n)
    except RowEncodingError:
        return None
    return ScatterEvent(nonce=str(value.get("nonce")), kind=value["kind"], mode=value["mode"], rows=rows)
