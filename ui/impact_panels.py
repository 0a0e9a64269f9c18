"""The Impact page's panels: the evaluation and probe settings, each experiment's settings, the
run button or the running job's progress, and the result (figure, tables, downloads). Every
panel takes what it draws as arguments; the page only chains them."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from ui import cached, impact_runs, jobs
from ui.figures import escape_markdown
from ui.identity import current_user, require_user
from ui.selection import get_selection

__all__ = ["EXPERIMENTS", "evaluation_settings", "experiment_settings", "result_panel", "stored_or_running",
           "verdict"]

EXPERIMENTS = {"pruning": "Pruning curves", "easy-hard": "Easy to hard", "what-if": "What-if"}
EVALUATIONS = {"auto": "Automatic", "test-split": "Test split", "cross-validation": "Cross-validation"}
DIRECTIONS = {"drop-hardest": "Drop the hardest first", "drop-easiest": "Drop the easiest first (Data Diet)",
              "window": "Keep a window of the ranking"}
SESSION, SELECTION = "A review session", "The current selection"
FRACTIONS = impact_runs.DEFAULT_FRACTIONS
DEFAULT_SCORES = ("el2n", "aum", "label_quality")
PERCENT = st.column_config.NumberColumn(format="percent")


# ----------------------------------------------------------------------------- evaluation and probe
def evaluation_settings(data) -> dict:
    """The *Evaluation and probe* expander; returns the settings every experiment shares
    (``seeds``, ``evaluation``, ``probe``, ``equal_steps``). Stops the page on an impossible
    evaluation."""
    with st.expander("Evaluation and probe", expanded=False):
        e1, e2, e3, e4 = st.columns(4)
        method = e1.radio("Evaluate on", list(EVALUATIONS), format_func=EVALUATIONS.get, key="impact_evaluation",
                          help="Automatic: the 'test' split when the data has one, else repeated K-fold "
                               "cross-validation. Either way no probe is judged on a row it trained on.")
        folds = e2.number_input("Folds", 2, 10, 5, key="impact_folds")
        repeats = e3.number_input("Repeats", 1, 5, 1, key="impact_repeats", help="Cross-validation reshuffled.")
        seeds = e4.number_input("Seeds", 1, 10, 3, key="impact_seeds",
                                help="Probes trained per point (and random draws for the baselines).")
        p1, p2 = st.columns([3, 1])
        probes = {"linear": f"Linear head (fast): {impact_runs.describe_probe(impact_runs.IMPACT_PROBE)}"}
        if data.probe is not None:
            probes["run"] = f"The run's probe: {impact_runs.describe_probe(data.probe)}"
        probe_choice = p1.radio("Probe", list(probes), format_func=probes.get, key="impact_probe")
        base_probe = data.probe if probe_choice == "run" else impact_runs.IMPACT_PROBE
        epochs = p2.number_input("Epochs", 1, 200, base_probe.epochs, key=f"impact_epochs_{probe_choice}")
        equal_steps = st.checkbox("Train every subset for as many steps as the whole training set", value=True,
                                  key="impact_equal_steps",
                                  help="Epochs grow as the subset shrinks, so a smaller subset is not also a less "
                                       "trained probe. Off: every subset gets the same number of epochs.")
    try:
        evaluation = impact_runs.Evaluation(method=method, folds=int(folds), repeats=int(repeats))
        evaluation_text = impact_runs.describe_evaluation(data, evaluation)
    except impact_runs.ImpactError as exc:
        st.error(escape_markdown(exc))
        st.stop()
    probe = replace(base_probe, epochs=int(epochs), device=None)
    st.caption(f"Evaluation: {escape_markdown(evaluation_text)}. Probe: "
               f"{escape_markdown(impact_runs.describe_probe(probe))}"
               f" ({'the fast linear head' if probe_choice == 'linear' else 'as in the analysis'}"
               f"{', equal steps for every subset' if equal_steps else ''}).")
    return dict(seeds=int(seeds), evaluation=evaluation, probe=probe, equal_steps=bool(equal_steps))


# ----------------------------------------------------------------------------- the experiment's settings
def experiment_settings(experiment: str, data, fingerprint: str, common: dict):
    """The chosen experiment's widgets; returns its configuration and, for the what-if, the
    curation's changes (else None)."""
    scores = list(data.scores.columns)
    if experiment == "pruning":
        return _pruning_settings(scores, common), None
    if experiment == "easy-hard":
        return _easy_hard_settings(scores, data, common), None
    return _what_if_settings(fingerprint, common)


