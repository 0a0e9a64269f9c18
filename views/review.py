"""Review: team sessions over a selection, a filter, a cluster, a data-map region or the top of a
score; one example at a time with its context; decisions with their history, agreement,
adjudication by the session's owner, and exports with provenance."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import PurePath

import pandas as pd
import streamlit as st

from ui import cached
from ui.analysis import page_run
from ui.components import example_table
from ui.figures import escape_markdown
from ui.identity import ADMIN, OWNER, TEAM_ROLES, current_user, require_user
from ui.selection import get_selection

DECISIONS = {"keep": "Keep", "drop": "Drop", "relabel": "Relabel", "flag": "Flag"}
QUICK_KEYS = {"keep": "K", "drop": "D", "flag": "F"}
SELECTION, FILTER, CLUSTER, REGION, TOP = ("The current selection", "A filter", "A cluster",
                                           "A data-map region", "The top of a score")
OUTCOME = "The session's outcome"
FORMATS = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSON Lines"}
VIEWS = ("Review", "Agreement and conflicts", "Export")
LAYOUT_COLUMNS = ("x", "y", "pca_x", "pca_y")
REFRESH_SECONDS = 2  # how often the page asks whether the example shown has new decisions
SESSION_REDRAW_SECONDS = 10  # how stale progress, agreement and conflicts may get while others decide
MAX_FILTER_VALUES = 200
NEIGHBOURS_SHOWN = 8
CONFLICTS_SHOWN = 25
ORIGIN = "review page"
# session-state keys of this page
SESSION_KEY, PENDING_SESSION, FLASH, PREPARED = ("review_session", "review_session_pending",
                                                 "review_flash", "review_prepared_export")

dataset, run = page_run("Review")
examples = run.examples
stamp = cached.run_stamp(run.path)
dataset_stem = PurePath(dataset.name).stem
USER_ERRORS = cached.user_errors()
row_of_id = pd.Index(examples["id"].astype(str))
try:
    store = cached.review_store()
except Exception as exc:  # an unreachable server or a newer schema: say so instead of a traceback
    st.error(f"The review database cannot be opened: {escape_markdown(exc)}")
    st.stop()


def say_error(exc: Exception) -> None:
    st.error(escape_markdown(str(exc)))


def flash(kind: str, message: str) -> None:
    """A message shown on the next run (callbacks run before the page draws)."""
    st.session_state[FLASH] = (kind, message)


def show_flash() -> None:
    # Always one container, so the elements after it keep their place in the page whether or
    # not there is a message.
    area = st.container()
    kind, message = st.session_state.pop(FLASH, (None, None))
    if kind is not None:
        getattr(area, kind)(message)


def category_text(category: str) -> str:
    """``relabel:cat`` as "Relabel → cat"; the others capitalised."""
    if category.startswith("relabel:"):
        return f"Relabel → {category.split(':', 1)[1]}"
    return DECISIONS.get(category, category)


def decisions_text(reviewer_decisions: str) -> str:
    """The compact ``{"reviewer": "category"}`` JSON of the store, in words (escaped markdown)."""
    parsed = json.loads(reviewer_decisions or "{}")
    return " · ".join(f"**{escape_markdown(who)}**: {escape_markdown(category_text(what))}"
                      for who, what in parsed.items())


def file_stem(text: str) -> str:
    return re.sub(r"[^\w.-]+", "-", text).strip("-.")[:120] or "export"


# ----------------------------------------------------------------------------- choosing examples


def pick_examples(key: str) -> tuple[list[str], str]:
    """Widgets that choose examples; returns their ids (dataset order, or hardest first for a
    score) and a description for the session or the manifest."""
    scores = cached.numeric_scores(tuple(examples.columns))
    clusters = cached.clusters_table(str(run.path), stamp, dataset.fingerprint) if "cluster" in examples.columns \
        else None
    sources = [SELECTION, FILTER] + ([CLUSTER] if clusters is not None else []) + \
        ([REGION] if "region" in examples.columns else []) + ([TOP] if scores else [])
    source = st.radio("Examples from", sources, horizontal=True, key=f"{key}_source")
    if source == SELECTION:
        selection = get_selection(dataset.fingerprint)
        ids = examples.loc[examples["id"].isin(selection.ids), "id"]
        if not selection.ids:
            st.caption("The selection is empty: select examples on the Map, Data map, Hardness or "
                       "Subpopulations page first.")
        return ids.astype(str).tolist(), f"selection ({selection.source})" if selection.source else "selection"
    if source == FILTER:
        columns = cached.filter_columns(str(run.path), stamp, examples, MAX_FILTER_VALUES)
        if not columns:
            st.caption(f"No column has {MAX_FILTER_VALUES} distinct values or fewer to filter on.")
            return [], "filter"
        left, right = st.columns([1, 2])
        column = left.selectbox("Column", columns, key=f"{key}_filter_column",
                                index=columns.index("label") if "label" in columns else 0)
        values = sorted(examples[column].dropna().astype(str).unique())
        chosen = right.multiselect("Values", values, key=f"{key}_filter_values_{column}")
        ids = examples.loc[examples[column].astype(str).isin(chosen), "id"]
        return ids.astype(str).tolist(), f"filter: {column} in [{', '.join(chosen)}]"
    if source == CLUSTER:
        levels = {"Coarse": ("coarse", "cluster")} | (
            {"Fine": ("fine", "cluster_fine")} if "cluster_fine" in examples.columns else {})
        left, right = st.columns([1, 2])
        level, column = levels[left.radio("Level", list(levels), horizontal=True, key=f"{key}_cluster_level")]
        table = clusters[clusters["level"] == level].reset_index(drop=True)
        names = {row.cluster: f"{row.cluster} · {row.name} ({row.size:,})" for row in table.itertuples()}
        picked = right.selectbox("Cluster", list(names), format_func=names.get, key=f"{key}_cluster_{level}")
        ids = examples.loc[examples[column] == picked, "id"]
        name = table.set_index("cluster").loc[picked, "name"]
        return ids.astype(str).tolist(), f"{'fine ' if level == 'fine' else ''}cluster {picked} ({name})"
    if source == REGION:
        counts = examples["region"].value_counts()
        region = st.selectbox("Region", list(counts.index), key=f"{key}_region",
                              format_func=lambda r: f"{r} ({counts[r]:,})",
                              help="At the run's thresholds (confidence 0.5, variability 0.2).")
        ids = examples.loc[examples["region"] == region, "id"]
        return ids.astype(str).tolist(), f"data-map region: {region}"
    left, right = st.columns([2, 1])
    score = left.selectbox("Score", scores, key=f"{key}_score")
    count = right.number_input("How many", 1, len(examples), min(50, len(examples)), key=f"{key}_top_n")
    ranked = cached.hardest(str(run.path), stamp, examples, score, int(count))
    order = "highest" if cached.harder_is_higher(score) else "lowest"
    st.caption(f"Hardest first: the {order} {score} values.")
    return ranked["id"].astype(str).tolist(), f"top {len(ranked)} by {score} ({order} first)"


# ----------------------------------------------------------------------------- sessions


def new_session_form(reviewer: str) -> None:
    ids, described = pick_examples("review_new")
    name_column, reviewers_column = st.columns(2)
    name = name_column.text_input("Session name", key="review_new_name", max_chars=200,
                                  placeholder="e.g. ambiguous mail/web packages")
    reviewers = reviewers_column.text_input("Reviewers (comma-separated)", key="review_new_reviewers",
                                            help="Only they and you (the owner) record decisions in the session; "
                                                 "you or an admin can add more later.")
    description = st.text_area("Description (optional)", key="review_new_description", height=68)
    st.caption(f"{len(ids):,} examples from {escape_markdown(described)} · owner: {escape_markdown(reviewer)}")
    if st.button("Create the session", key="review_create", type="primary"):
        try:
            created = store.create_session(
                name, ids, owner=reviewer, fingerprint=dataset.fingerprint, classes=dataset.classes,
                description=description, reviewers=[r for r in reviewers.split(",") if r.strip()],
                source=described, run=str(run.path))
        except USER_ERRORS as exc:
            say_error(exc)
            return
        st.session_state[PENDING_SESSION] = created.id
        flash("success", f"Created session “{escape_markdown(created.name)}” with {created.n_items:,} examples.")
        st.rerun()


def session_summary(session) -> None:
    facts = [f"owner **{escape_markdown(session.owner)}**", f"{session.n_items:,} examples",
             f"from {escape_markdown(session.source or '—')}",
             f"created {session.created_at:%Y-%m-%d %H:%M} UTC"]
    if session.reviewers:
        facts.append("reviewers " + ", ".join(escape_markdown(r) for r in session.reviewers))
    st.caption(" · ".join(facts))
    if session.description:
        st.markdown(escape_markdown(session.description))
    if session.run and session.run != str(run.path):
        st.caption("This session was made on another analysis run of the dataset; the scores, regions, "
                   "clusters and neighbours shown are those of the current run.")


def progress_panel(session_id: int) -> None:
    """Progress per reviewer (redrawn by :func:`follow_session` when anyone decides)."""
    progress = store.progress(session_id)
    n_conflicts = len(store.conflicts(session_id))
    total = max(progress.n_items, 1)
    columns = st.columns(4)
    columns[0].metric("Examples", f"{progress.n_items:,}")
    columns[1].metric("Decided by anyone", f"{progress.decided_by_anyone:,}",
                      f"{progress.decided_by_anyone / total:.0%}", delta_color="off", delta_arrow="off")
    columns[2].metric("Conflicts", f"{n_conflicts:,}")
    columns[3].metric("Adjudicated", f"{progress.adjudicated:,}")
    for reviewer, done in sorted(progress.decided_by_reviewer.items()):
        st.progress(min(done / total, 1.0), text=f"{escape_markdown(reviewer)}: {done:,} of {progress.n_items:,}")


# ----------------------------------------------------------------------------- one example


def move_to(key: str, position: int) -> None:
    st.session_state[key] = position


def record(session_id: int, example_id: str, decision: str | None, keys: dict, position_key: str,
           next_position: int | None) -> None:
    """Record this reviewer's decision (a button's, or the form's) and move on."""
    reviewer = current_user()  # the store refuses anyone who is not the owner or a listed reviewer
    decision = decision or st.session_state[keys["decision"]]
    new_label = st.session_state.get(keys["new_label"]) if decision == "relabel" else None
    note = st.session_state.get(keys["note"], "") if keys.get("note") else ""
    try:
        saved = store.record_decision(session_id, example_id, reviewer, decision, new_label=new_label,
                                      note=note, origin=ORIGIN)
    except USER_ERRORS as exc:
        flash("error", escape_markdown(str(exc)))
        return
    flash("success", f"Recorded {escape_markdown(category_text(saved.category))} on "
                     f"{escape_markdown(example_id)}.")
    if next_position is not None:
        st.session_state[position_key] = next_position


