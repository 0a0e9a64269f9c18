"""The shared selection: one set of example ids per dataset, seen and extended by every page."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from ui import state

MODES = ("Replace", "Add", "Remove")


@dataclass(frozen=True)
class Selection:
    ids: frozenset[str]
    source: str  # where the last change came from ("map: lasso", "filter", "saved: name")


def get_selection(fingerprint: str) -> Selection:
    return st.session_state.setdefault(state.SELECTIONS, {}).get(fingerprint, Selection(frozenset(), ""))


def set_selection(fingerprint: str, ids, *, source: str, mode: str = "Replace") -> Selection:
    """Replace, add to or remove from the dataset's selection."""
    current = get_selection(fingerprint).ids
    new = frozenset(str(i) for i in ids)
    combined = {"Replace": new, "Add": current | new, "Remove": current - new}[mode]
    selection = Selection(frozenset(combined), source)
    st.session_state.setdefault(state.SELECTIONS, {})[fingerprint] = selection
    return selection


def selected_mask(ids: np.ndarray, selection: Selection) -> np.ndarray:
    """Boolean mask over ``ids`` (array of str) of the selected examples."""
    if not selection.ids:
        return np.zeros(len(ids), dtype=bool)
    # a hash lookup per id: np.isin on object arrays sorts Python strings (minutes at 1M)
    return pd.Index(ids).isin(selection.ids)