def _pruning_settings(scores: list[str], common: dict):
    left, right = st.columns([3, 2])
    chosen = left.multiselect("Scores", scores, default=[s for s in DEFAULT_SCORES if s in scores] or scores[:1],
                              key="impact_scores", help="Random pruning is always added as the baseline.")
    direction = right.radio("Direction", list(DIRECTIONS), format_func=DIRECTIONS.get, key="impact_direction",
                            help="; ".join(f"{DIRECTIONS[d]}: {impact_runs.DIRECTIONS[d]}" for d in DIRECTIONS))
    offset = 0.0
    if direction == "window":
        offset = right.slider("Skip the hardest", 0.0, 0.9, 0.1, 0.05, key="impact_offset", format="%.2f",
                              help="The window starts after this share of the ranking (hardest first) and slides "
                                   "back when it would run past the end.")
    kept = st.pills("Kept fractions", FRACTIONS, selection_mode="multi", default=list(FRACTIONS),
                    format_func=lambda f: f"{f:.0%}", key="impact_fractions")
    balanced = st.checkbox("Class-balanced (keep the same fraction of every class)", key="impact_balanced")
    if not kept:
        st.info("Choose at least one kept fraction.")
        st.stop()
    try:
        return impact_runs.PruningConfig(scores=tuple(chosen), direction=direction, offset=float(offset),
                                         fractions=tuple(kept), class_balanced=balanced, **common)
    except impact_runs.ImpactError as exc:
        st.error(escape_markdown(exc))
        st.stop()


def _easy_hard_settings(scores: list[str], data, common: dict):
    left, middle, right = st.columns(3)
    default = scores.index("el2n") if "el2n" in scores else 0
    score = left.selectbox("Hardness score", scores, index=default, key="impact_bucket_score")
    buckets = middle.select_slider("Buckets", options=[2, 3, 4, 5], value=3, key="impact_buckets")
    by_cluster = right.checkbox("Stratify by cluster too", key="impact_by_cluster", disabled=data.clusters is None,
                                help="Buckets are cut within every class (and cluster), so each bucket keeps "
                                     "the class mix.")
    return impact_runs.EasyHardConfig(score=score, buckets=int(buckets), by_cluster=bool(by_cluster), **common)


def _what_if_settings(fingerprint: str, common: dict):
    left, right = st.columns([2, 3])
    source = left.radio("Curation to test", [SESSION, SELECTION], key="impact_source")
    evaluate_on = left.radio("Judge every variant on", ["curated", "original"], key="impact_evaluate_on",
                             format_func={"curated": "the curated labels (removed rows not judged)",
                                          "original": "the original labels, every row"}.get)
    if source == SESSION:
        changes = _session_changes(fingerprint, right)
    else:
        selection = get_selection(fingerprint)
        changes = impact_runs.changes_from_ids(selection.ids, source=f"the selection ({len(selection.ids):,})")
    facts = [f"{len(changes.remove):,} removed", f"{len(changes.relabel):,} relabelled"]
    if changes.notes:
        facts.append("unchanged: " + ", ".join(changes.notes))
    right.caption(f"{escape_markdown(changes.source)}: " + " · ".join(escape_markdown(f) for f in facts))
    if changes.empty:
        right.info("Nothing is removed or relabelled: the three variants will coincide. Drop or relabel "
                   "examples in a review session, or select examples on another page.")
    return impact_runs.WhatIfConfig(evaluate_on=evaluate_on, **common), changes


def _session_changes(fingerprint: str, column):
    """The outcome of a review session picked in ``column`` (stops the page when there is none)."""
    require_user("test a review session's curation")  # the review store is read by signed-in users only
    try:
        store = cached.review_store()
        sessions = store.list_sessions(fingerprint)
    except Exception as exc:  # an unreachable database: say so instead of a traceback
        st.error(f"The review database cannot be opened: {escape_markdown(exc)}")
        st.stop()
    if not sessions:
        column.info("No review session on this dataset yet: create one on the Review page, or test the "
                    "current selection.")
        st.stop()
    session = column.selectbox("Session", sessions, key="impact_session",
                               format_func=lambda s: f"{s.name} ({s.n_items:,} examples, by {s.owner})")
    return impact_runs.changes_from_outcome(store.outcome(session.id), source=f"session “{session.name}”")