def preview(row: pd.Series) -> None:
    if dataset.kind == "text":
        with st.container(border=True, height=260 if len(str(row["text"])) > 1200 else "content"):
            st.markdown(escape_markdown(row["text"]))
    elif dataset.kind == "image":
        uri = cached.thumbnail(str(row["image"]), size=192)
        if uri is None:
            st.warning(f"The image {escape_markdown(row['image'])} cannot be read.")
        else:
            st.image(base64.b64decode(uri.split(",", 1)[1]), width=192)
    else:
        features = [c for c in dataset.table.columns if c not in ("id", "label", "split")]
        table = dataset.table
        values = table.loc[table["id"].astype(str) == str(row["id"]), features].iloc[0]
        medians = table[features].median(numeric_only=True)
        shown = pd.DataFrame({"feature": features, "value": values.astype(str).to_numpy(),
                              "dataset median": [medians.get(f) for f in features]})
        st.dataframe(shown, hide_index=True, width="stretch", height=260, key="review_features")


def example_facts(row: pd.Series) -> None:
    facts = [f"label **{escape_markdown(row['label'])}**"]
    if "predicted_label" in row and pd.notna(row["predicted_label"]):
        facts.append(f"predicted **{escape_markdown(row['predicted_label'])}**")
    if "region" in row and pd.notna(row["region"]):
        facts.append(f"region **{escape_markdown(row['region'])}**")
    clusters = cached.clusters_table(str(run.path), stamp, dataset.fingerprint) if "cluster" in row else None
    if clusters is not None:
        for level, column in (("coarse", "cluster"), ("fine", "cluster_fine")):
            if column in row and pd.notna(row[column]):
                named = clusters[(clusters["level"] == level) & (clusters["cluster"] == row[column])]
                name = named["name"].iloc[0] if len(named) else "noise"
                facts.append(f"{'fine cluster' if level == 'fine' else 'cluster'} "
                             f"**{int(row[column])}** “{escape_markdown(name)}”")
    if "split" in row and pd.notna(row["split"]):
        facts.append(f"split {escape_markdown(row['split'])}")
    st.markdown(" · ".join(facts))
    scores = cached.numeric_scores(tuple(examples.columns))
    if scores:
        harder = []
        for score in scores:
            column, value = examples[score], row[score]
            share = (column < value) if cached.harder_is_higher(score) else (column > value)
            harder.append(float(share.mean()) if pd.notna(value) else None)
        table = pd.DataFrame({"score": scores, "value": [row[s] for s in scores], "harder than": harder})
        st.dataframe(table, hide_index=True, width="stretch", height=min(38 + 35 * len(scores), 300),
                     key="review_scores",
                     column_config={"value": st.column_config.NumberColumn("value", format="%.4g"),
                                    "harder than": st.column_config.ProgressColumn(
                                        "harder than", format="percent", min_value=0.0, max_value=1.0,
                                        help="Share of the dataset this example is harder than, by this "
                                             "score's direction.")})


