"""One example of a review session: moving between examples, its preview, facts and scores, its
nearest neighbours, everyone's decisions on it, and this reviewer's decision controls."""

from __future__ import annotations

import base64

import pandas as pd
import streamlit as st

from analytics.names import CLUSTER, CLUSTER_LEVELS, CONTENT_COLUMNS, ID, IMAGE, LABEL, REGION, SPLIT, TEXT, category_of
from ui import actions, cached
from ui.components import example_table
from ui.figures import escape_markdown
from ui.identity import current_user
from ui.review.common import DECISION_LABELS, ReviewRun, category_text, flash, show_flash

__all__ = ["NEIGHBOURS_SHOWN", "ORIGIN", "QUICK_KEYS", "decision_controls", "example_decisions", "example_facts",
           "neighbours", "preview", "record", "review_view"]

QUICK_KEYS = {"keep": "K", "drop": "D", "flag": "F"}
NEIGHBOURS_SHOWN = 8
ORIGIN = "review page"


def review_view(page: ReviewRun, session, reviewer: str, drawn: dict) -> None:
    """The reviewer's place in the session, the example there and its context. Adds the example
    shown and its version to ``drawn`` (see :func:`ui.review.sessions.follow_session`)."""
    store = page.store
    items = store.session_items(session.id)["example_id"].tolist()
    current = store.current_decisions(session.id)
    mine = current[current["reviewer"] == reviewer].set_index("example_id")
    position_key = f"review_position_{session.id}"
    position = _navigation(items, mine, position_key)
    example_id = items[position - 1]
    drawn.update(example_id=example_id, example=store.session_version(session.id, example_id))
    row_index = int(pd.Index(page.examples[ID].astype(str)).get_indexer([example_id])[0])
    show_flash()
    if row_index < 0:
        st.warning(f"Example {escape_markdown(example_id)} is not in this dataset's current run; the session "
                   "was made on another version of the data.")
        return
    row = page.examples.iloc[row_index]
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.subheader(f"Example {position} of {len(items)} · {escape_markdown(example_id)}", anchor=False)
        preview(page, row)
        decision_controls(page, session, example_id, str(row[LABEL]), mine, position_key, position, len(items))
    with right:
        example_facts(page, row)
    neighbours(page, row_index)
    example_decisions(store, session.id, example_id)


def move_to(key: str, position: int) -> None:
    st.session_state[key] = position


def _navigation(items: list[str], mine: pd.DataFrame, position_key: str) -> int:
    """Previous, next, next undecided (keys ←, →, N), a position box and this reviewer's
    progress; returns the position shown (1-based)."""
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
    return position


def record(page: ReviewRun, session_id: int, example_id: str, decision: str | None, keys: dict,
           position_key: str, next_position: int | None) -> None:
    """Record this reviewer's decision (a button's, or the form's) and move on (a callback)."""
    reviewer = current_user()  # the store refuses anyone who is not the owner or a listed reviewer
    decision = decision or st.session_state[keys["decision"]]
    new_label = st.session_state.get(keys["new_label"]) if decision == "relabel" else None
    note = st.session_state.get(keys["note"], "") if keys.get("note") else ""
    try:
        saved = page.store.record_decision(session_id, example_id, reviewer, decision, new_label=new_label,
                                           note=note, origin=ORIGIN)
    except page.user_errors as exc:
        flash("error", escape_markdown(str(exc)))
        return
    flash("success", f"Recorded {escape_markdown(category_text(saved.category))} on "
                     f"{escape_markdown(example_id)}.")
    if next_position is not None:
        st.session_state[position_key] = next_position


def decision_controls(page: ReviewRun, session, example_id: str, label: str, mine: pd.DataFrame,
                      position_key: str, position: int, n_items: int) -> None:
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
    for column, (decision, key) in zip(st.columns(len(QUICK_KEYS)), QUICK_KEYS.items()):
        column.button(DECISION_LABELS[decision], key=f"review_quick_{decision}", shortcut=key, width="stretch",
                      on_click=record, args=(page, session.id, example_id, decision, {"new_label": None},
                                             position_key, next_position),
                      help=f"Record “{DECISION_LABELS[decision]}” without a note and go to the next example.")
    targets = [c for c in session.classes if c != label]
    with st.form(f"review_form_{session.id}_{position}", border=True):
        decisions = list(DECISION_LABELS)
        chosen = decisions.index(mine_now["decision"]) if mine_now is not None else 0
        st.radio("Decision", decisions, index=chosen, format_func=DECISION_LABELS.get, horizontal=True,
                 key=keys["decision"])
        target = (targets.index(mine_now["new_label"]) if mine_now is not None and mine_now["new_label"] in targets
                  else 0)
        st.selectbox("New label (for a relabel)", targets, index=target, key=keys["new_label"])
        st.text_input("Note (optional)", key=keys["note"], placeholder="Why? Enter records the decision.")
        submit, stay = st.columns(2)
        submit.form_submit_button("Record and go to the next", type="primary", width="stretch", key="review_record_next",
                                  on_click=record, args=(page, session.id, example_id, None, keys, position_key,
                                                         next_position))
        stay.form_submit_button("Record", width="stretch", key="review_record",
                                on_click=record, args=(page, session.id, example_id, None, keys, position_key, None))


