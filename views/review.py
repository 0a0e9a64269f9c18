"""Review: team sessions over a selection, a filter, a cluster, a data-map region or the top of a
score; one example at a time with its context; decisions with their history, agreement,
adjudication by the session's owner, and exports with provenance."""

from __future__ import annotations

import time

import streamlit as st

from ui import actions, cached
from ui.analysis import page_run
from ui.figures import escape_markdown
from ui.identity import ADMIN, require_user
from ui.review.agreement import adjudication_panel, agreement_panel
from ui.review.common import ReviewRun, say_error, show_flash
from ui.review.example import review_view
from ui.review.export import export_view
from ui.review.sessions import (choose_session, follow_session, new_session_form, progress_panel, reviewers_panel,
                                session_summary, team_panel)

VIEWS = ("Review", "Agreement and conflicts", "Export")

dataset, run = page_run("Review")
try:
    store = cached.review_store()
except Exception as exc:  # an unreachable server or a newer schema: say so instead of a traceback
    st.error(f"The review database cannot be opened: {escape_markdown(exc)}")
    st.stop()
page = ReviewRun.of(dataset, run, store=store, user_errors=actions.USER_ERRORS)

reviewer = require_user("open review sessions")  # nothing of the store is read before this
try:
    team_role = store.team_role(reviewer)
except page.user_errors as exc:
    say_error(exc)
    st.stop()
st.caption(f"Reviewing as **{escape_markdown(reviewer)}** · team role: {team_role}.")
if team_role == ADMIN:
    team_panel(page, reviewer)

sessions = store.list_sessions(dataset.fingerprint)
# The label names the count, so the expander is drawn afresh (closed) once a session is created.
with st.expander(f"New review session · {len(sessions)} on this dataset" if sessions else "New review session",
                 expanded=not sessions, icon=":material/add:"):
    new_session_form(page, reviewer)

if not sessions:
    show_flash()
    st.info("No review session for this dataset yet: create one above.")
    st.subheader("Export")
    export_view(page, None)
    st.stop()

session = choose_session(sessions)
drawn = {"session": store.session_version(session.id), "at": time.monotonic()}  # review_view adds the example
follow_session(store, session.id, drawn)
with st.container():  # one element however many lines, so the fragment below keeps its place
    session_summary(page, session)
    reviewers_panel(page, session, reviewer)
progress_panel(store, session.id)

view = st.radio("View", VIEWS, horizontal=True, key="review_view", label_visibility="collapsed")
if view == "Review":
    if not store.is_member(session.id, reviewer):
        show_flash()
        listed = ", ".join(escape_markdown(r) for r in session.reviewers) or "none besides the owner"
        st.info(f"You are not a reviewer of this session, so you can read it but not record decisions. Its "
                f"owner is {escape_markdown(session.owner)}; its reviewers: {listed}. The others' decisions "
                "are under *Agreement and conflicts*.")
    else:
        review_view(page, session, reviewer, drawn)
elif view == "Agreement and conflicts":
    agreement_panel(page, session.id)
    adjudication_panel(page, session, reviewer)
else:
    export_view(page, session)
