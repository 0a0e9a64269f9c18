"""The operator's rules as the app sees them: :class:`analytics.access.Policy` plus what only
Streamlit knows (whether ``st.login`` is configured)."""

from __future__ import annotations

import streamlit as st

from analytics.access import AccessError, Policy


def login_configured() -> bool:
    """``st.login`` is set up: ``.streamlit/secrets.toml`` (or the secrets in the server's
    environment) has an ``[auth]`` section."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all: Streamlit raises its own not-found error
        return False


def policy() -> Policy:
    """The rules in force for this server process; stops the page with the operator's error when
    the configuration is unusable (team mode without data roots, a malformed number)."""
    try:
        return Policy.from_env(login_configured=login_configured())
    except AccessError as exc:
        st.error(f"This server is not configured correctly: {exc}")
        st.stop()
