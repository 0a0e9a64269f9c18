"""Data Map (Dataset Cartography): confidence against variability over training, with regions."""

from __future__ import annotations

import numpy as np
import streamlit as st

from analytics.names import REGIONS
from ui import cached
from ui.analysis import page_run
from ui.chart_selection import apply_scatter_selection
from ui.figures import HOVER_TEXT_MAX_POINTS
from ui.scatter import ScatterPoints, hover_lines, point_size, scatter_map
from ui.selection import MODES, get_selection, selected_mask, set_selection
from ui.selection_panel import selection_panel

ONE_DIMENSIONAL = 0.95  # |Spearman(confidence, variability)| above this: the map is nearly a line
SOURCE_NAMES = {"probe": "probe on the embeddings", "finetune": "fine-tuned model",
                "reference": "dynamics folder", "checkpoints": "per-epoch checkpoints"}

dataset, run = page_run("Data map")
examples = run.examples
if "confidence" not in examples.columns:
    st.info("This run has no training dynamics (it was analysed with --no-scores). Compute the map "
            "again from *Analysis settings*, or run `cartographer analyze` without --no-scores.")
    st.stop()

dynamics = run.manifest.get("dynamics") or {}
source = dynamics.get("source", "?")
st.caption(
    f"Swayamdipta et al. 2020. Each point is an example: **confidence** is the mean probability "
    f"of its label over {dynamics.get('epochs', '?')} epochs, **variability** its spread, colour "
    f"the fraction of epochs it was classified correctly. Training dynamics from the "
    f"**{SOURCE_NAMES.get(source, source)}**"
    + (f" ({dynamics['seeds']} seeds, averaged)" if dynamics.get("seeds", 1) > 1 else "")
    + (f"; held-out probabilities: {dynamics['heldout']}" if dynamics.get("heldout") else "") + ".")

rho = cached.score_agreement(str(run.path), cached.run_stamp(run.path), examples,
                             ("confidence", "variability")).loc["confidence", "variability"]
if np.isfinite(rho) and abs(rho) > ONE_DIMENSIONAL:
    st.warning(
        f"This map is nearly one-dimensional: Spearman(confidence, variability) = {rho:.2f}, so "
        "variability says almost nothing that confidence does not, and the regions are cut along one "
        "line. A probe on frozen embeddings often learns this way. For the two-dimensional map of the "
        "paper, fine-tune the model (*Analysis settings → Training dynamics → Fine-tune the model*) or "
        "bring the training dynamics of your own model (README, \"Bring your own training\").",
        icon=":material/linear_scale:")

ids = examples["id"]  # a Series: turning a million Arrow strings into Python objects takes 0.1 s
summary = st.container()  # region counts and buttons, drawn above the chart once thresholds are read
chart_column, controls = st.columns([4, 1])
with controls:
    confidence_threshold = st.slider("Confidence threshold", 0.0, 1.0, 0.5, 0.01, key="datamap_conf",
                                     help="Below it (and not ambiguous): hard-to-learn; above: easy-to-learn.")
    variability_threshold = st.slider("Variability threshold", 0.0, 0.5, 0.2, 0.01, key="datamap_var",
                                      help="At or above it: ambiguous.")
    class_choice = st.selectbox("Class", ["all classes"] + list(dataset.classes), key="datamap_class",
                                help="A per-class data map.")
    mode = st.radio("A new selection", MODES, horizontal=True, key="datamap_selection_mode")

regions = cached.regions(str(run.path), cached.run_stamp(run.path), examples,
                         confidence_threshold, variability_threshold)
visible = np.ones(len(examples), dtype=bool) if class_choice == "all classes" else \
    (examples["label"] == class_choice).to_numpy()

counts = {name: int(((regions == name) & visible).sum()) for name in REGIONS}
with summary:
    for column, name in zip(st.columns(3), REGIONS):
        share = counts[name] / max(int(visible.sum()), 1)
        scope = "all" if class_choice == "all classes" else f"class {class_choice}"
        column.metric(name, f"{counts[name]:,}", f"{share:.0%} of {scope}", delta_color="off",
                      delta_arrow="off")
        if column.button(f"Select {name} ({counts[name]:,})", key=f"datamap_select_{name}",
                         disabled=counts[name] == 0):
            set_selection(dataset.fingerprint, ids[(regions == name) & visible],
                          source=f"data map: {name}", mode=mode)
            st.rerun()

# A box, lasso or click in the browser reran the app: apply it before drawing (ui.scatter).
apply_scatter_selection("datamap_scatter", examples["id"], dataset.fingerprint, origin="data map")
top = max(0.5, float(examples["variability"].max()) * 1.05)
texts = examples["text"] if "text" in examples.columns and len(examples) <= HOVER_TEXT_MAX_POINTS else None
points = ScatterPoints(x=examples["variability"].to_numpy(), y=examples["confidence"].to_numpy(),
                       key=(str(run.path), cached.run_stamp(run.path), "data map"), labels=examples["label"],
                       hover=lambda: hover_lines(examples["id"], texts))
lines = [dict(x0=variability_threshold, y0=0, x1=variability_threshold, y1=1),
         dict(x0=0, y0=confidence_threshold, x1=variability_threshold, y1=confidence_threshold)]
annotations = [dict(x=x, y=y, text=f"{name} ({counts[name]:,})", dy=dy)
               for name, x, y, dy in (("easy-to-learn", variability_threshold / 2, 1.0, 16),
                                      ("hard-to-learn", variability_threshold / 2, 0.0, -8),
                                      ("ambiguous", (variability_threshold + top) / 2, 0.5, 4))]
with chart_column:
    scatter_map(points, key="datamap_scatter", colour=examples["correctness"].round(2), colour_name="correctness",
                visible=visible, selected=selected_mask(examples["id"], get_selection(dataset.fingerprint)),
                size=point_size(len(examples), base=5.0), opacity=0.7, mode=mode, height=600,
                axes=("variability", "confidence"), x_range=(0.0, top), y_range=(-0.02, 1.02),
                lines=lines, annotations=annotations)
    st.caption("Regions follow the thresholds on the right (the paper draws them without fixed "
               "thresholds). Lasso or box points (toolbar, top right), or select a whole region; the "
               f"selection is shared with the Map and the other pages. All {len(examples):,} points drawn.")

selection_panel(dataset, examples, key="datamap_selection")
