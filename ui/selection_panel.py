"""The shared selection shown under a view: its rows with previews, save and load by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from analytics.datasets import Dataset
from analytics.names import without_map_columns
from analytics.selections import SelectionError, list_selections, save_selection
from analytics.workspace import Workspace
from ui import state
from ui.components import example_table
from ui.figures import escape_markdown
from ui.selection import get_selection, selected_mask, set_selection

MAX_ROWS_SHOWN = 500


def selection_panel(dataset: Dataset, examples: pd.DataFrame, *, key: str = "selection") -> None:
    selection = get_selection(dataset.fingerprint)
    workspace = Workspace.default()
    st.subheader(f"Selection · {len(selection.ids):,} examples")
    if selection.ids:
        st.caption(f"Last change: {escape_markdown(selection.source)}. The selection is shared with the other pages.")
        rows = np.flatnonzero(selected_mask(examples["id"], selection))
        # only the rows shown are copied (a selection may hold most of a million rows)
        shown = examples.iloc[rows[:MAX_ROWS_SHOWN]]
        shown = shown[without_map_columns(shown.columns)]
        if len(rows) > MAX_ROWS_SHOWN:
            st.caption(f"Showing the first {MAX_ROWS_SHOWN} of {len(rows):,} selected rows.")
        example_table(shown, kind=dataset.kind, height=360)
        name_column, save_column, clear_column = st.columns([3, 1, 1], vertical_alignment="bottom")
        name = name_column.text_input("Save the selection as", key=f"{key}_name",
                                      placeholder="e.g. suspicious mail/web overlap")
        if save_column.button("Save", key=f"{key}_save", disabled=not name.strip()):
            try:
                saved = save_selection(workspace, dataset.fingerprint, name, sorted(selection.ids),
                                       source=selection.source,
                                       author=st.session_state.get(state.REVIEWER, ""))
                st.success(f"Saved '{escape_markdown(saved.name)}' ({saved.size:,} examples).")
            except SelectionError as exc:
                st.error(str(exc))
        if clear_column.button("Clear selection", key=f"{key}_clear"):
            set_selection(dataset.fingerprint, [], source="cleared")
            st.rerun()
    else:
        st.caption("Nothing selected yet: draw a lasso or a box on the map (toolbar, top right), "
                   "click a point, or select the points matching a filter.")

    saved = list_selections(workspace, dataset.fingerprint)
    if saved:
        with st.expander(f"Saved selections ({len(saved)})"):
            names = [s.name for s in saved]
            pick, load, add = st.columns([3, 1, 1], vertical_alignment="bottom")
            chosen = pick.selectbox("Saved selection", names, key=f"{key}_saved",
                                    format_func=lambda n: f"{n} ({next(s.size for s in saved if s.name == n):,})")
            entry = next(s for s in saved if s.name == chosen)
            if load.button("Load", key=f"{key}_load"):
                set_selection(dataset.fingerprint, entry.ids, source=f"saved: {entry.name}")
                st.rerun()
            if add.button("Add", key=f"{key}_add"):
                set_selection(dataset.fingerprint, entry.ids, source=f"saved: {entry.name}", mode="Add")
                st.rerun()
            st.caption(f"Saved by {escape_markdown(entry.author or 'anonymous')} on {entry.created} from "
                       f"{escape_markdown(entry.source or '—')}.")