def preview(page: ReviewRun, row: pd.Series) -> None:
    """The example itself: its text, its image, or its features beside the dataset's medians."""
    dataset = page.dataset
    if dataset.kind == "text":
        with st.container(border=True, height=260 if len(str(row[TEXT])) > 1200 else "content"):
            st.markdown(escape_markdown(row[TEXT]))
    elif dataset.kind == "image":
        uri = cached.thumbnail(str(row[IMAGE]), size=192)
        if uri is None:
            st.warning(f"The image {escape_markdown(row[IMAGE])} cannot be read.")
        else:
            st.image(base64.b64decode(uri.split(",", 1)[1]), width=192)
    else:
        features = [c for c in dataset.table.columns if c not in (ID, LABEL, SPLIT)]
        table = dataset.table
        values = table.loc[table[ID].astype(str) == str(row[ID]), features].iloc[0]
        medians = table[features].median(numeric_only=True)
        shown = pd.DataFrame({"feature": features, "value": values.astype(str).to_numpy(),
                              "dataset median": [medians.get(f) for f in features]})
        st.dataframe(shown, hide_index=True, width="stretch", height=260, key="review_features")


def example_facts(page: ReviewRun, row: pd.Series) -> None:
    """Label, prediction, region, clusters and split in a line, then the scores table."""
    facts = [f"label **{escape_markdown(row[LABEL])}**"]
    if "predicted_label" in row and pd.notna(row["predicted_label"]):
        facts.append(f"predicted **{escape_markdown(row['predicted_label'])}**")
    if REGION in row and pd.notna(row[REGION]):
        facts.append(f"region **{escape_markdown(row[REGION])}**")
    clusters = cached.clusters_table(page.path, page.stamp, page.dataset.fingerprint) \
        if CLUSTER in row else None
    if clusters is not None:
        for level, column in CLUSTER_LEVELS.items():
            if column in row and pd.notna(row[column]):
                named = clusters[(clusters["level"] == level) & (clusters["cluster"] == row[column])]
                name = named["name"].iloc[0] if len(named) else "noise"
                facts.append(f"{'fine cluster' if level == 'fine' else 'cluster'} "
                             f"**{int(row[column])}** “{escape_markdown(name)}”")
    if SPLIT in row and pd.notna(row[SPLIT]):
        facts.append(f"split {escape_markdown(row[SPLIT])}")
    st.markdown(" · ".join(facts))
    _scores_table(page.examples, row)


def _scores_table(examples: pd.DataFrame, row: pd.Series) -> None:
    """The example's scores, each with the share of the dataset it is harder than."""
    scores = actions.numeric_scores(tuple(examples.columns))
    if not scores:
        return
    harder = []
    for score in scores:
        column, value = examples[score], row[score]
        share = (column < value) if actions.harder_is_higher(score) else (column > value)
        harder.append(float(share.mean()) if pd.notna(value) else None)
    table = pd.DataFrame({"score": scores, "value": [row[s] for s in scores], "harder than": harder})
    st.dataframe(table, hide_index=True, width="stretch", height=min(38 + 35 * len(scores), 300),
                 key="review_scores",
                 column_config={"value": st.column_config.NumberColumn("value", format="%.4g"),
                                "harder than": st.column_config.ProgressColumn(
                                    "harder than", format="percent", min_value=0.0, max_value=1.0,
                                    help="Share of the dataset this example is harder than, by this "
                                         "score's direction.")})


def neighbours(page: ReviewRun, row_index: int) -> None:
    """The example's nearest neighbours in the run's kNN graph, with their labels."""
    examples, kind = page.examples, page.dataset.kind
    indices, distances = cached.neighbors(page.path, page.stamp, page.run)
    keep = indices[row_index] != row_index
    near, far = indices[row_index][keep][:NEIGHBOURS_SHOWN], distances[row_index][keep][:NEIGHBOURS_SHOWN]
    columns = [c for c in CONTENT_COLUMNS + ("predicted_label",) if c in examples.columns]
    rows = examples.iloc[near][columns].reset_index(drop=True)
    rows.insert(2, "distance", far.round(3))
    if TEXT in rows.columns:
        rows[TEXT] = rows[TEXT].astype(str).str.replace(r"\s+", " ", regex=True).str.slice(0, 160)
    st.markdown(f"**Nearest neighbours** ({(rows[LABEL] != examples.iloc[row_index][LABEL]).sum()} of "
                f"{len(rows)} with another label)")
    example_table(rows, kind=kind, height=38 + (65 if kind == "image" else 35) * len(rows))


def example_decisions(store, session_id: int, example_id: str) -> None:
    """Everyone's current decision on the example, and its history (kept current by
    :func:`ui.review.sessions.follow_session`)."""
    history = store.history(session_id, example_id)
    st.markdown("**Decisions on this example**")
    if history.empty:
        st.caption("Nobody has decided on this example yet.")
        return
    reviews = history[history["kind"] == "review"].groupby("reviewer").tail(1)
    for entry in reviews.itertuples():
        category = category_text(category_of(entry.decision, entry.new_label))
        note = f" — “{escape_markdown(entry.note)}”" if entry.note else ""
        st.markdown(f"- **{escape_markdown(entry.reviewer)}**: {escape_markdown(category)}{note}")
    adjudications = history[history["kind"] == "adjudication"]
    if len(adjudications):
        last = adjudications.iloc[-1]
        category = category_text(category_of(last["decision"], last["new_label"]))
        note = f" — “{escape_markdown(last['note'])}”" if last["note"] else ""
        st.markdown(f"- Adjudicated by **{escape_markdown(last['reviewer'])}**: {escape_markdown(category)}{note}")
    with st.expander(f"History ({len(history)} {'entry' if len(history) == 1 else 'entries'})"):
        shown = history[["created_at", "reviewer", "kind", "decision", "new_label", "note", "origin"]].copy()
        shown["created_at"] = shown["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S UTC")
        st.dataframe(shown, hide_index=True, width="stretch", key=f"review_history_{session_id}",
                     column_config={"created_at": "when (UTC)",
                                    "note": st.column_config.TextColumn("note", width="large")})
