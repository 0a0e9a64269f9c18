"""Session-state keys shared by app.py and the pages (one place, so names cannot drift)."""

from __future__ import annotations

import streamlit as st

from analytics.datasets import Dataset

DATASET = "dataset"            # the loaded Dataset, or absent
DATASET_ERROR = "dataset_error"  # str message when loading failed
DROP_MISSING = "drop_missing_labels"  # set of sources the user agreed to drop unlabeled rows for
DATASET_CHOICE = "dataset_choice"
DATASET_PATH = "dataset_path"
ENCODING = "dataset_encoding"
SAMPLE_SEED = "overview_sample_seed"


def current_dataset() -> Dataset | None:
    return st.session_state.get(DATASET)


def require_dataset() -> Dataset:
    """The loaded dataset, or stop the page with a message saying what to do."""
    dataset = current_dataset()
    if dataset is None:
        error = st.session_state.get(DATASET_ERROR)
        if error:
            st.error(error)
        st.info("Pick a bundled sample or open a file or image folder in the sidebar.")
        st.stop()
    return dataset
SELECTIONS = "selections"      # {fingerprint: ui.selection.Selection}
OPENED_RUN = "opened_run"      # AnalysisRun opened from a run folder in the sidebar
REVIEWER = "reviewer_name"     # the name typed in the sidebar (local mode; see ui.identity)
