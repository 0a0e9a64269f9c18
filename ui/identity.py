"""Who is using the app: the one place that turns a sign-in (or, locally, a typed name) into the
identity the review store checks.

Three ways, chosen by the operator's configuration (:func:`ui.policy.policy`):

- ``st.login`` (OIDC) when ``.streamlit/secrets.toml`` (or ``--secrets.files``) has an ``[auth]``
  section: the identity is the signed-in user's e-mail (else ``preferred_username``, else the
  provider's ``sub``). A visitor who is not signed in gets a *Sign in* button and can read
  nothing of the review store.
- a trusted proxy header (``CARTOGRAPHER_TRUSTED_USER_HEADER``, e.g. ``X-Forwarded-Email``), for
  a server behind an authenticating proxy that sets the header and strips any the client sent.
- local mode (neither configured): the name typed in the sidebar, for one person on their own
  machine. The store still enforces each session's reviewer list.

With a sign-in configured the name box is not shown at all. Every identity is normalised with
:func:`analytics.access.normalize_identity` (NFKC, case-folded; mixed-script look-alikes refused).
"""

from __future__ import annotations

import streamlit as st

from analytics.access import AccessError, normalize_identity
from analytics.store import ADMIN, OWNER, TEAM_ROLES  # the roles, for the pages (they import only ui)
from ui import state
from ui.figures import escape_markdown
from ui.policy import login_configured, policy

__all__ = ["ADMIN", "OWNER", "TEAM_ROLES", "current_user", "identity_sidebar", "require_user", "team_mode"]

_OIDC_CLAIMS = ("email", "preferred_username", "sub")


def _request_headers():
    """The current request's headers (a function of its own, so app tests can supply some)."""
    try:
        return st.context.headers
    except Exception:  # no request context (a bare script run)
        return {}


def _signed_in_name() -> str:
    """The raw identity from the configured sign-in; "" when nobody is signed in."""
    if login_configured():
        user = st.user
        if user.get("is_logged_in"):
            for claim in _OIDC_CLAIMS:
                value = user.get(claim)
                if value:
                    return str(value)
    header = policy().trusted_user_header
    if header:
        return str(_request_headers().get(header) or "")
    return ""


def team_mode() -> bool:
    """A sign-in is configured: identities come only from it."""
    return policy().team_mode


def current_user() -> str | None:
    """The normalised identity of whoever drives this browser session, or None (nobody signed in,
    no name typed, or a name that is refused, such as a mixed-script look-alike)."""
    raw = _signed_in_name() if team_mode() else str(st.session_state.get(state.REVIEWER) or "")
    if not raw.strip():
        return None
    try:
        return normalize_identity(raw)
    except AccessError:
        return None


def identity_sidebar() -> None:
    """The sidebar's "who are you": a sign-in panel in team mode, else the name box."""
    sidebar = st.sidebar
    if not team_mode():
        sidebar.text_input("Your name (for reviews)", key=state.REVIEWER, max_chars=200,
                           placeholder="e.g. Ada",
                           help="Recorded with every review decision and as the owner of the sessions "
                                "you create. On a team server the sign-in is used instead.")
        typed = str(st.session_state.get(state.REVIEWER) or "")
        if typed.strip():
            try:
                normalize_identity(typed)
            except AccessError as exc:
                sidebar.error(str(exc))
        return
    user = current_user()
    if user:
        sidebar.caption(f"Signed in as **{escape_markdown(user)}**.")
        if login_configured() and st.user.get("is_logged_in"):
            sidebar.button("Sign out", key="identity_sign_out", on_click=st.logout)
        return
    if login_configured():
        sidebar.button("Sign in", key="identity_sign_in", type="primary", on_click=st.login,
                       help="Review sessions, decisions and exports need a sign-in.")
    else:
        sidebar.warning(f"No signed-in user reached the app (the proxy header "
                        f"{policy().trusted_user_header} is missing). Sign in through your organisation's "
                        "proxy.")


def require_user(purpose: str = "open review sessions") -> str:
    """The current identity, or stop the page with what to do (sign in, or type a name)."""
    user = current_user()
    if user:
        return user
    if team_mode():
        st.info(f"Sign in (in the sidebar) to {purpose}.")
        if login_configured():
            st.button("Sign in", key="identity_sign_in_page", type="primary", on_click=st.login)
    else:
        st.warning(f"Enter your name in the sidebar (*Your name*) to {purpose}.")
    st.stop()