def neighbours(row_index: int) -> None:
    indices, distances = cached.neighbors(str(run.path), stamp, run)
    keep = indices[row_index] != row_index
    near, far = indices[row_index][keep][:NEIGHBOURS_SHOWN], distances[row_index][keep][:NEIGHBOURS_SHOWN]
    columns = [c for c in ("id", "label", "text", "image", "predicted_label") if c in examples.columns]
    rows = examples.iloc[near][columns].reset_index(drop=True)
    rows.insert(2, "distance", far.round(3))
    if "text" in rows.columns:
        rows["text"] = rows["text"].astype(str).str.replace(r"\s+", " ", regex=True).str.slice(0, 160)
    st.markdown(f"**Nearest neighbours** ({(rows['label'] != examples.iloc[row_index]['label']).sum()} of "
                f"{len(rows)} with another label)")
    example_table(rows, kind=dataset.kind, height=38 + (65 if dataset.kind == "image" else 35) * len(rows))


def example_decisions(session_id: int, example_id: str) -> None:
    """Everyone's current decision on the example, and its history (kept current by
    :func:`follow_session`)."""
    history = store.history(session_id, example_id)
    st.markdown("**Decisions on this example**")
    if history.empty:
        st.caption("Nobody has decided on this example yet.")
        return
    reviews = history[history["kind"] == "review"].groupby("reviewer").tail(1)
    for entry in reviews.itertuples():
        category = category_text(f"relabel:{entry.new_label}" if entry.decision == "relabel" else entry.decision)
        note = f" — “{escape_markdown(entry.note)}”" if entry.note else ""
        st.markdown(f"- **{escape_markdown(entry.reviewer)}**: {escape_markdown(category)}{note}")
    adjudications = history[history["kind"] == "adjudication"]
    if len(adjudications):
        last = adjudications.iloc[-1]
        category = category_text(f"relabel:{last['new_label']}" if last["decision"] == "relabel" else last["decision"])
        note = f" — “{escape_markdown(last['note'])}”" if last["note"] else ""
        st.markdown(f"- Adjudicated by **{escape_markdown(last['reviewer'])}**: {escape_markdown(category)}{note}")
    with st.expander(f"History ({len(history)} {'entry' if len(history) == 1 else 'entries'})"):
        shown = history[["created_at", "reviewer", "kind", "decision", "new_label", "note", "origin"]].copy()
        shown["created_at"] = shown["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S UTC")
        st.dataframe(shown, hide_index=True, width="stretch", key=f"review_history_{session_id}",
                     column_config={"created_at": "when (UTC)",
                                    "note": st.column_config.TextColumn("note", width="large")})


