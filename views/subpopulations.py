"""Subpopulations: clusters named from content, per-cluster analysis, ranked slices where the
model does worse, and subsets balanced across clusters."""

from __future__ import annotations

import streamlit as st

from analytics.names import CLUSTER
from ui import cached
from ui import subpopulation_panels as panels
from ui.analysis import page_run
from ui.selection_panel import selection_panel

dataset, run = page_run("Subpopulations")
stamp = cached.run_stamp(run.path)
clusters = cached.clusters_table(str(run.path), stamp, dataset.fingerprint)
if clusters is None or CLUSTER not in run.examples.columns:
    st.info("This run has no clusters (it was made before clustering existed or without it). "
            "Compute it again from *Analysis settings*, or run `cartographer analyze` again.")
    st.stop()

page = panels.ClusteredRun(dataset, run, stamp, clusters)
panels.clustering_summary(page)
level, column, table, percent = panels.cluster_list(page)
panels.cluster_panel(page, level, column, table, percent)
panels.slices_panel(page)
panels.balanced_subset_panel(page)
selection_panel(dataset, run.examples, key="subpop_selection")