# ----------------------------------------------------------------------------- run or show
def stored_or_running(experiment: str, data, config, changes):
    """The experiment's result from the workspace; without one, the Run button or the running
    job's progress, and the page stops there."""
    job_key = jobs.impact_key(experiment, data, config, changes)
    result = impact_runs.stored(experiment, data, config, changes)
    if result is not None:
        jobs.forget(job_key)
        return result
    current = jobs.get(job_key)
    if current is None or current.done:
        if current is not None and current.cancelled:
            st.info(f"The experiment was stopped. {escape_markdown(current.error)}")
        elif current is not None and current.error:
            st.error(f"The experiment failed: {escape_markdown(current.error)}")
        count = impact_runs.probe_count(experiment, data, config)
        if st.button("Run the experiment", type="primary", key="impact_run",
                     help=f"Trains {count:,} probes; the result is kept in the workspace."):
            jobs.forget(job_key)
            try:
                jobs.start_impact(experiment, data, config, changes)
            except jobs.JobLimitError as exc:
                st.warning(escape_markdown(exc))
                st.stop()
            st.rerun()
        st.caption(f"Trains {count:,} probes in the background; you can keep using the other pages.")
        st.stop()
    jobs.follow(job_key, cancel_key="impact_cancel")
    st.stop()


# ----------------------------------------------------------------------------- the result
def result_panel(experiment: str, result, config, dataset) -> None:
    """The figure, the experiment's table, where the numbers come from, and the downloads."""
    info, table = result.info, result.table
    st.plotly_chart(impact_runs.figure(result), key="impact_figure", width="stretch")
    if experiment == "pruning":
        _pruning_table(table)
    elif experiment == "easy-hard":
        _easy_hard_table(result, config, dataset)
    else:
        _what_if_table(table, info)
    if experiment != "what-if":
        st.caption(escape_markdown(impact_runs.SCORE_NOTE))
    st.caption(f"Computed in {info.get('seconds', 0):.1f} s on {escape_markdown(info.get('device', '?'))} "
               f"({escape_markdown(info.get('created', ''))}); kept in the workspace.")
    _downloads(result, dataset.name)
    with st.expander("Every number"):
        st.dataframe(table, hide_index=True, width="stretch", key="impact_all")


def _pruning_table(table) -> None:
    pivot = table.pivot(index="kept_fraction", columns="score", values="accuracy")
    pivot = pivot[[s for s in table["score"].drop_duplicates()]].reset_index()
    st.dataframe(pivot, hide_index=True, width="stretch", key="impact_pivot",
                 column_config={**{c: PERCENT for c in pivot.columns},
                                "kept_fraction": st.column_config.NumberColumn("kept", format="percent")})
    st.caption("Held-out accuracy by kept fraction (rows) and score (columns). Bands and intervals: 95% "
               f"t-interval of the mean over {int(table['runs'].iloc[0])} runs (seeds × repeats), i.e. "
               "training randomness; every score shares the same evaluation rows and probe seeds.")


def _easy_hard_table(result, config, dataset) -> None:
    table = result.table
    pivot = table.pivot(index="train_on", columns="evaluate_on", values="accuracy")
    order = list(table["evaluate_on"].drop_duplicates())
    pivot = pivot.loc[list(table["train_on"].drop_duplicates()), order].reset_index()
    st.dataframe(pivot, hide_index=True, width="stretch", key="impact_pivot",
                 column_config={**{c: st.column_config.NumberColumn(f"judged on {c}", format="percent")
                                   for c in order},
                                "train_on": st.column_config.TextColumn("trained on")})
    sizes = ", ".join(f"{name} {size:,}" for name, size in result.info.get("bucket_sizes", {}).items())
    st.caption(f"Rows: the bucket the probes trained on; columns: the bucket they were judged on (held-out "
               f"rows only). Bucket sizes: {escape_markdown(sizes)}. Intervals: 95% Wilson over the judged rows.")
    b1, b2 = st.columns(2)
    b1.download_button("Download the buckets (CSV: id, label, bucket)", result.buckets.to_csv(index=False),
                       file_name=f"{dataset.name}-buckets-{config.score}.csv", mime="text/csv",
                       key="impact_buckets_csv", on_click="ignore")
    if b2.button("Save the buckets as named selections", key="impact_buckets_save"):
        try:
            names = impact_runs.save_buckets(dataset.fingerprint, result.buckets, score=config.score,
                                             author=current_user() or "")
            st.success("Saved " + ", ".join(f"“{escape_markdown(n)}”" for n in names) + ".")
        except impact_runs.selection_errors() as exc:
            st.error(escape_markdown(exc))