def review_view(session, reviewer: str) -> None:
    items = store.session_items(session.id)["example_id"].tolist()
    current = store.current_decisions(session.id)
    mine = current[current["reviewer"] == reviewer].set_index("example_id")
    position_key = f"review_position_{session.id}"
    if st.session_state.get(position_key, 1) > len(items):
        st.session_state[position_key] = 1
    position = int(st.session_state.get(position_key, 1))
    undecided = [i + 1 for i, example_id in enumerate(items) if example_id not in mine.index]
    following = [p for p in undecided if p > position] or [p for p in undecided if p != position]

    previous_column, next_column, undecided_column, jump_column, mine_column = st.columns(
        [1, 1, 1.4, 1.2, 2], vertical_alignment="bottom")
    previous_column.button("Previous", key="review_previous", shortcut="Left",
                           disabled=position <= 1, on_click=move_to, args=(position_key, position - 1),
                           width="stretch")
    next_column.button("Next", key="review_next", shortcut="Right",
                       disabled=position >= len(items), on_click=move_to, args=(position_key, position + 1),
                       width="stretch")
    undecided_column.button("Next undecided", key="review_next_undecided", shortcut="N",
                            disabled=not following, on_click=move_to,
                            args=(position_key, following[0] if following else position), width="stretch")
    jump_column.number_input("Example", 1, len(items), key=position_key)
    mine_column.progress(len(mine) / max(len(items), 1),
                         text=f"You have decided {len(mine):,} of {len(items):,}")

    example_id = items[position - 1]
    DRAWN.update(example_id=example_id, example=store.session_version(session.id, example_id))
    row_index = int(row_of_id.get_indexer([example_id])[0])
    show_flash()
    if row_index < 0:
        st.warning(f"Example {escape_markdown(example_id)} is not in this dataset's current run; the session "
                   "was made on another version of the data.")
        return
    row = examples.iloc[row_index]
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.subheader(f"Example {position} of {len(items)} · {escape_markdown(example_id)}", anchor=False)
        preview(row)
        decision_controls(session, example_id, str(row["label"]), mine, position_key, position, len(items))
    with right:
        example_facts(row)
    neighbours(row_index)
    example_decisions(session.id, example_id)


