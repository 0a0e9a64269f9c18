"""The shared selection: one set of example ids per dataset, seen and extended by every page."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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


_MASK_MEMO = "selected_mask_memo"  # the last (selection, ids, mask) of this session


def selected_mask(ids: np.ndarray | pd.Series, selection: Selection) -> np.ndarray:
    """Boolean mask over ``ids`` (array or Series of str) of the selected examples.

    One hash lookup per id, in Arrow (a Python set lookup per id takes 0.6 s at 1M ids; np.isin
    on object arrays sorts Python strings). The last mask is kept for the session: a rerun that
    changes neither the selection nor the ids (pass the run's ``examples["id"]``, whose Arrow
    data stays the same) reuses it, and so does the selection panel drawn after the chart.
    """
    if not selection.ids:
        return np.zeros(len(ids), dtype=bool)
    values = pa.array(ids) if isinstance(ids, pd.Series) else pa.array(np.asarray(ids, dtype=object))
    if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
    memo = st.session_state.get(_MASK_MEMO)
    if memo is not None and memo[0] is selection and len(memo[1]) == len(values) and memo[1].equals(values):
        return memo[2]
    mask = pc.is_in(values, value_set=pa.array(list(selection.ids), pa.string())).to_numpy(zero_copy_only=False)
    st.session_state[_MASK_MEMO] = (selection, values, mask)
    return mask


def set_selection_rows(fingerprint: str, ids: pd.Series, rows: np.ndarray, *, source: str,
                       mode: str = "Replace") -> Selection:
    """:func:`set_selection` for rows of ``ids`` (the unique ids of a run's examples), keeping the
    new selection's mask for :func:`selected_mask` (computed from the rows, not from the ids)."""
    before = selected_mask(ids, get_selection(fingerprint)) if mode != "Replace" else np.zeros(len(ids), dtype=bool)
    selection = set_selection(fingerprint, ids.iloc[rows], source=source, mode=mode)
    mask = before.copy()
    mask[rows] = mode != "Remove"
    st.session_state[_MASK_MEMO] = (selection, pa.array(ids), mask)
    return selection
