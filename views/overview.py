"""Overview: what the dataset holds — size, class balance, columns, missing values, examples."""

import pandas as pd
import streamlit as st

from ui import cached, state
from ui.components import example_table
from ui.figures import plain_urls

dataset = state.require_dataset()
summary = cached.summarize(dataset.fingerprint, dataset)

st.title(plain_urls(dataset.name))  # a file named www.example.com.csv is not a link
st.caption(f"{dataset.kind.capitalize()} dataset · `{dataset.source}` · fingerprint `{dataset.fingerprint}`")

metrics = st.columns(4)
metrics[0].metric("Examples", f"{summary.n_examples:,}")
metrics[1].metric("Classes", summary.n_classes)
metrics[2].metric("Columns", len(dataset.table.columns))
metrics[3].metric("Largest / smallest class", f"{summary.imbalance_ratio:.1f}×",
                  help="How imbalanced the labels are: 1.0× means every class has the same size.")

for note in dataset.notes:
    st.info(note)
if dataset.skipped:
    with st.expander(f"{len(dataset.skipped)} files skipped (not readable as images)"):
        st.dataframe(pd.DataFrame([{"file": s.path, "reason": s.reason} for s in dataset.skipped]),
                     hide_index=True, width="stretch")

balance, splits = st.columns([3, 2])
with balance:
    st.subheader("Class balance")
    # a table with a bar per class, not a chart: it shows at once (the Plotly bundle, 4.7 MB,
    # took the Overview from 1.3 s to 3 s in a fresh browser) and lists many classes in order
    counts = summary.class_counts
    st.dataframe(counts, hide_index=True, width="stretch", key="class_balance",
                 height=min(36 + 35 * len(counts), 420),
                 column_config={
                     "label": st.column_config.TextColumn("label"),
                     "count": st.column_config.ProgressColumn(
                         "examples", format="%d", min_value=0, max_value=int(max(counts["count"].max(), 1))),
                     "share": st.column_config.NumberColumn("share", format="percent")})
with splits:
    if summary.split_counts is not None:
        st.subheader("Splits")
        st.dataframe(summary.split_counts.T.rename_axis("label"), width="stretch")
    else:
        st.subheader("Splits")
        st.caption("No split column: later stages use cross-validation for held-out scores.")

with st.expander("Columns and missing values", expanded=True):
    st.dataframe(
        summary.columns[["column", "role", "source column", "dtype", "missing", "missing_share", "distinct"]],
        column_config={"missing_share": st.column_config.ProgressColumn(
            "missing %", format="percent", min_value=0.0, max_value=1.0)},
        hide_index=True, width="stretch",
    )

if dataset.kind == "image":
    st.subheader("Examples per class")
    per_class = dataset.table.groupby("label", sort=False).head(12)
    for label in dataset.classes[:30]:
        name, gallery = st.columns([1, 9], vertical_alignment="center")
        name.text(label)  # plain text: a label is data, never markup
        gallery.image(per_class.loc[per_class["label"] == label, "image"].tolist(), width=48)
    if len(dataset.classes) > 30:
        st.caption(f"Showing 30 of {len(dataset.classes)} classes.")

st.subheader("A sample of examples")
seed = st.session_state.setdefault(state.SAMPLE_SEED, 0)
if st.button("Show another sample", icon=":material/shuffle:"):
    st.session_state[state.SAMPLE_SEED] = seed = seed + 1
rows = dataset.table.sample(n=min(20, len(dataset.table)), random_state=seed)
example_table(rows, kind=dataset.kind)