def decision_controls(session, example_id: str, label: str, mine: pd.DataFrame, position_key: str,
                      position: int, n_items: int) -> None:
    """Quick keys for keep / drop / flag, and a form (Enter records) for a relabel or a note."""
    next_position = min(position + 1, n_items) if position < n_items else None
    mine_now = mine.loc[example_id] if example_id in mine.index else None
    if mine_now is not None:
        note = f" — “{escape_markdown(mine_now['note'])}”" if mine_now["note"] else ""
        st.markdown(f"Your decision: **{escape_markdown(category_text(mine_now['category']))}**{note}")
    else:
        st.caption("You have not decided on this example yet.")
    keys = {"decision": f"review_decision_{session.id}_{position}", "new_label": f"review_new_label_{session.id}_{position}",
            "note": f"review_note_{session.id}_{position}"}
    quick = st.columns(len(QUICK_KEYS))
    for column, (decision, key) in zip(quick, QUICK_KEYS.items()):
        column.button(DECISIONS[decision], key=f"review_quick_{decision}", shortcut=key, width="stretch",
                      on_click=record, args=(session.id, example_id, decision, {"new_label": None},
                                             position_key, next_position),
                      help=f"Record “{DECISIONS[decision]}” without a note and go to the next example.")
    targets = [c for c in session.classes if c != label]
    with st.form(f"review_form_{session.id}_{position}", border=True):
        decisions = list(DECISIONS)
        chosen = decisions.index(mine_now["decision"]) if mine_now is not None else 0
        st.radio("Decision", decisions, index=chosen, format_func=DECISIONS.get, horizontal=True,
                 key=keys["decision"])
        target = (targets.index(mine_now["new_label"]) if mine_now is not None and mine_now["new_label"] in targets
                  else 0)
        st.selectbox("New label (for a relabel)", targets, index=target, key=keys["new_label"])
        st.text_input("Note (optional)", key=keys["note"], placeholder="Why? Enter records the decision.")
        submit, stay = st.columns(2)
        submit.form_submit_button("Record and go to the next", type="primary", width="stretch", key="review_record_next",
                                  on_click=record, args=(session.id, example_id, None, keys, position_key,
                                                         next_position))
        stay.form_submit_button("Record", width="stretch", key="review_record",
                                on_click=record, args=(session.id, example_id, None, keys, position_key, None))


# ----------------------------------------------------------------------------- agreement and conflicts


def agreement_panel(session_id: int) -> None:
    """Agreement figures and the conflicts list (kept current by :func:`follow_session`)."""
    current = store.current_decisions(session_id)
    st.subheader("Agreement")
    if current["reviewer"].nunique() < 2:
        st.caption("Agreement needs at least two reviewers' decisions on the same examples.")
    else:
        report = cached.reviewer_agreement(current)
        st.dataframe(report.pairs, hide_index=True, width="stretch", key="review_agreement_pairs",
                     column_config={
                         "reviewer_a": "reviewer", "reviewer_b": "reviewer",
                         "n_items": st.column_config.NumberColumn("examples both decided"),
                         "percent_agreement": st.column_config.NumberColumn("percent agreement", format="percent"),
                         "cohen_kappa": st.column_config.NumberColumn("Cohen's kappa", format="%.3f")})
        if report.fleiss_kappa is not None:
            kappa = "undefined" if pd.isna(report.fleiss_kappa) else f"{report.fleiss_kappa:.3f}"
            st.metric(f"Fleiss' kappa ({len(report.reviewers)} reviewers)", kappa,
                      help=f"Over the {report.fleiss_n_items:,} examples every reviewer decided.")
        st.caption("Decisions are compared as keep, drop, flag or relabel to a given class. Kappa corrects "
                   "for agreement by chance (Cohen 1960, Fleiss 1971); it is undefined when every decision "
                   "falls in one category.")
        reviewer_quality_table(current)
    conflicts = store.conflicts(session_id)
    st.subheader(f"Conflicts · {len(conflicts):,}")
    if conflicts.empty:
        st.caption("No conflicts: the reviewers agree wherever more than one has decided, or the owner has "
                   "adjudicated.")
        return
    labels = examples.set_index(examples["id"].astype(str))["label"]
    shown = pd.DataFrame({
        "example": conflicts["position"] + 1, "id": conflicts["example_id"],
        "label": conflicts["example_id"].map(labels),
        "decisions": [" · ".join(f"{who}: {category_text(what)}" for who, what in json.loads(d).items())
                      for d in conflicts["reviewer_decisions"]]})
    st.dataframe(shown, hide_index=True, width="stretch", key="review_conflicts",
                 column_config={"decisions": st.column_config.TextColumn("decisions", width="large")})