def verdict(curated, random) -> str:
    """One sentence: does the curation help, and does it beat removing as many rows at random?"""
    interval = f"{curated['delta']:+.1%} (95% CI {curated['delta_low']:+.1%} to {curated['delta_high']:+.1%}"
    if curated["delta_low"] > 0:
        change = f"The curation helps: {interval})"
    elif curated["delta_high"] < 0:
        change = f"The curation hurts: {interval})"
    else:
        change = f"No clear change: {interval}, which includes zero)"
    return f"{change}; a random removal of as many training rows: {random['delta']:+.1%}."


def _what_if_table(table, info: dict) -> None:
    overall = table[table["scope"] == "overall"].set_index("variant")
    for column, variant in zip(st.columns(3), impact_runs.VARIANTS):
        row = overall.loc[variant]
        column.metric(variant.capitalize(), f"{row['accuracy']:.1%}",
                      delta=None if variant == "original" else f"{row['delta']:+.1%}",
                      help=f"95% CI {row['ci_low']:.1%}–{row['ci_high']:.1%} on {int(row['n_eval']):,} rows"
                           + ("" if variant == "original" else
                              f"; change {row['delta_low']:+.1%} to {row['delta_high']:+.1%}"))
    st.caption(verdict(overall.loc["curated"], overall.loc["random removal"]))
    curated = table[(table["variant"] == "curated") & (table["scope"] != "overall")]
    hurt = curated[curated["delta_high"] < 0]
    if len(hurt):
        st.warning("The curated data does worse in " + ", ".join(escape_markdown(s) for s in hurt["scope"])
                   + " (the whole interval of the change is below zero).")
    shown = table[["scope", "variant", "n_eval", "accuracy", "ci_low", "ci_high", "delta", "delta_low",
                   "delta_high", "n_train"]]
    st.dataframe(shown, hide_index=True, width="stretch", key="impact_table",
                 column_config={"scope": st.column_config.TextColumn("scope", width="medium"),
                                **{c: PERCENT for c in ("accuracy", "ci_low", "ci_high", "delta", "delta_low",
                                                        "delta_high")},
                                "n_train": st.column_config.NumberColumn("training rows", format="%.0f")})
    st.caption(f"{escape_markdown(info.get('source', ''))}: {info.get('removed', 0):,} examples removed "
               f"({info.get('removed_training_rows_per_fit', 0):,.0f} of them training rows per fit), "
               f"{info.get('changed_labels', 0):,} labels changed; random removal drops as many training rows. "
               "Accuracy intervals: 95% Wilson over the judged rows; changes: paired per-row differences "
               "against the original, 95% normal interval.")


def _downloads(result, dataset_name: str) -> None:
    stem = impact_runs.file_stem(result, dataset_name)
    table = result.table
    d1, d2, d3, d4 = st.columns(4)
    d1.download_button("Numbers (CSV)", table.to_csv(index=False), file_name=f"{stem}.csv", mime="text/csv",
                       key="impact_csv", on_click="ignore")
    d2.download_button("Every run (CSV)", result.runs.to_csv(index=False), file_name=f"{stem}_runs.csv",
                       mime="text/csv", key="impact_runs_csv", on_click="ignore")
    d3.download_button("Figure (HTML)", lambda: impact_runs.figure_html_bytes(result), file_name=f"{stem}.html",
                       mime="text/html", key="impact_html", on_click="ignore")
    if impact_runs.png_available():
        d4.download_button("Figure (PNG)", lambda: impact_runs.figure_png_bytes(result), file_name=f"{stem}.png",
                           mime="image/png", key="impact_png", on_click="ignore")
    else:
        d4.caption("PNG: the camera icon in the chart's toolbar.")
