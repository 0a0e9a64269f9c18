"""Impact: what a curation decision does to a model, measured by retraining the probe — pruning
curves by score, easy-to-hard buckets, and the what-if of a review session or the selection."""

from __future__ import annotations

import streamlit as st

from ui import cached
from ui import impact_panels as panels
from ui.analysis import page_run

dataset, run = page_run("Impact")
stamp = cached.run_stamp(run.path)
data = cached.impact_data(str(run.path), stamp, run)
if data.scores.empty:
    st.info("This run has no scores (it was analysed with --no-scores): nothing to rank by.")
    st.stop()
st.caption("Retrain the probe on curated versions of the data and measure accuracy on rows it never "
           "trained on, before anyone commits to a change. Results are kept in the workspace.")

experiment = st.radio("Experiment", list(panels.EXPERIMENTS), format_func=panels.EXPERIMENTS.get, horizontal=True,
                      key="impact_experiment")
common = panels.evaluation_settings(data)
config, changes = panels.experiment_settings(experiment, data, dataset.fingerprint, common)
result = panels.stored_or_running(experiment, data, config, changes)
panels.result_panel(experiment, result, config, dataset)