def reviewer_quality_table(current: pd.DataFrame) -> None:
    """Each reviewer as an annotator (cleanlab.multiannotator): a keep gives the current label, a
    relabel the new one; drop and flag give none."""
    quality = cached.reviewer_quality(current, run)
    st.dataframe(quality.annotators[["annotator", "quality", "agreement_with_consensus", "n_labelled"]],
                 hide_index=True, width="stretch", key="review_reviewer_quality",
                 column_config={
                     "annotator": "reviewer",
                     "quality": st.column_config.NumberColumn(
                         "quality", format="%.3f",
                         help="0–1, higher is better: how often this reviewer's labels are right, judged against "
                              "the other reviewers and, when the run has them, the model's out-of-fold "
                              "predictions (CROWDLAB)."),
                     "agreement_with_consensus": st.column_config.NumberColumn("agrees with consensus",
                                                                              format="percent"),
                     "n_labelled": st.column_config.NumberColumn("labels given")})
    st.caption(f"{escape_markdown(quality.note)} A keep counts as the example's current label, a relabel as its "
               "new label; drop and flag give no label.")


def adjudicate(session_id: int, example_id: str, keys: dict) -> None:
    """Record the owner's final word on an example (the store checks that this is the owner)."""
    choice = st.session_state[keys["choice"]]
    decision, _, new_label = choice.partition(":")
    try:
        store.adjudicate(session_id, example_id, current_user(), decision, new_label=new_label or None,
                         note=st.session_state.get(keys["note"], ""))
    except USER_ERRORS as exc:
        flash("error", escape_markdown(str(exc)))
        return
    flash("success", f"Adjudicated {escape_markdown(example_id)}: {escape_markdown(category_text(choice))}.")


@st.fragment(run_every=REFRESH_SECONDS)
def follow_session(session_id: int, drawn: dict) -> None:
    """Keep the page current while others review. Every few seconds ask the store whether the
    decision log has grown since the page was drawn: a new decision on the example shown redraws
    the page at once; any other (progress, agreement, conflicts) at most every
    ``SESSION_REDRAW_SECONDS``, so twelve busy reviewers do not redraw each other's pages
    continuously.

    One watcher that draws nothing, near the top of the page, instead of several self-refreshing
    panels: with 12 reviewers on one server a panel's refresh could land while a slow full rerun
    was redrawing the page, and Streamlit's frontend then stopped the page ("Bad delta path
    index", "'setIn' cannot be called on an ElementNode"; bench/review_load.py). A full rerun
    redraws everything consistently."""
    example_id = drawn.get("example_id")
    if example_id is not None and store.session_version(session_id, example_id) != drawn["example"]:
        st.rerun()
    if (time.monotonic() - drawn["at"] >= SESSION_REDRAW_SECONDS
            and store.session_version(session_id) != drawn["session"]):
        st.rerun()


@st.fragment
def adjudication_panel(session, reviewer: str) -> None:
    """The owner's final word on each conflict (a form each, Enter submits)."""
    if store.session_role(session.id, reviewer) not in (OWNER, ADMIN):
        st.info(f"Only the session's owner, {escape_markdown(session.owner)}, or an admin adjudicates conflicts.")
        return
    show_flash()
    conflicts = store.conflicts(session.id)
    if conflicts.empty:
        return
    st.subheader("Adjudicate")
    if len(conflicts) > CONFLICTS_SHOWN:
        st.caption(f"The first {CONFLICTS_SHOWN} of {len(conflicts):,} conflicts.")
    labels = examples.set_index(examples["id"].astype(str))["label"]
    current = store.current_decisions(session.id)
    notes = current[current["note"] != ""]
    for conflict in conflicts.head(CONFLICTS_SHOWN).itertuples():
        label = str(labels.get(conflict.example_id, ""))
        proposed = list(json.loads(conflict.reviewer_decisions).values())
        options = list(dict.fromkeys(proposed + ["keep", "drop", "flag"] +
                                     [f"relabel:{c}" for c in session.classes if c != label]))
        with st.form(f"adjudicate_{session.id}_{conflict.position}", border=True):
            st.markdown(f"Example {conflict.position + 1} · **{escape_markdown(conflict.example_id)}** "
                        f"(label {escape_markdown(label)}) — {decisions_text(conflict.reviewer_decisions)}")
            for entry in notes[notes["example_id"] == conflict.example_id].itertuples():
                st.caption(f"{escape_markdown(entry.reviewer)}: “{escape_markdown(entry.note)}”")
            keys = {"choice": f"adjudicate_choice_{session.id}_{conflict.position}",
                    "note": f"adjudicate_note_{session.id}_{conflict.position}"}
            choice_column, note_column = st.columns([1, 2])
            choice_column.selectbox("Final decision", options, format_func=category_text, key=keys["choice"])
            note_column.text_input("Note (optional)", key=keys["note"], placeholder="Enter adjudicates.")
            st.form_submit_button("Adjudicate", type="primary", key=f"adjudicate_submit_{session.id}_{conflict.position}",
                                  on_click=adjudicate, args=(session.id, conflict.example_id, keys))


