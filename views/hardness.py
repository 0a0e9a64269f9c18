"""Hardness: every score's distribution, how the scores agree, the hardest examples, two-score
quadrants (label noise or a rare subgroup?) and how stable the scores are across seeds."""

from __future__ import annotations

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from ui import actions, cached
from ui.analysis import page_run
from ui.chart_selection import apply_scatter_selection
from ui.components import example_table
from ui.figures import HOVER_TEXT_MAX_POINTS, escape
from ui.scatter import ScatterPoints, hover_lines, point_size, scatter_map
from ui.selection import MODES, get_selection, selected_mask, set_selection
from ui.selection_panel import selection_panel

dataset, run = page_run("Hardness")
examples = run.examples
scores = actions.numeric_scores(tuple(examples.columns))
if not scores:
    st.info("This run has no scores (it was analysed with --no-scores).")
    st.stop()
descriptions = run.manifest.get("scores", {})
stamp = cached.run_stamp(run.path)

# ----------------------------------------------------------------------------- distributions
st.subheader("Distribution by class")
left, right = st.columns([1, 3])
score = left.selectbox("Score", scores, key="hardness_score")
group_by = left.radio("Group by", ["label"] + [c for c in ("region", "split", "cluster") if c in examples.columns],
                      key="hardness_group")
direction = "higher = harder" if actions.harder_is_higher(score) else "lower = harder"
source = next((d for d in descriptions.values() if score in d["columns"]), None)
if source:
    left.caption(f"{source['description']} {direction.capitalize()}. *{source['reference']}*.")
stats = cached.quantiles_by_group(str(run.path), stamp, examples, score, group_by)
box = go.Figure()
for row in stats.itertuples():
    box.add_trace(go.Box(name=escape(row.group), x=[escape(row.group)], q1=[row.q1], median=[row.median], q3=[row.q3],
                         lowerfence=[row.lower_fence], upperfence=[row.upper_fence], mean=[row.mean],
                         boxpoints=False, showlegend=False))
box.update_layout(height=320, margin=dict(l=0, r=0, t=10, b=0), yaxis_title=escape(score))
right.plotly_chart(box, width="stretch", key="hardness_box")

# ----------------------------------------------------------------------------- correlations
st.subheader("How the scores agree (Spearman)")
correlations = cached.score_agreement(str(run.path), stamp, examples, tuple(scores))
heat = px.imshow(correlations.round(2), text_auto=True, color_continuous_scale="RdBu", zmin=-1, zmax=1,
                 aspect="auto")
heat.update_layout(height=460, margin=dict(l=0, r=0, t=10, b=0))
st.plotly_chart(heat, width="stretch", key="hardness_heat")
st.caption("Scores measure hardness in different directions (confidence: low = hard; loss: high = "
           "hard), so strong agreement can show as −1.")

# ----------------------------------------------------------------------------- ranking
st.subheader("Hardest examples")
count_column, button_column = st.columns([1, 3], vertical_alignment="bottom")
top_n = count_column.number_input("How many", 10, 5000, 50, step=10, key="hardness_top_n")
ranked = cached.hardest(str(run.path), stamp, examples, score, int(top_n))
if button_column.button(f"Select these {len(ranked):,} examples", key="hardness_select_top"):
    set_selection(dataset.fingerprint, ranked["id"], source=f"hardness: top {len(ranked)} by {score}")
    st.rerun()
shown = [c for c in ("id", "label", "text", "image", "predicted_label", "region", score) if c in ranked.columns]
example_table(ranked[shown], kind=dataset.kind, height=320)

# ----------------------------------------------------------------------------- quadrant
st.subheader("Two scores against each other")
default_x = scores.index("knn_density") if "knn_density" in scores else 0
default_y = scores.index("loss") if "loss" in scores else min(1, len(scores) - 1)
qx, qy, qmode = st.columns([1, 1, 2])
x_score = qx.selectbox("Horizontal", scores, index=default_x, key="hardness_quad_x")
y_score = qy.selectbox("Vertical", scores, index=default_y, key="hardness_quad_y")
mode = qmode.radio("A new selection", MODES, horizontal=True, key="hardness_selection_mode")
# A box, lasso or click in the browser reran the app: apply it before drawing (ui.scatter).
apply_scatter_selection("hardness_quad", examples["id"], dataset.fingerprint, origin="hardness quadrant")
(x_median, x_low, x_high), (y_median, y_low, y_high) = (
    cached.score_axis(str(run.path), stamp, examples, name) for name in (x_score, y_score))
median_lines = ([dict(x0=x_median, y0=y_low, x1=x_median, y1=y_high)] if np.isfinite(x_median) else []) + \
               ([dict(x0=x_low, y0=y_median, x1=x_high, y1=y_median)] if np.isfinite(y_median) else [])
texts = examples["text"] if "text" in examples.columns and len(examples) <= HOVER_TEXT_MAX_POINTS else None
points = ScatterPoints(x=examples[x_score].to_numpy(), y=examples[y_score].to_numpy(),
                       key=(str(run.path), stamp, "hardness quadrant", x_score, y_score), labels=examples["label"],
                       hover=lambda: hover_lines(examples["id"], texts))
scatter_map(points, key="hardness_quad", colour=examples["label"], colour_name="label",
            selected=selected_mask(examples["id"], get_selection(dataset.fingerprint)),
            size=point_size(len(examples)), opacity=0.6, mode=mode, height=520,
            axes=(x_score, y_score), x_range=(x_low, x_high), y_range=(y_low, y_high),
            lines=median_lines)
st.caption("Dotted lines are the medians. With loss against density, for example: high loss in a "
           "dense region suggests a label error; high loss in a sparse region, a rare subgroup. Lasso or "
           f"box points (toolbar, top right); the selection is shared. All {len(examples):,} points drawn.")

# ----------------------------------------------------------------------------- stability
dynamics = run.manifest.get("dynamics") or {}
st.subheader("Stability across seeds")
if dynamics.get("seeds", 1) > 1 and (run.path / "dynamics.npy").exists():
    stability = cached.seed_stability(str(run.path), stamp, dynamics["early_epoch"],
                                      run.dataset.label_codes)
    st.dataframe(stability, hide_index=True, width="stretch",
                 column_config={"mean_spearman": st.column_config.ProgressColumn(
                     "mean Spearman between seeds", min_value=0.0, max_value=1.0, format="%.3f"),
                     "min_spearman": st.column_config.NumberColumn("lowest pair", format="%.3f")})
    st.caption(f"Each score computed from each of the {dynamics['seeds']} probe seeds separately, "
               "then ranked: 1 means every seed ranks the examples the same way.")
else:
    st.caption("One training run only: nothing to compare across seeds.")

selection_panel(dataset, examples, key="hardness_selection")
