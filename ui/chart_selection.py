"""Turning a lasso/box/click on any point chart into a change of the shared selection: a Plotly
chart's selection event, or the browser-side scatter's (:mod:`ui.scatter`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from ui.figures import MapFigure, rows_from_event, rows_in_shapes
from ui.scatter import scatter_event
from ui.selection import set_selection, set_selection_rows


def apply_chart_selection(event, built: MapFigure, ids: np.ndarray, fingerprint: str, *, key: str,
                          origin: str, mode: str = "Replace") -> None:
    """Apply a new selection event once (not on every rerun) and rerun the app.

    When the chart draws only a sample of the points, a box or lasso selects every point
    inside it (by its coordinates), not only the drawn ones.
    """
    selection = event.selection if event else {}
    points = selection.get("points", []) if event else []
    shapes = [(s.get("x"), s.get("y")) for s in (selection.get("box") or []) + (selection.get("lasso") or [])] \
        if event else []
    signature = (len(points), tuple((p.get("curve_number"), p.get("point_index")) for p in points[:50]), repr(shapes)[:2000])
    memory = f"{key}_last_event"
    if (points or (shapes and built.sampled)) and st.session_state.get(memory) != signature:
        st.session_state[memory] = signature
        rows = rows_in_shapes(selection, built) if built.sampled else None
        if rows is None:
            rows = rows_from_event(points, built.trace_rows)
        kind = "lasso" if event.selection.get("lasso") else "box" if event.selection.get("box") else "click"
        set_selection(fingerprint, ids[rows], source=f"{origin}: {kind}", mode=mode)
        st.rerun()
    elif not points and not shapes:
        st.session_state.pop(memory, None)


def apply_scatter_selection(key: str, ids: pd.Series, fingerprint: str, *, origin: str) -> None:
    """Apply the browser-side scatter ``key``'s new selection once, in the mode it was made in;
    ``ids`` are the ids of the scatter's points (the run's ``examples["id"]``), in its order.

    Call it before drawing the scatter and the selection panel: both then show the new selection
    in this same run (the scatter's change reran the app; no second rerun).
    """
    event = scatter_event(key, len(ids))
    memory = f"{key}_applied"
    if event is None or st.session_state.get(memory) == event.nonce:
        return
    st.session_state[memory] = event.nonce
    set_selection_rows(fingerprint, ids, event.rows, source=f"{origin}: {event.kind}", mode=event.mode)