# ----------------------------------------------------------------------------- export


def export_view(session) -> None:
    sources = ([OUTCOME] if session is not None else []) + ["Other examples"]
    source = st.radio("Export", sources, horizontal=True, key="review_export_what")
    apply_outcome, ids, described = False, None, ""
    if source == OUTCOME:
        apply_outcome = st.checkbox("Apply the outcome: leave out drops, apply relabels", value=True,
                                    key="review_export_apply",
                                    help="Examples in conflict, undecided or flagged stay as they are; their "
                                         "final_decision column says so. Unticked: every example of the session "
                                         "with its decisions.")
        default_stem = f"{dataset_stem}-{session.name}-{'outcome' if apply_outcome else 'decisions'}"
    else:
        ids, described = pick_examples("review_export")
        default_stem = f"{dataset_stem}-{described.split(' (')[0].split(':')[0]}"
    extra = [c for c in examples.columns if c not in dataset.table.columns and c not in LAYOUT_COLUMNS]
    columns_column, format_column = st.columns([3, 1])
    score_columns = columns_column.multiselect(
        "Score columns", extra, key="review_export_scores",
        default=[c for c in ("region", "label_issue") if c in extra],
        help="Added to the dataset's own columns" + (" and the decisions." if source == OUTCOME else "."))
    fmt = format_column.radio("Format", list(FORMATS), format_func=FORMATS.get, key="review_export_format")
    stem = file_stem(st.text_input("File name", value=file_stem(default_stem), key="review_export_name",
                                   help="Without the extension; the manifest goes beside it as "
                                        "<file>.manifest.json."))
    if ids is not None and not ids:
        st.info("Nothing to export: no example matches.")
        return
    signature = (source, session.id if session is not None else None, apply_outcome, hash(tuple(ids or ())),
                 tuple(score_columns), fmt, stem)
    buttons = st.container(horizontal=True)
    wants_download = buttons.button("Prepare the download", key="review_export_prepare", icon=":material/download:")
    wants_file = buttons.button("Write to the workspace", key="review_export_write", icon=":material/save:",
                              help="For large exports: the file and its manifest go to the workspace's "
                                   "exports/ folder.")
    if wants_download or wants_file:
        try:
            frame, provenance = cached.export_table(
                dataset, examples, actor=current_user(), ids=ids, store=store,
                session=session.id if source == OUTCOME else None,
                score_columns=score_columns, apply_outcome=apply_outcome, description=described,
                issue_counts=(run.manifest.get("issues") or {}).get("counts"))
            if wants_download:
                st.session_state[PREPARED] = (signature, cached.export_download(frame, provenance, fmt))
            else:
                written = cached.export_to_workspace(frame, provenance, fmt, stem)
                if written.renamed:
                    st.info(f"{escape_markdown(written.requested.name)} already exists and was left as it is; "
                            f"this export is {escape_markdown(written.path.name)}.")
                st.success(f"Wrote {written.n_rows:,} rows and the manifest:")
                st.code(f"{written.path}\n{written.manifest_path}", language=None)
        except USER_ERRORS as exc:
            say_error(exc)
    prepared = st.session_state.get(PREPARED)
    if prepared is not None and prepared[0] == signature:
        download = prepared[1]
        prepared_at = download.manifest["created_at"].replace("T", " ").replace("+00:00", " UTC")
        st.caption(f"Prepared {download.manifest['rows']:,} rows at {prepared_at} (prepare again after new "
                   "decisions).")
        downloads = st.container(horizontal=True)
        downloads.download_button(f"Download {stem}{download.suffix}", download.data,
                                    file_name=f"{stem}{download.suffix}", mime=download.mime_type,
                                    key="review_export_download", on_click="ignore", type="primary")
        downloads.download_button("Download the manifest (JSON)", download.manifest_bytes,
                                        file_name=f"{stem}{download.suffix}.manifest.json",
                                        mime="application/json", key="review_export_manifest",
                                        on_click="ignore")


