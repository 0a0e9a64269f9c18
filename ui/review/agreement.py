"""Agreement between a session's reviewers, its conflicts, and the owner's adjudication."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from analytics.names import DECISIONS, RELABEL, category_of, split_category
from ui import actions, cached
from ui.figures import escape_markdown
from ui.identity import ADMIN, OWNER, current_user
from ui.review.common import ReviewRun, category_text, decisions_text, flash, show_flash

__all__ = ["CONFLICTS_SHOWN", "adjudicate", "adjudication_panel", "agreement_panel", "reviewer_quality_table"]

CONFLICTS_SHOWN = 25


def agreement_panel(page: ReviewRun, session_id: int) -> None:
    """Agreement figures and the conflicts list (kept current by
    :func:`ui.review.sessions.follow_session`)."""
    current = page.store.current_decisions(session_id)
    st.subheader("Agreement")
    if current["reviewer"].nunique() < 2:
        st.caption("Agreement needs at least two reviewers' decisions on the same examples.")
    else:
        report = actions.reviewer_agreement(current)
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
        reviewer_quality_table(page, current)
    _conflicts_table(page, session_id)


def _conflicts_table(page: ReviewRun, session_id: int) -> None:
    conflicts = page.store.conflicts(session_id)
    st.subheader(f"Conflicts · {len(conflicts):,}")
    if conflicts.empty:
        st.caption("No conflicts: the reviewers agree wherever more than one has decided, or the owner has "
                   "adjudicated.")
        return
    shown = pd.DataFrame({
        "example": conflicts["position"] + 1, "id": conflicts["example_id"],
        "label": conflicts["example_id"].map(page.labels),
        "decisions": [" · ".join(f"{who}: {category_text(what)}" for who, what in json.loads(d).items())
                      for d in conflicts["reviewer_decisions"]]})
    st.dataframe(shown, hide_index=True, width="stretch", key="review_conflicts",
                 column_config={"decisions": st.column_config.TextColumn("decisions", width="large")})


def reviewer_quality_table(page: ReviewRun, current: pd.DataFrame) -> None:
    """Each reviewer as an annotator (cleanlab.multiannotator): a keep gives the current label, a
    relabel the new one; drop and flag give none."""
    quality = cached.reviewer_quality(current, page.run)
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


def adjudicate(page: ReviewRun, session_id: int, example_id: str, keys: dict) -> None:
    """Record the owner's final word on an example (a callback; the store checks that this is
    the owner or an admin)."""
    choice = st.session_state[keys["choice"]]
    decision, new_label = split_category(choice)
    try:
        page.store.adjudicate(session_id, example_id, current_user(), decision, new_label=new_label,
                              note=st.session_state.get(keys["note"], ""))
    except page.user_errors as exc:
        flash("error", escape_markdown(str(exc)))
        return
    flash("success", f"Adjudicated {escape_markdown(example_id)}: {escape_markdown(category_text(choice))}.")


@st.fragment
def adjudication_panel(page: ReviewRun, session, reviewer: str) -> None:
    """The owner's final word on each conflict (a form each, Enter submits)."""
    store = page.store
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
    labels = page.labels
    current = store.current_decisions(session.id)
    notes = current[current["note"] != ""]
    for conflict in conflicts.head(CONFLICTS_SHOWN).itertuples():
        label = str(labels.get(conflict.example_id, ""))
        proposed = list(json.loads(conflict.reviewer_decisions).values())
        options = list(dict.fromkeys(proposed + [d for d in DECISIONS if d != RELABEL] +
                                     [category_of(RELABEL, c) for c in session.classes if c != label]))
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
                                  on_click=adjudicate, args=(page, session.id, conflict.example_id, keys))
