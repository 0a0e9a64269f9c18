"""Issues: every data issue the run's checks found (duplicates, split leaks, row order, class
imbalance, columns, spurious cues, image properties), one row per issue type, each a click away
from the shared selection; then the dataset-level tables and the leak-free split."""

from __future__ import annotations

import streamlit as st

from ui import issues as page
from ui.analysis import page_run
from ui.components import example_table
from ui.figures import escape_markdown
from ui.selection import set_selection_rows
from ui.selection_panel import selection_panel

SEVERITY_ICONS = {"high": ":red[high]", "medium": ":orange[medium]", "low": ":blue[low]", "none": ":gray[none]"}

dataset, run = page_run("Issues")
examples = run.examples
summary = page.issue_summary(run)
if summary is None:
    st.info("This run has no data-issue checks (it was analysed with --no-issues, or before the checks "
            "existed). Analyse the dataset again to find duplicates, split leaks and the rest.")
    st.stop()

table = page.issue_table(summary)
st.dataframe(table, hide_index=True, width="stretch", key="issues_table",
             column_config={"meaning": st.column_config.TextColumn("meaning", width="large")})

# ----------------------------------------------------------------------------- one row per issue
st.subheader("Each issue")
shown = [c for c in ("id", "label", "text", "image", "split") if c in examples.columns]
for row in table.itertuples(index=False):
    name = row[0]
    entry = summary["issues"][name]
    with st.container(border=True, key=f"issues_row_{name}"):
        left, right = st.columns([3, 1], vertical_alignment="center")
        left.markdown(f"**{name}** · {entry['count']:,} {entry['unit']} · severity "
                      f"{SEVERITY_ICONS.get(entry['severity'], entry['severity'])}  \n{entry['meaning']}")
        rows = page.affected_rows(examples, entry.get("select"))
        if rows is not None and len(rows):
            if right.button(f"Select {len(rows):,} examples", key=f"issues_select_{name}"):
                set_selection_rows(dataset.fingerprint, examples["id"], rows, source=f"issues: {name}")
                st.rerun()
        named = entry.get("columns") or entry.get("properties")
        if named:  # dataset text: column names, escaped
            left.markdown("Columns: " + ", ".join(f"`{escape_markdown(c)}`" for c in named))
        if entry["examples"]:
            example_table(examples.iloc[entry["examples"][:3]][shown], kind=dataset.kind)

# ----------------------------------------------------------------------------- dataset tables
st.subheader("Leaks between splits")
leaks = summary.get("split_leaks")
if not leaks:
    st.caption("No split column, or the duplicate check was off: nothing to compare.")
else:
    pairs = page.dataset_table(summary, "split_leaks")
    if pairs.empty:
        st.caption("No exact or near copy crosses two splits.")
    else:
        st.dataframe(pairs, hide_index=True, width="stretch", key="issues_leaks")
    moved = leaks["leak_free_split"]["moved"]
    st.caption(f"The leak-free split moves whole duplicate sets to one split: {moved:,} examples change split.")
    download = page.leak_free_download(run, summary)
    st.download_button(f"Download the leak-free split (CSV, {moved:,} moved)", download.data,
                       file_name=f"{dataset.name}-leak-free{download.suffix}", mime=download.mime_type,
                       key="issues_leak_free")
    st.download_button("Download its manifest (JSON)", download.manifest_bytes,
                       file_name=f"{dataset.name}-leak-free{download.suffix}.manifest.json",
                       mime="application/json", key="issues_leak_free_manifest")

st.subheader("Row order (non-IID)")
order = summary.get("non_iid") or {}
if "p_value" in order:
    st.metric("p-value (row order)", f"{order['p_value']:.3g}")
    for column, test in (order.get("time_columns") or {}).items():
        st.metric(f"p-value along {escape_markdown(column)}", f"{test['p_value']:.3g}")
    st.caption("Datalab's permutation test: a small p-value means neighbours in the embedding sit close "
               "together in the row order (or in time), so the rows are not shuffled.")
else:
    st.caption(order.get("skipped", "The order check was off."))

for key, title in (("class_imbalance", "Class balance"), ("columns", "Columns"),
                   ("identifier_columns", "Identifier-like columns"),
                   ("spurious_cues", "Spurious cues (what predicts the label beside the content)")):
    frame = page.dataset_table(summary, key)
    if not frame.empty:
        st.subheader(title)
        st.dataframe(frame, hide_index=True, width="stretch", key=f"issues_{key}")

selection_panel(dataset, examples, key="issues_selection")