# ----------------------------------------------------------------------------- roles


def team_panel(admin: str) -> None:
    """Admins grant and revoke team roles (viewer, reviewer, admin); the store checks it is an admin."""
    with st.expander("Team", icon=":material/group:"):
        st.dataframe(store.team(), hide_index=True, width="stretch", key="review_team_table")
        who_column, role_column = st.columns([2, 1])
        who = who_column.text_input("Identity (as the sign-in gives it, e.g. an e-mail)", key="review_team_who")
        role = role_column.selectbox("Role", TEAM_ROLES, index=TEAM_ROLES.index("reviewer"), key="review_team_role")
        buttons = st.container(horizontal=True)
        grant, revoke = (buttons.button("Grant", key="review_team_grant", type="primary"),
                         buttons.button("Revoke", key="review_team_revoke"))
        st.caption("Viewers read sessions; reviewers (and admins) also create sessions, export and rename "
                   "clusters. Deciding in a session needs to be its owner or one of its reviewers.")
        if grant or revoke:
            try:
                done = (store.grant_role(who, role, actor=admin) if grant else store.revoke_role(who, actor=admin))
            except USER_ERRORS as exc:
                say_error(exc)
                return
            st.success(f"{escape_markdown(done)}: {role if grant else 'back to the default role'}.")


def reviewers_panel(session, reviewer: str) -> None:
    """The owner (or an admin) adds reviewers to a session."""
    if store.session_role(session.id, reviewer) not in (OWNER, ADMIN):
        return
    with st.popover("Add reviewers", icon=":material/person_add:"):
        names = st.text_input("Names (comma-separated)", key=f"review_add_reviewers_{session.id}")
        if st.button("Add", key=f"review_add_reviewers_button_{session.id}"):
            try:
                store.add_reviewers(session.id, [n for n in names.split(",") if n.strip()], actor=reviewer)
            except USER_ERRORS as exc:
                say_error(exc)
                return
            st.rerun()


# ----------------------------------------------------------------------------- the page

reviewer = require_user("open review sessions")  # nothing of the store is read before this
try:
    team_role = store.team_role(reviewer)
except USER_ERRORS as exc:
    say_error(exc)
    st.stop()
st.caption(f"Reviewing as **{escape_markdown(reviewer)}** · team role: {team_role}.")
if team_role == ADMIN:
    team_panel(reviewer)

sessions = store.list_sessions(dataset.fingerprint)
# The label names the count, so the expander is drawn afresh (closed) once a session is created.
with st.expander(f"New review session · {len(sessions)} on this dataset" if sessions else "New review session",
                 expanded=not sessions, icon=":material/add:"):
    new_session_form(reviewer)

if not sessions:
    show_flash()
    st.info("No review session for this dataset yet: create one above.")
    st.subheader("Export")
    export_view(None)
    st.stop()

by_id = {s.id: s for s in sessions}
if PENDING_SESSION in st.session_state:
    st.session_state[SESSION_KEY] = st.session_state.pop(PENDING_SESSION)
if st.session_state.get(SESSION_KEY) not in by_id:  # another dataset's session, or an archived one
    st.session_state.pop(SESSION_KEY, None)
session_id = st.selectbox("Session", list(by_id), key=SESSION_KEY,
                          format_func=lambda i: f"{by_id[i].name} · {by_id[i].n_items:,} examples · "
                                                f"owner {by_id[i].owner}")
session = by_id[session_id]
DRAWN = {"session": store.session_version(session.id), "at": time.monotonic()}  # review_view adds the example
follow_session(session.id, DRAWN)
with st.container():  # one element however many lines, so the fragment below keeps its place
    session_summary(session)
    reviewers_panel(session, reviewer)
progress_panel(session.id)

view = st.radio("View", VIEWS, horizontal=True, key="review_view", label_visibility="collapsed")
if view == "Review":
    if not store.is_member(session.id, reviewer):
        show_flash()
        listed = ", ".join(escape_markdown(r) for r in session.reviewers) or "none besides the owner"
        st.info(f"You are not a reviewer of this session, so you can read it but not record decisions. Its "
                f"owner is {escape_markdown(session.owner)}; its reviewers: {listed}. The others' decisions "
                "are under *Agreement and conflicts*.")
    else:
        review_view(session, reviewer)
elif view == "Agreement and conflicts":
    agreement_panel(session.id)
    adjudication_panel(session, reviewer)
else:
    export_view(session)
