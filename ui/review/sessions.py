"""Review sessions: creating one, choosing one, what it is, its progress, who is on it, the
team's roles, and the watcher that keeps the page current while others decide."""

from __future__ import annotations

import time

import streamlit as st

from ui.figures import escape_markdown
from ui.identity import ADMIN, OWNER, TEAM_ROLES
from ui.review.common import ReviewRun, flash, say_error
from ui.review.picker import pick_examples

__all__ = ["PENDING_SESSION", "REFRESH_SECONDS", "SESSION_KEY", "SESSION_REDRAW_SECONDS", "choose_session",
           "follow_session", "new_session_form", "progress_panel", "reviewers_panel", "session_summary",
           "team_panel"]

REFRESH_SECONDS = 1  # how often the page asks whether the example shown has new decisions
SESSION_REDRAW_SECONDS = 10  # how stale progress, agreement and conflicts may get while others decide
SESSION_KEY, PENDING_SESSION = "review_session", "review_session_pending"  # session-state keys


def new_session_form(page: ReviewRun, reviewer: str) -> None:
    """Choose examples, name the session and its reviewers, and create it (``reviewer`` owns it)."""
    ids, described = pick_examples(page, "review_new")
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
            created = page.store.create_session(
                name, ids, owner=reviewer, fingerprint=page.dataset.fingerprint, classes=page.dataset.classes,
                description=description, reviewers=[r for r in reviewers.split(",") if r.strip()],
                source=described, run=page.path)
        except page.user_errors as exc:
            say_error(exc)
            return
        st.session_state[PENDING_SESSION] = created.id
        flash("success", f"Created session “{escape_markdown(created.name)}” with {created.n_items:,} examples.")
        st.rerun()


def choose_session(sessions: list):
    """The session box (a session just created is chosen); returns the session chosen."""
    by_id = {s.id: s for s in sessions}
    if PENDING_SESSION in st.session_state:
        st.session_state[SESSION_KEY] = st.session_state.pop(PENDING_SESSION)
    if st.session_state.get(SESSION_KEY) not in by_id:  # another dataset's session, or an archived one
        st.session_state.pop(SESSION_KEY, None)
    session_id = st.selectbox("Session", list(by_id), key=SESSION_KEY,
                              format_func=lambda i: f"{by_id[i].name} · {by_id[i].n_items:,} examples · "
                                                    f"owner {by_id[i].owner}")
    return by_id[session_id]


def session_summary(page: ReviewRun, session) -> None:
    facts = [f"owner **{escape_markdown(session.owner)}**", f"{session.n_items:,} examples",
             f"from {escape_markdown(session.source or '—')}",
             f"created {session.created_at:%Y-%m-%d %H:%M} UTC"]
    if session.reviewers:
        facts.append("reviewers " + ", ".join(escape_markdown(r) for r in session.reviewers))
    st.caption(" · ".join(facts))
    if session.description:
        st.markdown(escape_markdown(session.description))
    if session.run and session.run != page.path:
        st.caption("This session was made on another analysis run of the dataset; the scores, regions, "
                   "clusters and neighbours shown are those of the current run.")


def progress_panel(store, session_id: int) -> None:
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


@st.fragment(run_every=REFRESH_SECONDS)
def follow_session(store, session_id: int, drawn: dict) -> None:
    """Keep the page current while others review. Every second (``REFRESH_SECONDS``) ask the
    store whether the decision log has grown since the page was drawn (``drawn``: the session's
    version, the time, and — once :func:`ui.review.example.review_view` adds them — the example
    shown and its version): a new decision on the example shown redraws the page at once; any
    other (progress, agreement, conflicts) at most every ``SESSION_REDRAW_SECONDS``, so twelve
    busy reviewers do not redraw each other's pages continuously. Asking costs one small query;
    an idle page's browser spends about 0.035 of a core on it, the same at 1 s as at 2 s.

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


def team_panel(page: ReviewRun, admin: str) -> None:
    """Admins grant and revoke team roles (viewer, reviewer, admin); the store checks it is an admin."""
    store = page.store
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
            except page.user_errors as exc:
                say_error(exc)
                return
            st.success(f"{escape_markdown(done)}: {role if grant else 'back to the default role'}.")


def reviewers_panel(page: ReviewRun, session, reviewer: str) -> None:
    """The owner (or an admin) adds reviewers to a session."""
    if page.store.session_role(session.id, reviewer) not in (OWNER, ADMIN):
        return
    with st.popover("Add reviewers", icon=":material/person_add:"):
        names = st.text_input("Names (comma-separated)", key=f"review_add_reviewers_{session.id}")
        if st.button("Add", key=f"review_add_reviewers_button_{session.id}"):
            try:
                page.store.add_reviewers(session.id, [n for n in names.split(",") if n.strip()], actor=reviewer)
            except page.user_errors as exc:
                say_error(exc)
                return
            st.rerun()
