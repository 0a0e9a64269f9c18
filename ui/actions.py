"""Uncached calls into the engine that the pages and their panels make: renaming a cluster,
reviewer agreement, slice membership, exports, score directions. The Streamlit caches, and the
readers of run files built on them, are in :mod:`ui.cached`."""

from __future__ import annotations

from dataclasses import replace

from analytics.access import AccessError
from analytics.agreement import reviewer_agreement
from analytics.clusters import save_cluster_name as _save_cluster_name
from analytics.export import EXPORT_FORMATS, ExportError, Provenance, export_bytes, session_export, subset_frame
from analytics.export import write_export
from analytics.hardness import numeric_scores
from analytics.pipeline import run_slice_config
from analytics.scores import harder_is_higher
from analytics.slices import slice_mask
from analytics.store import ReviewError
from analytics.workspace import Workspace, default_root
from ui.cached import review_store

__all__ = ["USER_ERRORS", "export_download", "export_table", "export_to_workspace", "harder_is_higher",
           "numeric_scores", "reviewer_agreement", "save_cluster_name", "slice_config", "slice_members"]

#: The errors whose message is written for the user (review and export requests).
USER_ERRORS: tuple[type[Exception], ...] = (ReviewError, ExportError, AccessError)


def save_cluster_name(fingerprint: str, run_path: str, level: str, cluster: int, name: str, *, actor: str) -> str:
    """Rename a cluster of a run for everyone (saved in the workspace; read back by
    :func:`ui.cached.clusters_table`); ``actor`` needs the role reviewer or above (the store checks)."""
    return _save_cluster_name(Workspace.default(), fingerprint, run_path, level, cluster, name, actor=actor,
                              store=review_store())


def slice_config(manifest: dict):
    """The slice-discovery settings a run was analysed with."""
    return run_slice_config(manifest)


def slice_members(features, names, codes):
    """Mask of the examples in a listed slice."""
    return slice_mask(features, list(names), list(codes))


def export_table(dataset, scores, *, actor: str, ids=None, store=None, session=None, score_columns=(),
                 apply_outcome: bool = False, description: str = "", issue_counts: dict | None = None):
    """The rows to export and their provenance: a session's examples with its decisions when
    ``session`` is given (rows and counts from one snapshot of the store), else the examples
    ``ids``. ``actor`` needs the role reviewer or above; the manifest names them, and lists the
    run's data-issue counts (``issue_counts``)."""
    if session is not None:
        frame, provenance = session_export(dataset, store, session, actor=actor, scores=scores,
                                           score_columns=score_columns, apply_outcome=apply_outcome,
                                           fingerprint=dataset.fingerprint)
        return frame, replace(provenance, issue_counts=dict(issue_counts or {}))
    actor = store.authorize(actor, action="export")
    frame = subset_frame(dataset, ids=ids, scores=scores, score_columns=score_columns)
    return frame, Provenance(fingerprint=dataset.fingerprint, description=description, exported_by=actor,
                             issue_counts=dict(issue_counts or {}))


def export_download(frame, provenance, fmt: str):
    """The export in memory, for st.download_button (data, manifest, MIME type, suffix)."""
    return export_bytes(frame, provenance, fmt=fmt)


def export_to_workspace(frame, provenance, fmt: str, stem: str):
    """Write the export and its manifest under ``<workspace>/exports/``; returns the result
    (paths, manifest, rows)."""
    path = default_root().resolve() / "exports" / f"{stem}{EXPORT_FORMATS[fmt]}"
    return write_export(frame, path, provenance, fmt=fmt)
