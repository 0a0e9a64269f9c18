"""Map: every example as a point (close = similar); colour, filter, search and select."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from analytics.names import MAP_COLUMNS, PCA_COLUMNS, UMAP_COLUMNS
from ui import cached
from ui.analysis import page_run
from ui.chart_selection import apply_scatter_selection
from ui.figures import HOVER_TEXT_MAX_POINTS
from ui.map_colours import colour_choices, colour_options
from ui.scatter import ScatterPoints, colour_choice, hover_lines, point_size, scatter_map
from ui.selection import MODES, get_selection, selected_mask, set_selection
from ui.selection_panel import selection_panel

dataset, run = page_run("Map")

examples = run.examples
manifest = run.manifest
n = len(examples)
ids = examples["id"]  # a Series: turning a million Arrow strings into Python objects takes 0.1 s
st.caption(
    f"{n:,} points · embedding **{manifest['embedding']['source']}** "
    f"({manifest['embedding']['dims']}-d) · {manifest['neighbors']['k']}-NN graph "
    f"({manifest['neighbors']['method']}, recall {manifest['neighbors']['recall']:.3f}) · "
    f"run `{run.path}`")
if manifest["neighbors"].get("warning"):
    st.warning(manifest["neighbors"]["warning"], icon=":material/hub:")


def filter_and_search(dataset, examples, ids, skip: set, mode: str) -> np.ndarray:
    """The filter and search controls: the mask of the points that match (and a button that
    selects them)."""
    n = len(examples)
    with st.expander("Filter and search", expanded=False):
        f1, f2, f3 = st.columns([2, 2, 3])
        labels = f1.multiselect("Labels", list(dataset.classes), key="map_filter_labels",
                                placeholder="all labels")
        query = f2.text_input("Search id or text", key="map_search", placeholder="e.g. compiler")
        meta_options = ["(none)"] + [c for c in examples.columns if c not in skip | {"label"}]
        meta = f3.selectbox("Filter on a column", meta_options, key="map_filter_column")
        visible = np.ones(n, dtype=bool)
        if labels:
            visible &= examples["label"].isin(labels).to_numpy()
        if query.strip():
            needle = query.strip()
            hit = examples["id"].str.contains(needle, case=False, regex=False)
            if "text" in examples.columns:
                hit |= examples["text"].str.contains(needle, case=False, regex=False)
            visible &= hit.to_numpy()
        if meta != "(none)":
            column = examples[meta]
            if pd.api.types.is_numeric_dtype(column) and column.nunique() > 20:
                low, high = float(column.min()), float(column.max())
                chosen = f3.slider(f"{meta} between", low, high, (low, high), key=f"map_range_{meta}")
                visible &= column.between(*chosen).to_numpy()
            else:
                levels = column.astype("string").fillna("(missing)")
                picked = f3.multiselect(f"{meta} is one of", sorted(levels.unique())[:500], key=f"map_levels_{meta}")
                if picked:
                    visible &= levels.isin(picked).to_numpy()
        filtered = int(visible.sum())
        st.caption(f"{filtered:,} of {n:,} points match the filters.")
        if st.button(f"Select the {filtered:,} matching points", disabled=filtered in (0, n),
                     key="map_select_filtered"):
            set_selection(dataset.fingerprint, ids[visible], source="map: filter", mode=mode)
    return visible


@st.fragment
def map_and_selection(dataset, run, examples, ids) -> None:
    """The controls, the map and the selection panel: a fragment, so that recolouring, resizing,
    filtering or selecting reruns only this part (at 1M points the page's preamble, the run's
    settings and the sidebar cost about as much as the recolour in the browser). A change here
    that the rest of the app shows (a selection) reaches other pages through the shared state."""
    n = len(examples)
    manifest = run.manifest
    # ----------------------------------------------------------------------------- controls
    options = colour_options(examples)
    chosen = colour_choice("map_scatter", options)  # in the map's own menu: already drawn there
    if chosen is not None:
        st.session_state["map_colour_by"] = chosen
    map_column, controls = st.columns([4, 1])
    with controls:
        colour_by = st.selectbox("Colour by", options, key="map_colour_by",
                                 help="The label, a metadata column, or any score computed for the run. "
                                      "The menu in the map's legend does the same, redrawn in the browser at once.")
        projection = st.radio("Layout", ["UMAP", "PCA"] if "umap" in manifest["timings_s"] else ["PCA"],
                              horizontal=True, key="map_projection")
        size = st.slider("Point size", 1.0, 12.0, point_size(n), 0.5, key="map_size")
        opacity = st.slider("Opacity", 0.1, 1.0, 0.8, 0.05, key="map_opacity")
        mode = st.radio("A new selection", MODES, horizontal=True, key="map_selection_mode",
                        help="Replace the shared selection, add to it, or remove from it.")

    visible = filter_and_search(dataset, examples, ids, {"id", "text", "image", *MAP_COLUMNS}, mode)

    # ----------------------------------------------------------------------------- the map
    # A box, lasso or click in the browser reran the app: apply it before drawing, so that the map
    # and the selection panel below show it in this run.
    apply_scatter_selection("map_scatter", ids, dataset.fingerprint, origin="map")
    selection = get_selection(dataset.fingerprint)
    xy = UMAP_COLUMNS if projection == "UMAP" else PCA_COLUMNS
    stamp = cached.run_stamp(run.path)
    stamp_key = (str(run.path), stamp)
    choices = colour_choices(examples, cached.clusters_table(str(run.path), stamp, dataset.fingerprint))
    texts = examples["text"] if "text" in examples.columns and n <= HOVER_TEXT_MAX_POINTS else None
    points = ScatterPoints(x=examples[xy[0]].to_numpy(), y=examples[xy[1]].to_numpy(),
                           key=(*stamp_key, projection), rows_key=stamp_key, labels=examples["label"],
                           hover=lambda: hover_lines(examples["id"], texts))
    with map_column:
        slot = st.container()  # the scatter is sent last, drawn here: what comes after it in the
        # run (the caption, the selection panel) no longer competes with its drawing in the browser
        hover_note = "its id and the start of its text" if texts is not None else "its id and label"
        st.caption(f"All {n:,} points drawn in the browser (WebGL). Toolbar, top right: pan, box or lasso; "
                   f"scroll to zoom, double-click to reset; click a point to select it; the legend's menu recolours "
                   f"at once. Hovering shows "
                   f"{hover_note}; the selection below lists the rest.")
    selection_panel(dataset, examples)
    with slot:
        scatter_map(points, key="map_scatter", colour=choices[colour_by].column, colour_name=colour_by,
                    colour_key=choices[colour_by].key, colour_options=list(choices.values()), visible=visible,
                    selected=selected_mask(ids, selection), size=size, opacity=opacity, mode=mode, height=640)

map_and_selection(dataset, run, examples, ids)
