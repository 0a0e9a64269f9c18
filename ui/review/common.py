"""What the Review page's panels share: the open run with its review store, one-shot messages,
and decisions in words."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePath

import pandas as pd
import streamlit as st

from analytics.names import DECISIONS, ID, LABEL, RELABEL
from ui.figures import escape_markdown
from ui.opened_run import OpenedRun

__all__ = ["DECISION_LABELS", "ReviewRun", "category_text", "decisions_text", "file_stem", "flash", "say_error",
           "show_flash"]

DECISION_LABELS = {decision: decision.capitalize() for decision in DECISIONS}  # "keep" → "Keep"
FLASH = "review_flash"  # session-state key of the message shown on the next run


@dataclass(frozen=True, eq=False)
class ReviewRun(OpenedRun):
    """The open run, the review store, and the errors a user's action may raise (shown as
    messages, not tracebacks)."""

    store: object  # analytics.store.ReviewStore
    user_errors: tuple[type[Exception], ...]

    @property
    def dataset_stem(self) -> str:
        """The dataset's file name without its extension, for export names."""
        return PurePath(self.dataset.name).stem

    @property
    def labels(self) -> pd.Series:
        """Each example's label, indexed by its id as a string."""
        return self.examples.set_index(self.examples[ID].astype(str))[LABEL]


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
    if category.startswith(f"{RELABEL}:"):
        return f"Relabel → {category.split(':', 1)[1]}"
    return DECISION_LABELS.get(category, category)


def decisions_text(reviewer_decisions: str) -> str:
    """The compact ``{"reviewer": "category"}`` JSON of the store, in words (escaped markdown)."""
    parsed = json.loads(reviewer_decisions or "{}")
    return " · ".join(f"**{escape_markdown(who)}**: {escape_markdown(category_text(what))}"
                      for who, what in parsed.items())


def file_stem(text: str) -> str:
    return re.sub(r"[^\w.-]+", "-", text).strip("-.")[:120] or "export"
