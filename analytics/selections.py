"""Named selections of examples, saved in the workspace per dataset (by id, so they survive
re-runs of the analysis). Saving never overwrites: a taken name is refused."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from analytics.workspace import Workspace, atomic_write_text

__all__ = ["SavedSelection", "SelectionError", "save_selection", "list_selections", "load_selection"]


class SelectionError(ValueError):
    """A selection cannot be saved or read; the message says why."""


@dataclass(frozen=True)
class SavedSelection:
    name: str
    ids: tuple[str, ...]
    source: str
    author: str
    created: str

    @property
    def size(self) -> int:
        return len(self.ids)


def _folder(workspace: Workspace, fingerprint: str) -> Path:
    return Path(workspace.root) / fingerprint / "selections"


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.")
    if not slug:
        raise SelectionError("A selection needs a name with at least one letter or digit.")
    return slug[:80]


def save_selection(workspace: Workspace, fingerprint: str, name: str, ids: Iterable[str], *,
                   source: str = "", author: str = "") -> SavedSelection:
    """Save ``ids`` under ``name``; refuses a name already taken for this dataset."""
    ids = tuple(dict.fromkeys(str(i) for i in ids))
    if not ids:
        raise SelectionError("The selection is empty: select some points first.")
    path = _folder(workspace, fingerprint) / f"{_slug(name)}.json"
    if path.exists():
        raise SelectionError(f"A selection named '{name}' already exists; choose another name.")
    saved = SavedSelection(name=name.strip(), ids=ids, source=source, author=author,
                           created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    atomic_write_text(path, json.dumps(asdict(saved)))
    return saved


def list_selections(workspace: Workspace, fingerprint: str) -> list[SavedSelection]:
    """Saved selections of a dataset, newest first; unreadable files are skipped."""
    found = []
    for path in _folder(workspace, fingerprint).glob("*.json"):
        try:
            data = json.loads(path.read_text())
            found.append(SavedSelection(**{**data, "ids": tuple(data["ids"])}))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return sorted(found, key=lambda s: s.created, reverse=True)


def load_selection(workspace: Workspace, fingerprint: str, name: str) -> SavedSelection:
    for saved in list_selections(workspace, fingerprint):
        if saved.name == name:
            return saved
    raise SelectionError(f"No saved selection named '{name}'.")
