"""Reusable display pieces: example tables with previews."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import cached


def example_table(rows: pd.DataFrame, *, kind: str, height: int | None = None) -> None:
    """Show example rows: text wide, images as thumbnails (data URIs built on the server)."""
    shown = rows.copy()
    config: dict[str, object] = {
        "id": st.column_config.TextColumn("id", width="small"),
        "label": st.column_config.TextColumn("label", width="small"),
    }
    if "text" in shown.columns:
        config["text"] = st.column_config.TextColumn("text", width="large")
    if "image" in shown.columns:
        shown.insert(2, "preview", [cached.thumbnail(p) for p in shown["image"]])
        config["preview"] = st.column_config.ImageColumn("preview", width="small")
        config["image"] = st.column_config.TextColumn("file", width="medium")
    st.dataframe(shown, column_config=config, hide_index=True, width="stretch",
                 height=height or "auto", row_height=64 if "image" in shown.columns else None)
