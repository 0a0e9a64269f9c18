"""The Subpopulations page's panels: the clustering's summary, the cluster list, one cluster
opened (members, data map, worst slices, rename, select), the ranked slices and a subset
balanced across clusters. Every panel takes the open run as :class:`ClusteredRun`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from analytics.names import CLUSTER_LEVELS, CONTENT_COLUMNS, REGIONS, UMAP_COLUMNS, without_map_columns
from ui import actions, cached
from ui.components import example_table
from ui.figures import HOVER_TEXT_MAX_POINTS, escape_markdown, map_figure
from ui.identity import current_user
from ui.opened_run import OpenedRun
from ui.selection import MODES, set_selection

__all__ = ["LEVELS", "MAX_MEMBERS_SHOWN", "ClusteredRun", "balanced_subset_panel", "cluster_list",
           "cluster_panel", "clustering_summary", "slices_panel"]

LEVELS = {level.capitalize(): (level, column) for level, column in CLUSTER_LEVELS.items()}
MAX_MEMBERS_SHOWN = 200
SHARE_COLUMNS = tuple(f"{region}_share" for region in REGIONS) + ("label_issue_share",)
SLICE_COLUMNS = {"error_rate": st.column_config.NumberColumn("error rate", format="percent"),
                 "ci_low": st.column_config.NumberColumn("CI low", format="percent"),
                 "ci_high": st.column_config.NumberColumn("CI high", format="percent"),
                 "lift": st.column_config.NumberColumn("lift", format="%.2f×")}


@dataclass(frozen=True, eq=False)
class ClusteredRun(OpenedRun):
    """The open run and its cluster table (``clusters.parquet`` with the workspace's names)."""

    clusters: pd.DataFrame

    @property
    def has_errors(self) -> bool:
        """The run has per-example correctness to judge clusters and slices by."""
        return "correct" in self.examples.columns

    @property
    def ids(self) -> np.ndarray:
        return self.examples["id"].to_numpy(dtype=object)


def clustering_summary(page: ClusteredRun) -> None:
    """How the clusters were made, and how evenly accuracy is spread over them."""
    info = page.run.manifest.get("clusters") or {}
    uniform = info.get("uniformity") or {}
    method = "k-means" if info.get("method") == "kmeans" else "HDBSCAN on the map"
    chosen_k = info.get("config", {}).get("k")
    st.caption(
        f"{info.get('k', '?')} clusters by **{method}**"
        + (" (k chosen by silhouette)" if info.get("method") == "kmeans" and not chosen_k else "")
        + f", {info.get('n_fine', '?')} fine clusters inside them"
        + (f", {info['noise']:,} examples left unassigned (noise)" if info.get("noise") else "")
        + (f". Errors are those of the **{info['errors']}** predictions." if page.has_errors else ".")
        + " Names come from the content; rename them below.")
    if page.has_errors and uniform:
        cols = st.columns(4)
        cols[0].metric("Overall accuracy", f"{page.examples['correct'].mean():.1%}")
        cols[1].metric("Harmony", f"{uniform['harmony']:.3f}",
                       help="How evenly accuracy is spread over the clusters: the normalised entropy of "
                            "the clusters' accuracy shares (1 = the same accuracy everywhere). Defined in "
                            "docs/SUBPOPULATIONS.md.")
        cols[2].metric("Worst cluster accuracy", f"{uniform['worst_accuracy']:.1%}")
        cols[3].metric("Best − worst", f"{uniform['gap']:.1%}")


def cluster_list(page: ClusteredRun) -> tuple[str, str, pd.DataFrame, dict]:
    """The level radio and its clusters' table; returns the level, its column, the table and
    the percent column configuration the cluster panel reuses."""
    level_label = st.radio("Level", list(LEVELS), horizontal=True, key="subpop_level",
                           help="Fine clusters split every coarse cluster again.")
    level, column = LEVELS[level_label]
    table = page.clusters[page.clusters["level"] == level].reset_index(drop=True)
    shown_columns = ["cluster", "name", "size", "share"] + (["accuracy"] if "accuracy" in table.columns else []) + \
        ["purity", "top_label", "label_mix"] + [c for c in SHARE_COLUMNS if c in table.columns] + \
        [c for c in table.columns if c.startswith("mean_")]
    if level == "fine":
        shown_columns.insert(1, "parent")
    percent = {c: st.column_config.ProgressColumn(c.replace("_share", "").replace("_", " "), format="percent",
                                                  min_value=0.0, max_value=1.0)
               for c in shown_columns if c.endswith("_share") or c in ("share", "purity", "accuracy")}
    st.dataframe(table[shown_columns], hide_index=True, width="stretch", height=min(420, 38 + 35 * len(table)),
                 column_config={"name": st.column_config.TextColumn("name", width="medium"), **percent},
                 key="subpop_table")
    st.caption("Click a column header to sort. Accuracy is judged on every example of the cluster.")
    return level, column, table, percent


def cluster_panel(page: ClusteredRun, level: str, column: str, table: pd.DataFrame, percent: dict) -> None:
    """One cluster opened: its facts, select and rename, representatives, fine clusters inside,
    its data map, its worst slices and its members."""
    labels = {row.cluster: f"{row.cluster} · {row.name} ({row.size:,})" for row in table.itertuples()}
    picked = st.selectbox("Open a cluster", table["cluster"].tolist(), format_func=labels.get,
                          key=f"subpop_open_{level}")
    row = table.set_index("cluster").loc[picked]
    members_mask = (page.examples[column] == picked).to_numpy()
    members = page.examples[members_mask]
    with st.container(border=True):
        _cluster_facts(page, level, picked, row)
        _cluster_actions(page, level, picked, row, members)
        _representatives(page, row, members)
        if level == "coarse":
            _fine_inside(page, picked, percent)
        left, right = st.columns(2)
        with left:
            _cluster_data_map(page, members, members_mask, picked)
        with right:
            _worst_slices(page, column, picked)
        _members(page, members)


def _cluster_facts(page: ClusteredRun, level: str, picked, row: pd.Series) -> None:
    st.subheader(f"Cluster {picked}: {escape_markdown(row['name'])}")
    facts = [f"{int(row['size']):,} examples ({row['share']:.1%})", f"label mix {row['label_mix']}"]
    if page.has_errors:
        facts.append(f"accuracy {row['accuracy']:.1%} (95% CI {row['accuracy_low']:.1%}–{row['accuracy_high']:.1%})")
    if "label_issue_share" in row:
        facts.append(f"likely label issues {row['label_issue_share']:.1%}")
    if level == "fine":
        facts.append(f"inside coarse cluster {int(row['parent'])}")
    st.caption(" · ".join(escape_markdown(f) for f in facts))
    if row.get("terms") is not None and len(row["terms"]):
        st.caption("Distinctive terms (class-based TF-IDF): " + ", ".join(escape_markdown(t) for t in row["terms"]))
    if row.get("features") is not None and len(row["features"]):
        st.caption("Deviates most in: " + ", ".join(escape_markdown(t) for t in row["features"]))


def _cluster_actions(page: ClusteredRun, level: str, picked, row: pd.Series, members: pd.DataFrame) -> None:
    """Select the cluster (replace, add or remove), and rename it."""
    act, rename = st.columns([2, 3], vertical_alignment="bottom")
    mode = act.radio("A new selection", MODES, horizontal=True, key="subpop_selection_mode")
    if act.button(f"Select this cluster ({len(members):,})", key="subpop_select_cluster", type="primary"):
        set_selection(page.dataset.fingerprint, members["id"],
                      source=f"subpopulations: cluster {picked} ({row['name']})", mode=mode)
        st.rerun()
    new_name = rename.text_input("Rename", value=row["name"], key=f"subpop_name_{level}_{picked}",
                                 help=f"Automatic name: {row['auto_name']}. Leave empty to restore it.")
    if rename.button("Save name", key="subpop_save_name", disabled=new_name == row["name"]):
        try:
            actions.save_cluster_name(page.dataset.fingerprint, page.path, level, int(picked), new_name,
                                     actor=current_user())
            st.rerun()
        except ValueError as exc:
            st.error(str(exc))


def _representatives(page: ClusteredRun, row: pd.Series, members: pd.DataFrame) -> None:
    representatives = [str(i) for i in (row.get("representatives") if row.get("representatives") is not None else [])]
    if representatives:
        st.markdown("**Representative members** (nearest the cluster's centre)")
        shown = page.examples.set_index("id").loc[[i for i in representatives if i in set(members["id"])]].reset_index()
        example_table(shown[[c for c in CONTENT_COLUMNS if c in shown.columns]], kind=page.dataset.kind)


def _fine_inside(page: ClusteredRun, picked, percent: dict) -> None:
    clusters = page.clusters
    inside = clusters[(clusters["level"] == "fine") & (clusters["parent"] == picked)]
    if len(inside) > 1:
        st.markdown("**Fine clusters inside**")
        st.dataframe(inside[["cluster", "name", "size", "purity", "label_mix"]
                            + (["accuracy"] if page.has_errors else [])],
                     hide_index=True, width="stretch", key="subpop_inside",
                     column_config={"purity": percent.get("purity"), "accuracy": percent.get("accuracy")})


def _cluster_data_map(page: ClusteredRun, members: pd.DataFrame, members_mask: np.ndarray, picked) -> None:
    examples = page.examples
    if "confidence" in examples.columns and len(members):
        st.markdown("**Its data map**")
        built = map_figure(members["variability"].to_numpy(), members["confidence"].to_numpy(),
                           colour=members["correctness"].round(2), colour_name="correctness",
                           hover=cached.hover_previews(page.path, page.stamp, examples)[members_mask]
                           if len(examples) <= HOVER_TEXT_MAX_POINTS else None,
                           size=6.0, opacity=0.7, height=380, uirevision=f"subpop-{picked}",
                           axis_titles=("variability", "confidence"))
        built.figure.update_yaxes(range=[-0.02, 1.02])
        st.plotly_chart(built.figure, width="stretch", key="subpop_datamap")
        if built.sampled:
            st.caption(built.caption())
        if "region" in members.columns:
            st.caption(" · ".join(f"{name}: {count:,}" for name, count in members["region"].value_counts().items()))


def _worst_slices(page: ClusteredRun, column: str, picked) -> None:
    st.markdown("**Its worst slices**")
    inner = cached.slices_within(page.path, page.stamp, column, int(picked), page.examples,
                                 actions.slice_config(page.run.manifest)) if page.has_errors else None
    if inner is None or inner.empty:
        st.caption("No slice inside this cluster does clearly worse than the cluster as a whole.")
    else:
        st.caption(f"Against this cluster's own error rate ({inner['overall_error_rate'].iloc[0]:.1%}).")
        st.dataframe(inner[["slice", "support", "error_rate", "ci_low", "ci_high", "lift"]].head(20),
                     hide_index=True, width="stretch", key="subpop_inner_slices", column_config=SLICE_COLUMNS)


def _members(page: ClusteredRun, members: pd.DataFrame) -> None:
    """The cluster's members, hardest first by a score if asked."""
    st.markdown("**Members**")
    sort_options = ["(dataset order)"] + [c for c in actions.numeric_scores(tuple(page.examples.columns))]
    sort_by = st.selectbox("Order by", sort_options, key="subpop_member_order",
                           help="Hardest first for the chosen score.")
    ordered = members
    if sort_by != "(dataset order)":
        ordered = members.sort_values(sort_by, ascending=not actions.harder_is_higher(sort_by), kind="stable")
    if len(ordered) > MAX_MEMBERS_SHOWN:
        st.caption(f"Showing {MAX_MEMBERS_SHOWN} of {len(ordered):,} members.")
    example_table(ordered[without_map_columns(ordered.columns)].head(MAX_MEMBERS_SHOWN), kind=page.dataset.kind,
                  height=320)


def slices_panel(page: ClusteredRun) -> None:
    """The ranked slices where the model does worse than overall; one opened feeds the selection."""
    st.subheader("Where the model does worse: slices")
    slices = cached.slices_table(page.path, page.stamp)
    if slices is None:
        st.info("Slices need predictions to judge; this run has no scores.")
        return
    if slices.empty:
        st.success("No slice does clearly worse than overall.")
        return
    config = actions.slice_config(page.run.manifest)
    st.caption(
        f"Clusters, metadata values, binned numeric columns and pairs of them with at least "
        f"{config.support(len(page.examples)):,} examples, ranked by the lower end of the 95% interval of "
        f"their error rate minus the overall error rate ({slices['overall_error_rate'].iloc[0]:.1%}): "
        "sizable, clear failures first.")
    top = slices.head(100).reset_index(drop=True)
    st.dataframe(top[["slice", "support", "errors", "error_rate", "ci_low", "ci_high", "lift"]], hide_index=True,
                 width="stretch", height=320, key="subpop_slices",
                 column_config={"slice": st.column_config.TextColumn("slice", width="large"), **SLICE_COLUMNS})
    slice_choice = st.selectbox("Open a slice", range(len(top)), key="subpop_slice",
                                format_func=lambda i: f"{i + 1}. {top.loc[i, 'slice']} ({top.loc[i, 'support']:,})")
    features = cached.slice_features(page.path, page.stamp, page.examples, page.clusters, config)
    chosen = top.loc[slice_choice]
    mask = actions.slice_members(features, chosen["features"], chosen["codes"])
    slice_mode = st.radio("A new selection", MODES, horizontal=True, key="subpop_slice_mode")
    if st.button(f"Select this slice ({int(mask.sum()):,})", key="subpop_select_slice"):
        set_selection(page.dataset.fingerprint, page.ids[mask], source=f"subpopulations: slice {chosen['slice']}",
                      mode=slice_mode)
        st.rerun()


def balanced_subset_panel(page: ClusteredRun) -> None:
    """A subset with a cap on any one cluster's share: its settings, then its map, selection and
    download."""
    st.subheader("A subset balanced across clusters")
    st.caption("Caps the share of any one cluster, as in cluster-based balanced sampling: big clusters "
               "give up examples so small ones are represented. Members are drawn at random.")
    examples = page.examples
    b1, b2, b3, b4 = st.columns(4)
    size = b1.number_input("Subset size", 1, len(examples), min(1000, max(1, len(examples) // 2)), step=100,
                           key=f"subpop_balanced_size_{page.dataset.fingerprint}")
    cap = b2.slider("Cap per cluster", 0.01, 1.0, 0.2, 0.01, key="subpop_balanced_cap", format="%.2f",
                    help="The largest share of the subset one cluster may have.")
    balance_level = b3.radio("Across", list(LEVELS), horizontal=True, key="subpop_balanced_level")
    seed = b4.number_input("Seed", 0, 1_000_000, 0, key="subpop_balanced_seed")
    column = LEVELS[balance_level][1]
    include_noise = False
    if (examples[column] < 0).any():
        include_noise = st.checkbox("Treat noise as a cluster", key="subpop_balanced_noise")
    try:
        rows = cached.balanced_rows(page.path, page.stamp, column, examples, int(size), float(cap), int(seed),
                                    include_noise)
    except ValueError as exc:
        st.error(str(exc))
        return
    _balanced_subset(page, rows, column, int(size), float(cap))


def _balanced_subset(page: ClusteredRun, rows: np.ndarray, column: str, size: int, cap: float) -> None:
    examples = page.examples
    subset = np.zeros(len(examples), dtype=bool)
    subset[rows] = True
    counts = pd.Series(examples[column].to_numpy()[rows]).value_counts()
    note = f"{len(rows):,} examples from {len(counts)} clusters; the largest has {counts.max() if len(counts) else 0:,} " \
           f"({(counts.max() / max(len(rows), 1)) if len(counts) else 0:.0%})."
    if len(rows) < size:
        note += f" Fewer than {size:,}: the cap and the clusters' sizes allow no more."
    st.caption(note)
    x, y = UMAP_COLUMNS
    preview = map_figure(examples[x].to_numpy(), examples[y].to_numpy(),
                         colour=pd.Series(np.where(subset, "in the subset", "not in it")), colour_name="subset",
                         size=4.0 if len(examples) > 20_000 else 6.0, opacity=0.8, height=420,
                         uirevision=f"balanced-{page.dataset.fingerprint}")
    st.plotly_chart(preview.figure, width="stretch", key="subpop_balanced_map")
    if preview.sampled:
        st.caption(preview.caption())
    send, download = st.columns(2)
    balanced_mode = send.radio("A new selection", MODES, horizontal=True, key="subpop_balanced_mode")
    if send.button(f"Send the {len(rows):,} examples to the selection", key="subpop_balanced_send"):
        set_selection(page.dataset.fingerprint, page.ids[rows],
                      source=f"subpopulations: balanced subset ({len(rows):,}, cap {cap:.0%})", mode=balanced_mode)
        st.rerun()
    export_columns = without_map_columns(examples.columns)
    download.download_button("Download the subset (CSV)", examples.iloc[rows][export_columns].to_csv(index=False),
                             file_name=f"{page.dataset.name}-balanced-{len(rows)}.csv", mime="text/csv",
                             key="subpop_balanced_download")
